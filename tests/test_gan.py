"""Tests for unsupjax.models.gan, unsupjax.toys and `unsupjax train gan`."""

from __future__ import annotations


import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import norm

from unsupjax import toys, training
from unsupjax.models import gan
from unsupjax.models.gan import nets as gan_nets


def _softplus(x):
  return np.logaddexp(0.0, x)


# ------------------------------------------------------------------- toys ---


def test_toy_geometry_and_samples():
  np.testing.assert_allclose(toys.RING8_CENTERS[2], [0.0, 1.0], atol=1e-7)
  np.testing.assert_allclose(np.linalg.norm(toys.RING8_CENTERS, axis=1), 1.0,
                             atol=1e-6)
  np.testing.assert_allclose(
      np.arctan2(toys.RING8_CENTERS[:, 1], toys.RING8_CENTERS[:, 0]) % (2 * np.pi),
      2 * np.pi * np.arange(8) / 8, atol=1e-6)
  assert toys.GRID25_CENTERS.shape == (25, 2)
  np.testing.assert_array_equal(toys.GRID25_CENTERS[5 * 1 + 3], [-2.0, 2.0])
  assert set(np.unique(toys.GRID25_CENTERS)) == {-4.0, -2.0, 0.0, 2.0, 4.0}
  for toy in toys.TOYS.values():
    x = toy.sample(jax.random.PRNGKey(0), 4000)
    chex.assert_shape(x, (4000, 2))
    assert x.dtype == jnp.float32
    x = np.asarray(x, np.float64)
    d = np.linalg.norm(x[:, None] - toy.centers[None], axis=-1)
    nearest = d.argmin(1)
    resid = x - toy.centers[nearest]
    np.testing.assert_allclose(resid.std(0), toy.sigma, rtol=0.06)
    counts = np.bincount(nearest, minlength=len(toy.centers))
    assert counts.min() > 0.5 * 4000 / len(toy.centers)
    np.testing.assert_array_equal(x, np.asarray(toy.sample(jax.random.PRNGKey(0), 4000)))
  with pytest.raises(ValueError, match="n:"):
    toys.ring8(jax.random.PRNGKey(0), -1)


# ----------------------------------------------------------------- losses ---


LOGITS = np.array([-30.0, -3.0, -0.5, 0.0, 0.7, 4.0, 30.0])


