"""Parameter averaging: an exponential moving average (EMA) of weights.

Evaluating an EMA of the iterates instead of the last iterate (Polyak
averaging) removes much of the minibatch noise the last step leaves in the
weights; GAN generators and VAEs both sample and evaluate from it.

Offers the decay schedule `ema_decay_at` and the update `ema_update`. Does
not offer optimizers (that is optax's job) or averaging of optimizer state.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def ema_decay_at(decay: float, step: jax.Array) -> jax.Array:
  """The decay used at update `step`: min(decay, (1 + t) / (10 + t)).

  The warm-up term keeps early averages from being dominated by the
  initial weights (the schedule of TensorFlow's ExponentialMovingAverage
  with `num_updates`).
  """
  t = jnp.asarray(step, jnp.float32)
  return jnp.minimum(jnp.float32(decay), (1.0 + t) / (10.0 + t))


def ema_update(ema: Any, params: Any, decay: float, step: jax.Array) -> Any:
  """decay_t * ema + (1 - decay_t) * params, leaf by leaf (decay_t = ema_decay_at)."""
  d = ema_decay_at(decay, step)
  return jax.tree.map(lambda e, p: d * e + (1.0 - d) * p, ema, params)
