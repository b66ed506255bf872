"""Deep clustering: DEC's pieces against NumPy and finite differences, IDEC's
loss weighting against an independent computation, the loop's exact resume,
a seeded learning check on digits, and the four commands in process (their
scores against scipy/scikit-learn references, --pretrained, evaluate,
--resume, and the errors)."""

from __future__ import annotations

import json
import sys
import types
import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unsupjax import cli, deep_clustering as dc, kmeans
from unsupjax.metrics import clustering as cm
from unsupjax.models import autoencoder

from conftest import digits_labels, hungarian_accuracy


def _np_student_t(z, c, alpha):
  d = ((z[:, None, :] - c[None, :, :]) ** 2).sum(-1)
  w = (1.0 + d / alpha) ** (-(alpha + 1.0) / 2.0)
  return w / w.sum(1, keepdims=True)


def _np_target(q):
  w = q ** 2 / q.sum(0)
  return w / w.sum(1, keepdims=True)


@pytest.mark.parametrize("alpha", [1.0, 0.5, 3.0])
def test_student_t_rows_sum_to_one_and_match_numpy(alpha):
  rng = np.random.default_rng(0)
  z = rng.normal(size=(50, 6)).astype(np.float32) * 3
  c = rng.normal(size=(7, 6)).astype(np.float32) * 3
  q = dc.student_t_assignment(jnp.asarray(z), jnp.asarray(c), alpha)
  chex.assert_shape(q, (50, 7))
  np.testing.assert_allclose(np.asarray(q).sum(1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(q, _np_student_t(z.astype(np.float64), c.astype(np.float64),
                                              alpha), rtol=2e-4, atol=1e-6)
  # One implementation: k-means keeps only its own loss.
  assert not hasattr(kmeans, "student_t_assignment")


def test_target_distribution_matches_numpy_rows_sum_to_one_and_is_sharper():
  rng = np.random.default_rng(1)
  q = rng.dirichlet(np.ones(5), size=200)
  p = np.asarray(dc.target_distribution(jnp.asarray(q, jnp.float32)))
  np.testing.assert_allclose(p, _np_target(q), rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-5)
  ent = lambda a: -(a * np.log(a)).sum(1)
  assert ent(p).mean() < 0.8 * ent(q).mean()
  # With equal cluster frequencies p is q squared and renormalised: every row
  # keeps its argmax and its top probability grows.
  qb = np.concatenate([q, q[:, [1, 2, 3, 4, 0]], q[:, [2, 3, 4, 0, 1]],
                       q[:, [3, 4, 0, 1, 2]], q[:, [4, 0, 1, 2, 3]]])
  pb = np.asarray(dc.target_distribution(jnp.asarray(qb, jnp.float32)))
  np.testing.assert_array_equal(pb.argmax(1), qb.argmax(1))
  assert np.all(pb.max(1) >= qb.max(1) - 1e-6)


def test_kl_divergence_matches_numpy_and_zero_at_equality():
  rng = np.random.default_rng(2)
  p, q = rng.dirichlet(np.ones(4), size=30), rng.dirichlet(np.ones(4), size=30)
  p[0] = [1.0, 0.0, 0.0, 0.0]  # 0 log 0 = 0
  ref = np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1) / q), 0), 1)
  kl = dc.kl_divergence(jnp.asarray(p, jnp.float32), jnp.asarray(q, jnp.float32))
  np.testing.assert_allclose(kl, ref, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(dc.kl_divergence(jnp.asarray(q), jnp.asarray(q)), 0, atol=1e-6)


def test_dec_gradient_wrt_centres_matches_paper_formula_and_finite_differences():
  rng = np.random.default_rng(3)
  alpha = 1.0
  with jax.enable_x64(True):
    z = jnp.asarray(rng.normal(size=(40, 3)))
    c = jnp.asarray(rng.normal(size=(4, 3)))
    p = jnp.asarray(rng.dirichlet(np.ones(4), size=40))
    loss = jax.jit(lambda c: jnp.sum(dc.dec_loss(z, c, p, alpha)))
    g = np.asarray(jax.jit(jax.grad(loss))(c))
    eps = 1e-6
    fd = np.zeros_like(g)
    for j in range(4):
      for d in range(3):
        e = np.zeros((4, 3))
        e[j, d] = eps
        fd[j, d] = (loss(c + e) - loss(c - e)) / (2 * eps)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-9)
    # Xie et al. (2016), eq. 5: dL/dmu_j = -(a+1)/a sum_i (1 + |z_i - mu_j|^2/a)^-1
    # (p_ij - q_ij)(z_i - mu_j).
    zn, cn, pn = np.asarray(z), np.asarray(c), np.asarray(p)
    qn = _np_student_t(zn, cn, alpha)
    diff = zn[:, None, :] - cn[None, :, :]
    w = 1.0 / (1.0 + (diff ** 2).sum(-1) / alpha)
    ref = -(alpha + 1) / alpha * np.einsum("ij,ijd->jd", w * (pn - qn), diff)
    np.testing.assert_allclose(g, ref, rtol=1e-8, atol=1e-10)


