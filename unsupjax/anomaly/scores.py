"""Anomaly scores of trained autoencoder-family models, thresholds calibrated
on normal scores, and ranking metrics.

Offers
  * `score_fn(state, score)`: the per-example anomaly score (higher = more
    anomalous) of an `AEState` or `VAEState`; `score_dataset` applies it to
    a whole array in padded, compiled batches.
  * `contamination_threshold`, `fpr_threshold`: thresholds from quantiles of
    normal scores (no magic constants); `rates`: the realised FPR, recall,
    precision and flagged fraction of a threshold.
  * `auroc` (JAX, jit/vmap-able, or float64 on the host for NumPy float64
    scores) and `average_precision` (scikit-learn's, on the host).

Does not offer: training (see `one_class.py`, `detector.py`), models
(`autoencoder.py`, `vae.py`). Pure functions of arrays and states: nothing
here imports the training loop.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np

from unsupjax.models import autoencoder, vae

AE_SCORES = ("mse", "bce")
VAE_SCORES = ("neg_elbo", "iwae", "mse")
TABULAR_SCORES = ("linear_mse",)
DEFAULT_BATCH = 1000


# --------------------------------------------------------------------------
# Scores.


@functools.cache
def _eval_score(module_name: str, name: str) -> Callable:
  # One function object per (model, score), so jit reuses its compilation.
  module = vae if module_name == "vae" else autoencoder
  return lambda s, b: module.eval_step(s, b)[name]


def score_fn(state, score: str, key: chex.PRNGKey | None = None,
             iwae_k: int = 100) -> Callable[[Any, jax.Array], jax.Array]:
  """(state, batch f32[b, ...]) -> f32[b] anomaly scores (higher = more anomalous).

  AE family (`AEState`): 'mse' (per-pixel squared error of the sigmoid
  reconstruction) or 'bce' (nats per pixel); 'linear_mse' for an AE with
  output='linear' (real-valued features, output used as is). VAE
  (`VAEState`): 'neg_elbo' (single sample, the state's eval key), 'iwae'
  (IWAE NLL with `iwae_k` samples drawn from `key`, the same for every
  batch), 'mse' of the mean reconstruction.
  """
  if isinstance(state, vae.VAEState):
    if score not in VAE_SCORES:
      raise ValueError(f"score: expected one of {VAE_SCORES} for a VAE, got {score!r}")
    if score == "iwae":
      if key is None:
        raise ValueError("key: the 'iwae' score draws samples; pass a PRNG key")
      return lambda s, b: vae.iwae_nll(s, b, key, iwae_k)
    return _eval_score("vae", score)
  if score == "linear_mse":
    if state.config.output != "linear":
      raise ValueError("score: 'linear_mse' needs an AEConfig with output='linear', got "
                       f"output={state.config.output!r}")
    return _eval_score("autoencoder", "mse")
  if score not in AE_SCORES:
    raise ValueError(f"score: expected one of {AE_SCORES + TABULAR_SCORES} for an "
                     f"autoencoder, got {score!r}")
  return _eval_score("autoencoder", score)


def _batched(fn: Callable, state, x: np.ndarray, batch_size: int, axis: int) -> np.ndarray:
  """fn(state, chunk) over chunks of x along `axis`, each padded to exactly
  batch_size rows so fn compiles once and a row's output does not depend on
  the rows computed beside it; outputs concatenated along their last axis."""
  if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
    raise ValueError(f"batch_size: expected a positive integer, got {batch_size!r}")
  x = np.asarray(x)
  n = int(x.shape[axis])
  if n == 0:
    raise ValueError("x: expected at least one example")
  compiled = jax.jit(fn)
  out = []
  for i in range(0, n, batch_size):
    chunk = np.take(x, np.arange(i, min(i + batch_size, n)), axis=axis)
    m = chunk.shape[axis]
    if m < batch_size:
      pad = [(0, 0)] * chunk.ndim
      pad[axis] = (0, batch_size - m)
      chunk = np.pad(chunk, pad)
    out.append(np.asarray(compiled(state, chunk))[..., :m])
  return np.concatenate(out, axis=-1).astype(np.float32)


def score_dataset(state, fn: Callable, x: np.ndarray,
                  batch_size: int = DEFAULT_BATCH) -> np.ndarray:
  """fn(state, batch) -> f32[b] applied to all of x: f32[n, ...] -> f32[n]."""
  return _batched(fn, state, x, batch_size, axis=0)


# --------------------------------------------------------------------------
# Thresholds and rates.


def _check_fraction(value: float, name: str) -> float:
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
    raise ValueError(f"{name}: expected a fraction in (0, 1), got {value!r}")
  return float(value)


def _check_scores(scores: np.ndarray, name: str) -> np.ndarray:
  s = np.asarray(scores, np.float64)
  if s.ndim != 1 or s.size < 2:
    raise ValueError(f"{name}: expected >= 2 scores f[n], got shape {s.shape}")
  if not np.all(np.isfinite(s)):
    raise ValueError(f"{name}: expected finite scores, got {int(np.sum(~np.isfinite(s)))} "
                     "NaN/Inf")
  return s


def contamination_threshold(train_scores: np.ndarray, contamination: float) -> float:
  """The (1 - contamination) quantile of the training scores.

  With `score > threshold` flagged, the fraction of training examples
  flagged is the requested contamination up to one example (linear
  interpolation between order statistics, as PyOD does).
  """
  c = _check_fraction(contamination, "contamination")
  return float(np.quantile(_check_scores(train_scores, "train_scores"), 1.0 - c))


def fpr_threshold(normal_scores: np.ndarray, target_fpr: float) -> float:
  """Threshold whose false-positive rate on held-out normal scores is at
  most `target_fpr`: the smallest observed score t with
  mean(normal > t) <= target_fpr (order statistic, no interpolation), so the
  realised FPR on that split is the largest achievable one not above the
  target.
  """
  a = _check_fraction(target_fpr, "target_fpr")
  s = np.sort(_check_scores(normal_scores, "normal_scores"))
  n = s.size
  # Flagging the k largest gives FPR k/n; the tolerance absorbs a*n's rounding.
  k = int(np.floor(a * n + 1e-9))
  return float(s[n - k - 1])


def rates(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float]:
  """Realised rates of the rule `score > threshold` against labels (1 = anomaly):
  fpr (normals flagged), recall (anomalies flagged), precision, flagged fraction."""
  s, y = _check_labelled(scores, labels)
  flag = s > threshold
  n_pos, n_neg = int(y.sum()), int((~y).sum())
  tp = int((flag & y).sum())
  return {"fpr": float((flag & ~y).sum() / n_neg) if n_neg else float("nan"),
          "recall": float(tp / n_pos) if n_pos else float("nan"),
          "precision": float(tp / flag.sum()) if flag.any() else float("nan"),
          "flagged_fraction": float(flag.mean())}


# --------------------------------------------------------------------------
# Ranking metrics.


def _check_labelled(scores, labels) -> tuple[np.ndarray, np.ndarray]:
  s, y = np.asarray(scores), np.asarray(labels)
  if s.ndim != 1:
    raise ValueError(f"scores: expected f[n], got shape {s.shape}")
  if y.shape != s.shape:
    raise ValueError(f"labels: expected the shape of scores {s.shape}, got {y.shape}")
  if y.dtype != bool and not np.isin(y, (0, 1)).all():
    raise ValueError("labels: expected 0 (normal) / 1 (anomaly) or booleans")
  return s, y.astype(bool)


def auroc(scores: jax.Array | np.ndarray, labels: jax.Array | np.ndarray) -> jax.Array:
  """Area under the ROC curve f[] from scores f[n], labels bool/int[n] (1 = anomaly).

  The probability that a random anomaly scores higher than a random normal
  example, ties counting one half (the Mann-Whitney statistic, equal to
  scikit-learn's `roc_auc_score`). For each anomaly, the normals below and
  equal to it are counted with `searchsorted` in the sorted normal scores
  (integer counts, no rank sums). NaN when either class is empty; scores
  must be finite.

  Scores are compared in their own precision: JAX arrays (and tracers: jit
  and vmap it, e.g. over classes) in their dtype, NumPy float64 scores on
  the host in float64 (JAX would store them as float32 unless x64 is
  enabled, and distinct scores could tie); that path returns a NumPy
  float64.
  """
  if not isinstance(scores, jax.Array) and np.asarray(scores).dtype == np.float64:
    s, y = _check_labelled(scores, labels)
    if not np.all(np.isfinite(s)):
      raise ValueError("scores: expected finite values")
    return _auroc_host(s, y)
  s = jnp.asarray(scores)
  if not jnp.issubdtype(s.dtype, jnp.floating):
    s = s.astype(jnp.float32)
  pos = jnp.asarray(labels).astype(bool)
  if s.ndim != 1 or pos.shape != s.shape:
    raise ValueError(f"scores, labels: expected two arrays of shape [n], got {s.shape} "
                     f"and {pos.shape}")
  n_pos = jnp.sum(pos)
  n_neg = s.shape[0] - n_pos
  # Normals sorted first; anomalies pushed to +inf past every finite score.
  neg_sorted = jnp.sort(jnp.where(pos, jnp.inf, s))
  below = jnp.searchsorted(neg_sorted, s, side="left")
  upto = jnp.minimum(jnp.searchsorted(neg_sorted, s, side="right"), n_neg)
  wins = below.astype(s.dtype) + 0.5 * (upto - below).astype(s.dtype)
  total = jnp.sum(jnp.where(pos, wins / jnp.maximum(n_neg, 1), 0.0))
  return jnp.where((n_pos > 0) & (n_neg > 0), total / jnp.maximum(n_pos, 1), jnp.nan)


def _auroc_host(s: np.ndarray, pos: np.ndarray) -> np.float64:
  neg_sorted = np.sort(s[~pos])
  if neg_sorted.size == 0 or pos.sum() == 0:
    return np.float64(np.nan)
  below = np.searchsorted(neg_sorted, s[pos], side="left")
  upto = np.searchsorted(neg_sorted, s[pos], side="right")
  wins = below.sum(dtype=np.int64) * 2 + (upto - below).sum(dtype=np.int64)
  return np.float64(wins / (2.0 * neg_sorted.size * pos.sum()))


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
  """scikit-learn's average precision (area under precision-recall), on host."""
  from sklearn.metrics import average_precision_score
  s, y = _check_labelled(scores, labels)
  return float(average_precision_score(y.astype(int), s))
