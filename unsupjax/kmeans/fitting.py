"""`fit` and `fit_sharded`: k-means with scikit-learn's semantics.

Offers the two entry points: inputs validated eagerly (before anything
compiles), x centred and cut into row blocks, `n_init` restarts drawn and
run under `vmap` (each pass over x serves every restart), the lowest
inertia kept, and scikit-learn's ConvergenceWarning when fewer distinct
clusters than k are found. Does not implement the Lloyd pass (`lloyd.py`),
the initializers (`init.py`) or device placement (`sharded.py`).
"""

from __future__ import annotations

import functools
import warnings

import jax
import jax.numpy as jnp
from jax import lax

from unsupjax.kmeans import checks
from unsupjax.kmeans.init import (KMEANS_PARALLEL_OVERSAMPLING,
                                  KMEANS_PARALLEL_ROUNDS, parallel_core,
                                  plusplus_core, random_idx)
from unsupjax.kmeans.lloyd import (KMeansResult, lloyd, normalize_rows,
                                   to_blocks)
from unsupjax.kmeans.plan import (DIRECT_MAX_D, Plan, bucket, check_plan,
                                  choose_plan, pad_to)
from unsupjax.kmeans.sharded import run_sharded

Array = jax.Array


def _fit_impl(key, x, w, init_centers, tol, max_iter, n_valid, d_valid, *, k,
              init, n_init, metric, weighted, plan, n_local_trials, mesh,
              axis_name, dtype):
  """x: f32[n, d] whose first n_valid rows and d_valid columns are the data
  (the rest zero padding, `bucket`); returns (KMeansResult with labels
  i32[n], the number of distinct labels among the valid rows)."""
  n, d = x.shape
  spherical = metric == "cosine"
  precision = lax.Precision.HIGHEST
  x = x.astype(jnp.float32)
  row_ok = (jnp.arange(n) < n_valid)[:, None]
  if spherical:
    x = normalize_rows(x)
    shift = jnp.zeros((d,), x.dtype)
  else:  # centring keeps ||x||^2 - 2x.c + ||c||^2 accurate in float32
    shift = jnp.sum(x, axis=0) / n_valid
  n_dev = 1 if mesh is None else mesh.shape[axis_name]
  blocks = to_blocks(jnp.where(row_ok, x - shift, 0.0), w, plan.block,
                     multiple=n_dev, dtype=jnp.dtype(dtype), n_valid=n_valid)
  # scikit-learn's tol: relative to the mean per-feature variance of x,
  # from the row norms and column means (no (n, d) temporary).
  mu = jnp.sum(blocks.x.astype(jnp.float32), axis=(0, 1)) / n_valid
  variance = (jnp.sum(blocks.xsq) / n_valid - jnp.sum(mu * mu)) / d_valid
  tol_abs = tol * variance

  if init_centers is not None:
    c = init_centers.astype(jnp.float32)
    c0 = (normalize_rows(c) if spherical else c - shift)[None]
  else:
    flat_x = blocks.x.reshape(-1, d)
    flat_w = blocks.w.reshape(-1)
    flat_xsq = blocks.xsq.reshape(-1)
    keys = jax.random.split(key, n_init)
    if init == "k-means++":
      draw = lambda kk: plusplus_core(kk, flat_x, flat_xsq, flat_w, k,
                                      n_valid, n_local_trials, precision)[0]
    elif init == "k-means||":
      draw = lambda kk: parallel_core(
          kk, blocks, k, n_valid, n_local_trials, precision,
          KMEANS_PARALLEL_ROUNDS,
          KMEANS_PARALLEL_OVERSAMPLING)[0]
    else:
      draw = lambda kk: flat_x[random_idx(kk, flat_w, k)]
    c0 = jax.vmap(draw)(keys).astype(jnp.float32)
    if spherical:
      c0 = normalize_rows(c0)

  def runs(b, c0, t, m, axis_name):
    run = functools.partial(lloyd, tol_abs=t, max_iter=m, plan=plan,
                            spherical=spherical, axis_name=axis_name,
                            precision=precision, weighted=weighted)
    if c0.shape[0] == 1:  # no batch axis: keeps the dot a plain matmul
      return jax.tree.map(lambda a: a[None], run(b, c0[0]))
    # Restarts share each pass over x: one (n_init * k, B) matmul per block.
    return jax.vmap(lambda c: run(b, c))(c0)

  if mesh is None:
    res = runs(blocks, c0, tol_abs, max_iter, None)
  else:
    res = run_sharded(runs, blocks, c0, tol_abs, max_iter, mesh, axis_name)

  best = jnp.argmin(res.inertia)  # first of equal inertias, like sklearn
  labels = res.labels[best].reshape(-1)[:n]
  n_distinct = jnp.sum(jnp.zeros((k,), jnp.int32).at[labels].max(
      row_ok[:, 0].astype(jnp.int32)))
  return KMeansResult(res.centroids[best] + shift, labels, res.inertia[best],
                      res.n_iter[best], res.converged[best]), n_distinct