# ---------------------------------------------------------------------------
# The train step and the loop on a tiny autoencoder.

N, D, K = 48, 12, 4


@pytest.fixture(scope="module")
def tiny():
  """(x f32[48, 12], a fresh linear-output AE state, centres f32[4, 3],
  sharp targets f32[48, 4])."""
  rng = np.random.default_rng(0)
  x = rng.uniform(size=(N, D)).astype(np.float32)
  cfg = autoencoder.AEConfig(hidden=(16,), latent_dim=3, loss="mse", output="linear",
                             linear_code=True)
  # Jitted: one compile instead of one per operation.
  ae = jax.jit(autoencoder.init_state, static_argnums=1)(jax.random.PRNGKey(0), cfg, x[:1])
  centres = rng.normal(size=(K, 3)).astype(np.float32)
  target = rng.dirichlet(np.full(K, 0.2), size=N).astype(np.float32)
  return x, ae, centres, target


def _state(tiny, **config):
  x, ae, centres, target = tiny
  cfg = dc.DECConfig(n_clusters=K, optimizer="sgd", learning_rate=0.05, **config)
  return dc.create_state(cfg, ae, jnp.asarray(centres), N).replace(target=jnp.asarray(target))


def _reference_losses(params, model, x, p):
  """IDEC's two terms, written out: per-pixel MSE of the linear output, and
  KL(p || q) with q_ij ∝ 1 / (1 + |z_i - c_j|^2)."""
  out, z = model.apply({"params": params["ae"]}, x)
  recon = jnp.mean((out - x) ** 2)
  d = jnp.sum((z[:, None, :] - params["centroids"][None]) ** 2, -1)
  q = 1.0 / (1.0 + d)
  q = q / q.sum(1, keepdims=True)
  kl = jnp.mean(jnp.sum(p * jnp.log(p / q), 1))
  return recon, kl


def test_idec_trains_reconstruction_plus_gamma_times_kl(tiny):
  """Guo et al. (2017): L = L_r + gamma * L_c. The loss and the SGD update
  (momentum's first step is -lr * gradient) both match that sum, and not
  the earlier L_c + gamma * L_r (still there as gamma_on='reconstruction')."""
  x, _, _, target = tiny
  batch = {"x": jnp.asarray(x[:32]), "index": jnp.arange(32)}
  p = jnp.asarray(target[:32])
  gamma = 0.1
  for gamma_on, weigh in [("clustering", lambda r, k: r + gamma * k),
                          ("reconstruction", lambda r, k: k + gamma * r)]:
    state = _state(tiny, idec=True, gamma=gamma, gamma_on=gamma_on)
    new, m = jax.jit(dc.train_step)(state, batch, jax.random.PRNGKey(0))
    recon, kl = jax.jit(_reference_losses, static_argnums=1)(state.params, state.model,
                                                              batch["x"], p)
    assert abs(float(kl) - float(recon)) > 0.3  # the two weightings differ here
    np.testing.assert_allclose(m["recon"], recon, rtol=1e-5)
    np.testing.assert_allclose(m["kl"], kl, rtol=1e-5)
    np.testing.assert_allclose(m["loss"], weigh(recon, kl), rtol=1e-5)
    grads = jax.jit(jax.grad(
        lambda prm: weigh(*_reference_losses(prm, state.model, batch["x"], p))))(state.params)
    expected = jax.tree.map(lambda w, g: w - 0.05 * g, state.params, grads)
    chex.assert_trees_all_close(new.params, expected, rtol=1e-4, atol=1e-6)


