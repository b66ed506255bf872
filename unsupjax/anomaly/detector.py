"""`AnomalyDetector`: a scikit-learn estimator, with PyOD's conventions, over
any autoencoder-family model.

    det = AnomalyDetector(autoencoder.AEConfig(loss="mse"), contamination=0.05)
    det.fit(x_normal)                  # trains the model, calibrates threshold_
    det.score_samples(x)               # f64[n] anomaly scores, higher = worse
    det.decision_function(x)           # score - threshold_, > 0 means anomaly
    det.predict(x)                     # i32[n], 1 = anomaly, 0 = normal
    det.evaluate(x, y)                 # AUROC, AP, realised FPR / recall

A scikit-learn estimator (`OutlierMixin`, `BaseEstimator`): `get_params`,
`set_params`, `clone`, pipelines, `GridSearchCV`, pickling and
`check_is_fitted` work; parameters are checked in `fit`, not in the
constructor; using an unfitted detector raises `NotFittedError`.

The vocabulary is PyOD's, not scikit-learn's: `score_samples` and
`decision_function` grow with abnormality and `predict` returns 1 for an
anomaly and 0 for a normal example (scikit-learn's own detectors use the
opposite sign and -1 for outliers, +1 for inliers). With labels y = 1 for
anomalies, `roc_auc_score(y, det.decision_function(x))` and
`GridSearchCV(det, ..., scoring="roc_auc")` therefore read the right way
round.

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

Randomness: one key, `run_key(seed)`; the held-out split is drawn from
named(key, "holdout"), the model starts from named(key, "init"),
`training.fit` gets the key itself, and the IWAE score's samples come from
named(key, "iwae").

Does not offer: supervised training (labels are only ever used by
`evaluate`; `fit` accepts y only to fit scikit-learn's API), or streaming
data larger than memory.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from unsupjax import training
from unsupjax.anomaly import scores as scores_lib
from unsupjax.models import autoencoder, vae
from unsupjax.rng import check_seed, named, run_key

# The threshold rule when neither contamination nor target_fpr is given
# (PyOD's default contamination).
DEFAULT_CONTAMINATION = 0.1


class AnomalyDetector(OutlierMixin, BaseEstimator):
  """Detector over an autoencoder-family model (see the module docstring).

  Parameters: config (AEConfig or VAEConfig; None: `AEConfig(loss="mse")`),
  score_name (see `scores.score_fn`; None: the model's first score; not
  `score`, a name scikit-learn reserves for a method), contamination /
  target_fpr (at most one; neither: contamination 0.1),
  validation_fraction, standardize, epochs, batch_size (clipped to the
  training rows), seed, iwae_k.

  Attributes after fit / calibrate: threshold_ (float), decision_scores_
  (f64[n] scores of the calibration data), calibration_ (dict: method,
  requested value, realised flagged fraction on the calibration scores),
  state_ (the trained model state), config_ and score_name_ (the model
  configuration and score used), input_shape_, n_features_in_,
  mean_ / scale_ (f32[d] with standardize, else None), train_history_.
  """

  def __init__(self, config: autoencoder.AEConfig | vae.VAEConfig | None = None, *,
               score_name: str | None = None, contamination: float | None = None,
               target_fpr: float | None = None, validation_fraction: float = 0.2,
               standardize: bool = False, epochs: int = 50, batch_size: int = 128,
               seed: int = 0, iwae_k: int = 100):
    self.config = config
    self.score_name = score_name
    self.contamination = contamination
    self.target_fpr = target_fpr
    self.validation_fraction = validation_fraction
    self.standardize = standardize
    self.epochs = epochs
    self.batch_size = batch_size
    self.seed = seed
    self.iwae_k = iwae_k

  # -- parameters ----------------------------------------------------------

  def _resolved(self) -> tuple[Any, str, float | None]:
    """(model config, score name, contamination or None) after checking
    every parameter; ValueError naming the parameter."""
    config = autoencoder.AEConfig(loss="mse") if self.config is None else self.config
    is_vae = isinstance(config, vae.VAEConfig)
    if not is_vae and not isinstance(config, autoencoder.AEConfig):
      raise ValueError(f"config: expected an AEConfig or a VAEConfig, got "
                       f"{type(config).__name__}")
    if not isinstance(self.standardize, (bool, np.bool_)):
      raise ValueError(f"standardize: expected True or False, got {self.standardize!r}")
    if self.standardize and (is_vae or config.arch != "dense"):
      raise ValueError("standardize: only the dense AEConfig models real-valued features")
    if self.standardize:  # real-valued features: a linear output and squared error
      config = dataclasses.replace(config, loss="mse", output="linear")
    allowed = (scores_lib.VAE_SCORES if is_vae else
               scores_lib.TABULAR_SCORES if config.output == "linear" else
               scores_lib.AE_SCORES)
    score = allowed[0] if self.score_name is None else self.score_name
    if score not in allowed:
      raise ValueError(f"score_name: expected one of {allowed} for this model, got "
                       f"{score!r}")
    contamination = self.contamination
    if contamination is not None and self.target_fpr is not None:
      raise ValueError("contamination, target_fpr: give at most one of them")
    if contamination is None and self.target_fpr is None:
      contamination = DEFAULT_CONTAMINATION
    if contamination is not None:
      scores_lib._check_fraction(contamination, "contamination")
    if self.target_fpr is not None:
      scores_lib._check_fraction(self.target_fpr, "target_fpr")
    scores_lib._check_fraction(self.validation_fraction, "validation_fraction")
    for name in ("epochs", "batch_size", "iwae_k"):
      v = getattr(self, name)
      if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{name}: expected a positive integer, got {v!r}")
    if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)):
      raise ValueError(f"seed: expected an integer, got {self.seed!r}")
    check_seed(int(self.seed))
    return config, score, contamination

  # -- construction from a trained model ---------------------------------

  @classmethod
  def from_state(cls, state, *, score_name: str | None = None, **kw) -> "AnomalyDetector":
    """A detector over an already trained `AEState` / `VAEState`; call
    `calibrate(x_normal)` (or fit, which would retrain) before predicting."""
    det = cls(state.config, score_name=score_name, **kw)
    if det.standardize:
      raise ValueError("standardize: from_state wraps a model trained on its own inputs; "
                       "standardize the data before scoring instead")
    det.config_, det.score_name_, _ = det._resolved()
    det.input_shape_ = tuple(int(s) for s in state.model.image_shape)
    det.n_features_in_ = det.input_shape_[0]
    det.mean_ = det.scale_ = None
    det.state_ = state
    return det

  # -- input checks ----------------------------------------------------------

  def _check_input(self, x, name: str, *, fitting: bool = False) -> np.ndarray:
    """x as f32[n, ...]: checked like scikit-learn does (and against the
    fitted input shape), finite, standardised when fitted with standardize."""
    kw = dict(allow_nd=True, dtype=np.float32, ensure_all_finite=False,
              ensure_min_samples=2 if fitting else 1)
    if name == "X":  # records or checks n_features_in_ / feature_names_in_
      x = validate_data(self, x, reset=fitting, **kw)
    else:
      x = check_array(x, input_name=name, **kw)
    if not fitting and hasattr(self, "input_shape_") and x.shape[1:] != self.input_shape_:
      raise ValueError(f"{name}: expected examples of shape {self.input_shape_} (as in fit), "
                       f"got {x.shape[1:]}")
    if not np.all(np.isfinite(x)):
      bad = np.unique(np.nonzero(~np.isfinite(x.reshape(len(x), -1)))[0])
      raise ValueError(f"{name}: expected finite values, found NaN/Inf in {bad.size} "
                       f"rows (first: {bad[:5].tolist()})")
    if self.standardize and x.ndim != 2:
      raise ValueError(f"{name}: standardize expects a table f[n, d], got shape {x.shape}")
    if not fitting and getattr(self, "mean_", None) is not None:
      x = (x - self.mean_) / self.scale_
    return x

  # -- training and calibration ------------------------------------------

  def fit(self, X, y=None, *, x_val=None) -> "AnomalyDetector":
    """Trains the model on X: f[n, ...] ((mostly) normal data) and
    calibrates threshold_. y is ignored (no labels are trained on).
    x_val: held-out normal data for target_fpr (unused with contamination,
    which calibrates on X). With target_fpr and no x_val, a random
    validation_fraction of X is held out (not trained on) as the normal
    calibration split."""
    config, score, contamination = self._resolved()
    X = self._check_input(X, "X", fitting=True)
    shape = X.shape[1:]
    key = run_key(int(self.seed))
    if x_val is not None:
      x_val = self._check_input(x_val, "x_val", fitting=True)
      if x_val.shape[1:] != shape:
        raise ValueError(f"x_val: expected examples of shape {shape} like X, got "
                         f"{x_val.shape[1:]}")
    elif self.target_fpr is not None:
      n_val = int(math.ceil(self.validation_fraction * len(X)))
      if n_val < 2 or len(X) - n_val < 2:
        raise ValueError(f"X: {len(X)} rows are too few to hold out "
                         f"validation_fraction={self.validation_fraction}")
      perm = np.asarray(jax.random.permutation(named(key, "holdout"), len(X)))
      X, x_val = X[perm[n_val:]], X[perm[:n_val]]
    mean = scale = None
    if self.standardize:
      mean = X.mean(axis=0)
      std = X.std(axis=0)
      # A constant feature carries no information; scale 1 keeps it at 0.
      scale = np.where(std > 0, std, 1.0).astype(np.float32)
      X = (X - mean) / scale
      x_val = None if x_val is None else (x_val - mean) / scale
    batch_size = int(self.batch_size)
    if batch_size > len(X):
      warnings.warn(f"batch_size={batch_size} is more than the {len(X)} training rows; "
                    f"using {len(X)}", UserWarning, stacklevel=2)
      batch_size = len(X)
    module = vae if isinstance(config, vae.VAEConfig) else autoencoder
    state = module.init_state(named(key, "init"), config, X[:1])
    result = training.fit(state, module.train_step, None, X, key=key,
                          epochs=int(self.epochs), batch_size=batch_size, progress=False,
                          log=lambda s: None)
    fn = self._score_fn(result.state, score)
    train_scores = _score(result.state, fn, X)
    val_scores = None if x_val is None else _score(result.state, fn, x_val)
    self.threshold_, self.calibration_ = self._threshold(train_scores, val_scores,
                                                         contamination)
    self.config_, self.score_name_, self.input_shape_ = config, score, shape
    self.mean_, self.scale_ = mean, scale
    self.state_, self.train_history_ = result.state, result.history
    self.decision_scores_ = train_scores
    return self

  def calibrate(self, x_normal) -> "AnomalyDetector":
    """Sets threshold_ from normal data without training: the contamination
    quantile or the target-FPR threshold of its scores."""
    if getattr(self, "state_", None) is None:
      raise NotFittedError("AnomalyDetector: no model to calibrate; call fit, or wrap a "
                           "trained state with from_state")
    _, _, contamination = self._resolved()
    x = self._check_input(x_normal, "x_normal")
    s = _score(self.state_, self._score_fn(self.state_, self.score_name_), x)
    self.threshold_, self.calibration_ = self._threshold(s, s, contamination)
    self.decision_scores_ = s
    return self

  def _score_fn(self, state, score: str):
    key = named(run_key(int(self.seed)), "iwae") if score == "iwae" else None
    return scores_lib.score_fn(state, score, key, int(self.iwae_k))

  def _threshold(self, train_scores: np.ndarray, val_scores: np.ndarray | None,
                 contamination: float | None) -> tuple[float, dict]:
    if contamination is None:
      threshold = scores_lib.fpr_threshold(val_scores, self.target_fpr)
      return threshold, {"method": "target_fpr", "target_fpr": self.target_fpr,
                         "calibration_examples": int(len(val_scores)),
                         "calibration_fpr": float(np.mean(val_scores > threshold))}
    threshold = scores_lib.contamination_threshold(train_scores, contamination)
    return threshold, {"method": "contamination", "contamination": contamination,
                       "calibration_examples": int(len(train_scores)),
                       "flagged_fraction": float(np.mean(train_scores > threshold))}

  # -- inference -----------------------------------------------------------

  def __sklearn_is_fitted__(self) -> bool:
    return hasattr(self, "threshold_")

  def score_samples(self, X) -> np.ndarray:
    """Anomaly scores f64[n] (higher = more anomalous; the model's float32
    scores, held exactly): the reconstruction error, or the VAE's negative
    ELBO / IWAE NLL."""
    if getattr(self, "state_", None) is None:
      raise NotFittedError("This AnomalyDetector has no model yet; call fit (or from_state)")
    x = self._check_input(X, "X")
    return _score(self.state_, self._score_fn(self.state_, self.score_name_), x)

  def decision_function(self, X) -> np.ndarray:
    """score_samples(X) - threshold_: f64[n], positive for predicted anomalies."""
    check_is_fitted(self)
    return self.score_samples(X) - self.threshold_

  def predict(self, X) -> np.ndarray:
    """i32[n]: 1 = anomaly (score > threshold_), 0 = normal."""
    return (self.decision_function(X) > 0).astype(np.int32)

  def evaluate(self, X, y) -> dict[str, Any]:
    """AUROC, average precision and the threshold's realised rates on
    labelled data (y: 1 = anomaly)."""
    check_is_fitted(self)
    s = self.score_samples(X)
    y = np.asarray(y)
    if y.shape != s.shape:
      raise ValueError(f"y: expected {s.shape[0]} labels (one per row of X), got shape "
                       f"{y.shape}")
    return {"auroc": float(scores_lib.auroc(s, y)),
            "average_precision": scores_lib.average_precision(s, y),
            "threshold": float(self.threshold_),
            **scores_lib.rates(s, y, self.threshold_)}

  # -- pickling: the optimizer's functions do not pickle, so the state
  # travels as its arrays and is rebuilt around them ----------------------

  def __getstate__(self):
    d = dict(super().__getstate__())
    if d.get("state_") is not None:
      d["state_"] = _PackedState.pack(d["state_"], d["input_shape_"])
    return d

  def __setstate__(self, d):
    if isinstance(d.get("state_"), _PackedState):
      d = dict(d, state_=d["state_"].unpack())
    super().__setstate__(d)


def _score(state, fn, x: np.ndarray) -> np.ndarray:
  # Without the optimizer (a new object every fit) the state's structure
  # repeats across fits, so the compiled scoring is reused.
  lean = state.replace(opt_state=None, tx=None)
  return scores_lib.score_dataset(lean, fn, x).astype(np.float64)


@dataclasses.dataclass(frozen=True)
class _PackedState:
  """A model state as host arrays: its config, input shape and leaves."""
  config: Any
  input_shape: tuple[int, ...]
  leaves: tuple[Any, ...]
  key_leaves: tuple[bool, ...]  # which leaves were typed PRNG keys

  @classmethod
  def pack(cls, state, input_shape) -> "_PackedState":
    leaves = jax.tree.leaves(state)
    is_key = tuple(jnp.issubdtype(a.dtype, jax.dtypes.prng_key) for a in leaves)
    host = tuple(np.asarray(jax.random.key_data(a) if k else a)
                 for a, k in zip(leaves, is_key))
    return cls(state.config, tuple(input_shape), host, is_key)

  def unpack(self):
    module = vae if isinstance(self.config, vae.VAEConfig) else autoencoder
    example = np.zeros((1,) + self.input_shape, np.float32)
    like = module.init_state(jax.random.PRNGKey(0), self.config, example)
    treedef = jax.tree.structure(like)
    leaves = [jax.random.wrap_key_data(a) if k else jnp.asarray(a)
              for a, k in zip(self.leaves, self.key_leaves)]
    return jax.tree.unflatten(treedef, leaves)
