"""Flax Linen generators and discriminators for GANs.

Offers:
  * `MLPGenerator` / `MLPDiscriminator`: dense networks for vectors of any
    dimension (the 2-D toys, a user's `(n, d)` array) or flattened images.
  * `DCGANGenerator` / `DCGANDiscriminator`: DCGAN-style convolutional
    networks (stride-2 4x4 transposed convolutions up, stride-2 4x4
    convolutions down) for square images whose side halves down to a base of
    4..7: 28x28 (MNIST, base 7), 32x32 (CIFAR-10, base 4), 8x8 (digits,
    base 4); any channel count.
  * `MinibatchStd`: appends the across-batch standard deviation of the
    features, averaged to one number, as an extra feature (Karras et al.
    2018); a collapsed generator's batch has a visibly small value.
  * `pack(x, m)`: PacGAN packing (Lin et al. 2018): m consecutive examples
    become one discriminator input, concatenated along the last (feature or
    channel) axis.
  * `GENERATOR_OUTPUTS`: the generator's output link, which must match the
    data's range: 'linear' (unbounded), 'sigmoid' ([0, 1]), 'tanh' ([-1, 1]).

Discriminators return logits f32[b] (never probabilities) and take an
`update_stats` flag for spectral normalisation (Flax's `nn.SpectralNorm`,
power-iteration vectors kept in the 'batch_stats' collection; one power
iteration per call, stored only when `update_stats=True`). They take inputs
already packed with `pack`, so penalties can differentiate them with
respect to exactly what they see.

Does not offer: batch normalisation. The generator uses LayerNorm (or
nothing), so a sample depends only on its own latent and the EMA generator
needs no running statistics; the discriminator uses spectral normalisation
or nothing, which keeps gradient penalties per-example.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

GENERATOR_OUTPUTS = ("linear", "sigmoid", "tanh")


def output_link(name: str, x: jax.Array) -> jax.Array:
  """The generator's final nonlinearity: 'linear', 'sigmoid' or 'tanh'."""
  if name == "linear":
    return x
  if name == "sigmoid":
    return jax.nn.sigmoid(x)
  if name == "tanh":
    return jnp.tanh(x)
  raise ValueError(f"output: expected one of {GENERATOR_OUTPUTS}, got {name!r}")


