"""Anomaly detection: AUROC vs scikit-learn, threshold calibration on
synthetic data, vmapped one-class training vs separate runs, the detector
as a scikit-learn estimator, the layers, and the CLI (table reading is
tested in test_tables.py)."""

import ast
import json
import pickle
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.utils.estimator_checks import parametrize_with_checks
from sklearn.utils.validation import check_is_fitted

from conftest import REPO, cli_env
from unsupjax import anomaly, training
from unsupjax.anomaly import AnomalyDetector
from unsupjax.models import autoencoder, vae


# --------------------------------------------------------------------------
# AUROC.


@pytest.mark.parametrize("ties", [False, True])
def test_auroc_matches_sklearn(ties):
  rng = np.random.default_rng(0)
  n = 500
  y = rng.random(n) < 0.3
  s = rng.normal(size=n) + 1.2 * y
  if ties:  # heavy ties, within and across classes
    s = np.round(s * 2) / 2
  # NumPy float64 scores: ranked on the host in float64.
  got = anomaly.auroc(s, y)
  assert got.dtype == np.float64
  np.testing.assert_allclose(got, roc_auc_score(y, s), rtol=0, atol=1e-12)
  # float32 scores under jit: the JAX path, in float32 (sums of n_pos terms).
  s32 = s.astype(np.float32)
  got = jax.jit(anomaly.auroc)(s32, y)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(float(got), roc_auc_score(y, s32), rtol=0, atol=1e-6)


def test_auroc_keeps_float64_scores_apart():
  # Distinct in float64, one value in float32: casting would make them tie.
  s = np.array([1.0, 1.0 + 1e-12, 1.0 + 2e-12, 1.0 + 3e-12])
  y = np.array([0, 1, 0, 1])
  assert np.unique(s.astype(np.float32)).size == 1
  assert roc_auc_score(y, s) == 0.75
  assert anomaly.auroc(s, y) == 0.75
  assert float(anomaly.auroc(s.astype(np.float32), y)) == 0.5  # float32 scores do tie
  rng = np.random.default_rng(9)
  y = rng.random(400) < 0.4
  s = 1e6 + 1e-4 * (rng.normal(size=400) + y)  # all within float32's spacing at 1e6
  np.testing.assert_allclose(anomaly.auroc(s, y), roc_auc_score(y, s), rtol=0, atol=1e-12)
  assert anomaly.auroc(s, y) > 0.7
  with jax.enable_x64(True):  # JAX float64 arrays keep their precision too
    got = jax.jit(anomaly.auroc)(jnp.asarray(s), y)
    assert got.dtype == jnp.float64
    np.testing.assert_allclose(float(got), roc_auc_score(y, s), rtol=0, atol=1e-12)


def test_auroc_and_rates_check_their_arguments():
  with pytest.raises(ValueError, match="scores: expected finite values"):
    anomaly.auroc(np.array([0.0, np.nan]), np.array([0, 1]))
  with pytest.raises(ValueError, match=r"labels: expected the shape of scores \(3,\)"):
    anomaly.auroc(np.zeros(3), np.zeros(4))
  with pytest.raises(ValueError, match=r"scores, labels: expected two arrays of shape \[n\]"):
    anomaly.auroc(jnp.zeros((2, 3)), jnp.zeros((2, 3)))
  with pytest.raises(ValueError, match="labels: expected 0 \\(normal\\) / 1"):
    anomaly.rates(np.zeros(3), np.array([0, 2, 1]), 0.5)
  with pytest.raises(ValueError, match="scores: expected f\\[n\\]"):
    anomaly.average_precision(np.zeros((2, 2)), np.zeros((2, 2)))


def test_auroc_vmapped_per_class_and_edge_cases():
  rng = np.random.default_rng(1)
  s = rng.normal(size=(4, 300)).astype(np.float32)
  y = rng.random((4, 300)) < 0.5
  got = np.asarray(jax.vmap(anomaly.auroc)(s, y))
  np.testing.assert_allclose(got, [roc_auc_score(y[i], s[i]) for i in range(4)], rtol=0,
                             atol=1e-6)
  # Perfect, reversed and constant scores; a single class gives NaN.
  y1 = np.array([0, 0, 1, 1])
  assert float(anomaly.auroc(jnp.array([0., 1., 2., 3.]), y1)) == 1.0
  assert float(anomaly.auroc(jnp.array([3., 2., 1., 0.]), y1)) == 0.0
  assert float(anomaly.auroc(jnp.zeros(4), y1)) == 0.5
  assert np.isnan(float(anomaly.auroc(jnp.arange(4.0), np.zeros(4))))


# --------------------------------------------------------------------------
# Thresholds.


def test_contamination_threshold_flags_requested_fraction():
  rng = np.random.default_rng(2)
  s = rng.gamma(2.0, size=10_000)
  for c in (0.01, 0.05, 0.2):
    t = anomaly.contamination_threshold(s, c)
    assert abs(np.mean(s > t) - c) <= 1.0 / len(s)
    np.testing.assert_allclose(t, np.percentile(s, 100 * (1 - c)), rtol=1e-12)  # PyOD's rule