def test_dec_step_moves_encoder_and_centres_only_and_compiles_once(tiny):
  x, _, _, target = tiny
  state = _state(tiny)
  batch = {"x": jnp.asarray(x[:32]), "index": jnp.arange(32)}
  key = jax.random.PRNGKey(0)
  chex.clear_trace_counter()
  step = jax.jit(chex.assert_max_traces(dc.train_step, n=1))
  s1, m1 = step(state, batch, key)
  assert int(s1.step) == 1 and "recon" not in m1
  _, kl = jax.jit(_reference_losses, static_argnums=1)(state.params, state.model, batch["x"],
                                                       jnp.asarray(target[:32]))
  np.testing.assert_allclose(m1["loss"], kl, rtol=1e-5)
  chex.assert_trees_all_close(s1.params["ae"]["decoder"], state.params["ae"]["decoder"])
  assert not np.allclose(s1.params["centroids"], state.params["centroids"])
  assert not np.allclose(s1.params["ae"]["encoder"]["dense_0"]["kernel"],
                         state.params["ae"]["encoder"]["dense_0"]["kernel"])
  for _ in range(2):
    s1, _ = step(s1, batch, key)
  assert int(s1.step) == 3


def test_fit_records_refreshes_and_resumes_exactly(tiny, tmp_path):
  """A run stopped after 2 of 4 refreshes and resumed ends where the
  uninterrupted one does: targets and labels are part of the checkpoint."""
  x, ae, centres, _ = tiny
  cfg = dc.DECConfig(n_clusters=K, optimizer="sgd", learning_rate=0.05, update_interval=2,
                     tol=0.0)
  start, _ = dc.refresh_target(dc.create_state(cfg, ae, jnp.asarray(centres), N), x)
  # 48 // 16 = 3 steps a pass: 2 passes hold 3 whole intervals of 2 steps.
  assert dc.refresh_count(N, 16, 2, 2.0) == 3 and dc.refresh_count(N, 16, 2, 0.1) == 1
  kw = dict(key=jax.random.PRNGKey(1), batch_size=16, progress=False)
  seen = []
  whole, labels = dc.fit(jax.tree.map(jnp.copy, start), x, max_epochs=8 / 3,
                         on_refresh=lambda lab: seen.append(lab) or {"n": len(lab)}, **kw)
  hist = whole.history
  assert [r["epoch"] for r in hist] == [0, 1, 2, 3, 4] and int(whole.state.step) == 8
  assert hist[0]["delta_label"] is None and hist[0]["data_epoch"] == 0
  assert hist[-1]["data_epoch"] == pytest.approx(8 / 3) and hist[-1]["n"] == N
  assert 0 <= hist[-1]["delta_label"] <= 1 and len(seen) == 5
  np.testing.assert_array_equal(labels, seen[-1])
  dc.fit(jax.tree.map(jnp.copy, start), x, max_epochs=4 / 3, workdir=tmp_path, **kw)
  resumed, _ = dc.fit(jax.tree.map(jnp.copy, start), x, max_epochs=8 / 3, workdir=tmp_path,
                      resume=True, **kw)
  assert resumed.start_epoch == 2 and int(resumed.state.step) == 8
  chex.assert_trees_all_close(resumed.state.params, whole.state.params)
  np.testing.assert_array_equal(resumed.state.target, whole.state.target)
  np.testing.assert_array_equal(resumed.state.labels, whole.state.labels)


# ---------------------------------------------------------------------------
# The commands, in process.


def main(argv: list[str]) -> int:
  return cli.main(argv)


def _cli(capsys, *argv):
  try:
    rc = main(list(argv))
  except SystemExit as e:  # argparse's own errors
    rc = e.code
  return rc, capsys.readouterr().err


