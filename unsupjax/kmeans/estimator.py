"""`KMeans`: a scikit-learn estimator over `unsupjax.kmeans.fit`.

It is a real one: `BaseEstimator` (get_params/set_params, clone, repr,
GridSearchCV), `ClusterMixin`, `TransformerMixin` (with feature names
kmeans0..), NotFittedError before fit, scikit-learn's input validation
(`n_features_in_`, feature names) and its ConvergenceWarning when fewer
distinct clusters than `n_clusters` are found. Device arrays (jax.Array)
are fitted without a host copy. Does not offer sparse input or Elkan's
algorithm; computation is float32 (`transform` returns float32).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.base import (BaseEstimator, ClassNamePrefixFeaturesOutMixin,
                          ClusterMixin, TransformerMixin)
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from unsupjax.kmeans import checks
from unsupjax.kmeans.fitting import fit as _fit
from unsupjax.kmeans.predicting import inertia as _inertia
from unsupjax.kmeans.predicting import predict as _predict
from unsupjax.kmeans.predicting import transform as _transform

try:  # scikit-learn >= 1.6
  from sklearn.utils.validation import validate_data as _validate_data
except ImportError:  # pragma: no cover - older scikit-learn
  def _validate_data(est, X, **kw):
    return est._validate_data(X, **kw)


def key_from(random_state: Any) -> jax.Array:
  """A JAX key from scikit-learn's random_state (None, int, RandomState) or
  a JAX key itself."""
  if isinstance(random_state, jax.Array):
    return random_state
  try:
    rng = check_random_state(random_state)
  except ValueError:
    raise ValueError(f"random_state: expected None, an int, a numpy "
                     f"RandomState or a JAX key, got {random_state!r}") from None
  return jax.random.key(int(rng.randint(0, 2**31 - 1)))


class KMeans(ClassNamePrefixFeaturesOutMixin, ClusterMixin, TransformerMixin,
             BaseEstimator):
  """scikit-learn's `KMeans` interface on `unsupjax.kmeans.fit`.

  KMeans(n_clusters=8, *, init="k-means++", n_init="auto", max_iter=300,
  tol=1e-4, random_state=None, metric="euclidean", block_size=None,
  dtype="float32"). `n_init="auto"` is 1 for k-means++ or given centroids
  and 10 for 'random', as in scikit-learn. `random_state`: None (a fresh
  seed from NumPy's global RNG, like scikit-learn), an int, a RandomState
  or a JAX key.

  After `fit`: `cluster_centers_` (np f32[k, d]), `labels_` (np i32[n]),
  `inertia_` (float), `n_iter_` (int), `n_features_in_`, `converged_`, and
  `feature_names_in_` when X had string column names.
  """

  def __init__(self, n_clusters: int = 8, *, init: str | Any = "k-means++",
               n_init: int | str = "auto", max_iter: int = 300,
               tol: float = 1e-4, random_state: Any = None,
               metric: str = "euclidean", block_size: int | None = None,
               dtype: str = "float32"):
    self.n_clusters = n_clusters
    self.init = init
    self.n_init = n_init
    self.max_iter = max_iter
    self.tol = tol
    self.random_state = random_state
    self.metric = metric
    self.block_size = block_size
    self.dtype = dtype

  def __sklearn_tags__(self):
    tags = super().__sklearn_tags__()
    tags.transformer_tags.preserves_dtype = ["float32"]
    return tags

  def _n_init(self) -> int:
    if not isinstance(self.init, str):
      return 1
    if self.n_init == "auto":
      return 10 if self.init == "random" else 1
    return self.n_init

  def _check_x(self, X, reset: bool):
    if isinstance(X, jax.Array):  # stays on device
      checks.check_x(X, "X")
      if reset:
        self.n_features_in_ = int(X.shape[1])
        if hasattr(self, "feature_names_in_"):
          del self.feature_names_in_
      elif X.shape[1] != self.n_features_in_:
        raise ValueError(f"X has {X.shape[1]} features, but KMeans is "
                         f"expecting {self.n_features_in_} features as input.")
      return X
    return _validate_data(self, X, reset=reset, dtype=np.float32,
                          order="C", accept_sparse=False)

  def fit(self, X, y=None, sample_weight=None) -> "KMeans":
    """Fits on X f32[n, d] (array-like, or a jax.Array kept on device)."""
    x = self._check_x(X, reset=True)
    if sample_weight is not None:
      sample_weight = np.asarray(sample_weight, np.float32)
    init = self.init
    if not isinstance(init, str):
      init = np.asarray(init, np.float32)
    res = _fit(key_from(self.random_state), x, self.n_clusters, init=init,
               n_init=self._n_init(), max_iter=self.max_iter, tol=self.tol,
               sample_weight=sample_weight, metric=self.metric,
               block_size=self.block_size, dtype=self.dtype)
    self.cluster_centers_ = np.asarray(res.centroids)
    self.labels_ = np.asarray(res.labels)
    self.inertia_ = float(res.inertia)
    self.n_iter_ = int(res.n_iter)
    self.converged_ = bool(res.converged)
    self._n_features_out = self.cluster_centers_.shape[0]
    return self

  def predict(self, X) -> np.ndarray:
    check_is_fitted(self)
    x = self._check_x(X, reset=False)
    return np.asarray(_predict(self.cluster_centers_, jnp.asarray(x),
                               metric=self.metric, block_size=self.block_size))

  def fit_predict(self, X, y=None, sample_weight=None) -> np.ndarray:
    return self.fit(X, sample_weight=sample_weight).labels_

  def transform(self, X) -> np.ndarray:
    """Distances f32[n, k] to every centre (Euclidean, or 1 - cos)."""
    check_is_fitted(self)
    x = self._check_x(X, reset=False)
    return np.asarray(_transform(self.cluster_centers_, jnp.asarray(x),
                                 metric=self.metric))

  def fit_transform(self, X, y=None, sample_weight=None) -> np.ndarray:
    return self.fit(X, sample_weight=sample_weight).transform(X)

  def score(self, X, y=None, sample_weight=None) -> float:
    """Opposite of the inertia of X under the fitted centres."""
    check_is_fitted(self)
    x = self._check_x(X, reset=False)
    if sample_weight is not None:
      sample_weight = np.asarray(sample_weight, np.float32)
    return -float(_inertia(self.cluster_centers_, jnp.asarray(x),
                           sample_weight=sample_weight, metric=self.metric,
                           block_size=self.block_size))
