"""k-means on accelerator arrays: scikit-learn's answers, vectorized.

Offers:
  * Functional API: `fit(key, x, k, ...) -> KMeansResult`, `predict`,
    `transform`, `inertia`, and the initializers `kmeans_plusplus` and
    `random_init`. `fit` runs Lloyd's algorithm inside one
    `lax.while_loop` with scikit-learn's convergence test (strict label
    convergence, or squared centre shift <= tol * mean per-feature variance),
    relocates empty clusters to the points farthest from their centres (as
    scikit-learn does), and runs `n_init` restarts under `vmap`, keeping the
    lowest inertia.
  * `fit_sharded(...)`: the same algorithm with the rows sharded over the
    devices of a mesh (per-cluster sums and counts reduced with `psum`).
  * Mini-batch k-means (Sculley 2010, per-centre learning rates 1/count) over
    any iterable of batches: `minibatch_init`, `minibatch_step`,
    `minibatch_fit`; data larger than memory never has to be loaded whole.
    `minibatch_fit_arrays` runs the whole loop on device for in-memory data.
  * `metric="cosine"`: spherical k-means (rows and centres L2-normalised,
    inertia = sum of weighted cosine distances).
  * Differentiable clustering losses for neural objectives:
    `clustering_loss` (hard or soft assignment, f32[b]) and
    `student_t_assignment` (DEC's soft assignment q).
  * `KMeans`: a scikit-learn style estimator over the functional API with the
    attributes users expect (`cluster_centers_`, `labels_`, `inertia_`,
    `n_iter_`).

Distances use ||x||^2 - 2 x.c + ||c||^2 over row blocks (`lax.scan`), so one
Lloyd iteration reads x once and holds O(block * k) distances, never an
(n, k, d) tensor; the assignment, the per-cluster sums (`segment_sum`) and the
counts are fused per block. Like scikit-learn, the data is centred before
fitting, which keeps the expansion accurate in float32; the reported inertia
is always the direct sum of ||x - c||^2 (clipping and cancellation free).

`init="k-means||"` (scalable k-means++, Bahmani et al. 2012) draws ~2k
candidates per pass over x for 5 passes, then reduces them to k centres by
weighted k-means++: a handful of passes over the data instead of k
sequential ones, which is what large n and k need on accelerators.

Does not offer: Elkan's algorithm, sparse inputs,
or the random centre reassignment of scikit-learn's MiniBatchKMeans.

`fit`, `predict` and `transform` validate their inputs eagerly (clear
`ValueError`s before any compute, NaN/Inf checks included when x is concrete)
and call module-level jitted kernels, so repeated same-shape calls compile
once; they can also be traced inside a caller's `jit` with `k`, `init` (a
string), `n_init` and `metric` static.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Iterable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = [
    "KMeans", "KMeansResult", "MiniBatchState", "clustering_loss",
    "default_block_size", "epoch_batches", "fit", "fit_sharded", "inertia",
    "kmeans_parallel", "kmeans_plusplus", "minibatch_fit", "minibatch_fit_arrays",
    "minibatch_init", "minibatch_step", "minibatch_train_step", "predict",
    "predict_with_inertia",
    "random_init", "student_t_assignment", "transform",
]

METRICS = ("euclidean", "cosine")
INITS = ("k-means++", "k-means||", "random")

# k-means|| (Bahmani et al. 2012): sampling rounds and the expected number
# of candidates drawn per round, as a multiple of k (the paper's l = 2k and
# r = 5 rounds, also Spark MLlib's defaults).
KMEANS_PARALLEL_ROUNDS = 5
KMEANS_PARALLEL_OVERSAMPLING = 2.0

Array = jax.Array


class KMeansResult(NamedTuple):
  """What `fit` returns.

  centroids: f32[k, d] (unit rows for metric="cosine").
  labels: i32[n], the index of each row's centroid.
  inertia: f32[], sum of sample_weight * ||x - c||^2 (cosine: 1 - cos).
  n_iter: i32[], Lloyd iterations run (scikit-learn's `n_iter_`).
  converged: bool[], whether the tolerance or strict label convergence
    stopped the loop before `max_iter`.
  """
  centroids: Array
  labels: Array
  inertia: Array
  n_iter: Array
  converged: Array


# ----------------------------------------------------------------------------
# Input checks (eager, before any compute).


def _is_concrete(a: Any) -> bool:
  return not isinstance(a, jax.core.Tracer)


def _check_x(x: Any, name: str = "x") -> None:
  ndim = getattr(x, "ndim", None)
  if ndim != 2:
    raise ValueError(
        f"{name}: expected a 2-D array f32[n, d], got shape "
        f"{getattr(x, 'shape', type(x).__name__)}")
  if x.shape[0] < 1 or x.shape[1] < 1:
    raise ValueError(f"{name}: expected at least one row and one column, "
                     f"got shape {tuple(x.shape)}")
  if not jnp.issubdtype(x.dtype, jnp.number) or jnp.issubdtype(
      x.dtype, jnp.complexfloating):
    raise ValueError(f"{name}: expected real numbers, got dtype {x.dtype}")
  if _is_concrete(x) and jnp.issubdtype(x.dtype, jnp.floating):
    # On device for device arrays: no host copy of x.
    finite = (jnp.isfinite(x).all() if isinstance(x, jax.Array)
              else np.isfinite(x).all())
    if not finite:
      a = np.asarray(x)
      rows = np.unique(np.nonzero(~np.isfinite(a))[0])
      raise ValueError(
          f"{name}: expected finite values, found NaN/Inf in {rows.size} rows "
          f"(first: {rows[:5].tolist()})")


def _check_k(k: Any, n: int) -> None:
  if not isinstance(k, (int, np.integer)) or isinstance(k, bool):
    raise ValueError(f"k: expected a Python int, got {k!r}")
  if k < 1:
    raise ValueError(f"k: expected k >= 1, got {k}")
  if k > n:
    raise ValueError(f"k: expected k <= n_samples = {n}, got {k}")


def _check_weight(sample_weight: Any, n: int) -> None:
  if sample_weight is None:
    return
  shape = tuple(getattr(sample_weight, "shape", np.shape(sample_weight)))
  if shape != (n,):
    raise ValueError(
        f"sample_weight: expected shape ({n},) (one weight per row), got "
        f"{shape}")
  if _is_concrete(sample_weight):
    w = np.asarray(sample_weight)
    if not np.isfinite(w).all():
      raise ValueError("sample_weight: expected finite values, found NaN/Inf")
    if (w < 0).any():
      raise ValueError(
          f"sample_weight: expected non-negative weights, got min {w.min()}")
    if not (w > 0).any():
      raise ValueError("sample_weight: expected at least one positive weight")


def _check_common(k, *, init, n_init, max_iter, tol, metric, d, n) -> None:
  _check_k(k, n)
  if isinstance(init, str):
    if init not in INITS:
      raise ValueError(
          f"init: expected one of {INITS} or an array f32[k, d], got {init!r}")
  else:
    shape = tuple(getattr(init, "shape", np.shape(init)))
    if shape != (k, d):
      raise ValueError(
          f"init: expected initial centroids of shape ({k}, {d}), got {shape}")
    if _is_concrete(init) and not np.isfinite(np.asarray(init)).all():
      raise ValueError("init: expected finite initial centroids")
  if not isinstance(n_init, (int, np.integer)) or n_init < 1:
    raise ValueError(f"n_init: expected an int >= 1, got {n_init!r}")
  if _is_concrete(max_iter) and not (
      isinstance(max_iter, (int, np.integer)) and max_iter >= 1):
    raise ValueError(f"max_iter: expected an int >= 1, got {max_iter!r}")
  if _is_concrete(tol) and not float(tol) >= 0:
    raise ValueError(f"tol: expected tol >= 0, got {tol!r}")
  if metric not in METRICS:
    raise ValueError(f"metric: expected one of {METRICS}, got {metric!r}")


def default_block_size(n: int, d: int, k: int, backend: str | None = None) -> int:
  """Rows per distance block, cut so the blocks are equal.

  CPU: ~1024 rows (on MNIST with 2 cores, 500-1000-row blocks ran fastest at
  k = 10 and k = 256; 30000-60000-row blocks ran slower at k = 10); GPU:
  ~128 MiB of distances per block, so few sequential steps.
  """
  backend = backend or jax.default_backend()
  if backend == "cpu":
    b = 1024
  else:
    b = max(4096, (1 << 27) // (4 * max(k, 1)))  # ~128 MiB of distances
  return _even_blocks(n, b)


def _even_blocks(n: int, target: int) -> int:
  """The block size near `target` that cuts n rows into equal blocks (up to
  rounding to 8 rows), so padding wastes little work."""
  nb = -(-n // max(1, min(target, n)))
  b = -(-n // nb)
  return -(-b // 8) * 8 if b > 8 else b


# ----------------------------------------------------------------------------
# Blocked data layout.


class _Blocks(NamedTuple):
  """x laid out as row blocks; padded rows have weight 0 and valid False."""
  x: Array      # f32[nb, B, d]
  xsq: Array    # f32[nb, B]
  w: Array      # f32[nb, B]
  valid: Array  # bool[nb, B]


def _to_blocks(x: Array, w: Array, block_size: int, multiple: int = 1) -> _Blocks:
  n, d = x.shape
  nb = -(-n // block_size)
  nb = -(-nb // multiple) * multiple
  pad = nb * block_size - n
  xp = jnp.pad(x, ((0, pad), (0, 0)))
  wp = jnp.pad(w, (0, pad))
  valid = jnp.arange(nb * block_size) < n
  xsq = jnp.sum(xp * xp, axis=1)
  return _Blocks(xp.reshape(nb, block_size, d), xsq.reshape(nb, block_size),
                 wp.reshape(nb, block_size), valid.reshape(nb, block_size))


def _normalize_rows(x: Array) -> Array:
  norm = jnp.linalg.norm(x, axis=-1, keepdims=True)
  return x / jnp.where(norm > 0, norm, 1.0)


# ----------------------------------------------------------------------------
# The fused block-wise assignment step.


# Up to this many centres, `_assign_blocks` computes distances as (k, B) and
# the per-cluster sums as a one-hot (k, B) @ (B, d) matmul; above, (B, k)
# distances and `segment_sum`, whose scatter costs less than the matmul's
# 2 B k d FLOPs once k is large. On MNIST with 2 CPU cores the one-hot pass
# gave 0.72-0.84x of scikit-learn's speed at k = 10 against 0.59-0.73x, and
# 0.60-0.63x against 0.50-0.56x at k = 16; at k = 32 neither won
# consistently. Under vmap (n_init restarts) the sums become one batched
# matmul: the n_init = 10 fit at k = 10 ran 1.62x against 0.89x
# (docs/kmeans.md; benchmarks/kmeans_vs_sklearn.py --one-hot-max-k 0 forces
# segment_sum).
ONE_HOT_MAX_K = 16


def _assign_blocks(blocks: _Blocks, centers: Array, *, with_sums: bool,
                   precision, weighted: bool = True,
                   one_hot: bool | None = None
                   ) -> tuple[Array, Array, Array | None, Array | None]:
  """One pass over x: labels, squared distances and per-cluster sums.

  Returns labels i32[nb, B], min squared distances f32[nb, B] (expansion,
  clipped at 0), and when `with_sums` the weighted sums f32[k, d] and weights
  f32[k] of the rows assigned to each centre. `weighted=False` promises unit
  weights on real rows (padding rows are zeros, so they add nothing).
  one_hot: sums by a one-hot matmul instead of `segment_sum` (default: when
  k <= ONE_HOT_MAX_K). Both give the same labels (first minimum on ties).
  """
  k, d = centers.shape
  csq = jnp.sum(centers * centers, axis=1)
  if one_hot is None:
    one_hot = k <= ONE_HOT_MAX_K

  def body(carry, blk):
    xb, xsqb, wb = blk
    if one_hot:
      dist = csq[:, None] - 2.0 * jnp.dot(centers, xb.T, precision=precision)
      axis = 0  # dist: (k, B)
    else:
      dist = csq[None, :] - 2.0 * jnp.dot(xb, centers.T, precision=precision)
      axis = 1  # dist: (B, k)
    lab = jnp.argmin(dist, axis=axis).astype(jnp.int32)
    mind = jnp.maximum(jnp.min(dist, axis=axis) + xsqb, 0.0)
    if with_sums:
      sums, counts = carry
      if one_hot:
        member = lab[None, :] == jnp.arange(k, dtype=jnp.int32)[:, None]
        coef = jnp.where(member, wb[None, :], 0.0).astype(xb.dtype)  # (k, B)
        sums = sums + jnp.dot(coef, xb, precision=precision)
        counts = counts + jnp.sum(coef, axis=1)
      else:
        sums = sums + jax.ops.segment_sum(xb * wb[:, None] if weighted else xb,
                                          lab, k)
        counts = counts + jax.ops.segment_sum(wb, lab, k)
      carry = (sums, counts)
    return carry, (lab, mind)

  init = ((jnp.zeros((k, d), centers.dtype), jnp.zeros((k,), centers.dtype))
          if with_sums else ())
  carry, (labels, mind) = lax.scan(body, init, (blocks.x, blocks.xsq, blocks.w))
  if with_sums:
    return labels, mind, carry[0], carry[1]
  return labels, mind, None, None


def _direct_inertia(blocks: _Blocks, centers: Array, labels: Array) -> Array:
  """sum_i w_i ||x_i - c_{l_i}||^2, summed per block then over blocks."""

  def body(total, blk):
    xb, wb, lb = blk
    diff = xb - centers[lb]
    return total + jnp.sum(wb * jnp.sum(diff * diff, axis=1)), None

  total, _ = lax.scan(body, jnp.zeros((), centers.dtype),
                      (blocks.x, blocks.w, labels))
  return total


def _relocate_empty(sums, counts, labels, mind, blocks: _Blocks, axis_name):
  """scikit-learn's empty-cluster rule: each empty cluster takes the next
  farthest row from its centre (rows ranked by distance), which leaves its
  old cluster."""
  k, d = sums.shape
  empty = counts == 0
  x = blocks.x.reshape(-1, d)
  m = min(k, x.shape[0])
  far_d = jnp.where(blocks.valid, mind, -jnp.inf).reshape(-1)
  cand_d, cand_i = lax.top_k(far_d, m)
  cand_x = x[cand_i]
  cand_w = blocks.w.reshape(-1)[cand_i]
  cand_l = labels.reshape(-1)[cand_i]
  if axis_name is not None:  # merge every device's farthest rows
    gather = lambda a: lax.all_gather(a, axis_name, tiled=True)
    cand_d, cand_x, cand_w, cand_l = map(gather, (cand_d, cand_x, cand_w, cand_l))
    _, order = lax.top_k(cand_d, m)
    cand_x, cand_w, cand_l = cand_x[order], cand_w[order], cand_l[order]
  rank = jnp.clip(jnp.cumsum(empty) - 1, 0, m - 1)
  px, pw, pl = cand_x[rank], cand_w[rank], cand_l[rank]
  e = empty.astype(sums.dtype)
  moved = px * (pw * e)[:, None]
  sums = sums - jax.ops.segment_sum(moved, pl, k)
  counts = counts - jax.ops.segment_sum(pw * e, pl, k)
  sums = jnp.where(empty[:, None], moved, sums)
  counts = jnp.where(empty, pw, counts)
  return sums, counts


class _LloydState(NamedTuple):
  i: Array
  centers: Array
  labels: Array
  strict: Array
  done: Array


def _lloyd(blocks: _Blocks, init_centers: Array, tol_abs: Array,
           max_iter: Array, *, spherical: bool, axis_name, precision,
           weighted: bool = True) -> KMeansResult:
  """Lloyd's algorithm from `init_centers` with scikit-learn's stopping rule.

  blocks hold this device's rows; with `axis_name` the sums, counts and the
  convergence tests are reduced over that mesh axis.
  """
  psum = (lambda a: lax.psum(a, axis_name)) if axis_name else (lambda a: a)

  def new_centers(centers, sums, counts):
    c = jnp.where(counts[:, None] > 0,
                  sums / jnp.where(counts > 0, counts, 1.0)[:, None], centers)
    return _normalize_rows(c) if spherical else c

  def body(s: _LloydState) -> _LloydState:
    labels, mind, sums, counts = _assign_blocks(
        blocks, s.centers, with_sums=True, precision=precision,
        weighted=weighted)
    sums, counts = psum(sums), psum(counts)
    sums, counts = lax.cond(
        jnp.any(counts == 0),
        lambda a: _relocate_empty(*a, labels, mind, blocks, axis_name),
        lambda a: a, (sums, counts))
    centers = new_centers(s.centers, sums, counts)
    changed = psum(jnp.sum(labels != s.labels))
    strict = changed == 0
    shift = jnp.sum(jnp.square(centers - s.centers))
    return _LloydState(s.i + 1, centers, labels, strict,
                       strict | (shift <= tol_abs))

  s0 = _LloydState(jnp.zeros((), jnp.int32), init_centers,
                   jnp.full(blocks.xsq.shape, -1, jnp.int32),
                   jnp.zeros((), bool), jnp.zeros((), bool))
  s = lax.while_loop(lambda s: (s.i < max_iter) & ~s.done, body, s0)
  # Without strict convergence, re-run the E-step so labels match centres.
  labels = lax.cond(
      s.strict, lambda: s.labels,
      lambda: _assign_blocks(blocks, s.centers, with_sums=False,
                             precision=precision)[0])
  inertia = psum(_direct_inertia(blocks, s.centers, labels))
  if spherical:
    inertia = 0.5 * inertia  # ||x - c||^2 = 2 (1 - cos) for unit vectors
  return KMeansResult(s.centers, labels, inertia, s.i, s.done)


# ----------------------------------------------------------------------------
# Initialization.


def _sq_dist_to(x: Array, xsq: Array, idx: Array, precision) -> Array:
  """Squared distances f32[m, n] from rows x[idx] (m of them) to all rows."""
  dots = jnp.dot(x[idx], x.T, precision=precision)
  return jnp.maximum(xsq[idx][:, None] + xsq[None, :] - 2.0 * dots, 0.0)


def _weighted_draw(key: Array, weights: Array, shape, n_valid: int) -> Array:
  """Indices drawn with probability proportional to `weights` (inverse CDF,
  as scikit-learn's searchsorted on the cumulative sum)."""
  cdf = jnp.cumsum(weights)
  r = jax.random.uniform(key, shape, weights.dtype) * cdf[-1]
  return jnp.clip(jnp.searchsorted(cdf, r), 0, n_valid - 1).astype(jnp.int32)


def _kmeans_plusplus(key, x, xsq, w, k, n_valid, n_local_trials, precision):
  n_local_trials = (2 + int(math.log(k)) if n_local_trials is None
                    else n_local_trials)
  key0, key = jax.random.split(key)
  first = _weighted_draw(key0, w, (), n_valid)
  closest = _sq_dist_to(x, xsq, first[None], precision)[0]
  centers = jnp.zeros((k, x.shape[1]), x.dtype).at[0].set(x[first])
  idx = jnp.zeros((k,), jnp.int32).at[0].set(first)

  def step(c, carry):
    centers, idx, closest = carry
    cand = _weighted_draw(jax.random.fold_in(key, c), w * closest,
                          (n_local_trials,), n_valid)
    dist = jnp.minimum(closest[None, :],
                       _sq_dist_to(x, xsq, cand, precision))  # (L, n)
    pot = dist @ w
    best = jnp.argmin(pot)
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
  _check_x(x)
  n = x.shape[0]
  _check_k(k, n)
  _check_weight(sample_weight, n)
  return _kmeans_plusplus_jit(key, jnp.asarray(x, jnp.float32),
                              _weights(sample_weight, n), k, n_local_trials)


@functools.partial(jax.jit, static_argnames=("k", "n_local_trials"))
def _kmeans_plusplus_jit(key, x, w, k, n_local_trials):
  xc = x - jnp.mean(x, axis=0)
  xsq = jnp.sum(xc * xc, axis=1)
  centers, idx = _kmeans_plusplus(key, xc, xsq, w, k, x.shape[0],
                                  n_local_trials, lax.Precision.HIGHEST)
  return x[idx], idx


def _kmeans_parallel(key, blocks: _Blocks, k, n_valid, n_local_trials, precision,
                     rounds, oversampling):
  """k-means|| on blocked data with fixed shapes: (centroids f32[k, d], rows i32[k]).

  Each round keeps every row independently with probability
  min(1, l * w * D^2 / phi) (l = oversampling * k), at most `cap` of them
  (a random subset when more are drawn, which is rare: cap is l plus four
  standard deviations); unused slots repeat the first centre, which leaves
  every distance and (argmin taking the first of equals) every count as it
  is. The candidates are weighted by the weight of the rows nearest to them
  and reduced to k by greedy weighted k-means++.
  """
  nb, bsz, d = blocks.x.shape
  flat_x = blocks.x.reshape(-1, d)
  flat_w = blocks.w.reshape(-1)
  ell = oversampling * k
  cap = min(int(math.ceil(ell + 4.0 * math.sqrt(ell) + 8.0)), nb * bsz)
  key0, key_rounds, key_pp = jax.random.split(key, 3)
  first = _weighted_draw(key0, flat_w, (), n_valid)
  cand = jnp.full((1 + rounds * cap,), first, jnp.int32)

  def nearest(idx):
    return _assign_blocks(blocks, flat_x[idx], with_sums=False,
                          precision=precision)[1].reshape(-1)

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
  _, _, _, weight = _assign_blocks(blocks, centers, with_sums=True,
                                   precision=precision)
  csq = jnp.sum(centers * centers, axis=1)
  _, pick = _kmeans_plusplus(key_pp, centers, csq, weight, k, cand.shape[0],
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
  _check_x(x)
  n, d = x.shape
  _check_k(k, n)
  _check_weight(sample_weight, n)
  if not isinstance(rounds, (int, np.integer)) or rounds < 1:
    raise ValueError(f"rounds: expected an int >= 1, got {rounds!r}")
  if not (isinstance(oversampling, (int, float)) and oversampling > 0):
    raise ValueError(f"oversampling: expected a number > 0, got {oversampling!r}")
  block_size = block_size or default_block_size(n, d, k)
  return _kmeans_parallel_jit(key, jnp.asarray(x, jnp.float32),
                              _weights(sample_weight, n), k=k,
                              n_local_trials=n_local_trials, rounds=int(rounds),
                              oversampling=float(oversampling),
                              block_size=block_size)


@functools.partial(jax.jit, static_argnames=("k", "n_local_trials", "rounds",
                                             "oversampling", "block_size"))
def _kmeans_parallel_jit(key, x, w, *, k, n_local_trials, rounds, oversampling,
                         block_size):
  shift = jnp.mean(x, axis=0)
  blocks = _to_blocks(x - shift, w, block_size)
  centers, idx = _kmeans_parallel(key, blocks, k, x.shape[0], n_local_trials,
                                  lax.Precision.HIGHEST, rounds, oversampling)
  return x[idx], idx


def random_init(key: Array, x: Array, k: int, *,
                sample_weight: Array | None = None) -> tuple[Array, Array]:
  """k distinct rows drawn with probability proportional to sample_weight.

  x: f32[n, d]; returns (centroids f32[k, d], row indices i32[k]).
  """
  _check_x(x)
  _check_k(k, x.shape[0])
  _check_weight(sample_weight, x.shape[0])
  w = _weights(sample_weight, x.shape[0])
  idx = _random_idx(key, w, k)
  return jnp.asarray(x, jnp.float32)[idx], idx


def _random_idx(key, w, k):
  return jax.random.choice(key, w.shape[0], (k,), replace=False,
                           p=w / jnp.sum(w)).astype(jnp.int32)


def _weights(sample_weight, n) -> Array:
  if sample_weight is None:
    return jnp.ones((n,), jnp.float32)
  return jnp.asarray(sample_weight, jnp.float32)


# ----------------------------------------------------------------------------
# fit.


def _fit_impl(key, x, w, init_centers, tol, max_iter, *, k, init, n_init,
              metric, weighted, block_size, n_local_trials, mesh, axis_name):
  n, d = x.shape
  spherical = metric == "cosine"
  precision = lax.Precision.HIGHEST
  x = x.astype(jnp.float32)
  if spherical:
    x = _normalize_rows(x)
    shift = jnp.zeros((d,), x.dtype)
  else:  # centring keeps ||x||^2 - 2x.c + ||c||^2 accurate in float32
    shift = jnp.mean(x, axis=0)
  n_dev = 1 if mesh is None else mesh.shape[axis_name]
  blocks = _to_blocks(x - shift, w, block_size, multiple=n_dev)
  # scikit-learn's tol: relative to the mean per-feature variance of x,
  # from the row norms and column means (no (n, d) temporary).
  mu = jnp.sum(blocks.x, axis=(0, 1)) / n
  variance = jnp.sum(blocks.xsq) / (n * d) - jnp.sum(mu * mu) / d
  tol_abs = tol * variance

  if init_centers is not None:
    c = init_centers.astype(jnp.float32)
    c0 = (_normalize_rows(c) if spherical else c - shift)[None]
  else:
    flat_x = blocks.x.reshape(-1, d)
    flat_w = blocks.w.reshape(-1)
    flat_xsq = blocks.xsq.reshape(-1)
    keys = jax.random.split(key, n_init)
    if init == "k-means++":
      draw = lambda kk: _kmeans_plusplus(kk, flat_x, flat_xsq, flat_w, k, n,
                                         n_local_trials, precision)[0]
    elif init == "k-means||":
      draw = lambda kk: _kmeans_parallel(
          kk, blocks, k, n, n_local_trials, precision, KMEANS_PARALLEL_ROUNDS,
          KMEANS_PARALLEL_OVERSAMPLING)[0]
    else:
      draw = lambda kk: flat_x[_random_idx(kk, flat_w, k)]
    c0 = jax.vmap(draw)(keys)
    if spherical:
      c0 = _normalize_rows(c0)

  def runs(b, c0, t, m, axis_name):
    run = functools.partial(_lloyd, tol_abs=t, max_iter=m, spherical=spherical,
                            axis_name=axis_name, precision=precision,
                            weighted=weighted)
    if c0.shape[0] == 1:  # no batch axis: keeps the dot a plain matmul
      return jax.tree.map(lambda a: a[None], run(b, c0[0]))
    # Restarts share each pass over x: one (B, n_init * k) matmul per block.
    return jax.vmap(lambda c: run(b, c))(c0)

  if mesh is None:
    res = runs(blocks, c0, tol_abs, max_iter, None)
  else:
    from jax.sharding import PartitionSpec as P
    rows = P(axis_name)

    def local(b, c0, t, m):
      return runs(b, c0, t, m, axis_name)

    # Lay the row blocks out over the devices.
    blocks = jax.tree.map(lambda a: _place(a, mesh, rows), blocks)
    c0, tol_abs, max_iter = (_place(a, mesh, P())
                             for a in (c0, tol_abs, max_iter))

    res = jax.shard_map(
        local, mesh=mesh,
        in_specs=(_Blocks(rows, rows, rows, rows), P(), P(), P()),
        out_specs=KMeansResult(P(), P(None, axis_name), P(), P(), P()),
        check_vma=False)(blocks, c0, tol_abs, max_iter)
    res = res._replace(labels=_place(res.labels, mesh, P()))

  best = jnp.argmin(res.inertia)  # first of equal inertias, like sklearn
  labels = res.labels[best].reshape(-1)[:n]
  return KMeansResult(res.centroids[best] + shift, labels, res.inertia[best],
                      res.n_iter[best], res.converged[best])


def _place(a: Array, mesh, spec) -> Array:
  """Sharding `a` as `spec` on `mesh`, for explicit and auto mesh axes."""
  sharding = jax.sharding.NamedSharding(mesh, spec)
  explicit = jax.sharding.AxisType.Explicit in tuple(
      getattr(mesh, "axis_types", ()))
  if explicit:
    return jax.sharding.reshard(a, sharding)
  return lax.with_sharding_constraint(a, sharding)


_FIT_STATIC = ("k", "init", "n_init", "metric", "weighted", "block_size",
               "n_local_trials", "mesh", "axis_name")
_fit_jit = jax.jit(_fit_impl, static_argnames=_FIT_STATIC)


def fit(key: Array, x: Array, k: int, *, init: str | Array = "k-means++",
        n_init: int = 1, max_iter: int = 300, tol: float = 1e-4,
        sample_weight: Array | None = None, metric: str = "euclidean",
        block_size: int | None = None,
        n_local_trials: int | None = None) -> KMeansResult:
  """k-means with scikit-learn's semantics.

  Args:
    key: PRNG key for the initialization (unused when `init` is an array).
    x: f32[n, d] data.
    k: number of clusters, 1 <= k <= n (static; so are `init` when a
      string, `n_init`, `metric` and `block_size`).
    init: 'k-means++' (greedy, `n_local_trials` candidates per centre,
      default 2 + floor(log k)), 'k-means||' (`kmeans_parallel`, 5 rounds
      of ~2k candidates), 'random' (k distinct rows drawn by weight),
      or initial centroids f32[k, d].
    n_init: restarts, run vmapped; the lowest inertia wins. Ignored (1) when
      `init` is an array.
    max_iter: maximum Lloyd iterations.
    tol: stop when the squared centre shift summed over centres is <=
      tol * mean per-feature variance of x (scikit-learn's rule), or when the
      labels do not change.
    sample_weight: f32[n] non-negative row weights (default all 1).
    metric: 'euclidean' or 'cosine' (spherical k-means).
    block_size: rows per distance block (default `default_block_size`).

  Returns:
    KMeansResult(centroids f32[k, d], labels i32[n], inertia f32[],
    n_iter i32[], converged bool[]).
  """
  return _fit_entry(key, x, k, init=init, n_init=n_init, max_iter=max_iter,
                    tol=tol, sample_weight=sample_weight, metric=metric,
                    block_size=block_size, n_local_trials=n_local_trials,
                    mesh=None, axis_name=None)


def fit_sharded(key: Array, x: Array, k: int, *, mesh: jax.sharding.Mesh,
                axis_name: str | None = None, init: str | Array = "k-means++",
                n_init: int = 1, max_iter: int = 300, tol: float = 1e-4,
                sample_weight: Array | None = None, metric: str = "euclidean",
                block_size: int | None = None,
                n_local_trials: int | None = None) -> KMeansResult:
  """`fit` with the rows of x sharded over `mesh`'s `axis_name` axis.

  Each device runs the fused assignment on its own rows; per-cluster sums,
  counts, label changes and the inertia are `psum`-reduced, and empty
  clusters take the globally farthest rows. Same arguments and result as
  `fit` (which it equals up to float summation order).
  """
  axis_name = axis_name or mesh.axis_names[0]
  if axis_name not in mesh.axis_names:
    raise ValueError(f"axis_name: expected one of {mesh.axis_names}, "
                     f"got {axis_name!r}")
  return _fit_entry(key, x, k, init=init, n_init=n_init, max_iter=max_iter,
                    tol=tol, sample_weight=sample_weight, metric=metric,
                    block_size=block_size, n_local_trials=n_local_trials,
                    mesh=mesh, axis_name=axis_name)


def _fit_entry(key, x, k, *, init, n_init, max_iter, tol, sample_weight,
               metric, block_size, n_local_trials, mesh, axis_name):
  _check_x(x)
  n, d = x.shape
  _check_common(k, init=init, n_init=n_init, max_iter=max_iter, tol=tol,
                metric=metric, d=d, n=n)
  _check_weight(sample_weight, n)
  if block_size is None:
    n_dev = 1 if mesh is None else mesh.shape[axis_name]
    block_size = default_block_size(-(-n // n_dev), d, k)
  elif not isinstance(block_size, int) or block_size < 1:
    raise ValueError(f"block_size: expected an int >= 1, got {block_size!r}")
  init_centers = None
  if not isinstance(init, str):
    init_centers, init, n_init = jnp.asarray(init), "array", 1
  return _fit_jit(key, x, _weights(sample_weight, n), init_centers,
                  jnp.asarray(tol, jnp.float32),
                  jnp.asarray(max_iter, jnp.int32), k=k, init=init,
                  n_init=n_init, metric=metric,
                  weighted=sample_weight is not None,
                  block_size=block_size, n_local_trials=n_local_trials,
                  mesh=mesh, axis_name=axis_name)


# ----------------------------------------------------------------------------
# predict / transform / inertia.


def _check_centroids(centroids, x, metric):
  _check_x(x)
  if getattr(centroids, "ndim", None) != 2 or centroids.shape[1] != x.shape[1]:
    raise ValueError(
        f"centroids: expected f32[k, {x.shape[1]}] to match x's features, got "
        f"shape {getattr(centroids, 'shape', None)}")
  if metric not in METRICS:
    raise ValueError(f"metric: expected one of {METRICS}, got {metric!r}")


@functools.partial(jax.jit, static_argnames=("metric", "block_size"))
def _predict_jit(centroids, x, w, *, metric, block_size):
  x = x.astype(jnp.float32)
  c = centroids.astype(jnp.float32)
  if metric == "cosine":
    x, c = _normalize_rows(x), _normalize_rows(c)
  blocks = _to_blocks(x, w, block_size)
  labels, _, _, _ = _assign_blocks(blocks, c, with_sums=False,
                                   precision=lax.Precision.HIGHEST)
  inertia = _direct_inertia(blocks, c, labels)
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
  _check_centroids(centroids, x, metric)
  n = x.shape[0]
  _check_weight(sample_weight, n)
  block_size = block_size or default_block_size(n, x.shape[1],
                                                centroids.shape[0])
  return _predict_jit(centroids, x, _weights(sample_weight, n), metric=metric,
                      block_size=block_size)


@functools.partial(jax.jit, static_argnames=("metric",))
def _transform_jit(centroids, x, *, metric):
  x = x.astype(jnp.float32)
  c = centroids.astype(jnp.float32)
  if metric == "cosine":
    return 1.0 - jnp.dot(_normalize_rows(x), _normalize_rows(c).T,
                         precision=lax.Precision.HIGHEST)
  sq = (jnp.sum(x * x, 1)[:, None] + jnp.sum(c * c, 1)[None, :]
        - 2.0 * jnp.dot(x, c.T, precision=lax.Precision.HIGHEST))
  return jnp.sqrt(jnp.maximum(sq, 0.0))


def transform(centroids: Array, x: Array, *, metric: str = "euclidean") -> Array:
  """Distances to every centroid: f32[n, k] (Euclidean, or 1 - cos)."""
  _check_centroids(centroids, x, metric)
  return _transform_jit(centroids, x, metric=metric)


# ----------------------------------------------------------------------------
# Mini-batch k-means.


class MiniBatchState(NamedTuple):
  """centroids: f32[k, d]; counts: f32[k] weight seen per centre; step: i32[]."""
  centroids: Array
  counts: Array
  step: Array


def minibatch_init(key: Array, batch: Array, k: int, *,
                   init: str | Array = "k-means++",
                   metric: str = "euclidean") -> MiniBatchState:
  """Initial state from one batch f32[b, d] (b >= k) or given centroids."""
  _check_x(batch, "batch")
  _check_common(k, init=init, n_init=1, max_iter=1, tol=0.0, metric=metric,
                d=batch.shape[1], n=batch.shape[0])
  if isinstance(init, str):
    b = _normalize_rows(jnp.asarray(batch, jnp.float32)) if metric == "cosine" \
        else batch
    fn = kmeans_plusplus if init == "k-means++" else random_init
    c, _ = fn(key, b, k)
  else:
    c = jnp.asarray(init, jnp.float32)
  if metric == "cosine":
    c = _normalize_rows(c)
  return MiniBatchState(c, jnp.zeros((k,), jnp.float32),
                        jnp.zeros((), jnp.int32))


def minibatch_step(state: MiniBatchState, batch: Array,
                   sample_weight: Array | None = None, *,
                   metric: str = "euclidean",
                   axis_name: str | None = None
                   ) -> tuple[MiniBatchState, Array]:
  """One Sculley update: each centre moves to the running mean of the rows
  assigned to it so far (learning rate = batch weight / total weight).

  batch: f32[b, d]; sample_weight: f32[b] (zeros mark padding rows).
  Returns the new state and the batch inertia f32[] under the old centres.
  Pure; jit it (metric static). axis_name: inside pmap/shard_map, the
  device axis the batch's rows are split over (sums, weights and inertia
  are `psum`-ed over it, so every device takes the global-batch update).
  """
  x = batch.astype(jnp.float32)
  k = state.centroids.shape[0]
  w = jnp.ones(x.shape[:1], x.dtype) if sample_weight is None else sample_weight
  if metric == "cosine":
    x = _normalize_rows(x)
  c = state.centroids
  dots = jnp.dot(x, c.T, precision=lax.Precision.HIGHEST)
  dist = jnp.sum(c * c, 1)[None] - 2.0 * dots
  labels = jnp.argmin(dist, axis=1)
  diff = x - c[labels]
  batch_inertia = jnp.sum(w * jnp.sum(diff * diff, axis=1))
  if metric == "cosine":
    batch_inertia = 0.5 * batch_inertia
  sums = jax.ops.segment_sum(x * w[:, None], labels, k)
  bw = jax.ops.segment_sum(w, labels, k)
  if axis_name is not None:
    sums, bw, batch_inertia = lax.psum((sums, bw, batch_inertia), axis_name)
  counts = state.counts + bw
  new = jnp.where((bw > 0)[:, None],
                  (c * state.counts[:, None] + sums)
                  / jnp.where(counts > 0, counts, 1.0)[:, None], c)
  if metric == "cosine":
    new = _normalize_rows(new)
  return MiniBatchState(new, counts, state.step + 1), batch_inertia


_minibatch_step_jit = jax.jit(minibatch_step, static_argnames=("metric",))


def minibatch_train_step(state: MiniBatchState, batch: Array,
                         key: Array | None = None, *,
                         metric: str = "euclidean",
                         axis_name: str | None = None
                         ) -> tuple[MiniBatchState, dict[str, Array]]:
  """`minibatch_step` in the `train_step(state, batch, key)` form that
  `train.fit` and `parallel` run (key unused: the update is deterministic).
  Metrics: `loss`, the batch inertia per row under the old centres."""
  del key
  new, batch_inertia = minibatch_step(state, batch, metric=metric,
                                      axis_name=axis_name)
  rows = batch.shape[0] * (1 if axis_name is None else lax.axis_size(axis_name))
  return new, {"loss": batch_inertia / rows}


def minibatch_fit(key: Array, batches: Iterable[Array], k: int, *,
                  init: str | Array = "k-means++", metric: str = "euclidean",
                  max_steps: int | None = None) -> MiniBatchState:
  """Mini-batch k-means over an iterable of host or device batches f32[b, d].

  The first batch initializes the centroids (k-means++ on it, b >= k) and is
  then used for the first update like every other batch. Batches smaller
  than the first are padded with zero-weight rows so the step compiles once.
  Labels and inertia of the full data: `predict_with_inertia`.
  """
  if metric not in METRICS:
    raise ValueError(f"metric: expected one of {METRICS}, got {metric!r}")
  state, size = None, None
  for i, batch in enumerate(batches):
    if max_steps is not None and i >= max_steps:
      break
    _check_x(batch, "batch")
    if state is None:
      state = minibatch_init(key, batch, k, init=init, metric=metric)
      size = batch.shape[0]
    if batch.shape[1] != state.centroids.shape[1]:
      raise ValueError(f"batch: expected {state.centroids.shape[1]} features, "
                       f"got shape {batch.shape}")
    b = batch.shape[0]
    if b > size:
      raise ValueError(f"batch: expected at most {size} rows (the first "
                       f"batch's size), got {b}")
    w = np.zeros((size,), np.float32)
    w[:b] = 1.0
    if b < size:
      batch = np.concatenate(
          [np.asarray(batch), np.zeros((size - b, batch.shape[1]),
                                       np.asarray(batch).dtype)])
    state, _ = _minibatch_step_jit(state, jnp.asarray(batch), jnp.asarray(w),
                                   metric=metric)
  if state is None:
    raise ValueError("batches: expected at least one batch, got none")
  return state


def epoch_batches(key: Array, epoch: int | Array, n: int,
                  batch_size: int) -> Array:
  """Row indices i32[n // batch_size, batch_size] of one epoch's whole
  batches: a permutation keyed by (key, epoch), the last partial batch
  dropped."""
  perm = jax.random.permutation(jax.random.fold_in(key, epoch), n)
  steps = n // batch_size
  return perm[:steps * batch_size].reshape(steps, batch_size)


@functools.partial(jax.jit, static_argnames=("batch_size", "epochs", "metric"))
def _minibatch_arrays_jit(key, x, state, *, batch_size, epochs, metric):
  n = x.shape[0]

  def epoch(state, e):
    def step(state, idx):
      return minibatch_step(state, x[idx], metric=metric)
    return lax.scan(step, state, epoch_batches(key, e, n, batch_size))

  state, inertias = lax.scan(epoch, state, jnp.arange(epochs))
  return state, inertias.reshape(-1)


def minibatch_fit_arrays(key: Array, x: Array, k: int, *, batch_size: int,
                         epochs: int, init: str | Array = "k-means++",
                         metric: str = "euclidean"
                         ) -> tuple[MiniBatchState, Array]:
  """Mini-batch k-means over an in-memory x f32[n, d], the whole loop on
  device (`lax.scan` over epochs and batches).

  Batches are `epoch_batches(batch_key, e, n, batch_size)` with
  `init_key, batch_key = split(key)`; the centroids start from
  `minibatch_init(init_key, x[first batch], k)`. Returns the final state and
  each step's batch inertia f32[epochs * (n // batch_size)].
  """
  _check_x(x)
  n = x.shape[0]
  if not isinstance(batch_size, int) or not k <= batch_size <= n:
    raise ValueError(f"batch_size: expected an int in [k={k}, n={n}], got "
                     f"{batch_size!r}")
  if not isinstance(epochs, int) or epochs < 1:
    raise ValueError(f"epochs: expected an int >= 1, got {epochs!r}")
  init_key, batch_key = jax.random.split(key)
  x = jnp.asarray(x, jnp.float32)
  first = x[epoch_batches(batch_key, 0, n, batch_size)[0]]
  state = minibatch_init(init_key, first, k, init=init, metric=metric)
  return _minibatch_arrays_jit(batch_key, x, state, batch_size=batch_size,
                               epochs=epochs, metric=metric)


# ----------------------------------------------------------------------------
# Differentiable clustering losses.


def _sq_dists(z: Array, centroids: Array) -> Array:
  sq = (jnp.sum(z * z, 1)[:, None] + jnp.sum(centroids * centroids, 1)[None]
        - 2.0 * z @ centroids.T)
  return jnp.maximum(sq, 0.0)


def clustering_loss(z: Array, centroids: Array, *, assignment: str = "hard",
                    temperature: float = 1.0) -> Array:
  """Per-example k-means loss for neural objectives: f32[b].

  z: f32[b, d] embeddings; centroids: f32[k, d] (trainable or fixed).
  'hard': min_j ||z - c_j||^2 (the k-means objective; gradients flow to z
  and to the chosen centre). 'soft': sum_j softmax(-d/T)_j d_j, a smooth
  relaxation that tends to the hard loss as T -> 0 and spreads gradients
  over all centres.
  """
  d = _sq_dists(z, centroids)
  if assignment == "hard":
    return jnp.min(d, axis=1)
  if assignment == "soft":
    p = jax.nn.softmax(-d / temperature, axis=1)
    return jnp.sum(p * d, axis=1)
  raise ValueError(f"assignment: expected 'hard' or 'soft', got {assignment!r}")


def student_t_assignment(z: Array, centroids: Array, alpha: float = 1.0) -> Array:
  """DEC's soft assignment q_ij ∝ (1 + ||z_i - c_j||^2 / alpha)^-(alpha+1)/2.

  z: f32[b, d], centroids: f32[k, d] -> f32[b, k], rows sum to 1.
  """
  d = _sq_dists(z, centroids)
  logits = -(alpha + 1.0) / 2.0 * jnp.log1p(d / alpha)
  return jax.nn.softmax(logits, axis=1)


# ----------------------------------------------------------------------------
# scikit-learn style estimator.


def _key_from(random_state) -> Array:
  if random_state is None:
    return jax.random.key(np.random.randint(0, 2**31 - 1))
  if isinstance(random_state, (int, np.integer)):
    return jax.random.key(int(random_state))
  if isinstance(random_state, np.random.RandomState):
    return jax.random.key(random_state.randint(0, 2**31 - 1))
  if isinstance(random_state, jax.Array):
    return random_state
  raise ValueError(f"random_state: expected None, an int, a "
                   f"numpy RandomState or a JAX key, got {random_state!r}")


class KMeans:
  """scikit-learn's `KMeans` interface on `unsupjax.kmeans.fit`.

  KMeans(n_clusters=8, *, init="k-means++", n_init="auto", max_iter=300,
  tol=1e-4, random_state=None, metric="euclidean"). `n_init="auto"` is 1 for
  k-means++ or given centroids and 10 for 'random', as in scikit-learn.
  `random_state`: an int (-> `jax.random.key`), a JAX key, or None (a fresh
  seed from NumPy's global RNG, like scikit-learn).

  After `fit`: `cluster_centers_` (np f32[k, d]), `labels_` (np i32[n]),
  `inertia_` (float), `n_iter_` (int), `n_features_in_`, `converged_`.
  """

  def __init__(self, n_clusters: int = 8, *, init: str | Any = "k-means++",
               n_init: int | str = "auto", max_iter: int = 300,
               tol: float = 1e-4, random_state: Any = None,
               metric: str = "euclidean", block_size: int | None = None):
    self.n_clusters = n_clusters
    self.init = init
    self.n_init = n_init
    self.max_iter = max_iter
    self.tol = tol
    self.random_state = random_state
    self.metric = metric
    self.block_size = block_size

  def _n_init(self) -> int:
    if not isinstance(self.init, str):
      return 1
    if self.n_init == "auto":
      return 10 if self.init == "random" else 1
    return self.n_init

  def fit(self, X, y=None, sample_weight=None) -> "KMeans":
    x = np.asarray(X, np.float32) if not isinstance(X, jax.Array) else X
    res = fit(_key_from(self.random_state), x, self.n_clusters,
              init=self.init, n_init=self._n_init(), max_iter=self.max_iter,
              tol=self.tol, sample_weight=sample_weight, metric=self.metric,
              block_size=self.block_size)
    self.cluster_centers_ = np.asarray(res.centroids)
    self.labels_ = np.asarray(res.labels)
    self.inertia_ = float(res.inertia)
    self.n_iter_ = int(res.n_iter)
    self.converged_ = bool(res.converged)
    self.n_features_in_ = int(x.shape[1])
    return self

  def _check_fitted(self):
    if not hasattr(self, "cluster_centers_"):
      raise ValueError("KMeans: call fit before predict/transform/score")

  def predict(self, X) -> np.ndarray:
    self._check_fitted()
    return np.asarray(predict(self.cluster_centers_, jnp.asarray(X, jnp.float32),
                              metric=self.metric, block_size=self.block_size))

  def fit_predict(self, X, y=None, sample_weight=None) -> np.ndarray:
    return self.fit(X, sample_weight=sample_weight).labels_

  def transform(self, X) -> np.ndarray:
    self._check_fitted()
    return np.asarray(transform(self.cluster_centers_,
                                jnp.asarray(X, jnp.float32), metric=self.metric))

  def fit_transform(self, X, y=None, sample_weight=None) -> np.ndarray:
    return self.fit(X, sample_weight=sample_weight).transform(X)

  def score(self, X, y=None, sample_weight=None) -> float:
    """Opposite of the inertia of X under the fitted centres."""
    self._check_fitted()
    return -float(inertia(self.cluster_centers_, jnp.asarray(X, jnp.float32),
                          sample_weight=sample_weight, metric=self.metric,
                          block_size=self.block_size))