def pack(x: jax.Array, m: int) -> jax.Array:
  """PacGAN packing: f32[b, *s, c] -> f32[b // m, *s, m * c].

  Rows m*i .. m*i + m - 1 become packed example i, concatenated along the
  last axis (features of a vector, channels of an image). m = 1 is the
  identity. b must be a multiple of m.
  """
  if m == 1:
    return x
  b = x.shape[0]
  if b % m:
    raise ValueError(f"pac: batch size {b} is not a multiple of pac={m}")
  x = x.reshape((b // m, m) + x.shape[1:])
  x = jnp.moveaxis(x, 1, -2)
  return x.reshape(x.shape[:-2] + (m * x.shape[-1],))


class MinibatchStd(nn.Module):
  """f32[b, ..., c] -> f32[b, ..., c + 1].

  The standard deviation of every feature across the batch, averaged over
  features to one scalar, broadcast and appended as the last feature.
  Inside pmap, `axis_name` makes the batch the global one (every device
  holds the same number of rows), so the feature is the one-device value.
  """
  epsilon: float = 1e-8

  @nn.compact
  def __call__(self, x: jax.Array, axis_name: str | None = None) -> jax.Array:
    mean = _pmean(x.mean(axis=0, keepdims=True), axis_name)
    var = _pmean(jnp.mean(jnp.square(x - mean), axis=0), axis_name)
    s = jnp.mean(jnp.sqrt(var + self.epsilon))
    extra = jnp.broadcast_to(s, x.shape[:-1] + (1,)).astype(x.dtype)
    return jnp.concatenate([x, extra], axis=-1)


def _pmean(x: jax.Array, axis_name: str | None) -> jax.Array:
  return x if axis_name is None else jax.lax.pmean(x, axis_name)


def _conv_transpose(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """nn.ConvTranspose's stride-2 'SAME' transposed convolution (no kernel flip)."""
  return lax.conv_transpose(x, kernel, (2, 2), "SAME",
                            dimension_numbers=("NHWC", "HWIO", "NHWC"))


@jax.custom_vjp
def conv_transpose_4x4(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """Stride-2 4x4 'SAME' transposed convolution, x: f32[b, h, w, c],
  kernel: f32[4, 4, c, o] -> f32[b, 2h, 2w, o]; the values and gradients of
  `nn.ConvTranspose(o, (4, 4), strides=(2, 2), padding='SAME')`.

  Only the kernel's gradient is computed differently. Output pixel
  (2r + py, 2s + px) reads the input padded by 1 at rows r + py + i and
  columns s + px + j (i, j in {0, 1}) through kernel tap (2i + py, 2j + px),
  so each of the 4 output phases contributes its 4 taps' gradient through
  one ordinary stride-1 convolution, laid out with the channels in the batch
  position so that XLA:CPU hands it to its library convolution. Left to
  itself, XLA:CPU computes the gradient of the lhs-dilated convolution as a
  scalar loop nest: the MNIST DCGAN step runs 3.7x slower with
  nn.ConvTranspose in its place (benchmarks/dcgan_cpu.py).
  """
  return _conv_transpose(x, kernel)


def _conv_transpose_fwd(x, kernel):
  return _conv_transpose(x, kernel), (x, kernel)


def _conv_transpose_bwd(res, g):
  x, kernel = res
  _, h, w, c = x.shape
  o = kernel.shape[-1]
  gx = jax.vjp(lambda v: _conv_transpose(v, kernel), x)[1](g)[0]
  # (c, h + 2, w + 2, b): the channels as a batch, the examples as features.
  xt = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0))).transpose(3, 1, 2, 0)
  phases = []
  for py in range(2):
    for px in range(2):
      g_phase = g[:, py::2, px::2, :].transpose(1, 2, 0, 3)  # (h, w, b, o)
      taps = lax.conv_general_dilated(
          xt[:, py:py + h + 1, px:px + w + 1, :], g_phase, (1, 1), "VALID",
          dimension_numbers=("NHWC", "HWIO", "NHWC"))  # (c, i, j, o)
      phases.append(taps.transpose(1, 2, 0, 3))
  # (py, px, i, j, c, o) -> kernel[2i + py, 2j + px, c, o]
  gk = jnp.stack(phases).reshape(2, 2, 2, 2, c, o).transpose(2, 0, 3, 1, 4, 5)
  return gx, gk.reshape(4, 4, c, o).astype(kernel.dtype)


conv_transpose_4x4.defvjp(_conv_transpose_fwd, _conv_transpose_bwd)


class UpConv(nn.Module):
  """`nn.ConvTranspose(features, (4, 4), strides=(2, 2), padding='SAME')`:
  same parameters (names, shapes, initialisation), values and gradients; on
  the CPU backend the kernel gradient goes through `conv_transpose_4x4`."""
  features: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (4, 4, x.shape[-1], self.features))
    bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
    kernel = kernel.astype(x.dtype)
    fn = conv_transpose_4x4 if jax.default_backend() == "cpu" else _conv_transpose
    return fn(x, kernel) + bias


def _maybe_sn(layer: nn.Module, x: jax.Array, spectral_norm: bool,
              update_stats: bool) -> jax.Array:
  """Applies `layer`, spectrally normalised when `spectral_norm`."""
  if spectral_norm:
    return nn.SpectralNorm(layer)(x, update_stats=update_stats)
  return layer(x)


def _prod(shape: Sequence[int]) -> int:
  n = 1
  for s in shape:
    n *= int(s)
  return n


class MLPGenerator(nn.Module):
  """z: f32[b, latent] -> x: f32[b, *out_shape] in the `output` range."""
  out_shape: Sequence[int]
  hidden: Sequence[int] = (256, 256, 256)
  output: str = "linear"
  layer_norm: bool = False

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    h = z
    for i, width in enumerate(self.hidden):
      h = nn.Dense(width, name=f"dense_{i}")(h)
      if self.layer_norm:
        h = nn.LayerNorm(name=f"norm_{i}")(h)
      h = nn.relu(h)
    h = nn.Dense(_prod(self.out_shape), name="out")(h)
    h = output_link(self.output, h)
    return h.reshape((z.shape[0],) + tuple(self.out_shape))


