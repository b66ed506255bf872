"""DEC and IDEC: clustering an autoencoder's embedding with learned centres.

Pure pieces of DEC (Xie et al. 2016) and IDEC (Guo et al. 2017):
  * `student_t_assignment` (the soft assignment q), `target_distribution`
    (the sharpened target p), `kl_divergence` (per-example KL(p || q)),
    `dec_loss` (KL of an embedding against fixed targets, differentiable in
    the embedding and the centres);
  * `DECConfig`, `DECState` (a `TrainState` holding the autoencoder's and
    the centres' parameters, the targets p of every example and the labels
    of the last refresh), `init_state` (centres from k-means on the
    pretrained embedding), `create_state` (a state from given centres, no
    pass over the data: what a checkpoint is restored into), and the pure
    `train_step(state, batch, key)`: one optimizer step on KL(p || q) (DEC),
    or on IDEC's L_r + gamma * KL(p || q) (the reconstruction loss plus
    gamma times the clustering loss, gamma = 0.1 in the paper), where batch
    = {"x": f32[b, ...], "index": i32[b]} and the per-example targets are
    looked up in the state;
  * `refresh_target`: q over the whole data set, the new targets and labels,
    and the fraction of labels that changed; `predict`;
  * `embed`: an autoencoder's (or DEC state's) embedding of a large array.

The outer loop (refresh every `update_interval` steps, stop on `tol`) is
`unsupjax.deep_clustering.fit`. Labels never enter any function here.

Does not offer: autoencoder pretraining (`autoencoder`), VaDE, IIC.
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

from unsupjax import kmeans, parallel
from unsupjax.batched import batched_apply
from unsupjax.distances import sq_distances
from unsupjax.models import autoencoder
from unsupjax.state import TrainState

OPTIMIZERS = ("sgd", "adam")
# Which of IDEC's two terms gamma weights: the clustering loss (the paper's
# L_r + gamma * L_c) or the reconstruction loss (L_c + gamma * L_r).
GAMMA_ON = ("clustering", "reconstruction")
EMBED_BATCH = 2048


def student_t_assignment(z: jax.Array, centroids: jax.Array, alpha: float = 1.0) -> jax.Array:
  """DEC's soft assignment q_ij ∝ (1 + ||z_i - c_j||^2 / alpha)^-(alpha+1)/2.

  z: f32[b, d], centroids: f32[k, d] -> f32[b, k], rows sum to 1.
  """
  d = sq_distances(z, centroids)
  logits = -(alpha + 1.0) / 2.0 * jnp.log1p(d / alpha)
  return jax.nn.softmax(logits, axis=1)


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
  return jnp.sum(jnp.where(p > 0, p * (jnp.log(safe_p) - jnp.log(q)), 0.0), axis=1)


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
  idec: also train the decoder on the reconstruction loss L_r (IDEC).
  gamma: IDEC's weight, on the clustering loss L_c by default (loss = L_r +
  gamma * L_c, gamma = 0.1 in the paper); gamma_on='reconstruction' puts it
  on L_r instead (loss = L_c + gamma * L_r). Both unused by DEC.
  optimizer: 'sgd' (momentum 0.9, DEC's choice, lr 0.01) or 'adam'.
  update_interval: steps between target refreshes. tol: stop when fewer
  than this fraction of labels changed between two refreshes.
  """
  n_clusters: int = 10
  alpha: float = 1.0
  idec: bool = False
  gamma: float = 0.1
  gamma_on: str = "clustering"
  optimizer: str = "sgd"
  learning_rate: float = 0.01
  update_interval: int = 140
  tol: float = 1e-3

  def __post_init__(self):
    if not isinstance(self.n_clusters, (int, np.integer)) or self.n_clusters < 2:
      raise ValueError(f"n_clusters: expected an integer >= 2, got {self.n_clusters!r}")
    if not self.alpha > 0:
      raise ValueError(f"alpha: expected > 0, got {self.alpha}")
    if not (np.isfinite(self.gamma) and self.gamma > 0):
      raise ValueError(f"gamma: expected a positive number, got {self.gamma}")
    if self.gamma_on not in GAMMA_ON:
      raise ValueError(f"gamma_on: expected one of {GAMMA_ON}, got {self.gamma_on!r}")
    if self.optimizer not in OPTIMIZERS:
      raise ValueError(f"optimizer: expected one of {OPTIMIZERS}, got {self.optimizer!r}")
    if not self.learning_rate > 0:
      raise ValueError(f"learning_rate: expected > 0, got {self.learning_rate}")
    if not isinstance(self.update_interval, (int, np.integer)) or self.update_interval < 1:
      raise ValueError(f"update_interval: expected a positive integer, got "
                       f"{self.update_interval!r}")
    if not 0 <= self.tol < 1:
      raise ValueError(f"tol: expected a fraction in [0, 1), got {self.tol}")


class DECState(TrainState):
  """A TrainState with params {"ae": autoencoder params, "centroids":
  f32[k, d]}, plus target: f32[n, k], the current p of every example, and
  labels: i32[n], the hard assignments of the last refresh. model is the
  autoencoder's module, config the DECConfig, ae_config the AEConfig."""
  target: jax.Array = None
  labels: jax.Array = None
  ae_config: autoencoder.AEConfig = struct.field(pytree_node=False, default=None)


