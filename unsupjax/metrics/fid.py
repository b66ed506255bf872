"""Fréchet distance (FID) and kernel distance (KID) between feature sets.

Offers:
  * `gaussian_stats(features)`: mean and covariance of f[n, d] features.
  * `frechet_distance(mu1, sigma1, mu2, sigma2)`: the Fréchet (2-Wasserstein)
    distance between two Gaussians, with a stable matrix square root.
  * `fid(features1, features2)`: both of the above.
  * `mmd2_unbiased(x, y)`: unbiased MMD² with the cubic polynomial kernel
    k(a, b) = (a·b / d + 1)³ (Bińkowski et al., 2018).
  * `kid(features1, features2, key)`: KID, the mean and std of
    `mmd2_unbiased` over random subsets drawn from `key`.

Definitions:
  FID = ‖μ1 − μ2‖² + tr Σ1 + tr Σ2 − 2 tr (Σ1^½ Σ2 Σ1^½)^½.
  tr (Σ1 Σ2)^½ equals tr (Σ1^½ Σ2 Σ1^½)^½ because Σ1 Σ2 is similar to the
  symmetric PSD matrix Σ1^½ Σ2 Σ1^½; computing the latter with two symmetric
  eigendecompositions (negative round-off eigenvalues clipped to 0) is
  stable for singular and rank-deficient covariances, where the usual
  `scipy.linalg.sqrtm(Σ1 @ Σ2)` needs an ε-regularisation hack.
  Covariances are unbiased (divided by n − 1), as in the reference FID code.

Precision: the d x d algebra runs in float64. With `jax_enable_x64` on, it
runs on device; otherwise on host in NumPy (directly when the inputs are
concrete arrays, through `jax.pure_callback` under `jit`). A d x d problem
(d = 64 for unsupjax's MNIST features) costs microseconds there.
`precision="float32"` keeps everything on device in float32 (for use inside
a compiled loop); its error is measured by benchmarks/fid_floor.py and
written down in docs/guide/metrics.md. The feature statistics themselves are
computed on device in the features' dtype (float32 unless x64 is on),
centred first (two-pass) to avoid cancellation.

Does not offer: feature extraction (see `features.py`). FIDs are comparable
only when computed with the same feature network and the same sample sizes
(FID is biased upward for small n).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

_HIGHEST = jax.lax.Precision.HIGHEST


def _is_concrete(*xs) -> bool:
  return not any(isinstance(x, jax.core.Tracer) for x in xs)


def check_features(x, name: str, *, min_rows: int = 1) -> tuple[int, int]:
  """Validates a feature matrix f[n, d]; returns (n, d).

  Shape checks always run; the NaN/Inf check runs when `x` is concrete
  (not a tracer under `jit`).
  """
  shape = tuple(np.shape(x))
  if len(shape) != 2:
    raise ValueError(f"{name}: expected features f32[n, d], got shape {shape}")
  n, d = shape
  if d < 1:
    raise ValueError(f"{name}: expected at least one feature dimension, got {d}")
  if n < min_rows:
    raise ValueError(
        f"{name}: expected at least {min_rows} samples, got {n}")
  if _is_concrete(x) and not np.all(np.isfinite(np.asarray(x))):
    raise ValueError(f"{name}: expected finite features, found NaN/Inf")
  return n, d


def _check_same_dim(d1: int, d2: int, name1: str, name2: str) -> None:
  if d1 != d2:
    raise ValueError(
        f"{name2}: expected the same feature dimension as {name1} ({d1}), "
        f"got {d2}")


def gaussian_stats(features: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Mean f[d] and unbiased covariance f[d, d] of features f[n, d], n >= 2.

  Computed on device in the features' floating dtype (float64 when x64 is
  on and the input is float64), centred before the product.
  """
  n, _ = check_features(features, "features", min_rows=2)
  x = jnp.asarray(features)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    x = x.astype(jnp.float32)
  mu = jnp.mean(x, axis=0)
  xc = x - mu
  sigma = jnp.matmul(xc.T, xc, precision=_HIGHEST) / (n - 1)
  return mu, sigma