# The autoencoder of the runs: 64-128-128-10 on digits, batch 64.
AE_FLAGS = ["--hidden", "128", "128", "--latent-dim", "10", "--batch-size", "64",
            "--no-progress", "--no-compile-cache"]
# k-means on the raw digits pixels (kmeans.fit, 10 restarts; docs/results/deep_clustering.md).
RAW_KMEANS_ACC = 0.791


def _json(path):
  return json.loads(path.read_text())


def _records(path):
  return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """ae-kmeans (60 epochs); dec and idec from its autoencoder; idec in two
  phases (a 2-epoch pretraining of its own)."""
  root = tmp_path_factory.mktemp("deep-clustering")
  aek = str(root / "aek")
  assert main(["train", "ae-kmeans", *AE_FLAGS, "--lr", "3e-3", "--output", "sigmoid",
               "--pretrain-epochs", "60", "--eval-every", "30", "--workdir", aek]) == 0
  for method in ("dec", "idec"):
    assert main(["train", method, *AE_FLAGS, "--pretrained", aek, "--epochs", "30",
                 "--update-interval", "28", "--workdir", str(root / method)]) == 0
  assert main(["train", "idec", *AE_FLAGS, "--pretrain-epochs", "2", "--eval-every", "2",
               "--epochs", "1", "--update-interval", "28", "--workdir",
               str(root / "idec2")]) == 0
  return root


def test_cli_ae_kmeans_scores_match_references(runs):
  """summary.json's ACC / NMI / ARI against scipy's Hungarian matching and
  scikit-learn's scores of labels.npy; the pretraining records and pictures."""
  from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
  wd = runs / "aek"
  s = _json(wd / "summary.json")
  labels, y = np.load(wd / "labels.npy"), digits_labels()
  assert labels.shape == (1797,) and labels.dtype == np.int32
  assert s["acc"] == pytest.approx(hungarian_accuracy(y, labels), abs=1e-12)
  assert s["nmi"] == pytest.approx(normalized_mutual_info_score(y, labels), abs=1e-12)
  assert s["ari"] == pytest.approx(adjusted_rand_score(y, labels), abs=1e-12)
  assert s["clusters"] == 10 and sum(s["cluster_sizes"]) == s["n_examples"] == 1797
  assert s["epochs"] == 60 and s["pretrain_seconds"] > 0 and s["cluster_seconds"] > 0
  recs = _records(wd / "metrics.jsonl")
  assert [r["epoch"] for r in recs] == list(range(1, 61))
  assert [r["epoch"] for r in recs if "kmeans_acc" in r] == [30, 60]
  assert recs[-1]["train_loss"] < 0.5 * recs[0]["train_loss"]
  cfg = _json(wd / "run.json")["config"]
  assert (cfg["recipe"], cfg["pretrain_optimizer"], cfg["learning_rate"],
          cfg["kernel_init"], cfg["pretrain_epochs"], cfg["epochs"]) == (
      "adam", "adam", 3e-3, "glorot_uniform", 60, 60)
  for png in ("confusion.png", "embedding.png", "curves.png"):
    assert (wd / png).stat().st_size > 1000
  assert _json(wd / "status.json")["status"] == "finished"


