"""One model per class, trained at once: the vmapped one-class protocol.

Offers
  * `class_rows`: each class's row numbers in one padded table;
    `hold_out`: a keyed split of each class's rows into fit and
    calibration rows; `one_class_data`: each class's examples stacked.
  * `init_one_class`: k model states stacked on a leading axis
    (`StackedState`), the model of class c from fold_in(named(key,
    "init"), c).
  * `train_one_class`: trains them through `training.fit`, the loop every
    model uses (its NaN check, metrics.jsonl, checkpoints, progress bar):
    the step is `stacked_step` (`jax.vmap` of the model's step over the
    classes) and the data order is `class_order`, each step gathering one
    batch of every class's own rows.
  * `score_stacked`, `score_own`: every stacked model's scores.
  * `one_class_benchmark`: the whole protocol (train, score, AUROC,
    thresholds) for the CLI and the benchmark script.

A class's model depends only on its rows, its label and the run key, not
on which other classes run beside it: its init, data order (`class_permutation`,
independent of the padding) and step keys are folds of its label into
named keys, so a class trained alone gets the same numbers.

Does not offer: scores and thresholds themselves (`scores.py`), a detector
for new data (`detector.py`), or several devices (the classes share one).
Labels only build the one-class splits and the metrics, never a training
target.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from unsupjax import training
from unsupjax.anomaly.scores import (DEFAULT_BATCH, _batched, auroc, average_precision,
                                     contamination_threshold, fpr_threshold, rates, score_fn)
from unsupjax.models import autoencoder, vae
from unsupjax.rng import named


class StackedState(struct.PyTreeNode):
  """k models trained side by side, as `training.fit` sees one state.

  step: i32[] steps taken (the same for every model); states: the models'
  states stacked on axis 0; classes: the class label of each (static).
  """
  step: jax.Array
  states: Any
  classes: tuple[int, ...] = struct.field(pytree_node=False, default=())


def _pack(groups: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
  """(rows i64[k, m] padded with -1, counts i32[k]) of k index arrays."""
  m = max(len(g) for g in groups)
  rows = np.full((len(groups), m), -1, np.int64)
  for i, g in enumerate(groups):
    rows[i, :len(g)] = g
  return rows, np.array([len(g) for g in groups], np.int32)


def class_rows(y: np.ndarray, classes: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
  """Each class's row numbers: (rows i64[k, m], counts i32[k]); rows[i,
  :counts[i]] are the rows of x with label classes[i], the rest is -1."""
  if y is None:
    raise ValueError("y: the one-class protocol needs class labels")
  y = np.asarray(y)
  groups = [np.nonzero(y == c)[0] for c in classes]
  empty = [c for c, g in zip(classes, groups) if len(g) == 0]
  if empty:
    raise ValueError(f"classes: no examples of class(es) {empty}")
  return _pack(groups)


def one_class_data(x: np.ndarray, y: np.ndarray,
                   classes: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
  """Stacks each class's examples: (xs f32[k, m, ...], counts i32[k]).

  m is the largest class size; rows past counts[c] are zero padding.
  """
  rows, counts = class_rows(y, classes)
  xs = np.asarray(x)[np.maximum(rows, 0)]
  xs[rows < 0] = 0
  return xs, counts


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


_permutations_jit = jax.jit(jax.vmap(class_permutation, in_axes=(0, None, 0, None)),
                            static_argnums=3)
_PERMUTATION_PROGRAMS: dict = {}


def _class_permutations(keys: jax.Array, epoch: int, counts: jax.Array, m: int) -> jax.Array:
  """Every class's `class_permutation` in one call: keys [k], counts i32[k]
  -> i32[k, m]; compiled once per (k, m) as the loop compiles its steps."""
  counts = jnp.asarray(counts, jnp.int32)
  sig = (keys.shape, str(keys.dtype), m)
  if sig not in _PERMUTATION_PROGRAMS:
    _PERMUTATION_PROGRAMS[sig] = training.compile_lowered(
        _permutations_jit.lower(keys, jnp.int32(epoch), counts, m))
  return _PERMUTATION_PROGRAMS[sig](keys, jnp.int32(epoch), counts)


def _class_keys(key: chex.PRNGKey, classes: Sequence[int]) -> jax.Array:
  return jnp.stack([jax.random.fold_in(key, int(c)) for c in classes])


def steps_per_epoch_for(counts: Sequence[int], batch_size: int) -> int:
  """Whole batches of the smallest class: every class takes that many steps
  per epoch (equal updates per model; each epoch drops a different few
  examples of the larger classes)."""
  n_min = int(min(counts))
  if batch_size > n_min:
    raise ValueError(f"batch_size: expected at most {n_min} (the smallest class), "
                     f"got {batch_size}")
  return n_min // batch_size


def hold_out(rows: np.ndarray, counts: np.ndarray, fraction: float, key: chex.PRNGKey,
             classes: Sequence[int]):
  """Splits each class's rows at random: ((fit rows, counts), (held-out
  rows, counts)), ceil(fraction * count) held out; class c's split comes
  from fold_in(key, c). Tables as `class_rows`."""
  counts = np.asarray(counts)
  n_val = np.ceil(fraction * counts).astype(int)
  small = [c for c, n, v in zip(classes, counts, n_val) if n - v < 1]
  if small:
    raise ValueError(f"validation_fraction: class(es) {small} would keep no rows to fit "
                     f"after holding out {fraction}")
  perms = np.asarray(_class_permutations(_class_keys(key, classes), 0, counts,
                                         rows.shape[1]))
  shuffled = [rows[i, perms[i, :counts[i]]] for i in range(len(counts))]
  return (_pack([r[:len(r) - v] for r, v in zip(shuffled, n_val)]),
          _pack([r[len(r) - v:] for r, v in zip(shuffled, n_val)]))


def class_order(key: chex.PRNGKey, rows: np.ndarray, counts: np.ndarray,
                batch_size: int, steps_per_epoch: int,
                classes: Sequence[int]) -> Callable[[int], np.ndarray]:
  """`training.fit`'s data order for stacked models: epoch -> ids
  int[steps_per_epoch, k, batch_size], step s of class i drawing rows of
  x from rows[i, :counts[i]] in the order `class_permutation(fold_in(key,
  classes[i]), epoch, ...)`. Padding is never drawn (steps_per_epoch *
  batch_size <= min(counts), see `steps_per_epoch_for`)."""
  if steps_per_epoch * batch_size > int(np.min(counts)):
    raise ValueError(f"steps_per_epoch: {steps_per_epoch} batches of {batch_size} are more "
                     f"than the smallest class's {int(np.min(counts))} rows")
  keys = _class_keys(key, classes)
  counts_dev = jnp.asarray(counts, jnp.int32)
  k, m = rows.shape
  used = steps_per_epoch * batch_size

  def order(epoch: int) -> np.ndarray:
    perm = np.asarray(_class_permutations(keys, epoch, counts_dev, m))[:, :used]
    ids = np.take_along_axis(rows, perm.astype(np.int64), axis=1)
    return ids.reshape(k, steps_per_epoch, batch_size).swapaxes(0, 1)

  return order


def stacked_step(train_step: Callable) -> Callable:
  """The model's `train_step` for a `StackedState`: `jax.vmap` over the
  classes, batch f32[k, b, ...]; class c's step key is fold_in(key, c).
  Metrics: each of the model's, averaged over the classes, and the values
  of every class as NAME_per_class f32[k]."""

  def step(stacked: StackedState, batch: jax.Array, key: chex.PRNGKey):
    keys = _class_keys(key, stacked.classes)
    states, metrics = jax.vmap(train_step)(stacked.states, batch, keys)
    out = {name: jnp.mean(v, axis=0) for name, v in metrics.items()}
    out.update({f"{name}_per_class": v for name, v in metrics.items()})
    return stacked.replace(step=stacked.step + 1, states=states), out

  return step


def init_stacked(init: Callable[[chex.PRNGKey], Any], keys: jax.Array):
  """vmap(init)(keys): k states stacked along a leading axis, compiled as one
  program (op by op, vmap would compile every operation of the init)."""
  return training.compile_lowered(jax.jit(jax.vmap(init)).lower(keys))(keys)


def init_one_class(module, config, example: jax.Array, key: chex.PRNGKey,
                   classes: Sequence[int]) -> StackedState:
  """One fresh model of `module` (`init_state(key, config, example)`) per
  class, class c's from fold_in(named(key, "init"), c)."""
  keys = _class_keys(named(key, "init"), classes)
  states = init_stacked(lambda k: module.init_state(k, config, example), keys)
  return StackedState(step=jnp.zeros((), jnp.int32), states=states,
                      classes=tuple(int(c) for c in classes))


