"""Learned lossy compression: an autoencoder with integer latents and a
learned factorised prior that prices them.

Offers, through the contract every trainable thing in unsupjax follows,

    state = init_state(key, config, example_batch)
    state, metrics = train_step(state, batch, key)
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

For entropy coding, `build_tables` turns the prior into per-channel integer
frequency tables over a clipped integer support [lo_j, hi_j] (NumPy float64,
on the host, once; the tables are then stored, so every process codes with
the same integers). `quantise` rounds and clamps latents to that support.
The byte format and the range coder live in `codec_io.py`.

Past the decoder's quality, the residual layer (the end of this file) codes
the 8-bit residual against the picture of an exact fixed-point copy of the
decoder, quantised with an odd step (1: lossless), with one table per base
pixel value.

Does not offer: convolutional (spatial) latents, hyperpriors, or a
training loop (see `train.fit`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, NamedTuple

import chex
import flax.linen as linen
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from scipy import special

from unsupjax import losses, nn

# Probabilities below this are treated as this in the training rate (keeps
# -log2 p finite; the coder's own floor is the frequency table's 1 / TOTAL).
LIKELIHOOD_FLOOR = 1e-9
MIN_SCALE = 1e-3          # the prior's logistic scales are softplus(raw) + this
FREQ_BITS = 16            # frequency tables sum to 2**FREQ_BITS
TAIL_MASS = 2.0**-24      # prior mass left outside the support, per side
MAX_SUPPORT = 2**12       # at most this many symbols per channel


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


class CodecState(struct.PyTreeNode):
  """Everything an exact resume needs. params: {'net': ..., 'prior': ...}."""
  step: jax.Array
  params: Any
  opt_state: Any
  config: CodecConfig = struct.field(pytree_node=False)
  model: Any = struct.field(pytree_node=False)
  tx: optax.GradientTransformation = struct.field(pytree_node=False)
  image_shape: tuple[int, ...] = struct.field(pytree_node=False)


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
  net = model.init(key, jnp.asarray(example_batch[:1]))["params"]
  params = {"net": net, "prior": init_prior(int(config.latent_dim), int(config.mixtures))}
  tx = optax.adam(config.learning_rate)
  return CodecState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=tx.init(params), config=config, model=model, tx=tx,
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


def train_step(state: CodecState, batch: jax.Array,
               key: chex.PRNGKey) -> tuple[CodecState, dict[str, jax.Array]]:
  """One Adam step on distortion + lambda * rate with noisy latents.

  batch: f32[b, ...] in [0, 1] (images or their flattening). key: the run's
  step key; the step's noise comes from fold_in(key, state.step).
  """
  noise_key = jax.random.fold_in(key, state.step)
  npix = _num_pixels(state)

  def loss_fn(params):
    y = state.model.apply({"params": params["net"]}, batch, method="encode")
    y_noisy = y + jax.random.uniform(noise_key, y.shape, y.dtype, -0.5, 0.5)
    logits = state.model.apply({"params": params["net"]}, y_noisy, method="decode")
    mse = losses.mse(jax.nn.sigmoid(logits), batch.reshape(batch.shape[0], -1))
    bpp = rate_bits(params["prior"], y_noisy) / npix
    loss = jnp.mean(mse + state.config.lam * bpp)
    return loss, {"bpp": jnp.mean(bpp), "mse": jnp.mean(mse)}

  (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  return (state.replace(step=state.step + 1, params=params, opt_state=opt_state),
          {"loss": loss, **aux})


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


# --------------------------------------------------------------------------
# Tables for the entropy coder (NumPy float64, host).


class Tables(NamedTuple):
  """Integer entropy-coding tables of a factorised prior.

  lo: i32[d] the smallest symbol of each channel; width: i32[d] its support
  size (symbols lo .. lo + width - 1); freq: u32[d, max(width)] frequencies,
  each row summing to 2**FREQ_BITS over its first width entries (>= 1 each),
  zero-padded after.
  """
  lo: np.ndarray
  width: np.ndarray
  freq: np.ndarray

  @property
  def hi(self) -> np.ndarray:
    return self.lo + self.width - 1

  def bits(self, q: np.ndarray) -> np.ndarray:
    """The ideal code length -log2(freq / total) of q: i32[n, d] -> f64[n] bits."""
    cols = np.arange(q.shape[1])
    f = self.freq[cols, q - self.lo].astype(np.float64)
    return np.sum(FREQ_BITS - np.log2(f), axis=1)


def prior_cdf_np(prior: dict[str, np.ndarray], v: np.ndarray) -> np.ndarray:
  """The mixture CDF in float64. v: f64[d, m] -> f64[d, m]."""
  logits = np.asarray(prior["logits"], np.float64)
  means = np.asarray(prior["means"], np.float64)
  raw = np.asarray(prior["raw_scales"], np.float64)
  w = special.softmax(logits, axis=-1)
  scales = np.logaddexp(0.0, raw) + MIN_SCALE
  z = (v[:, :, None] - means[:, None, :]) / scales[:, None, :]
  return np.sum(w[:, None, :] * special.expit(z), axis=-1)


def quantise_pmf(pmf: np.ndarray, total: int = 2**FREQ_BITS) -> np.ndarray:
  """f64[w] probabilities -> u32[w] frequencies >= 1 summing to total.

  Each symbol gets 1 + floor(p * (total - w)); the remainder goes to the
  most probable symbol (first on ties). Deterministic given the floats.
  """
  w = pmf.shape[0]
  if w > total // 2:
    raise ValueError(f"pmf: expected at most {total // 2} symbols, got {w}")
  freq = 1 + np.floor(pmf * (total - w)).astype(np.int64)
  freq[int(np.argmax(pmf))] += total - int(freq.sum())
  return freq.astype(np.uint32)


def build_tables(prior: dict[str, Any]) -> Tables:
  """Per-channel integer tables from prior parameters (float32 arrays of
  shape [d, K]), computed in float64 on the host.

  The support of channel j is the integer range outside of which the prior
  has less than TAIL_MASS on each side (at most MAX_SUPPORT symbols); the
  end symbols absorb the tails, matching `quantise`'s clamping.
  """
  prior = {k: np.asarray(v, np.float64) for k, v in prior.items()}
  d = prior["means"].shape[0]
  scales = np.logaddexp(0.0, prior["raw_scales"]) + MIN_SCALE
  lo_all = np.floor(np.min(prior["means"] - 60 * scales, axis=1))
  hi_all = np.ceil(np.max(prior["means"] + 60 * scales, axis=1))
  lo_all = np.clip(lo_all, -2**20, 2**20).astype(np.int64)
  hi_all = np.clip(hi_all, -2**20, 2**20).astype(np.int64)
  los, pmfs = [], []
  for j in range(d):
    grid = np.arange(lo_all[j], hi_all[j] + 2, dtype=np.float64) - 0.5   # cell edges
    c = prior_cdf_np({k: v[j:j + 1] for k, v in prior.items()}, grid[None])[0]
    # Symbols whose cell is not entirely in a tail: c(v + 1/2) > t, c(v - 1/2) < 1 - t.
    keep = np.nonzero((c[1:] > TAIL_MASS) & (c[:-1] < 1.0 - TAIL_MASS))[0]
    if keep.size == 0:   # all mass in one cell edge: take the densest cell
      keep = np.array([int(np.argmax(np.diff(c)))])
    a, b = int(keep[0]), int(keep[-1])
    if b - a + 1 > MAX_SUPPORT:  # keep the densest window of MAX_SUPPORT cells
      a = int(np.argmax(c[MAX_SUPPORT:] - c[:-MAX_SUPPORT]))
      b = a + MAX_SUPPORT - 1
    pmf = c[a + 1:b + 2] - c[a:b + 1]
    pmf[0] = c[a + 1]               # left tail folds into the first symbol
    pmf[-1] = 1.0 - c[b]            # right tail into the last
    los.append(int(lo_all[j]) + a)
    pmfs.append(np.maximum(pmf, 0.0))
  width = np.array([p.shape[0] for p in pmfs], np.int32)
  freq = np.zeros((d, int(width.max())), np.uint32)
  for j, p in enumerate(pmfs):
    freq[j, :p.shape[0]] = quantise_pmf(p)
  return Tables(lo=np.array(los, np.int32), width=width, freq=freq)


def quantise(y: np.ndarray, tables: Tables) -> np.ndarray:
  """The symbols the codec sends: round(y) clamped to each channel's
  support. y: f32[n, d] -> i32[n, d]."""
  y = np.asarray(y)
  if y.ndim != 2 or y.shape[1] != tables.lo.shape[0]:
    raise ValueError(f"y: expected latents of shape (n, {tables.lo.shape[0]}), got {y.shape}")
  return np.clip(np.round(y), tables.lo, tables.hi).astype(np.int32)


# --------------------------------------------------------------------------
# The residual layer: from the decoder's picture to any PSNR, up to lossless.
#
# The base b is the decoder's picture in 8 bits, computed by an integer
# version of the decoder network (`integer_base`): fixed-point weights and
# activations whose arithmetic is exact, so every process on every platform
# computes the same b from the same latents. The encoder sends the 8-bit
# residual e = x - b quantised with an odd step s,
#
#     r = round(e / s)         (no ties: e is an integer, s odd),
#     x' = clip(b + s r, 0, 255),  so |x' - x| <= (s - 1) / 2,
#
# and s = 1 is lossless. r is coded with one integer table per value of b
# (256 contexts; b is known to the decoder before any residual symbol),
# counted from the training set's residuals (`build_residual_tables`); each
# context's support is the residuals its b allows.

RESIDUAL_STEPS = (1, 3, 5, 9, 17, 33, 65, 129)
FIXED_POINT_BITS = 16     # fractional bits of the integer decoder's weights and activations
_EXACT = 2.0**52          # float64 sums of integers below this are exact in any order


def _check_step(step: int) -> int:
  if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 1 \
      or step % 2 == 0 or step > 255:
    raise ValueError(f"step: expected an odd integer in [1, 255], got {step!r}")
  return int(step)


def residual_symbols(x_u8: np.ndarray, base_u8: np.ndarray, step: int) -> np.ndarray:
  """r = round((x - b) / step): i32, the shape of x_u8 (8-bit images and
  bases of one shape)."""
  step = _check_step(step)
  e = np.asarray(x_u8, np.int32) - np.asarray(base_u8, np.int32)
  return (np.sign(e) * ((np.abs(e) + step // 2) // step)).astype(np.int32)


def residual_pixels(base_u8: np.ndarray, r: np.ndarray, step: int) -> np.ndarray:
  """x' = clip(b + step r, 0, 255): u8, the shape of base_u8."""
  step = _check_step(step)
  return np.clip(np.asarray(base_u8, np.int32) + step * np.asarray(r, np.int32),
                 0, 255).astype(np.uint8)


