"""Anomaly detection with autoencoders: scores, calibrated thresholds,
AUROC, the vmapped one-class protocol and a scikit-learn detector.

Offers
  * `scores`: `score_fn(state, score)` (higher = more anomalous:
    reconstruction error `mse` / `bce` for the AE / conv AE / DAE,
    `neg_elbo` or `iwae` for the VAE, `linear_mse` for the tabular AE),
    `score_dataset`; thresholds from quantiles of normal scores
    (`contamination_threshold`, `fpr_threshold`) and their realised `rates`;
    `auroc` (jit/vmap-able; NumPy float64 scores ranked in float64) and
    `average_precision`. Pure: no training loop is imported.
  * `one_class`: one model per class trained on that class only, all
    classes at once through `training.fit` with `jax.vmap` over stacked
    states (`init_one_class`, `train_one_class`, `StackedState`,
    `class_rows`, `hold_out`, `score_stacked`, `score_own`), and
    `one_class_benchmark`, the whole protocol.
  * `detector`: `AnomalyDetector`, a scikit-learn estimator with PyOD's
    conventions (1 = anomaly; scores grow with abnormality).

`one_class` and `detector` are imported on first use of their names, so
`import unsupjax.anomaly` loads neither the training loop nor scikit-learn.

Does not offer: models (`unsupjax.models`), reading tables
(`unsupjax.tables`), the CLI (`tasks/anomaly.py`), or supervised detectors.
Labels only build the one-class splits and the metrics, never a training
target.
"""

from __future__ import annotations

import importlib

from unsupjax.anomaly.scores import (AE_SCORES, TABULAR_SCORES, VAE_SCORES, auroc,
                                     average_precision, contamination_threshold, fpr_threshold,
                                     rates, score_dataset, score_fn)

# Imported on first use, so that the scores alone load neither the training
# loop nor scikit-learn.
_LAZY = {
    **dict.fromkeys(["StackedState", "class_order", "class_permutation", "class_rows",
                     "hold_out", "init_one_class", "init_stacked", "one_class_benchmark",
                     "one_class_data", "score_own", "score_stacked", "stacked_step",
                     "steps_per_epoch_for", "train_one_class"],
                    "unsupjax.anomaly.one_class"),
    **dict.fromkeys(["AnomalyDetector", "DEFAULT_CONTAMINATION"], "unsupjax.anomaly.detector"),
}

__all__ = ["AE_SCORES", "AnomalyDetector", "DEFAULT_CONTAMINATION", "StackedState",
           "TABULAR_SCORES", "VAE_SCORES", "auroc", "average_precision", "class_order",
           "class_permutation", "class_rows", "contamination_threshold", "fpr_threshold",
           "hold_out", "init_one_class", "init_stacked", "one_class_benchmark",
           "one_class_data", "rates", "score_dataset", "score_fn", "score_own",
           "score_stacked", "stacked_step", "steps_per_epoch_for", "train_one_class"]


def __getattr__(name: str):
  if name in _LAZY:
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value
  raise AttributeError(f"module 'unsupjax.anomaly' has no attribute {name!r}")


def __dir__():
  return sorted(set(globals()) | set(_LAZY))