def test_cli_dec_and_idec_learn_from_the_pretrained_autoencoder(runs):
  """Seeded learning check: DEC (SGD 0.01) and IDEC (Adam 1e-3, L_r + 0.1 KL)
  each end at least 0.02 ACC above k-means on the raw pixels and above their
  own k-means start (measured on CPU: start 0.782, DEC 0.821, IDEC 0.827,
  IDEC stopped by tol after 23 of 30 refreshes)."""
  aek = _json(runs / "aek" / "summary.json")
  for method in ("dec", "idec"):
    s = _json(runs / method / "summary.json")
    # The start is ae-kmeans' clustering: the same k-means draw, same embedding.
    assert s["init_kmeans_acc"] == aek["acc"] and s["init_kmeans_nmi"] == aek["nmi"]
    assert s["acc"] >= RAW_KMEANS_ACC + 0.02 and s["acc"] >= s["init_kmeans_acc"] + 0.02, s
    assert s["update_interval"] == 28 and s["cluster_steps"] == 28 * s["refreshes"]
    assert s["pretrain_seconds"] == 0 and s["pretrained"] == str(runs / "aek")
    assert s["autoencoder"]["output"] == "sigmoid"   # the pretrained one's, not the flags'
    recs = _records(runs / method / "metrics.jsonl")
    assert [r["epoch"] for r in recs] == list(range(s["refreshes"] + 1))
    assert all(r["phase"] == method and "acc" in r for r in recs)
    assert recs[0]["delta_label"] is None and recs[0]["acc"] == aek["acc"]
    assert recs[-1]["acc"] == s["acc"] and ("train_recon" in recs[-1]) == (method == "idec")
    assert s["acc"] == pytest.approx(cm.clustering_accuracy(
        digits_labels(), np.load(runs / method / "labels.npy")))
  idec = _json(runs / "idec" / "summary.json")
  assert idec["stopped_by_tol"] and idec["refreshes"] < 30
  assert _records(runs / "idec" / "metrics.jsonl")[-1]["delta_label"] < 1e-3


def test_cli_evaluate_reproduces_the_scores(runs, capsys):
  for method in ("dec", "aek"):
    s = _json(runs / method / "summary.json")
    assert main(["evaluate", str(runs / method)]) == 0
    ev = _json(runs / method / "eval.json")
    assert (ev["acc"], ev["nmi"], ev["ari"]) == (s["acc"], s["nmi"], s["ari"])
  assert ev["epoch"] == 60
  rc, err = _cli(capsys, "train", "dec", *AE_FLAGS, "--pretrained", str(runs / "aek"),
                 "--workdir", str(runs / "dec"))
  assert rc == 2 and "already holds a run of dec" in err and "--overwrite" in err


def test_cli_idec_two_phases_reuse_and_resume(runs, capsys):
  wd = runs / "idec2"
  pre = _json(wd / "pretrain" / "run.json")
  assert pre["model"] == "ae-kmeans" and pre["config"]["epochs"] == 2
  pre_summary = _json(wd / "pretrain" / "summary.json")
  s = _json(wd / "summary.json")
  assert s["init_kmeans_acc"] == pre_summary["acc"] and s["pretrain_seconds"] > 0
  assert (s["refreshes"], s["cluster_steps"]) == (1, 28)
  assert _json(wd / "run.json")["config"]["optimizer"] == "adam"  # IDEC's default
  # An idec run lends its pretrained autoencoder (pretrain/): the same clusters.
  assert main(["train", "ae-kmeans", *AE_FLAGS, "--pretrained", str(wd),
               "--workdir", str(runs / "reuse")]) == 0
  reuse = _json(runs / "reuse" / "summary.json")
  assert reuse["acc"] == pre_summary["acc"] and reuse["epochs"] == 0
  assert not (runs / "reuse" / "checkpoints").exists()
  # --resume for more clustering epochs: the pretraining is done, the
  # clustering phase continues from its checkpoint.
  again = lambda pretrain_epochs: [
      "train", "idec", *AE_FLAGS, "--pretrain-epochs", pretrain_epochs, "--eval-every", "2",
      "--update-interval", "28", "--epochs", "2", "--workdir", str(wd), "--resume"]
  assert main(again("2")) == 0
  s2 = _json(wd / "summary.json")
  assert (s2["resumed_from_epoch"], s2["refreshes"], s2["cluster_steps"]) == (1, 2, 56)
  assert _json(wd / "pretrain" / "summary.json")["resumed_from_epoch"] == 2
  assert [r["epoch"] for r in _records(wd / "metrics.jsonl")] == [0, 1, 2]
  capsys.readouterr()
  rc, err = _cli(capsys, *again("3"))
  assert rc == 2 and "--resume: the run in" in err and "pretrain_epochs=2" in err


