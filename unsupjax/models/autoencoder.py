"""Deterministic autoencoders: dense, convolutional, denoising.

Offers, through the contract every trainable thing in unsupjax follows,

    state = init_state(key, config, example_batch)
    state, metrics = train_step(state, batch, key)
    values = eval_step(state, batch)       # per-example f32[b] arrays

the classic dense autoencoder (784-128-32-128-784 Keras model: ReLU layers,
sigmoid output, binary cross-entropy, Adam), a convolutional one (strided
conv encoder, transposed-conv decoder) and their denoising variants (the
input is corrupted with noise drawn from the step's key, the target is the
clean input). Also `corrupt`, `reconstruct` and `encode`. Nothing is jitted
here: callers choose how to compile.

Does not offer: a training loop (`unsupjax.training.fit`), the VAE (`vae.py`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import chex
import jax
import jax.numpy as jnp
import optax

from unsupjax import losses, nn, parallel
from unsupjax.metrics import reconstruction
from unsupjax.state import TrainState

ARCHS = ("dense", "conv")
LOSSES = ("bce", "mse")
OUTPUTS = ("sigmoid", "linear")
OPTIMIZERS = ("adam", "sgd")
KERNEL_INITS = tuple(nn.KERNEL_INITS)
# Corruption -> (the range its level must lie in, what the level means).
CORRUPTIONS = {
    "gaussian": ((0.0, 1.0), "standard deviation of additive noise (then clipped to [0, 1])"),
    "mask": ((0.0, 1.0), "probability that a pixel is set to 0"),
    "salt_pepper": ((0.0, 1.0), "probability that a pixel is set to 0 or 1 (equally likely)"),
}


@dataclasses.dataclass(frozen=True)
class AEConfig:
  """Hyper-parameters of the deterministic autoencoders.

  Defaults are the classic Keras dense autoencoder. `arch='conv'` uses
  `conv_features` stride-2 convolutions (h and w must be divisible by
  2**len(conv_features)). `corruption` (None, 'gaussian', 'mask',
  'salt_pepper') with `noise_level` in (0, 1] makes it denoising.
  `linear_code=True` drops the ReLU on the latent layer (DEC's embedding).
  `output='linear'` uses the decoder's last layer as the reconstruction
  itself (no sigmoid; needs loss='mse'): real-valued features, and the
  d-500-500-2000-10 deep-clustering autoencoder as DEC trains it.
  `optimizer='sgd'` trains with SGD and `momentum` instead of Adam (DEC's
  Keras recipe pretrains with SGD, learning rate 1, momentum 0.9), and
  `kernel_init` names the dense layers' initialiser (`nn.KERNEL_INITS`:
  Keras's default 'glorot_uniform', or 'fan_in_uniform', that recipe's).
  """
  arch: str = "dense"
  hidden: Sequence[int] = (128,)
  conv_features: Sequence[int] = (32, 64)
  latent_dim: int = 32
  learning_rate: float = 1e-3
  loss: str = "bce"
  corruption: str | None = None
  noise_level: float = 0.0
  linear_code: bool = False
  output: str = "sigmoid"
  optimizer: str = "adam"
  momentum: float = 0.9
  kernel_init: str = "glorot_uniform"

  def __post_init__(self):
    # Tuples, so the config is hashable (it is static data of the state).
    object.__setattr__(self, "hidden", tuple(self.hidden))
    object.__setattr__(self, "conv_features", tuple(self.conv_features))
    if self.arch not in ARCHS:
      raise ValueError(f"arch: expected one of {ARCHS}, got {self.arch!r}")
    if int(self.latent_dim) < 1:
      raise ValueError(f"latent_dim: expected a positive integer, got {self.latent_dim}")
    if any(int(h) < 1 for h in self.hidden):
      raise ValueError(f"hidden: expected positive layer widths, got {tuple(self.hidden)}")
    if not self.conv_features or any(int(f) < 1 for f in self.conv_features):
      raise ValueError(f"conv_features: expected positive channel counts, got "
                       f"{tuple(self.conv_features)}")
    if not self.learning_rate > 0:
      raise ValueError(f"learning_rate: expected > 0, got {self.learning_rate}")
    if self.loss not in LOSSES:
      raise ValueError(f"loss: expected one of {LOSSES}, got {self.loss!r}")
    if self.output not in OUTPUTS:
      raise ValueError(f"output: expected one of {OUTPUTS}, got {self.output!r}")
    if self.optimizer not in OPTIMIZERS:
      raise ValueError(f"optimizer: expected one of {OPTIMIZERS}, got {self.optimizer!r}")
    if not 0.0 <= self.momentum < 1.0:
      raise ValueError(f"momentum: expected a value in [0, 1), got {self.momentum}")
    if self.kernel_init not in KERNEL_INITS:
      raise ValueError(f"kernel_init: expected one of {KERNEL_INITS}, got "
                       f"{self.kernel_init!r}")
    if self.arch == "conv" and self.kernel_init != "glorot_uniform":
      raise ValueError(f"kernel_init: names the dense autoencoder's initialiser (arch="
                       f"'conv' keeps its own); expected the default 'glorot_uniform', "
                       f"got {self.kernel_init!r}")
    if self.output == "linear" and self.loss != "mse":
      raise ValueError(f"loss: output='linear' has no Bernoulli likelihood; expected "
                       f"'mse', got {self.loss!r}")
    if self.corruption is not None:
      if self.corruption not in CORRUPTIONS:
        raise ValueError(f"corruption: expected None or one of {tuple(CORRUPTIONS)}, "
                         f"got {self.corruption!r}")
      (lo, hi), meaning = CORRUPTIONS[self.corruption]
      if not lo < self.noise_level <= hi:
        raise ValueError(f"noise_level: expected a value in ({lo}, {hi}] ({meaning}), "
                         f"got {self.noise_level}")

  def check_input_shape(self, shape: Sequence[int]) -> None:
    """Raises ValueError if examples of `shape` (no batch axis) do not fit."""
    if self.arch == "conv":
      nn.conv_grid(shape, len(self.conv_features))


# The autoencoders' state: model is the Linen module, config the AEConfig.
AEState = TrainState
CONFIG = AEConfig


def make_model(config: AEConfig, input_shape: Sequence[int]):
  """The Linen module for `config` on examples of `input_shape`."""
  shape = tuple(int(s) for s in input_shape)
  config.check_input_shape(shape)
  if config.arch == "conv":
    return nn.ConvAutoencoder(image_shape=shape,
                              features=tuple(int(f) for f in config.conv_features),
                              latent_dim=int(config.latent_dim),
                              linear_code=bool(config.linear_code))
  return nn.DenseAutoencoder(image_shape=shape,
                             hidden=tuple(int(h) for h in config.hidden),
                             latent_dim=int(config.latent_dim),
                             linear_code=bool(config.linear_code),
                             kernel_init=config.kernel_init)


def init_state(key: chex.PRNGKey, config: AEConfig,
               example_batch: jax.Array) -> AEState:
  """A fresh state; example_batch: f32[b, ...] fixes the input shape."""
  model = make_model(config, example_batch.shape[1:])
  params = nn.init_variables(model, key, jnp.asarray(example_batch[:1]))["params"]
  tx = (optax.sgd(config.learning_rate, momentum=config.momentum or None)
        if config.optimizer == "sgd" else optax.adam(config.learning_rate))
  return TrainState.create(params=params, tx=tx, model=model, config=config)


def corrupt(key: chex.PRNGKey, x: jax.Array, kind: str | None,
            level: float, axis_name: str | None = None) -> jax.Array:
  """Noisy copy of x: f32[b, ...] in [0, 1]. Same key, same noise.

  gaussian: clip(x + level * N(0, 1), 0, 1); mask: each value zeroed with
  probability `level`; salt_pepper: each value replaced, with probability
  `level`, by 0 or 1 with equal chance. kind None returns x. Inside pmap
  over `axis_name`, x is this device's rows of the global batch and gets
  their rows of the global batch's noise (`parallel.batch_draw`).
  """
  if kind is None:
    return x
  draw = functools.partial(parallel.batch_draw, axis_name=axis_name)
  if kind == "gaussian":
    return jnp.clip(x + level * draw(jax.random.normal, key, x.shape, x.dtype), 0.0, 1.0)
  if kind == "mask":
    keep = draw(lambda k, s: jax.random.bernoulli(k, 1.0 - level, s), key, x.shape)
    return jnp.where(keep, x, jnp.zeros_like(x))
  if kind == "salt_pepper":
    k_hit, k_val = jax.random.split(key)
    hit = draw(lambda k, s: jax.random.bernoulli(k, level, s), k_hit, x.shape)
    salt = draw(lambda k, s: jax.random.bernoulli(k, 0.5, s), k_val,
                x.shape).astype(x.dtype)
    return jnp.where(hit, salt, x)
  raise ValueError(f"kind: expected None or one of {tuple(CORRUPTIONS)}, got {kind!r}")


def output_to_data(config: AEConfig, out: jax.Array) -> jax.Array:
  """The reconstruction the decoder's last layer `out` stands for:
  sigmoid(out) (output='sigmoid', out are logits) or out itself ('linear')."""
  return out if config.output == "linear" else jax.nn.sigmoid(out)


def per_example_loss(config: AEConfig, logits: jax.Array,
                     target: jax.Array) -> jax.Array:
  """The training loss per example: BCE from logits, or MSE of the
  reconstruction (`output_to_data`)."""
  if config.loss == "bce":
    return losses.bce_with_logits(logits, target)
  return losses.mse(output_to_data(config, logits), target)


def train_step(state: AEState, batch: jax.Array, key: chex.PRNGKey, *,
               axis_name: str | None = None
               ) -> tuple[AEState, dict[str, jax.Array]]:
  """One optimizer step (Adam, or SGD with momentum) on the reconstruction loss.

  batch: f32[b, ...] in [0, 1]. key: the run's step key; the step's own noise
  comes from fold_in(key, state.step) (unused without corruption).
  axis_name: inside pmap, the device axis: gradients and metrics are
  averaged over it and the noise is the global batch's (`parallel`).
  """
  cfg = state.config
  noisy = corrupt(jax.random.fold_in(key, state.step), batch, cfg.corruption,
                  cfg.noise_level, axis_name)

  def loss_fn(params):
    logits, _ = state.model.apply({"params": params}, noisy)
    return jnp.mean(per_example_loss(cfg, logits, batch))

  loss, grads = parallel.pmean(jax.value_and_grad(loss_fn)(state.params),
                               axis_name)
  return state.apply_gradients(grads), {"loss": loss}


@jax.jit
def reconstruct(state: AEState, x: jax.Array) -> jax.Array:
  """Reconstructions f32[b, ...]: in [0, 1] (sigmoid of the decoder logits),
  or the decoder's output as is with output='linear'."""
  logits, _ = state.model.apply({"params": state.params}, x)
  return output_to_data(state.config, logits)


