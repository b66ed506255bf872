"""Anomaly detection: AUROC vs scikit-learn, threshold calibration on
synthetic data, vmapped one-class training vs separate runs, the detector
API, CSV handling and the CLI."""

import functools
import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from unsupjax import anomaly, autoencoder, vae
from unsupjax.anomaly_detector import AnomalyDetector, CSVError, read_numeric_csv

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
  got = float(jax.jit(anomaly.auroc)(s.astype(np.float32), y))
  np.testing.assert_allclose(got, roc_auc_score(y, s), rtol=0, atol=1e-6)


def test_auroc_vmapped_per_class_and_edge_cases():
  rng = np.random.default_rng(1)
  s = rng.normal(size=(4, 300)).astype(np.float32)
  y = rng.random((4, 300)) < 0.5
  got = np.asarray(jax.vmap(anomaly.auroc)(s, y))
  np.testing.assert_allclose(got, [roc_auc_score(y[i], s[i]) for i in range(4)], atol=1e-6)
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
    np.testing.assert_allclose(t, np.percentile(s, 100 * (1 - c)))  # PyOD's rule


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
  with pytest.raises(ValueError, match="contamination"):
    anomaly.contamination_threshold(np.arange(10.0), 1.5)
  with pytest.raises(ValueError, match="target_fpr"):
    anomaly.fpr_threshold(np.arange(10.0), 0.0)
  with pytest.raises(ValueError, match="train_scores"):
    anomaly.contamination_threshold(np.array([1.0, np.nan, 2.0]), 0.1)


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
  np.testing.assert_allclose(r["auroc"], roc_auc_score(y, by_c.score_samples(x)), atol=1e-6)
  d = by_c.decision_function(x)
  np.testing.assert_array_equal(by_c.predict(x), (d > 0).astype(np.int32))
  np.testing.assert_allclose(d, by_c.score_samples(x) - by_c.threshold_, rtol=1e-6)


def test_detector_score_matches_reconstruction_error(tabular_detectors):
  x, by_c, _ = tabular_detectors
  z = (x[:7] - by_c.mean_) / by_c.scale_
  out, _ = by_c.state_.model.apply({"params": by_c.state_.params}, z)
  want = np.mean((np.asarray(out, np.float64) - z) ** 2, axis=1)
  np.testing.assert_allclose(by_c.score_samples(x[:7]), want, rtol=1e-5)


def test_detector_rejects_bad_arguments():
  with pytest.raises(ValueError, match="contamination, target_fpr"):
    AnomalyDetector(contamination=0.1, target_fpr=0.1)
  with pytest.raises(ValueError, match="score"):
    AnomalyDetector(score="neg_elbo")
  with pytest.raises(ValueError, match="standardize"):
    AnomalyDetector(vae.VAEConfig(), standardize=True)
  with pytest.raises(ValueError, match="not fitted"):
    AnomalyDetector().predict(np.zeros((2, 4), np.float32))
  x = np.zeros((10, 4), np.float32)
  x[3, 1] = np.nan
  with pytest.raises(ValueError, match="x: expected finite values.*first: \\[3\\]"):
    AnomalyDetector(epochs=1, batch_size=2).fit(x)


def test_vae_detector_from_state_scores_negative_elbo(digits):
  train, test = digits
  x = train.flat()[:200]
  cfg = vae.VAEConfig(hidden=(32,), latent_dim=4)
  state = vae.init_state(jax.random.PRNGKey(0), cfg, x)
  det = AnomalyDetector.from_state(state, contamination=0.1).calibrate(x)
  np.testing.assert_allclose(det.score_samples(x[:5]),
                             np.asarray(vae.eval_step(state, x[:5])["neg_elbo"]), rtol=1e-5)
  assert det.predict(x).mean() == pytest.approx(0.1, abs=1 / 200)
  iw = AnomalyDetector.from_state(state, score="iwae", iwae_k=8, contamination=0.1)
  s = iw.score_samples(x[:5])
  want = vae.iwae_nll(state, x[:5], jax.random.PRNGKey(0), 8)
  np.testing.assert_allclose(s, np.asarray(want), rtol=1e-5)


# --------------------------------------------------------------------------
# Vmapped one-class training.


def test_class_permutation_ignores_padding():
  key = jax.random.PRNGKey(7)
  padded = np.asarray(anomaly.class_permutation(key, jnp.int32(3), jnp.int32(11), 20))
  alone = np.asarray(anomaly.class_permutation(key, jnp.int32(3), jnp.int32(11), 11))
  assert sorted(padded[:11].tolist()) == list(range(11))
  np.testing.assert_array_equal(padded[:11], alone)


