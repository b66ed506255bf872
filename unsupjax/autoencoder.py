"""Autoencoders: train state, pure train and eval steps.

Offers the dense autoencoder (the classic 784-128-32-128-784 Keras model:
ReLU layers, sigmoid output, binary cross-entropy, Adam) through the contract
every trainable thing in unsupjax follows:

    state = init_state(key, config, example_batch)
    state, metrics = train_step(state, batch, key)
    values = eval_step(state, batch)       # per-example f32[b] arrays

plus `reconstruct` and `encode`. Nothing here is jitted: callers (the loop in
`train.py`, benchmarks, a notebook) choose how to compile.

Does not offer: a training loop (see `train.fit`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import chex
import jax
import jax.numpy as jnp
import optax
from flax import struct

from unsupjax import losses, nn


@dataclasses.dataclass(frozen=True)
class AEConfig:
  """The dense autoencoder's hyper-parameters (defaults: the Keras classic)."""
  hidden: Sequence[int] = (128,)
  latent_dim: int = 32
  learning_rate: float = 1e-3

  def __post_init__(self):
    if int(self.latent_dim) < 1:
      raise ValueError(f"latent_dim: expected a positive integer, got {self.latent_dim}")
    if any(int(h) < 1 for h in self.hidden):
      raise ValueError(f"hidden: expected positive layer widths, got {tuple(self.hidden)}")
    if not self.learning_rate > 0:
      raise ValueError(f"learning_rate: expected > 0, got {self.learning_rate}")


class AEState(struct.PyTreeNode):
  """Everything an exact resume needs. step: i32[]; params, opt_state: pytrees."""
  step: jax.Array
  params: Any
  opt_state: Any
  model: nn.DenseAutoencoder = struct.field(pytree_node=False)
  tx: optax.GradientTransformation = struct.field(pytree_node=False)


def make_model(config: AEConfig, image_shape: Sequence[int]) -> nn.DenseAutoencoder:
  return nn.DenseAutoencoder(image_shape=tuple(int(s) for s in image_shape),
                             hidden=tuple(int(h) for h in config.hidden),
                             latent_dim=int(config.latent_dim))


def init_state(key: chex.PRNGKey, config: AEConfig,
               example_batch: jax.Array) -> AEState:
  """A fresh state; example_batch: f32[b, ...] fixes the input shape."""
  model = make_model(config, example_batch.shape[1:])
  params = model.init(key, jnp.asarray(example_batch[:1]))["params"]
  tx = optax.adam(config.learning_rate)
  return AEState(step=jnp.zeros((), jnp.int32), params=params,
                 opt_state=tx.init(params), model=model, tx=tx)


def loss_fn(params, model: nn.DenseAutoencoder, x: jax.Array) -> jax.Array:
  """Mean over the batch of the per-pixel BCE between x and its reconstruction."""
  logits, _ = model.apply({"params": params}, x)
  return jnp.mean(losses.bce_with_logits(logits, x))


def train_step(state: AEState, batch: jax.Array,
               key: chex.PRNGKey) -> tuple[AEState, dict[str, jax.Array]]:
  """One Adam step on the BCE reconstruction loss.

  batch: f32[b, ...] in [0, 1]. key: unused (the dense AE is deterministic);
  kept so every model shares one step signature.
  """
  del key
  loss, grads = jax.value_and_grad(loss_fn)(state.params, state.model, batch)
  updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  new_state = state.replace(step=state.step + 1, params=params,
                            opt_state=opt_state)
  return new_state, {"loss": loss}


def reconstruct(state: AEState, x: jax.Array) -> jax.Array:
  """Reconstructions f32[b, ...] in [0, 1] (sigmoid of the decoder logits)."""
  logits, _ = state.model.apply({"params": state.params}, x)
  return jax.nn.sigmoid(logits)


def encode(state: AEState, x: jax.Array) -> jax.Array:
  """Codes f32[b, latent_dim]."""
  return state.model.apply({"params": state.params}, x,
                           method=nn.DenseAutoencoder.encode)


def eval_step(state: AEState, batch: jax.Array) -> dict[str, jax.Array]:
  """Per-example test metrics, each f32[b].

  loss = bce: per-pixel BCE (the training loss); mse: per-pixel squared
  error of the sigmoid reconstruction; psnr in dB.
  """
  logits, _ = state.model.apply({"params": state.params}, batch)
  recon = jax.nn.sigmoid(logits)
  bce = losses.bce_with_logits(logits, batch)
  return {"loss": bce, "bce": bce, "mse": losses.mse(recon, batch),
          "psnr": losses.psnr(recon, batch)}
