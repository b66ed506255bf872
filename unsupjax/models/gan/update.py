"""The keyed, pure GAN update: each network trained on its own loss.

Offers `GANState` (two `TrainState`s, the generator's with its EMA, plus
D's spectral-norm statistics and the state's evaluation key), `init_state`,
`train_step` = `d_step` (n_critic D updates, unrolled) then `g_step` (one G
update and the EMA), `eval_step`, `sample` (from the EMA generator) and
`check_data` (shape, NaN and range of real data against the generator's
output link). All pure; the caller jits.

Multi-device: inside `pmap` over `axis_name`, gradients and metrics are
averaged over devices, every draw is this device's rows of the global
batch's (`parallel.batch_draw`) and the minibatch-std feature is computed
over the global batch, so the update equals the one-device update.

Does not offer: conditional GANs, progressive growing, data augmentation.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from unsupjax import nn as nn_lib
from unsupjax import parallel
from unsupjax.models.gan import nets as gan_nets
from unsupjax.models.gan.config import GANConfig
from unsupjax.models.gan.losses import (DECISION_THRESHOLD, d_loss, g_loss, gradient_penalty,
                                        r1_penalty)
from unsupjax.state import TrainState

# The EMA generator's latents in `eval_step` come from the state's key
# folded with this stream id, so evaluation is deterministic.
EVAL_STREAM = 0x6A7


def make_networks(config: GANConfig) -> tuple[Any, Any]:
  """(generator, discriminator) Flax modules for `config`."""
  if config.arch == "mlp":
    gen = gan_nets.MLPGenerator(config.data_shape, config.g_hidden,
                                config.output, config.g_layer_norm)
    disc = gan_nets.MLPDiscriminator(config.d_hidden, config.spectral_norm,
                                     config.minibatch_std)
  else:
    gen = gan_nets.DCGANGenerator(config.data_shape, config.width,
                                  config.output, config.g_layer_norm)
    disc = gan_nets.DCGANDiscriminator(config.width, config.spectral_norm,
                                       config.minibatch_std)
  return gen, disc


class GANState(struct.PyTreeNode):
  """Everything an exact resume needs; a pytree.

  g: the generator's TrainState (its `ema_params`, when config.ema_decay >
  0, is what `sample` uses; its step counts generator updates); d: the
  discriminator's (its step counts D updates, n_critic per G update);
  d_stats: D's spectral-norm power-iteration state ({} when off); key: the
  key of the deterministic evaluation latents. config is static.
  """
  g: TrainState
  d: TrainState
  d_stats: Any
  key: jax.Array
  config: GANConfig = struct.field(pytree_node=False)

  @property
  def step(self) -> jax.Array:
    """Generator updates done."""
    return self.g.step


def check_data(config: GANConfig, x: Any, what: str = "x") -> None:
  """Raises ValueError unless `x` fits `config`: shape, finiteness, range.

  x: [n, *config.data_shape]. The range must match `config.output`:
  'sigmoid' needs data in [0, 1]; 'tanh' needs data in [-1, 1] and rejects
  data that is all >= 0 (data scaled to [0, 1]: rescale with 2x - 1 or use
  'sigmoid'); 'linear' accepts any finite values. Runs on the host, before
  anything is compiled.
  """
  x = np.asarray(x)
  if x.ndim != 1 + len(config.data_shape) or tuple(x.shape[1:]) != config.data_shape:
    raise ValueError(f"{what}: expected shape (n, {', '.join(map(str, config.data_shape))}),"
                     f" got {x.shape}")
  if x.shape[0] == 0:
    raise ValueError(f"{what}: expected at least one example, got none")
  if not np.issubdtype(x.dtype, np.floating):
    raise ValueError(f"{what}: expected floating-point data, got {x.dtype}")
  bad = ~np.isfinite(x.reshape(x.shape[0], -1)).all(axis=1)
  if bad.any():
    rows = np.nonzero(bad)[0]
    raise ValueError(f"{what}: expected finite values, found NaN/Inf in "
                     f"{rows.size} examples (first: {rows[:5].tolist()})")
  lo, hi = float(x.min()), float(x.max())
  if config.output == "sigmoid" and (lo < 0.0 or hi > 1.0):
    raise ValueError(
        f"{what}: output='sigmoid' generates values in [0, 1] but the data "
        f"spans [{lo:.4g}, {hi:.4g}]; use output='tanh' for data in [-1, 1] or "
        f"'linear' for unbounded data")
  if config.output == "tanh":
    if lo < -1.0 or hi > 1.0:
      raise ValueError(
          f"{what}: output='tanh' generates values in [-1, 1] but the data "
          f"spans [{lo:.4g}, {hi:.4g}]; rescale it or use output='linear'")
    if lo >= 0.0:
      raise ValueError(
          f"{what}: output='tanh' generates values in [-1, 1] but the data "
          f"is in [{lo:.4g}, {hi:.4g}], i.e. scaled to [0, 1]; use "
          f"output='sigmoid', or rescale the data with 2x - 1")


def make_optimizers(config: GANConfig) -> tuple[optax.GradientTransformation,
                                                optax.GradientTransformation]:
  """(generator, discriminator) Adam optimisers with the configured schedule."""
  g_lr, d_lr = learning_rates(config)
  return (optax.adam(g_lr, config.b1, config.b2),
          optax.adam(d_lr, config.b1, config.b2))


def learning_rates(config: GANConfig) -> tuple[Any, Any]:
  """(generator, discriminator) learning rates: floats when constant, else
  optax schedules of each network's own update count (D's counts n_critic
  updates per generator update)."""
  def lr(base, per_g_step):
    if config.decay_steps == 0:
      return base
    hold = config.hold_steps * per_g_step
    cosine = optax.cosine_decay_schedule(base, config.decay_steps * per_g_step - hold)
    if hold == 0:
      return cosine
    return optax.join_schedules([optax.constant_schedule(base), cosine], [hold])
  return lr(config.g_lr, 1), lr(config.d_lr, config.n_critic)


def init_state(key: jax.Array, config: GANConfig, example_batch: Any) -> GANState:
  """A fresh state. example_batch: [b, *data_shape] real data, validated.

  The batch is checked with `check_data` (shape, NaN, range vs
  `config.output`); its values do not otherwise affect the initialisation.
  """
  if not isinstance(config, GANConfig):
    raise ValueError(f"config: expected a GANConfig, got {type(config).__name__}")
  check_data(config, example_batch, "example_batch")
  gen, disc = make_networks(config)
  k_g, k_d, k_state = jax.random.split(key, 3)
  g_params = nn_lib.init_variables(gen, k_g, jnp.zeros((1, config.latent_dim)))["params"]
  d_in = gan_nets.pack(jnp.zeros((config.pac,) + config.data_shape), config.pac)
  d_vars = nn_lib.init_variables(disc, k_d, d_in)
  g_tx, d_tx = make_optimizers(config)
  return GANState(
      g=TrainState.create(params=g_params, tx=g_tx, model=gen, ema_decay=config.ema_decay),
      d=TrainState.create(params=d_vars["params"], tx=d_tx, model=disc),
      d_stats=d_vars.get("batch_stats", {}), key=k_state, config=config)


def _d_apply(state: GANState, params: Any, stats: Any, x_packed: jax.Array,
             update_stats: bool, axis_name: str | None = None) -> tuple[jax.Array, Any]:
  """D logits on packed inputs, and its (possibly updated) SN statistics."""
  disc = state.d.model
  if not state.config.spectral_norm:
    return disc.apply({"params": params}, x_packed, axis_name=axis_name), stats
  variables = {"params": params, "batch_stats": stats}
  if update_stats:
    logits, new = disc.apply(variables, x_packed, update_stats=True, axis_name=axis_name,
                             mutable=["batch_stats"])
    return logits, new["batch_stats"]
  return disc.apply(variables, x_packed, update_stats=False, axis_name=axis_name), stats


def _generate(state: GANState, params: Any, z: jax.Array) -> jax.Array:
  return state.g.model.apply({"params": params}, z)


def _latents(config: GANConfig, key: jax.Array, n: int,
             axis_name: str | None = None) -> jax.Array:
  return parallel.batch_draw(jax.random.normal, key, (n, config.latent_dim),
                             jnp.float32, axis_name=axis_name)


def _check_batch(config: GANConfig, batch: jax.Array) -> None:
  if tuple(batch.shape[1:]) != config.data_shape:
    raise ValueError(f"batch: expected shape (b, {', '.join(map(str, config.data_shape))}),"
                     f" got {tuple(batch.shape)}")
  if batch.shape[0] % config.pac or batch.shape[0] == 0:
    raise ValueError(f"batch: batch size {batch.shape[0]} must be a positive "
                     f"multiple of pac={config.pac}")


def d_step(state: GANState, batch: jax.Array, key: jax.Array,
           axis_name: str | None = None
           ) -> tuple[GANState, dict[str, jax.Array]]:
  """`config.n_critic` discriminator updates (unrolled); G untouched.

  batch: f32[b, *data_shape] real data, reused by every critic update; each
  update draws fresh latents (b of them) and penalty interpolates from its
  own split of `key`. The loss is differentiated with respect to D's
  parameters only: the fakes come from the current G and are held fixed.
  Returns the state with a new `d` and `d_stats`, and the metrics of the
  last update. axis_name: inside pmap, the device axis.
  """
  cfg = state.config
  _check_batch(cfg, batch)
  b = batch.shape[0]
  kind = cfg.loss
  thr = DECISION_THRESHOLD[kind]
  real_packed = gan_nets.pack(batch, cfg.pac)

  def one_update(d: TrainState, d_stats: Any, k: jax.Array):
    k_z, k_gp = jax.random.split(k)
    fake = _generate(state, state.g.params, _latents(cfg, k_z, b, axis_name))
    fake_packed = gan_nets.pack(jax.lax.stop_gradient(fake), cfg.pac)

    def loss_fn(params):
      # One stored power iteration per update, on the real pass; the fake
      # pass and the penalties start from the updated vectors and store nothing.
      real_logits, stats = _d_apply(state, params, d_stats, real_packed, True, axis_name)
      fake_logits, _ = _d_apply(state, params, stats, fake_packed, False, axis_name)
      per_example = d_loss(kind, real_logits, fake_logits)
      aux = {}
      d_fn = lambda x: _d_apply(state, params, stats, x, False, axis_name)[0]
      if cfg.gp_weight > 0:
        gp = gradient_penalty(d_fn, real_packed, fake_packed, k_gp, axis_name)
        per_example = per_example + cfg.gp_weight * gp
        aux["gp"] = gp.mean()
      if cfg.r1_weight > 0:
        r1 = r1_penalty(d_fn, real_packed)
        per_example = per_example + cfg.r1_weight * r1
        aux["r1"] = r1.mean()
      aux.update(
          d_real_logit=real_logits.mean(), d_fake_logit=fake_logits.mean(),
          d_real_acc=jnp.mean((real_logits > thr).astype(jnp.float32)),
          d_fake_acc=jnp.mean((fake_logits <= thr).astype(jnp.float32)))
      return per_example.mean(), (stats, aux)

    (loss, (stats, aux)), grads = jax.value_and_grad(loss_fn, has_aux=True)(d.params)
    loss, aux, grads = parallel.pmean((loss, aux, grads), axis_name)
    aux = dict(aux, d_loss=loss, d_grad_norm=optax.global_norm(grads))
    return d.apply_gradients(grads), stats, aux

  # Unrolled, not a lax.scan: XLA:CPU runs the DCGAN step much slower with
  # the critic update inside a loop (docs/results/gan.md); n_critic is small.
  d, d_stats = state.d, state.d_stats
  for k in jax.random.split(key, cfg.n_critic):
    d, d_stats, metrics = one_update(d, d_stats, k)
  return state.replace(d=d, d_stats=d_stats), metrics


def g_step(state: GANState, key: jax.Array, batch_size: int,
           axis_name: str | None = None
           ) -> tuple[GANState, dict[str, jax.Array]]:
  """One generator update on `batch_size` latents from `key`, then the EMA.

  The loss is differentiated with respect to G's parameters only; D's
  parameters and spectral-norm state are constants. Inside pmap over
  `axis_name`, batch_size is this device's share.
  """
  cfg = state.config
  if batch_size % cfg.pac:
    raise ValueError(f"batch_size: {batch_size} is not a multiple of "
                     f"pac={cfg.pac}")
  z = _latents(cfg, key, batch_size, axis_name)

  def loss_fn(g_params):
    fake_packed = gan_nets.pack(_generate(state, g_params, z), cfg.pac)
    logits, _ = _d_apply(state, state.d.params, state.d_stats, fake_packed, False,
                         axis_name)
    return g_loss(cfg.loss, logits).mean()

  loss, grads = parallel.pmean(jax.value_and_grad(loss_fn)(state.g.params), axis_name)
  return (state.replace(g=state.g.apply_gradients(grads)),
          {"g_loss": loss, "g_grad_norm": optax.global_norm(grads)})


def train_step(state: GANState, batch: jax.Array, key: jax.Array, *,
               axis_name: str | None = None
               ) -> tuple[GANState, dict[str, jax.Array]]:
  """`d_step` (n_critic D updates), then `g_step` (one G update and the EMA).

  batch: f32[b, *data_shape] real data, b a multiple of `config.pac`.
  key: the run's step key; this step draws from fold_in(key, state.step),
  split into the discriminator's and the generator's streams, so a resumed
  run draws exactly what an uninterrupted one draws. Returns (new state,
  metrics): scalar f32 d_loss, d_real_logit, d_fake_logit, d_real_acc,
  d_fake_acc, d_grad_norm (last D update), gp / r1 when on, g_loss,
  g_grad_norm. axis_name: inside pmap, the device axis (see the module
  docstring).
  """
  _check_batch(state.config, batch)
  k_d, k_g = jax.random.split(jax.random.fold_in(key, state.step))
  state, d_metrics = d_step(state, batch, k_d, axis_name)
  state, g_metrics = g_step(state, k_g, batch.shape[0], axis_name)
  return state, dict(d_metrics, **g_metrics)


def sample(state: GANState, key: jax.Array, n: int, *,
           ema: bool = True) -> jax.Array:
  """n samples f32[n, *data_shape] from the EMA generator (or the raw one)."""
  if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
    raise ValueError(f"n: expected an int >= 1, got {n!r}")
  params = state.g.eval_params if ema else state.g.params
  return _generate(state, params, _latents(state.config, key, int(n)))


def _pack_cyclic(x: jax.Array, m: int) -> jax.Array:
  """f32[b, ...] -> packed f32[b, ...]: row i packs x_i, x_{i+1}, ... (mod b)."""
  if m == 1:
    return x
  rolled = jnp.stack([jnp.roll(x, -j, axis=0) for j in range(m)], axis=1)
  return gan_nets.pack(rolled.reshape((-1,) + x.shape[1:]), m)


def eval_step(state: GANState, batch: jax.Array) -> dict[str, jax.Array]:
  """Per-example evaluation values, each f32[b]. Pure and deterministic.

  batch: f32[b, *data_shape] real data. With packing (pac = m), example i is
  judged packed with its m - 1 successors in the batch (cyclically), so
  every example gets its own value; in a zero-padded last batch the last
  m - 1 real examples are packed with padding, and minibatch std sees the
  padding too. Fakes come from the EMA generator on latents fixed by the
  state's key (the same for every batch).

  Returns d_real_logit, d_fake_logit, d_real_acc, d_fake_acc (1 where D
  decides correctly), d_loss (the configured loss without penalties) and
  g_loss (the generator's loss on the EMA fakes).
  """
  cfg = state.config
  if tuple(batch.shape[1:]) != cfg.data_shape:
    raise ValueError(f"batch: expected shape (b, {', '.join(map(str, cfg.data_shape))}),"
                     f" got {tuple(batch.shape)}")
  b = batch.shape[0]
  thr = DECISION_THRESHOLD[cfg.loss]
  z = _latents(cfg, jax.random.fold_in(state.key, EVAL_STREAM), b)
  fake = _generate(state, state.g.eval_params, z)
  real_logits, _ = _d_apply(state, state.d.params, state.d_stats,
                            _pack_cyclic(batch, cfg.pac), False)
  fake_logits, _ = _d_apply(state, state.d.params, state.d_stats,
                            _pack_cyclic(fake, cfg.pac), False)
  return {
      "d_real_logit": real_logits,
      "d_fake_logit": fake_logits,
      "d_real_acc": (real_logits > thr).astype(jnp.float32),
      "d_fake_acc": (fake_logits <= thr).astype(jnp.float32),
      "d_loss": d_loss(cfg.loss, real_logits, fake_logits),
      "g_loss": g_loss(cfg.loss, fake_logits),
  }
