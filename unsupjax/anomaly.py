"""Anomaly detection with autoencoders: scores, calibrated thresholds, AUROC,
and the vmapped one-class protocol.

Offers
  * `score_fn(state, score)`: the per-example anomaly score of a trained
    autoencoder-family state (higher = more anomalous): reconstruction
    error (`mse`, `bce`) for the AE / conv AE / DAE, `neg_elbo` or `iwae`
    (IWAE-k NLL) for the VAE, `linear_mse` for the tabular AE;
    `score_dataset` applies it to a whole array in compiled batches.
  * `contamination_threshold`, `fpr_threshold`: thresholds from quantiles of
    normal scores (no magic constants), and `rates` (realised FPR, recall).
  * `auroc`: rank-based area under the ROC curve in JAX (jit/vmap-able; ties
    count one half, as scikit-learn's `roc_auc_score`).
  * `AnomalyDetector` (in `unsupjax.anomaly_detector`): the PyOD-style
    estimator (`fit`, `score_samples`, `decision_function`, `predict`,
    `threshold_`).
  * `train_one_class` / `train_one_class_vmapped`: train one model per class
    on that class's examples only, all classes at once with `jax.vmap` over
    stacked states; `one_class_data` stacks the classes (padded);
    `one_class_benchmark` runs the whole protocol (train, score, AUROC,
    thresholds) for the CLI and the benchmark script.

Does not offer: models (see `autoencoder.py`, `vae.py`), the CLI
(`tasks/anomaly.py`), or supervised detectors. Labels are used only to
build the one-class splits and to report metrics, never to train.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np

from unsupjax import autoencoder, train, vae

AE_SCORES = ("mse", "bce")
VAE_SCORES = ("neg_elbo", "iwae", "mse")
TABULAR_SCORES = ("linear_mse",)


# --------------------------------------------------------------------------
# Scores.


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
    return lambda s, b: vae.eval_step(s, b)[score]
  if score == "linear_mse":
    if state.config.output != "linear":
      raise ValueError("score: 'linear_mse' needs an AEConfig with output='linear', got "
                       f"output={state.config.output!r}")
    return lambda s, b: autoencoder.eval_step(s, b)["mse"]
  if score not in AE_SCORES:
    raise ValueError(f"score: expected one of {AE_SCORES + TABULAR_SCORES} for an "
                     f"autoencoder, got {score!r}")
  return lambda s, b: autoencoder.eval_step(s, b)[score]


def _batched(fn: Callable, state, x: np.ndarray, batch_size: int, axis: int) -> np.ndarray:
  """fn(state, chunk) over chunks of x along `axis`, padded to one size so
  fn compiles once; outputs concatenated along their last axis."""
  n = int(x.shape[axis])
  if n == 0:
    raise ValueError("x: expected at least one example")
  b = min(batch_size, n)
  compiled = jax.jit(fn)
  out = []
  for i in range(0, n, b):
    chunk = np.take(np.asarray(x), np.arange(i, min(i + b, n)), axis=axis)
    m = chunk.shape[axis]
    if m < b:
      pad = [(0, 0)] * chunk.ndim
      pad[axis] = (0, b - m)
      chunk = np.pad(chunk, pad)
    out.append(np.asarray(compiled(state, chunk))[..., :m])
  return np.concatenate(out, axis=-1).astype(np.float32)


def score_dataset(state, fn: Callable, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
  """fn(state, batch) -> f32[b] applied to all of x: f32[n, ...] -> f32[n]."""
  return _batched(fn, state, x, batch_size, axis=0)


# --------------------------------------------------------------------------
# Thresholds and rates.


def _check_fraction(value: float, name: str) -> float:
  if not isinstance(value, (int, float)) or not 0.0 < float(value) < 1.0:
    raise ValueError(f"{name}: expected a fraction in (0, 1), got {value!r}")
  return float(value)


def contamination_threshold(train_scores: np.ndarray, contamination: float) -> float:
  """The (1 - contamination) quantile of the training scores.

  With `score > threshold` flagged, the fraction of training examples
  flagged is the requested contamination up to one example (linear
  interpolation between order statistics, as PyOD does).
  """
  c = _check_fraction(contamination, "contamination")
  s = np.asarray(train_scores, np.float64)
  if s.ndim != 1 or s.size < 2 or not np.all(np.isfinite(s)):
    raise ValueError(f"train_scores: expected >= 2 finite scores f[n], got shape {s.shape}")
  return float(np.quantile(s, 1.0 - c))


def fpr_threshold(normal_scores: np.ndarray, target_fpr: float) -> float:
  """Threshold whose false-positive rate on held-out normal scores is at
  most `target_fpr`: the smallest observed score t with
  mean(normal > t) <= target_fpr (order statistic, no interpolation), so the
  realised FPR on that split is the largest achievable one not above the
  target.
  """
  a = _check_fraction(target_fpr, "target_fpr")
  s = np.sort(np.asarray(normal_scores, np.float64))
  if s.ndim != 1 or s.size < 2 or not np.all(np.isfinite(s)):
    raise ValueError(f"normal_scores: expected >= 2 finite scores f[n], got shape {s.shape}")
  n = s.size
  # Flagging the k largest gives FPR k/n; k = floor(a n) largest allowed.
  k = int(np.floor(a * n + 1e-9))
  return float(s[n - k - 1])


def rates(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float]:
  """Realised rates of the rule `score > threshold` against labels (1 = anomaly):
  fpr (normals flagged), recall (anomalies flagged), precision, flagged fraction."""
  s = np.asarray(scores)
  y = np.asarray(labels).astype(bool)
  flag = s > threshold
  n_pos, n_neg = int(y.sum()), int((~y).sum())
  tp = int((flag & y).sum())
  return {"fpr": float((flag & ~y).sum() / n_neg) if n_neg else float("nan"),
          "recall": float(tp / n_pos) if n_pos else float("nan"),
          "precision": float(tp / flag.sum()) if flag.any() else float("nan"),
          "flagged_fraction": float(flag.mean())}


# --------------------------------------------------------------------------
# AUROC.


def auroc(scores: jax.Array, labels: jax.Array) -> jax.Array:
  """Area under the ROC curve: f32[] from scores f32[n], labels bool/int[n] (1 = anomaly).

  The probability that a random anomaly scores higher than a random normal
  example, ties counting one half (the Mann-Whitney statistic, equal to
  scikit-learn's `roc_auc_score`). For each anomaly, the normals below and
  equal to it are counted with `searchsorted` in the sorted normal scores
  (integers, so no float32 rank sums). Pure: jit and vmap it (e.g. over
  classes). NaN when either class is empty; scores must be finite.
  """
  s = jnp.asarray(scores, jnp.float32)
  pos = jnp.asarray(labels).astype(bool)
  n_pos = jnp.sum(pos)
  n_neg = s.shape[0] - n_pos
  # Normals sorted first; anomalies pushed to +inf past every finite score.
  neg_sorted = jnp.sort(jnp.where(pos, jnp.inf, s))
  below = jnp.searchsorted(neg_sorted, s, side="left")
  upto = jnp.minimum(jnp.searchsorted(neg_sorted, s, side="right"), n_neg)
  wins = below.astype(jnp.float32) + 0.5 * (upto - below).astype(jnp.float32)
  total = jnp.sum(jnp.where(pos, wins / jnp.maximum(n_neg, 1), 0.0))
  return jnp.where((n_pos > 0) & (n_neg > 0), total / jnp.maximum(n_pos, 1), jnp.nan)


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
  """scikit-learn's average precision (area under precision-recall), on host."""
  from sklearn.metrics import average_precision_score
  return float(average_precision_score(np.asarray(labels).astype(int), np.asarray(scores)))


# --------------------------------------------------------------------------
# One model per class, trained together.


def one_class_data(x: np.ndarray, y: np.ndarray,
                   classes: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
  """Stacks each class's examples: (xs f32[k, m, ...], counts i32[k]).

  m is the largest class size; rows past counts[c] are zero padding that
  training never reads.
  """
  if y is None:
    raise ValueError("y: the one-class protocol needs class labels")
  groups = [np.asarray(x[np.asarray(y) == c]) for c in classes]
  empty = [c for c, g in zip(classes, groups) if len(g) == 0]
  if empty:
    raise ValueError(f"classes: no examples of class(es) {empty}")
  m = max(len(g) for g in groups)
  xs = np.zeros((len(groups), m) + x.shape[1:], x.dtype)
  for i, g in enumerate(groups):
    xs[i, :len(g)] = g
  return xs, np.array([len(g) for g in groups], np.int32)


def class_permutation(key: chex.PRNGKey, epoch: jax.Array, count: jax.Array,
                      m: int) -> jax.Array:
  """i32[m] whose first `count` entries are a random order of range(count).

  Each index i gets the sort key uniform(fold_in(fold_in(key, epoch), i)),
  so the order of the valid rows does not depend on the padding m: a class
  trained alone (m = count) sees the same batches as inside the stack.
  """
  k = jax.random.fold_in(key, epoch)
  idx = jnp.arange(m)
  u = jax.vmap(lambda i: jax.random.uniform(jax.random.fold_in(k, i)))(idx)
  return jnp.argsort(jnp.where(idx < count, u, 2.0)).astype(jnp.int32)


def train_one_class(state, x: jax.Array, count: jax.Array, key: chex.PRNGKey,
                    first_epoch: jax.Array, *, train_step: Callable, batch_size: int,
                    steps_per_epoch: int, epochs: int):
  """Trains one model on the first `count` rows of x: f32[m, ...].

  Runs `epochs` epochs (numbered from first_epoch) of `steps_per_epoch`
  batches, each epoch a fresh `class_permutation`; the whole thing is one
  `lax.scan` over epochs of a `lax.scan` over steps. key is split into a
  data key and the step key passed to train_step, as `train.fit` does.
  Returns (state, metrics: dict of f32[epochs] epoch means). Requires
  steps_per_epoch * batch_size <= count (checked by the caller:
  `steps_per_epoch_for`).
  """
  data_key, step_key = jax.random.split(key)
  m = x.shape[0]

  def epoch_body(state, epoch):
    perm = class_permutation(data_key, epoch, count, m)
    ids = perm[:steps_per_epoch * batch_size].reshape(steps_per_epoch, batch_size)

    def step(state, batch_ids):
      return train_step(state, x[batch_ids], step_key)

    state, metrics = jax.lax.scan(step, state, ids)
    return state, jax.tree.map(lambda v: jnp.mean(v, axis=0), metrics)

  return jax.lax.scan(epoch_body, state, first_epoch + jnp.arange(epochs))


def steps_per_epoch_for(counts: Sequence[int], batch_size: int) -> int:
  """Whole batches of the smallest class: every class takes that many steps
  per epoch (equal updates per model; each epoch drops a different few
  examples of the larger classes)."""
  n_min = int(min(counts))
  if batch_size > n_min:
    raise ValueError(f"batch_size: expected at most {n_min} (the smallest class), "
                     f"got {batch_size}")
  return n_min // batch_size


def init_stacked(init: Callable[[chex.PRNGKey], Any], keys: jax.Array):
  """vmap(init)(keys): k states stacked along a leading axis."""
  return jax.vmap(init)(keys)


def train_one_class_vmapped(states, xs: jax.Array, counts: jax.Array, keys: jax.Array,
                            first_epoch: jax.Array, **kw):
  """`train_one_class` for k models at once: states stacked on axis 0,
  xs f32[k, m, ...], counts i32[k], keys [k]. Same keyword arguments."""
  fn = functools.partial(train_one_class, **kw)
  return jax.vmap(fn, in_axes=(0, 0, 0, 0, None))(states, xs, counts, keys, first_epoch)


def score_stacked(states, fn: Callable, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
  """Scores of every stacked model (states with a leading axis k) on the
  same x: f32[n, ...] -> f32[k, n]."""
  per_batch = lambda s, b: jax.vmap(lambda one: fn(one, b))(s)
  return _batched(per_batch, states, x, batch_size, axis=0)


def score_own(states, fn: Callable, xs: np.ndarray, batch_size: int = 1000) -> np.ndarray:
  """Model i's scores on its own rows xs[i]: xs f32[k, m, ...] -> f32[k, m]
  (e.g. each class model on its training class, for thresholds)."""
  return _batched(jax.vmap(fn), states, xs, batch_size, axis=1)


def one_class_benchmark(config, score: str, xs: np.ndarray, counts: np.ndarray,
                        test_x: np.ndarray, test_y: np.ndarray, classes, *, epochs: int,
                        batch_size: int, seed: int, contamination: float | None = None,
                        target_fpr: float | None = None, validation_fraction: float = 0.2,
                        log=None, metrics_path=None) -> dict:
  """Trains len(classes) models at once and scores the test split with each.

  xs, counts: from `one_class_data`. Class c's model gets the key
  fold_in(PRNGKey(seed), c) (split into init and fit keys), so a class's
  model does not depend on which other classes run beside it. With
  target_fpr, the last validation_fraction of each class's (shuffled)
  training rows is held out as its normal calibration split.
  Returns per-class AUROC / AP / threshold / realised FPR and recall, their
  means, timings, and scores f32[k, n_test] with labels bool[k, n_test].
  """
  is_vae = isinstance(config, vae.VAEConfig)
  module = vae if is_vae else autoencoder
  counts = np.asarray(counts)
  val = None
  if target_fpr is not None:
    # Hold out the tail of a keyed shuffle of each class for calibration.
    n_val = np.ceil(validation_fraction * counts).astype(int)
    parts = []
    for i, c in enumerate(classes):
      perm = np.asarray(jax.random.permutation(
          jax.random.fold_in(jax.random.PRNGKey(seed + 1), c), int(counts[i])))
      rows = np.asarray(xs[i])[perm]
      parts.append((rows[:counts[i] - n_val[i]], rows[counts[i] - n_val[i]:]))
    xs = np.zeros_like(xs)
    for i, (tr, _) in enumerate(parts):
      xs[i, :len(tr)] = tr
    counts = np.array([len(tr) for tr, _ in parts], np.int32)
    val = [v for _, v in parts]
  steps = steps_per_epoch_for(counts, batch_size)
  keys = jnp.stack([jax.random.fold_in(jax.random.PRNGKey(seed), int(c)) for c in classes])
  init_keys, fit_keys = jax.vmap(jax.random.split, out_axes=1)(keys)
  example = xs[0, :1]
  states = init_stacked(lambda k: module.init_state(k, config, example), init_keys)
  epoch_fn = jax.jit(functools.partial(
      train_one_class_vmapped, train_step=module.train_step,
      batch_size=batch_size, steps_per_epoch=steps, epochs=1), donate_argnums=0)
  xs_dev, counts_dev = jax.device_put(xs), jax.device_put(counts)
  t0 = time.perf_counter()
  compiled = train.compile_lowered(epoch_fn.lower(states, xs_dev, counts_dev, fit_keys,
                                                  jnp.int32(0)))
  compile_seconds = time.perf_counter() - t0
  t0 = time.perf_counter()
  history = []
  f = open(metrics_path, "w") if metrics_path is not None else None
  try:
    for epoch in range(epochs):
      states, metrics = compiled(states, xs_dev, counts_dev, fit_keys, jnp.int32(epoch))
      loss = np.asarray(metrics["loss"])[:, 0]
      if not np.all(np.isfinite(loss)):
        raise train.TrainingDiverged(epoch + 1, None, {"loss": float(np.max(loss))})
      rec = {"epoch": epoch + 1, "train_loss_per_class": loss.tolist(),
             "seconds": time.perf_counter() - t0}
      history.append(rec)
      if f is not None:
        f.write(json.dumps(rec) + "\n")
      if log is not None:
        log(f"epoch {epoch + 1}/{epochs}: mean train loss {loss.mean():.5f}")
  finally:
    if f is not None:
      f.close()
  jax.block_until_ready(states)
  train_seconds = time.perf_counter() - t0

  fn = score_fn(jax.tree.map(lambda a: a[0], states), score)
  t0 = time.perf_counter()
  test_scores = score_stacked(states, fn, test_x)
  labels = np.stack([np.asarray(test_y) != c for c in classes])
  aurocs = np.asarray(jax.jit(jax.vmap(auroc))(test_scores, labels))
  score_seconds = time.perf_counter() - t0
  if target_fpr is not None:
    n_val = max(len(v) for v in val)
    val_xs = np.zeros((len(val), n_val) + xs.shape[2:], xs.dtype)
    for i, v in enumerate(val):
      val_xs[i, :len(v)] = v
    cal_all = score_own(states, fn, val_xs)
    cal_scores = [cal_all[i, :len(v)] for i, v in enumerate(val)]
    thresholds = [fpr_threshold(c, target_fpr) for c in cal_scores]
  else:
    cal_all = score_own(states, fn, xs)
    cal_scores = [cal_all[i, :counts[i]] for i in range(len(classes))]
    thresholds = [contamination_threshold(c, contamination) for c in cal_scores]
  calib = [float(np.mean(c > t)) for c, t in zip(cal_scores, thresholds)]
  per_rates = [rates(test_scores[i], labels[i], t) for i, t in enumerate(thresholds)]
  aps = [average_precision(test_scores[i], labels[i]) for i in range(len(classes))]
  return {
      "classes": list(classes), "auroc_per_class": [float(a) for a in aurocs],
      "auroc_mean": float(np.mean(aurocs)),
      "average_precision_per_class": aps, "average_precision_mean": float(np.mean(aps)),
      "threshold_per_class": thresholds,
      "calibration_flagged_fraction_per_class": calib,
      "test_fpr_per_class": [r["fpr"] for r in per_rates],
      "test_recall_per_class": [r["recall"] for r in per_rates],
      "test_fpr_mean": float(np.mean([r["fpr"] for r in per_rates])),
      "test_recall_mean": float(np.mean([r["recall"] for r in per_rates])),
      "train_examples_per_class": counts.tolist(), "steps_per_epoch": steps,
      "final_train_loss_per_class": history[-1]["train_loss_per_class"],
      "compile_seconds": compile_seconds, "train_seconds": train_seconds,
      "score_seconds": score_seconds, "scores": test_scores, "labels": labels,
  }
