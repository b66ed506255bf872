"""Where a Lloyd iteration's time goes on XLA:CPU, measured, not guessed.

1. `argmin`: the nearest-centre search alone on f32 distances [n, k]:
   `jnp.argmin` (XLA's variadic reduction), `jnp.min` (a plain reduction)
   and the unrolled running minimum `lloyd._first_min` over the (k, n)
   layout, for k around the size where XLA:CPU's argmin slows down.
2. `tile`: one Lloyd pass (`kmeans_calibrate.pass_seconds`) with the
   unrolled running minimum over tiles of `--tiles` centres, at
   `--tile-cell`.
3. `ties`: where unsupjax's and scikit-learn's float32 labels differ from
   the same init (`--tie-cells` n:d:k:iterations, standard normal data),
   whether each library's labels are the float64 nearest centre of its own
   returned centres, and how many rows have a relative gap below 1e-5
   between their nearest and second-nearest centre.
4. `ops`: the floor XLA:CPU's separate ops set on one iteration at
   `--op-cells` n:d:k (standard normal data, one block of all rows, the
   library's own kernels `lloyd.assign_block` and its block sums): one
   read of x (`x.sum(0)`), the nearest centre alone (distance matmul and
   argmin in the (k, n) or (n, k) layout, or the unrolled running minimum,
   whichever is fastest), the per-cluster
   sums alone (the faster of `segment_sum` and the one-hot matmul), against
   scikit-learn's whole iteration from the same centres. A floor for the
   one-block plans the cost model picks at small k: where the nearest
   centre plus the sums take longer than scikit-learn's iteration, no such
   plan reaches it. (Not for blocked plans: over all rows at once, the
   distances leave the cache, which blocks avoid.)
5. `trace`: one `kmeans.fit` of `--iters` Lloyd iterations under
   `jax.profiler`, XLA's executed thunks summed by name (per iteration:
   divide by the iteration count) for each cell of `--cells`, with the
   plan the cost model picks or one given by `--plan`.

Usage:
  nice -n 10 env JAX_PLATFORMS=cpu PYTHONPATH=. python benchmarks/kmeans_profile.py \
      --sections argmin,tile,ties,trace \
      --cells 1000000:32:10,1000000:2:3,100000:784:100,100000:128:10 --iters 10 \
      --json benchmarks/results/kmeans_profile.json
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
import _bench  # noqa: E402

_bench.reexec_without_blas_throttles()  # before NumPy loads its BLAS

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import kmeans_timing as kt  # noqa: E402
from unsupjax import kmeans  # noqa: E402
from unsupjax.kmeans import lloyd  # noqa: E402


def argmin_table(n: int, ks, reps: int):
  print(f"### Nearest centre of {n} rows, ms (best of {reps})\n")
  print("| k | jnp.argmin (n, k) | jnp.argmin (k, n) | jnp.min (n, k) | "
        "unrolled running min (k, n) |")
  print("|---|---|---|---|---|")
  rows = []
  for k in ks:
    d_nk = jnp.asarray(np.random.default_rng(k).normal(size=(n, k)),
                       jnp.float32)
    d_kn = d_nk.T.copy()
    fns = {"argmin_nk": (lambda a: jnp.argmin(a, 1), d_nk),
           "argmin_kn": (lambda a: jnp.argmin(a, 0), d_kn),
           "min_nk": (lambda a: jnp.min(a, 1), d_nk),
           "unrolled_kn": (lambda a: lloyd._first_min(a), d_kn)}
    row = {"n": n, "k": k}
    ref = np.asarray(jnp.argmin(d_nk, 1))
    for name, (f, a) in fns.items():
      g = jax.jit(f)
      out = g(a)
      if name == "unrolled_kn":
        assert (np.asarray(out[0]) == ref).all()
      jax.block_until_ready(out)
      row[name + "_ms"] = kt.best_time(
          lambda: jax.block_until_ready(g(a)), reps)[0] * 1e3
    rows.append(row)
    print(f"| {k} | {row['argmin_nk_ms']:.2f} | {row['argmin_kn_ms']:.2f} | "
          f"{row['min_nk_ms']:.2f} | {row['unrolled_kn_ms']:.2f} |",
          flush=True)
  print()
  return rows


def tile_table(n, d, k, tiles, reps):
  from kmeans_calibrate import pass_seconds
  from unsupjax.kmeans import plan as plan_lib
  x = kt.gaussian_data(n, d)
  init = x[np.random.default_rng(1).choice(n, k, replace=False)].copy()
  print(f"### One pass at n={n} d={d} k={k}, unrolled minimum by tiles\n")
  print("| tile | block | ms per pass |")
  print("|---|---|---|")
  rows = []
  for tile in tiles:
    for block in (1024, 4096):
      pl = plan_lib.Plan(plan_lib.even_blocks(n, block), "kb", "matmul",
                         "unrolled", "segment", tile)
      ms = pass_seconds(x, init, pl, reps) * 1e3
      rows.append({"tile": tile, "block": pl.block, "ms": ms})
      print(f"| {tile} | {pl.block} | {ms:.2f} |", flush=True)
  print()
  return rows


def ties_cell(n, d, k, iters):
  from sklearn.cluster import KMeans
  x = kt.noise_data(n, d)
  init = x[np.random.default_rng(1).choice(n, k, replace=False)].copy()
  sk = KMeans(k, init=init, n_init=1, max_iter=iters, tol=0.0).fit(x)
  us = kmeans.fit(jax.random.key(0), jnp.asarray(x), k, init=init, tol=0.0,
                  max_iter=iters)

  def exact(c):  # float64 nearest centre and relative gap to the second
    c = np.asarray(c, np.float64)
    lab, gap = np.empty(n, int), np.empty(n)
    for s in range(0, n, 10000):
      xb = x[s:s + 10000].astype(np.float64)
      d2 = ((xb[:, None] - c[None]) ** 2).sum(-1)
      o = np.sort(d2, 1)
      lab[s:s + 10000] = d2.argmin(1)
      gap[s:s + 10000] = (o[:, 1] - o[:, 0]) / np.maximum(o[:, 0], 1e-30)
    return lab, gap

  lab_sk, gap = exact(sk.cluster_centers_)
  lab_us, _ = exact(us.centroids)
  r = {"n": n, "d": d, "k": k, "iters": iters,
       "sklearn_vs_unsupjax": int(np.sum(sk.labels_ != np.asarray(us.labels))),
       "sklearn_vs_own_float64": int(np.sum(sk.labels_ != lab_sk)),
       "unsupjax_vs_own_float64": int(np.sum(np.asarray(us.labels) != lab_us)),
       "rows_gap_below_1e-5": int(np.sum(gap < 1e-5))}
  print(f"| {n} | {d} | {k} | {iters} | {r['sklearn_vs_unsupjax']} | "
        f"{r['sklearn_vs_own_float64']} | {r['unsupjax_vs_own_float64']} | "
        f"{r['rows_gap_below_1e-5']} |", flush=True)
  return r


def ops_cell(n, d, k, reps):
  x = kt.noise_data(n, d)
  init = x[np.random.default_rng(1).choice(n, k, replace=False)].copy()
  xj, c = jnp.asarray(x - x.mean(0)), jnp.asarray(init - x.mean(0))
  xsq, w = jnp.sum(xj * xj, axis=1), jnp.ones((n,), jnp.float32)
  lab = jnp.asarray(np.random.default_rng(2).integers(0, k, n), jnp.int32)
  hi = jax.lax.Precision.HIGHEST

  def plan(layout="kb", argmin="reduce", sums="segment"):
    return kmeans.Plan(n, layout, "matmul", argmin, sums)

  def nearest_of(pl):  # the library's own one-block kernel, labels only
    return (lambda x, xsq, cp, csq: lloyd.assign_block(
        x, xsq, cp, csq, pl, hi)[0], (xj, xsq) + lloyd.prepare_centers(c, pl))

  def sums_of(pl):
    return (lambda x, w, lab: lloyd._block_sums(x, w, lab, k, pl, False, hi),
            (xj, w, lab))

  fns = {"read_x": (lambda x: jnp.sum(x, 0), (xj,)),
         "nearest_kb": nearest_of(plan()),
         "nearest_bk": nearest_of(plan("bk")),
         "nearest_unrolled": nearest_of(plan(argmin="unrolled")),
         "sums_segment": sums_of(plan()),
         "sums_onehot": sums_of(plan(sums="onehot"))}
  r = {"n": n, "d": d, "k": k}
  for name, (f, args) in fns.items():
    g = jax.jit(f)
    jax.block_until_ready(g(*args))
    r[name + "_ms"] = kt.best_time(
        lambda: jax.block_until_ready(g(*args)), reps)[0] * 1e3
  r["sklearn_iter_ms"] = kt.sklearn_per_iter(x, init, 2, 7, 3)[0][0] * 1e3
  near = min(r["nearest_kb_ms"], r["nearest_bk_ms"], r["nearest_unrolled_ms"])
  sums = min(r["sums_segment_ms"], r["sums_onehot_ms"])
  r["floor_ms"] = near + sums
  print(f"| {n} | {d} | {k} | {r['read_x_ms']:.2f} | {near:.2f} | "
        f"{sums:.2f} | {r['floor_ms']:.2f} | {r['sklearn_iter_ms']:.2f} | "
        f"{r['sklearn_iter_ms'] / r['floor_ms']:.2f}x |", flush=True)
  return r


def trace_cell(n, d, k, iters, plan=None, top=12):
  x = kt.gaussian_data(n, d)
  init = x[np.random.default_rng(1).choice(n, k, replace=False)].copy()
  xj = jnp.asarray(x)
  plan = plan or kmeans.choose_plan(n, d, k)

  def run():
    return kmeans.fit(jax.random.key(0), xj, k, init=init, tol=0.0,
                      max_iter=iters, plan=plan).inertia.block_until_ready()

  run()
  run()
  with tempfile.TemporaryDirectory() as tmp:
    with jax.profiler.trace(tmp, create_perfetto_trace=True):
      run()
    path = glob.glob(os.path.join(tmp, "**", "*.trace.json.gz"),
                     recursive=True)[0]
    with gzip.open(path) as f:
      events = json.load(f)["traceEvents"]
  total = collections.defaultdict(lambda: [0, 0.0])
  for e in events:
    name = e.get("name", "")
    # XLA's thunks; host-side Python frames ($...) and executor wrappers out
    if e.get("ph") == "X" and not name.startswith("$") and \
        "Execute" not in name and "Await" not in name and \
        "asarray" not in name and "Pjit" not in name:
      total[name][0] += 1
      total[name][1] += e.get("dur", 0.0)
  print(f"### n={n} d={d} k={k}, {iters} iterations, plan {tuple(plan)}\n")
  print("| thunk | calls | ms per iteration |")
  print("|---|---|---|")
  rows = []
  for name, (calls, us) in sorted(total.items(), key=lambda t: -t[1][1])[:top]:
    rows.append({"thunk": name, "calls": calls, "ms_per_iter": us / 1e3 / iters})
    print(f"| {name} | {calls} | {us / 1e3 / iters:.3f} |")
  print()
  return {"n": n, "d": d, "k": k, "plan": plan._asdict(), "thunks": rows}


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--sections", default="argmin,tile,ties,ops,trace")
  p.add_argument("--argmin-n", type=int, default=100000)
  p.add_argument("--argmin-ks", default="10,24,26,28,32,64,100,1000")
  p.add_argument("--tiles", default="32,64,128,256")
  p.add_argument("--tie-cells", default="100000:784:10:2,100000:128:30:7")
  p.add_argument("--tile-cell", default="16384:32:1000")
  p.add_argument("--op-cells", default="10000:128:3,10000:784:3,"
                 "100000:32:3,100000:128:3,100000:128:10,100000:784:10,"
                 "1000000:32:3,1000000:32:10,1000000:128:3,1000000:128:10")
  p.add_argument("--cells", default="100000:32:100,60000:784:10")
  p.add_argument("--iters", type=int, default=20)
  p.add_argument("--plan", default=None,
                 help="layout,distance,argmin,sums,block for every traced cell")
  p.add_argument("--reps", type=int, default=7)
  p.add_argument("--json", default=None)
  args = p.parse_args()
  info = _bench.machine()
  print(f"machine: {info['cpu']}, {info['cores']} cores, JAX {info['jax']}, "
        f"load {os.getloadavg()}\n")
  out = {"machine": info}
  sections = set(args.sections.split(","))
  if "argmin" in sections:
    out["argmin"] = argmin_table(args.argmin_n,
                                 [int(v) for v in args.argmin_ks.split(",")],
                                 args.reps)
  if "tile" in sections:
    n, d, k = (int(v) for v in args.tile_cell.split(":"))
    out["tile"] = tile_table(n, d, k, [int(v) for v in args.tiles.split(",")],
                             args.reps)
  if "ties" in sections:
    print("### Label differences from the same init\n")
    print("| n | d | k | iterations | scikit-learn vs unsupjax | scikit-learn "
          "vs float64 of its centres | unsupjax vs float64 of its centres | "
          "rows with gap < 1e-5 |")
    print("|---|---|---|---|---|---|---|---|")
    out["ties"] = [ties_cell(*(int(v) for v in c.split(":")))
                   for c in args.tie_cells.split(",")]
    print()
  if "ops" in sections:
    print("### One iteration's ops alone, ms (best of reps)\n")
    print("| n | d | k | read x | nearest centre | sums | nearest + sums | "
          "scikit-learn iteration | best ratio possible |")
    print("|---|---|---|---|---|---|---|---|---|")
    out["ops"] = [ops_cell(*(int(v) for v in c.split(":")), args.reps)
                  for c in args.op_cells.split(",")]
    print()
  if "trace" in sections:
    plan = None
    if args.plan:
      layout, distance, argmin, sums, block = args.plan.split(",")
      plan = kmeans.Plan(int(block), layout, distance, argmin, sums)
    out["trace"] = []
    for cell in args.cells.split(","):
      n, d, k = (int(v) for v in cell.split(":"))
      out["trace"].append(trace_cell(n, d, k, args.iters, plan))
  if args.json:
    with open(args.json + ".tmp", "w") as f:
      json.dump(out, f, indent=1)
    os.replace(args.json + ".tmp", args.json)


if __name__ == "__main__":
  main()
