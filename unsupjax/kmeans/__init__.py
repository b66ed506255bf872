"""k-means on accelerator arrays: scikit-learn's answers, vectorized.

Offers:
  * `fit(key, x, k, ...) -> KMeansResult`: Lloyd's algorithm inside one
    `lax.while_loop` with scikit-learn's convergence test (strict label
    convergence, or squared centre shift <= tol * mean per-feature
    variance), scikit-learn's empty-cluster relocation, `n_init` restarts
    under `vmap` (lowest inertia kept), `sample_weight`, `metric="cosine"`
    (spherical k-means) and `dtype` (float32, or bfloat16/float16 storage
    with float32 accumulation). `fit_sharded` shards the rows over a mesh.
  * The layout of each pass over x (distance form and layout, argmin
    method, per-cluster sums, block size) is a `Plan` that `choose_plan`
    picks from n, d and k with a cost model calibrated on XLA:CPU.
  * Initializers with explicit keys: `kmeans_plusplus`, `kmeans_parallel`
    (k-means||), `random_init`.
  * Using centroids: `predict`, `inertia`, `predict_with_inertia`,
    `transform`.
  * Mini-batch k-means (Sculley 2010): `minibatch_init`, `minibatch_step`,
    `minibatch_train_step`, `minibatch_fit` (any iterable of batches),
    `epoch_batches`, `minibatch_fit_arrays` (whole loop on device).
  * `KMeans`: a scikit-learn estimator (clone, GridSearchCV,
    check_is_fitted, NotFittedError, feature names).
  * `clustering_loss`: the k-means objective as a differentiable
    per-example loss, for neural objectives (DEC's Student-t assignment is
    `unsupjax.models.dec.student_t_assignment`).

Does not offer: Elkan's algorithm, sparse inputs, scikit-learn's random
centre reassignment in mini-batch mode, or float64 computation.

Modules, each importing only those before it: `checks` (input validation),
`plan` (layouts, the cost model, small-input padding), `lloyd` (the pass
and the loop), `init`, `sharded`, `predicting`, `fitting`, `minibatch`,
`soft`, `estimator`.
"""

from unsupjax.kmeans.checks import INITS, METRICS  # noqa: F401 (constants)
from unsupjax.kmeans.fitting import fit, fit_sharded
from unsupjax.kmeans.init import (  # noqa: F401 (constants)
    KMEANS_PARALLEL_OVERSAMPLING, KMEANS_PARALLEL_ROUNDS, kmeans_parallel,
    kmeans_plusplus, random_init)
from unsupjax.kmeans.lloyd import KMeansResult
from unsupjax.kmeans.minibatch import (MiniBatchState, epoch_batches,
                                       minibatch_fit, minibatch_fit_arrays,
                                       minibatch_init, minibatch_step,
                                       minibatch_train_step)
from unsupjax.kmeans.plan import Plan, choose_plan, default_block_size
from unsupjax.kmeans.predicting import (inertia, predict, predict_with_inertia,
                                        transform)
from unsupjax.kmeans.soft import clustering_loss

__all__ = [
    "KMeans", "KMeansResult", "MiniBatchState", "Plan", "choose_plan",
    "clustering_loss", "default_block_size", "epoch_batches", "fit",
    "fit_sharded", "inertia", "kmeans_parallel", "kmeans_plusplus",
    "minibatch_fit", "minibatch_fit_arrays", "minibatch_init",
    "minibatch_step", "minibatch_train_step", "predict",
    "predict_with_inertia", "random_init", "transform",
]


def __getattr__(name: str):
  # The estimator imports scikit-learn (~1 s): only when KMeans is used.
  if name == "KMeans":
    from unsupjax.kmeans.estimator import KMeans
    return KMeans
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