@jax.jit
def encode(state: AEState, x: jax.Array) -> jax.Array:
  """Codes f32[b, latent_dim]."""
  return state.model.apply({"params": state.params}, x, method="encode")


def eval_step(state: AEState, batch: jax.Array) -> dict[str, jax.Array]:
  """Per-example test metrics on clean inputs, each f32[b].

  loss: the training loss; bce: per-pixel binary cross-entropy (not with
  output='linear'); mse: per-pixel squared error of the reconstruction;
  psnr in dB.
  """
  logits, _ = state.model.apply({"params": state.params}, batch)
  if state.config.output == "linear":
    values = reconstruction.from_reconstruction(logits, batch)
    return {"loss": values["mse"], **values}
  values = reconstruction.from_logits(logits, batch)
  return {"loss": values["bce"] if state.config.loss == "bce" else values["mse"],
          **values}


def denoising_eval_step(state: AEState, batch: jax.Array,
                        key: chex.PRNGKey) -> dict[str, jax.Array]:
  """Per-example metrics of reconstructing the clean batch from a copy
  corrupted with the state's own corruption drawn from `key`: f32[b] each."""
  cfg = state.config
  noisy = corrupt(key, batch, cfg.corruption, cfg.noise_level)
  logits, _ = state.model.apply({"params": state.params}, noisy)
  values = reconstruction.from_reconstruction(output_to_data(cfg, logits), batch)
  return {"mse": values["mse"], "psnr": values["psnr"],
          "noisy_mse": losses.mse(noisy, batch)}