def train_one_class(stacked: StackedState, train_step: Callable, x: np.ndarray,
                    rows: np.ndarray, counts: np.ndarray, *, key: chex.PRNGKey,
                    epochs: int, batch_size: int, **fit_kwargs) -> training.FitResult:
  """Trains each stacked model on its class's rows of x, all at once.

  rows, counts: from `class_rows` (or `hold_out`), in the order of
  stacked.classes. Every epoch is `steps_per_epoch_for(counts,
  batch_size)` steps of `stacked_step(train_step)`; the order comes from
  named(key, "data") and the steps' keys from named(key, "steps"), as in
  `training.fit`, which runs the loop (fit_kwargs: workdir, progress,
  observers, ...; one device). Returns fit's result: state a
  `StackedState`, each record's train_NAME (mean over the classes) and
  train_NAME_per_class.
  """
  if len(stacked.classes) != len(counts):
    raise ValueError(f"rows: expected the rows of the {len(stacked.classes)} stacked "
                     f"classes, got {len(counts)}")
  steps = steps_per_epoch_for(counts, batch_size)
  order = class_order(named(key, "data"), rows, counts, batch_size, steps, stacked.classes)
  return training.fit(stacked, stacked_step(train_step), None, x, key=key, epochs=epochs,
                      batch_size=batch_size, steps_per_epoch=steps, order=order,
                      parallel="none", **fit_kwargs)


