"""Deep clustering: DEC's pieces against NumPy and finite differences, the
train step, a seeded learning check on digits, and the CLI's errors."""

from __future__ import annotations

import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unsupjax import autoencoder, cli, data, deep_clustering as dc, kmeans
from unsupjax.metrics import clustering as cm


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
  assert dc.student_t_assignment is kmeans.student_t_assignment  # one definition


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
    loss = lambda c: jnp.sum(dc.dec_loss(z, c, p, alpha))
    g = np.asarray(jax.grad(loss)(c))
    # Central differences.
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
# The train step and the loop, on digits with a small autoencoder.

SMALL = dict(hidden=(128, 128), latent_dim=10, learning_rate=3e-3, loss="mse",
             linear_code=True)


@pytest.fixture(scope="module")
def digits_all():
  ds = data.load("digits", "all")
  return ds.flat(), ds.y


@pytest.fixture(scope="module")
def pretrained(digits_all):
  from unsupjax import train
  x, _ = digits_all
  cfg = autoencoder.AEConfig(**SMALL)
  st = autoencoder.init_state(jax.random.PRNGKey(0), cfg, x[:1])
  res = train.fit(st, autoencoder.train_step, None, x, key=jax.random.PRNGKey(1),
                  epochs=60, batch_size=64, progress=False)
  return res.state


def test_train_step_jitted_matches_unjitted_and_compiles_once(pretrained, digits_all):
  x, _ = digits_all
  # SGD, so that updates are proportional to gradients (Adam's first step
  # is +-lr for any gradient, which turns rounding into sign flips).
  cfg = dc.DECConfig(n_clusters=10, gamma=0.1, optimizer="sgd", learning_rate=0.01)
  state, _ = dc.init_state(jax.random.PRNGKey(0), cfg, pretrained, x, n_init=2)
  chex.assert_shape(state.target, (len(x), 10))
  np.testing.assert_allclose(np.asarray(state.target).sum(1), 1.0, rtol=1e-5)
  batch = {"x": jnp.asarray(x[:32]), "index": jnp.arange(32)}
  key = jax.random.PRNGKey(0)
  s1, m1 = dc.train_step(state, batch, key)
  assert int(s1.step) == 1 and "recon" in m1
  chex.clear_trace_counter()
  step = jax.jit(chex.assert_max_traces(dc.train_step, n=1))
  s2, m2 = step(state, batch, key)
  np.testing.assert_allclose(m1["loss"], m2["loss"], rtol=1e-5)
  chex.assert_trees_all_close(s1.params, s2.params, rtol=1e-4, atol=1e-6)
  assert not np.allclose(s1.params["ae"]["decoder"]["dense_0"]["kernel"],
                         state.params["ae"]["decoder"]["dense_0"]["kernel"])
  for _ in range(2):
    s2, _ = step(s2, batch, key)
  # DEC (gamma = 0): no reconstruction term, the decoder does not move.
  dec_state = state.replace(config=dc.DECConfig(n_clusters=10, gamma=0.0))
  s3, m3 = dc.train_step(dec_state, batch, key)
  assert "recon" not in m3 and float(m3["loss"]) == pytest.approx(float(m1["kl"]), rel=1e-5)
  chex.assert_trees_all_close(s3.params["ae"]["decoder"], state.params["ae"]["decoder"])
  assert not np.allclose(s3.params["centroids"], state.params["centroids"])


