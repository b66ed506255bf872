"""The dense autoencoder: shapes, jit agreement, one compile, learning."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unsupjax.models import autoencoder as ae
from unsupjax import training


@pytest.fixture(scope="module")
def state(digits):
  return ae.init_state(jax.random.PRNGKey(0), ae.AEConfig(), digits[0].x[:2])


def test_shapes_and_dtypes(state, digits):
  x = digits[0].x[:5]
  logits, code = state.model.apply({"params": state.params}, x)
  chex.assert_shape(logits, (5, 8, 8, 1))
  chex.assert_shape(code, (5, 32))
  chex.assert_type([logits, code], jnp.float32)
  assert (np.asarray(code) >= 0).all()  # ReLU latent, as in the Keras model
  recon = ae.reconstruct(state, x)
  assert ((recon > 0) & (recon < 1)).all()
  values = ae.eval_step(state, x)
  for v in values.values():
    chex.assert_shape(v, (5,))


def test_mnist_architecture_is_the_classic():
  st = ae.init_state(jax.random.PRNGKey(0), ae.AEConfig(), jnp.zeros((1, 28, 28, 1)))
  shapes = [p.shape for p in jax.tree.leaves(st.params)]
  n_params = sum(int(np.prod(s)) for s in shapes)
  # 784-128-32-128-784 dense layers with biases.
  assert n_params == (784 * 128 + 128) + (128 * 32 + 32) + (32 * 128 + 128) + (128 * 784 + 784)


def test_eval_values_match_definitions(state, digits):
  x = digits[1].x[:7]
  logits, _ = state.model.apply({"params": state.params}, x)
  p = np.asarray(jax.nn.sigmoid(logits), np.float64)
  t = np.asarray(x, np.float64)
  values = ae.eval_step(state, x)
  np.testing.assert_allclose(values["mse"], ((p - t) ** 2).reshape(7, -1).mean(1), rtol=1e-5)
  bce = -(t * np.log(p) + (1 - t) * np.log(1 - p)).reshape(7, -1).mean(1)
  np.testing.assert_allclose(values["bce"], bce, rtol=1e-4)


def test_linear_output_is_the_reconstruction(digits):
  """output='linear': no sigmoid anywhere; loss, eval and the gradient are
  those of the squared error of the raw decoder output."""
  x = digits[1].x[:6]
  st = ae.init_state(jax.random.PRNGKey(0), ae.AEConfig(loss="mse", output="linear"), x)
  out, _ = st.model.apply({"params": st.params}, x)
  np.testing.assert_array_equal(ae.reconstruct(st, x), out)
  assert float(jnp.min(out)) < 0.0  # unsquashed: an initial linear layer goes negative
  want = ((np.asarray(out, np.float64) - np.asarray(x, np.float64)) ** 2).reshape(6, -1).mean(1)
  values = ae.eval_step(st, x)
  assert set(values) == {"loss", "mse", "psnr"}
  np.testing.assert_allclose(values["mse"], want, rtol=1e-5)
  np.testing.assert_allclose(values["loss"], want, rtol=1e-5)
  # d/d(out) of mean((out - x)^2) is 2 (out - x) / numel: checks the train loss.
  g = jax.grad(lambda o: jnp.mean(ae.per_example_loss(st.config, o, x)))(out)
  np.testing.assert_allclose(g, 2 * (out - x) / out.size, rtol=1e-5, atol=1e-9)
  with pytest.raises(ValueError, match="loss: output='linear'"):
    ae.AEConfig(output="linear")  # default loss is BCE, which needs probabilities
  with pytest.raises(ValueError, match="output"):
    ae.AEConfig(loss="mse", output="tanh")


class StepTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_step_jit_and_nojit_agree(self):
    x = jax.random.uniform(jax.random.PRNGKey(1), (16, 8, 8, 1))
    st = ae.init_state(jax.random.PRNGKey(0), ae.AEConfig(), x)
    key = jax.random.PRNGKey(2)
    st1, m1 = self.variant(ae.train_step)(st, x, key)
    st2, m2 = ae.train_step(st, x, key)
    chex.assert_trees_all_close(st1.params, st2.params, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(m1, m2, rtol=1e-5)
    assert int(st1.step) == 1
    # The step lowers the loss on its own batch.
    _, m3 = ae.train_step(st1, x, key)
    assert float(m3["loss"]) < float(m1["loss"])


def test_one_trace_over_a_multi_epoch_fit(digits):
  train_x, test_x = digits[0].x, digits[1].x
  st = ae.init_state(jax.random.PRNGKey(0), ae.AEConfig(), train_x[:1])
  step = chex.assert_max_traces(ae.train_step, n=1)
  evals = chex.assert_max_traces(ae.eval_step, n=1)
  result = training.fit(st, step, evals, train_x, test_x, key=jax.random.PRNGKey(1),
                     epochs=3, batch_size=128, progress=False)
  assert len(result.history) == 3 and int(result.state.step) == 3 * (1437 // 128)


def test_learns_digits(digits):
  """Seeded short run: test MSE falls from ~0.17 to below 0.012."""
  train_x, test_x = digits[0].x, digits[1].x
  st = ae.init_state(jax.random.PRNGKey(0), ae.AEConfig(), train_x[:1])
  before = training.evaluate(st, ae.eval_step, test_x)
  result = training.fit(st, ae.train_step, ae.eval_step, train_x, test_x,
                     key=jax.random.PRNGKey(1), epochs=40, batch_size=64,
                     progress=False)
  after = training.evaluate(result.state, ae.eval_step, test_x)
  assert before["mse"] > 0.1
  assert after["mse"] < 0.012, after
  assert after["bce"] < before["bce"] - 0.3


def test_config_validation():
  with pytest.raises(ValueError, match="latent_dim"):
    ae.AEConfig(latent_dim=0)
  with pytest.raises(ValueError, match="learning_rate"):
    ae.AEConfig(learning_rate=-1.0)
  with pytest.raises(ValueError, match="hidden"):
    ae.AEConfig(hidden=(0,))


# --------------------------------------------------------------------------
# Convolutional and denoising variants.


@pytest.mark.parametrize("shape", [(8, 8, 1), (28, 28, 1), (32, 32, 3)])
def test_conv_shapes_for_each_input_size(shape):
  """Traced, not compiled (jax.eval_shape): shapes are all this checks."""
  x = jax.ShapeDtypeStruct((3,) + shape, jnp.float32)
  key = jax.eval_shape(lambda: jax.random.PRNGKey(1))
  st = jax.eval_shape(lambda k, x: ae.init_state(k, ae.AEConfig(arch="conv", latent_dim=5), x),
                      key, x)
  logits, code = jax.eval_shape(lambda s, x: s.model.apply({"params": s.params}, x), st, x)
  assert logits.shape == (3,) + shape and code.shape == (3, 5)
  assert jax.eval_shape(ae.encode, st, x).shape == (3, 5)


@pytest.mark.parametrize("kind, level", [("gaussian", 0.05), ("mask", 0.25), ("salt_pepper", 0.2)])
def test_corruption_is_keyed_and_has_its_level(kind, level):
  x = jax.random.uniform(jax.random.PRNGKey(0), (200, 64), minval=0.2, maxval=0.8)
  a = ae.corrupt(jax.random.PRNGKey(1), x, kind, level)
  b = ae.corrupt(jax.random.PRNGKey(1), x, kind, level)
  c = ae.corrupt(jax.random.PRNGKey(2), x, kind, level)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  assert a.shape == x.shape and float(a.min()) >= 0.0 and float(a.max()) <= 1.0
  changed = np.mean(np.asarray(a) != np.asarray(x))
  if kind == "gaussian":
    # Inputs in [0.2, 0.8] are 3 sigma from the clip bounds: noise std ~ level.
    assert abs(float(jnp.std(a - x)) - level) < 0.003
  elif kind == "mask":
    assert abs(changed - level) < 0.01 and np.all(np.asarray(a)[np.asarray(a) != np.asarray(x)] == 0)
  else:
    assert abs(changed - level) < 0.01
    hit = np.asarray(a) != np.asarray(x)
    assert abs(np.mean(np.asarray(a)[hit]) - 0.5) < 0.03  # salt and pepper alike


def test_denoising_step_uses_the_step_key():
  x = jax.random.uniform(jax.random.PRNGKey(0), (32, 64))
  cfg = ae.AEConfig(corruption="mask", noise_level=0.5)
  st = ae.init_state(jax.random.PRNGKey(1), cfg, x)
  a = ae.train_step(st, x, jax.random.PRNGKey(2))[1]["loss"]
  b = ae.train_step(st, x, jax.random.PRNGKey(2))[1]["loss"]
  c = ae.train_step(st, x, jax.random.PRNGKey(3))[1]["loss"]
  clean = ae.train_step(st.replace(config=ae.AEConfig()), x, jax.random.PRNGKey(2))[1]["loss"]
  assert a == b and a != c and a != clean


def test_conv_and_denoising_learn_digits(digits):
  """Seeded short runs: the conv AE and the masking DAE fall well below the
  starting MSE (~0.17); the DAE also reconstructs masked inputs better than
  the masked inputs themselves."""
  train_x, test_x = digits[0].x, digits[1].x
  conv = ae.init_state(jax.random.PRNGKey(0), ae.AEConfig(arch="conv", latent_dim=16), train_x[:1])
  res = training.fit(conv, ae.train_step, ae.eval_step, train_x, test_x,
                  key=jax.random.PRNGKey(1), epochs=15, batch_size=64, progress=False)
  assert res.history[-1]["test_mse"] < 0.03, res.history[-1]

  flat_tr, flat_te = digits[0].flat(), digits[1].flat()
  dae = ae.init_state(jax.random.PRNGKey(0), ae.AEConfig(corruption="mask", noise_level=0.3),
                      flat_tr[:1])
  res = training.fit(dae, ae.train_step, ae.eval_step, flat_tr, flat_te,
                  key=jax.random.PRNGKey(1), epochs=40, batch_size=64, progress=False)
  denoised = training.evaluate(res.state, lambda s, b: ae.denoising_eval_step(
      s, b, jax.random.PRNGKey(5)), flat_te)
  assert denoised["mse"] < 0.5 * denoised["noisy_mse"], denoised
  assert denoised["mse"] < 0.025


@pytest.mark.parametrize("kwargs, match", [
    (dict(arch="conv2"), "arch"),
    (dict(loss="l1"), "loss"),
    (dict(corruption="blur", noise_level=0.1), "corruption"),
    (dict(corruption="mask", noise_level=1.5), "noise_level"),
    (dict(corruption="gaussian", noise_level=0.0), "noise_level"),
    (dict(optimizer="rmsprop"), "optimizer: expected one of"),
    (dict(optimizer="sgd", momentum=1.0), "momentum: expected a value in"),
    (dict(kernel_init="he_normal"), "kernel_init: expected one of"),
    (dict(arch="conv", kernel_init="fan_in_uniform"), "kernel_init: names the dense"),
])
def test_bad_config_variants(kwargs, match):
  with pytest.raises(ValueError, match=match):
    ae.AEConfig(**kwargs)


def test_conv_rejects_shapes_it_cannot_take():
  cfg = ae.AEConfig(arch="conv")
  with pytest.raises(ValueError, match="divisible by 4"):
    ae.init_state(jax.random.PRNGKey(0), cfg, jnp.zeros((1, 10, 10, 1)))
  with pytest.raises(ValueError, match="height, width, channels"):
    ae.init_state(jax.random.PRNGKey(0), cfg, jnp.zeros((1, 64)))


def test_fan_in_uniform_init_has_its_bounds_and_variance():
  """kernel_init='fan_in_uniform': every kernel U(-1/sqrt(fan_in), +1/sqrt(fan_in))
  (variance 1/(3 fan_in)); the default keeps Glorot's wider bound."""
  x = jnp.zeros((1, 28, 28, 1))
  cfg = ae.AEConfig(hidden=(500, 500, 2000), latent_dim=10, kernel_init="fan_in_uniform",
                    loss="mse", output="linear", linear_code=True)
  st = ae.init_state(jax.random.PRNGKey(3), cfg, x)
  kernels = [v for path, v in jax.tree_util.tree_leaves_with_path(st.params)
             if "kernel" in jax.tree_util.keystr(path)]
  assert len(kernels) == 8
  for w in kernels:
    w = np.asarray(w, np.float64)
    fan_in, fan_out = w.shape
    limit = 1 / np.sqrt(fan_in)
    assert np.abs(w).max() <= limit and np.abs(w).max() > 0.95 * limit
    np.testing.assert_allclose(w.var(), limit ** 2 / 3, rtol=0.1)
  glorot = ae.init_state(jax.random.PRNGKey(3), ae.AEConfig(), x)
  w = np.asarray(glorot.params["encoder"]["dense_0"]["kernel"])
  assert np.abs(w).max() > 1.5 / np.sqrt(784)  # sqrt(6 / (784 + 128)) = 2.3 / sqrt(784)


