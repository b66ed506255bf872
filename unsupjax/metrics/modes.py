"""Mode collapse: mode coverage on Gaussian-mixture toys and Stacked MNIST.

Offers:
  * `RING8`, `GRID25`: the mode centres and σ of the standard 2-D benchmark
    mixtures (PacGAN, VEEGAN, Unrolled GAN), as `ModeSet(centres, sigma)`.
      RING8:  8 Gaussians, means on the unit circle at angles 2πi/8,
              i = 0..7 (i = 0 at (1, 0), counter-clockwise), σ = 0.01.
      GRID25: 25 Gaussians, means at (−4 + 2i, −4 + 2j), i, j = 0..4
              (mode 5i + j), σ = 0.05.
  * `MODE_SETS`: {"ring8": RING8, "grid25": GRID25}.
  * `mode_stats(samples, centres, sigma)`: the PacGAN/VEEGAN protocol.
    A sample is high quality (HQ) if it lies within `threshold`·σ (3σ) of
    its nearest mode centre; a mode is covered if it is the nearest centre
    of at least one HQ sample; reverse KL = KL(p ‖ uniform) where p is the
    histogram of HQ samples over modes (natural log; modes with no HQ
    sample contribute 0). The protocol uses 2,500 samples.
  * `stacked_mnist_stats(digits)`: Stacked MNIST, where a mode is the triple
    of digits classified in the three channels (1,000 modes); modes covered
    and KL(p ‖ uniform over 1,000). The protocol uses 26,000 samples; get
    the digits with `features.predict_digits`.
  * `digit_counts(digits)`: each channel's digit histogram, i32[3, 10].
  * `digit_kl(digits)`: per channel, KL(that channel's digit histogram ‖
    uniform over 10). The Stacked-MNIST KL is exactly their sum plus the
    total correlation of the three channels' digits, so it tells a
    generator that draws some digits too often (in any channel) from one
    that ties the channels together.

All functions are pure jnp (jit-able) once inputs are validated.

Does not offer: drawing samples from the mixtures (the toy-data module
does that, with the same documented geometry).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from unsupjax import toys
from unsupjax.metrics.fid import check_features


class ModeSet(NamedTuple):
  """centres: f32[K, d] mode means; sigma: the mixture components' std."""
  centres: np.ndarray
  sigma: float


# The toy geometry is defined once, in `unsupjax.toys`.
RING8 = ModeSet(toys.RING8_CENTERS, toys.RING8_SIGMA)
GRID25 = ModeSet(toys.GRID25_CENTERS, toys.GRID25_SIGMA)
# Dataset name -> its modes, for code that evaluates a run by dataset name.
MODE_SETS = {"ring8": RING8, "grid25": GRID25}
STACKED_MNIST_MODES = 1000


class ModeStats(NamedTuple):
  """modes_covered: i32 scalar; hq_fraction: f32 in [0, 1] (1 for Stacked
  MNIST, where every sample is assigned a mode); reverse_kl: f32 (nats, inf
  when no sample is high quality); counts: i32[K] HQ samples per mode."""
  modes_covered: jax.Array
  hq_fraction: jax.Array
  reverse_kl: jax.Array
  counts: jax.Array

  def summary(self) -> dict[str, float | int]:
    """The scalars as plain Python numbers, under the names a run's
    `summary.json` and `metrics.jsonl` use."""
    return {"modes_covered": int(self.modes_covered),
            "hq_fraction": float(self.hq_fraction),
            "reverse_kl": float(self.reverse_kl)}


def _kl_to_uniform(counts: jax.Array) -> jax.Array:
  """KL(counts / sum ‖ uniform over len(counts)); inf when the sum is 0."""
  total = jnp.sum(counts)
  p = counts / jnp.maximum(total, 1)
  kl = jnp.sum(jax.scipy.special.xlogy(p, p * counts.shape[0]))
  return jnp.where(total > 0, kl, jnp.inf)


@functools.partial(jax.jit, static_argnums=2)
def _from_assignments(mode: jax.Array, ok: jax.Array, num_modes: int
                      ) -> ModeStats:
  counts = jnp.zeros(num_modes, jnp.int32).at[mode].add(ok.astype(jnp.int32))
  return ModeStats(
      modes_covered=jnp.sum(counts > 0).astype(jnp.int32),
      hq_fraction=jnp.mean(ok.astype(jnp.float32)),
      reverse_kl=_kl_to_uniform(counts.astype(jnp.float32)),
      counts=counts)


