"""Deep clustering, trained: DEC / IDEC through the training loop, and N2D.

  * `fit(state, x, ...)`: DEC's outer loop as `unsupjax.training.fit` with
    one periodic action: every `update_interval` steps (one loop "epoch"
    here) the targets and labels are refreshed, and the run stops when
    fewer than `tol` of the labels changed. The data order runs on across
    refreshes (`training.stream_order`), the targets are part of the
    checkpointed state, so a resumed run is the uninterrupted one.
  * `manifold_cluster`: N2D's clustering of an embedding (UMAP to a few
    dimensions, then a full-covariance Gaussian mixture); needs the optional
    `umap-learn` package (`pip install unsupjax[cluster]`).
  * `refresh_count`: how many refreshes (loop epochs of `fit`) a budget of
    passes over the data buys.
  * The model pieces of `unsupjax.models.dec` (`DECConfig`, `init_state`,
    `create_state`, `train_step`, `embed`, ...), re-exported.

Does not offer: autoencoder pretraining (train one with `training.fit`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import chex
import jax
import numpy as np

from unsupjax import training
from unsupjax.models.dec import (GAMMA_ON, OPTIMIZERS, DECConfig, DECState, create_state,
                                 dec_loss, embed, init_state, kl_divergence, predict,
                                 refresh_target, student_t_assignment,
                                 target_distribution, train_step)

__all__ = ["DECConfig", "DECState", "GAMMA_ON", "OPTIMIZERS", "create_state", "dec_loss",
           "embed", "fit", "init_state", "kl_divergence", "manifold_cluster", "predict",
           "refresh_count", "refresh_target", "student_t_assignment",
           "target_distribution", "train_step"]


def refresh_count(n: int, batch_size: int, update_interval: int, max_epochs: float) -> int:
  """The refreshes `fit` runs at most: the whole `update_interval`-step
  intervals that fit in `max_epochs` passes of n // batch_size steps (at
  least one)."""
  if not 1 <= batch_size <= n:
    raise ValueError(f"batch_size: expected 1..{n}, got {batch_size}")
  if not max_epochs > 0:
    raise ValueError(f"max_epochs: expected > 0, got {max_epochs}")
  return max(1, math.floor(max_epochs * (n // batch_size) / update_interval))


def fit(state: DECState, x: np.ndarray, *, key: chex.PRNGKey, max_epochs: float,
        batch_size: int = 256,
        on_refresh: Callable[[np.ndarray], dict] | None = None,
        **fit_kwargs: Any) -> tuple[training.FitResult, np.ndarray]:
  """DEC / IDEC training from `init_state`'s state.

  x: f32[n, ...] the data the targets belong to (state.target: f32[n, k]).
  Runs `update_interval` steps per loop epoch, for at most the whole
  intervals that fit in `max_epochs` passes over x (at least one); after
  each, refreshes the targets and stops when fewer than `tol` of the labels
  changed. Each record of the loop (one per refresh, and one for the start
  at epoch 0) holds step, data_epoch (passes over x so far), delta_label
  (None at the start) and whatever `on_refresh(labels i32[n])` returns
  (e.g. ACC/NMI against held-back labels). fit_kwargs go to
  `training.fit` (workdir, resume, progress, parallel, ...).
  Returns (the loop's FitResult, the final labels i32[n]).
  """
  n = int(len(x))
  interval = state.config.update_interval
  refreshes = refresh_count(n, batch_size, interval, max_epochs)
  if jax.process_count() > 1:
    raise ValueError(f"parallel: DEC's target refresh needs every example in one "
                     f"process, got {jax.process_count()} processes")
  per_epoch = n // batch_size

  def refresh(epoch: int, st: DECState) -> training.ActionOutput:
    if epoch == 0:
      new, delta = st, None
    else:
      new, delta = refresh_target(st, x)
    labels = np.asarray(new.labels)
    values = {"data_epoch": int(new.step) / per_epoch, "delta_label": delta,
              **(on_refresh(labels) if on_refresh is not None else {})}
    stop = delta is not None and delta < st.config.tol
    return training.ActionOutput(values=values, state=None if epoch == 0 else new, stop=stop)

  xs = {"x": np.asarray(x), "index": np.arange(n, dtype=np.int32)}
  result = training.fit(state, train_step, None, xs, key=key, epochs=refreshes,
                        batch_size=batch_size, steps_per_epoch=interval,
                        actions=[training.Action(refresh, every=1, at_start=True)],
                        **fit_kwargs)
  return result, np.asarray(result.state.labels)


# UMAP's own threshold: below it, it computes exact nearest neighbours
# (above, approximate ones with NN-descent).
UMAP_EXACT_BELOW = 4096


def _exact_neighbours(z: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
  """Each row's k nearest rows of z: f32[n, d], itself among them: (indices
  i64[n, k], euclidean distances f64[n, k]). The distances are UMAP's:
  float32 differences, squared, summed in float64."""
  from sklearn.neighbors import NearestNeighbors
  idx = NearestNeighbors(n_neighbors=k).fit(z).kneighbors(z, return_distance=False)
  dist = np.empty(idx.shape, np.float64)
  step = max(1, (1 << 22) // max(1, k * z.shape[1]))  # rows per ~16 MB of differences
  for i in range(0, len(z), step):
    diff = z[i:i + step, None, :] - z[idx[i:i + step]]
    dist[i:i + step] = np.sqrt((diff * diff).astype(np.float64).sum(-1))
  return idx, dist


def manifold_cluster(z: np.ndarray, n_clusters: int, *, seed: int,
                     n_components: int | None = None, n_neighbors: int = 20,
                     min_dist: float = 0.0,
                     gmm_restarts: int = 10) -> tuple[np.ndarray, np.ndarray]:
  """N2D (McConville et al. 2020): UMAP of z: f32[n, d] to `n_components`
  (default: n_clusters) dimensions with a small min_dist, then a
  full-covariance Gaussian mixture with n_clusters components, fitted from
  `gmm_restarts` k-means initialisations and kept by likelihood (one
  initialisation can merge two digits and split a third on MNIST; the
  likelihood, not the labels, picks the restart).

  Returns (labels i32[n], the UMAP embedding f32[n, n_components]).
  Raises ImportError with the install command when umap-learn is missing.
  """
  n = int(len(z))
  if not isinstance(n_clusters, (int, np.integer)) or n_clusters < 2:
    raise ValueError(f"n_clusters: expected an integer >= 2, got {n_clusters!r}")
  if n_clusters > n:
    raise ValueError(f"n_clusters: expected at most the number of examples ({n}), got {n_clusters}")
  if not isinstance(gmm_restarts, (int, np.integer)) or gmm_restarts < 1:
    raise ValueError(f"gmm_restarts: expected an integer >= 1, got {gmm_restarts!r}")
  if n_neighbors < 2:
    raise ValueError(f"n_neighbors: expected an integer >= 2, got {n_neighbors!r}")
  try:
    import umap  # noqa: PLC0415  (optional extra)
  except ImportError:
    raise ImportError("manifold clustering needs umap-learn: pip install "
                      "'unsupjax[cluster]' (or pip install umap-learn)") from None
  from sklearn.mixture import GaussianMixture
  z = np.asarray(z, np.float32)
  k = min(n_neighbors, n - 1)
  knn = {}
  if n < UMAP_EXACT_BELOW:
    # Below this size UMAP finds the exact neighbours itself, through all
    # pairwise distances and a numba kernel compiled on its first call
    # (seconds, in every new process). It is handed the same neighbours
    # instead, found by scikit-learn, with UMAP's own distance arithmetic,
    # so its graph and embedding are unchanged.
    knn = {"precomputed_knn": _exact_neighbours(z, k)}
  # A seeded UMAP runs on one thread; saying so keeps it from warning that
  # it overrode its default of all cores.
  reducer = umap.UMAP(n_components=n_components or n_clusters, n_neighbors=k,
                      min_dist=min_dist, metric="euclidean", random_state=seed,
                      n_jobs=1, **knn)
  with warnings.catch_warnings():
    # Without a search index UMAP cannot embed new points, which N2D never does.
    warnings.filterwarnings("ignore", message=r"precomputed_knn\[2\]")
    u = reducer.fit_transform(z).astype(np.float32)
  gmm = GaussianMixture(n_components=n_clusters, covariance_type="full",
                        n_init=int(gmm_restarts), random_state=seed)
  return gmm.fit_predict(u).astype(np.int32), u
