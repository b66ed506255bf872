"""Deep clustering on an autoencoder's embedding: AE + k-means, DEC, IDEC, N2D.

Offers
  * pure pieces of DEC (Xie et al. 2016): `student_t_assignment` (re-exported
    from `kmeans`), `target_distribution` (the sharpened p), `kl_divergence`
    (per-example KL(p || q)), `dec_loss` (the KL loss of an embedding against
    fixed targets, differentiable in the embedding and the centres);
  * `DECConfig`, `DECState`, `init_state` (centres from k-means on the
    pretrained embedding), and the pure `train_step(state, batch, key)`:
    one optimizer step on KL(p || q) (+ gamma * reconstruction loss: IDEC,
    Guo et al. 2017), where batch = {"x": f32[b, ...], "index": i32[b]} and
    the per-example targets p are looked up in the state;
  * `refresh_target`: q over the whole data set, the new target p and the
    hard labels, to be called every `update_interval` steps;
  * `fit`: the DEC outer loop (refresh the targets, stop when fewer than
    `tol` of the labels changed, else run `update_interval` steps as one
    compiled `lax.scan` of `train_step` over keyed batches drawn with
    `data.batch_indices`, the order `train.fit` uses);
  * `embed`: an autoencoder's (or DEC state's) embedding of a large array in
    batches;
  * `manifold_cluster`: N2D's clustering of an embedding (UMAP to a few
    dimensions, then a full-covariance Gaussian mixture); needs the optional
    `umap-learn` package (`pip install unsupjax[cluster]`).

Labels never enter any function here; metrics against labels live in
`unsupjax.metrics.clustering`. Does not offer: autoencoder pretraining (see
`autoencoder.py` and `train.fit`), VaDE, or contrastive clustering (IIC).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from unsupjax import autoencoder, data as data_lib, kmeans, train
from unsupjax import parallel as parallel_lib
from unsupjax.kmeans import student_t_assignment

__all__ = ["DECConfig", "DECState", "OPTIMIZERS", "dec_loss", "embed", "fit",
           "init_state", "kl_divergence", "manifold_cluster", "predict",
           "refresh_target", "student_t_assignment", "target_distribution",
           "train_step"]

OPTIMIZERS = ("sgd", "adam")
EMBED_BATCH = 2048


def target_distribution(q: jax.Array) -> jax.Array:
  """DEC's auxiliary target p_ij = (q_ij^2 / f_j) / sum_j' (q_ij'^2 / f_j').

  q: f32[n, k] soft assignments (rows sum to 1) over the WHOLE data set,
  since f_j = sum_i q_ij are its cluster frequencies -> f32[n, k], rows sum
  to 1, sharper than q (squaring) and normalised by cluster size (so large
  clusters do not swallow the others).
  """
  weight = q * q / jnp.sum(q, axis=0, keepdims=True)
  return weight / jnp.sum(weight, axis=1, keepdims=True)


def kl_divergence(p: jax.Array, q: jax.Array) -> jax.Array:
  """Per-example KL(p_i || q_i) = sum_j p_ij log(p_ij / q_ij): f32[b].

  p, q: f32[b, k]; terms with p_ij = 0 count 0.
  """
  safe_p = jnp.where(p > 0, p, 1.0)
  return jnp.sum(jnp.where(p > 0, p * (jnp.log(safe_p) - jnp.log(q)), 0.0),
                 axis=1)


def dec_loss(z: jax.Array, centroids: jax.Array, p: jax.Array,
             alpha: float = 1.0) -> jax.Array:
  """DEC's clustering loss per example, KL(p || q(z, centroids)): f32[b].

  z: f32[b, d] embeddings; centroids: f32[k, d]; p: f32[b, k] fixed targets.
  """
  return kl_divergence(p, student_t_assignment(z, centroids, alpha))


@dataclasses.dataclass(frozen=True)
class DECConfig:
  """Hyper-parameters of the clustering phase.

  n_clusters: k >= 2. alpha: Student-t degrees of freedom (1 in DEC).
  gamma: weight of the reconstruction loss (0: DEC; IDEC uses 0.1).
  optimizer: 'sgd' (momentum 0.9, DEC's choice, lr 0.01) or 'adam' (IDEC's,
  lr 1e-3). update_interval: steps between target refreshes. tol: stop when
  fewer than this fraction of labels changed between two refreshes.
  """
  n_clusters: int = 10
  alpha: float = 1.0
  gamma: float = 0.0
  optimizer: str = "sgd"
  learning_rate: float = 0.01
  update_interval: int = 140
  tol: float = 1e-3

  def __post_init__(self):
    if not isinstance(self.n_clusters, (int, np.integer)) or self.n_clusters < 2:
      raise ValueError(f"n_clusters: expected an integer >= 2, got {self.n_clusters!r}")
    if not self.alpha > 0:
      raise ValueError(f"alpha: expected > 0, got {self.alpha}")
    if not self.gamma >= 0:
      raise ValueError(f"gamma: expected >= 0, got {self.gamma}")
    if self.optimizer not in OPTIMIZERS:
      raise ValueError(f"optimizer: expected one of {OPTIMIZERS}, got {self.optimizer!r}")
    if not self.learning_rate > 0:
      raise ValueError(f"learning_rate: expected > 0, got {self.learning_rate}")
    if not isinstance(self.update_interval, (int, np.integer)) or self.update_interval < 1:
      raise ValueError(f"update_interval: expected a positive integer, got "
                       f"{self.update_interval!r}")
    if not 0 <= self.tol < 1:
      raise ValueError(f"tol: expected a fraction in [0, 1), got {self.tol}")


class DECState(struct.PyTreeNode):
  """step: i32[]; params: {"ae": autoencoder params, "centroids": f32[k, d]};
  opt_state; target: f32[n, k], the current p of every training example."""
  step: jax.Array
  params: Any
  opt_state: Any
  target: jax.Array
  config: DECConfig = struct.field(pytree_node=False)
  ae_config: autoencoder.AEConfig = struct.field(pytree_node=False)
  model: Any = struct.field(pytree_node=False)
  tx: optax.GradientTransformation = struct.field(pytree_node=False)


def _check_n(n: int, k: int) -> None:
  if k > n:
    raise ValueError(f"n_clusters: expected at most the number of examples "
                     f"({n}), got {k}")


@functools.lru_cache(maxsize=16)
def _embed_fn(model) -> Callable:
  return jax.jit(lambda params, xb: model.apply({"params": params}, xb,
                                                method="encode"))


def embed(state: Any, x: np.ndarray, batch_size: int = EMBED_BATCH) -> np.ndarray:
  """The embedding f32[n, d] of x: f32[n, ...] under an `AEState` or
  `DECState` (its encoder), computed in batches (one compile per batch shape)."""
  params = state.params["ae"] if isinstance(state, DECState) else state.params
  fn = _embed_fn(state.model)
  out = [np.asarray(fn(params, jnp.asarray(x[i:i + batch_size])))
         for i in range(0, len(x), batch_size)]
  return np.concatenate(out)


def init_state(key: chex.PRNGKey, config: DECConfig, ae_state: autoencoder.AEState,
               x: np.ndarray, *, n_init: int = 20) -> tuple[DECState, np.ndarray]:
  """DEC's start: the pretrained autoencoder, centres from k-means (best of
  `n_init` k-means++ restarts, as DEC) on its embedding of x: f32[n, ...].

  Returns (state with the targets p of that start, k-means labels i32[n]).
  """
  n = int(len(x))
  _check_n(n, config.n_clusters)
  z = embed(ae_state, x)
  km = kmeans.fit(key, jnp.asarray(z), config.n_clusters, n_init=n_init)
  # A copy: the loop donates the state's buffers, the caller keeps its AE.
  params = {"ae": jax.tree.map(jnp.copy, ae_state.params), "centroids": km.centroids}
  tx = (optax.sgd(config.learning_rate, momentum=0.9) if config.optimizer == "sgd"
        else optax.adam(config.learning_rate))
  state = DECState(step=jnp.zeros((), jnp.int32), params=params,
                   opt_state=tx.init(params),
                   target=jnp.zeros((n, config.n_clusters), jnp.float32),
                   config=config, ae_config=ae_state.config, model=ae_state.model,
                   tx=tx)
  state, _ = refresh_target(state, x)
  return state, np.asarray(km.labels)


def train_step(state: DECState, batch: dict[str, jax.Array],
               key: chex.PRNGKey, *, axis_name: str | None = None
               ) -> tuple[DECState, dict[str, jax.Array]]:
  """One optimizer step on mean KL(p || q) + gamma * mean reconstruction loss.

  batch: {"x": f32[b, ...] in [0, 1], "index": i32[b] rows of state.target}.
  key: unused (the step is deterministic), kept for the loop's contract.
  axis_name: inside pmap, the device axis: gradients and metrics are
  averaged over it (each device holds every target row, so it looks up its
  own batch's). With gamma = 0 (DEC) only the encoder and the centres get
  gradients.
  """
  del key
  cfg = state.config
  p = state.target[batch["index"]]

  def loss_fn(params):
    variables = {"params": params["ae"]}
    if cfg.gamma > 0:
      logits, z = state.model.apply(variables, batch["x"])
      recon = jnp.mean(autoencoder.per_example_loss(state.ae_config, logits, batch["x"]))
    else:
      z = state.model.apply(variables, batch["x"], method="encode")
      recon = jnp.zeros(())
    kl = jnp.mean(dec_loss(z, params["centroids"], p, cfg.alpha))
    return kl + cfg.gamma * recon, (kl, recon)

  (loss, (kl, recon)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  grads = parallel_lib.pmean(grads, axis_name)
  updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = {"loss": loss, "kl": kl}
  if cfg.gamma > 0:
    metrics["recon"] = recon
  metrics = parallel_lib.pmean(metrics, axis_name)
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


def predict(state: DECState, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(q f32[n, k], hard labels i32[n]) of x under the state's encoder."""
  z = embed(state, x)
  q = np.asarray(student_t_assignment(jnp.asarray(z), state.params["centroids"],
                                      state.config.alpha))
  return q, q.argmax(axis=1).astype(np.int32)


def refresh_target(state: DECState, x: np.ndarray) -> tuple[DECState, np.ndarray]:
  """(state with target = target_distribution(q(x)), labels i32[n] = argmax q)."""
  q, labels = predict(state, x)
  return state.replace(target=target_distribution(jnp.asarray(q))), labels


def fit(state: DECState, x: np.ndarray, *, key: chex.PRNGKey, max_epochs: float,
        batch_size: int = 256,
        callback: Callable[[dict, np.ndarray], None] | None = None,
        parallel: str | None = None, model_axis: int = 1,
        mode: str | None = None) -> tuple[DECState, np.ndarray, list[dict]]:
  """DEC / IDEC training from `init_state`'s state.

  x: f32[n, ...] the data the targets belong to (state.target: f32[n, k]).
  Every `update_interval` steps: refresh the targets and labels, stop if
  fewer than `tol` of the labels changed; otherwise run the next
  `update_interval` steps of `train_step` (one compiled scan; batches are the
  keyed epoch orders of `data.batch_indices`, epochs continuing across
  refreshes). Stops at the latest after `max_epochs` epochs' worth of steps.

  callback(record, labels) sees one dict per refresh (step, fractional
  epoch, delta_label (None at step 0), the mean train metrics of the steps
  before it) and that refresh's labels i32[n] (the start's at step 0).
  Returns (state, final labels i32[n], records).
  """
  n = int(len(x))
  if not 1 <= batch_size <= n:
    raise ValueError(f"batch_size: expected 1..{n}, got {batch_size}")
  if not max_epochs > 0:
    raise ValueError(f"max_epochs: expected > 0, got {max_epochs}")
  par = parallel_lib.resolve(parallel)
  if jax.process_count() > 1:
    raise ValueError(f"parallel: DEC's target refresh needs every example in one "
                     f"process, got {jax.process_count()} processes")
  parallel_lib.check_batch_size(batch_size, parallel_lib.batch_split(par, model_axis))
  cfg = state.config
  per_epoch = n // batch_size
  max_steps = max(1, int(round(max_epochs * per_epoch)))
  data_key, step_key = jax.random.split(key)
  xs = {"x": np.asarray(x), "index": np.arange(n, dtype=np.int32)}
  runner = train.make_runner(train_step, state, xs, step_key, batch_size=batch_size,
                             steps=min(cfg.update_interval, max_steps), mode=mode,
                             parallel=par, model_axis=model_axis)
  idx_fn = jax.jit(data_lib.batch_indices, static_argnums=(2, 3))

  def batch_ids(start: int, count: int) -> np.ndarray:
    # Rows of the concatenated epoch orders, steps [start, start + count).
    rows = []
    for e in range(start // per_epoch, (start + count - 1) // per_epoch + 1):
      order = np.asarray(idx_fn(data_key, e + 1, n, batch_size))
      lo = max(start - e * per_epoch, 0)
      hi = min(start + count - e * per_epoch, per_epoch)
      rows.append(order[lo:hi])
    return np.concatenate(rows)

  _, labels = predict(state, x)
  state = runner.place(state)
  records: list[dict] = []
  metrics: dict[str, float] = {}
  while True:
    view = runner.host(state)
    step = int(view.step)
    if step > 0:
      view, new_labels = refresh_target(view, x)
      state = runner.place(view)
      delta = float(np.mean(new_labels != labels))
      labels = new_labels
    else:
      delta = None  # nothing to compare the start's labels with
    record = {"step": step, "epoch": step / per_epoch, "delta_label": delta,
              **{f"train_{k}": v for k, v in metrics.items()}}
    records.append(record)
    if callback is not None:
      callback(record, labels)
    if (delta is not None and delta < cfg.tol) or step >= max_steps:
      break
    count = min(cfg.update_interval, max_steps - step)
    state, metrics = runner.run(state, batch_ids(step, count))
    if not all(np.isfinite(v) for v in metrics.values()):
      raise train.TrainingDiverged(int(step / per_epoch) + 1, None, metrics)
  return view, labels, records


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
  _check_n(n, n_clusters)
  try:
    import umap  # noqa: PLC0415  (optional extra)
  except ImportError:
    raise ImportError("manifold clustering needs umap-learn: pip install "
                      "'unsupjax[cluster]' (or pip install umap-learn)") from None
  from sklearn.mixture import GaussianMixture
  reducer = umap.UMAP(n_components=n_components or n_clusters,
                      n_neighbors=min(n_neighbors, n - 1), min_dist=min_dist,
                      metric="euclidean", random_state=seed)
  u = reducer.fit_transform(np.asarray(z, np.float32)).astype(np.float32)
  if not isinstance(gmm_restarts, (int, np.integer)) or gmm_restarts < 1:
    raise ValueError(f"gmm_restarts: expected an integer >= 1, got {gmm_restarts!r}")
  gmm = GaussianMixture(n_components=n_clusters, covariance_type="full",
                        n_init=int(gmm_restarts), random_state=seed)
  return gmm.fit_predict(u).astype(np.int32), u