class MLPDiscriminator(nn.Module):
  """x: f32[b, ...] (packed) -> logits f32[b]. LeakyReLU(0.2) hidden layers."""
  hidden: Sequence[int] = (256, 256, 256)
  spectral_norm: bool = False
  minibatch_std: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, update_stats: bool = False,
               axis_name: str | None = None) -> jax.Array:
    h = x.reshape(x.shape[0], -1)
    for i, width in enumerate(self.hidden):
      h = _maybe_sn(nn.Dense(width, name=f"dense_{i}"), h,
                    self.spectral_norm, update_stats)
      h = nn.leaky_relu(h, 0.2)
    if self.minibatch_std:
      h = MinibatchStd()(h, axis_name)
    h = _maybe_sn(nn.Dense(1, name="out"), h, self.spectral_norm,
                  update_stats)
    return h[:, 0]


def dcgan_levels(side: int) -> tuple[int, int]:
  """(number of stride-2 stages, base side) for a square image of `side`.

  Halves while the side is even and the half is at least 4: 28 -> (2, 7),
  32 -> (3, 4), 8 -> (1, 4), 64 -> (4, 4).
  """
  levels = 0
  while side % 2 == 0 and side // 2 >= 4:
    side //= 2
    levels += 1
  return levels, side


def check_dcgan_shape(shape: Sequence[int]) -> None:
  """Raises ValueError unless `shape` is (h, h, c) with at least one stage."""
  if (len(shape) != 3 or shape[0] != shape[1]
      or dcgan_levels(int(shape[0]))[0] < 1):
    raise ValueError(
        f"data_shape: the DCGAN networks expect square images (h, h, c) whose "
        f"side halves at least once to a base >= 4 (e.g. 8, 28, 32, 64), "
        f"got {tuple(shape)}")


class DCGANGenerator(nn.Module):
  """z: f32[b, latent] -> x: f32[b, h, h, c] in the `output` range.

  Dense to (base, base, width * 2**(levels-1)), then `levels` stride-2 4x4
  transposed convolutions halving the channels, the last one to c (the
  inner ones are `UpConv`, whose kernel gradient XLA:CPU computes much
  faster; the last, with few output channels, is already fast as it is).
  """
  out_shape: Sequence[int]
  width: int = 64
  output: str = "sigmoid"
  layer_norm: bool = True

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    h_side, _, c = self.out_shape
    levels, base = dcgan_levels(int(h_side))
    ch = self.width * 2 ** (levels - 1)
    h = nn.Dense(base * base * ch, name="project")(z)
    h = h.reshape(z.shape[0], base, base, ch)
    if self.layer_norm:
      h = nn.LayerNorm(reduction_axes=(-3, -2, -1), name="norm_in")(h)
    h = nn.relu(h)
    for i in range(levels - 1):
      ch //= 2
      h = UpConv(ch, name=f"up_{i}")(h)
      if self.layer_norm:
        h = nn.LayerNorm(reduction_axes=(-3, -2, -1), name=f"norm_{i}")(h)
      h = nn.relu(h)
    h = nn.ConvTranspose(int(c), (4, 4), strides=(2, 2), padding="SAME",
                         name="out")(h)
    return output_link(self.output, h)


class DCGANDiscriminator(nn.Module):
  """x: f32[b, h, h, c'] (packed: c' = pac * c) -> logits f32[b].

  `levels` stride-2 4x4 convolutions doubling the channels from `width`,
  LeakyReLU(0.2), then (minibatch std) and a dense logit.
  """
  width: int = 64
  spectral_norm: bool = False
  minibatch_std: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, update_stats: bool = False,
               axis_name: str | None = None) -> jax.Array:
    levels, _ = dcgan_levels(int(x.shape[1]))
    h = x
    ch = self.width
    for i in range(levels):
      h = _maybe_sn(nn.Conv(ch, (4, 4), strides=(2, 2), padding="SAME",
                            name=f"down_{i}"), h, self.spectral_norm,
                    update_stats)
      h = nn.leaky_relu(h, 0.2)
      ch *= 2
    if self.minibatch_std:
      h = MinibatchStd()(h, axis_name)
    h = h.reshape(h.shape[0], -1)
    h = _maybe_sn(nn.Dense(1, name="out"), h, self.spectral_norm,
                  update_stats)
    return h[:, 0]
