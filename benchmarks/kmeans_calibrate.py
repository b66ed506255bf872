"""Calibrates unsupjax.kmeans's cost model (`plan.CPU_COSTS`) on this CPU.

For each calibration cell (n, d, k) it times one pass over x with sums
(`lloyd.assign_blocks`, then the centre update) for every candidate plan
(`plan.candidate_plans`: distance form, layout, argmin, sums method and
block size), as the best of `--reps` runs of `m` passes in one
`lax.fori_loop` divided by m (m sized to ~0.1 s), then fits
the per-unit costs by non-negative least squares on relative error
(`plan.plan_counts` gives each plan's unit counts, so the model is linear
in the costs). It prints the fitted `CPU_COSTS` to paste into
unsupjax/kmeans/plan.py and, per cell, the fastest measured plan against
the plan the fitted and the current model choose (the regret: chosen
time / fastest time).

Usage:
  nice -n 10 env JAX_PLATFORMS=cpu PYTHONPATH=. python benchmarks/kmeans_calibrate.py \
      --json benchmarks/results/kmeans_calibration.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import _bench  # noqa: E402

_bench.reexec_without_blas_throttles()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from scipy.optimize import nnls  # noqa: E402

import kmeans_timing as kt  # noqa: E402
from jax import lax  # noqa: E402
from unsupjax.kmeans import lloyd, plan as plan_lib  # noqa: E402

# (d, k) pairs spanning the speed-map grid; n is chosen per cell so one
# iteration does ~2e8 distance-flops (and 1e4 <= n <= 2e5).
CELLS = [(2, 3), (2, 10), (2, 30), (2, 1000), (8, 3), (8, 10), (8, 100),
         (32, 3), (32, 30), (32, 100), (32, 1000), (128, 10), (128, 30),
         (128, 1000), (784, 3), (784, 10), (784, 100)]


def cell_n(d: int, k: int) -> int:
  n = int(2e8 / (k * (d + 8)))
  return int(min(2e5, max(1e4, round(n, -3))))


def pass_seconds(x, init, pl, reps: int, target_s: float = 0.1) -> float:
  """Seconds per Lloyd pass (assignment, sums, centre update) of plan pl."""
  n, d = x.shape
  xc = jnp.asarray(x - x.mean(0))
  c0 = jnp.asarray(init - x.mean(0))

  @jax.jit
  def passes(xc, c, m):
    # Blocks are built inside the program, as in `fit`: passed in as an
    # argument of shape (1, B, d), XLA:CPU adds a slow layout copy of x
    # before `segment_sum` that no fit runs.
    blocks = lloyd.to_blocks(xc, jnp.ones((n,)), pl.block)

    def one(_, c):
      _, _, sums, counts = lloyd.assign_blocks(
          blocks, c, pl, with_sums=True, precision=lax.Precision.HIGHEST,
          weighted=False)
      return jnp.where(counts[:, None] > 0,
                       sums / jnp.maximum(counts, 1.0)[:, None], c)
    return lax.fori_loop(0, m, one, c)

  passes(xc, c0, 1).block_until_ready()
  t1, _ = kt.best_time(lambda: passes(xc, c0, 1).block_until_ready(), 1)
  m = int(min(200, max(3, target_s / max(t1, 1e-5))))
  t, _ = kt.best_time(lambda: passes(xc, c0, m).block_until_ready(), reps)
  return t / m


def plan_name(p: plan_lib.Plan) -> str:
  return f"{p.distance}/{p.layout}/{p.argmin}/{p.sums}/{p.block}"


def fit_costs(rows, units):
  a = np.array([[r["counts"][u] for u in units] for r in rows])
  t = np.array([r["s_per_iter"] for r in rows])
  w = 1.0 / t  # relative error
  scale = np.maximum(a.max(axis=0), 1e-30)
  coef, _ = nnls(a * w[:, None] / scale, np.ones_like(t))
  return dict(zip(units, (coef / scale).tolist()))


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--cells", default=None,
                 help="d:k,d:k,... (default: the built-in calibration cells)")
  p.add_argument("--n", type=int, default=None,
                 help="rows of every cell (default: ~2e8 distance-flops per "
                      "iteration, 1e4 <= n <= 2e5); a check of the model "
                      "outside the rows it was fitted on")
  p.add_argument("--reps", type=int, default=3)
  p.add_argument("--max-load", type=float, default=None,
                 help="wait for a 1-minute load average below this per cell")
  p.add_argument("--refit", default=None,
                 help="JSONs this script wrote, comma-separated: refit their "
                      "timings together with the current unit counts "
                      "instead of measuring")
  p.add_argument("--costs", default=None,
                 help="a JSON this script wrote: its fitted costs stand for "
                      "the 'current model' column instead of plan.CPU_COSTS")
  p.add_argument("--json", default=None)
  args = p.parse_args()
  cells = CELLS if args.cells is None else [
      tuple(int(v) for v in c.split(":")) for c in args.cells.split(",")]
  info = _bench.machine()
  print(f"machine: {info['cpu']}, {info['cores']} cores, JAX {info['jax']}",
        flush=True)
  rows = []
  t0 = time.time()
  if args.refit:
    for path in args.refit.split(","):
      with open(path) as f:
        old = json.load(f)
      rows += old["rows"]
      info = old["machine"]
    for r in rows:
      r["counts"] = plan_lib.plan_counts(plan_lib.Plan(**r["plan"]), r["n"],
                                         r["d"], r["k"])
    cells = list(dict.fromkeys((r["n"], r["d"], r["k"]) for r in rows))
  else:
    cells = [(cell_n(d, k) if args.n is None else args.n, d, k)
             for d, k in cells]
  for n, d, k in ([] if args.refit else cells):
    load = kt.wait_quiet(args.max_load)
    x = kt.gaussian_data(n, d)
    init = x[np.random.default_rng(1).choice(n, k, replace=False)]
    for pl in plan_lib.candidate_plans(n, d, k):
      rows.append({"n": n, "d": d, "k": k, "plan": pl._asdict(),
                   "s_per_iter": pass_seconds(x, init, pl, args.reps),
                   "counts": plan_lib.plan_counts(pl, n, d, k),
                   "load": load})
    best = min((r for r in rows if (r["n"], r["d"], r["k"]) == (n, d, k)),
               key=lambda r: r["s_per_iter"])
    print(f"n={n} d={d} k={k}: fastest {plan_name(plan_lib.Plan(**best['plan']))}"
          f" {best['s_per_iter'] * 1e3:.2f} ms/iter (load {load:.1f}, "
          f"{time.time() - t0:.0f} s)", flush=True)

  units = list(plan_lib.CPU_COSTS)
  costs = fit_costs(rows, units)
  current_costs = None
  if args.costs:
    with open(args.costs) as f:
      current_costs = json.load(f)["costs"]
  print("\nCPU_COSTS = {")
  for u in units:
    print(f'    "{u}": {costs[u]:.3g},')
  print("}\n")
  print("| n | d | k | fastest plan | ms/iter | fitted model's plan | regret | "
        "current model's plan | regret |")
  print("|---|---|---|---|---|---|---|---|---|")
  summary = []
  for n, d, k in cells:
    cell = [r for r in rows if (r["n"], r["d"], r["k"]) == (n, d, k)]
    meas = {plan_lib.Plan(**r["plan"]): r["s_per_iter"] for r in cell}
    best = min(meas, key=meas.get)
    # The models choose among today's candidates that were measured.
    cands = [q for q in meas if q in set(plan_lib.candidate_plans(n, d, k))]
    fitted = min(cands, key=lambda q: plan_lib.plan_cost(q, n, d, k, costs))
    current = min(cands, key=lambda q: plan_lib.plan_cost(q, n, d, k,
                                                          current_costs))
    summary.append({"n": n, "d": d, "k": k, "fastest": best._asdict(),
                    "fitted_choice": fitted._asdict(),
                    "fitted_regret": meas[fitted] / meas[best],
                    "current_choice": current._asdict(),
                    "current_regret": meas[current] / meas[best]})
    print(f"| {n} | {d} | {k} | {plan_name(best)} | {meas[best] * 1e3:.2f} | "
          f"{plan_name(fitted)} | {meas[fitted] / meas[best]:.2f} | "
          f"{plan_name(current)} | {meas[current] / meas[best]:.2f} |")
  if args.json:
    tmp = args.json + ".tmp"
    with open(tmp, "w") as f:
      json.dump({"machine": info, "reps": args.reps,
                 "rows": rows, "costs": costs, "summary": summary}, f,
                indent=1)
    os.replace(tmp, args.json)


if __name__ == "__main__":
  main()