def test_fpr_threshold_is_largest_rate_not_above_target():
  rng = np.random.default_rng(3)
  s = rng.normal(size=999)
  for a in (0.01, 0.05, 0.1, 0.37):
    t = anomaly.fpr_threshold(s, a)
    fpr = np.mean(s > t)
    assert fpr <= a
    assert fpr > a - 1.0 / len(s)  # as close as n allows
    # Brute force: no observed threshold with a larger FPR meets the target.
    feasible = [np.mean(s > v) for v in s if np.mean(s > v) <= a]
    assert fpr == max(feasible)


def test_threshold_arguments_are_checked():
  with pytest.raises(ValueError, match=r"contamination: expected a fraction in \(0, 1\), "
                                       "got 1.5"):
    anomaly.contamination_threshold(np.arange(10.0), 1.5)
  with pytest.raises(ValueError, match="target_fpr: expected a fraction"):
    anomaly.fpr_threshold(np.arange(10.0), 0.0)
  with pytest.raises(ValueError, match="contamination: expected a fraction.*got True"):
    anomaly.contamination_threshold(np.arange(10.0), True)
  with pytest.raises(ValueError, match="train_scores: expected finite scores, got 1 NaN/Inf"):
    anomaly.contamination_threshold(np.array([1.0, np.nan, 2.0]), 0.1)
  with pytest.raises(ValueError, match=r"normal_scores: expected >= 2 scores f\[n\], got "
                                       r"shape \(1,\)"):
    anomaly.fpr_threshold(np.array([1.0]), 0.1)


def test_rates_against_counts():
  s = np.array([0.1, 0.9, 0.4, 0.8, 0.2, 0.7])
  y = np.array([0, 1, 0, 0, 1, 1])
  r = anomaly.rates(s, y, 0.5)
  assert r == {"fpr": 1 / 3, "recall": 2 / 3, "precision": 2 / 3, "flagged_fraction": 0.5}


# --------------------------------------------------------------------------
# The detector on synthetic tabular data: calibration hits its targets.


def _gaussian_table(rng, n, d=6, shift=0.0):
  # Normal rows lie near a 2-D subspace; anomalies are shifted off it.
  basis = np.linspace(-1, 1, 2 * d).reshape(2, d)
  z = rng.normal(size=(n, 2))
  return (z @ basis + 0.1 * rng.normal(size=(n, d)) + shift).astype(np.float32)


@pytest.fixture(scope="module")
def tabular_detectors():
  rng = np.random.default_rng(4)
  x = _gaussian_table(rng, 3000)
  cfg = autoencoder.AEConfig(hidden=(16,), latent_dim=2, loss="mse")
  by_c = AnomalyDetector(cfg, standardize=True, contamination=0.05, epochs=15,
                         batch_size=100, seed=0).fit(x)
  by_fpr = AnomalyDetector(cfg, standardize=True, contamination=None, target_fpr=0.02,
                           validation_fraction=0.3, epochs=15, batch_size=100,
                           seed=0).fit(x)
  return x, by_c, by_fpr


def test_detector_contamination_and_fpr_calibration(tabular_detectors):
  x, by_c, by_fpr = tabular_detectors
  # Contamination: the requested fraction of the training rows is flagged.
  assert abs(by_c.predict(x).mean() - 0.05) <= 1.0 / len(x)
  assert by_c.calibration_["flagged_fraction"] == pytest.approx(0.05, abs=1 / len(x))
  np.testing.assert_allclose(by_c.threshold_,
                             np.quantile(by_c.score_samples(x), 0.95), rtol=1e-12)
  # Target FPR: at most the target on the held-out split, and about the
  # target on fresh normal data (binomial 4-sigma band).
  assert by_fpr.calibration_["calibration_examples"] == 900
  assert by_fpr.calibration_["calibration_fpr"] <= 0.02
  fresh = _gaussian_table(np.random.default_rng(5), 5000)
  fpr = by_fpr.predict(fresh).mean()
  assert abs(fpr - 0.02) < 4 * np.sqrt(0.02 * 0.98 / 900)


def test_detector_separates_synthetic_anomalies(tabular_detectors):
  _, by_c, _ = tabular_detectors
  rng = np.random.default_rng(6)
  normal = _gaussian_table(rng, 500)
  odd = normal[:50] + rng.normal(size=(50, normal.shape[1])).astype(np.float32)
  x = np.concatenate([normal, odd])
  y = np.r_[np.zeros(500), np.ones(50)]
  r = by_c.evaluate(x, y)
  assert r["auroc"] > 0.95
  # The bar is one the same model untrained does not reach.
  untrained = AnomalyDetector.from_state(
      autoencoder.init_state(jax.random.PRNGKey(1), by_c.config_, x[:1]))
  z = (x - by_c.mean_) / by_c.scale_
  assert roc_auc_score(y, untrained.score_samples(z)) < 0.85
  s = by_c.score_samples(x)
  assert s.dtype == np.float64
  np.testing.assert_allclose(r["auroc"], roc_auc_score(y, s), rtol=1e-12)
  np.testing.assert_allclose(r["average_precision"], average_precision_score(y, s), rtol=1e-12)
  d = by_c.decision_function(x)
  np.testing.assert_array_equal(by_c.predict(x), (d > 0).astype(np.int32))
  np.testing.assert_array_equal(d, s - by_c.threshold_)
  np.testing.assert_array_equal(by_c.predict(x), (s > by_c.threshold_).astype(np.int32))


