"""The learned codec's training side: an autoencoder with integer latents
and a learned factorised prior that prices them.

Offers, through the contract every trainable thing in unsupjax follows,

    state = init_state(key, config, example_batch)
    state, metrics = train_step(state, batch, key, axis_name=None)
    values = eval_step(state, batch)       # per-example f32[b] arrays

a dense encoder x -> y: f32[b, d] (linear latents), a dense decoder
y -> pixel logits, and a per-channel prior over the latents: a mixture of
`mixtures` logistics per channel convolved with a unit-width uniform, so

    p(v) = c(v + 1/2) - c(v - 1/2),   c = the mixture's CDF.

Training replaces rounding by additive uniform noise (y + u, u ~ U(-1/2, 1/2)
drawn from the step's key) and minimises

    loss = distortion + lambda * rate,
    rate = sum_j -log2 p_j(y_j + u_j) / (h * w)   (bits per pixel),
    distortion = mean squared error of sigmoid(decoder(y + u)), pixels in [0, 1],

so a larger lambda makes bits dearer: a lower rate, a higher distortion.
`eval_step` scores the hard-rounded latents, as the codec sends them.
Inside `pmap` over `axis_name` the step averages gradients and metrics over
the devices and each device draws its rows of the global batch's noise, so
one device and eight give the same numbers; under `jit` with a sharded
batch it needs nothing.

Does not offer: the integer tables and the range coder (`entropy`), the
residual layer and its fixed-point decoder (`residual`), the saved bundle
(`bundle`), the file format (`io`), convolutional (spatial) latents,
hyperpriors, or a training loop (`unsupjax.training.fit`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import chex
import flax.linen as linen
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from unsupjax import losses, nn, parallel
from unsupjax.state import TrainState

# Probabilities below this are treated as this in the training rate (keeps
# -log2 p finite; the coder's own floor is the frequency table's 1 / TOTAL).
LIKELIHOOD_FLOOR = 1e-9
MIN_SCALE = 1e-3          # the prior's logistic scales are softplus(raw) + this


@dataclasses.dataclass(frozen=True)
class CodecConfig:
  """Hyper-parameters of the learned codec.

  lam: the price of the rate (bits per pixel) in units of distortion
  (per-pixel MSE, pixels in [0, 1]): loss = mse + lam * bpp. hidden: encoder
  widths (the decoder mirrors them). latent_dim: latent channels. mixtures:
  logistics per channel in the prior.
  """
  lam: float = 0.01
  hidden: Sequence[int] = (512, 256)
  latent_dim: int = 32
  mixtures: int = 3
  learning_rate: float = 1e-3

  def __post_init__(self):
    object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
    if not (np.isfinite(self.lam) and self.lam > 0):
      raise ValueError(f"lam: expected a positive number, got {self.lam}")
    if int(self.latent_dim) < 1:
      raise ValueError(f"latent_dim: expected a positive integer, got {self.latent_dim}")
    if any(h < 1 for h in self.hidden):
      raise ValueError(f"hidden: expected positive layer widths, got {self.hidden}")
    if int(self.mixtures) < 1:
      raise ValueError(f"mixtures: expected a positive integer, got {self.mixtures}")
    if not self.learning_rate > 0:
      raise ValueError(f"learning_rate: expected > 0, got {self.learning_rate}")

  def check_input_shape(self, shape: Sequence[int]) -> None:
    """ValueError unless examples are images (height, width, channels)."""
    if len(tuple(shape)) != 3:
      raise ValueError(f"image_shape: expected (height, width, channels), got {tuple(shape)}")


CONFIG = CodecConfig


class CodecNet(linen.Module):
  """The transforms. encode: x f32[b, ...] -> y f32[b, latent_dim] (linear);
  decode: y -> pixel logits f32[b, prod(image_shape)]."""
  image_shape: Sequence[int]
  hidden: Sequence[int]
  latent_dim: int

  def setup(self):
    size = int(np.prod(self.image_shape))
    self.encoder = nn.MLP(tuple(self.hidden) + (self.latent_dim,))
    self.decoder = nn.MLP(tuple(reversed(tuple(self.hidden))) + (size,))

  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    y = self.encode(x)
    return self.decode(y), y

  def encode(self, x: jax.Array) -> jax.Array:
    return self.encoder(x.reshape(x.shape[0], -1))

  def decode(self, y: jax.Array) -> jax.Array:
    return self.decoder(y)


class CodecState(TrainState):
  """A TrainState with params {'net': ..., 'prior': ...}, plus the static
  image_shape (h, w, c) the examples flatten from."""
  image_shape: tuple[int, ...] = struct.field(pytree_node=False, default=())


def init_prior(latent_dim: int, mixtures: int) -> dict[str, jax.Array]:
  """Prior parameters, each f32[latent_dim, mixtures]: equal weights, unit
  scales, means spread over [-1, 1]."""
  means = jnp.linspace(-1.0, 1.0, mixtures) if mixtures > 1 else jnp.zeros(1)
  raw_one = float(np.log(np.expm1(1.0 - MIN_SCALE)))  # softplus^-1(1 - MIN_SCALE)
  shape = (latent_dim, mixtures)
  return {"logits": jnp.zeros(shape, jnp.float32),
          "means": jnp.broadcast_to(means, shape).astype(jnp.float32),
          "raw_scales": jnp.full(shape, raw_one, jnp.float32)}


def init_state(key: chex.PRNGKey, config: CodecConfig,
               example_batch: jax.Array,
               image_shape: Sequence[int] | None = None) -> CodecState:
  """A fresh state. example_batch: f32[b, ...]; image_shape: the (h, w, c)
  the examples flatten from (default: example_batch.shape[1:], which must
  then be (h, w, c))."""
  shape = tuple(int(s) for s in (image_shape or example_batch.shape[1:]))
  if len(shape) != 3:
    raise ValueError(f"image_shape: expected (height, width, channels), got {shape}")
  if int(np.prod(example_batch.shape[1:])) != int(np.prod(shape)):
    raise ValueError(f"example_batch: expected examples of {int(np.prod(shape))} values "
                     f"(image_shape {shape}), got shape {tuple(example_batch.shape[1:])}")
  model = CodecNet(image_shape=shape, hidden=config.hidden,
                   latent_dim=int(config.latent_dim))
  net = nn.init_variables(model, key, jnp.asarray(example_batch[:1]))["params"]
  params = {"net": net, "prior": init_prior(int(config.latent_dim), int(config.mixtures))}
  tx = optax.adam(config.learning_rate)
  return CodecState.create(params=params, tx=tx, config=config, model=model,
                          image_shape=shape)


# --------------------------------------------------------------------------
# The prior (JAX, for training).


def _prior_parts(prior):
  log_w = jax.nn.log_softmax(prior["logits"], axis=-1)
  scales = jax.nn.softplus(prior["raw_scales"]) + MIN_SCALE
  return log_w, prior["means"], scales


def likelihood(prior: dict[str, jax.Array], v: jax.Array) -> jax.Array:
  """p(v) = c(v + 1/2) - c(v - 1/2) per latent. v: f32[b, d] -> f32[b, d].

  Each logistic's difference of sigmoids is taken on the side of its mean
  where both sigmoids are small, so far tails keep relative precision.
  """
  log_w, means, scales = _prior_parts(prior)          # [d, K]
  z = v[..., None] - means                            # [b, d, K]
  upper = (z + 0.5) / scales
  lower = (z - 0.5) / scales
  flip = -jnp.sign(upper + lower)
  flip = jnp.where(flip == 0, 1.0, flip)
  probs = jnp.abs(jax.nn.sigmoid(flip * upper) - jax.nn.sigmoid(flip * lower))
  return jnp.sum(jnp.exp(log_w) * probs, axis=-1)


def rate_bits(prior: dict[str, jax.Array], v: jax.Array) -> jax.Array:
  """-log2 p(v) summed over latents: f32[b, d] -> f32[b] bits."""
  p = jnp.maximum(likelihood(prior, v), LIKELIHOOD_FLOOR)
  return -jnp.sum(jnp.log2(p), axis=-1)


def _num_pixels(state: CodecState) -> int:
  return int(state.image_shape[0] * state.image_shape[1])


def train_step(state: CodecState, batch: jax.Array, key: chex.PRNGKey, *,
               axis_name: str | None = None
               ) -> tuple[CodecState, dict[str, jax.Array]]:
  """One Adam step on distortion + lambda * rate with noisy latents.

  batch: f32[b, ...] in [0, 1] (images or their flattening). key: the run's
  step key; the step's noise comes from fold_in(key, state.step).
  axis_name: inside pmap, the device axis: gradients and metrics are
  averaged over it, and the noise is this device's rows of the global
  batch's (`parallel.batch_draw`).
  """
  noise_key = jax.random.fold_in(key, state.step)
  npix = _num_pixels(state)

  def loss_fn(params):
    y = state.model.apply({"params": params["net"]}, batch, method="encode")
    u = parallel.batch_draw(jax.random.uniform, noise_key, y.shape, y.dtype, -0.5, 0.5,
                            axis_name=axis_name)
    y_noisy = y + u
    logits = state.model.apply({"params": params["net"]}, y_noisy, method="decode")
    mse = losses.mse(jax.nn.sigmoid(logits), batch.reshape(batch.shape[0], -1))
    bpp = rate_bits(params["prior"], y_noisy) / npix
    loss = jnp.mean(mse + state.config.lam * bpp)
    return loss, {"bpp": jnp.mean(bpp), "mse": jnp.mean(mse)}

  (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  grads, metrics = parallel.pmean((grads, {"loss": loss, **aux}), axis_name)
  return state.apply_gradients(grads), metrics


def eval_step(state: CodecState, batch: jax.Array) -> dict[str, jax.Array]:
  """Per-example metrics of the hard-rounded codec, each f32[b].

  bpp: the prior's rate of round(y) in bits per pixel (what an ideal
  entropy coder spends; the real coder adds a few bytes per stream);
  mse, psnr: distortion of the decoded image; loss: mse + lambda * bpp.
  """
  y = state.model.apply({"params": state.params["net"]}, batch, method="encode")
  y_hat = jnp.round(y)
  logits = state.model.apply({"params": state.params["net"]}, y_hat, method="decode")
  target = batch.reshape(batch.shape[0], -1)
  recon = jax.nn.sigmoid(logits)
  mse = losses.mse(recon, target)
  bpp = rate_bits(state.params["prior"], y_hat) / _num_pixels(state)
  return {"loss": mse + state.config.lam * bpp, "bpp": bpp, "mse": mse,
          "psnr": losses.psnr(recon, target)}
