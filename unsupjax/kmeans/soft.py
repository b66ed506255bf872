"""The k-means objective as a differentiable per-example loss.

Offers `clustering_loss` (hard or soft k-means loss per example, f32[b]),
for neural objectives that pull embeddings towards centres. Does not fit
centroids, and does not offer DEC's Student-t soft assignment (that is
`unsupjax.models.dec.student_t_assignment`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from unsupjax.distances import sq_distances

Array = jax.Array


def clustering_loss(z: Array, centroids: Array, *, assignment: str = "hard",
                    temperature: float = 1.0) -> Array:
  """Per-example k-means loss for neural objectives: f32[b].

  z: f32[b, d] embeddings; centroids: f32[k, d] (trainable or fixed).
  'hard': min_j ||z - c_j||^2 (the k-means objective; gradients flow to z
  and to the chosen centre). 'soft': sum_j softmax(-d/T)_j d_j, a smooth
  relaxation that tends to the hard loss as T -> 0 and spreads gradients
  over all centres.
  """
  if assignment not in ("hard", "soft"):
    raise ValueError(f"assignment: expected 'hard' or 'soft', got {assignment!r}")
  d = sq_distances(jnp.asarray(z), jnp.asarray(centroids))
  if assignment == "hard":
    return jnp.min(d, axis=1)
  p = jax.nn.softmax(-d / temperature, axis=1)
  return jnp.sum(p * d, axis=1)
