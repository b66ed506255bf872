"""Shared benchmark plumbing: machine facts, matmul peak, timing, tables.

Every benchmark script records the machine beside its table, measures this
machine's f32 matmul peak in the same run, and times steady state (compile
first, then the median of repetitions, each ended by block_until_ready).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

BLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def reexec_without_blas_throttles() -> None:
  """Re-runs this script without the OpenBLAS variables these machines set.

  They make NumPy's (and so scikit-learn's) BLAS slower; a fair baseline
  runs without them. Only the benchmark's own process is affected.
  """
  if any(v in os.environ for v in BLAS_VARS):
    env = {k: v for k, v in os.environ.items() if k not in BLAS_VARS}
    os.execve(sys.executable, [sys.executable] + sys.argv, env)


def blas_info() -> str:
  try:
    from threadpoolctl import threadpool_info
  except ImportError:
    return "threadpoolctl not installed"
  rows = [f"{i.get('internal_api')} {i.get('version')} {i.get('architecture', '')} "
          f"threads={i.get('num_threads')}" for i in threadpool_info()
          if i.get("user_api") == "blas"]
  return "; ".join(rows) or "no BLAS found"


def machine() -> dict:
  import jax
  cpu = platform.processor() or "unknown"
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          cpu = line.split(":", 1)[1].strip()
          break
  except OSError:
    pass
  d = jax.devices()[0]
  return {"cores": os.cpu_count(), "cpu": cpu, "jax": jax.__version__,
          "backend": d.platform, "device": d.device_kind,
          "devices": jax.device_count()}


def median_seconds(fn: Callable[[], object], repeats: int = 5,
                   warmup: int = 1) -> float:
  """Median wall time of fn() (fn must block on its own results)."""
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return statistics.median(times)


def matmul_peak_flops(n: int = 2048, repeats: int = 5) -> float:
  """This machine's achieved f32 FLOP/s on a large square jnp.dot."""
  import jax
  import jax.numpy as jnp
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
  dot = jax.jit(jnp.dot).lower(a, a).compile()
  seconds = median_seconds(lambda: dot(a, a).block_until_ready(), repeats)
  return 2.0 * n**3 / seconds


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
  def cell(v):
    if isinstance(v, float):
      return f"{v:.4g}"
    return str(v)
  lines = ["| " + " | ".join(headers) + " |",
           "|" + "|".join("---" for _ in headers) + "|"]
  lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
  return "\n".join(lines)


def write_json(path: str | None, payload: dict) -> None:
  if path:
    with open(path, "w") as f:
      json.dump(payload, f, indent=2)


def mean_std(values: Sequence[float], fmt: str = ".3f") -> str:
  """'mean ± sample std' of `values` ('value' for one)."""
  v = [float(x) for x in values]
  if len(v) == 1:
    return format(v[0], fmt)
  return f"{format(statistics.mean(v), fmt)} ± {format(statistics.stdev(v), fmt)}"


def make_epoch_fn(train_step: Callable, batch_size: int) -> Callable:
  """(state, x, data_key, step_key, epoch) -> (state, mean metrics): one
  epoch's whole batches as the loop runs them on device (the epoch's keyed
  order `data.batch_indices`, then `training.make_steps_fn`'s `lax.scan`),
  as one program to jit, lower and time. x: an array or a pytree of arrays
  sharing n, on device. `training.fit` passes `named(key, "data")` and
  `named(key, "steps")` as the two keys."""
  from unsupjax import data, training
  from unsupjax.batched import num_rows

  steps_fn = training.make_steps_fn(train_step)

  def epoch_fn(state, x, data_key, step_key, epoch):
    ids = data.batch_indices(data_key, epoch, num_rows(x), batch_size)
    return steps_fn(state, x, ids, step_key)

  return epoch_fn


def run_cli(args: Sequence[str], log: Callable[[str], None], repo) -> str:
  """Runs `python -m unsupjax ARGS` from the checkout `repo` (JAX_PLATFORMS
  defaults to cpu); returns its last stdout line, raises with its stderr."""
  env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
  env["PYTHONPATH"] = str(repo) + os.pathsep + env.get("PYTHONPATH", "")
  cmd = [sys.executable, "-m", "unsupjax", *args]
  log(" ".join(cmd))
  r = subprocess.run(cmd, env=env, cwd=repo, capture_output=True, text=True)
  if r.returncode != 0:
    raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
  last = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else "(no output)"
  log(last)
  return last
