"""Timing helpers shared by the k-means benchmarks (kmeans_vs_sklearn.py,
kmeans_calibrate.py): per-iteration Lloyd time for unsupjax and
scikit-learn from the same initial centres, and a wait for a quiet machine.

Per-iteration time is (t(b iterations) - t(a iterations)) / (b - a) with
tol = 0, so set-up (validation, centring, copies, the final E-step and
inertia) cancels; each t is the minimum of `reps` runs, the estimate least
disturbed by other jobs on a shared machine. Import after
`_bench.reexec_without_blas_throttles()`.
"""

from __future__ import annotations

import os
import time

import jax
import numpy as np

from unsupjax import kmeans


def load1() -> float:
  return os.getloadavg()[0]


def wait_quiet(max_load: float | None, timeout_s: float = 300.0) -> float:
  """Sleeps until the 1-minute load average is below `max_load` (or the
  timeout passes); returns the load seen last."""
  t0 = time.time()
  while max_load is not None and load1() > max_load and (
      time.time() - t0 < timeout_s):
    time.sleep(5.0)
  return load1()


def best_time(f, reps: int) -> tuple[float, float]:
  """(min wall seconds, min process CPU seconds) of f() over reps runs."""
  walls, cpus = [], []
  for _ in range(reps):
    c = time.process_time()
    t = time.perf_counter()
    f()
    walls.append(time.perf_counter() - t)
    cpus.append(time.process_time() - c)
  return min(walls), min(cpus)


def gaussian_data(n: int, d: int, seed: int = 0) -> np.ndarray:
  """f32[n, d]: 20 Gaussian blobs (unit spread, centres N(0, 3^2)) in d
  dimensions, so Lloyd does not converge in a few iterations."""
  rng = np.random.default_rng(seed)
  centres = rng.normal(0.0, 3.0, (20, d)).astype(np.float32)
  x = centres[rng.integers(0, 20, n)]
  x += rng.normal(size=(n, d)).astype(np.float32)
  return x


def noise_data(n: int, d: int, seed: int = 0) -> np.ndarray:
  """f32[n, d] standard normal: no clusters, so Lloyd keeps moving labels
  for many iterations (per-iteration timing needs iterations to run)."""
  return np.random.default_rng(seed).standard_normal((n, d), np.float32)


def ours_per_iter(x, xj, init, a: int, b: int, reps: int, **fit_kw):
  """unsupjax seconds per Lloyd iteration (wall, CPU), its iterations at b
  and the result of the b-iteration run."""
  k = init.shape[0]

  def run(m):
    return kmeans.fit(jax.random.key(0), xj, k, init=init, tol=0.0,
                      max_iter=m, **fit_kw)

  run(a).inertia.block_until_ready()  # compile (max_iter is traced)
  res = run(b)
  n_b = int(res.n_iter)
  n_a = int(run(a).n_iter)
  ta = best_time(lambda: run(a).inertia.block_until_ready(), reps)
  tb = best_time(lambda: run(b).inertia.block_until_ready(), reps)
  its = max(n_b - n_a, 1)
  return ((tb[0] - ta[0]) / its, (tb[1] - ta[1]) / its), n_b, res


def sklearn_per_iter(x, init, a: int, b: int, reps: int):
  """scikit-learn (Lloyd) seconds per iteration (wall, CPU), its iterations
  at b and the b-iteration estimator."""
  from sklearn.cluster import KMeans
  k = init.shape[0]
  est = {m: KMeans(k, init=init, n_init=1, max_iter=m, tol=0.0)
         for m in (a, b)}
  ta = best_time(lambda: est[a].fit(x), reps)
  tb = best_time(lambda: est[b].fit(x), reps)
  its = max(est[b].n_iter_ - est[a].n_iter_, 1)
  return (((tb[0] - ta[0]) / its, (tb[1] - ta[1]) / its), int(est[b].n_iter_),
          est[b])
