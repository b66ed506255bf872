"""Applying a function to a whole dataset in fixed-size, padded batches.

`batched_apply(fn, x, batch_size)` cuts x (an array, or a pytree of arrays
sharing the leading axis) into batches of one size, the last one padded
with zeros, so a jitted `fn` compiles once for the whole dataset; the
padded rows are dropped from the result. The size is the smallest power of
two that holds x, capped at `batch_size`, so datasets of nearby sizes (a
few samples logged during training, more at the end) share one program.
`pad_batches` is the same cut as arrays, with a mask, for loops that run
on device.

Does not offer: reductions (take them on the result, or use the mask), or
streaming from disk.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

DEFAULT_BATCH = 1000


def num_rows(x: Any) -> int:
  """The leading size shared by every leaf of x (an array or a pytree)."""
  sizes = {int(np.shape(a)[0]) for a in jax.tree.leaves(x)}
  if len(sizes) != 1:
    raise ValueError(f"x: expected arrays sharing one leading size, got sizes {sorted(sizes)}")
  return sizes.pop()


def _check_batch_size(batch_size: Any) -> None:
  if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
    raise ValueError(f"batch_size: expected a positive integer, got {batch_size!r}")


def pad_batches(x: Any, batch_size: int) -> tuple[Any, np.ndarray]:
  """x: [n, ...] (or a pytree of them) -> (x padded and reshaped to
  [nb, batch_size, ...], mask f32[nb, batch_size]: 1 on real rows)."""
  n = num_rows(x)
  _check_batch_size(batch_size)
  nb = max(1, math.ceil(n / batch_size))
  pad = nb * batch_size - n

  def pad_one(a):
    a = np.asarray(a)
    ap = np.concatenate([a, np.zeros((pad,) + a.shape[1:], a.dtype)]) if pad else a
    return ap.reshape((nb, batch_size) + a.shape[1:])

  mask = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
  return jax.tree.map(pad_one, x), mask.reshape(nb, batch_size)


def bucket_size(n: int, batch_size: int) -> int:
  """The batch batched_apply uses for n rows: the smallest power of two
  >= n, at most batch_size."""
  return max(1, min(batch_size, 1 << max(0, n - 1).bit_length()))


def _jitted(fn: Callable) -> Callable:
  # A jitted function, or a partial of one (parameters bound), keeps its own
  # compilation cache; wrapping it in a new jit would compile per call.
  inner = fn.func if isinstance(fn, functools.partial) else fn
  return fn if hasattr(inner, "lower") else jax.jit(fn)


def batched_apply(fn: Callable[[Any], Any], x: Any,
                  batch_size: int = DEFAULT_BATCH) -> Any:
  """fn over all rows of x in padded batches -> fn's outputs for the n rows.

  fn: batch [b, ...] (a pytree like x) -> an array or pytree of arrays with
  leading size b, each row depending on its own input row only. It is
  jitted here unless it already is, or is a `functools.partial` of a jitted
  function (pass one of those to reuse its compilation across calls).
  Every call sees `bucket_size(n, batch_size)` rows.
  Returns host NumPy arrays (a pytree like fn's output) with leading size n.
  """
  n = num_rows(x)
  _check_batch_size(batch_size)
  f = _jitted(fn)
  batches, _ = pad_batches(x, bucket_size(n, batch_size))
  nb = num_rows(batches)
  outs = [jax.device_get(f(jax.tree.map(lambda a: a[i], batches))) for i in range(nb)]
  return jax.tree.map(lambda *parts: np.concatenate([np.asarray(p) for p in parts])[:n],
                      *outs)
