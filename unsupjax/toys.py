"""2-D toy mixtures for measuring mode collapse, drawn from a PRNG key.

Offers the two standard mode-collapse benchmarks of the GAN literature
(Metz et al. 2017 "Unrolled GANs", Srivastava et al. 2017 "VEEGAN", Lin et
al. 2018 "PacGAN"), with the same geometry so numbers compare with their
tables:

  * `ring8(key, n)`: 8 isotropic Gaussians, means on the unit circle at
    angles 2*pi*i/8 (i = 0..7), standard deviation `RING8_SIGMA` = 0.01.
  * `grid25(key, n)`: 25 isotropic Gaussians, means at (-4 + 2i, -4 + 2j)
    (i, j = 0..4), standard deviation `GRID25_SIGMA` = 0.05.

Both pick the component of each sample uniformly at random. The centres are
module constants (`RING8_CENTERS`, `GRID25_CENTERS`, f32[k, 2]) so metrics
(`unsupjax.metrics.modes`) and plots use exactly the same coordinates.
`TOYS` maps a name to (sampler, centres, sigma).

Does not offer: other toy shapes (swiss roll, spirals), or any scaling: the
samples are in the published coordinates, and a GAN trained on them uses a
linear generator output.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

RING8_SIGMA = 0.01
GRID25_SIGMA = 0.05

_angles = 2.0 * np.pi * np.arange(8) / 8.0
RING8_CENTERS = np.stack([np.cos(_angles), np.sin(_angles)], axis=1).astype(np.float32)
_ticks = -4.0 + 2.0 * np.arange(5)
# Row-major over (i, j): centre index 5*i + j is (-4 + 2i, -4 + 2j).
GRID25_CENTERS = np.stack(np.meshgrid(_ticks, _ticks, indexing="ij"),
                          axis=-1).reshape(25, 2).astype(np.float32)
del _angles, _ticks


def _mixture(key: jax.Array, n: int, centers: np.ndarray,
             sigma: float) -> jax.Array:
  if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 0:
    raise ValueError(f"n: expected a non-negative int, got {n!r}")
  k_comp, k_noise = jax.random.split(key)
  comp = jax.random.randint(k_comp, (int(n),), 0, centers.shape[0])
  noise = jax.random.normal(k_noise, (int(n), 2), jnp.float32)
  return jnp.asarray(centers)[comp] + jnp.float32(sigma) * noise


def ring8(key: jax.Array, n: int) -> jax.Array:
  """n samples of the 8-Gaussian ring: f32[n, 2]."""
  return _mixture(key, n, RING8_CENTERS, RING8_SIGMA)


def grid25(key: jax.Array, n: int) -> jax.Array:
  """n samples of the 25-Gaussian grid: f32[n, 2]."""
  return _mixture(key, n, GRID25_CENTERS, GRID25_SIGMA)


class Toy(NamedTuple):
  sample: Callable[[jax.Array, int], jax.Array]
  centers: np.ndarray  # f32[k, 2]
  sigma: float


TOYS: dict[str, Toy] = {
    "ring8": Toy(ring8, RING8_CENTERS, RING8_SIGMA),
    "grid25": Toy(grid25, GRID25_CENTERS, GRID25_SIGMA),
}