def mode_stats(samples: jax.Array, centres: jax.Array, sigma: float, *,
               threshold: float = 3.0) -> ModeStats:
  """Mode coverage of samples from a Gaussian mixture with equal weights.

  Args:
    samples: f[n, d] generated samples, in the centres' coordinates.
    centres: f[K, d] mode means (e.g. `RING8.centres`).
    sigma: the components' standard deviation (e.g. `RING8.sigma`).
    threshold: HQ radius in units of sigma (3 in the protocol).

  Returns:
    `ModeStats`. Usage: `mode_stats(samples, *RING8)`.
  """
  _, d = check_features(samples, "samples")
  shape = tuple(np.shape(centres))
  if len(shape) != 2 or shape[1] != d or shape[0] < 1:
    raise ValueError(
        f"centres: expected f[K, {d}] (the samples' dimension), got {shape}")
  for name, value in (("sigma", sigma), ("threshold", threshold)):
    try:
      ok = math.isfinite(float(value)) and float(value) > 0
    except (TypeError, ValueError):
      ok = False
    if not ok:
      raise ValueError(
          f"{name}: expected a positive finite number, got {value!r}")
  return _mode_stats(jnp.asarray(samples, jnp.float32), jnp.asarray(centres, jnp.float32),
                     jnp.float32((float(threshold) * float(sigma)) ** 2))


@jax.jit
def _mode_stats(x: jax.Array, c: jax.Array, radius2: jax.Array) -> ModeStats:
  # K is small (8, 25): an [n, K] distance matrix is the direct form.
  d2 = jnp.sum((x[:, None, :] - c[None, :, :]) ** 2, axis=-1)
  hq = jnp.min(d2, axis=1) <= radius2
  return _from_assignments(jnp.argmin(d2, axis=1), hq, c.shape[0])


def stacked_mnist_stats(digits: jax.Array) -> ModeStats:
  """Stacked MNIST modes from classified digits.

  Args:
    digits: i32[n, 3], the digit (0..9) classified in each channel, e.g.
      `features.predict_digits(images)` for images f32[n, 28, 28, 3].

  Returns:
    `ModeStats` over 1,000 modes (mode = 100·d0 + 10·d1 + d2); every sample
    counts (hq_fraction = 1); reverse_kl = KL(mode histogram ‖ uniform).
  """
  dig = _check_digits(digits)
  mode = dig[:, 0] * 100 + dig[:, 1] * 10 + dig[:, 2]
  return _from_assignments(mode, jnp.ones(dig.shape[0], bool),
                           STACKED_MNIST_MODES)


def digit_counts(digits: jax.Array) -> jax.Array:
  """i32[3, 10]: how many of `digits` (i32[n, 3], as for
  `stacked_mnist_stats`) show each digit 0..9 in each channel; which digits a
  generator over- or under-draws."""
  dig = _check_digits(digits)
  every = jnp.ones(dig.shape[0], bool)
  return jnp.stack([_from_assignments(dig[:, c], every, 10).counts
                    for c in range(3)])


def digit_kl(digits: jax.Array) -> jax.Array:
  """f32[3]: KL(histogram of channel c's digits ‖ uniform over 0..9) for
  each channel c of `digits` (i32[n, 3], as for `stacked_mnist_stats`).

  `stacked_mnist_stats(digits).reverse_kl` = sum(digit_kl(digits)) + the
  total correlation of the channels (KL of the joint histogram to the
  product of the three channel histograms), an identity of the empirical
  histograms.
  """
  return jax.vmap(_kl_to_uniform)(digit_counts(digits).astype(jnp.float32))


def _check_digits(digits: jax.Array) -> jax.Array:
  shape = tuple(np.shape(digits))
  if len(shape) != 2 or shape[1] != 3 or shape[0] < 1:
    raise ValueError(f"digits: expected i32[n, 3] with n >= 1, got {shape}")
  dig = jnp.asarray(digits)
  if not jnp.issubdtype(dig.dtype, jnp.integer):
    raise ValueError(f"digits: expected integer digits, got dtype {dig.dtype}")
  if not isinstance(digits, jax.core.Tracer):
    arr = np.asarray(digits)
    if arr.min() < 0 or arr.max() > 9:
      raise ValueError(
          f"digits: expected values in 0..9, got range [{arr.min()}, "
          f"{arr.max()}]")
  return dig
