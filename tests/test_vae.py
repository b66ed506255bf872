"""VAE: closed forms, Monte-Carlo checks, IWAE bounds, learning, bad input."""

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unsupjax import losses
from unsupjax import training
from unsupjax.models import vae


def test_gaussian_kl_closed_form_vs_monte_carlo():
  key = jax.random.PRNGKey(0)
  mean = jnp.array([[0.5, -1.0, 0.0], [2.0, 0.3, -0.7]])
  log_var = jnp.array([[0.0, -1.0, 0.7], [-2.0, 0.5, 0.1]])
  closed = losses.gaussian_kl(mean, log_var)
  # Independent reference: the textbook formula in float64.
  m, v = np.asarray(mean, np.float64), np.exp(np.asarray(log_var, np.float64))
  np.testing.assert_allclose(closed, 0.5 * (v + m**2 - 1 - np.log(v)).sum(1), rtol=1e-6)
  # Monte Carlo: E_q[log q(z) - log p(z)].
  z = vae.reparameterize(key, jnp.broadcast_to(mean, (200_000,) + mean.shape),
                         jnp.broadcast_to(log_var, (200_000,) + mean.shape))
  flat = lambda a: a.reshape(-1, 3)
  lq = losses.diag_gaussian_log_prob(flat(z), flat(jnp.broadcast_to(mean, z.shape)),
                                     flat(jnp.broadcast_to(log_var, z.shape)))
  lp = losses.diag_gaussian_log_prob(flat(z), 0 * flat(z), 0 * flat(z))
  mc = (lq - lp).reshape(200_000, 2).mean(0)
  np.testing.assert_allclose(mc, closed, rtol=0.02, atol=0.01)


def test_log_prob_and_nll_match_scipy():
  from scipy import stats
  x = np.array([[0.1, -0.4], [1.5, 2.0]], np.float32)
  mean = np.array([[0.0, 0.2], [1.0, 1.0]], np.float32)
  log_var = np.array([[0.3, -0.5], [0.0, 1.0]], np.float32)
  want = stats.norm.logpdf(x, mean, np.exp(0.5 * log_var)).sum(1)
  np.testing.assert_allclose(losses.diag_gaussian_log_prob(x, mean, log_var), want, rtol=1e-5)
  np.testing.assert_allclose(losses.gaussian_nll(x, mean, 0.5 * log_var), -want, rtol=1e-5)


def test_reparameterized_samples_have_the_right_moments():
  mean = jnp.array([[1.0, -2.0]])
  log_var = jnp.log(jnp.array([[0.25, 4.0]]))
  z = vae.reparameterize(jax.random.PRNGKey(1), jnp.repeat(mean, 100_000, 0),
                         jnp.repeat(log_var, 100_000, 0))
  np.testing.assert_allclose(z.mean(0), [1.0, -2.0], atol=0.02)
  np.testing.assert_allclose(z.var(0), [0.25, 4.0], rtol=0.02)
  # The gradient flows through the sample to the parameters.
  g = jax.grad(lambda m: vae.reparameterize(jax.random.PRNGKey(2), m, log_var).sum())(mean)
  np.testing.assert_allclose(g, [[1.0, 1.0]])


@pytest.fixture(scope="module")
def trained(digits):
  """A small VAE trained briefly on binarised digits, and a binarised test set."""
  tr, te = digits
  cfg = vae.VAEConfig(hidden=(128,), latent_dim=8)
  st = vae.init_state(jax.random.PRNGKey(0), cfg, tr.flat()[:1])
  xt = np.asarray(vae.binarize(jax.random.PRNGKey(7), te.flat()))
  before = training.evaluate(st, vae.eval_step, xt)
  result = training.fit(st, vae.train_step, vae.eval_step, tr.flat(), xt,
                     key=jax.random.PRNGKey(1), epochs=40, batch_size=64, progress=False)
  return result.state, xt, before


def test_vae_learns_digits(trained):
  """Seeded: test -ELBO falls from ~44 nats to below 27 on binarised digits."""
  state, xt, before = trained
  after = training.evaluate(state, vae.eval_step, xt)
  assert before["neg_elbo"] > 40
  assert after["neg_elbo"] < 27, after
  assert after["kl"] > 1.0  # the latent is in use, not collapsed