@pytest.mark.parametrize("kind", gan.LOSSES)
def test_losses_match_hand_computed(kind):
  r = LOGITS
  f = LOGITS[::-1].copy()
  expected_real = {"minimax": _softplus(-r), "ns": _softplus(-r),
                   "hinge": np.maximum(0, 1 - r), "lsgan": 0.5 * (r - 1) ** 2,
                   "wgan": -r}[kind]
  expected_fake = {"minimax": _softplus(f), "ns": _softplus(f),
                   "hinge": np.maximum(0, 1 + f), "lsgan": 0.5 * f ** 2,
                   "wgan": f}[kind]
  expected_g = {"minimax": -_softplus(f), "ns": _softplus(-f), "hinge": -f,
                "lsgan": 0.5 * (f - 1) ** 2, "wgan": -f}[kind]
  rj, fj = jnp.asarray(r, jnp.float32), jnp.asarray(f, jnp.float32)
  np.testing.assert_allclose(gan.d_loss_real(kind, rj), expected_real, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(gan.d_loss_fake(kind, fj), expected_fake, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(gan.d_loss(kind, rj, fj), expected_real + expected_fake,
                             rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(gan.g_loss(kind, fj), expected_g, rtol=1e-6, atol=1e-6)
  assert np.isfinite(np.asarray(gan.d_loss(kind, rj, fj))).all()


def _pointwise_optimum(kind, p, q):
  """argmin_l p*L_real(l) + q*L_fake(l) for each (p, q), by a fine grid."""
  grid = jnp.linspace(-12.0, 12.0, 24001)
  lr = np.asarray(gan.d_loss_real(kind, grid), np.float64)
  lf = np.asarray(gan.d_loss_fake(kind, grid), np.float64)
  obj = p[:, None] * lr[None] + q[:, None] * lf[None]
  return np.asarray(grid, np.float64)[obj.argmin(1)], obj.min(1)


def test_minimax_optimal_discriminator_and_jsd():
  # Two known densities on a grid: p = N(0, 1), q = N(1.5, 0.8^2).
  xs = np.linspace(-5, 6, 221)
  dx = xs[1] - xs[0]
  p, q = norm.pdf(xs, 0, 1), norm.pdf(xs, 1.5, 0.8)
  logit, value = _pointwise_optimum("minimax", p, q)
  d_star = p / (p + q)
  np.testing.assert_allclose(1 / (1 + np.exp(-logit)), d_star, atol=1e-3)
  # At the optimum, -E[D loss] = 2 JSD(p, q) - log 4 (Goodfellow et al.).
  pn, qn = p * dx, q * dx
  jsd = jensenshannon(pn / pn.sum(), qn / qn.sum()) ** 2  # scipy returns sqrt(JSD)
  np.testing.assert_allclose(-np.sum(value * dx), 2 * jsd - np.log(4), atol=2e-3)


def test_lsgan_and_hinge_optimal_discriminators():
  p = np.array([0.1, 0.3, 0.5, 0.8, 2.0])
  q = np.array([1.0, 0.6, 0.5, 0.2, 0.1])
  logit, _ = _pointwise_optimum("lsgan", p, q)
  np.testing.assert_allclose(logit, p / (p + q), atol=2e-3)  # a=0, b=1: D* = p/(p+q)
  logit, _ = _pointwise_optimum("hinge", np.array([0.2, 0.9]), np.array([0.8, 0.1]))
  np.testing.assert_allclose(logit, [-1.0, 1.0], atol=2e-3)


def test_minimax_generator_loss_saturates_and_ns_does_not():
  f = jnp.array([-10.0, 0.0, 10.0])
  g_mm = jax.vmap(jax.grad(lambda l: gan.g_loss("minimax", l[None])[0]))(f)
  g_ns = jax.vmap(jax.grad(lambda l: gan.g_loss("ns", l[None])[0]))(f)
  sig = 1 / (1 + np.exp(-np.asarray(f, np.float64)))
  np.testing.assert_allclose(g_mm, -sig, rtol=1e-5)  # ~ -4.5e-5 where D rejects
  np.testing.assert_allclose(g_ns, -(1 - sig), rtol=1e-5)  # ~ -1 there
  assert abs(float(g_mm[0])) < 1e-4 and abs(float(g_ns[0])) > 0.99


def test_unknown_loss_raises():
  with pytest.raises(ValueError, match="loss"):
    gan.g_loss("vanilla", jnp.zeros(3))
  with pytest.raises(ValueError, match="loss"):
    gan.GANConfig(data_shape=(2,), loss="vanilla")


# -------------------------------------------------------------- penalties ---


def test_gradient_penalty_known_gradients():
  rng = np.random.default_rng(0)
  a = jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)
  real = jnp.asarray(rng.normal(size=(5, 3, 4)), jnp.float32)
  fake = jnp.asarray(rng.normal(size=(5, 3, 4)), jnp.float32)
  linear = lambda x: jnp.einsum("bij,ij->b", x, a) + 3.0
  gp = gan.gradient_penalty(linear, real, fake, jax.random.PRNGKey(1))
  chex.assert_shape(gp, (5,))
  np.testing.assert_allclose(gp, (np.linalg.norm(np.asarray(a, np.float64)) - 1) ** 2,
                             rtol=1e-5)
  # D(x) = |x|^2 / 2 has gradient x; with real == fake the interpolate is x.
  quad = lambda x: 0.5 * jnp.sum(jnp.square(x), axis=(1, 2))
  gp = gan.gradient_penalty(quad, real, real, jax.random.PRNGKey(1))
  norms = np.linalg.norm(np.asarray(real, np.float64).reshape(5, -1), axis=1)
  np.testing.assert_allclose(gp, (norms - 1) ** 2, rtol=1e-5)
  # Interpolates are keyed: x_hat = eps*real + (1-eps)*fake, eps per example.
  gp0 = gan.gradient_penalty(quad, real, fake, jax.random.PRNGKey(2))
  eps = np.asarray(jax.random.uniform(jax.random.PRNGKey(2), (5, 1, 1)), np.float64)
  x_hat = eps * np.asarray(real, np.float64) + (1 - eps) * np.asarray(fake, np.float64)
  np.testing.assert_allclose(
      gp0, (np.linalg.norm(x_hat.reshape(5, -1), axis=1) - 1) ** 2, rtol=1e-4)


def test_r1_on_linear_discriminator():
  rng = np.random.default_rng(1)
  a = rng.normal(size=(6,))
  real = jnp.asarray(rng.normal(size=(4, 6)), jnp.float32)
  r1 = gan.r1_penalty(lambda x: x @ jnp.asarray(a, jnp.float32) - 1.0, real)
  chex.assert_shape(r1, (4,))
  np.testing.assert_allclose(r1, 0.5 * np.sum(a ** 2), rtol=1e-5)
  r1 = gan.r1_penalty(lambda x: jnp.sum(x ** 2, axis=1), real)  # grad = 2x
  np.testing.assert_allclose(r1, 2 * np.sum(np.asarray(real, np.float64) ** 2, 1), rtol=1e-5)


# --------------------------------------------------------------- networks ---


def test_pack_matches_numpy():
  x = np.arange(6 * 2 * 2 * 3, dtype=np.float32).reshape(6, 2, 2, 3)
  packed = np.asarray(gan_nets.pack(jnp.asarray(x), 3))
  expected = np.stack([np.concatenate([x[3 * i + j] for j in range(3)], axis=-1)
                       for i in range(2)])
  np.testing.assert_array_equal(packed, expected)
  v = np.arange(12, dtype=np.float32).reshape(6, 2)
  np.testing.assert_array_equal(gan_nets.pack(jnp.asarray(v), 2), v.reshape(3, 4))
  with pytest.raises(ValueError, match="pac"):
    gan_nets.pack(jnp.asarray(v), 4)


def test_minibatch_std_matches_numpy():
  x = np.random.default_rng(2).normal(size=(8, 5)).astype(np.float32)
  y = np.asarray(gan_nets.MinibatchStd().apply({}, jnp.asarray(x)))
  np.testing.assert_array_equal(y[:, :5], x)
  np.testing.assert_allclose(y[:, 5], np.std(x.astype(np.float64), axis=0).mean(), rtol=1e-5)


def test_spectral_norm_top_singular_value_near_one():
  disc = gan_nets.MLPDiscriminator(hidden=(32, 16), spectral_norm=True)
  x = jnp.ones((4, 10))
  variables = disc.init(jax.random.PRNGKey(0), x)
  params = jax.tree.map(lambda p: 3.0 * p, variables["params"])
  stats = variables["batch_stats"]

  @jax.jit
  def power_step(stats, _):
    _, new = disc.apply({"params": params, "batch_stats": stats}, x,
                        update_stats=True, mutable=["batch_stats"])
    return new["batch_stats"], None

  stats, _ = jax.lax.scan(power_step, stats, None, length=30)
  for i, layer in enumerate(["dense_0", "dense_1"]):
    kernel = np.asarray(params[layer]["kernel"], np.float64)
    sigma = float(stats[f"SpectralNorm_{i}"][f"{layer}/kernel/sigma"])
    top = np.linalg.svd(kernel, compute_uv=False)[0]
    assert top > 1.5  # unnormalised kernels are not already near 1
    np.testing.assert_allclose(top / sigma, 1.0, atol=0.02)
  # The composed network is then about 1-Lipschitz (leaky ReLU is).
  xs = jax.random.normal(jax.random.PRNGKey(3), (64, 10))
  ys = jax.random.normal(jax.random.PRNGKey(4), (64, 10))
  apply = lambda v: disc.apply({"params": params, "batch_stats": stats}, v)
  ratio = jnp.abs(apply(xs) - apply(ys)) / jnp.linalg.norm(xs - ys, axis=1)
  assert float(ratio.max()) <= 1.05


def test_dcgan_shapes():
  """Runs the 8x8 networks; checks the 28x28 and 32x32 ones by shape only."""
  for shape in [(8, 8, 1), (28, 28, 1), (32, 32, 3)]:
    gen = gan_nets.DCGANGenerator(shape, width=8, output="sigmoid")
    disc = gan_nets.DCGANDiscriminator(width=8, spectral_norm=True, minibatch_std=True)
    z = jnp.ones((4, 16))
    run = jax.eval_shape if shape != (8, 8, 1) else (lambda f, *a: jax.jit(f)(*a))
    def both(z):
      gv = gen.init(jax.random.PRNGKey(0), z)
      x = gen.apply(gv, z)
      packed = gan_nets.pack(x, 2)
      dv = disc.init(jax.random.PRNGKey(1), packed)
      return x, disc.apply(dv, packed)
    x, logits = run(both, z)
    chex.assert_shape(x, (4,) + shape)
    chex.assert_shape(logits, (2,))
    if shape == (8, 8, 1):
      assert float(x.min()) >= 0 and float(x.max()) <= 1


@pytest.mark.parametrize("shape, features", [((3, 7, 7, 5), 6), ((2, 4, 4, 3), 2),
                                             ((2, 6, 8, 4), 3)])
def test_upconv_is_flax_conv_transpose(shape, features):
  """UpConv (whose kernel gradient is computed per output phase on CPU) has
  nn.ConvTranspose's parameters, outputs and gradients."""
  import flax.linen as nn
  x = jax.random.normal(jax.random.PRNGKey(0), shape)
  ref = nn.ConvTranspose(features, (4, 4), strides=(2, 2), padding="SAME")
  new = gan_nets.UpConv(features)
  params = ref.init(jax.random.PRNGKey(1), x)
  chex.assert_trees_all_equal(params, new.init(jax.random.PRNGKey(1), x))
  params = jax.tree.map(lambda a: a + 0.3 * jax.random.normal(jax.random.PRNGKey(2), a.shape),
                        params)
  chex.assert_trees_all_close(new.apply(params, x), ref.apply(params, x), atol=1e-5)
  loss = lambda m: (lambda p, v: jnp.sum(jnp.sin(m.apply(p, v)) * jnp.arange(v.shape[0])[:, None, None, None]))
  g_ref = jax.jit(jax.grad(loss(ref), argnums=(0, 1)))(params, x)
  g_new = jax.jit(jax.grad(loss(new), argnums=(0, 1)))(params, x)
  chex.assert_trees_all_close(g_new, g_ref, rtol=1e-4, atol=1e-5)


def test_dcgan_levels():
  assert [gan_nets.dcgan_levels(s) for s in (8, 28, 32, 64)] == [(1, 4), (2, 7), (3, 4), (4, 4)]
  with pytest.raises(ValueError, match="data_shape"):
    gan.GANConfig(data_shape=(5, 5, 1), arch="dcgan")


# ------------------------------------------------------------ the update ---


def _small_config(**kw):
  base = dict(data_shape=(2,), latent_dim=4, g_hidden=(16,), d_hidden=(16,),
              g_lr=1e-2, d_lr=1e-2)
  base.update(kw)
  return gan.GANConfig(**base)


def _data(n=16, seed=0):
  return toys.ring8(jax.random.PRNGKey(seed), n)


def _trees_equal(a, b):
  return all(jax.tree.leaves(jax.tree.map(lambda u, v: bool(jnp.array_equal(u, v)), a, b)))


@pytest.mark.parametrize("kw", [dict(), dict(spectral_norm=True, pac=2, minibatch_std=True),
                                dict(loss="wgan", gp_weight=10.0, n_critic=3),
                                dict(loss="hinge", r1_weight=1.0)])
def test_d_step_touches_only_d_and_g_step_only_g(kw):
  cfg = _small_config(**kw)
  x = _data()
  state = gan.init_state(jax.random.PRNGKey(0), cfg, x)
  after_d, m = jax.jit(gan.d_step)(state, x, jax.random.PRNGKey(1))
  assert _trees_equal(after_d.g, state.g)
  assert not _trees_equal(after_d.d.params, state.d.params)
  if cfg.spectral_norm:
    assert not _trees_equal(after_d.d_stats, state.d_stats)
  # The D update separates real from fake more than before it.
  ev0, ev1 = gan.eval_step(state, x), gan.eval_step(after_d, x)
  margin = lambda e: float(e["d_real_logit"].mean() - e["d_fake_logit"].mean())
  assert margin(ev1) > margin(ev0)

  after_g, gm = jax.jit(gan.g_step, static_argnums=2)(after_d, jax.random.PRNGKey(2), 16)
  assert _trees_equal(after_g.d, after_d.d)
  assert _trees_equal(after_g.d_stats, after_d.d_stats)
  assert not _trees_equal(after_g.g.params, after_d.g.params)
  assert int(after_g.step) == 1
  # The G update raises D's score of G's samples (same latents, raw G).
  z = jax.random.normal(jax.random.PRNGKey(2), (16, cfg.latent_dim))
  def score(s):
    fake = s.g.model.apply({"params": s.g.params}, z)
    return float(gan.update._d_apply(s, s.d.params, s.d_stats,
                              gan_nets.pack(fake, cfg.pac), False)[0].mean())
  assert score(after_g) > score(after_d)
  expected_keys = {"d_loss", "d_real_logit", "d_fake_logit", "d_real_acc",
                   "d_fake_acc", "d_grad_norm"}
  assert expected_keys <= set(m) and {"g_loss", "g_grad_norm"} == set(gm)
  if cfg.gp_weight:
    assert "gp" in m


def test_ema_arithmetic():
  cfg = _small_config(ema_decay=0.9)
  x = _data()
  state = gan.init_state(jax.random.PRNGKey(0), cfg, x)
  ema0 = jax.tree.map(lambda p: p + 0.5, state.g.params)  # distinct from G
  for step in (0, 3, 500):
    s = state.replace(g=state.g.replace(ema_params=ema0, step=jnp.asarray(step, jnp.int32)))
    new, _ = gan.g_step(s, jax.random.PRNGKey(1), 16)
    d = min(0.9, (1 + step) / (10 + step))
    expected = jax.tree.map(lambda e, p: d * np.asarray(e, np.float64) +
                            (1 - d) * np.asarray(p, np.float64), ema0, new.g.params)
    chex.assert_trees_all_close(new.g.ema_params, expected, rtol=1e-6, atol=1e-7)


def test_same_key_same_run_different_key_different():
  cfg = _small_config(pac=2, spectral_norm=True)
  x = _data(64)
  step = jax.jit(gan.train_step)
  def run(init_key, key):
    s = gan.init_state(init_key, cfg, x[:16])
    for i in range(3):
      s, m = step(s, x[16 * i:16 * (i + 1)], key)
    return s, m
  a = run(jax.random.PRNGKey(0), jax.random.PRNGKey(7))
  b = run(jax.random.PRNGKey(0), jax.random.PRNGKey(7))
  c = run(jax.random.PRNGKey(0), jax.random.PRNGKey(8))
  chex.assert_trees_all_equal(jax.tree.leaves(a), jax.tree.leaves(b))
  assert not _trees_equal(a[0].g.params, c[0].g.params)
  assert not _trees_equal(a[0].d.params, c[0].d.params)
  s0 = gan.init_state(jax.random.PRNGKey(0), cfg, x[:16])
  s1 = gan.init_state(jax.random.PRNGKey(1), cfg, x[:16])
  assert not _trees_equal(s0.g.params, s1.g.params)


def test_train_step_compiles_once_and_eval_step_shapes():
  cfg = _small_config(pac=2)
  x = _data(48)
  state = gan.init_state(jax.random.PRNGKey(0), cfg, x[:16])

  @jax.jit
  @chex.assert_max_traces(n=1)
  def step(s, b, k):
    return gan.train_step(s, b, k)

  for i in range(3):
    state, metrics = step(state, x[16 * i:16 * (i + 1)], jax.random.PRNGKey(3))
  assert int(state.step) == 3
  for v in metrics.values():
    chex.assert_shape(v, ())
    assert np.isfinite(float(v))
  ev = jax.jit(gan.eval_step)(state, x[:10])  # 10: not a multiple of pac
  for name in ("d_real_logit", "d_fake_logit", "d_real_acc", "d_fake_acc",
               "d_loss", "g_loss"):
    chex.assert_shape(ev[name], (10,))
    assert ev[name].dtype == jnp.float32
  # Deterministic: evaluating twice gives the same values.
  chex.assert_trees_all_equal(ev, gan.eval_step(state, x[:10]))
  s = gan.sample(state, jax.random.PRNGKey(0), 5)
  chex.assert_shape(s, (5, 2))


def test_generator_output_matches_data_range():
  key = jax.random.PRNGKey(0)
  unit = jnp.linspace(0.0, 1.0, 32).reshape(4, 8)
  for output, data in [("sigmoid", unit), ("tanh", 2 * unit - 1), ("linear", 5 * unit - 9)]:
    cfg = _small_config(data_shape=(8,), output=output)
    state = gan.init_state(key, cfg, data)
    s = gan.sample(state, key, 64)
    if output == "sigmoid":
      assert float(s.min()) >= 0 and float(s.max()) <= 1
    if output == "tanh":
      assert float(s.min()) >= -1 and float(s.max()) <= 1
  with pytest.raises(ValueError, match="output='sigmoid'"):
    gan.init_state(key, _small_config(data_shape=(8,), output="sigmoid"), 2 * unit - 1)
  with pytest.raises(ValueError, match="scaled to \\[0, 1\\]"):
    gan.init_state(key, _small_config(data_shape=(8,), output="tanh"), unit)
  with pytest.raises(ValueError, match="output='tanh'"):
    gan.init_state(key, _small_config(data_shape=(8,), output="tanh"), 3 * unit - 1)


def test_bad_input_raises_before_compiling():
  x = _data(16)
  with pytest.raises(ValueError, match="n_critic"):
    _small_config(n_critic=0)
  with pytest.raises(ValueError, match="pac"):
    _small_config(pac=0)
  with pytest.raises(ValueError, match="output"):
    _small_config(output="relu")
  with pytest.raises(ValueError, match="ema_decay"):
    _small_config(ema_decay=1.0)
  with pytest.raises(ValueError, match="gp_weight"):
    _small_config(gp_weight=-1.0)
  bad = np.asarray(x).copy()
  bad[3, 1] = np.nan
  with pytest.raises(ValueError, match="NaN"):
    gan.init_state(jax.random.PRNGKey(0), _small_config(), bad)
  with pytest.raises(ValueError, match="NaN"):
    gan.check_data(_small_config(), bad)
  with pytest.raises(ValueError, match="shape"):
    gan.init_state(jax.random.PRNGKey(0), _small_config(), np.zeros((4, 3), np.float32))
  state = gan.init_state(jax.random.PRNGKey(0), _small_config(pac=4), x)
  with pytest.raises(ValueError, match="multiple of pac=4"):
    jax.jit(gan.train_step)(state, x[:6], jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match="n:"):
    gan.sample(state, jax.random.PRNGKey(0), 0)


def test_hold_then_cosine_schedule():
  """hold_steps: the full rate for that many updates, then a cosine to 0 at
  decay_steps (D's schedule counts n_critic of its updates per G update);
  the held updates are the constant-rate run's, to float32 rounding."""
  cfg = _small_config(g_lr=1e-3, d_lr=2e-3, n_critic=2, decay_steps=10, hold_steps=6)
  g_lr, d_lr = gan.learning_rates(cfg)
  for t, want in ((0, 1.0), (5, 1.0), (6, 1.0), (8, 0.5), (10, 0.0), (12, 0.0)):
    assert float(g_lr(t)) == pytest.approx(1e-3 * want, abs=1e-9), t
    assert float(d_lr(2 * t)) == pytest.approx(2e-3 * want, abs=1e-9), t
  assert float(g_lr(7)) == pytest.approx(1e-3 * 0.5 * (1 + np.cos(np.pi / 4)))
  g_cos, _ = gan.learning_rates(_small_config(g_lr=1e-3, decay_steps=4))
  assert float(g_cos(2)) == pytest.approx(0.5e-3)
  assert gan.learning_rates(_small_config(g_lr=1e-3)) == (1e-3, 1e-2)

  x = _data(32)
  constant = _small_config(pac=2, spectral_norm=True)
  held = _small_config(pac=2, spectral_norm=True, decay_steps=8, hold_steps=5)
  step = jax.jit(gan.train_step)
  leaves = lambda s: (s.g.params, s.d.params, s.d_stats, s.g.ema_params,
                      s.g.opt_state[0], s.d.opt_state[0])
  a = gan.init_state(jax.random.PRNGKey(0), constant, x)
  b = gan.init_state(jax.random.PRNGKey(0), held, x)
  for t in range(1, 8):
    a, _ = step(a, x, jax.random.PRNGKey(1))
    b, _ = step(b, x, jax.random.PRNGKey(1))
    if t <= 6:  # 5 held updates, and the cosine's first, still at the full rate
      # Two programs (one folds its constant rate, one computes it) may
      # round an update differently in the last bit; the decayed step
      # below differs by orders of magnitude more.
      chex.assert_trees_all_close(leaves(a), leaves(b), rtol=1e-5, atol=1e-7)
  with pytest.raises(AssertionError):
    chex.assert_trees_all_close(a.g.params, b.g.params, rtol=1e-3, atol=1e-4)
  with pytest.raises(ValueError, match="hold_steps"):
    _small_config(decay_steps=10, hold_steps=10)
  with pytest.raises(ValueError, match="hold_steps"):
    _small_config(hold_steps=3)
  with pytest.raises(ValueError, match="hold_steps"):
    _small_config(decay_steps=10, hold_steps=-1)


def test_config_for_defaults():
  assert gan.config_for("ring8", (2,)).pac == 2
  assert gan.config_for("grid25", (2,)).pac == 4
  cfg = gan.config_for("mnist", (28, 28, 1))
  assert cfg.arch == "dcgan" and cfg.output == "sigmoid"
  assert gan.config_for("ring8", (2,), pac=1).pac == 1
  # D's learning rate: twice G's on grid25 and stacked_mnist, kept when only
  # G's is overridden; an explicit d_lr wins; G's rate elsewhere.
  rates = lambda c: (c.g_lr, c.d_lr)  # noqa: E731
  assert rates(gan.config_for("grid25", (2,))) == (1e-3, 2e-3)
  assert rates(gan.config_for("stacked_mnist", (28, 28, 3))) == (2e-4, 4e-4)
  assert rates(gan.config_for("stacked_mnist", (28, 28, 3), g_lr=1e-4)) == (1e-4, 2e-4)
  assert rates(gan.config_for("grid25", (2,), d_lr=1e-3)) == (1e-3, 1e-3)
  assert rates(gan.config_for("mnist", (28, 28, 1))) == (2e-4, 2e-4)


# ---------------------------------------------------------- learning check ---


def _nearest_centre_coverage(samples, centers, sigma):
  d = np.linalg.norm(samples[:, None] - centers[None], axis=-1)
  hq = d.min(1) < 3 * sigma
  return len(np.unique(d.argmin(1)[hq])), float(hq.mean())


def test_ring8_learning_check():
  """A short seeded run covers >= 7 of the 8 ring modes (2,500 samples)."""
  steps, bs = 2000, 128
  k_data, k_init, k_train, k_sample = jax.random.split(jax.random.PRNGKey(0), 4)
  x = toys.ring8(k_data, 20000)
  cfg = gan.config_for("ring8", (2,), g_hidden=(128, 128), d_hidden=(128, 128),
                       spectral_norm=False)
  state = gan.init_state(k_init, cfg, x[:bs])

  @jax.jit
  def run(state):
    def body(s, i):
      idx = jax.random.randint(jax.random.fold_in(k_data, i), (bs,), 0, x.shape[0])
      return gan.train_step(s, x[idx], k_train)
    return jax.lax.scan(body, state, jnp.arange(steps))

  state, metrics = run(state)
  assert np.isfinite(np.asarray(metrics["d_loss"])).all()
  samples = np.asarray(gan.sample(state, k_sample, 2500))
  covered, hq = _nearest_centre_coverage(samples, toys.RING8_CENTERS, toys.RING8_SIGMA)
  assert covered >= 7, (covered, hq)


# ---------------------------------------------------------- the library run ---


def test_fit_on_a_users_array(tmp_path):
  x = np.random.default_rng(0).uniform(size=(128, 3)).astype(np.float32)
  cfg = _small_config(data_shape=(3,), output="sigmoid", pac=2)
  result = training.fit_model(gan, jax.random.PRNGKey(0), cfg, x, x[:20], epochs=2,
                              batch_size=32, workdir=tmp_path / "wd", progress=False)
  assert int(result.state.step) == 8 and len(result.history) == 2
  assert "test_d_real_acc" in result.history[-1]
  assert (tmp_path / "wd" / "metrics.jsonl").exists()
  with pytest.raises(ValueError, match="batch size 31 must be a positive multiple of pac=2"):
    training.fit_model(gan, jax.random.PRNGKey(0), cfg, x, epochs=1, batch_size=31)
  with pytest.raises(ValueError, match="output='sigmoid'"):
    training.fit_model(gan, jax.random.PRNGKey(0), cfg, x - 0.5, epochs=1, batch_size=32)


def test_fit_resume_is_exact(tmp_path):
  """1 epoch, then resume to 2 == 2 epochs straight (SN state and EMA included)."""
  x = np.asarray(toys.ring8(jax.random.PRNGKey(3), 256))
  cfg = _small_config(pac=2, spectral_norm=True, ema_decay=0.9)
  kw = dict(epochs=2, batch_size=64, progress=False)
  straight = training.fit_model(gan, jax.random.PRNGKey(0), cfg, x, workdir=tmp_path / "a", **kw)
  training.fit_model(gan, jax.random.PRNGKey(0), cfg, x, workdir=tmp_path / "b",
                     **dict(kw, epochs=1))
  resumed = training.fit_model(gan, jax.random.PRNGKey(0), cfg, x, workdir=tmp_path / "b",
                               resume=True, **kw)
  assert resumed.start_epoch == 1 and int(resumed.state.step) == 8
  # The leaves (params, optimizer moments, EMA, SN vectors, steps, key): the
  # static optax objects of two runs are equal in behaviour, not identity.
  chex.assert_trees_all_equal(jax.tree.leaves(straight.state), jax.tree.leaves(resumed.state))
  assert not _trees_equal(straight.state.g.params,
                          gan.init_state(jax.random.PRNGKey(0), cfg, x).g.params)


def test_toys_agree_with_the_mode_metric():
  from unsupjax.metrics import modes
  for name, toy in toys.TOYS.items():
    ms = modes.MODE_SETS[name]
    np.testing.assert_array_equal(np.asarray(ms.centres), toy.centers)
    assert ms.sigma == toy.sigma


# -------------------------------------------------------------------- CLI ---


def _flags(*argv):
  """The resolved config of `unsupjax train gan ARGV` (nothing is run)."""
  from unsupjax import cli
  from unsupjax.cli.flags import to_config
  from unsupjax.tasks import base
  parser, task = cli.build_parser(("train", "gan"))
  return base.resolve(task, to_config(task.config, parser.parse_args(["train", "gan", *argv])))


def _json(path):
  import json
  return json.loads(path.read_text())


def _records(wd):
  import json
  return [json.loads(line) for line in (wd / "metrics.jsonl").read_text().splitlines()]


def test_cli_ring8_leaves_its_files_and_evaluate_reproduces_them(tmp_path, cli_main,
                                                                  small_toys):
  from PIL import Image
  code, out, err = cli_main("train", "gan", "--epochs", "2", "--batch-size", "128",
                            "--workdir", "run", "--save-samples", "300", "--no-progress")
  assert code == 0, err
  assert "modes" in out and "G steps" in out
  wd = tmp_path / "run"
  records = _records(wd)
  assert [r["epoch"] for r in records] == [1, 2]
  for k in ("train_d_loss", "train_g_loss", "train_d_real_acc", "train_d_fake_acc",
            "train_d_grad_norm", "train_g_grad_norm", "test_d_real_acc",
            "modes_covered", "hq_fraction", "reverse_kl"):
    assert k in records[-1], k
  summary = _json(wd / "summary.json")
  assert summary["steps"] == 80 and summary["config"]["pac"] is None  # config_for's 2
  assert (summary["config"]["batch_size"], summary["config"]["lr_schedule"]) == (128, "cosine")
  assert summary["mode_samples"] == 2500
  assert 0 <= summary["modes_covered"] <= 8 and 0 <= summary["hq_fraction"] <= 1
  # The last epoch's record is the summary's: the same EMA generator, the same key.
  for k in ("modes_covered", "hq_fraction", "reverse_kl", "test_d_loss", "test_g_loss"):
    assert records[-1][k] == pytest.approx(summary[k], rel=1e-6), k
  samples = np.load(wd / "samples.npy")
  assert samples.shape == (300, 2) and samples.dtype == np.float32
  # In the centres' coordinates: the samples are spread around the unit circle.
  assert 0.3 < float(np.median(np.linalg.norm(samples, axis=1))) < 2.0
  assert Image.open(wd / "samples.png").size[0] > 100
  assert (wd / "curves.png").exists()
  # `unsupjax evaluate` re-opens the run and finds the summary's numbers; the
  # generator's own parameters (not their EMA) give others.
  assert cli_main("evaluate", "run")[0] == 0
  assert cli_main("evaluate", "run", "--raw-generator")[0] == 0
  ema, raw = _json(wd / "eval.json"), _json(wd / "eval-raw.json")
  assert (ema["generator"], raw["generator"]) == ("ema", "raw")
  assert ema["step"] == summary["steps"]
  for k in ("modes_covered", "hq_fraction", "reverse_kl", "test_d_real_acc", "test_d_fake_acc",
            "test_g_loss"):
    assert ema[k] == pytest.approx(summary[k], rel=1e-6), k
  assert raw["test_d_real_logit"] == pytest.approx(ema["test_d_real_logit"], rel=1e-6)  # same D
  # Other G weights, other fakes (equal only if the option were ignored).
  assert raw["test_g_loss"] != ema["test_g_loss"]
  assert raw["test_d_fake_logit"] != ema["test_d_fake_logit"]


def test_cli_without_ema_raw_is_ema_and_reruns_are_refused(tmp_path, cli_main, small_toys):
  """With --ema 0 the raw parameters are what the run samples: `evaluate
  --raw-generator` then gives the default's numbers."""
  code, _, err = cli_main("train", "gan", "--dataset", "grid25", "--epochs", "1",
                          "--batch-size", "512", "--ema", "0", "--workdir", "run",
                          "--no-progress")
  assert code == 0, err
  assert cli_main("evaluate", "run")[0] == 0
  assert cli_main("evaluate", "run", "--raw-generator")[0] == 0
  ema, raw = _json(tmp_path / "run" / "eval.json"), _json(tmp_path / "run" / "eval-raw.json")
  ema.pop("generator"), raw.pop("generator")
  assert ema == raw and ema["mode_samples"] == 2500
  # A second run into the same directory must say so; the cosine schedule
  # (grid25's default) spans the planned epochs, so they cannot grow on resume.
  code, _, err = cli_main("train", "gan", "--dataset", "grid25", "--epochs", "1",
                          "--workdir", "run", "--no-progress")
  assert code == 2 and "--overwrite" in err
  code, _, err = cli_main("train", "gan", "--dataset", "grid25", "--epochs", "2",
                          "--batch-size", "512", "--ema", "0", "--workdir", "run", "--resume")
  assert code == 2 and err.startswith("unsupjax: error: --epochs:") and "cosine" in err


def test_cli_bad_input_exits_2_with_one_line(tmp_path, cli_main):
  nan = np.zeros((100, 3), np.float32)
  nan[7, 1] = np.nan
  np.save(tmp_path / "nan.npy", nan)
  cases = [(["--pac", "3"], "--pac"), (["--n-critic", "0"], "--n-critic"),
           (["--dataset", "nan.npy", "--batch-size", "10"], "NaN"),
           (["--dataset", "missing.npy"], "--dataset"),
           (["--dataset", "svhn"], "--dataset"),
           (["--loss", "vanilla"], "--loss"), (["--ema", "1"], "--ema"),
           (["--gp", "-1"], "--gp"), (["--metric-samples", "5"], "--metric-samples"),
           (["--g-lr", "0"], "--g-lr"),
           (["--dataset", "ring8", "--output", "sigmoid"], "output='sigmoid'"),
           (["--dataset", "ring8", "--arch", "dcgan"], "--arch")]
  for args, expected in cases:
    code, _, err = cli_main("train", "gan", *args, "--epochs", "1", "--no-progress",
                            "--workdir", "bad")
    assert code == 2, (args, err)
    assert expected in err, (args, err)
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, (args, err)
  assert not (tmp_path / "bad" / "run.json").exists()


@pytest.mark.slow
def test_cli_image_gan_logs_sample_quality_and_evaluate_reproduces_it(tmp_path, cli_main):
  """A DCGAN on 300 MNIST digits (a .npy: its last 30 are held out) logs
  FID/KID/PRDC/IS after its epoch, puts them in summary.json, and `unsupjax
  evaluate` recomputes the summary's numbers from the checkpoint."""
  from conftest import shared_mnist_dir
  from unsupjax import data
  x = data.load("mnist", "train[:300]", data_dir=str(shared_mnist_dir()), download=False).x
  np.save(tmp_path / "digits300.npy", x)
  code, out, err = cli_main("train", "gan", "--dataset", "digits300.npy", "--output",
                            "sigmoid", "--arch", "dcgan", "--epochs", "1", "--batch-size", "64",
                            "--metric-samples", "20", "--workdir", "run", "--no-progress")
  assert code == 0, err
  assert "FID" in out
  wd = tmp_path / "run"
  records = _records(wd)
  for rec in records:
    for k in ("fid", "kid", "precision", "recall", "density", "coverage", "inception_score",
              "confidence"):
      assert np.isfinite(rec[k]), k
    assert rec["metric_samples"] == 20
  summary = _json(wd / "summary.json")
  assert summary["metric_samples"] == 30 and summary["fid"] > 0 and summary["steps"] == 4
  assert cli_main("evaluate", "run")[0] == 0
  evaluated = _json(wd / "eval.json")
  for k in ("fid", "kid", "precision", "recall", "inception_score", "confidence"):
    assert evaluated[k] == pytest.approx(summary[k], rel=1e-4, abs=1e-6), k
  # --samples: fewer samples, other numbers; too few is refused.
  assert cli_main("evaluate", "run", "--samples", "12")[0] == 0
  assert _json(wd / "eval.json")["metric_samples"] == 12
  code, _, err = cli_main("evaluate", "run", "--samples", "3")
  assert code == 2 and "--samples" in err


@pytest.mark.slow
def test_cli_stacked_mnist_counts_modes_and_evaluate_reproduces_them(tmp_path, monkeypatch,
                                                                     cli_main):
  """`--dataset stacked_mnist` trains on MNIST digits stacked as channels
  (sizes shrunk here), its summary counts the 1,000 Stacked-MNIST modes over
  the protocol's sample count, and `unsupjax evaluate` recomputes them."""
  from conftest import shared_mnist_dir
  from unsupjax import data
  from unsupjax.tasks import gan as gan_task
  monkeypatch.setattr(gan_task, "STACKED_TRAIN", 128)
  monkeypatch.setattr(gan_task, "STACKED_EVAL", 64)
  monkeypatch.setattr(gan_task, "STACKED_MODE_SAMPLES", 400)
  # Channels drawn from the first 2,000 training digits: decoding all
  # 60,000 would take most of this test's time.
  load = data.load
  monkeypatch.setattr(data, "load", lambda name, split, **kw: load(
      name, "train[:2000]" if split == "train" else split, **kw))
  mnist_dir = str(shared_mnist_dir())
  flags = ("--dataset", "stacked_mnist", "--data-dir", mnist_dir, "--no-download")
  loaded = gan_task.load(_flags(*flags))
  train_x, eval_x = loaded.train_x, loaded.test_x
  assert train_x.shape == (128, 28, 28, 3) and eval_x.shape == (64, 28, 28, 3)
  test = data.load("mnist", "test", data_dir=mnist_dir, download=False).x.reshape(10_000, -1)
  for c in range(3):  # every evaluation channel is an MNIST test digit
    flat = eval_x[:8, ..., c].reshape(8, -1)
    assert all((test == row).all(axis=1).any() for row in flat)
  np.testing.assert_array_equal(gan_task.load(_flags(*flags)).train_x, train_x)  # keyed
  assert not np.array_equal(gan_task.load(_flags(*flags, "--seed", "1")).train_x, train_x)

  # The MLP networks: what is tested is the data, the mode count and the
  # evaluation, not the DCGAN (test_cli_image_gan... trains that).
  code, out, err = cli_main("train", "gan", *flags, "--arch", "mlp", "--epochs", "1",
                            "--metric-samples", "20", "--workdir", "run", "--no-progress")
  assert code == 0, err
  assert "/1000 of 400 samples" in out
  wd = tmp_path / "run"
  summary = _json(wd / "summary.json")
  assert summary["steps"] == 2 and summary["config"]["batch_size"] == 64
  assert summary["mode_samples"] == 400 and summary["metric_samples"] == 64
  assert 1 <= summary["modes_covered"] <= 400 and summary["reverse_kl"] > 0
  record = _records(wd)[0]
  # FID & co. on --metric-samples; modes over the protocol's count, so the last
  # epoch's record (the same EMA generator and key) equals the summary.
  assert record["metric_samples"] == 20 and record["mode_samples"] == 400
  assert record["modes_covered"] == summary["modes_covered"]
  assert record["reverse_kl"] == summary["reverse_kl"]
  # The summary's count is the mode metric of the final EMA generator's samples.
  assert cli_main("evaluate", "run", "--data-dir", mnist_dir, "--no-download")[0] == 0
  evaluated = _json(wd / "eval.json")
  assert evaluated["modes_covered"] == summary["modes_covered"]
  assert evaluated["reverse_kl"] == pytest.approx(summary["reverse_kl"], rel=1e-6)
  assert evaluated["digit_kl"] == pytest.approx(summary["digit_kl"], rel=1e-6)
  assert len(summary["digit_kl"]) == 3  # and they are a part of the KL:
  assert 0 <= sum(summary["digit_kl"]) <= summary["reverse_kl"] + 1e-6
  counts = np.asarray(evaluated["digit_counts"])  # the histograms digit_kl reads
  assert counts.shape == (3, 10) and (counts.sum(axis=1) == 400).all()
  assert counts.tolist() == summary["digit_counts"]
  p = counts / 400
  np.testing.assert_allclose(
      evaluated["digit_kl"], [np.sum(q[q > 0] * np.log(10 * q[q > 0])) for q in p], rtol=1e-4)
  assert evaluated["fid"] == pytest.approx(summary["fid"], rel=1e-4)


def test_cli_stacked_mnist_default_is_the_benchmarked_one():
  """Stacked MNIST: 140 epochs at a constant rate, batch 64, pac 2, spectral
  norm and D at twice G's rate, the run whose 1,000 modes and KL docs/results/gan.md
  and benchmarks/results/gan_modes.json report."""
  from unsupjax.tasks import gan as gan_task
  cfg = _flags("--dataset", "stacked_mnist")
  assert (cfg.epochs, cfg.lr_schedule, cfg.batch_size) == (140, "constant", 64)
  config = gan_task.model_config(cfg, (28, 28, 3), 60_000)
  assert (config.pac, config.spectral_norm, config.decay_steps, config.hold_steps) == (
      2, True, 0, 0)
  assert (config.arch, config.output, config.width) == ("dcgan", "sigmoid", 64)
  assert (config.g_lr, config.d_lr) == (2e-4, 4e-4)


def test_cli_decay_epochs():
  """--decay-epochs N: cosine over the last N epochs only; refused without
  the cosine schedule or outside [1, --epochs], before any data is read."""
  from unsupjax.config import UsageError
  from unsupjax.tasks import gan as gan_task

  def config(*flags):
    return gan_task.model_config(_flags("--dataset", "ring8", *flags), (2,), 200 * 256)
  c = config("--epochs", "50", "--decay-epochs", "10")
  assert (c.decay_steps, c.hold_steps) == (50 * 200, 40 * 200)
  c = config("--epochs", "50", "--decay-epochs", "50")
  assert (c.decay_steps, c.hold_steps) == (50 * 200, 0)
  assert config("--epochs", "50").hold_steps == 0
  assert config("--decay-epochs", "200").decay_steps == 200 * 200  # ring8's 200 epochs
  for flags in (["--lr-schedule", "constant", "--decay-epochs", "5"],
                ["--decay-epochs", "0"], ["--epochs", "50", "--decay-epochs", "51"],
                ["--decay-epochs", "201"]):
    with pytest.raises(UsageError, match="^--decay-epochs"):
      config(*flags)


def test_cli_toy_defaults_are_the_benchmarked_ones():
  """ring8: 200 epochs, pac 2, spectral norm; grid25: 600 epochs, pac 4, R1
  0.1, no spectral norm and D at twice G's learning rate; both with a cosine
  decay over the run: the configurations whose mode coverage docs/results/gan.md
  reports. An explicit flag still overrides the dataset's default, and --lr
  scales both rates."""
  from unsupjax.tasks import gan as gan_task
  want = {"ring8": (200, 2, True, 0.0, 1e-3), "grid25": (600, 4, False, 0.1, 2e-3)}
  for dataset, (epochs, pac, sn, r1, d_lr) in want.items():
    cfg = _flags("--dataset", dataset)
    assert (cfg.epochs, cfg.lr_schedule, cfg.batch_size, cfg.learning_rate) == (
        epochs, "cosine", 256, 1e-3), dataset
    config = gan_task.model_config(cfg, (2,), 51_200)
    assert config.decay_steps == epochs * 200, dataset
    assert (config.pac, config.spectral_norm, config.r1_weight) == (pac, sn, r1), dataset
    assert (config.g_lr, config.d_lr, config.latent_dim) == (1e-3, d_lr, 8), dataset
  for flags, rates in ((["--lr", "5e-4"], (5e-4, 1e-3)), (["--d-lr", "1e-3"], (1e-3, 1e-3)),
                       (["--lr", "5e-4", "--g-lr", "1e-4"], (1e-4, 1e-3))):
    config = gan_task.model_config(_flags("--dataset", "grid25", *flags), (2,), 200)
    assert (config.g_lr, config.d_lr) == rates, flags
  config = gan_task.model_config(_flags("--dataset", "grid25", "--r1", "0", "--spectral-norm"),
                                 (2,), 200)
  assert (config.spectral_norm, config.r1_weight) == (True, 0.0)
  config = gan_task.model_config(_flags("--loss", "wgan-gp"), (2,), 200)
  assert (config.loss, config.gp_weight, config.n_critic) == ("wgan", 10.0, 5)
  cfg = _flags("--dataset", "ring8", "--epochs", "50", "--lr-schedule", "constant")
  assert (cfg.epochs, cfg.lr_schedule) == (50, "constant")
  assert gan_task.model_config(cfg, (2,), 51_200).decay_steps == 0
  # Images: batch 64 at 2e-4, DCGAN with a sigmoid output; a .npy's workdir
  # is named after the file.
  cfg = _flags("--dataset", "mnist")
  assert (cfg.batch_size, cfg.learning_rate, cfg.lr_schedule, cfg.epochs) == (
      64, 2e-4, "constant", 20)
  assert _flags("--dataset", "data/x.npy").workdir == "runs/gan-x"
