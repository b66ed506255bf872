"""The generic loop: exact resume, NaN stop, streaming, padded evaluation."""

import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct

from unsupjax.models import autoencoder as ae
from unsupjax import training
from unsupjax.training import compile as compile_lib


def _fit(digits, tmp, epochs, resume=False, **kw):
  train_x, test_x = digits[0].x, digits[1].x
  st = ae.init_state(jax.random.PRNGKey(0), ae.AEConfig(), train_x[:1])
  return training.fit(st, ae.train_step, ae.eval_step, train_x, test_x,
                   key=jax.random.PRNGKey(5), epochs=epochs, batch_size=100,
                   workdir=tmp, resume=resume, progress=False, **kw)


def test_resume_is_bit_exact(digits, tmp_path):
  straight = _fit(digits, tmp_path / "a", 4)
  _fit(digits, tmp_path / "b", 2)
  resumed = _fit(digits, tmp_path / "b", 4, resume=True)
  assert resumed.start_epoch == 2
  for a, b in zip(jax.tree.leaves(straight.state), jax.tree.leaves(resumed.state)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  lines = [json.loads(l) for l in open(tmp_path / "b" / "metrics.jsonl")]
  assert [r["epoch"] for r in lines] == [1, 2, 3, 4]
  want = [json.loads(l) for l in open(tmp_path / "a" / "metrics.jsonl")]
  assert [r["train_loss"] for r in lines] == [r["train_loss"] for r in want]


def test_restore_state_reads_latest(digits, tmp_path):
  result = _fit(digits, tmp_path, 3, checkpoint_every=2)
  like = ae.init_state(jax.random.PRNGKey(9), ae.AEConfig(), digits[0].x[:1])
  restored = training.restore_state(tmp_path, like)
  chex.assert_trees_all_equal(restored.params, result.state.params)
  at2 = training.restore_state(tmp_path, like, epoch=2)
  assert int(at2.step) == 2 * (1437 // 100)


def test_reading_leaves_a_checkpoint_being_written_alone(digits, tmp_path):
  # A run writes each checkpoint into '<epoch>.orbax-checkpoint-tmp-*' and
  # renames it when complete. Reading the directory (unsupjax evaluate, a
  # --pretrained run) while that happens must not delete the write in flight,
  # nor list it; only the training loop's own open cleans leftovers up.
  result = _fit(digits, tmp_path, 2)
  ckpts = tmp_path / training.CHECKPOINT_DIR
  in_flight = ckpts / "3.orbax-checkpoint-tmp-1234567890"
  in_flight.mkdir()
  (in_flight / "partial").write_bytes(b"\0" * 16)
  like = ae.init_state(jax.random.PRNGKey(9), ae.AEConfig(), digits[0].x[:1])
  assert training.checkpoint_epochs(tmp_path) == [1, 2]
  restored = training.restore_state(tmp_path, like)
  chex.assert_trees_all_equal(restored.params, result.state.params)
  assert (in_flight / "partial").exists()
  ckpt = training.Checkpointer(ckpts)  # as fit opens it: its first save cleans up
  ckpt.save(3, result.state, {})
  ckpt.close()
  assert not in_flight.exists()
  assert training.checkpoint_epochs(tmp_path) == [1, 2, 3]
  # Reading a work directory that has no checkpoints creates nothing there.
  with pytest.raises(training.CheckpointError, match="no checkpoint"):
    training.restore_state(tmp_path / "missing", like)
  assert not (tmp_path / "missing").exists()


def test_epoch_modes_agree(digits):
  a = _fit(digits, None, 2, mode="scan")
  for mode in ("loop", "stream"):
    b = _fit(digits, None, 2, mode=mode)
    chex.assert_trees_all_close(a.state.params, b.state.params, rtol=1e-4, atol=1e-6)
    assert a.history[-1]["train_loss"] == pytest.approx(b.history[-1]["train_loss"], rel=1e-4)


def test_mode_choice():
  x = np.zeros((4, 8, 8, 1), np.float32)
  dense = ae.init_state(jax.random.PRNGKey(0), ae.AEConfig(), x)
  conv = ae.init_state(jax.random.PRNGKey(0), ae.AEConfig(arch="conv"), x)
  key = jax.random.PRNGKey(1)
  assert training.choose_mode(ae.train_step, dense, x, key, x.nbytes) == "scan"
  # CPU: convolutions stay out of loop bodies (jax-ml/jax#12868).
  assert training.choose_mode(ae.train_step, conv, x, key, x.nbytes) == "loop"


def _nan_step(state, batch, key):
  """The AE step, with the loss turning NaN from the 12th step on."""
  state, metrics = ae.train_step(state, batch, key)
  loss = jnp.where(state.step >= 12, jnp.nan, metrics["loss"])
  params = jax.tree.map(lambda p: p * jnp.where(state.step >= 12, jnp.nan, 1.0),
                        state.params)
  return state.replace(params=params), {"loss": loss}


def test_nan_stops_and_keeps_last_good_checkpoint(digits, tmp_path):
  train_x = digits[0].x
  st = ae.init_state(jax.random.PRNGKey(0), ae.AEConfig(), train_x[:1])
  with pytest.raises(training.TrainingDiverged, match="epoch 3.*epoch 2") as info:
    # 1437 // 100 = 14 steps per epoch... use 5 steps per epoch instead.
    training.fit(st, _nan_step, None, train_x[:500], key=jax.random.PRNGKey(1),
              epochs=6, batch_size=100, workdir=tmp_path, progress=False)
  assert info.value.epoch == 3 and info.value.last_checkpoint == 2
  restored = training.restore_state(tmp_path, st)
  assert int(restored.step) == 10
  assert all(np.isfinite(np.asarray(l)).all() for l in jax.tree.leaves(restored.params))
  assert len(open(tmp_path / "metrics.jsonl").readlines()) == 2


def test_evaluate_pads_without_bias():
  def eval_step(state, batch):
    return {"mean": batch.reshape(batch.shape[0], -1).mean(1)}
  x = np.arange(7 * 3, dtype=np.float32).reshape(7, 3)
  got = training.evaluate(None, eval_step, x, batch_size=3)
  assert got["mean"] == pytest.approx(x.mean())


def test_fit_rejects_bad_arguments(digits):
  st = ae.init_state(jax.random.PRNGKey(0), ae.AEConfig(), digits[0].x[:1])
  with pytest.raises(ValueError, match="batch_size"):
    training.fit(st, ae.train_step, None, digits[0].x[:10], key=jax.random.PRNGKey(0),
              epochs=1, batch_size=11, progress=False)
  with pytest.raises(ValueError, match="epochs"):
    training.fit(st, ae.train_step, None, digits[0].x[:10], key=jax.random.PRNGKey(0),
              epochs=0, batch_size=5, progress=False)


def test_resume_drops_records_past_the_checkpoint(digits, tmp_path):
  """A killed run may have logged an epoch it never checkpointed, or cut its
  last line short; resume keeps exactly the checkpointed epochs' records."""
  _fit(digits, tmp_path, 2)
  with open(tmp_path / "metrics.jsonl", "a") as f:
    f.write(json.dumps({"epoch": 3, "train_loss": 0.0}) + "\n")
    f.write('{"epoch": 4, "train_lo')
  _fit(digits, tmp_path, 3, resume=True)
  lines = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  assert [r["epoch"] for r in lines] == [1, 2, 3]
  assert lines[-1]["train_loss"] > 0.0


class _Counter(struct.PyTreeNode):
  step: jax.Array
  seen: jax.Array


def test_fit_accepts_a_pytree_of_arrays_in_every_mode():
  """A batch may be a dict of arrays (images plus their row indices): every
  mode hands the step the same rows of each leaf, in the same order."""
  x = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
  data = {"x": x, "index": np.arange(40, dtype=np.int32)}

  def step(state, batch, key):
    del key
    # The rows of x must be the rows the indices name.
    err = jnp.max(jnp.abs(batch["x"] - jnp.asarray(x)[batch["index"]]))
    return state.replace(step=state.step + 1,
                         seen=state.seen + jnp.sum(batch["index"])), {"loss": err}

  def eval_step(state, batch):
    return {"sum": jnp.sum(batch["x"], axis=1)}

  results = {}
  for mode in training.MODES:
    state = _Counter(step=jnp.int32(0), seen=jnp.int32(0))
    res = training.fit(state, step, eval_step, data, data, key=jax.random.PRNGKey(1),
                    epochs=2, batch_size=8, mode=mode, progress=False)
    assert all(r["train_loss"] == 0.0 for r in res.history)
    np.testing.assert_allclose(res.history[-1]["test_sum"], x.sum(1).mean(), rtol=1e-5)
    results[mode] = int(res.state.seen)
  assert len(set(results.values())) == 1 and results["scan"] == 2 * sum(range(40))


def test_fit_copes_with_aliased_state_leaves_and_leaves_the_callers_state_valid():
  """A state whose leaves share one buffer (an EMA set to the parameters
  themselves) trains; the state passed in is still readable afterwards."""
  w = jnp.ones((3,), jnp.float32)
  state = _Counter(step=jnp.int32(0), seen=w)
  aliased = {"a": w, "b": w}

  def step(st, batch, key):
    del key
    st = st.replace(step=st.step + 1, seen=st.seen + jnp.sum(batch))
    return st, {"loss": jnp.sum(batch)}

  class _S(struct.PyTreeNode):
    inner: _Counter
    extra: dict

    @property
    def step(self):
      return self.inner.step

  def outer(st, batch, key):
    inner, m = step(st.inner, batch, key)
    return st.replace(inner=inner), m

  s0 = _S(inner=state, extra=aliased)
  x = np.ones((16, 1), np.float32)
  res = training.fit(s0, outer, None, x, key=jax.random.PRNGKey(0), epochs=2, batch_size=4,
                  progress=False, mode="scan")
  assert int(res.state.step) == 8
  np.testing.assert_array_equal(np.asarray(s0.extra["a"]), np.ones(3))  # not donated away
  np.testing.assert_array_equal(np.asarray(res.state.inner.seen), np.full(3, 33.0))


def test_compile_lowered_uses_the_cpu_options_and_falls_back(monkeypatch, capsys):
  """On CPU the library's programs get CPU_COMPILER_OPTIONS (and compute
  what XLA's defaults compute); UNSUPJAX_CPU_COMPILER_OPTIONS=0 turns them
  off; an option this jaxlib does not know falls back to the defaults once,
  with a message."""
  f = lambda x: jnp.tanh(x) @ x.T + jnp.sum(x**2)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(16, 8)), jnp.float32)
  lowered = jax.jit(f).lower(x)
  assert training.compiler_options() == training.CPU_COMPILER_OPTIONS
  np.testing.assert_allclose(training.compile_lowered(lowered)(x), lowered.compile()(x),
                             rtol=1e-6)
  monkeypatch.setenv("UNSUPJAX_CPU_COMPILER_OPTIONS", "0")
  assert training.compiler_options() is None
  monkeypatch.delenv("UNSUPJAX_CPU_COMPILER_OPTIONS")
  monkeypatch.setenv("UNSUPJAX_CPU_COMPILER_OPTIONS", "1")  # restored after the test
  monkeypatch.setattr(compile_lib, "CPU_COMPILER_OPTIONS", {"xla_no_such_option_here": 1})
  np.testing.assert_allclose(training.compile_lowered(lowered)(x), f(x), rtol=1e-6)
  assert "does not take ['xla_no_such_option_here']" in capsys.readouterr().err
  assert training.compiler_options() is None
  training.compile_lowered(lowered)
  assert capsys.readouterr().err == ""