def test_iwae_k1_is_the_single_sample_elbo(trained):
  state, xt, _ = trained
  x = jnp.asarray(xt[:16])
  key = jax.random.PRNGKey(3)
  lw = vae.iwae_log_weights(state, x, key, 1)[0]
  # The same z by hand: iwae_log_weights draws sample i with split(key, k)[i].
  params = vae.eval_params(state)
  mean, log_var = state.model.apply({"params": params}, x, method="encode")
  z = vae.reparameterize(jax.random.split(key, 1)[0], mean, log_var)
  logits = state.model.apply({"params": params}, z, method="decode")
  by_hand = (-losses.bernoulli_nll_with_logits(logits, x)
             + losses.diag_gaussian_log_prob(z, 0 * z, 0 * z)
             - losses.diag_gaussian_log_prob(z, mean, log_var))
  np.testing.assert_allclose(lw, by_hand, rtol=1e-5)
  # iwae_nll draws chunk c's samples with split(key, n_chunks + 1)[c].
  chunk_key = jax.random.split(key, 2)[0]
  np.testing.assert_allclose(vae.iwae_nll(state, x, key, 1, chunk=1),
                             -vae.iwae_log_weights(state, x, chunk_key, 1)[0], rtol=1e-5)


def test_iwae_bound_tightens_with_k(trained):
  state, xt, _ = trained
  x = jnp.asarray(xt[:200])
  nll = jax.jit(vae.iwae_nll, static_argnums=(3, 4))
  elbo = float(jnp.mean(training.evaluate(state, vae.eval_step, xt[:200])["neg_elbo"]))
  per_example = [np.asarray(nll(state, x, jax.random.PRNGKey(k), k, 50), np.float64)
                 for k in (1, 10, 100, 500)]
  values = [float(v.mean()) for v in per_example]
  # E[IWAE-1] is the ELBO; more samples give a tighter (lower) NLL bound.
  assert values[0] == pytest.approx(elbo, rel=0.03)
  assert values[0] > values[1] > values[2], values
  # From 100 to 500 samples the bound moves by less than the estimates'
  # noise: IWAE-500 is not worse than IWAE-100 beyond three standard errors.
  diff = per_example[2] - per_example[3]
  assert diff.mean() > -3 * diff.std() / np.sqrt(len(diff)), values
  # Chunked accumulation equals one big chunk.
  key = jax.random.PRNGKey(9)
  one = nll(state, x[:20], key, 100, 100)
  lw = vae.iwae_log_weights(state, x[:20], jax.random.split(key, 2)[0], 100)
  np.testing.assert_allclose(one, -(jax.nn.logsumexp(lw, 0) - np.log(100.0)), rtol=1e-5)
  # Chunks of 30 (3 chunks + a remainder of 10) estimate the same quantity.
  chunked = nll(state, x[:20], key, 100, 30)
  np.testing.assert_allclose(chunked.mean(), one.mean(), rtol=0.01)


@pytest.mark.parametrize("shape", [(8, 8, 1), (28, 28, 1), (32, 32, 3)])
@pytest.mark.parametrize("arch", ["dense", "conv"])
def test_shapes_for_each_input_size(shape, arch):
  """Traced, not compiled (jax.eval_shape): shapes are all this checks."""
  cfg = vae.VAEConfig(arch=arch, hidden=(32,), latent_dim=3)
  x = jax.ShapeDtypeStruct((4,) + shape, jnp.float32)
  key = jax.eval_shape(lambda: jax.random.PRNGKey(0))
  st = jax.eval_shape(lambda k, x: vae.init_state(k, cfg, x), key, x)
  shape_of = lambda f, *args: jax.eval_shape(f, *args).shape
  assert shape_of(vae.reconstruct, st, x) == (4,) + shape
  assert shape_of(lambda s, k: vae.sample(s, k, 5), st, key) == (5,) + shape
  assert shape_of(vae.encode, st, x) == (4, 3)
  assert shape_of(lambda s, x: vae.interpolate(s, x[0], x[1], 6), st, x) == (6,) + shape
  for v in jax.eval_shape(vae.eval_step, st, x).values():
    assert v.shape == (4,)


def test_gaussian_decoder_trains_on_real_values():
  x = jax.random.normal(jax.random.PRNGKey(0), (256, 6)) @ jax.random.normal(
      jax.random.PRNGKey(1), (6, 6))
  cfg = vae.VAEConfig(likelihood="gaussian", binarize=False, hidden=(32,), latent_dim=3)
  st = vae.init_state(jax.random.PRNGKey(2), cfg, x)
  before = training.evaluate(st, vae.eval_step, np.asarray(x))["neg_elbo"]
  res = training.fit(st, vae.train_step, vae.eval_step, np.asarray(x), np.asarray(x),
                  key=jax.random.PRNGKey(3), epochs=60, batch_size=64, progress=False)
  after = res.history[-1]["test_neg_elbo"]
  assert after < before - 3.0, (before, after)