def test_detector_score_matches_reconstruction_error(tabular_detectors):
  x, by_c, _ = tabular_detectors
  z = (x[:7] - by_c.mean_) / by_c.scale_
  out, _ = by_c.state_.model.apply({"params": by_c.state_.params}, z)
  want = np.mean((np.asarray(out, np.float64) - z) ** 2, axis=1)
  np.testing.assert_allclose(by_c.score_samples(x[:7]), want, rtol=1e-5)  # float32 model


def test_detector_checks_parameters_in_fit():
  x = np.zeros((10, 4), np.float32)
  # scikit-learn's contract: the constructor stores, fit checks.
  bad = AnomalyDetector(contamination=0.1, target_fpr=0.1)
  assert bad.get_params()["target_fpr"] == 0.1
  for det, match in [
      (bad, "contamination, target_fpr: give at most one"),
      (AnomalyDetector(score_name="neg_elbo"), "score_name: expected one of"),
      (AnomalyDetector(vae.VAEConfig(), standardize=True), "standardize: only the dense"),
      (AnomalyDetector(config="ae"), "config: expected an AEConfig or a VAEConfig, got str"),
      (AnomalyDetector(epochs=0), "epochs: expected a positive integer, got 0"),
      (AnomalyDetector(batch_size=2.5), "batch_size: expected a positive integer"),
      (AnomalyDetector(validation_fraction=1.0), "validation_fraction: expected a fraction"),
      (AnomalyDetector(seed="0"), "seed: expected an integer"),
  ]:
    with pytest.raises(ValueError, match=match):
      det.fit(x)
  # One rule only: a target FPR alone replaces the default contamination.
  assert AnomalyDetector(target_fpr=0.05)._resolved()[2] is None
  assert AnomalyDetector()._resolved()[2] == 0.1


def test_detector_rejects_bad_input():
  det = AnomalyDetector(epochs=1, batch_size=2)
  x = np.zeros((10, 4), np.float32)
  x[3, 1] = np.nan
  with pytest.raises(ValueError, match=r"X: expected finite values, found NaN/Inf in 1 rows "
                                       r"\(first: \[3\]\)"):
    det.fit(x)
  with pytest.raises(ValueError, match="1 sample"):
    det.fit(np.zeros((1, 4)))
  with pytest.raises(ValueError, match="x_val: expected finite values"):
    det.fit(np.zeros((10, 4)), x_val=x)
  with pytest.raises(ValueError, match=r"x_val: expected examples of shape \(4,\) like X"):
    det.fit(np.zeros((10, 4)), x_val=np.zeros((5, 3)))
  with pytest.raises(ValueError, match="X: 3 rows are too few to hold out"):
    AnomalyDetector(target_fpr=0.1, epochs=1).fit(np.zeros((3, 4)))


def test_detector_unfitted_raises_not_fitted():
  det = AnomalyDetector()
  x = np.zeros((3, 4), np.float32)
  with pytest.raises(NotFittedError):
    check_is_fitted(det)
  for method in (det.score_samples, det.decision_function, det.predict, det.calibrate):
    with pytest.raises(NotFittedError):
      method(x)
  with pytest.raises(NotFittedError):
    det.evaluate(x, np.zeros(3))


def test_vae_detector_from_state_scores_negative_elbo(digits):
  train, test = digits
  x = train.flat()[:200]
  cfg = vae.VAEConfig(hidden=(32,), latent_dim=4)
  # Compiled, since op-by-op dispatch is most of these small calls' time.
  state = jax.jit(vae.init_state, static_argnums=1)(jax.random.PRNGKey(0), cfg, x)
  det = AnomalyDetector.from_state(state)
  with pytest.raises(NotFittedError):
    check_is_fitted(det)  # a model but no threshold yet
  det.calibrate(x)
  check_is_fitted(det)
  assert det.calibration_["contamination"] == 0.1  # PyOD's default rule
  np.testing.assert_allclose(det.score_samples(x[:5]),
                             np.asarray(jax.jit(vae.eval_step)(state, x[:5])["neg_elbo"]),
                             rtol=1e-6)
  assert det.predict(x).mean() == pytest.approx(0.1, abs=1 / 200)
  iw = AnomalyDetector.from_state(state, score_name="iwae", iwae_k=8, contamination=0.1)
  s = iw.score_samples(x[:5])
  from unsupjax.rng import named, run_key
  want = jax.jit(vae.iwae_nll, static_argnums=3)(state, x[:5], named(run_key(0), "iwae"), 8)
  np.testing.assert_allclose(s, np.asarray(want), rtol=1e-6)
  with pytest.raises(ValueError, match=r"X has 63 features, but AnomalyDetector is expecting "
                                       "64 features"):
    det.predict(x[:, :63])
  with pytest.raises(ValueError, match="standardize: from_state wraps a model"):
    AnomalyDetector.from_state(state, standardize=True)