def test_sgd_momentum_steps_match_the_update_rule(digits):
  """optimizer='sgd': v <- momentum v + g; params <- params - lr v, with g the
  gradient of the batch loss computed independently of the step."""
  x = digits[0].x[:32].reshape(32, -1)
  lr, mom = 0.5, 0.9
  cfg = ae.AEConfig(hidden=(16,), latent_dim=4, optimizer="sgd", learning_rate=lr,
                    momentum=mom, loss="mse", output="linear")
  st = ae.init_state(jax.random.PRNGKey(0), cfg, x)

  def grad(params):
    def loss(p):
      out, _ = st.model.apply({"params": p}, x)
      return jnp.mean((out.reshape(32, -1) - x) ** 2)
    return jax.tree.map(lambda g: np.asarray(g, np.float64), jax.grad(loss)(params))

  p0 = jax.tree.map(lambda a: np.asarray(a, np.float64), st.params)
  g0 = grad(st.params)
  st1, _ = ae.train_step(st, x, jax.random.PRNGKey(1))
  v1 = g0
  p1 = jax.tree.map(lambda p, v: p - lr * v, p0, v1)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               st1.params, p1)
  g1 = grad(st1.params)
  st2, _ = ae.train_step(st1, x, jax.random.PRNGKey(1))
  v2 = jax.tree.map(lambda v, g: mom * v + g, v1, g1)
  p2 = jax.tree.map(lambda p, v: p - lr * v, jax.tree.map(np.asarray, st1.params), v2)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               st2.params, p2)