def test_cli_pretrained_errors(runs, capsys, tmp_path):
  small = ["--dataset", "digits", *AE_FLAGS]
  rc, err = _cli(capsys, "train", "idec", "--hidden", "64", "--no-progress", "--pretrained",
                 str(runs / "aek"), "--workdir", str(tmp_path / "x"))
  assert rc == 2 and "--pretrained:" in err and "hidden=[128, 128]" in err
  assert "this run needs hidden=[64] (an incompatible model)" in err
  assert not (tmp_path / "x" / "run.json").exists()
  other = tmp_path / "gan"
  other.mkdir()
  (other / "run.json").write_text(json.dumps({"model": "gan", "config": {}}))
  for source, message in [(other, "holds a 'gan' run"), (tmp_path / "none", "holds no run"),
                          (runs / "dec", "has no checkpoints/ of an autoencoder")]:
    rc, err = _cli(capsys, "train", "dec", *small, "--pretrained", str(source),
                   "--workdir", str(tmp_path / "y"))
    assert rc == 2 and message in err, (source, err)
  assert not (tmp_path / "y").exists()


def test_cli_flag_errors(capsys, tmp_path):
  wd = ["--workdir", str(tmp_path / "w")]
  for argv, message in [
      (["dec", "--clusters", "1"], "--clusters: expected an integer >= 2, got 1"),
      (["ae-kmeans", "--clusters", "5000", "--pretrain-epochs", "1"],
       "--clusters: expected at most 1797 (examples), got 5000"),
      (["ae-kmeans", "--pretrain-momentum", "1.5"],
       "--pretrain-momentum: expected a value in [0, 1), got 1.5"),
      (["ae-kmeans", "--arch", "conv", "--kernel-init", "fan_in_uniform"], "--kernel-init:"),
      (["ae-kmeans", "--arch", "conv", "--recipe", "dec-sgd"], "--recipe: dec-sgd"),
      (["ae-kmeans", "--loss", "bce"], "--loss: output='linear'"),
      (["dec", "--tol", "1.5"], "--tol: expected a fraction in [0, 1), got 1.5"),
      (["dec", "--cluster-lr", "0"], "--cluster-lr: expected a positive number"),
      (["idec", "--gamma", "0"], "--gamma: expected a positive number, got 0.0"),
      (["dec", "--gamma", "0.5"], "unrecognized arguments: --gamma"),
      (["ae-kmeans", "--epochs", "3"], "unrecognized arguments: --epochs"),
      (["n2d", "--umap-neighbors", "1"], "--umap-neighbors: expected an integer >= 2")]:
    rc, err = _cli(capsys, "train", *argv, *wd)
    assert rc == 2 and message in err, (argv, err)
  assert not (tmp_path / "w" / "run.json").exists()


def _resolved(*argv):
  """The pretraining settings a command line resolves to (no data read)."""
  from unsupjax.cli.flags import to_config
  parser, target = cli.build_parser(("train", argv[0]))
  cfg = to_config(target.config, parser.parse_args(["train", *argv]))
  return (cfg.recipe, cfg.pretrain_optimizer, cfg.learning_rate, cfg.pretrain_momentum,
          cfg.kernel_init, cfg.pretrain_epochs)


def test_pretraining_recipe_defaults_and_overrides():
  """The dense AE on MNIST-like data pretrains with the Keras DEC recipe unless
  told otherwise; elsewhere with Adam; single flags override single parts."""
  sgd = ("dec-sgd", "sgd", 1.0, 0.9, "fan_in_uniform", 300)
  adam = ("adam", "adam", 1e-3, 0.9, "glorot_uniform")
  for method in ("ae-kmeans", "dec", "idec", "n2d"):
    assert _resolved(method, "--dataset", "mnist") == sgd
  assert _resolved("dec", "--dataset", "fashion_mnist") == sgd
  assert _resolved("dec", "--dataset", "digits") == adam + (200,)
  assert _resolved("dec", "--dataset", "mnist", "--arch", "conv") == adam + (50,)
  assert _resolved("dec", "--dataset", "mnist", "--recipe", "adam") == adam + (50,)
  assert _resolved("dec", "--dataset", "digits", "--recipe", "dec-sgd") == sgd
  assert _resolved("dec", "--dataset", "mnist", "--lr", "0.5", "--pretrain-epochs", "7",
                   "--pretrain-momentum", "0.5") == (
      "dec-sgd", "sgd", 0.5, 0.5, "fan_in_uniform", 7)
  assert _resolved("dec", "--dataset", "mnist", "--pretrain-optimizer", "adam",
                   "--lr", "1e-3") == ("dec-sgd", "adam", 1e-3, 0.9, "fan_in_uniform", 300)