def _fd(mu1, sigma1, mu2, sigma2, xp, eigh, eigvalsh):
  """The Fréchet distance with array namespace `xp` (numpy or jax.numpy)."""
  s1 = 0.5 * (sigma1 + sigma1.T)
  s2 = 0.5 * (sigma2 + sigma2.T)
  w, v = eigh(s1)
  root1 = (v * xp.sqrt(xp.clip(w, 0.0, None))) @ v.T
  m = root1 @ s2 @ root1
  m = 0.5 * (m + m.T)
  tr_sqrt = xp.sum(xp.sqrt(xp.clip(eigvalsh(m), 0.0, None)))
  diff = mu1 - mu2
  return diff @ diff + xp.trace(s1) + xp.trace(s2) - 2.0 * tr_sqrt


def _fd_numpy(mu1, sigma1, mu2, sigma2) -> np.ndarray:
  args = [np.asarray(a, np.float64) for a in (mu1, sigma1, mu2, sigma2)]
  return np.asarray(_fd(*args, np, np.linalg.eigh, np.linalg.eigvalsh))


def _fd_jax(mu1, sigma1, mu2, sigma2, dtype) -> jax.Array:
  args = [jnp.asarray(a, dtype) for a in (mu1, sigma1, mu2, sigma2)]
  with jax.default_matmul_precision("highest"):
    return _fd(*args, jnp, jnp.linalg.eigh, jnp.linalg.eigvalsh)


def frechet_distance(mu1: jax.Array, sigma1: jax.Array, mu2: jax.Array,
                     sigma2: jax.Array, *, precision: str = "float64"
                     ) -> jax.Array:
  """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2).

  Args:
    mu1, mu2: f[d] means.
    sigma1, sigma2: f[d, d] symmetric PSD covariances (singular is fine).
    precision: "float64" (default): the algebra in float64, on device when
      `jax_enable_x64` is on, else on host in NumPy. "float32": on device in
      float32.

  Returns:
    A scalar: float64 with x64 on, else float32. Not clipped at 0: equal
    inputs can give a round-off-sized negative number.
  """
  shapes = [tuple(np.shape(a)) for a in (mu1, sigma1, mu2, sigma2)]
  if len(shapes[0]) != 1:
    raise ValueError(f"mu1: expected f[d], got shape {shapes[0]}")
  d = shapes[0][0]
  for name, shape, want in (("sigma1", shapes[1], (d, d)),
                            ("mu2", shapes[2], (d,)),
                            ("sigma2", shapes[3], (d, d))):
    if shape != want:
      raise ValueError(
          f"{name}: expected shape {want} to match mu1 (d = {d}), got {shape}")
  if precision not in ("float64", "float32"):
    raise ValueError(
        f"precision: expected 'float64' or 'float32', got {precision!r}")
  args = (mu1, sigma1, mu2, sigma2)
  if _is_concrete(*args):
    for name, a in zip(("mu1", "sigma1", "mu2", "sigma2"), args):
      if not np.all(np.isfinite(np.asarray(a))):
        raise ValueError(f"{name}: expected finite values, found NaN/Inf")
  if precision == "float32":
    return _fd_jax(*args, jnp.float32)
  if jax.config.jax_enable_x64:
    return _fd_jax(*args, jnp.float64)
  if _is_concrete(*args):
    return jnp.asarray(_fd_numpy(*args), jnp.float32)
  out = jax.ShapeDtypeStruct((), jnp.float32)
  return jax.pure_callback(
      lambda *a: _fd_numpy(*a).astype(np.float32), out, *args,
      vmap_method="sequential")


def fid(features1: jax.Array, features2: jax.Array, *,
        precision: str = "float64") -> jax.Array:
  """FID between feature sets f[n1, d] and f[n2, d] (n1, n2 >= 2).

  See the module docstring for the definition and precision.
  """
  _, d1 = check_features(features1, "features1", min_rows=2)
  _, d2 = check_features(features2, "features2", min_rows=2)
  _check_same_dim(d1, d2, "features1", "features2")
  mu1, sigma1 = gaussian_stats(features1)
  mu2, sigma2 = gaussian_stats(features2)
  return frechet_distance(mu1, sigma1, mu2, sigma2, precision=precision)


def _poly_kernel(a: jax.Array, b: jax.Array) -> jax.Array:
  d = a.shape[-1]
  return (jnp.matmul(a, b.T, precision=_HIGHEST) / d + 1.0) ** 3