def test_vmapped_one_class_training_equals_separate_runs(digits):
  train, _ = digits
  x = train.flat()
  classes = (3, 8)
  xs, counts = anomaly.one_class_data(x, train.y, classes)
  assert counts[1] < counts[0]
  xs[1, counts[1]:] = np.nan  # padding must never be read
  cfg = autoencoder.AEConfig(hidden=(8,), latent_dim=4)
  bs = 32
  steps = anomaly.steps_per_epoch_for(counts, bs)
  keys = jax.random.split(jax.random.PRNGKey(0), len(classes))
  init = lambda k: autoencoder.init_state(k, cfg, x[:1])
  kw = dict(train_step=autoencoder.train_step, batch_size=bs, steps_per_epoch=steps,
            epochs=2)
  stacked = anomaly.init_stacked(init, keys)
  got, metrics = jax.jit(functools.partial(anomaly.train_one_class_vmapped, **kw))(
      stacked, xs, counts, keys, jnp.int32(0))
  assert metrics["loss"].shape == (len(classes), 2)
  one = jax.jit(functools.partial(anomaly.train_one_class, **kw))
  for i, c in enumerate(classes):
    alone = x[train.y == c]  # unpadded: a run that never saw the other classes
    want, m = one(init(keys[i]), alone, jnp.int32(len(alone)), keys[i], jnp.int32(0))
    chex.assert_trees_all_close(jax.tree.map(lambda a: a[i], got.params), want.params,
                                atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(metrics["loss"][i], m["loss"], rtol=1e-5)
    assert int(got.step[i]) == 2 * steps
  assert not np.any(np.isnan(np.asarray(metrics["loss"])))


def test_one_class_data_and_steps():
  x = np.arange(10, dtype=np.float32).reshape(10, 1)
  y = np.array([0, 1, 1, 0, 1, 2, 1, 1, 0, 2])
  xs, counts = anomaly.one_class_data(x, y, (1, 2))
  assert counts.tolist() == [5, 2] and xs.shape == (2, 5, 1)
  np.testing.assert_array_equal(xs[1, :2, 0], [5, 9])
  assert anomaly.steps_per_epoch_for(counts, 2) == 1
  with pytest.raises(ValueError, match="batch_size"):
    anomaly.steps_per_epoch_for(counts, 3)
  with pytest.raises(ValueError, match="classes"):
    anomaly.one_class_data(x, y, (7,))


# --------------------------------------------------------------------------
# CSV handling.


def _write(tmp_path, text, name="t.csv"):
  p = tmp_path / name
  p.write_text(text)
  return p


def test_read_numeric_csv(tmp_path):
  p = _write(tmp_path, "a,b,id,label\n1,2,x1,0\n3.5,-4e-1,x2,1\n")
  x, y, names = read_numeric_csv(p, "label", ("id",))
  np.testing.assert_array_equal(x, [[1, 2], [3.5, -0.4]])
  assert y.tolist() == [0, 1] and names == ["a", "b"]


@pytest.mark.parametrize("text, kw, match", [
    ("a,b\n1,2\n", {"label_column": "Class"},
     r"column 'Class' not found; the columns are \['a', 'b'\]"),
    ("a,b\n1,2\n3,x\n", {}, r"column 'b' is not numeric: 'x' at line 3"),
    ("a,b\n1,2\n3,\n4,nan\n5,6\n", {},
     r"2 rows have missing, NaN or infinite values \(first at lines \[3, 4\]\)"),
    ("a,label\n1,0\n2,3\n", {"label_column": "label"},
     r"expected 0 \(normal\) / 1 \(anomaly\), found \[3.0\]"),
    ("", {}, "empty"),
])
def test_read_numeric_csv_errors(tmp_path, text, kw, match):
  with pytest.raises(CSVError, match=match):
    read_numeric_csv(_write(tmp_path, text), **kw)


# --------------------------------------------------------------------------
# CLI.


def test_cli_csv_end_to_end(tmp_path, capsys):
  rng = np.random.default_rng(8)
  normal = _gaussian_table(rng, 400, d=5)
  odd = _gaussian_table(rng, 20, d=5) + rng.normal(0, 1.5, size=(20, 5)).astype(np.float32)
  x = np.concatenate([normal, odd])
  y = np.r_[np.zeros(400, int), np.ones(20, int)]
  lines = ["t,f0,f1,f2,f3,f4,Class"] + [
      f"{i}," + ",".join(f"{v:.5f}" for v in row) + f",{lab}"
      for i, (row, lab) in enumerate(zip(x, y))]
  csv = _write(tmp_path, "\n".join(lines) + "\n", "gen.csv")
  code, err = _main(["anomaly", "--csv", str(csv), "--label-column", "Class",
                     "--drop-columns", "t", "--contamination", "0.05", "--compare",
                     "--no-progress", "--workdir", str(tmp_path / "run")], capsys)
  assert code == 0, err
  s = json.loads((tmp_path / "run" / "summary.json").read_text())
  assert s["features"] == ["f0", "f1", "f2", "f3", "f4"]
  scores = np.load(tmp_path / "run" / "scores.npy")
  np.testing.assert_allclose(s["auroc"], roc_auc_score(y, scores), atol=1e-6)
  assert s["auroc"] > 0.9
  assert abs(s["flagged_fraction"] - 0.05) <= 1 / 420
  assert set(s["baselines"]) == {"isolation_forest", "one_class_svm"}
  flags = np.loadtxt(tmp_path / "run" / "flags.csv", delimiter=",", skiprows=1)
  assert flags.shape == (420, 4) and int(flags[:, 2].sum()) == s["flagged"]
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
  code, err = _main(["anomaly", "--csv", str(csv), "--label-column", "malignant",
                     "--compare", "--no-progress", "--workdir", str(tmp_path / "bc")], capsys)
  assert code == 0, err
  s = json.loads((tmp_path / "bc" / "summary.json").read_text())
  base = {k: v["auroc"] for k, v in s["baselines"].items()}
  assert s["auroc"] > 0.9 and s["auroc"] >= min(base.values()) - 0.03, (s["auroc"], base)


def _main(argv, capsys):
  """The CLI in-process (no JAX start-up per call): (exit status, stderr)."""
  from unsupjax import cli
  code = cli.main(argv)
  return code, capsys.readouterr().err


def test_cli_csv_errors(tmp_path, capsys):
  csv = _write(tmp_path, "a,b\n1,2\n3,\n4,5\n")
  code, err = _main(["anomaly", "--csv", str(csv)], capsys)
  assert code == 2
  assert "--csv: 1 rows have missing, NaN or infinite values (first at lines [3])" in err
  code, err = _main(["anomaly", "--csv", str(csv), "--label-column", "y"], capsys)
  assert code == 2 and "column 'y' not found" in err
  code, err = _main(["anomaly", "--csv", str(csv), "--contamination", "2"], capsys)
  assert code == 2 and "--contamination: expected a fraction in (0, 1)" in err
  code, err = _main(["anomaly", "--csv", str(tmp_path / "nope.csv")], capsys)
  assert code == 2 and "expected an existing CSV file" in err
  code, err = _main(["anomaly"], capsys)
  assert code == 2 and "--csv: expected a CSV file" in err


def test_cli_one_class_digits_learns(tmp_path, capsys, digits):
  # The seeded learning check: ten dense AEs, one per digit, trained at once.
  code, err = _main(["anomaly", "one-class", "--dataset", "digits", "--epochs", "60",
                     "--target-fpr", "0.1", "--hidden", "64", "--latent-dim", "16",
                     "--no-progress", "--workdir", str(tmp_path / "oc")], capsys)
  assert code == 0, err
  s = json.loads((tmp_path / "oc" / "summary.json").read_text())
  scores = np.load(tmp_path / "oc" / "scores.npy")
  assert scores.shape == (10, 360) and len(s["auroc_per_class"]) == 10
  test_y = digits[1].y
  for c in range(10):
    np.testing.assert_allclose(s["auroc_per_class"][c], roc_auc_score(test_y != c, scores[c]),
                               atol=1e-6)
  assert s["auroc_mean"] == pytest.approx(np.mean(s["auroc_per_class"]))
  assert s["auroc_mean"] > 0.9, s["auroc_per_class"]
  # Each threshold keeps its class's held-out FPR at or under the target.
  assert all(f <= 0.1 for f in s["calibration_flagged_fraction_per_class"])
  for png in ("roc.png", "worst.png"):
    assert (tmp_path / "oc" / png).stat().st_size > 0
  code, err = _main(["anomaly", "one-class", "--model", "vae", "--score", "bce"], capsys)
  assert code == 2 and "--score: expected one of" in err
  code, err = _main(["anomaly", "one-class", "--classes", "3", "12"], capsys)
  assert code == 2 and "--classes: [12] not among the labels" in err