@pytest.mark.parametrize("arch", ["dense", "conv"])
def test_output_bias_starts_at_the_mean_image(arch, digits):
  x = digits[0].x if arch == "conv" else digits[0].flat()
  cfg = vae.VAEConfig(arch=arch, hidden=(16,), latent_dim=2)
  st = vae.init_output_bias(vae.init_state(jax.random.PRNGKey(0), cfg, x[:1]), x)
  # With every other parameter zero, the decoder outputs its last bias.
  bias_only = jax.tree_util.tree_map_with_path(
      lambda path, a: a if path[-1].key == "bias" and "decoder" in str(path) else 0 * a,
      st.params)
  out = np.asarray(vae.decode_mean(st.replace(params=bias_only), jnp.zeros((1, 2))))[0]
  want = np.clip(x.mean(0), 1e-3, 1 - 1e-3)
  if arch == "dense":
    np.testing.assert_allclose(out.reshape(-1), want.reshape(-1), rtol=1e-4)
  else:
    np.testing.assert_allclose(out, np.full_like(out, want.mean()), rtol=1e-4)


def test_train_step_is_keyed():
  x = jax.random.uniform(jax.random.PRNGKey(0), (8, 16))
  st = vae.init_state(jax.random.PRNGKey(1), vae.VAEConfig(hidden=(8,), latent_dim=2), x)
  a = vae.train_step(st, x, jax.random.PRNGKey(5))[1]["loss"]
  b = vae.train_step(st, x, jax.random.PRNGKey(5))[1]["loss"]
  c = vae.train_step(st, x, jax.random.PRNGKey(6))[1]["loss"]
  assert a == b and a != c


def test_weight_average_is_the_scheduled_ema_and_what_evaluation_uses():
  """ema_params follows e <- d_t e + (1 - d_t) p with d_t = min(d, (1+t)/(10+t)),
  computed here in float64 from the raw iterates; eval_step and the other
  evaluation functions use it, and ema_decay=0 means the raw weights."""
  x = jax.random.uniform(jax.random.PRNGKey(0), (16, 12))
  st = vae.init_state(jax.random.PRNGKey(1), vae.VAEConfig(hidden=(8,), latent_dim=2,
                                                           ema_decay=0.9), x)
  ema = jax.tree.map(lambda a: np.asarray(a, np.float64), st.params)
  step = jax.jit(vae.train_step)
  for t in range(30):
    st, _ = step(st, x, jax.random.PRNGKey(2))
    d = min(0.9, (1 + t) / (10 + t))
    ema = jax.tree.map(lambda e, p: d * e + (1 - d) * np.asarray(p, np.float64), ema, st.params)
  chex.assert_trees_all_close(st.ema_params, ema, rtol=1e-5, atol=1e-6)
  assert not np.allclose(st.ema_params["encoder"]["mlp"]["dense_0"]["kernel"],
                         st.params["encoder"]["mlp"]["dense_0"]["kernel"])
  raw = st.replace(ema_params=None, ema_decay=0.0)
  by_ema = vae.eval_step(st, x)["neg_elbo"]
  by_raw = vae.eval_step(raw, x)["neg_elbo"]
  np.testing.assert_allclose(
      by_raw, vae.eval_step(raw.replace(ema_params=st.params), x)["neg_elbo"], rtol=1e-6)
  np.testing.assert_allclose(
      by_ema, vae.eval_step(raw.replace(params=st.ema_params), x)["neg_elbo"], rtol=1e-6)
  assert not np.allclose(by_ema, by_raw)
  np.testing.assert_allclose(vae.encode(st, x), vae.encode(raw.replace(params=st.ema_params), x),
                             rtol=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    (dict(latent_dim=0), "latent_dim"),
    (dict(beta=-0.5), "beta"),
    (dict(likelihood="poisson"), "likelihood"),
    (dict(likelihood="gaussian"), "binarize"),
    (dict(arch="rnn"), "arch"),
    (dict(ema_decay=1.0), "ema_decay"),
    (dict(ema_decay=-0.1), "ema_decay"),
])
def test_bad_config(kwargs, match):
  with pytest.raises(ValueError, match=match):
    vae.VAEConfig(**kwargs)


def test_conv_needs_divisible_images():
  cfg = vae.VAEConfig(arch="conv")
  with pytest.raises(ValueError, match="divisible by 4"):
    cfg.check_input_shape((10, 10, 1))
  with pytest.raises(ValueError, match="height, width, channels"):
    cfg.check_input_shape((784,))


# `unsupjax train vae` and `unsupjax evaluate`, in-process.

TINY = ["--epochs", "2", "--hidden", "32", "--latent-dim", "2", "--batch-size", "64",
        "--no-progress", "--checkpoint-every", "1"]


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
  """A tiny `unsupjax train vae` run with the IWAE bound: (workdir, exit code)."""
  from unsupjax import cli
  wd = tmp_path_factory.mktemp("vae") / "run"
  code = cli.main(["train", "vae", "--workdir", str(wd), *TINY,
                   "--iwae-k", "5", "--iwae-examples", "50"])
  return wd, code


