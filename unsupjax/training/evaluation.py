"""Dataset means of an eval step, compiled once per data shape.

`Evaluator(eval_step)` runs `eval_step(state, batch) -> dict of f32[b]`
over a whole dataset as one compiled `lax.scan` over padded batches and
returns each value's mean over the real rows. It keeps the programs it
compiled (one per state structure and data shape), so the loop's
per-epoch evaluation and a run's final one compile once between them.
`evaluate(state, eval_step, x)` is the one-off form.

Does not offer: per-example outputs (see `unsupjax.batched.batched_apply`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from unsupjax.batched import num_rows, pad_batches
from unsupjax.training.compile import compile_lowered

DEFAULT_EVAL_BATCH = 1000


def make_eval_fn(eval_step: Callable) -> Callable:
  """(state, xb [nb, b, ...], mask f32[nb, b]) -> dict of dataset means."""

  def eval_fn(state, xb, mask):
    def body(carry, inputs):
      batch, m = inputs
      values = eval_step(state, batch)
      return carry, jax.tree.map(lambda v: jnp.sum(v * m), values)

    _, sums = jax.lax.scan(body, None, (xb, mask))
    count = jnp.sum(mask)
    return jax.tree.map(lambda s: jnp.sum(s) / count, sums)

  return eval_fn


class Evaluator:
  """`eval_step`'s dataset means, compiled on first use per shape.

  put: places the padded batches (e.g. replicated on a mesh); default:
  `jax.device_put`.
  """

  def __init__(self, eval_step: Callable, batch_size: int = DEFAULT_EVAL_BATCH, *,
               put: Callable | None = None):
    self.eval_step = eval_step
    self.batch_size = batch_size
    self._put = put or jax.device_put
    self._jitted = jax.jit(make_eval_fn(eval_step))
    self._programs: dict = {}
    self._data: tuple[int, Any] | None = None

  def _batches(self, x):
    # The padded copy of the last dataset seen, so per-epoch evaluation
    # sends the data to the device once.
    if self._data is None or self._data[0] is not x:
      xb, mask = pad_batches(x, min(self.batch_size, num_rows(x)))
      self._data = (x, self._put((xb, mask)))
    return self._data[1]

  def _program(self, state, xb, mask):
    args = (state, xb, mask)
    key = (jax.tree.structure(args),
           tuple((np.shape(a), getattr(a, "dtype", None), getattr(a, "sharding", None))
                 for a in jax.tree.leaves(args)))
    try:
      hash(key)
    except TypeError:  # unhashable static fields: compile without keeping it
      return compile_lowered(self._jitted.lower(*args))
    if key not in self._programs:
      self._programs[key] = compile_lowered(self._jitted.lower(*args))
    return self._programs[key]

  def prepare(self, state, x) -> None:
    """Compiles for this state and data now (to time compilation apart)."""
    xb, mask = self._batches(x)
    self._program(state, xb, mask)

  def __call__(self, state, x) -> dict[str, float]:
    xb, mask = self._batches(x)
    out = jax.device_get(self._program(state, xb, mask)(state, xb, mask))
    return {k: float(v) for k, v in out.items()}


def evaluate(state, eval_step: Callable, x, batch_size: int = DEFAULT_EVAL_BATCH
             ) -> dict[str, float]:
  """Dataset means of `eval_step`'s per-example values over all of x."""
  return Evaluator(eval_step, batch_size)(state, x)