def residual_support(step: int) -> tuple[np.ndarray, np.ndarray]:
  """(lo, width): i32[256] each; the residual symbols of base value b are
  lo[b] .. lo[b] + width[b] - 1, the r of every x in [0, 255]."""
  b = np.arange(256)
  lo = residual_symbols(np.zeros(256), b, step)
  hi = residual_symbols(np.full(256, 255), b, step)
  return lo.astype(np.int32), (hi - lo + 1).astype(np.int32)


def build_residual_tables(r: np.ndarray, base_u8: np.ndarray, step: int) -> Tables:
  """Integer tables for residual symbols r of `step` in the 256 contexts of
  their base values base_u8 (arrays of one shape, e.g. the training set's
  [n, pixels]): the counts plus 1/2 over each context's support, quantised
  like the latent tables (`quantise_pmf`)."""
  step = _check_step(step)
  r, base = np.asarray(r).ravel(), np.asarray(base_u8).ravel()
  if r.shape != base.shape or r.size == 0:
    raise ValueError(f"r, base_u8: expected arrays of one non-empty shape, got "
                     f"{np.shape(r)} and {np.shape(base_u8)}")
  lo, width = residual_support(step)
  off = r - lo[base]
  if np.any(off < 0) or np.any(off >= width[base]):
    raise ValueError(f"r: symbols outside the support of their base values for step {step}")
  wmax = int(width.max())
  counts = np.bincount(base.astype(np.int64) * wmax + off, minlength=256 * wmax)
  counts = counts.reshape(256, wmax).astype(np.float64)
  freq = np.zeros((256, wmax), np.uint32)
  for b in range(256):
    c = counts[b, :width[b]] + 0.5
    freq[b, :width[b]] = quantise_pmf(c / c.sum())
  return Tables(lo=lo, width=width, freq=freq)


