"""Generative adversarial networks: the keyed, pure D/G update.

Offers:
  * `GANConfig`: the whole model and update configuration (frozen, validated
    on construction). `config_for(name, data_shape)` gives the default that
    works without tuning for each built-in dataset.
  * Losses, per example, from logits: `d_loss_real(kind, logits)`,
    `d_loss_fake(kind, logits)`, `d_loss(kind, real, fake)` and
    `g_loss(kind, fake)` for `kind` in `LOSSES`:
      - 'minimax': the original saturating objective of Goodfellow et al.
        (2014). D minimises -log D(x) - log(1 - D(G(z))); G minimises
        log(1 - D(G(z))), whose gradient vanishes when D confidently rejects
        the fakes, which is why it is not the default.
      - 'ns': non-saturating (the default). Same D loss; G minimises
        -log D(G(z)).
      - 'hinge': D minimises relu(1 - d_real) + relu(1 + d_fake); G minimises
        -d_fake.
      - 'lsgan': least squares with targets a=0, b=1, c=1 (Mao et al. 2017):
        D minimises ((d_real - 1)^2 + d_fake^2) / 2; G minimises
        (d_fake - 1)^2 / 2. "Logits" here are D's raw outputs.
      - 'wgan': Wasserstein critic: D minimises d_fake - d_real, G minimises
        -d_fake. Use with `gp_weight` (WGAN-GP) or spectral normalisation.
    Sigmoid-based losses use `jax.nn.log_sigmoid` / softplus, never
    probabilities.
  * Penalties, per example: `gradient_penalty(d_fn, real, fake, key)` (WGAN-GP:
    (||grad D(x_hat)|| - 1)^2 on keyed random interpolates) and
    `r1_penalty(d_fn, real)` (||grad D(x)||^2 / 2 on real data).
  * `GANState` (a `flax.struct.dataclass` pytree), `init_state`,
    `train_step` = `d_step` (n_critic D updates, unrolled) then
    `g_step` (one G update, then the EMA), `eval_step`, `sample` (from the
    EMA generator), `check_data` (shape, NaN and range of real data against
    the generator's output link).
  * `fit(key, config, train_x, ...)`: the one entry point that trains a GAN
    on any in-memory array of examples (a `data.Dataset`'s `x`, a toy from
    `toys`, a user's own `(n, d)` array) through `unsupjax.train.fit`.

The networks are in `gan_nets.py`; the CLI task, with the training loop, in
`tasks/gan.py`.

Does not offer: conditional GANs, progressive growing, data augmentation
(DiffAugment/ADA), or multi-device steps (wrap `train_step` with
`unsupjax.parallel` where that exists).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from unsupjax.averaging import ema_decay_at, ema_update  # noqa: F401  (re-exported)
from unsupjax import gan_nets, parallel

LOSSES = ("minimax", "ns", "hinge", "lsgan", "wgan")
ARCHS = ("mlp", "dcgan")

# Where a sigmoid-free D output counts as "says real": 0 for logit losses,
# hinge and Wasserstein; 0.5 (halfway between the targets) for LSGAN.
_DECISION_THRESHOLD = {"minimax": 0.0, "ns": 0.0, "hinge": 0.0, "lsgan": 0.5,
                       "wgan": 0.0}

# The EMA generator's latents in `eval_step` are drawn from the state's key
# folded with this stream id, so evaluation is deterministic.
_EVAL_STREAM = 0x6A7


@dataclasses.dataclass(frozen=True)
class GANConfig:
  """What to build and how to update it.

  Attributes:
    data_shape: shape of one example, e.g. (2,) or (28, 28, 1).
    output: the generator's output link, which must match the data's range
      (checked by `check_data`): 'sigmoid' for data in [0, 1] (unsupjax's
      image datasets), 'tanh' for data in [-1, 1], 'linear' for unbounded
      vectors (the 2-D toys, standardised features).
    arch: 'mlp' (any shape; images are flattened) or 'dcgan' (square images).
    latent_dim: dimension of the standard-normal latent z.
    g_hidden, d_hidden: MLP widths.
    width: DCGAN base channel count.
    g_layer_norm: LayerNorm in the generator.
    loss: one of `LOSSES`.
    gp_weight: WGAN-GP weight lambda (0: off; 10 is the published value).
    r1_weight: R1 weight gamma (0: off); the penalty is gamma/2 ||grad||^2.
    n_critic: discriminator updates per generator update (>= 1). Each uses
      the step's real batch and fresh latents.
    pac: PacGAN packing degree m (>= 1): D sees m samples at once; the batch
      size must be a multiple of m.
    minibatch_std: append the minibatch standard deviation feature in D.
    spectral_norm: spectral normalisation of every D layer.
    ema_decay: decay of the generator EMA used by `sample` (0: no averaging).
      Step t uses min(ema_decay, (1 + t) / (10 + t)), so early averages are
      not dominated by the random initialisation.
    g_lr, d_lr: Adam learning rates (different values give TTUR).
    decay_steps: 0 for constant learning rates; otherwise both decay to 0
      along a cosine that ends after this many generator updates (the
      discriminator's after n_critic times as many of its own). Annealing
      at the end of a run is what makes the toys' samples land within 3
      sigma of a mode.
    hold_steps: with decay_steps > 0, the generator updates (< decay_steps)
      run at the full rates before the cosine starts; it then spans the
      remaining decay_steps - hold_steps (0: the cosine spans the whole
      run). Until the cosine starts, a run is the constant-rate run, update
      for update (tested bit for bit), so a long constant-rate run can be
      finished with an anneal from one of its checkpoints.
    b1, b2: Adam betas (b1 = 0.5 is the DCGAN choice).
  """
  data_shape: tuple[int, ...]
  output: str = "linear"
  arch: str = "mlp"
  latent_dim: int = 64
  g_hidden: tuple[int, ...] = (256, 256, 256)
  d_hidden: tuple[int, ...] = (256, 256, 256)
  width: int = 64
  g_layer_norm: bool = False
  loss: str = "ns"
  gp_weight: float = 0.0
  r1_weight: float = 0.0
  n_critic: int = 1
  pac: int = 1
  minibatch_std: bool = False
  spectral_norm: bool = False
  ema_decay: float = 0.999
  g_lr: float = 2e-4
  d_lr: float = 2e-4
  decay_steps: int = 0
  hold_steps: int = 0
  b1: float = 0.5
  b2: float = 0.999

  def __post_init__(self):
    object.__setattr__(self, "data_shape", tuple(int(s) for s in self.data_shape))
    object.__setattr__(self, "g_hidden", tuple(int(s) for s in self.g_hidden))
    object.__setattr__(self, "d_hidden", tuple(int(s) for s in self.d_hidden))
    if not self.data_shape or any(s < 1 for s in self.data_shape):
      raise ValueError(f"data_shape: expected positive sizes, got {self.data_shape}")
    if self.output not in gan_nets.GENERATOR_OUTPUTS:
      raise ValueError(f"output: expected one of {gan_nets.GENERATOR_OUTPUTS}, "
                       f"got {self.output!r}")
    if self.arch not in ARCHS:
      raise ValueError(f"arch: expected one of {ARCHS}, got {self.arch!r}")
    if self.arch == "dcgan":
      gan_nets.check_dcgan_shape(self.data_shape)
    if self.loss not in LOSSES:
      raise ValueError(f"loss: expected one of {LOSSES}, got {self.loss!r}")
    for name in ("latent_dim", "width", "n_critic", "pac"):
      v = getattr(self, name)
      if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{name}: expected an int >= 1, got {v!r}")
    for name in ("gp_weight", "r1_weight", "ema_decay", "g_lr", "d_lr", "b1", "b2"):
      v = getattr(self, name)
      if isinstance(v, bool) or not isinstance(v, (int, float, np.floating)):
        raise ValueError(f"{name}: expected a number, got {v!r}")
    for name in ("gp_weight", "r1_weight"):
      v = getattr(self, name)
      if not (math.isfinite(v) and v >= 0):
        raise ValueError(f"{name}: expected a finite number >= 0, got {v!r}")
    if not 0.0 <= self.ema_decay < 1.0:
      raise ValueError(f"ema_decay: expected a value in [0, 1), got {self.ema_decay!r}")
    for name in ("decay_steps", "hold_steps"):
      v = getattr(self, name)
      if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
        raise ValueError(f"{name}: expected an int >= 0, got {v!r}")
    if self.hold_steps and not self.hold_steps < self.decay_steps:
      raise ValueError(f"hold_steps: expected fewer steps than decay_steps "
                       f"({self.decay_steps}; 0 means no decay), got {self.hold_steps}")
    for name in ("g_lr", "d_lr"):
      v = getattr(self, name)
      if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name}: expected a positive learning rate, got {v!r}")
    for name in ("b1", "b2"):
      v = getattr(self, name)
      if not 0.0 <= v < 1.0:
        raise ValueError(f"{name}: expected a value in [0, 1), got {v!r}")


# D's learning rate over G's in a dataset's defaults (1 where not listed).
D_LR_RATIO = {"grid25": 2.0, "stacked_mnist": 2.0}


def config_for(dataset: str, data_shape: Sequence[int], **overrides: Any) -> GANConfig:
  """The default configuration for a built-in dataset, with `overrides`.

  ring8 / grid25: MLP G and D (3 x 256), latent 8, non-saturating loss,
  PacGAN packing (2 for the ring, 4 for the grid, as in the PacGAN paper),
  Adam lr 1e-3 with betas (0.5, 0.999), EMA 0.999, linear output; D
  regularised by spectral norm on the ring and by an R1 penalty (gamma 0.1)
  on the grid, where spectral norm left samples strung between modes and
  let long runs collapse; on the grid D also learns at twice G's rate
  (2e-3: fewer samples between modes, docs/gan.md). (The CLI adds a cosine
  decay over the run on both.)
  Images (digits, mnist, fashion_mnist, cifar10, stacked_mnist): DCGAN
  networks, sigmoid output (unsupjax's images are in [0, 1]), non-saturating
  loss, spectral norm in D, pac 2, Adam 2e-4 / (0.5, 0.999), EMA 0.999;
  on stacked_mnist D learns at twice G's rate (4e-4: lower mode KL and FID
  after 60 epochs, docs/gan.md).
  Anything else: the MLP with `GANConfig`'s defaults and a linear output.
  Where D learns faster than G (`D_LR_RATIO`), a `g_lr` override without a
  `d_lr` one keeps the ratio.
  """
  data_shape = tuple(int(s) for s in data_shape)
  if dataset == "ring8":
    base = dict(latent_dim=8, pac=2, spectral_norm=True, g_lr=1e-3, d_lr=1e-3)
  elif dataset == "grid25":
    base = dict(latent_dim=8, pac=4, r1_weight=0.1, g_lr=1e-3)
  elif dataset in ("digits", "mnist", "fashion_mnist", "cifar10", "stacked_mnist"):
    base = dict(arch="dcgan", output="sigmoid", latent_dim=64, pac=2,
                spectral_norm=True, g_layer_norm=True,
                width=32 if dataset == "digits" else 64)
  else:
    base = {}
  base.update(overrides)
  if dataset in D_LR_RATIO and "d_lr" not in overrides:
    base["d_lr"] = base.get("g_lr", GANConfig.g_lr) * D_LR_RATIO[dataset]
  return GANConfig(data_shape=data_shape, **base)


# ----------------------------------------------------------------- losses ---


def _check_kind(kind: str) -> None:
  if kind not in LOSSES:
    raise ValueError(f"loss: expected one of {LOSSES}, got {kind!r}")


def d_loss_real(kind: str, logits: jax.Array) -> jax.Array:
  """The discriminator's loss on real inputs: f32[b] -> f32[b]."""
  _check_kind(kind)
  if kind in ("minimax", "ns"):
    return -jax.nn.log_sigmoid(logits)
  if kind == "hinge":
    return jax.nn.relu(1.0 - logits)
  if kind == "lsgan":
    return 0.5 * jnp.square(logits - 1.0)
  return -logits  # wgan


def d_loss_fake(kind: str, logits: jax.Array) -> jax.Array:
  """The discriminator's loss on generated inputs: f32[b] -> f32[b]."""
  _check_kind(kind)
  if kind in ("minimax", "ns"):
    return -jax.nn.log_sigmoid(-logits)  # -log(1 - sigmoid(l))
  if kind == "hinge":
    return jax.nn.relu(1.0 + logits)
  if kind == "lsgan":
    return 0.5 * jnp.square(logits)
  return logits  # wgan


def d_loss(kind: str, real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
  """Discriminator loss per (real, fake) pair: f32[b], f32[b] -> f32[b]."""
  return d_loss_real(kind, real_logits) + d_loss_fake(kind, fake_logits)


def g_loss(kind: str, fake_logits: jax.Array) -> jax.Array:
  """Generator loss per generated input: f32[b] -> f32[b].

  'minimax' is the saturating log(1 - D(G(z))) (= -softplus(l)); its
  gradient with respect to the logit is -sigmoid(l), near 0 exactly when D
  rejects the fakes. 'ns' is -log D(G(z)) (= softplus(-l)).
  """
  _check_kind(kind)
  if kind == "minimax":
    return jax.nn.log_sigmoid(-fake_logits)
  if kind == "ns":
    return -jax.nn.log_sigmoid(fake_logits)
  if kind == "lsgan":
    return 0.5 * jnp.square(fake_logits - 1.0)
  return -fake_logits  # hinge, wgan


def _per_example_sq_norm(g: jax.Array) -> jax.Array:
  return jnp.sum(jnp.square(g.reshape(g.shape[0], -1)), axis=1)


def _input_grad(d_fn: Callable[[jax.Array], jax.Array], x: jax.Array) -> jax.Array:
  # d sum_i D(x_i) / d x_j = d D(x_j) / d x_j when D treats rows
  # independently. With minibatch std the cross terms are kept, as in
  # StyleGAN's R1.
  return jax.grad(lambda v: jnp.sum(d_fn(v)))(x)


def gradient_penalty(d_fn: Callable[[jax.Array], jax.Array], real: jax.Array,
                     fake: jax.Array, key: jax.Array,
                     axis_name: str | None = None) -> jax.Array:
  """WGAN-GP penalty per example (Gulrajani et al. 2017): f32[b].

  x_hat = eps * real + (1 - eps) * fake with eps ~ U[0, 1] drawn per example
  from `key`; the penalty is (||grad_x D(x_hat)||_2 - 1)^2. `d_fn` maps
  f32[b, ...] -> f32[b]. Multiply by the weight (10 in the paper) yourself.
  Inside pmap over `axis_name`, eps is this device's rows of the global
  batch's draw (`parallel.batch_draw`).
  """
  eps = parallel.batch_draw(jax.random.uniform, key,
                            (real.shape[0],) + (1,) * (real.ndim - 1),
                            real.dtype, axis_name=axis_name)
  x_hat = eps * real + (1.0 - eps) * fake
  norm = jnp.sqrt(_per_example_sq_norm(_input_grad(d_fn, x_hat)) + 1e-12)
  return jnp.square(norm - 1.0)


def r1_penalty(d_fn: Callable[[jax.Array], jax.Array], real: jax.Array) -> jax.Array:
  """R1 penalty per example (Mescheder et al. 2018): ||grad_x D(x)||^2 / 2.

  real: f32[b, ...] -> f32[b]. Multiply by gamma yourself.
  """
  return 0.5 * _per_example_sq_norm(_input_grad(d_fn, real))


# ------------------------------------------------------------------ state ---


@functools.lru_cache(maxsize=64)
def make_networks(config: GANConfig) -> tuple[Any, Any]:
  """(generator, discriminator) Flax modules for `config` (cached)."""
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


@flax.struct.dataclass
class GANState:
  """Everything an exact resume needs; a pytree.

  step: i32[] generator updates done. g_params / g_opt: generator params and
  Adam state; d_params / d_opt: discriminator params and Adam state;
  d_stats: the discriminator's spectral-norm power-iteration state ({} when
  off); ema_params: EMA of g_params (what `sample` uses); key: the base key
  the state was created from (used for deterministic evaluation latents).
  config, generator, discriminator and the two optimisers are static.
  """
  step: jax.Array
  g_params: Any
  g_opt: Any
  d_params: Any
  d_stats: Any
  d_opt: Any
  ema_params: Any
  key: jax.Array
  config: GANConfig = flax.struct.field(pytree_node=False)

  @property
  def generator(self):
    return make_networks(self.config)[0]

  @property
  def discriminator(self):
    return make_networks(self.config)[1]

  @property
  def g_tx(self) -> optax.GradientTransformation:
    return make_optimizers(self.config)[0]

  @property
  def d_tx(self) -> optax.GradientTransformation:
    return make_optimizers(self.config)[1]


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


@functools.lru_cache(maxsize=64)
def make_optimizers(config: GANConfig) -> tuple[optax.GradientTransformation,
                                                optax.GradientTransformation]:
  """(generator, discriminator) Adam optimisers with the configured schedule.

  Cached per config, so every state built from equal configs holds the same
  objects and a jitted step compiled for one is reused for the other.
  """
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
  g_params = gen.init(k_g, jnp.zeros((1, config.latent_dim)))["params"]
  d_in = gan_nets.pack(jnp.zeros((config.pac,) + config.data_shape), config.pac)
  d_vars = disc.init(k_d, d_in)
  d_params = d_vars["params"]
  d_stats = d_vars.get("batch_stats", {})
  g_tx, d_tx = make_optimizers(config)
  return GANState(
      step=jnp.zeros((), jnp.int32), g_params=g_params,
      g_opt=g_tx.init(g_params), d_params=d_params, d_stats=d_stats,
      d_opt=d_tx.init(d_params),
      ema_params=jax.tree.map(jnp.copy, g_params), key=k_state, config=config)


# ------------------------------------------------------------------ steps ---


def _d_apply(state: GANState, params: Any, stats: Any, x_packed: jax.Array,
             update_stats: bool) -> tuple[jax.Array, Any]:
  """D logits on packed inputs, and its (possibly updated) SN statistics."""
  if not state.config.spectral_norm:
    return state.discriminator.apply({"params": params}, x_packed), stats
  variables = {"params": params, "batch_stats": stats}
  if update_stats:
    logits, new = state.discriminator.apply(
        variables, x_packed, update_stats=True, mutable=["batch_stats"])
    return logits, new["batch_stats"]
  return state.discriminator.apply(variables, x_packed, update_stats=False), stats


def _generate(state: GANState, params: Any, z: jax.Array) -> jax.Array:
  return state.generator.apply({"params": params}, z)


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
  Returns the state with new d_params / d_opt / d_stats, and the metrics of
  the last update. axis_name: inside pmap, the device axis (gradients and
  metrics averaged over it, noise drawn as for the global batch).
  """
  cfg = state.config
  _check_batch(cfg, batch)
  b = batch.shape[0]
  kind = cfg.loss
  thr = _DECISION_THRESHOLD[kind]
  real_packed = gan_nets.pack(batch, cfg.pac)

  def one_update(carry, k):
    d_params, d_stats, d_opt = carry
    k_z, k_gp = jax.random.split(k)
    fake = _generate(state, state.g_params, _latents(cfg, k_z, b, axis_name))
    fake_packed = gan_nets.pack(jax.lax.stop_gradient(fake), cfg.pac)

    def loss_fn(params):
      # One stored power iteration per update, on the real pass; the fake
      # pass and the penalties start from the updated vectors (Flax's
      # SpectralNorm iterates once more on each call) and store nothing.
      real_logits, stats = _d_apply(state, params, d_stats, real_packed, True)
      fake_logits, _ = _d_apply(state, params, stats, fake_packed, False)
      per_example = d_loss(kind, real_logits, fake_logits)
      aux = {}
      d_fn = lambda x: _d_apply(state, params, stats, x, False)[0]
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

    (loss, (stats, aux)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(d_params)
    loss, aux, grads = parallel.pmean((loss, aux, grads), axis_name)
    updates, d_opt = state.d_tx.update(grads, d_opt, d_params)
    d_params = optax.apply_updates(d_params, updates)
    aux = dict(aux, d_loss=loss, d_grad_norm=optax.global_norm(grads))
    return (d_params, stats, d_opt), aux

  # Unrolled, not a lax.scan: XLA:CPU runs the DCGAN step 5.7x slower with
  # the critic update inside a loop (benchmarks/dcgan_cpu.py); n_critic is small.
  carry = (state.d_params, state.d_stats, state.d_opt)
  for k in jax.random.split(key, cfg.n_critic):
    carry, metrics = one_update(carry, k)
  d_params, d_stats, d_opt = carry
  return state.replace(d_params=d_params, d_stats=d_stats, d_opt=d_opt), metrics


def g_step(state: GANState, key: jax.Array, batch_size: int,
           axis_name: str | None = None
           ) -> tuple[GANState, dict[str, jax.Array]]:
  """One generator update on `batch_size` latents from `key`, then the EMA.

  The loss is differentiated with respect to G's parameters only; D's
  parameters and spectral-norm state are constants. Increments `step`.
  Inside pmap over `axis_name`, batch_size is this device's share.
  """
  cfg = state.config
  if batch_size % cfg.pac:
    raise ValueError(f"batch_size: {batch_size} is not a multiple of "
                     f"pac={cfg.pac}")
  z = _latents(cfg, key, batch_size, axis_name)

  def loss_fn(g_params):
    fake_packed = gan_nets.pack(_generate(state, g_params, z), cfg.pac)
    logits, _ = _d_apply(state, state.d_params, state.d_stats, fake_packed,
                         False)
    return g_loss(cfg.loss, logits).mean()

  loss, grads = parallel.pmean(jax.value_and_grad(loss_fn)(state.g_params),
                               axis_name)
  updates, g_opt = state.g_tx.update(grads, state.g_opt, state.g_params)
  g_params = optax.apply_updates(state.g_params, updates)
  ema_params = ema_update(state.ema_params, g_params, cfg.ema_decay, state.step)
  new_state = state.replace(step=state.step + 1, g_params=g_params,
                            g_opt=g_opt, ema_params=ema_params)
  return new_state, {"g_loss": loss, "g_grad_norm": optax.global_norm(grads)}


def train_step(state: GANState, batch: jax.Array, key: jax.Array, *,
               axis_name: str | None = None
               ) -> tuple[GANState, dict[str, jax.Array]]:
  """`d_step` (n_critic D updates), then `g_step` (one G update and the EMA).

  batch: f32[b, *data_shape] real data, b a multiple of `config.pac`.
  key: the run's key; this step draws from fold_in(key, state.step), split
  into the discriminator's and the generator's streams, so a resumed run
  draws exactly what an uninterrupted one draws. Pure: jit it yourself.
  Returns (new state, metrics): scalar f32 d_loss, d_real_logit,
  d_fake_logit, d_real_acc, d_fake_acc, d_grad_norm (last D update), gp /
  r1 when on, g_loss, g_grad_norm. axis_name: inside pmap, the device
  axis: gradients and metrics are averaged over it and every draw is this
  device's rows of the global batch's (`parallel`); the minibatch-std
  feature, when on, then sees only this device's rows.
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
  params = state.ema_params if ema else state.g_params
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
  every example gets its own value; in a zero-padded last batch (as
  `train.fit` evaluates) the last m - 1 real examples are packed with
  padding, and minibatch std sees the padding too. Fakes come from the EMA
  generator on latents fixed by the state's key (the same for every batch).

  Returns d_real_logit, d_fake_logit, d_real_acc, d_fake_acc (1 where D
  decides correctly), d_loss (the configured loss without penalties) and
  g_loss (the generator's loss on the EMA fakes).
  """
  cfg = state.config
  if tuple(batch.shape[1:]) != cfg.data_shape:
    raise ValueError(f"batch: expected shape (b, {', '.join(map(str, cfg.data_shape))}),"
                     f" got {tuple(batch.shape)}")
  b = batch.shape[0]
  thr = _DECISION_THRESHOLD[cfg.loss]
  z = _latents(cfg, jax.random.fold_in(state.key, _EVAL_STREAM), b)
  fake = _generate(state, state.ema_params, z)
  real_logits, _ = _d_apply(state, state.d_params, state.d_stats,
                            _pack_cyclic(batch, cfg.pac), False)
  fake_logits, _ = _d_apply(state, state.d_params, state.d_stats,
                            _pack_cyclic(fake, cfg.pac), False)
  return {
      "d_real_logit": real_logits,
      "d_fake_logit": fake_logits,
      "d_real_acc": (real_logits > thr).astype(jnp.float32),
      "d_fake_acc": (fake_logits <= thr).astype(jnp.float32),
      "d_loss": d_loss(cfg.loss, real_logits, fake_logits),
      "g_loss": g_loss(cfg.loss, fake_logits),
  }


def fit(key: jax.Array, config: GANConfig, train_x: Any,
        eval_x: Any | None = None, *, epochs: int, batch_size: int,
        **fit_kwargs: Any):
  """Trains a GAN on an in-memory array: validate, init, `train.fit`.

  Args:
    key: the run's key; split into the initialisation key and the loop's key.
    config: the model (`config_for(name, shape)` gives tested defaults).
    train_x: f32[n, *config.data_shape] real examples, in the range
      `config.output` produces (checked, with NaN/Inf, before compiling).
    eval_x: optional held-out examples for `eval_step` after each epoch.
    epochs, batch_size: as in `unsupjax.train.fit`; batch_size must be a
      multiple of `config.pac`.
    **fit_kwargs: passed to `unsupjax.train.fit` (workdir, resume,
      epoch_callback, progress, ...).

  Returns:
    `unsupjax.train.FitResult`; `result.state` is a `GANState`.
  """
  from unsupjax import train

  if not isinstance(config, GANConfig):
    raise ValueError(f"config: expected a GANConfig, got {type(config).__name__}")
  train_x = np.asarray(train_x)
  check_data(config, train_x, "train_x")
  if eval_x is not None:
    eval_x = np.asarray(eval_x)
    check_data(config, eval_x, "eval_x")
  if (isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer))
      or batch_size < 1 or batch_size % config.pac):
    raise ValueError(f"batch_size: expected a positive multiple of "
                     f"pac={config.pac}, got {batch_size!r}")
  init_key, fit_key = jax.random.split(key)
  state = init_state(init_key, config, train_x[:batch_size])
  return train.fit(state, train_step, eval_step, train_x, eval_x, key=fit_key,
                   epochs=epochs, batch_size=batch_size, **fit_kwargs)