def test_bad_config_and_k():
  with pytest.raises(ValueError, match="n_clusters: expected an integer >= 2"):
    dc.DECConfig(n_clusters=1)
  with pytest.raises(ValueError, match="optimizer"):
    dc.DECConfig(optimizer="rmsprop")
  with pytest.raises(ValueError, match="gamma_on"):
    dc.DECConfig(gamma_on="both")
  with pytest.raises(ValueError, match="tol"):
    dc.DECConfig(tol=1.5)
  z = np.zeros((5, 2), np.float32)
  with pytest.raises(ValueError, match="n_clusters: expected at most the number of examples"):
    dc.manifold_cluster(z, 6, seed=0)
  with pytest.raises(ValueError, match="n_clusters: expected an integer >= 2"):
    dc.manifold_cluster(z, 1, seed=0)
  with pytest.raises(ValueError, match="gmm_restarts"):
    dc.manifold_cluster(np.zeros((50, 2), np.float32), 2, seed=0, gmm_restarts=0)


def test_manifold_cluster_hands_umap_the_exact_neighbours(monkeypatch):
  """Below UMAP's exact-search threshold manifold_cluster gives UMAP each
  row's exact k nearest rows (itself first, at distance 0), checked
  against a brute-force search; above it UMAP searches on its own. (A
  stand-in UMAP records its arguments: the real one is in the CLI test;
  benchmarks/n2d_neighbours.py shows UMAP's graph and embedding unchanged.)"""
  seen = []

  class Recorder:
    def __init__(self, **kw):
      seen.append(kw)

    def fit_transform(self, z):
      return z[:, :2]

  monkeypatch.setitem(sys.modules, "umap", types.SimpleNamespace(UMAP=Recorder))
  z = np.asarray(jax.random.normal(jax.random.key(0), (300, 5)))
  dc.manifold_cluster(z, 3, seed=0, n_neighbors=7, gmm_restarts=1)
  idx, dist = seen[-1]["precomputed_knn"]
  d2 = ((z[:, None, :].astype(np.float64) - z[None, :, :]) ** 2).sum(-1)
  want = np.argsort(d2, axis=1, kind="stable")[:, :7]
  np.testing.assert_array_equal(idx, want)
  assert (idx[:, 0] == np.arange(300)).all() and seen[-1]["n_neighbors"] == 7
  np.testing.assert_allclose(dist, np.sqrt(np.take_along_axis(d2, want, 1)), rtol=1e-6)
  monkeypatch.setattr(dc, "UMAP_EXACT_BELOW", 300)
  dc.manifold_cluster(z, 3, seed=0, n_neighbors=7, gmm_restarts=1)
  assert "precomputed_knn" not in seen[-1]


@pytest.mark.slow
def test_cli_n2d_on_the_pretrained_autoencoder(runs):
  wd = runs / "n2d"
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    assert main(["train", "n2d", *AE_FLAGS, "--pretrained", str(runs / "aek"),
                 "--workdir", str(wd)]) == 0
  # The user sees no warning from UMAP or the Gaussian mixture (Python
  # hides ImportWarning unless asked: UMAP's missing TensorFlow).
  shown = [f"{w.filename}: {w.message}" for w in caught
           if ("umap" in w.filename or "sklearn" in w.filename)
           and not issubclass(w.category, ImportWarning)]
  assert not shown, shown
  s = _json(wd / "summary.json")
  labels = np.load(wd / "labels.npy")
  assert labels.shape == (1797,) and s["config"]["n_components"] is None
  assert s["acc"] > 0.8 and s["acc"] == pytest.approx(
      cm.clustering_accuracy(digits_labels(), labels))
