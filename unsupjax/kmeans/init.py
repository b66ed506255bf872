"""Initial centres for k-means: greedy k-means++, k-means|| and random rows.

Offers `kmeans_plusplus` (scikit-learn's greedy variant), `kmeans_parallel`
(Bahmani et al. 2012, a few passes over x instead of k sequential ones) and
`random_init`, each taking an explicit key and returning (centroids f32[k, d],
row indices i32[k]); plus the traced cores `fit` draws its restarts with.
Does not run Lloyd's algorithm.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from unsupjax.kmeans import checks
from unsupjax.kmeans.lloyd import Blocks, assign_blocks, to_blocks
from unsupjax.kmeans.plan import choose_plan, default_block_size

Array = jax.Array

# k-means|| (Bahmani et al. 2012): sampling rounds and the expected number
# of candidates drawn per round, as a multiple of k (the paper's l = 2k and
# r = 5 rounds, also Spark MLlib's defaults).
KMEANS_PARALLEL_ROUNDS = 5
KMEANS_PARALLEL_OVERSAMPLING = 2.0


def sq_dist_to(x: Array, xsq: Array, idx: Array, precision) -> Array:
  """Squared distances f32[m, n] from rows x[idx] (m of them) to all rows."""
  xf = x.astype(jnp.float32)
  dots = jnp.dot(xf[idx], xf.T, precision=precision)
  return jnp.maximum(xsq[idx][:, None] + xsq[None, :] - 2.0 * dots, 0.0)


def weighted_draw(key: Array, weights: Array, shape, n_valid: int) -> Array:
  """Indices drawn with probability proportional to `weights` (inverse CDF,
  as scikit-learn's searchsorted on the cumulative sum)."""
  cdf = jnp.cumsum(weights)
  r = jax.random.uniform(key, shape, weights.dtype) * cdf[-1]
  return jnp.clip(jnp.searchsorted(cdf, r), 0, n_valid - 1).astype(jnp.int32)


def plusplus_core(key, x, xsq, w, k, n_valid, n_local_trials, precision):
  """Greedy k-means++ on x [n, d] (centred): (centres f32[k, d], rows i32[k])."""
  n_local_trials = (2 + int(math.log(k)) if n_local_trials is None
                    else n_local_trials)
  key0, key = jax.random.split(key)
  first = weighted_draw(key0, w, (), n_valid)
  closest = sq_dist_to(x, xsq, first[None], precision)[0]
  centers = jnp.zeros((k, x.shape[1]), jnp.float32).at[0].set(x[first])
  idx = jnp.zeros((k,), jnp.int32).at[0].set(first)

  def step(c, carry):
    centers, idx, closest = carry
    cand = weighted_draw(jax.random.fold_in(key, c), w * closest,
                         (n_local_trials,), n_valid)
    dist = jnp.minimum(closest[None, :],
                       sq_dist_to(x, xsq, cand, precision))  # (L, n)
    best = jnp.argmin(dist @ w)
    return (centers.at[c].set(x[cand[best]]), idx.at[c].set(cand[best]),
            dist[best])

  centers, idx, _ = lax.fori_loop(1, k, step, (centers, idx, closest))
  return centers, idx


def kmeans_plusplus(key: Array, x: Array, k: int, *,
                    sample_weight: Array | None = None,
                    n_local_trials: int | None = None) -> tuple[Array, Array]:
  """Greedy k-means++ (Arthur & Vassilvitskii 2007, scikit-learn's variant).

  Each new centre is the best (lowest resulting potential) of
  `2 + floor(log k)` candidates drawn with probability proportional to
  sample_weight * D(x)^2.

  x: f32[n, d]; returns (centroids f32[k, d], row indices i32[k]).
  """
  checks.check_x(x)
  n = x.shape[0]
  checks.check_k(k, n)
  checks.check_weight(sample_weight, n)
  return _kmeans_plusplus_jit(key, jnp.asarray(x, jnp.float32),
                              checks.as_weights(sample_weight, n), k,
                              n_local_trials)


@functools.partial(jax.jit, static_argnames=("k", "n_local_trials"))
def _kmeans_plusplus_jit(key, x, w, k, n_local_trials):
  xc = x - jnp.mean(x, axis=0)
  xsq = jnp.sum(xc * xc, axis=1)
  _, idx = plusplus_core(key, xc, xsq, w, k, x.shape[0], n_local_trials,
                         lax.Precision.HIGHEST)
  return x[idx], idx


def parallel_core(key, blocks: Blocks, k, n_valid, n_local_trials, precision,
                  rounds, oversampling):
  """k-means|| on blocked data with fixed shapes: (centres f32[k, d], rows i32[k]).

  Each round keeps every row independently with probability
  min(1, l * w * D^2 / phi) (l = oversampling * k), at most `cap` of them
  (a random subset when more are drawn, which is rare: cap is l plus four
  standard deviations); unused slots repeat the first centre, which leaves
  every distance and (argmin taking the first of equals) every count as it
  is. The candidates are weighted by the weight of the rows nearest to them
  and reduced to k by greedy weighted k-means++.
  """
  nb, bsz, d = blocks.x.shape
  flat_x = blocks.x.reshape(-1, d).astype(jnp.float32)
  flat_w = blocks.w.reshape(-1)
  ell = oversampling * k
  cap = min(int(math.ceil(ell + 4.0 * math.sqrt(ell) + 8.0)), nb * bsz)
  key0, key_rounds, key_pp = jax.random.split(key, 3)
  first = weighted_draw(key0, flat_w, (), n_valid)
  cand = jnp.full((1 + rounds * cap,), first, jnp.int32)
  plan = lambda m: choose_plan(nb * bsz, d, m, block_size=bsz)

  def nearest(idx):
    return assign_blocks(blocks, flat_x[idx], plan(idx.shape[0]),
                         with_sums=False, precision=precision)[1].reshape(-1)

  def one_round(r, carry):
    cand, closest = carry
    score = flat_w * closest
    phi = jnp.sum(score)
    p = jnp.minimum(1.0, ell * score / jnp.where(phi > 0, phi, 1.0))
    k_keep, k_order = jax.random.split(jax.random.fold_in(key_rounds, r))
    kept = jax.random.uniform(k_keep, p.shape) < p
    priority = jnp.where(kept, jax.random.uniform(k_order, p.shape), -1.0)
    top, idx = lax.top_k(priority, cap)
    idx = jnp.where(top >= 0, idx, first).astype(jnp.int32)
    cand = lax.dynamic_update_slice(cand, idx, (1 + r * cap,))
    return cand, jnp.minimum(closest, nearest(idx))

  cand, _ = lax.fori_loop(0, rounds, one_round, (cand, nearest(first[None])))
  centers = flat_x[cand]
  _, _, _, weight = assign_blocks(blocks, centers, plan(cand.shape[0]),
                                  with_sums=True, precision=precision)
  csq = jnp.sum(centers * centers, axis=1)
  _, pick = plusplus_core(key_pp, centers, csq, weight, k, cand.shape[0],
                          n_local_trials, precision)
  return centers[pick], cand[pick]


def kmeans_parallel(key: Array, x: Array, k: int, *,
                    sample_weight: Array | None = None,
                    rounds: int = KMEANS_PARALLEL_ROUNDS,
                    oversampling: float = KMEANS_PARALLEL_OVERSAMPLING,
                    n_local_trials: int | None = None,
                    block_size: int | None = None) -> tuple[Array, Array]:
  """k-means|| (Bahmani et al. 2012, "Scalable k-means++").

  `rounds` passes over x each draw about `oversampling * k` candidates with
  probability proportional to sample_weight * D(x)^2; the candidates,
  weighted by how much data lies nearest to each, are reduced to k centres
  by greedy weighted k-means++. Its potential is within a constant factor of
  the optimum in expectation, like k-means++, from `rounds` passes instead
  of k.

  x: f32[n, d]; returns (centroids f32[k, d], row indices i32[k]).
  """
  checks.check_x(x)
  n, d = x.shape
  checks.check_k(k, n)
  checks.check_weight(sample_weight, n)
  if (not isinstance(rounds, (int, np.integer)) or isinstance(rounds, bool)
      or rounds < 1):
    raise ValueError(f"rounds: expected an int >= 1, got {rounds!r}")
  if not (isinstance(oversampling, (int, float)) and oversampling > 0):
    raise ValueError(f"oversampling: expected a number > 0, got {oversampling!r}")
  checks.check_block_size(block_size)
  block_size = block_size or default_block_size(n, d, k)
  return _kmeans_parallel_jit(key, jnp.asarray(x, jnp.float32),
                              checks.as_weights(sample_weight, n), k=k,
                              n_local_trials=n_local_trials, rounds=int(rounds),
                              oversampling=float(oversampling),
                              block_size=int(block_size))


@functools.partial(jax.jit, static_argnames=("k", "n_local_trials", "rounds",
                                             "oversampling", "block_size"))
def _kmeans_parallel_jit(key, x, w, *, k, n_local_trials, rounds, oversampling,
                         block_size):
  blocks = to_blocks(x - jnp.mean(x, axis=0), w, block_size)
  _, idx = parallel_core(key, blocks, k, x.shape[0], n_local_trials,
                         lax.Precision.HIGHEST, rounds, oversampling)
  return x[idx], idx


def random_idx(key: Array, w: Array, k: int) -> Array:
  """k distinct row indices i32[k] drawn with probability ∝ w."""
  return jax.random.choice(key, w.shape[0], (k,), replace=False,
                           p=w / jnp.sum(w)).astype(jnp.int32)


def random_init(key: Array, x: Array, k: int, *,
                sample_weight: Array | None = None) -> tuple[Array, Array]:
  """k distinct rows drawn with probability proportional to sample_weight.

  x: f32[n, d]; returns (centroids f32[k, d], row indices i32[k]).
  """
  checks.check_x(x)
  checks.check_k(k, x.shape[0])
  checks.check_weight(sample_weight, x.shape[0])
  idx = random_idx(key, checks.as_weights(sample_weight, x.shape[0]), k)
  return jnp.asarray(x, jnp.float32)[idx], idx