def test_train_vae_writes_summary_and_pictures(vae_run):
  import json
  wd, code = vae_run
  assert code == 0
  summary = json.loads((wd / "summary.json").read_text())
  records = [json.loads(l) for l in (wd / "metrics.jsonl").read_text().splitlines()]
  assert [r["epoch"] for r in records] == [1, 2]
  # The report scores the same binarised test set the loop scored each epoch.
  assert summary["test_neg_elbo"] == pytest.approx(records[-1]["test_neg_elbo"], rel=1e-6)
  assert summary["test_kl"] == pytest.approx(records[-1]["test_kl"], rel=1e-6)
  assert summary["test_nll_term"] == pytest.approx(records[-1]["test_nll"], rel=1e-6)
  np.testing.assert_allclose(summary["test_neg_elbo"],
                             summary["test_nll_term"] + summary["test_kl"], rtol=1e-5)
  assert 20 < summary["test_neg_elbo"] < 45
  assert 0 < summary["test_mse"] < 0.2
  assert (summary["iwae_k"], summary["iwae_examples"]) == (5, 50)
  assert summary["test_iwae_nll"] < summary["test_neg_elbo"] + 1.0
  assert summary["config"]["binarize"] is True
  for png in ("reconstructions.png", "samples.png", "interpolation.png", "latent.png"):
    assert (wd / png).exists(), png


def test_evaluate_reproduces_the_vae_summary(vae_run):
  import json
  from unsupjax import cli
  wd, code = vae_run
  assert code == 0
  summary = json.loads((wd / "summary.json").read_text())
  assert cli.main(["evaluate", str(wd)]) == 0
  evaluated = json.loads((wd / "eval.json").read_text())
  keys = [k for k in summary if k.startswith("test_")] + ["iwae_k", "iwae_examples"]
  assert "test_iwae_nll" in keys and "test_psnr" in keys
  assert {k: evaluated[k] for k in keys} == {k: summary[k] for k in keys}
  assert (evaluated["epoch"], evaluated["step"]) == (2, summary["steps"])
  # --iwae-k overrides the run's own IWAE setting; the bound stays a bound.
  assert cli.main(["evaluate", str(wd), "--iwae-k", "20", "--iwae-examples", "40"]) == 0
  other = json.loads((wd / "eval.json").read_text())
  assert (other["iwae_k"], other["iwae_examples"]) == (20, 40)
  assert other["test_neg_elbo"] == summary["test_neg_elbo"]
  assert other["test_iwae_nll"] != summary["test_iwae_nll"]
  assert other["test_iwae_nll"] < other["test_neg_elbo"] + 1.0


def test_vae_task_keys_are_named():
  """The test set is binarised once with named(run_key(seed), "test-binarize"),
  the IWAE bound draws from named(run_key(seed), "iwae")."""
  from unsupjax.rng import named, run_key
  from unsupjax.tasks import vae as task
  cfg = task.VAEFlags(seed=3, hidden=(8,), latent_dim=2, epochs=1)
  data = task.load(cfg)
  want = vae.binarize(named(run_key(3), "test-binarize"), data.test.flat())
  np.testing.assert_array_equal(data.test_x, want)
  assert set(np.unique(data.test_x)) <= {0.0, 1.0}
  state = task.init(cfg, data, named(run_key(3), "init"))
  got = task.iwae_metrics(state, data, run_key(3), 4, 30)["test_iwae_nll"]
  ref = vae.dataset_iwae_nll(state, data.test_x[:30], named(run_key(3), "iwae"), 4)
  assert got == ref
  # A Gaussian decoder never binarises, and the record says so.
  g = task.VAEFlags(likelihood="gaussian")
  assert g.binarize is False
  np.testing.assert_array_equal(task.load(dataclasses.replace(g, arch="conv")).test_x,
                                data.test.x)


@pytest.mark.parametrize("args, flag", [
    (["--beta", "-1"], "--beta: expected a finite value >= 0"),
    (["--latent-dim", "0"], "--latent-dim: expected a positive integer"),
    (["--ema-decay", "1"], "--ema-decay: expected a value in [0, 1)"),
    (["--conv-features", "0"], "--conv-features: expected positive channel counts"),
    (["--hidden", "0"], "--hidden: expected positive layer widths"),
    (["--iwae-k", "-2"], "--iwae-k: expected 0 (skip) or a positive integer"),
    (["--iwae-k", "2", "--iwae-examples", "9999"], "--iwae-examples: expected at most 360"),
])
def test_train_vae_bad_flag_exits_2_with_one_line(tmp_path, capsys, args, flag):
  from unsupjax import cli
  code = cli.main(["train", "vae", "--workdir", str(tmp_path / "w"), *TINY, *args])
  err = capsys.readouterr().err
  lines = [l for l in err.splitlines() if l.strip()]
  assert code == 2 and len(lines) == 1 and flag in lines[0], err
  assert not (tmp_path / "w" / "run.json").exists()