def mmd2_unbiased(x: jax.Array, y: jax.Array) -> jax.Array:
  """Unbiased MMD² between x: f[m, d] and y: f[m', d] (m, m' >= 2).

  With k(a, b) = (a·b / d + 1)³:
    MMD²_u = Σ_{i≠j} k(x_i, x_j) / (m(m−1)) + Σ_{i≠j} k(y_i, y_j) / (m'(m'−1))
             − 2 Σ_{i,j} k(x_i, y_j) / (m m').
  Its expectation is the population MMD², so it is ≈ 0 (and can be
  negative) for two samples of one distribution.
  """
  m, dx = check_features(x, "x", min_rows=2)
  m2, dy = check_features(y, "y", min_rows=2)
  _check_same_dim(dx, dy, "x", "y")
  return _mmd2(jnp.asarray(x), jnp.asarray(y))


def _mmd2(x: jax.Array, y: jax.Array) -> jax.Array:
  m, m2 = x.shape[0], y.shape[0]
  kxx = _poly_kernel(x, x)
  kyy = _poly_kernel(y, y)
  kxy = _poly_kernel(x, y)
  # Row sums first: m partial sums of m terms each, then a sum of m.
  sxx = jnp.sum(jnp.sum(kxx, axis=1) - jnp.diagonal(kxx))
  syy = jnp.sum(jnp.sum(kyy, axis=1) - jnp.diagonal(kyy))
  sxy = jnp.sum(jnp.sum(kxy, axis=1))
  return sxx / (m * (m - 1)) + syy / (m2 * (m2 - 1)) - 2.0 * sxy / (m * m2)


def kid_subset_indices(key: jax.Array, n1: int, n2: int, num_subsets: int,
                       subset_size: int) -> tuple[jax.Array, jax.Array]:
  """The subsets `kid` uses: (i32[s, m] into set 1, i32[s, m] into set 2).

  Each subset is drawn without replacement, independently of the others
  (keys `fold_in(key, i)` split in two), as in the reference KID code.
  """
  def one(i):
    k1, k2 = jax.random.split(jax.random.fold_in(key, i))
    return (jax.random.permutation(k1, n1)[:subset_size],
            jax.random.permutation(k2, n2)[:subset_size])
  return jax.vmap(one)(jnp.arange(num_subsets))


def kid(features1: jax.Array, features2: jax.Array, key: jax.Array, *,
        num_subsets: int = 100, subset_size: int = 1000
        ) -> tuple[jax.Array, jax.Array]:
  """Kernel Inception Distance: (mean, std) of `mmd2_unbiased` over subsets.

  Args:
    features1: f[n1, d]; features2: f[n2, d].
    key: PRNG key the subsets are drawn from (`kid_subset_indices`).
    num_subsets: number of subsets (>= 1).
    subset_size: samples per subset from each set; 2 <= subset_size <=
      min(n1, n2).

  Returns:
    (mean, std) over subsets; std is the population std (ddof = 0), as in
    the reference code. Subsets run one after another on device
    (`lax.map`), so memory is O(subset_size²), not O(n²).
  """
  n1, d1 = check_features(features1, "features1", min_rows=2)
  n2, d2 = check_features(features2, "features2", min_rows=2)
  _check_same_dim(d1, d2, "features1", "features2")
  if num_subsets < 1:
    raise ValueError(f"num_subsets: expected >= 1, got {num_subsets}")
  if not 2 <= subset_size <= min(n1, n2):
    raise ValueError(
        f"subset_size: expected 2 <= subset_size <= min(n1, n2) = "
        f"{min(n1, n2)}, got {subset_size}")
  return _kid(jnp.asarray(features1), jnp.asarray(features2), key, int(num_subsets),
              int(subset_size))


@functools.partial(jax.jit, static_argnums=(3, 4))
def _kid(x: jax.Array, y: jax.Array, key: jax.Array, num_subsets: int,
         subset_size: int) -> tuple[jax.Array, jax.Array]:
  idx1, idx2 = kid_subset_indices(key, x.shape[0], y.shape[0], num_subsets, subset_size)
  values = jax.lax.map(lambda ij: _mmd2(x[ij[0]], y[ij[1]]), (idx1, idx2))
  return jnp.mean(values), jnp.std(values)
