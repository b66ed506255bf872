"""unsupjax k-means vs scikit-learn's KMeans / MiniBatchKMeans, same run.

Prints markdown tables (and writes JSON with --json PATH):
  1. MNIST train (60000 x 784): seconds per Lloyd iteration at k = 10 and
     k = 256 from identical initial centroids (scikit-learn's k-means++ on
     the data), the same number of iterations (tol = 0), as the difference
     between runs of `b` and `a` iterations so set-up costs cancel; achieved
     GFLOP/s (2 n d k per iteration) as % of this machine's f32 matmul peak;
     final inertia of both. Also the ratio of process CPU seconds (all
     threads), steadier than wall time when other jobs share the cores.
  2. Full fit, k-means++ and n_init = 10, default tol: wall time and inertia.
  3. Scaling on synthetic data (d = 64, k = 100, n = 1e4 .. 1e6): seconds per
     iteration and peak memory (unsupjax: XLA's buffer sizes of the compiled
     fit; scikit-learn: tracemalloc peak of NumPy allocations).
  4. Mini-batch: the same batches fed to `minibatch_fit` (host iterator) and
     to `MiniBatchKMeans.partial_fit`, and `minibatch_fit_arrays` (the loop
     on device, same batch size and epochs); time and full-data inertia.
  5. `grid`: the per-iteration speed map on standard normal data over
     n x d x k (--grid-n, --grid-d, --grid-k; same initial centres, tol = 0,
     (t(b) - t(a)) / (b - a) iterations from interleaved runs, labels of
     both compared, cells past --cell-budget seconds or --max-data-gb
     skipped) and its heat map (--png).
  6. `gridfit`: the default fit, scikit-learn's `KMeans(k,
     random_state=s).fit(x)` against unsupjax's, mean time and mean inertia
     over --fit-seeds, on the same grid.
  7. `dtype`: float32 against bfloat16 / float16 storage (--dtype-cells):
     per-iteration time and the float64 inertia gap of the centroids.
Sections 1-4 need MNIST; `--sections` picks which run.

scikit-learn's BLAS: the script re-executes itself without OPENBLAS_CORETYPE
and OPENBLAS_L2_SIZE (set on these machines; they slow OpenBLAS) and prints
the kernel `threadpoolctl` reports.

Usage:
  nice -n 10 env JAX_PLATFORMS=cpu PYTHONPATH=. python benchmarks/kmeans_vs_sklearn.py \
      --data-dir ../shared/data/tfds --json /tmp/kmeans_bench.json
  nice -n 10 env JAX_PLATFORMS=cpu PYTHONPATH=. python benchmarks/kmeans_vs_sklearn.py \
      --sections grid,gridfit,dtype --png docs/kmeans_speed_map.png \
      --json benchmarks/results/kmeans_grid.json
  # the speed map with another calibration's cost model (--costs), and
  # without the one-block candidate, on this machine:
  nice -n 10 env JAX_PLATFORMS=cpu PYTHONPATH=. python benchmarks/kmeans_vs_sklearn.py \
      --sections grid --costs benchmarks/results/kmeans_calibration_amd.json \
      --one-block-bytes 0 --json /tmp/kmeans_grid_amd_model.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import tracemalloc

sys.path.insert(0, os.path.dirname(__file__))
import _bench  # noqa: E402

_bench.reexec_without_blas_throttles()  # before NumPy loads its BLAS

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from sklearn import cluster as skc  # noqa: E402

import kmeans_grid  # noqa: E402
from unsupjax import kmeans  # noqa: E402
from unsupjax.kmeans import fitting, plan as plan_lib  # noqa: E402


CPU_TIMES: list[float] = []  # process CPU seconds of the last `timed` call


def timed(f, reps: int) -> float:
  """Median wall seconds of f() (which blocks on its result).

  Also records the median process CPU seconds (all threads) in CPU_TIMES[0]:
  on a machine shared with other jobs, CPU time moves less than wall time.
  """
  ts, cs = [], []
  for _ in range(reps):
    c = time.process_time()
    t = time.perf_counter()
    f()
    ts.append(time.perf_counter() - t)
    cs.append(time.process_time() - c)
  CPU_TIMES[:] = [float(np.median(cs))]
  return float(np.median(ts))


def matmul_peak(reps: int) -> float:
  n = 4096 if jax.default_backend() == "cpu" else 16384
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  f = jax.jit(lambda a: jnp.dot(a, a, precision=jax.lax.Precision.HIGHEST))
  f(a).block_until_ready()
  t = timed(lambda: f(a).block_until_ready(), reps)
  return 2 * n**3 / t


def load_mnist(args) -> np.ndarray:
  if args.mnist_npz:
    with np.load(args.mnist_npz) as z:
      x = z["images"]
    return (x.reshape(x.shape[0], -1).astype(np.float32) / 255.0)
  from unsupjax import data
  return data.load("mnist", "train", data_dir=args.data_dir).flat()


def per_iteration(args, x, xj, k, peak):
  from sklearn.cluster import kmeans_plusplus
  init, _ = kmeans_plusplus(x, k, random_state=0)
  a, b = args.iters
  sk, ours, sk_cpu, us_cpu, res = {}, {}, {}, {}, None
  runs = {m: (lambda m=m: kmeans.fit(jax.random.key(0), xj, k, init=init,
                                     tol=0.0, max_iter=m,
                                     block_size=args.block_size))
          for m in (a, b)}
  for m in (a, b):
    res = runs[m]()
    assert int(res.n_iter) == m
  for _ in range(args.rounds):  # interleaved, so load changes hit both
    for m in (a, b):
      est = skc.KMeans(k, init=init, n_init=1, max_iter=m, tol=0.0)
      t = timed(lambda: est.fit(x), args.reps)
      sk[m] = min(sk.get(m, np.inf), t)
      sk_cpu[m] = min(sk_cpu.get(m, np.inf), CPU_TIMES[0])
      assert est.n_iter_ == m, ("scikit-learn converged early", est.n_iter_, m)
      sk_inertia = est.inertia_
      t = timed(lambda: runs[m]().inertia.block_until_ready(), args.reps)
      ours[m] = min(ours.get(m, np.inf), t)
      us_cpu[m] = min(us_cpu.get(m, np.inf), CPU_TIMES[0])
  res = runs[b]()
  t_sk = (sk[b] - sk[a]) / (b - a)
  t_us = (ours[b] - ours[a]) / (b - a)
  c_sk = (sk_cpu[b] - sk_cpu[a]) / (b - a)
  c_us = (us_cpu[b] - us_cpu[a]) / (b - a)
  flops = 2 * x.shape[0] * x.shape[1] * k
  # float64 reference inertia of our final centroids and labels.
  c64 = np.asarray(res.centroids, np.float64)
  lab = np.asarray(res.labels)
  ref = sum(float(np.sum((x[s:s + 4096].astype(np.float64) - c64[lab[s:s + 4096]])**2))
            for s in range(0, x.shape[0], 4096))
  return {"k": k, "sklearn_s_per_iter": t_sk, "unsupjax_s_per_iter": t_us,
          "speedup": t_sk / t_us,
          "sklearn_cpu_s_per_iter": c_sk, "unsupjax_cpu_s_per_iter": c_us,
          "cpu_time_ratio": c_sk / c_us,
          "unsupjax_pct_peak": 100 * flops / t_us / peak,
          "sklearn_pct_peak": 100 * flops / t_sk / peak,
          "sklearn_inertia": float(sk_inertia),
          "unsupjax_inertia": float(res.inertia),
          "inertia_rel_diff": float(res.inertia) / sk_inertia - 1,
          "unsupjax_inertia_vs_float64": float(res.inertia) / ref - 1}


def full_fit(args, x, xj, k):
  t = time.perf_counter()
  est = skc.KMeans(k, n_init=10, random_state=0).fit(x)
  t_sk = time.perf_counter() - t
  run = lambda: kmeans.fit(jax.random.key(0), xj, k, n_init=10,
                           block_size=args.block_size)
  t = time.perf_counter()
  res = run()
  res.inertia.block_until_ready()
  t_first = time.perf_counter() - t
  t_us = timed(lambda: run().inertia.block_until_ready(), 1)
  return {"k": k, "sklearn_s": t_sk, "unsupjax_s": t_us,
          "unsupjax_first_call_s": t_first, "speedup": t_sk / t_us,
          "sklearn_inertia": float(est.inertia_),
          "unsupjax_inertia": float(res.inertia),
          "sklearn_n_iter": int(est.n_iter_), "unsupjax_n_iter": int(res.n_iter)}


def scaling(args, n, d=64, k=100, iters=(2, 7)):
  rng = np.random.default_rng(0)
  centers = rng.normal(0, 4, (k, d)).astype(np.float32)
  x = centers[rng.integers(0, k, n)] + rng.normal(size=(n, d)).astype(np.float32)
  init = x[:k].copy()
  a, b = iters
  sk, peak_sk = {}, 0
  for m in (a, b):
    est = skc.KMeans(k, init=init, n_init=1, max_iter=m, tol=0.0)
    tracemalloc.start()
    sk[m] = timed(lambda: est.fit(x), 1)
    peak_sk = max(peak_sk, tracemalloc.get_traced_memory()[1])
    tracemalloc.stop()
  xj = jnp.asarray(x)
  ours = {}
  for m in (a, b):
    run = lambda: kmeans.fit(jax.random.key(0), xj, k, init=init, tol=0.0,
                             max_iter=m, block_size=args.block_size)
    run().inertia.block_until_ready()
    ours[m] = timed(lambda: run().inertia.block_until_ready(), 1)
  mem = None
  try:
    plan = kmeans.choose_plan(n, d, k, block_size=args.block_size)
    lowered = fitting._fit_jit.lower(
        jax.random.key(0), xj, jnp.ones((n,)), jnp.asarray(init),
        jnp.float32(0), jnp.int32(b), jnp.int32(n), jnp.float32(d), k=k,
        init="array", n_init=1, metric="euclidean", weighted=False, plan=plan,
        n_local_trials=None, mesh=None, axis_name=None, dtype="float32")
    ma = lowered.compile().memory_analysis()
    mem = int(ma.temp_size_in_bytes + ma.argument_size_in_bytes
              + ma.output_size_in_bytes)
  except Exception:  # not every backend reports it
    pass
  t_sk = (sk[b] - sk[a]) / (b - a)
  t_us = (ours[b] - ours[a]) / (b - a)
  return {"n": n, "d": d, "k": k, "sklearn_s_per_iter": t_sk,
          "unsupjax_s_per_iter": t_us, "speedup": t_sk / t_us,
          "data_mb": x.nbytes / 2**20,
          "sklearn_peak_mb": peak_sk / 2**20,
          "unsupjax_peak_mb": None if mem is None else mem / 2**20}


def minibatch(args, x, k=10, batch=1024, epochs=3):
  from sklearn.cluster import kmeans_plusplus
  init, _ = kmeans_plusplus(x[:batch], k, random_state=0)
  rng = np.random.default_rng(0)
  order = [rng.permutation(x.shape[0]) for _ in range(epochs)]
  batches = [x[p[s:s + batch]] for p in order
             for s in range(0, x.shape[0] - batch + 1, batch)]
  warm = skc.MiniBatchKMeans(k, init=init, n_init=1, batch_size=batch,
                             reassignment_ratio=0.0)
  for bx in batches[:3]:  # first calls pay one-time set-up
    warm.partial_fit(bx)
  est = skc.MiniBatchKMeans(k, init=init, n_init=1, batch_size=batch,
                            reassignment_ratio=0.0)
  t = time.perf_counter()
  for bx in batches:
    est.partial_fit(bx)
  t_sk = time.perf_counter() - t
  kmeans.minibatch_fit(jax.random.key(0), batches[:2], k, init=init)  # compile
  t = time.perf_counter()
  state = kmeans.minibatch_fit(jax.random.key(0), batches, k, init=init)
  state.centroids.block_until_ready()
  t_us = time.perf_counter() - t
  xj = jnp.asarray(x)
  # The whole loop on device (its own keyed batch order, same sizes).
  dev = lambda: kmeans.minibatch_fit_arrays(
      jax.random.key(0), xj, k, batch_size=batch, epochs=epochs, init=init)
  dev()[0].centroids.block_until_ready()
  t = time.perf_counter()
  dstate, _ = dev()
  dstate.centroids.block_until_ready()
  t_dev = time.perf_counter() - t
  full = kmeans.fit(jax.random.key(0), xj, k, init=init, tol=0.0)
  return {"k": k, "batch": batch, "steps": len(batches),
          "sklearn_s": t_sk, "unsupjax_s": t_us, "speedup": t_sk / t_us,
          "unsupjax_device_loop_s": t_dev, "device_loop_speedup": t_sk / t_dev,
          "sklearn_inertia": float(kmeans.inertia(est.cluster_centers_, xj)),
          "unsupjax_inertia": float(kmeans.inertia(state.centroids, xj)),
          "device_loop_inertia": float(kmeans.inertia(dstate.centroids, xj)),
          "full_batch_inertia_same_init": float(full.inertia)}


def table(rows, cols):
  out = ["| " + " | ".join(c for c, _ in cols) + " |",
         "|" + "---|" * len(cols)]
  for r in rows:
    out.append("| " + " | ".join(fmt.format(r[c]) if r[c] is not None else "-"
                                 for c, fmt in cols) + " |")
  return "\n".join(out)


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--data-dir", default="../shared/data/tfds")
  p.add_argument("--mnist-npz", default=None,
                 help="an unsupjax decode-cache .npz of MNIST train instead")
  p.add_argument("--ks", default="10,256")
  p.add_argument("--iters", default="2,12",
                 help="a,b: per-iteration time = (t(b) - t(a)) / (b - a)")
  p.add_argument("--reps", type=int, default=3)
  p.add_argument("--rounds", type=int, default=2,
                 help="interleaved rounds of the Lloyd timing (best kept)")
  p.add_argument("--block-size", type=int, default=None)
  p.add_argument("--scaling-ns", default="10000,100000,1000000")
  p.add_argument("--sections", default="lloyd,fit,scaling,minibatch",
                 help="comma list of: lloyd,fit,scaling,minibatch (MNIST), "
                      "grid,gridfit,dtype")
  p.add_argument("--skip", default="", help="sections not to run")
  p.add_argument("--grid-n", default="10000,100000,1000000")
  p.add_argument("--grid-d", default="2,8,32,128,784")
  p.add_argument("--grid-k", default="3,10,30,100,1000")
  p.add_argument("--grid-iters", default="2,7",
                 help="a,b: grid per-iteration time from a and b iterations")
  p.add_argument("--grid-reps", type=int, default=3)
  p.add_argument("--cell-budget", type=float, default=60.0,
                 help="skip a cell predicted to take longer (seconds)")
  p.add_argument("--max-data-gb", type=float, default=1.0,
                 help="skip cells whose float32 data is larger")
  p.add_argument("--fit-seeds", default="0,1,2,3,4")
  p.add_argument("--dtype-cells", default="100000:32:100,100000:128:30,"
                 "60000:784:10,10000:784:1000",
                 help="n:d:k cells of the dtype comparison")
  p.add_argument("--costs", default=None,
                 help="a JSON of benchmarks/kmeans_calibrate.py: plan with "
                      "its fitted costs instead of plan.CPU_COSTS (compare "
                      "two cost models on one machine)")
  p.add_argument("--one-block-bytes", type=int, default=None,
                 help="plan.ONE_BLOCK_BYTES for this run (0: no one-block "
                      "candidate)")
  p.add_argument("--png", default=None, help="heat map of the grid")
  p.add_argument("--summarize", default=None,
                 help="a JSON this script wrote: print its grid summaries "
                      "(and redraw --png) without running anything")
  p.add_argument("--json", default=None)
  args = p.parse_args()
  if args.summarize:
    with open(args.summarize) as f:
      saved = json.load(f)
    summarize(saved)
    if args.png and saved.get("lloyd_grid"):
      kmeans_grid.heat_map(saved["lloyd_grid"], args.png,
                           _map_title(saved["machine"]))
    return
  if args.costs:
    with open(args.costs) as f:
      plan_lib.CPU_COSTS.update(json.load(f)["costs"])
  if args.one_block_bytes is not None:
    plan_lib.ONE_BLOCK_BYTES = args.one_block_bytes
  args.iters = tuple(int(v) for v in args.iters.split(","))
  sections = (set(filter(None, args.sections.split(",")))
              - set(filter(None, args.skip.split(","))))
  skip = {"lloyd", "fit", "scaling", "minibatch"} - sections

  info = _bench.machine()
  info["blas"] = _bench.blas_info()
  peak = matmul_peak(args.reps)
  info["f32_matmul_peak_gflops"] = peak / 1e9
  info["load_average_start"] = os.getloadavg()
  info["plan_costs"] = args.costs or "plan.CPU_COSTS"
  info["one_block_bytes"] = plan_lib.ONE_BLOCK_BYTES
  print(f"machine: {info['cpu']}, {info['cores']} cores, JAX {info['jax']} "
        f"backend={info['backend']} ({info['devices']} x {info['device']})")
  print(f"scikit-learn BLAS: {info['blas']}")
  print(f"f32 matmul peak (jnp.dot): {peak / 1e9:.0f} GFLOP/s")
  print(f"load average: {info['load_average_start']}\n")
  out = {"machine": info}

  def save():
    if args.json:
      tmp = args.json + ".tmp"
      with open(tmp, "w") as f:
        json.dump(out, f, indent=1)
      os.replace(tmp, args.json)

  run_grid_sections(args, sections, out, save)
  if skip == {"lloyd", "fit", "scaling", "minibatch"}:  # no MNIST section
    save()
    return
  x = load_mnist(args)
  xj = jnp.asarray(x)
  if "lloyd" not in skip:
    rows = [per_iteration(args, x, xj, int(k), peak)
            for k in args.ks.split(",")]
    out["lloyd_mnist"] = rows
    print(f"### Lloyd iteration on MNIST train {x.shape}, same init, "
          f"{args.iters[1]} vs {args.iters[0]} iterations\n")
    print(table(rows, [("k", "{}"), ("sklearn_s_per_iter", "{:.4f}"),
                       ("unsupjax_s_per_iter", "{:.4f}"), ("speedup", "{:.2f}x"),
                       ("cpu_time_ratio", "{:.2f}x"),
                       ("unsupjax_pct_peak", "{:.0f}%"),
                       ("sklearn_pct_peak", "{:.0f}%"),
                       ("sklearn_inertia", "{:.6g}"),
                       ("unsupjax_inertia", "{:.6g}"),
                       ("inertia_rel_diff", "{:.1e}"),
                       ("unsupjax_inertia_vs_float64", "{:.1e}")]))
    print()
  if "fit" not in skip:
    rows = [full_fit(args, x, xj, 10)]
    out["full_fit_mnist"] = rows
    print("### Full fit on MNIST train, k-means++, n_init=10, tol=1e-4\n")
    print(table(rows, [("k", "{}"), ("sklearn_s", "{:.2f}"),
                       ("unsupjax_s", "{:.2f}"),
                       ("unsupjax_first_call_s", "{:.2f}"),
                       ("speedup", "{:.2f}x"), ("sklearn_inertia", "{:.6g}"),
                       ("unsupjax_inertia", "{:.6g}"),
                       ("sklearn_n_iter", "{}"), ("unsupjax_n_iter", "{}")]))
    print()
  if "scaling" not in skip:
    rows = [scaling(args, int(n)) for n in args.scaling_ns.split(",")]
    out["scaling"] = rows
    print("### Scaling, synthetic blobs, d=64, k=100\n")
    print(table(rows, [("n", "{}"), ("sklearn_s_per_iter", "{:.4f}"),
                       ("unsupjax_s_per_iter", "{:.4f}"),
                       ("speedup", "{:.2f}x"), ("data_mb", "{:.0f}"),
                       ("sklearn_peak_mb", "{:.0f}"),
                       ("unsupjax_peak_mb", "{:.0f}")]))
    print()
  if "minibatch" not in skip:
    rows = [minibatch(args, x)]
    out["minibatch_mnist"] = rows
    print("### Mini-batch on MNIST train, same batches (3 epochs)\n")
    print(table(rows, [("k", "{}"), ("batch", "{}"), ("steps", "{}"),
                       ("sklearn_s", "{:.2f}"), ("unsupjax_s", "{:.2f}"),
                       ("speedup", "{:.2f}x"),
                       ("unsupjax_device_loop_s", "{:.2f}"),
                       ("device_loop_speedup", "{:.2f}x"),
                       ("sklearn_inertia", "{:.6g}"),
                       ("unsupjax_inertia", "{:.6g}"),
                       ("device_loop_inertia", "{:.6g}"),
                       ("full_batch_inertia_same_init", "{:.6g}")]))
  save()


def _cells(args):
  ns = [int(float(v)) for v in args.grid_n.split(",")]
  ds = [int(v) for v in args.grid_d.split(",")]
  ks = [int(v) for v in args.grid_k.split(",")]
  return [(n, d, k) for n in ns for d in ds for k in ks]


def run_grid_sections(args, sections, out, save):
  """The speed map, the default-fit grid and the dtype comparison."""
  if "grid" in sections:
    iters = tuple(int(v) for v in args.grid_iters.split(","))
    rows = out["lloyd_grid"] = []
    print(f"### Per-iteration speed map: same init, tol = 0, "
          f"{iters[1]} vs {iters[0]} iterations\n", flush=True)
    print("| n | d | k | iterations | scikit-learn ms/iter | unsupjax ms/iter "
          "| speed-up | label mismatches (a / b) | inertia rel. diff | plan "
          "| load |", flush=True)
    print("|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
    for n, d, k in _cells(args):
      r = kmeans_grid.lloyd_cell(n, d, k, iters, args.grid_reps,
                                 args.cell_budget, args.max_data_gb)
      rows.append(r)
      save()
      if "skipped" in r:
        print(f"| {n} | {d} | {k} | - | - | - | skipped: {r['skipped']} "
              f"| | | | |", flush=True)
        continue
      pl = r["plan"]
      print(f"| {n} | {d} | {k} | {r['iters'][0]}-{r['unsupjax_n_iter']} | "
            f"{r['sklearn_s_per_iter'] * 1e3:.3f} | "
            f"{r['unsupjax_s_per_iter'] * 1e3:.3f} | {r['speedup']:.2f}x | "
            f"{r['label_mismatches_at_a']} / {r['label_mismatches']} | "
            f"{r['inertia_rel_diff']:.1e} | "
            f"{pl['distance']}/{pl['layout']}/{pl['argmin']}/{pl['sums']}/"
            f"{pl['block']} | {r['load']:.1f} |", flush=True)
    if args.png:
      kmeans_grid.heat_map(rows, args.png, _map_title(out["machine"]))
      print(f"\nheat map: {args.png}", flush=True)
    print()
    summarize({"lloyd_grid": rows})
  if "gridfit" in sections:
    seeds = [int(v) for v in args.fit_seeds.split(",")]
    rows = out["fit_grid"] = []
    print(f"### Default fit (k-means++, n_init='auto', tol=1e-4), mean over "
          f"seeds {seeds}\n", flush=True)
    print("| n | d | k | scikit-learn s | unsupjax s | speed-up | "
          "scikit-learn inertia | unsupjax inertia | ratio | iterations "
          "(sk / us) |", flush=True)
    print("|---|---|---|---|---|---|---|---|---|---|", flush=True)
    for n, d, k in _cells(args):
      r = kmeans_grid.fit_cell(n, d, k, seeds, args.cell_budget,
                               args.max_data_gb)
      rows.append(r)
      save()
      if "skipped" in r:
        print(f"| {n} | {d} | {k} | - | - | skipped: {r['skipped']} "
              f"| | | | |", flush=True)
        continue
      print(f"| {n} | {d} | {k} | {r['sklearn_s']:.3f} | "
            f"{r['unsupjax_s']:.3f} | {r['speedup']:.2f}x | "
            f"{r['sklearn_inertia']:.6g} | {r['unsupjax_inertia']:.6g} | "
            f"{r['inertia_ratio']:.4f} | {r['sklearn_n_iter']:.1f} / "
            f"{r['unsupjax_n_iter']:.1f} |", flush=True)
    done = [r for r in rows if "skipped" not in r]
    if done:
      print(f"\nmean inertia ratio (unsupjax / scikit-learn) over "
            f"{len(done)} cells: "
            f"{np.mean([r['inertia_ratio'] for r in done]):.4f}", flush=True)
    print()
  if "dtype" in sections:
    iters = tuple(int(v) for v in args.grid_iters.split(","))
    rows = out["dtype"] = []
    print("### Storage dtype: per-iteration speed-up over float32 and the "
          "float64 inertia of the centroids relative to float32's\n",
          flush=True)
    print("| n | d | k | float32 ms/iter | bfloat16 speed-up | bfloat16 "
          "inertia gap | float16 speed-up | float16 inertia gap |",
          flush=True)
    print("|---|---|---|---|---|---|---|---|", flush=True)
    for cell in args.dtype_cells.split(","):
      n, d, k = (int(v) for v in cell.split(":"))
      r = kmeans_grid.dtype_cell(n, d, k, iters, args.grid_reps)
      rows.append(r)
      save()
      print(f"| {n} | {d} | {k} | {r['float32_s_per_iter'] * 1e3:.3f} | "
            f"{r['bfloat16_speedup']:.2f}x | {r['bfloat16_inertia_gap']:.1e} | "
            f"{r['float16_speedup']:.2f}x | {r['float16_inertia_gap']:.1e} |",
            flush=True)
    print()


def _sklearn_version() -> str:
  import sklearn
  return sklearn.__version__


def _map_title(machine) -> str:
  return (f"unsupjax k-means: one Lloyd iteration vs scikit-learn "
          f"{_sklearn_version()}, {machine['cpu']}, {machine['cores']} cores "
          f"(same init, tol=0)")


def summarize(saved) -> None:
  """Compact d x k tables of the speed-ups (one per n), the count of cells
  meeting 1.0x and 1.5x, and the default-fit inertia summary."""
  rows = saved.get("lloyd_grid") or []
  for n in sorted({r["n"] for r in rows}):
    cells = {(r["d"], r["k"]): r for r in rows if r["n"] == n}
    ks = sorted({k for _, k in cells})
    print(f"\nspeed-up per Lloyd iteration, n = {n}:\n")
    print("| d \\ k | " + " | ".join(str(k) for k in ks) + " |")
    print("|---" * (len(ks) + 1) + "|")
    for d in sorted({d for d, _ in cells}):
      vals = []
      for k in ks:
        r = cells.get((d, k))
        vals.append("-" if r is None or "speedup" not in r
                    else f"{r['speedup']:.2f}x")
      print(f"| {d} | " + " | ".join(vals) + " |")
  done = [r for r in rows if "speedup" in r]
  if done:
    low = [r for r in done if r["d"] <= 128]
    print(f"\nmeasured cells: {len(done)} of {len(rows)}; >= 1.0x: "
          f"{sum(r['speedup'] >= 1.0 for r in done)}; d <= 128 cells >= 1.5x: "
          f"{sum(r['speedup'] >= 1.5 for r in low)} of {len(low)}")
  fit_rows = saved.get("fit_grid") or []
  for n in sorted({r["n"] for r in fit_rows}):
    cells = {(r["d"], r["k"]): r for r in fit_rows if r["n"] == n}
    ks = sorted({k for _, k in cells})
    print(f"\ndefault fit, n = {n}: speed-up / mean inertia ratio "
          f"(unsupjax / scikit-learn):\n")
    print("| d \\ k | " + " | ".join(str(k) for k in ks) + " |")
    print("|---" * (len(ks) + 1) + "|")
    for d in sorted({d for d, _ in cells}):
      vals = []
      for k in ks:
        r = cells.get((d, k))
        vals.append("-" if r is None or "speedup" not in r else
                    f"{r['speedup']:.1f}x / {r['inertia_ratio']:.3f}")
      print(f"| {d} | " + " | ".join(vals) + " |")
  fits = [r for r in fit_rows if "inertia_ratio" in r]
  if fits:
    ratios = np.array([r["inertia_ratio"] for r in fits])
    speed = np.array([r["speedup"] for r in fits])
    print(f"\ndefault fit over {len(fits)} cells: inertia ratio mean "
          f"{ratios.mean():.4f} (min {ratios.min():.4f}, max {ratios.max():.4f}"
          f"), time speed-up median {np.median(speed):.2f}x (min "
          f"{speed.min():.2f}x)")


if __name__ == "__main__":
  main()