# --------------------------------------------------------------------------
# The detector as a scikit-learn estimator.


def _tiny_detector(**kw):
  return AnomalyDetector(autoencoder.AEConfig(hidden=(4,), latent_dim=1), standardize=True,
                         epochs=1, batch_size=8, **kw)


PYOD_CONVENTION = (
    "deliberate: PyOD's conventions, predict 1 = anomaly / 0 = normal and "
    "decision_function growing with abnormality; these checks require "
    "scikit-learn's -1 / +1 labels and the opposite sign")
# Every other check of scikit-learn's suite passes; these two fail by design
# (strict: a pass would mean the conventions changed, and this list with them).
EXPECTED_FAILED_CHECKS = {"check_outliers_train": PYOD_CONVENTION,
                          "check_outliers_fit_predict": PYOD_CONVENTION}


@parametrize_with_checks([_tiny_detector()],
                         expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS,
                         xfail_strict=True)
def test_sklearn_estimator_checks(estimator, check):
  check(estimator)


def test_detector_params_clone_repr_pickle_and_grid_search():
  from sklearn.model_selection import GridSearchCV, StratifiedKFold
  det = _tiny_detector(contamination=0.05)
  assert repr(det).startswith("AnomalyDetector(") and "contamination=0.05" in repr(det)
  assert det.get_params()["contamination"] == 0.05
  twin = clone(det).set_params(epochs=3)
  assert twin.epochs == 3 and det.epochs == 1 and twin.config is not det.config
  rng = np.random.default_rng(0)
  x = _gaussian_table(rng, 96, d=4)
  odd = _gaussian_table(rng, 8, d=4)[:, ::-1].copy()  # the normal subspace, mirrored
  X = np.concatenate([x, odd])
  y = np.r_[np.zeros(96, int), np.ones(8, int)]
  fitted = clone(det).fit(X, y)  # y is accepted and ignored
  np.testing.assert_array_equal(fitted.score_samples(X), clone(det).fit(X).score_samples(X))
  again = pickle.loads(pickle.dumps(fitted))
  np.testing.assert_array_equal(again.score_samples(X), fitted.score_samples(X))
  assert again.threshold_ == fitted.threshold_
  # roc_auc through decision_function reads PyOD's sign the right way round.
  cv = StratifiedKFold(2, shuffle=True, random_state=0)
  search = GridSearchCV(det, {"epochs": [1, 2]}, scoring="roc_auc", cv=cv).fit(X, y)
  assert search.best_params_["epochs"] in (1, 2) and search.best_estimator_.epochs in (1, 2)
  for i, (fit_rows, test_rows) in enumerate(cv.split(X, y)):
    one = clone(det).set_params(epochs=search.best_params_["epochs"]).fit(X[fit_rows])
    np.testing.assert_allclose(
        search.cv_results_[f"split{i}_test_score"][search.best_index_],
        roc_auc_score(y[test_rows], one.decision_function(X[test_rows])), rtol=1e-12)
  check_is_fitted(search.best_estimator_)
  np.testing.assert_allclose(search.score(X, y),
                             roc_auc_score(y, search.best_estimator_.decision_function(X)),
                             rtol=1e-12)


# --------------------------------------------------------------------------
# Layers.