_FIT_STATIC = ("k", "init", "n_init", "metric", "weighted", "plan",
               "n_local_trials", "mesh", "axis_name", "dtype")
_fit_jit = jax.jit(_fit_impl, static_argnames=_FIT_STATIC)


def fit(key: Array, x: Array, k: int, *, init: str | Array = "k-means++",
        n_init: int = 1, max_iter: int = 300, tol: float = 1e-4,
        sample_weight: Array | None = None, metric: str = "euclidean",
        block_size: int | None = None, n_local_trials: int | None = None,
        dtype: str = "float32", plan: Plan | None = None) -> KMeansResult:
  """k-means with scikit-learn's semantics.

  Args:
    key: PRNG key for the initialization (unused when `init` is an array).
    x: f32[n, d] data.
    k: number of clusters, 1 <= k <= n (static; so are `init` when a
      string, `n_init`, `metric`, `block_size`, `dtype` and `plan`).
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
    block_size: rows per distance block (default: the plan's).
    dtype: how the centred x is stored during the fit: 'float32', or
      'bfloat16' / 'float16' (half the memory traffic; distances, sums and
      the inertia still accumulate in float32, on the rounded data).
    plan: a `Plan` overriding the cost model's layout (`choose_plan`).

  Returns:
    KMeansResult(centroids f32[k, d], labels i32[n], inertia f32[],
    n_iter i32[], converged bool[]). Called eagerly, it warns
    (scikit-learn's ConvergenceWarning) when fewer than k distinct labels
    were found, which waits for the result.
  """
  return _fit_entry(key, x, k, init=init, n_init=n_init, max_iter=max_iter,
                    tol=tol, sample_weight=sample_weight, metric=metric,
                    block_size=block_size, n_local_trials=n_local_trials,
                    mesh=None, axis_name=None, dtype=dtype, plan=plan)


def fit_sharded(key: Array, x: Array, k: int, *, mesh: jax.sharding.Mesh,
                axis_name: str | None = None, init: str | Array = "k-means++",
                n_init: int = 1, max_iter: int = 300, tol: float = 1e-4,
                sample_weight: Array | None = None, metric: str = "euclidean",
                block_size: int | None = None,
                n_local_trials: int | None = None, dtype: str = "float32",
                plan: Plan | None = None) -> KMeansResult:
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
                    mesh=mesh, axis_name=axis_name, dtype=dtype, plan=plan)


def _fit_entry(key, x, k, *, init, n_init, max_iter, tol, sample_weight,
               metric, block_size, n_local_trials, mesh, axis_name, dtype,
               plan):
  checks.check_x(x)
  n, d = x.shape
  checks.check_common(k, init=init, n_init=n_init, max_iter=max_iter, tol=tol,
                      metric=metric, d=d, n=n)
  checks.check_weight(sample_weight, n)
  checks.check_block_size(block_size)
  dtype = checks.check_dtype(dtype)
  n_dev = 1 if mesh is None else mesh.shape[axis_name]
  nb_rows, nb_cols = bucket(n, d)
  if plan is not None:  # a given plan may be for these columns (direct form)
    nb_cols = d
  init_centers = None
  if not isinstance(init, str):
    init_centers = pad_to(init, k, nb_cols)
    init, n_init = "array", 1
  if plan is None:
    plan = choose_plan(-(-nb_rows // n_dev), nb_cols, k, block_size=block_size,
                       restarts=n_init)
  else:
    check_plan(plan)
    if block_size is not None:
      plan = plan._replace(block=int(block_size))
  if plan.distance == "direct" and nb_cols > DIRECT_MAX_D:
    raise ValueError(f"plan: expected d <= {DIRECT_MAX_D} features with "
                     f"distance='direct', got {nb_cols}")
  plan = plan._replace(block=int(plan.block))
  w = checks.as_weights(sample_weight, n)
  if nb_rows != n:
    w = jnp.pad(w, (0, nb_rows - n))
  res, n_distinct = _fit_jit(
      key, pad_to(x, nb_rows, nb_cols), w, init_centers,
      jnp.asarray(tol, jnp.float32), jnp.asarray(max_iter, jnp.int32),
      jnp.asarray(n, jnp.int32), jnp.asarray(d, jnp.float32), k=k,
      init=init, n_init=int(n_init), metric=metric,
      weighted=sample_weight is not None, plan=plan,
      n_local_trials=n_local_trials, mesh=mesh, axis_name=axis_name,
      dtype=dtype)
  if (nb_rows, nb_cols) != (n, d):
    res = res._replace(centroids=res.centroids[:, :d], labels=res.labels[:n])
  if checks.is_concrete(n_distinct) and int(n_distinct) < k:
    from sklearn.exceptions import ConvergenceWarning
    warnings.warn(
        f"Number of distinct clusters ({int(n_distinct)}) found smaller than "
        f"n_clusters ({k}). Possibly due to duplicate points in x.",
        ConvergenceWarning, stacklevel=3)
  return res
