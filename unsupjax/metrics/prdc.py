"""Precision/recall and density/coverage from k-NN manifolds in feature space.

Offers `prdc(real_features, fake_features, k)` -> `PRDC(precision, recall,
density, coverage)`, computed blockwise on device.

Definitions (real x_1..x_N, fake y_1..y_M; B(z, r) the closed ball; r_k(z)
the distance from z to its k-th nearest neighbour in its own set, itself
not counted):
  precision = (1/M) Σ_j 1[∃ i: y_j ∈ B(x_i, r_k(x_i))]   (Kynkäänniemi 2019)
  recall    = (1/N) Σ_i 1[∃ j: x_i ∈ B(y_j, r_k(y_j))]   (Kynkäänniemi 2019)
  density   = 1/(kM) Σ_j Σ_i 1[y_j ∈ B(x_i, r_k(x_i))]  (Naeem 2020)
  coverage  = (1/N) Σ_i 1[∃ j: y_j ∈ B(x_i, r_k(x_i))]   (Naeem 2020)
Precision asks "are the fakes realistic?" (fakes inside the real manifold);
recall asks "is the real data covered?" (reals inside the fake manifold). A
generator collapsed onto a few real modes has high precision and low recall.
Balls are closed (≤); with continuous features ties have probability zero.

Computation: squared distances ‖a‖² − 2a·b + ‖b‖² (matmul at HIGHEST
precision, both sets first centred on the real mean to limit float32
cancellation, clipped at 0) in blocks of `block_size` x `block_size`; the k
smallest distances are merged block by block with `lax.top_k`, and ball
memberships are counted block by block. Memory is O(block_size² + n k), never
O(N M) or O(N²). Work is O((N + M)² d).

Does not offer: the original papers' subsampling to 10k/50k samples (pass
the samples you want), or realism scores per sample.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from unsupjax.distances import sq_distances
from unsupjax.metrics.fid import check_features

_HIGHEST = jax.lax.Precision.HIGHEST


class PRDC(NamedTuple):
  """Scalars: precision, recall, coverage in [0, 1]; density in [0, N/k]."""
  precision: jax.Array
  recall: jax.Array
  density: jax.Array
  coverage: jax.Array


def _blocks(x: jax.Array, bs: int) -> tuple[jax.Array, jax.Array]:
  """x: f[n, d] -> (f[nb, bs, d] zero-padded, bool[nb, bs] valid)."""
  n = x.shape[0]
  nb = -(-n // bs)
  pad = nb * bs - n
  xb = jnp.pad(x, ((0, pad), (0, 0))).reshape(nb, bs, x.shape[1])
  valid = (jnp.arange(nb * bs) < n).reshape(nb, bs)
  return xb, valid


def _sq_dists(a: jax.Array, b: jax.Array) -> jax.Array:
  return sq_distances(a, b, precision=_HIGHEST)


def _knn_sq(queries: jax.Array, points: jax.Array, k: int, bs: int
            ) -> jax.Array:
  """f[nq, k]: the k smallest squared distances from each query to points.

  Sorted ascending. A query that is also in `points` finds itself (at
  distance ~0) as its first neighbour.
  """
  nq = queries.shape[0]
  qb, _ = _blocks(queries, min(bs, nq))
  pb, pvalid = _blocks(points, min(bs, points.shape[0]))

  def per_query_block(q):
    def merge(best, block):
      p, valid = block
      d = jnp.where(valid[None, :], _sq_dists(q, p), jnp.inf)
      neg, _ = jax.lax.top_k(-jnp.concatenate([best, d], axis=1), k)
      return -neg, None
    init = jnp.full((q.shape[0], k), jnp.inf, q.dtype)
    best, _ = jax.lax.scan(merge, init, (pb, pvalid))
    return best

  out = jax.lax.map(per_query_block, qb)
  return out.reshape(-1, k)[:nq]


def _ball_counts(queries: jax.Array, centres: jax.Array,
                 centre_r2: jax.Array, bs: int) -> jax.Array:
  """i32[nq]: number of centres c whose ball ‖q − c‖² ≤ r2_c holds q."""
  nq = queries.shape[0]
  qb, _ = _blocks(queries, min(bs, nq))
  cb, cvalid = _blocks(centres, min(bs, centres.shape[0]))
  rb = jnp.pad(centre_r2, (0, cb.shape[0] * cb.shape[1] - centres.shape[0]),
               constant_values=-1.0).reshape(cvalid.shape)

  def per_query_block(q):
    def add(count, block):
      c, r2 = block
      inside = _sq_dists(q, c) <= r2[None, :]
      return count + jnp.sum(inside, axis=1, dtype=jnp.int32), None
    count, _ = jax.lax.scan(add, jnp.zeros(q.shape[0], jnp.int32), (cb, rb))
    return count

  return jax.lax.map(per_query_block, qb).reshape(-1)[:nq]


@functools.partial(jax.jit, static_argnames=("k", "block_size"))
def _prdc(real, fake, k: int, block_size: int) -> PRDC:
  real = real.astype(jnp.promote_types(real.dtype, jnp.float32))
  fake = fake.astype(real.dtype)
  centre = jnp.mean(real, axis=0)
  real, fake = real - centre, fake - centre
  # Column k of the k + 1 nearest (self included) = k-th neighbour, self not.
  real_r2 = _knn_sq(real, real, k + 1, block_size)[:, k]
  fake_r2 = _knn_sq(fake, fake, k + 1, block_size)[:, k]
  fake_in_real = _ball_counts(fake, real, real_r2, block_size)
  real_in_fake = _ball_counts(real, fake, fake_r2, block_size)
  nearest_fake = _knn_sq(real, fake, 1, block_size)[:, 0]
  return PRDC(
      precision=jnp.mean(fake_in_real > 0),
      recall=jnp.mean(real_in_fake > 0),
      density=jnp.sum(fake_in_real) / (k * fake.shape[0]),
      coverage=jnp.mean(nearest_fake <= real_r2))


def prdc(real_features: jax.Array, fake_features: jax.Array, k: int = 5, *,
         block_size: int = 1024) -> PRDC:
  """Precision, recall, density and coverage of fakes against reals.

  Args:
    real_features: f[N, d], N > k.
    fake_features: f[M, d], M > k.
    k: the neighbour whose distance is a sample's ball radius (5 in both
      papers).
    block_size: rows and columns per distance block; memory per block is
      block_size² floats.

  Returns:
    `PRDC` of scalars (see the module docstring for the definitions).
  """
  if not isinstance(k, int) or k < 1:
    raise ValueError(f"k: expected an integer >= 1, got {k!r}")
  if not isinstance(block_size, int) or block_size < 1:
    raise ValueError(f"block_size: expected an integer >= 1, got {block_size!r}")
  n, d1 = check_features(real_features, "real_features")
  m, d2 = check_features(fake_features, "fake_features")
  if d1 != d2:
    raise ValueError(
        f"fake_features: expected the same feature dimension as "
        f"real_features ({d1}), got {d2}")
  for name, rows in (("real_features", n), ("fake_features", m)):
    if rows <= k:
      raise ValueError(
          f"{name}: expected more than k = {k} samples (a k-NN radius needs "
          f"k neighbours besides the sample itself), got {rows}")
  return _prdc(jnp.asarray(real_features), jnp.asarray(fake_features),
               k, block_size)
