"""Using fitted centroids: `predict`, `inertia`, `predict_with_inertia` and
`transform`.

Each validates its inputs eagerly and calls a module-level jitted kernel
(repeated same-shape calls compile once, small inputs padded to one
shape as in `fit`); labels come from the same blocked
pass as `fit` (`lloyd.assign_blocks`, layout from `choose_plan`), the
inertia is the direct blockwise sum of ||x - c||^2. Does not fit.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from unsupjax.kmeans import checks
from unsupjax.kmeans.lloyd import (assign_blocks, direct_inertia,
                                   normalize_rows, to_blocks)
from unsupjax.kmeans.plan import bucket, choose_plan, pad_to

Array = jax.Array


@functools.partial(jax.jit, static_argnames=("metric", "plan"))
def _predict_jit(centroids, x, w, *, metric, plan):
  x = x.astype(jnp.float32)
  c = centroids.astype(jnp.float32)
  if metric == "cosine":
    x, c = normalize_rows(x), normalize_rows(c)
  else:  # distances are shift-invariant; the expansion is accurate near 0
    shift = jnp.mean(c, axis=0)
    x, c = x - shift, c - shift
  blocks = to_blocks(x, w, plan.block)
  labels, _, _, _ = assign_blocks(blocks, c, plan, with_sums=False,
                                  precision=lax.Precision.HIGHEST)
  inertia = direct_inertia(blocks, c, labels)
  if metric == "cosine":
    inertia = 0.5 * inertia
  return labels.reshape(-1)[:x.shape[0]], inertia


def predict(centroids: Array, x: Array, *, metric: str = "euclidean",
            block_size: int | None = None) -> Array:
  """Index of the nearest centroid: centroids f32[k, d], x f32[n, d] -> i32[n]."""
  return predict_with_inertia(centroids, x, metric=metric,
                              block_size=block_size)[0]


def inertia(centroids: Array, x: Array, *, sample_weight: Array | None = None,
            metric: str = "euclidean", block_size: int | None = None) -> Array:
  """sum_i w_i ||x_i - nearest centroid||^2 (cosine: 1 - cos): f32[]."""
  return predict_with_inertia(centroids, x, sample_weight=sample_weight,
                              metric=metric, block_size=block_size)[1]


def predict_with_inertia(centroids: Array, x: Array, *,
                         sample_weight: Array | None = None,
                         metric: str = "euclidean",
                         block_size: int | None = None) -> tuple[Array, Array]:
  """(labels i32[n], inertia f32[]) in one blocked pass over x."""
  checks.check_centroids(centroids, x, metric)
  n, d = x.shape
  checks.check_weight(sample_weight, n)
  checks.check_block_size(block_size)
  rows, cols = bucket(n, d)
  k = centroids.shape[0]
  plan = choose_plan(rows, cols, k, block_size=block_size)
  w = checks.as_weights(sample_weight, n)
  if rows != n:
    w = jnp.pad(w, (0, rows - n))
  labels, inertia = _predict_jit(pad_to(centroids, k, cols),
                                 pad_to(x, rows, cols), w, metric=metric,
                                 plan=plan)
  return (labels if rows == n else labels[:n]), inertia


@functools.partial(jax.jit, static_argnames=("metric",))
def _transform_jit(centroids, x, *, metric):
  x = x.astype(jnp.float32)
  c = centroids.astype(jnp.float32)
  if metric == "cosine":
    return 1.0 - jnp.dot(normalize_rows(x), normalize_rows(c).T,
                         precision=lax.Precision.HIGHEST)
  sq = (jnp.sum(x * x, 1)[:, None] + jnp.sum(c * c, 1)[None, :]
        - 2.0 * jnp.dot(x, c.T, precision=lax.Precision.HIGHEST))
  return jnp.sqrt(jnp.maximum(sq, 0.0))


def transform(centroids: Array, x: Array, *, metric: str = "euclidean") -> Array:
  """Distances to every centroid: f32[n, k] (Euclidean, or 1 - cos)."""
  checks.check_centroids(centroids, x, metric)
  (n, d), k = x.shape, centroids.shape[0]
  rows, cols = bucket(n, d)
  out = _transform_jit(pad_to(centroids, k, cols), pad_to(x, rows, cols),
                       metric=metric)
  return out if rows == n else out[:n]