def residual_bits(tables: Tables, r: np.ndarray, base_u8: np.ndarray) -> float:
  """The ideal code length in bits of residual symbols r in their contexts."""
  base = np.asarray(base_u8).ravel().astype(np.int64)
  f = tables.freq[base, np.asarray(r).ravel() - tables.lo[base]].astype(np.float64)
  return float(np.sum(FREQ_BITS - np.log2(f)))


def integer_decoder(net_params: dict) -> list[tuple[np.ndarray, np.ndarray]]:
  """The decoder's dense layers in fixed point: [(kernel, bias)] as float64
  arrays of integers, kernel = round(w 2^F), bias = round(b 2^F), F =
  FIXED_POINT_BITS (scaling float32 by 2^F and rounding is exact)."""
  dec = net_params["decoder"]
  layers = []
  for i in range(len(dec)):
    d = dec[f"dense_{i}"]
    layers.append(tuple(np.round(np.asarray(d[k], np.float64) * 2.0**FIXED_POINT_BITS)
                        for k in ("kernel", "bias")))
  return layers


def _exact_matmul(a: np.ndarray, w: np.ndarray) -> np.ndarray:
  """a @ w for integer-valued float64 arrays, exactly: BLAS in float64 when
  every partial sum is below 2^52 in magnitude (then any summation order
  gives the exact integer), int64 otherwise."""
  bound = float(np.max(np.abs(a), initial=0)) * float(np.max(np.sum(np.abs(w), axis=0),
                                                              initial=0))
  if bound < _EXACT:
    return a @ w
  if bound < 2.0**62:
    return (a.astype(np.int64) @ w.astype(np.int64)).astype(np.float64)
  raise ValueError("q: the fixed-point decoder overflows on these latents")