def _check_n(n: int, k: int) -> None:
  if k > n:
    raise ValueError(f"n_clusters: expected at most the number of examples "
                     f"({n}), got {k}")


@functools.lru_cache(maxsize=16)
def _encode_fn(model) -> Callable:
  # One compiled encoder per module, reused by every refresh.
  return jax.jit(lambda params, xb: model.apply({"params": params}, xb, method="encode"))


def embed(state: Any, x: np.ndarray, batch_size: int = EMBED_BATCH) -> np.ndarray:
  """The embedding f32[n, d] of x: f32[n, ...] under an autoencoder's state
  or a `DECState` (its encoder), in padded batches (one compile)."""
  params = state.params["ae"] if isinstance(state, DECState) else state.params
  return batched_apply(functools.partial(_encode_fn(state.model), params),
                       np.asarray(x), batch_size)


def _optimizer(config: DECConfig) -> optax.GradientTransformation:
  return (optax.sgd(config.learning_rate, momentum=0.9) if config.optimizer == "sgd"
          else optax.adam(config.learning_rate))


def create_state(config: DECConfig, ae_state: TrainState, centroids: jax.Array,
                 n: int) -> DECState:
  """A state at step 0 with the autoencoder's parameters (copied), the
  given centroids: f32[k, d], and zero targets and labels for n examples
  (`refresh_target` fills them; a restored checkpoint replaces them)."""
  _check_n(n, config.n_clusters)
  if centroids.shape[0] != config.n_clusters:
    raise ValueError(f"centroids: expected {config.n_clusters} rows (n_clusters), got "
                     f"shape {centroids.shape}")
  # A copy: the loop donates the state's buffers, the caller keeps its AE.
  params = {"ae": jax.tree.map(jnp.copy, ae_state.params),
            "centroids": jnp.asarray(centroids, jnp.float32)}
  return DECState.create(params=params, tx=_optimizer(config), config=config,
                         model=ae_state.model, ae_config=ae_state.config,
                         target=jnp.zeros((n, config.n_clusters), jnp.float32),
                         labels=jnp.zeros((n,), jnp.int32))


def init_state(key: chex.PRNGKey, config: DECConfig, ae_state: TrainState,
               x: np.ndarray, *, n_init: int = 20) -> DECState:
  """DEC's start: the pretrained autoencoder, centres from k-means (best of
  `n_init` k-means++ restarts, as DEC) on its embedding of x: f32[n, ...],
  and the targets and labels of that start (state.labels are the k-means
  labels: q is largest at the nearest centre)."""
  n = int(len(x))
  _check_n(n, config.n_clusters)
  z = embed(ae_state, x)
  km = kmeans.fit(key, jnp.asarray(z), config.n_clusters, n_init=n_init)
  state, _ = refresh_target(create_state(config, ae_state, km.centroids, n), x)
  return state


def train_step(state: DECState, batch: dict[str, jax.Array],
               key: chex.PRNGKey, *, axis_name: str | None = None
               ) -> tuple[DECState, dict[str, jax.Array]]:
  """One optimizer step on mean KL(p || q) (DEC), or on IDEC's mean L_r +
  gamma * mean KL(p || q) (gamma_on='reconstruction': mean KL + gamma *
  mean L_r).

  batch: {"x": f32[b, ...] in [0, 1], "index": i32[b] rows of state.target}.
  key: unused (the step is deterministic), kept for the loop's contract.
  axis_name: inside pmap, the device axis: gradients and metrics are
  averaged over it (each device holds every target row). DEC trains only
  the encoder and the centres.
  """
  del key
  cfg = state.config
  p = state.target[batch["index"]]

  def loss_fn(params):
    variables = {"params": params["ae"]}
    if cfg.idec:
      logits, z = state.model.apply(variables, batch["x"])
      recon = jnp.mean(autoencoder.per_example_loss(state.ae_config, logits, batch["x"]))
    else:
      z = state.model.apply(variables, batch["x"], method="encode")
      recon = jnp.zeros(())
    kl = jnp.mean(dec_loss(z, params["centroids"], p, cfg.alpha))
    if not cfg.idec:
      loss = kl
    elif cfg.gamma_on == "clustering":
      loss = recon + cfg.gamma * kl
    else:
      loss = kl + cfg.gamma * recon
    return loss, (kl, recon)

  (loss, (kl, recon)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  grads = parallel.pmean(grads, axis_name)
  metrics = {"loss": loss, "kl": kl}
  if cfg.idec:
    metrics["recon"] = recon
  return state.apply_gradients(grads), parallel.pmean(metrics, axis_name)


def predict(state: DECState, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(q f32[n, k], hard labels i32[n]) of x under the state's encoder."""
  z = embed(state, x)
  q = np.asarray(student_t_assignment(jnp.asarray(z), state.params["centroids"],
                                      state.config.alpha))
  return q, q.argmax(axis=1).astype(np.int32)


def refresh_target(state: DECState, x: np.ndarray) -> tuple[DECState, float]:
  """(state with target = target_distribution(q(x)) and labels = argmax q,
  the fraction of labels that changed since the state's last refresh)."""
  q, labels = predict(state, x)
  delta = float(np.mean(labels != np.asarray(state.labels)))
  return state.replace(target=target_distribution(jnp.asarray(q)),
                       labels=jnp.asarray(labels)), delta