def score_stacked(states, fn: Callable, x: np.ndarray,
                  batch_size: int = DEFAULT_BATCH) -> np.ndarray:
  """Scores of every stacked model (states with a leading axis k) on the
  same x: f32[n, ...] -> f32[k, n]."""
  per_batch = lambda s, b: jax.vmap(lambda one: fn(one, b))(s)
  return _batched(per_batch, states, x, batch_size, axis=0)


def score_own(states, fn: Callable, xs: np.ndarray,
              batch_size: int = DEFAULT_BATCH) -> np.ndarray:
  """Model i's scores on its own rows xs[i]: xs f32[k, m, ...] -> f32[k, m]
  (e.g. each class model on its training class, for thresholds)."""
  return _batched(jax.vmap(fn), states, xs, batch_size, axis=1)


def _own_scores(states, fn: Callable, x: np.ndarray, rows: np.ndarray,
                counts: np.ndarray) -> list[np.ndarray]:
  s = score_own(states, fn, np.asarray(x)[np.maximum(rows, 0)])
  return [s[i, :counts[i]] for i in range(len(counts))]


def one_class_benchmark(config, score: str, x: np.ndarray, y: np.ndarray,
                        test_x: np.ndarray, test_y: np.ndarray, classes: Sequence[int], *,
                        key: chex.PRNGKey, epochs: int, batch_size: int,
                        contamination: float | None = None, target_fpr: float | None = None,
                        validation_fraction: float = 0.2, **fit_kwargs) -> dict:
  """Trains len(classes) models at once and scores the test split with each.

  x, y: the training split and its labels; class c's model trains on the
  rows labelled c. config: an AEConfig or VAEConfig. With target_fpr, a
  validation_fraction of each class's rows (`hold_out`, from named(key,
  "holdout")) is not trained on and calibrates its threshold; otherwise
  the contamination quantile of its training scores does. fit_kwargs go
  to `training.fit` (workdir, progress, observers, ...).
  Returns per-class AUROC / AP / threshold / realised FPR and recall, their
  means, epochs, steps, the last epoch's per-class loss, timings, scores
  f32[k, n_test] with labels bool[k, n_test] (True: anomalous, not of the
  model's class), and the trained `StackedState` (state).
  """
  if (contamination is None) == (target_fpr is None):
    raise ValueError("contamination, target_fpr: expected exactly one of them")
  module = vae if isinstance(config, vae.VAEConfig) else autoencoder
  classes = [int(c) for c in classes]
  rows, counts = class_rows(y, classes)
  val = None
  if target_fpr is not None:
    (rows, counts), val = hold_out(rows, counts, validation_fraction,
                                   named(key, "holdout"), classes)
  t0 = time.perf_counter()
  stacked = init_one_class(module, config, np.asarray(x[:1]), key, classes)
  init_seconds = time.perf_counter() - t0
  result = train_one_class(stacked, module.train_step, x, rows, counts, key=key,
                           epochs=epochs, batch_size=batch_size, **fit_kwargs)
  states = result.state.states
  train_seconds = sum(r["epoch_seconds"] for r in result.history)

  fn = score_fn(states, score)  # reads only the states' type and static config
  t0 = time.perf_counter()
  test_scores = score_stacked(states, fn, test_x)
  labels = np.stack([np.asarray(test_y) != c for c in classes])
  aurocs = np.asarray(jax.jit(jax.vmap(auroc))(test_scores, labels))
  score_seconds = time.perf_counter() - t0
  if target_fpr is not None:
    cal_scores = _own_scores(states, fn, x, *val)
    thresholds = [fpr_threshold(c, target_fpr) for c in cal_scores]
  else:
    cal_scores = _own_scores(states, fn, x, rows, counts)
    thresholds = [contamination_threshold(c, contamination) for c in cal_scores]
  calib = [float(np.mean(c > t)) for c, t in zip(cal_scores, thresholds)]
  per_rates = [rates(test_scores[i], labels[i], t) for i, t in enumerate(thresholds)]
  aps = [average_precision(test_scores[i], labels[i]) for i in range(len(classes))]
  last = result.history[-1] if result.history else {}
  return {
      "classes": classes, "auroc_per_class": [float(a) for a in aurocs],
      "auroc_mean": float(np.mean(aurocs)),
      "average_precision_per_class": aps, "average_precision_mean": float(np.mean(aps)),
      "threshold_per_class": thresholds,
      "calibration_flagged_fraction_per_class": calib,
      "test_fpr_per_class": [r["fpr"] for r in per_rates],
      "test_recall_per_class": [r["recall"] for r in per_rates],
      "test_fpr_mean": float(np.mean([r["fpr"] for r in per_rates])),
      "test_recall_mean": float(np.mean([r["recall"] for r in per_rates])),
      "train_examples_per_class": counts.tolist(),
      "steps_per_epoch": steps_per_epoch_for(counts, batch_size),
      "epochs": result.last_epoch, "steps": int(result.state.step),
      "final_train_loss_per_class": last.get("train_loss_per_class"),
      "compile_seconds": result.compile_seconds + init_seconds,
      "train_seconds": train_seconds, "score_seconds": score_seconds,
      "scores": test_scores, "labels": labels, "state": result.state,
  }
