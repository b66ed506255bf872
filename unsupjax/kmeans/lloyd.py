"""Lloyd's algorithm on row blocks: assignment kernels, empty-cluster
relocation and the `lax.while_loop` with scikit-learn's stopping rule.

Offers `Blocks`/`to_blocks` (x padded and cut into row blocks, stored in
float32, bfloat16 or float16), `assign_blocks` (one pass over x: labels,
squared distances and optionally per-cluster sums, laid out as a `Plan`
says), `direct_inertia`, `relocate_empty` and `lloyd`. Does not choose the
plan (`plan.py`), initialize centres (`init.py`) or validate inputs.

Distances are ||x||^2 - 2 x.c + ||c||^2 on centred x (or, for tiny d * k,
the direct sum of (x - c)^2), min-reduced per block so one pass holds
O(block * k) distances, never an (n, k, d) tensor. Accumulation is float32
whatever the storage dtype.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from unsupjax.kmeans.plan import Plan, padded_k

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


class Blocks(NamedTuple):
  """x laid out as row blocks; padded rows have weight 0 and valid False."""
  x: Array      # f32|bf16|f16[nb, B, d]
  xsq: Array    # f32[nb, B], ||x||^2 of the stored (rounded) rows
  w: Array      # f32[nb, B]
  valid: Array  # bool[nb, B]


def to_blocks(x: Array, w: Array, block_size: int, multiple: int = 1,
              dtype=jnp.float32, n_valid: int | Array | None = None) -> Blocks:
  """x: f32[n, d] -> Blocks of `block_size` rows (nb a multiple of
  `multiple`), stored as `dtype`. Rows from `n_valid` on (default n) are
  padding: they must be zero with zero weight."""
  n, d = x.shape
  nb = -(-n // block_size)
  nb = -(-nb // multiple) * multiple
  pad = nb * block_size - n
  xp = jnp.pad(x, ((0, pad), (0, 0))).astype(dtype)
  wp = jnp.pad(w, (0, pad))
  valid = jnp.arange(nb * block_size) < (n if n_valid is None else n_valid)
  xf = xp.astype(jnp.float32)
  xsq = jnp.sum(xf * xf, axis=1)
  return Blocks(xp.reshape(nb, block_size, d), xsq.reshape(nb, block_size),
                wp.reshape(nb, block_size), valid.reshape(nb, block_size))


def normalize_rows(x: Array) -> Array:
  norm = jnp.linalg.norm(x, axis=-1, keepdims=True)
  return x / jnp.where(norm > 0, norm, 1.0)


def _first_min(dist: Array, base: int | Array = 0) -> tuple[Array, Array]:
  """First argmin and min over the rows of dist f32[m, B], unrolled over the
  m rows (strict < keeps the first minimum): XLA fuses it into one
  elementwise pass over B, where its argmin reduction runs serially once m
  passes ~26."""
  best, idx = dist[0], jnp.zeros(dist.shape[1:], jnp.int32) + base
  for j in range(1, dist.shape[0]):
    closer = dist[j] < best
    best = jnp.where(closer, dist[j], best)
    idx = jnp.where(closer, base + j, idx)
  return idx, best


def _direct_dist(xf: Array, centers: Array) -> Array:
  """sum_t (x_t - c_t)^2 as f32[k, B], unrolled over the (few) features:
  elementwise, no matmul."""
  return sum(jnp.square(xf[:, t][None, :] - centers[:, t][:, None])
             for t in range(xf.shape[1]))


def _tiled_first_min(cp: Array, csq: Array, xf: Array, tile: int, direct: bool,
                     precision) -> tuple[Array, Array]:
  """`_first_min` of the (k', B) distances, one tile of centres at a time
  under `lax.scan` (k' a multiple of tile): the unrolled pass stays small."""
  nt = cp.shape[0] // tile

  def one(carry, t):
    best, idx = carry
    c, s, j = t
    if direct:  # padded centres must stay out of reach
      dist = jnp.where(jnp.isinf(s)[:, None], jnp.inf, _direct_dist(xf, c))
    else:
      dist = s[:, None] - 2.0 * jnp.dot(c, xf.T, precision=precision)
    li, lv = _first_min(dist)
    closer = lv < best
    return (jnp.where(closer, lv, best),
            jnp.where(closer, li + j * tile, idx)), None

  init = (jnp.full(xf.shape[:1], jnp.inf, jnp.float32),
          jnp.zeros(xf.shape[:1], jnp.int32))
  (best, idx), _ = lax.scan(
      one, init, (cp.reshape(nt, tile, -1), csq.reshape(nt, tile),
                  jnp.arange(nt, dtype=jnp.int32)))
  return idx, best


def prepare_centers(centers: Array, plan: Plan) -> tuple[Array, Array]:
  """Centres padded to the plan's k' (extra rows at +inf distance) and their
  squared norms: (f32[k', d], f32[k'])."""
  k = centers.shape[0]
  kp = padded_k(k, plan)
  csq = jnp.sum(centers * centers, axis=1)
  if kp == k:
    return centers, csq
  return (jnp.pad(centers, ((0, kp - k), (0, 0))),
          jnp.pad(csq, (0, kp - k), constant_values=jnp.inf))


def assign_block(xb: Array, xsqb: Array, cp: Array, csq: Array, plan: Plan,
                 precision) -> tuple[Array, Array]:
  """Labels i32[B] and squared distances f32[B] (clipped at 0) of one block
  xb [B, d] to the prepared centres (`prepare_centers`)."""
  xf = xb.astype(jnp.float32)
  direct = plan.distance == "direct"
  if plan.argmin == "unrolled" and cp.shape[0] > plan.tile:
    lab, mind = _tiled_first_min(cp, csq, xf, plan.tile, direct, precision)
    return lab, (mind if direct else jnp.maximum(mind + xsqb, 0.0))
  if direct:  # exact distances: no norms to add
    lab, mind = _first_min(_direct_dist(xf, cp))
    return lab, mind
  if plan.layout == "kb":
    dist = csq[:, None] - 2.0 * jnp.dot(cp, xf.T, precision=precision)
    if plan.argmin == "unrolled":
      lab, mind = _first_min(dist)
    else:
      lab, mind = jnp.argmin(dist, axis=0), jnp.min(dist, axis=0)
  else:
    dist = csq[None, :] - 2.0 * jnp.dot(xf, cp.T, precision=precision)
    lab, mind = jnp.argmin(dist, axis=1), jnp.min(dist, axis=1)
  return lab.astype(jnp.int32), jnp.maximum(mind + xsqb, 0.0)


def _segment_sums(xf, w, lab, k, weighted):
  """(sums f32[k, d], weights f32[k]) by `segment_sum`."""
  return (jax.ops.segment_sum(xf * w[:, None] if weighted else xf, lab, k),
          jax.ops.segment_sum(w, lab, k))


def _block_sums(xb, wb, lab, k, plan, weighted, precision):
  xf = xb.astype(jnp.float32)
  if plan.sums == "onehot":
    member = lab[None, :] == jnp.arange(k, dtype=jnp.int32)[:, None]
    coef = jnp.where(member, wb[None, :], 0.0)  # (k, B)
    return jnp.dot(coef, xf, precision=precision), jnp.sum(coef, axis=1)
  return _segment_sums(xf, wb, lab, k, weighted)


def assign_blocks(blocks: Blocks, centers: Array, plan: Plan, *,
                  with_sums: bool, precision, weighted: bool = True,
                  with_mind: bool = True
                  ) -> tuple[Array, Array | None, Array | None, Array | None]:
  """One pass over x: labels i32[nb, B], min squared distances f32[nb, B]
  (None unless `with_mind`), and when `with_sums` the weighted sums
  f32[k, d] and weights f32[k] of the rows nearest each centre.
  `weighted=False` promises unit weights on real rows (padding rows are
  zeros, so they add nothing). Every plan gives the same labels (first
  minimum on ties)."""
  k, d = centers.shape
  cp, csq = prepare_centers(centers, plan)
  fused = with_sums and plan.sums != "after"

  def body(carry, blk):
    xb, xsqb, wb = blk
    lab, mind = assign_block(xb, xsqb, cp, csq, plan, precision)
    if fused:
      s, c = _block_sums(xb, wb, lab, k, plan, weighted, precision)
      carry = (carry[0] + s, carry[1] + c)
    # Each output is a consumer XLA:CPU recomputes the fused minimum for.
    return carry, ((lab, mind) if with_mind else (lab,))

  init = ((jnp.zeros((k, d), jnp.float32), jnp.zeros((k,), jnp.float32))
          if fused else ())
  if blocks.x.shape[0] == 1:  # no scan: XLA:CPU would copy the block out
    carry, outs = body(init, (blocks.x[0], blocks.xsq[0], blocks.w[0]))
    outs = tuple(o[None] for o in outs)
  else:
    carry, outs = lax.scan(body, init, (blocks.x, blocks.xsq, blocks.w))
  labels, mind = (outs + (None,))[:2]
  if not with_sums:
    return labels, mind, None, None
  if fused:
    return labels, mind, carry[0], carry[1]
  # One scatter over all rows after the scan: x is read twice, but XLA:CPU's
  # scatter runs one pass instead of one per block.
  flat = labels.reshape(-1)
  x = blocks.x.reshape(-1, d).astype(jnp.float32)
  w = blocks.w.reshape(-1)
  return (labels, mind) + _segment_sums(x, w, flat, k, weighted)


def direct_inertia(blocks: Blocks, centers: Array, labels: Array) -> Array:
  """sum_i w_i ||x_i - c_{l_i}||^2, summed per block then over blocks."""

  def body(total, blk):
    xb, wb, lb = blk
    diff = xb.astype(jnp.float32) - centers[lb]
    return total + jnp.sum(wb * jnp.sum(diff * diff, axis=1)), None

  total, _ = lax.scan(body, jnp.zeros((), jnp.float32),
                      (blocks.x, blocks.w, labels))
  return total


def relocate_empty(sums, counts, labels, mind, centers, blocks: Blocks,
                   axis_name):
  """scikit-learn's empty-cluster rule: each empty cluster takes the next
  farthest row from its centre (rows ranked by mind, f32[nb, B]), which
  leaves its old cluster; nothing moves when every row sits on its centre
  (duplicate points), as in scikit-learn."""
  k, d = sums.shape
  empty = counts == 0
  x = blocks.x.reshape(-1, d)
  m = min(k, x.shape[0])
  far_d = jnp.where(blocks.valid, mind, -jnp.inf).reshape(-1)
  _, cand_i = lax.top_k(far_d, m)
  cand_x = x[cand_i].astype(jnp.float32)
  cand_w = blocks.w.reshape(-1)[cand_i]
  cand_l = labels.reshape(-1)[cand_i]
  # Exact distances of the candidates: the expansion is not exactly 0 on
  # duplicates.
  cand_d = jnp.where(blocks.valid.reshape(-1)[cand_i],
                     jnp.sum(jnp.square(cand_x - centers[cand_l]), axis=1),
                     -jnp.inf)
  if axis_name is not None:  # merge every device's farthest rows
    gather = lambda a: lax.all_gather(a, axis_name, tiled=True)
    cand_d, cand_x, cand_w, cand_l = map(gather, (cand_d, cand_x, cand_w, cand_l))
    _, order = lax.top_k(cand_d, m)
    cand_d, cand_x, cand_w, cand_l = (cand_d[order], cand_x[order],
                                      cand_w[order], cand_l[order])
  rank = jnp.clip(jnp.cumsum(empty) - 1, 0, m - 1)
  px, pw, pl = cand_x[rank], cand_w[rank], cand_l[rank]
  e = (empty & (jnp.max(cand_d) > 0)).astype(sums.dtype)
  moved = px * (pw * e)[:, None]
  sums = sums - jax.ops.segment_sum(moved, pl, k)
  counts = counts - jax.ops.segment_sum(pw * e, pl, k)
  sums = jnp.where(e[:, None] > 0, moved, sums)
  counts = jnp.where(e > 0, pw, counts)
  return sums, counts


class _LloydState(NamedTuple):
  i: Array
  centers: Array
  labels: Array
  strict: Array
  done: Array


def lloyd(blocks: Blocks, init_centers: Array, tol_abs: Array,
          max_iter: Array, plan: Plan, *, spherical: bool, axis_name,
          precision, weighted: bool = True) -> KMeansResult:
  """Lloyd's algorithm from `init_centers` f32[k, d] with scikit-learn's
  stopping rule (labels unchanged, or squared centre shift <= tol_abs).

  blocks hold this device's rows; with `axis_name` the sums, counts and the
  convergence tests are reduced over that mesh axis. Labels come back as
  i32[nb, B].
  """
  psum = (lambda a: lax.psum(a, axis_name)) if axis_name else (lambda a: a)

  def new_centers(sums, counts):
    # An empty cluster left empty (duplicate points) takes the centre of the
    # heaviest cluster, as in scikit-learn.
    means = sums / jnp.where(counts > 0, counts, 1.0)[:, None]
    c = jnp.where(counts[:, None] > 0, means, means[jnp.argmax(counts)])
    return normalize_rows(c) if spherical else c

  def relocate(sums, counts, labels, centers):
    # The distances, one more pass, only when a cluster is empty.
    mind = assign_blocks(blocks, centers, plan, with_sums=False,
                         precision=precision)[1]
    return relocate_empty(sums, counts, labels, mind, centers, blocks,
                          axis_name)

  def body(s: _LloydState) -> _LloydState:
    labels, _, sums, counts = assign_blocks(
        blocks, s.centers, plan, with_sums=True, precision=precision,
        weighted=weighted, with_mind=False)
    sums, counts = psum(sums), psum(counts)
    sums, counts = lax.cond(
        jnp.any(counts == 0),
        lambda a: relocate(*a, labels, s.centers),
        lambda a: a, (sums, counts))
    centers = new_centers(sums, counts)
    strict = psum(jnp.sum(labels != s.labels)) == 0
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
      lambda: assign_blocks(blocks, s.centers, plan, with_sums=False,
                            precision=precision, with_mind=False)[0])
  inertia = psum(direct_inertia(blocks, s.centers, labels))
  if spherical:
    inertia = 0.5 * inertia  # ||x - c||^2 = 2 (1 - cos) for unit vectors
  return KMeansResult(s.centers, labels, inertia, s.i, s.done)