def logit_thresholds() -> np.ndarray:
  """T: i64[255], T[k-1] = ceil(2^F logit((k - 1/2) / 255)); a fixed-point
  logit z gives the pixel #{k : z >= T[k-1]} = round(255 sigmoid(z / 2^F))
  (halves rounded up). The middle one is log(1) = 0 exactly; no other
  2^F logit(...) is within 1e-6 of an integer (tested), so any faithfully
  rounded log gives these values."""
  k = np.arange(1, 256, dtype=np.float64)
  return np.ceil(np.log((2 * k - 1) / (511 - 2 * k)) * 2.0**FIXED_POINT_BITS).astype(np.int64)


_THRESHOLDS = logit_thresholds()


def integer_base(layers: list, q: np.ndarray) -> np.ndarray:
  """The 8-bit base u8[n, pixels] of integer latents q: i32[n, d], by the
  fixed-point decoder: exact integer arithmetic (activations floored to F
  fractional bits after each layer, ReLU between layers), then the logits
  thresholded. The same integers on every platform."""
  scale = 2.0**FIXED_POINT_BITS
  a = np.asarray(q, np.float64)
  for i, (w, b) in enumerate(layers):
    z = _exact_matmul(a, w)
    z = (z if i == 0 else np.floor(z / scale)) + b  # back to F fractional bits
    a = np.maximum(z, 0.0) if i < len(layers) - 1 else z
  return np.searchsorted(_THRESHOLDS, a, side="right").astype(np.uint8)
