"""Mini-batch k-means (Sculley 2010, per-centre learning rates 1/count).

Offers `minibatch_init`, the pure step `minibatch_step` (and
`minibatch_train_step`, its `train_step(state, batch, key)` form), the host
loop `minibatch_fit` over any iterable of batches (data larger than memory
is never loaded whole), `epoch_batches` and `minibatch_fit_arrays` (the whole
loop on device for in-memory data). Does not offer scikit-learn's random
centre reassignment.
"""

from __future__ import annotations

import functools
from typing import Iterable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from unsupjax.kmeans import checks
from unsupjax.kmeans.init import kmeans_parallel, kmeans_plusplus, random_init
from unsupjax.kmeans.lloyd import normalize_rows

Array = jax.Array


class MiniBatchState(NamedTuple):
  """centroids: f32[k, d]; counts: f32[k] weight seen per centre; step: i32[]."""
  centroids: Array
  counts: Array
  step: Array


def minibatch_init(key: Array, batch: Array, k: int, *,
                   init: str | Array = "k-means++",
                   metric: str = "euclidean") -> MiniBatchState:
  """Initial state from one batch f32[b, d] (b >= k) or given centroids."""
  checks.check_x(batch, "batch")
  checks.check_common(k, init=init, n_init=1, max_iter=1, tol=0.0,
                      metric=metric, d=batch.shape[1], n=batch.shape[0])
  if isinstance(init, str):
    b = normalize_rows(jnp.asarray(batch, jnp.float32)) if metric == "cosine" \
        else batch
    fn = {"k-means++": kmeans_plusplus, "k-means||": kmeans_parallel,
          "random": random_init}[init]
    c, _ = fn(key, b, k)
  else:
    c = jnp.asarray(init, jnp.float32)
  if metric == "cosine":
    c = normalize_rows(c)
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
    x = normalize_rows(x)
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
    new = normalize_rows(new)
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
  checks.check_metric(metric)
  state, size = None, None
  for i, batch in enumerate(batches):
    if max_steps is not None and i >= max_steps:
      break
    checks.check_x(batch, "batch")
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
  checks.check_x(x)
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
