"""`AnomalyDetector`: a PyOD / scikit-learn style detector over any
autoencoder-family model, and numeric CSV loading for tabular data.

    det = AnomalyDetector(autoencoder.AEConfig(loss="mse"), contamination=0.05)
    det.fit(x_normal)                  # trains the model, calibrates threshold_
    det.score_samples(x)               # f32[n] anomaly scores, higher = worse
    det.decision_function(x)           # score - threshold_, > 0 means anomaly
    det.predict(x)                     # i32[n], 1 = anomaly, 0 = normal
    det.evaluate(x, y)                 # AUROC, AP, realised FPR / recall

The vocabulary is PyOD's (its `decision_function` is also "higher = more
abnormal" and `predict` returns 1 for outliers); scikit-learn's own
detectors use the opposite sign and -1 for outliers.

Threshold calibration, without magic constants:
  * `contamination=c`: the (1 - c) quantile of the training scores (the
    expected anomaly fraction of the training data);
  * `target_fpr=a`: the threshold whose false-positive rate on a held-out
    normal split (`x_val`, or `validation_fraction` of the fit data, which
    is then not trained on) is at most a.

Models: `AEConfig` (dense / conv AE, DAE through its corruption; default
score 'mse'), `VAEConfig` (default 'neg_elbo'; 'iwae' for the IWAE NLL), or
`standardize=True` with a dense `AEConfig` for real-valued tabular features
(z-scored with the training mean/std; linear output, squared error).
`AnomalyDetector.from_state` wraps a model trained elsewhere; `calibrate`
then only sets the threshold.

Does not offer: supervised training (labels are only ever used by
`evaluate`), or streaming data larger than memory.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
from typing import Any

import jax
import numpy as np

from unsupjax import anomaly, autoencoder, train, vae
from unsupjax.data import CSVError, csv_column, read_csv_rows


# The threshold rule when neither contamination nor target_fpr is given
# (PyOD's default contamination).
DEFAULT_CONTAMINATION = 0.1


class AnomalyDetector:
  """Detector over an autoencoder-family model (see the module docstring).

  Attributes after fit / calibrate: threshold_ (float), decision_scores_
  (f32[n] scores of the calibration data), calibration_ (dict: method,
  requested value, realised flagged fraction on the calibration scores),
  state_ (the trained model state), mean_/scale_ (standardize only).
  """

  def __init__(self, config: autoencoder.AEConfig | vae.VAEConfig | None = None, *,
               score: str | None = None, contamination: float | None = None,
               target_fpr: float | None = None, validation_fraction: float = 0.2,
               standardize: bool = False, epochs: int = 50, batch_size: int = 128,
               seed: int = 0, iwae_k: int = 100):
    self.config = autoencoder.AEConfig(loss="mse") if config is None else config
    is_vae = isinstance(self.config, vae.VAEConfig)
    if not is_vae and not isinstance(self.config, autoencoder.AEConfig):
      raise ValueError(f"config: expected an AEConfig or a VAEConfig, got "
                       f"{type(self.config).__name__}")
    if standardize and (is_vae or self.config.arch != "dense"):
      raise ValueError("standardize: only the dense AEConfig models real-valued features")
    if standardize:  # real-valued features: a linear output and squared error
      self.config = dataclasses.replace(self.config, loss="mse", output="linear")
    allowed = (anomaly.VAE_SCORES if is_vae else
               anomaly.TABULAR_SCORES if standardize else anomaly.AE_SCORES)
    self.score = score or allowed[0]
    if self.score not in allowed:
      raise ValueError(f"score: expected one of {allowed} for this model, got {score!r}")
    if contamination is not None and target_fpr is not None:
      raise ValueError("contamination, target_fpr: give at most one of them")
    if contamination is None and target_fpr is None:
      contamination = DEFAULT_CONTAMINATION
    if contamination is not None:
      anomaly._check_fraction(contamination, "contamination")
    if target_fpr is not None:
      anomaly._check_fraction(target_fpr, "target_fpr")
    anomaly._check_fraction(validation_fraction, "validation_fraction")
    for name, v in (("epochs", epochs), ("batch_size", batch_size), ("iwae_k", iwae_k)):
      if not isinstance(v, int) or v < 1:
        raise ValueError(f"{name}: expected a positive integer, got {v!r}")
    self.contamination, self.target_fpr = contamination, target_fpr
    self.validation_fraction, self.standardize = validation_fraction, standardize
    self.epochs, self.batch_size, self.seed, self.iwae_k = epochs, batch_size, seed, iwae_k
    self.state_ = None

  # -- construction from a trained model ---------------------------------

  @classmethod
  def from_state(cls, state, *, score: str | None = None, **kw) -> "AnomalyDetector":
    """A detector over an already trained `AEState` / `VAEState`; call
    `calibrate(x_normal)` (or fit, which would retrain) before predicting."""
    det = cls(state.config, score=score, **kw)
    det.state_ = state
    return det

  # -- training and calibration ------------------------------------------

  def _prepare(self, x: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(x, np.float32)
    if x.ndim < 2 or x.shape[0] == 0:
      raise ValueError(f"{what}: expected f32[n, ...] with n >= 1, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
      bad = np.unique(np.nonzero(~np.isfinite(x.reshape(len(x), -1)))[0])
      raise ValueError(f"{what}: expected finite values, found NaN/Inf in {bad.size} "
                       f"rows (first: {bad[:5].tolist()})")
    if self.standardize:
      if x.ndim != 2:
        raise ValueError(f"{what}: expected a table f32[n, d], got shape {x.shape}")
      if getattr(self, "mean_", None) is not None:
        x = (x - self.mean_) / self.scale_
    return x

  def _score_fn(self):
    key = jax.random.PRNGKey(self.seed) if self.score == "iwae" else None
    return anomaly.score_fn(self.state_, self.score, key, self.iwae_k)

  def fit(self, x: np.ndarray, x_val: np.ndarray | None = None) -> "AnomalyDetector":
    """Trains the model on x: f32[n, ...] ((mostly) normal data) and
    calibrates threshold_. x_val: held-out normal data for target_fpr
    (unused with contamination, which calibrates on x). With target_fpr and
    no x_val, a random validation_fraction of x is held out (not trained
    on) as the normal calibration split."""
    self.mean_ = self.scale_ = None
    x = self._prepare(x, "x")
    key = jax.random.PRNGKey(self.seed)
    split_key, init_key, fit_key = jax.random.split(key, 3)
    if self.target_fpr is not None and x_val is None:
      n_val = int(math.ceil(self.validation_fraction * len(x)))
      if n_val < 2 or len(x) - n_val < 2:
        raise ValueError(f"x: {len(x)} rows are too few to hold out "
                         f"validation_fraction={self.validation_fraction}")
      perm = np.asarray(jax.random.permutation(split_key, len(x)))
      x, x_val = x[perm[n_val:]], x[perm[:n_val]]
    if self.standardize:
      self.mean_ = x.mean(axis=0)
      std = x.std(axis=0)
      # A constant feature carries no information; scale 1 keeps it at 0.
      self.scale_ = np.where(std > 0, std, 1.0).astype(np.float32)
      x = (x - self.mean_) / self.scale_
    if self.batch_size > len(x):
      raise ValueError(f"batch_size: expected at most {len(x)} (training rows), "
                       f"got {self.batch_size}")
    if isinstance(self.config, vae.VAEConfig):
      state = vae.init_state(init_key, self.config, x[:1])
      step = vae.train_step
    else:
      state = autoencoder.init_state(init_key, self.config, x[:1])
      step = autoencoder.train_step
    result = train.fit(state, step, None, x, key=fit_key, epochs=self.epochs,
                       batch_size=self.batch_size, progress=False, log=lambda s: None)
    self.state_ = result.state
    self.train_history_ = result.history
    self._calibrate(x, None if x_val is None else self._prepare(x_val, "x_val"))
    return self

  def calibrate(self, x_normal: np.ndarray) -> "AnomalyDetector":
    """Sets threshold_ from normal data without training: the contamination
    quantile or the target-FPR threshold of its scores."""
    if self.state_ is None:
      raise ValueError("calibrate: the detector has no model; call fit or from_state")
    x = self._prepare(x_normal, "x_normal")
    self._calibrate(x, x)
    return self

  def _calibrate(self, x_train: np.ndarray, x_val: np.ndarray | None) -> None:
    fn = self._score_fn()
    train_scores = anomaly.score_dataset(self.state_, fn, x_train)
    if self.target_fpr is not None:
      cal = anomaly.score_dataset(self.state_, fn, x_val) if x_val is not x_train else train_scores
      self.threshold_ = anomaly.fpr_threshold(cal, self.target_fpr)
      self.calibration_ = {"method": "target_fpr", "target_fpr": self.target_fpr,
                           "calibration_examples": int(len(cal)),
                           "calibration_fpr": float(np.mean(cal > self.threshold_))}
    else:
      self.threshold_ = anomaly.contamination_threshold(train_scores, self.contamination)
      self.calibration_ = {"method": "contamination", "contamination": self.contamination,
                           "calibration_examples": int(len(train_scores)),
                           "flagged_fraction": float(np.mean(train_scores > self.threshold_))}
    self.decision_scores_ = train_scores

  # -- inference -----------------------------------------------------------

  def _check_fitted(self, need_threshold: bool = True) -> None:
    if self.state_ is None or (need_threshold and not hasattr(self, "threshold_")):
      raise ValueError("detector: not fitted; call fit (or from_state + calibrate) first")

  def score_samples(self, x: np.ndarray) -> np.ndarray:
    """Anomaly scores f32[n] (higher = more anomalous): the reconstruction
    error, or the VAE's negative ELBO / IWAE NLL."""
    self._check_fitted(need_threshold=False)
    return anomaly.score_dataset(self.state_, self._score_fn(), self._prepare(x, "x"))

  def decision_function(self, x: np.ndarray) -> np.ndarray:
    """score_samples(x) - threshold_: f32[n], positive for predicted anomalies."""
    self._check_fitted()
    return self.score_samples(x) - np.float32(self.threshold_)

  def predict(self, x: np.ndarray) -> np.ndarray:
    """i32[n]: 1 = anomaly (score > threshold_), 0 = normal."""
    return (self.decision_function(x) > 0).astype(np.int32)

  def evaluate(self, x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """AUROC, average precision and the threshold's realised rates on
    labelled data (y: 1 = anomaly)."""
    y = np.asarray(y).astype(bool)
    s = self.score_samples(x)
    return {"auroc": float(anomaly.auroc(s, y)),
            "average_precision": anomaly.average_precision(s, y),
            "threshold": float(self.threshold_),
            **anomaly.rates(s, y, self.threshold_)}


# --------------------------------------------------------------------------
# Numeric CSV tables.


def read_numeric_csv(path: str | pathlib.Path, label_column: str | None = None,
                     drop_columns: tuple[str, ...] = ()
                     ) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
  """Reads a CSV with a header row: (x f64[n, d], labels i32[n] or None, feature names).

  Every column but the label column and `drop_columns` must be numeric.
  The label column must hold 0 (normal) and 1 (anomaly). Rows with an
  empty or NaN feature value are rejected (CSVError naming how many and
  the first line numbers), not silently dropped: imputing them is a
  modelling decision the user should make.
  """
  header, rows = read_csv_rows(path)
  for name in ((label_column,) if label_column else ()) + tuple(drop_columns):
    if name not in header:
      raise CSVError(f"column {name!r} not found; the columns are {header}")
  bad_len = [i + 2 for i, r in enumerate(rows) if len(r) != len(header)]
  if bad_len:
    raise CSVError(f"{path}: {len(bad_len)} rows do not have {len(header)} fields "
                   f"(first at line {bad_len[0]})")
  features = [h for h in header if h != label_column and h not in drop_columns]
  if not features:
    raise CSVError(f"{path}: no feature columns left after removing the label and "
                   f"dropped columns")
  cols = {h: i for i, h in enumerate(header)}
  try:
    x = np.stack([csv_column(rows, cols[name], name) for name in features], axis=1)
  except CSVError as e:
    raise CSVError(f"{e} (drop it with --drop-columns, or encode it as numbers)") from None
  nan_rows = np.nonzero(~np.isfinite(x).all(axis=1))[0]
  if nan_rows.size:
    raise CSVError(f"{nan_rows.size} rows have missing, NaN or infinite values (first at "
                   f"lines {(nan_rows[:5] + 2).tolist()}); remove or impute them first")
  labels = None
  if label_column:
    c = cols[label_column]
    raw = [r[c].strip() for r in rows]
    try:
      vals = np.array([float(v) for v in raw])
    except ValueError:
      raise CSVError(f"label column {label_column!r}: expected 0 (normal) / 1 (anomaly), "
                     f"found non-numeric values") from None
    if not np.isin(vals, (0.0, 1.0)).all():
      odd = sorted(set(vals[~np.isin(vals, (0.0, 1.0))].tolist()))[:5]
      raise CSVError(f"label column {label_column!r}: expected 0 (normal) / 1 (anomaly), "
                     f"found {odd}")
    labels = vals.astype(np.int32)
  return x, labels, features
