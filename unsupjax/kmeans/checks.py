"""Input checks for k-means: clear `ValueError`s naming the argument, raised
eagerly, before anything is compiled or run.

Offers the `check_*` functions the entry points call and `as_weights`
(sample_weight -> f32[n]). Does not convert or copy x: callers do, after the
checks pass. NaN/Inf checks run only on concrete arrays (inside a caller's
`jit`, x is a tracer and cannot be inspected).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

METRICS = ("euclidean", "cosine")
INITS = ("k-means++", "k-means||", "random")
# Storage dtypes of x inside Lloyd's loop; accumulation is always float32.
DTYPES = ("float32", "bfloat16", "float16")


def is_concrete(a: Any) -> bool:
  return not isinstance(a, jax.core.Tracer)


def check_x(x: Any, name: str = "x") -> None:
  """x must be a finite real 2-D array with at least one row and column."""
  ndim = getattr(x, "ndim", None)
  if ndim != 2:
    raise ValueError(
        f"{name}: expected a 2-D array f32[n, d], got shape "
        f"{getattr(x, 'shape', type(x).__name__)}")
  if x.shape[0] < 1 or x.shape[1] < 1:
    raise ValueError(f"{name}: expected at least one row and one column, "
                     f"got shape {tuple(x.shape)}")
  if not jnp.issubdtype(x.dtype, jnp.number) or jnp.issubdtype(
      x.dtype, jnp.complexfloating):
    raise ValueError(f"{name}: expected real numbers, got dtype {x.dtype}")
  if is_concrete(x) and jnp.issubdtype(x.dtype, jnp.floating):
    # On device for device arrays: no host copy of x.
    finite = (jnp.isfinite(x).all() if isinstance(x, jax.Array)
              else np.isfinite(x).all())
    if not finite:
      a = np.asarray(x)
      rows = np.unique(np.nonzero(~np.isfinite(a))[0])
      raise ValueError(
          f"{name}: expected finite values, found NaN/Inf in {rows.size} rows "
          f"(first: {rows[:5].tolist()})")


def check_k(k: Any, n: int) -> None:
  if not isinstance(k, (int, np.integer)) or isinstance(k, bool):
    raise ValueError(f"k: expected a Python int, got {k!r}")
  if k < 1:
    raise ValueError(f"k: expected k >= 1, got {k}")
  if k > n:
    raise ValueError(f"k: expected k <= n_samples = {n}, got {k}")


def check_weight(sample_weight: Any, n: int) -> None:
  if sample_weight is None:
    return
  shape = tuple(getattr(sample_weight, "shape", np.shape(sample_weight)))
  if shape != (n,):
    raise ValueError(
        f"sample_weight: expected shape ({n},) (one weight per row), got "
        f"{shape}")
  if is_concrete(sample_weight):
    w = np.asarray(sample_weight)
    if not np.isfinite(w).all():
      raise ValueError("sample_weight: expected finite values, found NaN/Inf")
    if (w < 0).any():
      raise ValueError(
          f"sample_weight: expected non-negative weights, got min {w.min()}")
    if not (w > 0).any():
      raise ValueError("sample_weight: expected at least one positive weight, "
                       "got all zero weights")


def check_metric(metric: Any) -> None:
  if metric not in METRICS:
    raise ValueError(f"metric: expected one of {METRICS}, got {metric!r}")


def check_dtype(dtype: Any) -> str:
  """The storage dtype's name, one of DTYPES."""
  try:
    name = jnp.dtype(dtype).name
  except TypeError:
    name = None
  if name not in DTYPES:
    raise ValueError(f"dtype: expected one of {DTYPES}, got {dtype!r}")
  return name


def check_block_size(block_size: Any) -> None:
  if block_size is not None and (
      not isinstance(block_size, (int, np.integer))
      or isinstance(block_size, bool) or block_size < 1):
    raise ValueError(f"block_size: expected an int >= 1, got {block_size!r}")


def check_common(k, *, init, n_init, max_iter, tol, metric, d, n) -> None:
  """The arguments `fit`, `fit_sharded` and `minibatch_init` share."""
  check_k(k, n)
  if isinstance(init, str):
    if init not in INITS:
      raise ValueError(
          f"init: expected one of {INITS} or an array f32[k, d], got {init!r}")
  else:
    shape = tuple(getattr(init, "shape", np.shape(init)))
    if shape != (k, d):
      raise ValueError(
          f"init: expected initial centroids of shape ({k}, {d}), got {shape}")
    if is_concrete(init) and not np.isfinite(np.asarray(init)).all():
      raise ValueError("init: expected finite initial centroids")
  if (not isinstance(n_init, (int, np.integer)) or isinstance(n_init, bool)
      or n_init < 1):
    raise ValueError(f"n_init: expected an int >= 1, got {n_init!r}")
  if is_concrete(max_iter) and not (
      isinstance(max_iter, (int, np.integer)) and max_iter >= 1):
    raise ValueError(f"max_iter: expected an int >= 1, got {max_iter!r}")
  if is_concrete(tol) and not float(tol) >= 0:
    raise ValueError(f"tol: expected tol >= 0, got {tol!r}")
  check_metric(metric)


def check_centroids(centroids: Any, x: Any, metric: str) -> None:
  check_x(x)
  if getattr(centroids, "ndim", None) != 2 or centroids.shape[1] != x.shape[1]:
    raise ValueError(
        f"centroids: expected f32[k, {x.shape[1]}] to match x's features, got "
        f"shape {getattr(centroids, 'shape', None)}")
  check_metric(metric)


def as_weights(sample_weight: Any, n: int) -> jax.Array:
  """sample_weight as f32[n] (all ones when None)."""
  if sample_weight is None:
    return jnp.ones((n,), jnp.float32)
  return jnp.asarray(sample_weight, jnp.float32)
