"""Flax Linen building blocks shared by the models.

Offers `MLP` (a stack of Dense layers) and `DenseAutoencoder` (the classic
dense encoder/decoder whose decoder returns logits). Convolutional encoders,
decoders and GAN networks live here too as they are added.

Modules return logits, never probabilities: losses apply the link function
themselves in a numerically stable form (see `losses.py`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax

# Keras's default initialiser; the seed AE is compared against Keras, so the
# same initial distribution keeps the comparison about training, not init.
glorot_uniform = nn.initializers.glorot_uniform()
# Kernel initialisers by name (configs hold names, so they stay hashable and
# JSON-able). fan_in_uniform is U(-1/sqrt(fan_in), 1/sqrt(fan_in)): Keras's
# VarianceScaling(1/3, 'fan_in', 'uniform'), the DEC re-implementation's
# choice for its d-500-500-2000-10 autoencoder (and PyTorch's Linear default).
KERNEL_INITS = {
    "glorot_uniform": glorot_uniform,
    "fan_in_uniform": nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform"),
}


@functools.partial(jax.jit, static_argnums=0)
def init_variables(module: nn.Module, rngs: Any, *args: Any) -> Any:
  """`module.init(rngs, *args)` as one compiled program instead of one
  dispatch per initialiser and layer, shared by equal modules: Linen
  modules compare by their fields, so every model of one architecture and
  input shape compiles it once per process."""
  return module.init(rngs, *args)


class MLP(nn.Module):
  """Dense layers `features[0] ... features[-1]`.

  The activation follows every layer except the last, unless
  `activate_final` is set.
  """
  features: Sequence[int]
  activation: Callable[[jax.Array], jax.Array] = nn.relu
  activate_final: bool = False
  kernel_init: Callable = glorot_uniform

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for i, width in enumerate(self.features):
      x = nn.Dense(width, kernel_init=self.kernel_init, name=f"dense_{i}")(x)
      if i < len(self.features) - 1 or self.activate_final:
        x = self.activation(x)
    return x


class DenseAutoencoder(nn.Module):
  """x: f32[b, *image_shape] -> (logits f32[b, *image_shape], code f32[b, latent]).

  Encoder: flatten -> hidden... -> latent (ReLU on every layer, the latent
  included, as in the classic Keras autoencoder; `linear_code=True` leaves the
  latent layer linear, as DEC's d-500-500-2000-10 embedding). Decoder: the
  mirror image, ending in a linear layer whose outputs are per-pixel logits.
  """
  image_shape: Sequence[int]
  hidden: Sequence[int] = (128,)
  latent_dim: int = 32
  linear_code: bool = False
  kernel_init: str = "glorot_uniform"  # a key of KERNEL_INITS

  def setup(self):
    size = 1
    for s in self.image_shape:
      size *= int(s)
    init = KERNEL_INITS[self.kernel_init]
    self.encoder = MLP(tuple(self.hidden) + (self.latent_dim,),
                       activate_final=not self.linear_code, kernel_init=init)
    self.decoder = MLP(tuple(reversed(tuple(self.hidden))) + (size,), kernel_init=init)

  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    code = self.encode(x)
    return self.decode(code), code

  def encode(self, x: jax.Array) -> jax.Array:
    return self.encoder(x.reshape(x.shape[0], -1))

  def decode(self, code: jax.Array) -> jax.Array:
    """Logits f32[b, *image_shape]."""
    logits = self.decoder(code)
    return logits.reshape((code.shape[0],) + tuple(self.image_shape))


def conv_grid(image_shape: Sequence[int], downsamples: int = 2) -> tuple[int, int]:
  """The spatial size after `downsamples` stride-2 convolutions.

  Raises ValueError unless image_shape is (h, w, c) with h and w divisible by
  2**downsamples (28x28, 32x32 and 8x8 all are).
  """
  if len(image_shape) != 3:
    raise ValueError(f"image_shape: expected (height, width, channels), got {tuple(image_shape)}")
  h, w, _ = image_shape
  f = 2**downsamples
  if h % f or w % f:
    raise ValueError(f"image_shape: expected height and width divisible by {f} for "
                     f"{downsamples} stride-2 convolutions, got {h}x{w}")
  return h // f, w // f


class ConvEncoder(nn.Module):
  """x: f32[b, h, w, c] -> f32[b, out_dim].

  One stride-2 3x3 convolution per entry of `features` (each halves h and w),
  then a dense layer to `out_dim` (linear: callers add their own head).
  """
  features: Sequence[int] = (32, 64)
  out_dim: int = 32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for i, f in enumerate(self.features):
      x = nn.relu(nn.Conv(f, (3, 3), strides=(2, 2), padding="SAME",
                          kernel_init=glorot_uniform, name=f"conv_{i}")(x))
    x = x.reshape(x.shape[0], -1)
    return nn.Dense(self.out_dim, kernel_init=glorot_uniform, name="head")(x)


def depth_to_space(x: jax.Array, r: int) -> jax.Array:
  """f32[b, h, w, r*r*c] -> f32[b, h*r, w*r, c] (pixel shuffle)."""
  b, h, w, c = x.shape
  x = x.reshape(b, h, w, r, r, c // (r * r)).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h * r, w * r, c // (r * r))


class SubpixelConvTranspose(nn.Module):
  """A stride-2 transposed convolution computed as a sub-pixel convolution.

  A k x k convolution on the low-resolution grid producing 4 * features
  channels, then a pixel shuffle to twice the height and width. With k = 2
  each output pixel is a learned function of a 2x2 input neighbourhood, as
  in a stride-2 transposed convolution with a 4x4 kernel (the DCGAN
  up-sampling layer), up to which neighbourhood each output phase reads
  (Shi et al., 2016); its gradient is a plain convolution. XLA:CPU runs the gradient of an lhs-dilated `ConvTranspose`
  several times slower on these shapes (measured: 0.13 s vs 0.03 s for a
  256x4x4x64 batch).
  """
  features: int
  kernel_size: int = 2

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k = self.kernel_size
    x = nn.Conv(4 * self.features, (k, k), padding="SAME",
                kernel_init=glorot_uniform, name="conv")(x)
    return depth_to_space(x, 2)


class ConvDecoder(nn.Module):
  """z: f32[b, d] -> logits f32[b, *image_shape]; the mirror of `ConvEncoder`.

  Dense to a (h / 2^L, w / 2^L, features[0]) grid, then one stride-2
  transposed convolution per entry of `features`, each doubling h and w and
  producing the next entry's channels; the last produces the image's
  channels (linear: logits). features=(64, 32) mirrors an encoder with
  features=(32, 64).
  """
  image_shape: Sequence[int]
  features: Sequence[int] = (64, 32)

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    gh, gw = conv_grid(self.image_shape, len(self.features))
    x = nn.relu(nn.Dense(gh * gw * self.features[0], kernel_init=glorot_uniform,
                         name="grid")(z))
    x = x.reshape(z.shape[0], gh, gw, self.features[0])
    outs = tuple(self.features[1:]) + (self.image_shape[-1],)
    for i, f in enumerate(outs):
      x = SubpixelConvTranspose(f, name=f"deconv_{i}")(x)
      if i < len(outs) - 1:
        x = nn.relu(x)
    return x


class ConvAutoencoder(nn.Module):
  """x: f32[b, h, w, c] -> (logits f32[b, h, w, c], code f32[b, latent_dim]).

  Strided-conv encoder -> ReLU latent vector (linear with `linear_code`) ->
  transposed-conv decoder; h and w must be divisible by 2**len(features)
  (28x28x1, 32x32x3, 8x8x1 are).
  """
  image_shape: Sequence[int]
  features: Sequence[int] = (32, 64)
  latent_dim: int = 32
  linear_code: bool = False

  def setup(self):
    conv_grid(self.image_shape, len(self.features))
    self.encoder = ConvEncoder(tuple(self.features), self.latent_dim)
    self.decoder = ConvDecoder(tuple(self.image_shape),
                               tuple(reversed(tuple(self.features))))

  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    code = self.encode(x)
    return self.decode(code), code

  def encode(self, x: jax.Array) -> jax.Array:
    code = self.encoder(x)
    return code if self.linear_code else nn.relu(code)

  def decode(self, code: jax.Array) -> jax.Array:
    return self.decoder(code)


class GaussianEncoder(nn.Module):
  """x: f32[b, ...] -> (mean f32[b, d], log_var f32[b, d]) of q(z | x).

  A dense stack (`hidden`, ReLU) or, with `conv_features`, the strided conv
  encoder, followed by two linear heads.
  """
  latent_dim: int
  hidden: Sequence[int] = (500,)
  conv_features: Sequence[int] | None = None
  activation: Callable[[jax.Array], jax.Array] = nn.relu

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    if self.conv_features:
      h = self.activation(ConvEncoder(tuple(self.conv_features), self.hidden[-1],
                                      name="conv")(x))
    else:
      h = MLP(tuple(self.hidden), activation=self.activation, activate_final=True,
              name="mlp")(x.reshape(x.shape[0], -1))
    mean = nn.Dense(self.latent_dim, kernel_init=glorot_uniform, name="mean")(h)
    log_var = nn.Dense(self.latent_dim, kernel_init=glorot_uniform, name="log_var")(h)
    return mean, log_var


class Decoder(nn.Module):
  """z: f32[b, d] -> f32[b, *image_shape] (logits or means: the caller decides).

  Dense (`hidden`, ReLU) or, with `conv_features`, the transposed-conv
  decoder.
  """
  image_shape: Sequence[int]
  hidden: Sequence[int] = (500,)
  conv_features: Sequence[int] | None = None
  activation: Callable[[jax.Array], jax.Array] = nn.relu

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    if self.conv_features:
      return ConvDecoder(tuple(self.image_shape), tuple(self.conv_features),
                         name="conv")(z)
    size = 1
    for s in self.image_shape:
      size *= int(s)
    out = MLP(tuple(self.hidden) + (size,), activation=self.activation,
              name="mlp")(z)
    return out.reshape((z.shape[0],) + tuple(self.image_shape))