def test_init_is_one_program_shared_by_equal_models():
  """init_state's parameters are the module's own `init` run op by op, and
  a second model of the same architecture and input shape reuses the
  compiled initialiser (no new entry in its cache)."""
  from unsupjax import nn

  x = jnp.zeros((2, 8, 8, 1))
  cfg = ae.AEConfig(hidden=(24, 12), latent_dim=3)  # an architecture no other test uses
  programs = nn.init_variables._cache_size()
  s1 = ae.init_state(jax.random.key(5), cfg, x)
  assert nn.init_variables._cache_size() == programs + 1  # init_state went through it
  model = ae.make_model(cfg, x.shape[1:])
  with jax.disable_jit():
    want = model.init(jax.random.key(5), x[:1])["params"]
  chex.assert_trees_all_close(s1.params, want, rtol=1e-6, atol=1e-7)
  programs = nn.init_variables._cache_size()
  s2 = nn.init_variables(ae.make_model(ae.AEConfig(hidden=(24, 12), latent_dim=3),
                                       x.shape[1:]), jax.random.key(6), x[:1])["params"]
  assert nn.init_variables._cache_size() == programs
  assert not np.allclose(s2["encoder"]["dense_0"]["kernel"],
                         s1.params["encoder"]["dense_0"]["kernel"])  # its own key
