"""Squared Euclidean distances between two sets of rows, the one place.

`sq_distances(a, b)` expands ||a||^2 - 2 a.b + ||b||^2 as one matmul and
clips the float32 cancellation error at 0; it never builds an (n, m, d)
tensor. k-means and the PRDC metrics call it on blocks of rows.

Does not offer: other metrics (cosine k-means normalises rows first).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def sq_distances(a: jax.Array, b: jax.Array, *, precision=None) -> jax.Array:
  """a: f32[n, d], b: f32[m, d] -> f32[n, m] of ||a_i - b_j||^2, >= 0."""
  sq = (jnp.sum(a * a, axis=1)[:, None] + jnp.sum(b * b, axis=1)[None, :]
        - 2.0 * jnp.dot(a, b.T, precision=precision))
  return jnp.maximum(sq, 0.0)