def raised_text(tree: ast.AST) -> list[str]:
  """The string pieces of every `raise` statement's expression."""
  return [n.value for r in ast.walk(tree) if isinstance(r, ast.Raise) and r.exc
          for n in ast.walk(r.exc) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def _imports(tree: ast.AST) -> set[str]:
  out = set()
  for n in ast.walk(tree):
    if isinstance(n, ast.ImportFrom) and n.module:
      out |= {n.module} | {f"{n.module}.{a.name}" for a in n.names}
    elif isinstance(n, ast.Import):
      out |= {a.name for a in n.names}
  return out


def test_anomaly_layers(tmp_path):
  package = REPO / "unsupjax" / "anomaly"
  trees = {p.name: ast.parse(p.read_text()) for p in sorted(package.glob("*.py"))}
  assert {"__init__.py", "scores.py", "one_class.py", "detector.py"} <= set(trees)
  # Scores are pure: no training loop, no task, no CLI.
  scores_imports = _imports(trees["scores.py"])
  assert not {m for m in scores_imports
              if m.startswith(("unsupjax.train", "unsupjax.tasks", "unsupjax.cli"))}
  for name, tree in trees.items():
    assert not {m for m in _imports(tree) if m.startswith(("unsupjax.tasks", "unsupjax.cli"))}
    # Library errors name arguments, never CLI flags.
    assert not [t for t in raised_text(tree) if "--" in t], name
  # Nor through the package: importing the scores loads no loop, no scikit-learn.
  code = ("import sys, unsupjax.anomaly.scores; print(sorted(m for m in sys.modules if "
          "m.startswith(('unsupjax.train', 'unsupjax.tasks', 'unsupjax.cli', 'sklearn'))))")
  out = subprocess.run([sys.executable, "-c", code], env=cli_env(tmp_path),
                       capture_output=True, text=True, timeout=120)
  assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr


# --------------------------------------------------------------------------
# Vmapped one-class training.


def test_class_permutation_ignores_padding():
  key = jax.random.PRNGKey(7)
  perm = jax.jit(anomaly.class_permutation, static_argnums=3)  # one dispatch, not per op
  padded = np.asarray(perm(key, jnp.int32(3), jnp.int32(11), 20))
  alone = np.asarray(perm(key, jnp.int32(3), jnp.int32(11), 11))
  assert sorted(padded[:11].tolist()) == list(range(11))
  np.testing.assert_array_equal(padded[:11], alone)


@pytest.fixture(scope="module")
def two_class_models(digits):
  """Digits 3 and 8 as one-class training data (every other row NaN, so
  that reading one shows), and two tiny stacked AEs for them."""
  train, _ = digits
  classes = (3, 8)
  x = train.flat().copy()
  x[~np.isin(train.y, classes)] = np.nan
  cfg = autoencoder.AEConfig(hidden=(8,), latent_dim=4)
  key = jax.random.PRNGKey(0)
  rows, counts = anomaly.class_rows(train.y, classes)
  stacked = anomaly.init_one_class(autoencoder, cfg, x[rows[0, :1]], key, classes)
  return x, train.y, rows, counts, cfg, key, stacked


def test_one_class_through_fit_equals_separate_runs(two_class_models, tmp_path):
  # The stacked models train through training.fit (one vmapped step, a
  # custom order); a class alone, on its own rows only, gets the same
  # numbers, and rows of other classes (NaN) are never read.
  x, y, rows, counts, cfg, key, stacked = two_class_models
  assert counts[1] < counts[0]  # class 8 is padded in the stack
  got = anomaly.train_one_class(stacked, autoencoder.train_step, x, rows, counts, key=key,
                                epochs=2, batch_size=32, progress=False, workdir=tmp_path)
  steps = anomaly.steps_per_epoch_for(counts, 32)
  assert int(got.state.step) == 2 * steps and got.state.classes == (3, 8)
  chex.assert_shape(got.state.states.step, (2,))
  # fit's records (and metrics.jsonl): the mean over classes and each class's loss.
  logged = training.read_history(tmp_path / training.METRICS_FILE, 2)
  assert logged == got.history and [r["epoch"] for r in logged] == [1, 2]
  losses = np.array([r["train_loss_per_class"] for r in logged])
  np.testing.assert_allclose([r["train_loss"] for r in logged], losses.mean(1), rtol=1e-6)
  alone = x[y == 8]
  one = anomaly.init_one_class(autoencoder, cfg, alone[:1], key, (8,))
  want = anomaly.train_one_class(one, autoencoder.train_step, alone,
                                 *anomaly.class_rows(np.full(len(alone), 8), (8,)),
                                 key=key, epochs=2, batch_size=32, progress=False)
  chex.assert_trees_all_close(jax.tree.map(lambda a: a[1], got.state.states.params),
                              jax.tree.map(lambda a: a[0], want.state.states.params),
                              atol=1e-5, rtol=1e-4)
  np.testing.assert_allclose(losses[:, 1],
                             [r["train_loss_per_class"][0] for r in want.history], rtol=1e-5)


def test_one_class_training_stops_on_nan(two_class_models):
  # fit's NaN check sees every class: one diverging class stops the run.
  x, y, rows, counts, _, key, stacked = two_class_models
  x = x.copy()
  x[y == 8] = np.nan
  with pytest.raises(training.TrainingDiverged, match="in epoch 1"):
    anomaly.train_one_class(stacked, autoencoder.train_step, x, rows, counts, key=key,
                            epochs=2, batch_size=32, progress=False)


def test_one_class_data_rows_order_and_hold_out():
  x = np.arange(10, dtype=np.float32).reshape(10, 1)
  y = np.array([0, 1, 1, 0, 1, 2, 1, 1, 0, 2])
  xs, counts = anomaly.one_class_data(x, y, (1, 2))
  assert counts.tolist() == [5, 2] and xs.shape == (2, 5, 1)
  np.testing.assert_array_equal(xs[1, :, 0], [5, 9, 0, 0, 0])
  rows, counts = anomaly.class_rows(y, (1, 2))
  np.testing.assert_array_equal(rows, [[1, 2, 4, 6, 7], [5, 9, -1, -1, -1]])
  assert anomaly.steps_per_epoch_for(counts, 2) == 1
  with pytest.raises(ValueError, match="batch_size: expected at most 2"):
    anomaly.steps_per_epoch_for(counts, 3)
  with pytest.raises(ValueError, match=r"classes: no examples of class\(es\) \[7\]"):
    anomaly.class_rows(y, (7,))
  # The order: each class's own rows, a fresh permutation per epoch, no padding.
  order = anomaly.class_order(jax.random.PRNGKey(0), rows, counts, 2, 1, (1, 2))
  e1, e2 = order(1), order(2)
  assert e1.shape == (1, 2, 2)
  assert set(e1[0, 0]) <= {1, 2, 4, 6, 7} and sorted(e1[0, 1]) == [5, 9]
  assert not np.array_equal(np.stack([order(e)[0, 0] for e in range(1, 6)]),
                            np.tile(e1[0, 0], (5, 1)))
  # Class 1's order does not depend on the classes beside it.
  alone = anomaly.class_order(jax.random.PRNGKey(0), rows[:1], counts[:1], 2, 1, (1,))
  np.testing.assert_array_equal(alone(2)[:, 0], e2[:, 0])
  # Held out: ceil(fraction * count) rows per class, disjoint from the rest.
  (fit_rows, fit_counts), (val_rows, val_counts) = anomaly.hold_out(
      rows, counts, 0.4, jax.random.PRNGKey(1), (1, 2))
  assert fit_counts.tolist() == [3, 1] and val_counts.tolist() == [2, 1]
  for i, n in enumerate(counts):
    both = np.r_[fit_rows[i, :fit_counts[i]], val_rows[i, :val_counts[i]]]
    assert sorted(both) == sorted(rows[i, :n])
  with pytest.raises(ValueError, match=r"validation_fraction: class\(es\) \[2\] would keep"):
    anomaly.hold_out(rows, counts, 0.6, jax.random.PRNGKey(1), (1, 2))


# --------------------------------------------------------------------------
# CLI.


def _main(argv, capsys):
  """The CLI in-process (no JAX start-up per call): (exit status, stdout, stderr)."""
  from unsupjax import cli
  code = cli.main(argv)
  out = capsys.readouterr()
  return code, out.out, out.err


def _write(tmp_path, text, name="t.csv"):
  p = tmp_path / name
  p.write_text(text)
  return p


def _off_subspace_table(rng, n_normal, n_odd, d=5):
  """Normal rows near a 2-D subspace; anomalies in its orthogonal
  complement with the normal rows' norms, so an untrained model (whose
  error follows the norm) cannot tell them apart."""
  basis = np.linspace(-1, 1, 2 * d).reshape(2, d)
  q, _ = np.linalg.qr(np.concatenate([basis.T, rng.normal(size=(d, d - 2))], axis=1))
  normal = rng.normal(size=(n_normal, 2)) @ basis + 0.1 * rng.normal(size=(n_normal, d))
  u = rng.normal(size=(n_odd, d - 2))
  u /= np.linalg.norm(u, axis=1, keepdims=True)
  r = np.linalg.norm(rng.normal(size=(n_odd, 2)) @ basis, axis=1, keepdims=True)
  return normal.astype(np.float32), ((r * u) @ q[:, 2:].T).astype(np.float32)


def test_cli_csv_end_to_end(tmp_path, capsys):
  rng = np.random.default_rng(8)
  normal, odd = _off_subspace_table(rng, 400, 20)
  x = np.concatenate([normal, odd])
  y = np.r_[np.zeros(400, int), np.ones(20, int)]
  lines = ["t,f0,f1,f2,f3,f4,site,Class"] + [
      f"{i}," + ",".join(f"{v:.5f}" for v in row) + f",{'AB'[i % 2]},{lab}"
      for i, (row, lab) in enumerate(zip(x, y))]
  lines.insert(101, "100.5,0.1,0.2,,0.4,0.5,A,0")  # data row 100, line 102: a missing cell
  csv = _write(tmp_path, "\n".join(lines) + "\n", "gen.csv")
  code, out, err = _main(["anomaly", "--csv", str(csv), "--label-column", "Class",
                          "--drop-columns", "t", "--contamination", "0.05", "--compare",
                          "--batch-size", "8", "--no-progress",
                          "--workdir", str(tmp_path / "run")], capsys)
  assert code == 0, err
  # The same reader and report line as `kmeans --csv`.
  assert ("dropped 1 text column (site: 'A' at line 2) and 1 row with missing values "
          "(line 102)") in out
  s = json.loads((tmp_path / "run" / "summary.json").read_text())
  assert s["features"] == ["f0", "f1", "f2", "f3", "f4"]
  assert s["dropped"]["missing_rows"] == [102] and s["rows"] == 420
  scores = np.load(tmp_path / "run" / "scores.npy")
  np.testing.assert_allclose(s["auroc"], roc_auc_score(y, scores), rtol=1e-12)
  assert s["average_precision"] == pytest.approx(average_precision_score(y, scores), rel=1e-12)
  # Learned: an untrained autoencoder on the same standardised rows is at chance.
  z = (x - x.mean(0)) / x.std(0)
  cfg = autoencoder.AEConfig(hidden=(16,), latent_dim=2, loss="mse", output="linear")
  untrained = autoencoder.eval_step(autoencoder.init_state(jax.random.PRNGKey(0), cfg, z[:1]),
                                    z)["mse"]
  assert roc_auc_score(y, np.asarray(untrained)) < 0.65
  assert s["auroc"] > 0.9
  assert abs(s["flagged_fraction"] - 0.05) <= 1 / 420
  assert set(s["baselines"]) == {"isolation_forest", "one_class_svm"}
  flags = np.loadtxt(tmp_path / "run" / "flags.csv", delimiter=",", skiprows=1)
  assert flags.shape == (420, 4) and int(flags[:, 2].sum()) == s["flagged"]
  # Rows are numbered as the file's data rows: the dropped one is missing.
  assert flags[:, 0].astype(int).tolist() == [i for i in range(421) if i != 100]
  np.testing.assert_array_equal(flags[:, 3], y)
  assert (tmp_path / "run" / "roc.png").stat().st_size > 0


@pytest.mark.slow
def test_cli_breast_cancer_against_sklearn_detectors(tmp_path, capsys):
  # scikit-learn's WDBC as ODDS builds its outlier set: every benign row and
  # 10 malignant ones (the anomalies), fit and scored together.
  from sklearn.datasets import load_breast_cancer
  bc = load_breast_cancer()
  rng = np.random.default_rng(0)
  idx = np.r_[np.nonzero(bc.target == 1)[0],
              rng.choice(np.nonzero(bc.target == 0)[0], 10, replace=False)]
  names = [n.replace(" ", "_") for n in bc.feature_names]
  lines = [",".join(names + ["malignant"])] + [
      ",".join(f"{v:.6g}" for v in bc.data[i]) + f",{int(bc.target[i] == 0)}" for i in idx]
  csv = _write(tmp_path, "\n".join(lines) + "\n", "wdbc.csv")
  code, _, err = _main(["anomaly", "--csv", str(csv), "--label-column", "malignant",
                        "--compare", "--no-progress", "--workdir", str(tmp_path / "bc")], capsys)
  assert code == 0, err
  s = json.loads((tmp_path / "bc" / "summary.json").read_text())
  base = {k: v["auroc"] for k, v in s["baselines"].items()}
  assert s["auroc"] > 0.9 and s["auroc"] >= min(base.values()) - 0.03, (s["auroc"], base)


def test_cli_csv_errors(tmp_path, capsys):
  run = ["--workdir", str(tmp_path / "run")]
  csv = _write(tmp_path, "a,b\n1,2\n3,4,5\n4,5\n")
  code, _, err = _main(["anomaly", "--csv", str(csv), *run], capsys)
  assert code == 2
  assert f"--csv: {csv}, line 3: expected 2 fields (as in the header), got 3" in err
  csv = _write(tmp_path, "a,b\n1,2\n3,4\n", "ok.csv")
  code, _, err = _main(["anomaly", "--csv", str(csv), "--label-column", "y", *run], capsys)
  assert code == 2 and f"--label-column: y not in {csv}" in err
  code, _, err = _main(["anomaly", "--csv", str(csv), "--contamination", "2"], capsys)
  assert code == 2 and "--contamination: expected a fraction in (0, 1)" in err
  code, _, err = _main(["anomaly", "--csv", str(tmp_path / "nope.csv"), *run], capsys)
  assert code == 2 and "--csv: expected an existing CSV file" in err
  code, _, err = _main(["anomaly"], capsys)
  assert code == 2 and "--csv: expected a CSV file, or the `one-class` mode" in err
  # One parser: a flag of the other mode is refused, not ignored.
  code, _, err = _main(["anomaly", "--csv", str(csv), "--model", "vae"], capsys)
  assert code == 2 and "--model: only used by `anomaly one-class`" in err
  code, _, err = _main(["anomaly", "one-class", "--csv", str(csv)], capsys)
  assert code == 2 and "--csv: scores a table; not used by `anomaly one-class`" in err
  code, _, err = _main(["anomaly", "one-class", "--noise-level", "0.2"], capsys)
  assert code == 2 and "--noise-level: only used by --model dae, got --model ae" in err
  code, _, err = _main(["anomaly", "one-class", "--model", "vae", "--score", "bce"], capsys)
  assert code == 2 and "--score: expected one of ('neg_elbo', 'mse') for --model vae" in err
  code, _, err = _main(["anomaly", "--csv", str(csv), "--lr", "0"], capsys)
  assert code == 2 and "--lr: expected a positive number, got 0.0" in err
  assert not (tmp_path / "run").exists()  # nothing is written before the checks pass


def test_cli_tiny_table_default_batch_and_workdir(tmp_path, capsys):
  # A 3-row file: the default batch size (64) is clamped to the rows, an
  # explicit one is not; a run in --workdir is replaced only with --overwrite.
  csv = _write(tmp_path, "a,b,c\n1,2,3\n2,4,7\n3,6,8\n")
  run = tmp_path / "run"
  code, out, err = _main(["anomaly", "--csv", str(csv), "--epochs", "2", "--no-progress",
                          "--workdir", str(run)], capsys)
  assert code == 0, err
  record = json.loads((run / "run.json").read_text())
  assert record["model"] == "anomaly-table"
  assert record["config"]["batch_size"] == 3 and record["config"]["epochs"] == 2
  assert record["config"]["latent_dim"] == 2 and record["config"]["hidden"] == [16]
  s = json.loads((run / "summary.json").read_text())
  assert s["rows"] == 3 and np.load(run / "scores.npy").shape == (3,)
  assert "1 of 3 rows flagged" in out  # contamination 0.05 of 3 rows: the top one
  first = (run / "summary.json").read_text()
  code, _, err = _main(["anomaly", "--csv", str(csv), "--epochs", "2", "--no-progress",
                        "--workdir", str(run)], capsys)
  assert code == 2 and f"--workdir: {run} already holds a anomaly-table run; pass " \
                       "--overwrite" in err
  assert (run / "summary.json").read_text() == first
  code, _, err = _main(["anomaly", "--csv", str(csv), "--batch-size", "5", "--overwrite",
                        "--workdir", str(run)], capsys)
  assert code == 2 and "--batch-size: expected at most 3 (training rows), got 5" in err
  # The detector's own error about the rows, in the flag's words.
  code, _, err = _main(["anomaly", "--csv", str(csv), "--target-fpr", "0.1", "--overwrite",
                        "--workdir", str(run)], capsys)
  assert code == 2 and f"--csv: {csv}: 3 rows are too few to hold out" in err
  assert (run / "summary.json").read_text() == first
  # A one-class run is not replaced by a table run, even with --overwrite.
  other = tmp_path / "oc"
  other.mkdir()
  (other / "run.json").write_text(json.dumps({"model": "anomaly-one-class", "config": {}}))
  code, _, err = _main(["anomaly", "--csv", str(csv), "--overwrite",
                        "--workdir", str(other)], capsys)
  assert code == 2 and "holds a run of 'anomaly-one-class', not of 'anomaly-table'" in err


def test_cli_one_class_digits_learns(tmp_path, capsys, digits):
  # The seeded learning check: ten dense AEs, one per digit, trained at once
  # (--epochs before the mode counts: one parser).
  run = tmp_path / "oc"
  code, _, err = _main(["anomaly", "--epochs", "60", "one-class", "--dataset", "digits",
                        "--target-fpr", "0.1", "--hidden", "64", "--latent-dim", "16",
                        "--no-progress", "--workdir", str(run)], capsys)
  assert code == 0, err
  record = json.loads((run / "run.json").read_text())
  assert record["model"] == "anomaly-one-class" and record["config"]["epochs"] == 60
  assert record["config"]["batch_size"] == 32 and record["config"]["model"] == "ae"
  assert record["config"]["classes"] == list(range(10))
  # Trained through training.fit: its metrics.jsonl, checkpoint and status.
  logged = training.read_history(run / "metrics.jsonl", 100)
  assert [r["epoch"] for r in logged] == list(range(1, 61))
  assert len(logged[-1]["train_loss_per_class"]) == 10
  assert logged[-1]["train_loss"] < 0.5 * logged[0]["train_loss"]
  assert training.checkpoint_epochs(run) == [60]
  from unsupjax import runlog
  listed = runlog.read_run(run)
  assert listed.status == "finished" and listed.epochs_done == 60
  s = json.loads((run / "summary.json").read_text())
  assert s["epochs"] == 60 and s["steps"] == 60 * s["steps_per_epoch"]
  scores = np.load(run / "scores.npy")
  assert scores.shape == (10, 360) and len(s["auroc_per_class"]) == 10
  test_y = digits[1].y
  for c in range(10):
    np.testing.assert_allclose(s["auroc_per_class"][c], roc_auc_score(test_y != c, scores[c]),
                               atol=1e-6)
  assert s["auroc_mean"] == pytest.approx(np.mean(s["auroc_per_class"]))
  assert s["auroc_mean"] > 0.9, s["auroc_per_class"]
  # Each threshold keeps its class's held-out FPR at or under the target.
  assert all(f <= 0.1 for f in s["calibration_flagged_fraction_per_class"])
  for png in ("roc.png", "worst.png", "curves.png"):
    assert (run / png).stat().st_size > 0
  code, _, err = _main(["anomaly", "one-class", "--classes", "3", "12",
                        "--workdir", str(tmp_path / "bad")], capsys)
  assert code == 2 and "--classes: [12] not among the labels" in err
  assert not (tmp_path / "bad").exists()
