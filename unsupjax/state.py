"""One train state for every network unsupjax trains.

`TrainState` follows Flax's `flax.training.train_state.TrainState` (step,
params, optimizer state and a static optimizer, `apply_gradients`) and adds
what the models here need: an optional exponential moving average of the
parameters (`ema_params`, used by `eval_params`), the Flax module itself
(`model`, so `state.model.apply(..., method="encode")` works) and the
model's static configuration. The autoencoders, the VAE, the codec, DEC and
each half of a GAN are `TrainState`s, or subclasses that add the pytree
fields an exact resume needs (the VAE's evaluation key, DEC's targets).

Does not offer: a training loop (`unsupjax.training`), or sharding.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from unsupjax.averaging import ema_update


class TrainState(struct.PyTreeNode):
  """step: i32[] updates applied; params, opt_state: pytrees; ema_params:
  the EMA of params, or None without one (`ema_decay` 0).

  Static (not pytree leaves): model (a Flax module or None), tx (the optax
  transformation), config (the model's frozen config), ema_decay.
  """
  step: jax.Array
  params: Any
  opt_state: Any
  ema_params: Any = None
  model: Any = struct.field(pytree_node=False, default=None)
  tx: optax.GradientTransformation = struct.field(pytree_node=False, default=None)
  config: Any = struct.field(pytree_node=False, default=None)
  ema_decay: float = struct.field(pytree_node=False, default=0.0)

  @classmethod
  def create(cls, *, params: Any, tx: optax.GradientTransformation,
             ema_decay: float = 0.0, **fields: Any) -> "TrainState":
    """A state at step 0: `tx.init(params)`, and the EMA started at params."""
    if not 0.0 <= float(ema_decay) < 1.0:
      raise ValueError(f"ema_decay: expected a value in [0, 1), got {ema_decay!r}")
    ema = jax.tree.map(jnp.copy, params) if ema_decay > 0 else None
    return cls(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
               ema_params=ema, tx=tx, ema_decay=float(ema_decay), **fields)

  def apply_gradients(self, grads: Any, **changes: Any) -> "TrainState":
    """One optimizer update of params with `grads`, then the EMA; step + 1.

    `changes` replace other fields in the same call (e.g. updated
    statistics).
    """
    updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
    params = optax.apply_updates(self.params, updates)
    ema = self.ema_params
    if self.ema_decay > 0:
      ema = ema_update(ema, params, self.ema_decay, self.step)
    return self.replace(step=self.step + 1, params=params, opt_state=opt_state,
                        ema_params=ema, **changes)

  @property
  def eval_params(self) -> Any:
    """The weights evaluation and sampling use: the EMA when there is one."""
    return self.params if self.ema_params is None else self.ema_params