def test_dec_learns_beats_raw_kmeans_on_digits(pretrained, digits_all):
  """Seeded check: IDEC on a small pretrained AE beats k-means on raw pixels
  by at least 0.02 ACC and its own k-means start by at least 0.02 (measured
  on CPU: 0.819 vs 0.791 raw and 0.779 at the start)."""
  x, y = digits_all
  raw = kmeans.fit(jax.random.PRNGKey(0), jnp.asarray(x), 10, n_init=10)
  raw_acc = cm.clustering_accuracy(y, np.asarray(raw.labels))
  cfg = dc.DECConfig(n_clusters=10, gamma=0.1, optimizer="adam", learning_rate=1e-3,
                     update_interval=28, tol=1e-3)
  state, km_labels = dc.init_state(jax.random.PRNGKey(0), cfg, pretrained, x, n_init=10)
  records = []
  state, labels, recs = dc.fit(state, x, key=jax.random.PRNGKey(2), max_epochs=30,
                               batch_size=64, callback=lambda r, l: records.append(r))
  acc = cm.clustering_accuracy(y, labels)
  assert len(records) == len(recs) >= 2
  assert recs[-1]["delta_label"] < cfg.tol or recs[-1]["step"] >= 30 * (len(x) // 64)
  start_acc = cm.clustering_accuracy(y, km_labels)
  assert acc >= raw_acc + 0.02, (acc, raw_acc, start_acc)
  assert acc >= start_acc + 0.02, (acc, raw_acc, start_acc)


# ---------------------------------------------------------------------------
# Bad input.


def test_bad_config_and_k():
  with pytest.raises(ValueError, match="n_clusters: expected an integer >= 2"):
    dc.DECConfig(n_clusters=1)
  with pytest.raises(ValueError, match="optimizer"):
    dc.DECConfig(optimizer="rmsprop")
  with pytest.raises(ValueError, match="tol"):
    dc.DECConfig(tol=1.5)
  z = np.zeros((5, 2), np.float32)
  with pytest.raises(ValueError, match="n_clusters: expected at most the number of examples"):
    dc.manifold_cluster(z, 6, seed=0)
  with pytest.raises(ValueError, match="n_clusters: expected an integer >= 2"):
    dc.manifold_cluster(z, 1, seed=0)
  with pytest.raises(ValueError, match="gmm_restarts"):
    dc.manifold_cluster(np.zeros((50, 2), np.float32), 2, seed=0, gmm_restarts=0)


def _cli(capsys, *args):
  rc = cli.main(list(args))
  return rc, capsys.readouterr().err


def test_cli_bad_clusters(capsys, tmp_path):
  rc, err = _cli(capsys, "train", "dec", "--clusters", "1", "--workdir", str(tmp_path / "a"))
  assert rc == 2 and "--clusters: expected an integer >= 2, got 1" in err
  rc, err = _cli(capsys, "train", "ae-kmeans", "--clusters", "5000",
                 "--workdir", str(tmp_path / "b"))
  assert rc == 2 and "--clusters: expected at most 1797 (examples), got 5000" in err


def test_cli_end_to_end_and_pretrained_reuse(capsys, tmp_path):
  small = ["--dataset", "digits", "--hidden", "64", "--latent-dim", "8",
           "--pretrain-epochs", "3", "--no-progress", "--no-compile-cache"]
  pre = tmp_path / "aek"
  assert cli.main(["train", "ae-kmeans", *small, "--workdir", str(pre)]) == 0
  summary = json.loads((pre / "summary.json").read_text())
  for key in ("acc", "nmi", "ari", "pretrain_seconds", "cluster_seconds"):
    assert key in summary
  assert 0 < summary["acc"] <= 1
  lines = [json.loads(s) for s in (pre / "metrics.jsonl").read_text().splitlines()]
  assert len(lines) == 3 and "kmeans_acc" in lines[-1]
  for png in ("confusion.png", "embedding.png"):
    assert (pre / png).stat().st_size > 1000
  # DEC reuses that autoencoder.
  wd = tmp_path / "dec"
  assert cli.main(["train", "dec", *small, "--epochs", "2", "--pretrained", str(pre),
                   "--workdir", str(wd)]) == 0
  s = json.loads((wd / "summary.json").read_text())
  assert s["pretrain_seconds"] < 5 and "init_kmeans_acc" in s and 0 < s["acc"] <= 1
  recs = [json.loads(t) for t in (wd / "metrics.jsonl").read_text().splitlines()]
  assert recs[0]["step"] == 0 and all("acc" in r and r["phase"] == "dec" for r in recs)
  capsys.readouterr()
  # An incompatible autoencoder (another width) and a workdir of another model.
  rc, err = _cli(capsys, "train", "idec", *small[:2], "--hidden", "32", *small[4:],
                 "--pretrained", str(pre), "--workdir", str(tmp_path / "x"))
  assert rc == 2 and "--pretrained:" in err and "hidden=[64]" in err and "incompatible" in err
  other = tmp_path / "gan"
  other.mkdir()
  (other / "run.json").write_text(json.dumps({"model": "gan", "config": {}}))
  rc, err = _cli(capsys, "train", "dec", *small, "--pretrained", str(other),
                 "--workdir", str(tmp_path / "y"))
  assert rc == 2 and "holds a 'gan' run" in err
  rc, err = _cli(capsys, "train", "dec", *small, "--pretrained", str(tmp_path / "none"),
                 "--workdir", str(tmp_path / "z"))
  assert rc == 2 and "holds no run" in err
  # A run that itself reused an AE has no checkpoint to reuse.
  rc, err = _cli(capsys, "train", "idec", *small, "--pretrained", str(wd),
                 "--workdir", str(tmp_path / "w"))
  assert rc == 2 and "has no checkpoints/" in err


def test_cli_dec_sgd_recipe_pretraining_is_recorded_and_reusable(capsys, tmp_path):
  """--pretrain-optimizer sgd --kernel-init fan_in_uniform: recorded in run.json,
  and a later --pretrained run restores that autoencoder (an SGD optimizer
  state, not Adam's) without being told the recipe again."""
  small = ["--dataset", "digits", "--hidden", "64", "--latent-dim", "8",
           "--pretrain-epochs", "2", "--no-progress", "--no-compile-cache"]
  pre = tmp_path / "aek"
  assert cli.main(["train", "ae-kmeans", *small, "--pretrain-optimizer", "sgd", "--lr", "0.1",
                   "--kernel-init", "fan_in_uniform", "--workdir", str(pre)]) == 0
  cfg = json.loads((pre / "run.json").read_text())["config"]
  assert (cfg["pretrain_optimizer"], cfg["pretrain_momentum"], cfg["kernel_init"]) == (
      "sgd", 0.9, "fan_in_uniform")
  wd = tmp_path / "idec"
  assert cli.main(["train", "idec", *small, "--epochs", "1", "--pretrained", str(pre),
                   "--workdir", str(wd)]) == 0
  cfg = json.loads((wd / "run.json").read_text())["config"]
  assert cfg["pretrain_optimizer"] == "sgd" and cfg["kernel_init"] == "fan_in_uniform"
  capsys.readouterr()
  rc, err = _cli(capsys, "train", "ae-kmeans", *small, "--pretrain-optimizer", "sgd",
                 "--pretrain-momentum", "1.5", "--workdir", str(tmp_path / "bad"))
  assert rc == 2 and "--pretrain-momentum: expected a value in [0, 1), got 1.5" in err
  rc, err = _cli(capsys, "train", "ae-kmeans", *small, "--arch", "conv",
                 "--kernel-init", "fan_in_uniform", "--workdir", str(tmp_path / "bad2"))
  assert rc == 2 and "--kernel-init: applies to --arch dense only" in err


@pytest.mark.slow
def test_n2d_on_digits_embedding(pretrained, digits_all):
  pytest.importorskip("umap")
  x, y = digits_all
  z = dc.embed(pretrained, x)
  labels, u = dc.manifold_cluster(z, 10, seed=0, n_neighbors=15)
  chex.assert_shape(u, (len(x), 10))
  assert labels.shape == (len(x),) and labels.dtype == np.int32
  assert cm.clustering_accuracy(y, labels) > 0.8


def _resolved(*argv):
  """The deep-clustering flags after the recipe is applied (no data read)."""
  from unsupjax.tasks import deep_clustering as task
  args = cli.build_parser().parse_args(["train", *argv])
  task.apply_recipe(args)
  return (args.recipe, args.pretrain_optimizer, args.lr, args.pretrain_momentum,
          args.kernel_init, args.pretrain_epochs)


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


def test_cli_recipe_is_recorded_and_conv_refuses_dec_sgd(capsys, tmp_path):
  small = ["--dataset", "digits", "--hidden", "64", "--latent-dim", "8",
           "--pretrain-epochs", "2", "--no-progress", "--no-compile-cache"]
  wd = tmp_path / "aek"
  assert cli.main(["train", "ae-kmeans", *small, "--recipe", "dec-sgd",
                   "--workdir", str(wd)]) == 0
  cfg = json.loads((wd / "run.json").read_text())["config"]
  assert (cfg["recipe"], cfg["pretrain_optimizer"], cfg["lr"], cfg["pretrain_momentum"],
          cfg["kernel_init"], cfg["pretrain_epochs"]) == (
      "dec-sgd", "sgd", 1.0, 0.9, "fan_in_uniform", 2)
  losses = [json.loads(l)["train_loss"] for l in (wd / "metrics.jsonl").read_text().splitlines()
            if "train_loss" in l]
  assert len(losses) == 2 and np.isfinite(losses).all() and losses[1] < losses[0]
  capsys.readouterr()
  rc, err = _cli(capsys, "train", "ae-kmeans", *small, "--arch", "conv", "--recipe",
                 "dec-sgd", "--workdir", str(tmp_path / "bad"))
  assert rc == 2 and "--recipe: dec-sgd applies to --arch dense only" in err
