"""pmap and sharded-jit training on 8 fake CPU devices equal one device.

One subprocess sets XLA_FLAGS=--xla_force_host_platform_device_count=8
before importing JAX (the rest of the suite keeps one device), runs every
check and prints `ok NAME` per passed check; the tests below each look for
their line, so a failure names the check and shows its traceback.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(r"""
  import functools, tempfile
  import jax, jax.numpy as jnp, numpy as np
  from unsupjax import data, kmeans, parallel
  from unsupjax.models import autoencoder
  from unsupjax.models import gan
  from unsupjax import training
  from unsupjax.models import vae
  from unsupjax import deep_clustering as dc

  assert jax.device_count() == 8, jax.devices()
  D = 8
  x_all = data.load("digits", "train").flat()[:256]
  B = 32

  def close(a, b, what, rtol=2e-5, atol=2e-6):
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
      np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=rtol,
                                 atol=atol, err_msg=what)

  compiles = [0]  # XLA compiles so far in this process
  jax.monitoring.register_event_duration_secs_listener(
      lambda event, secs, **kw: compiles.__setitem__(
          0, compiles[0] + (event == "/jax/core/compile/backend_compile_duration")))

  def run_three(step, state, batches, key):
    one = jax.jit(step)
    s1, m1 = state, []
    for b in batches:
      s1, m = one(s1, b, key); m1.append(m)
    ps = parallel.pmap_step(step, donate=False)
    sp = parallel.replicate(state)
    mp = []
    for i, b in enumerate(batches):
      if i == 1:
        compiled = compiles[0]
      sp, m = ps(sp, parallel.split_batch(b, D), key); mp.append(parallel.unreplicate(m))
    # replicate's layout is the one pmap gives its outputs: no recompile
    # after the first call.
    assert compiles[0] == compiled, compiles[0] - compiled
    sp = parallel.unreplicate(sp)
    # One device's own copy: no program over every device per leaf (over
    # several CPU processes, those deadlocked when sent back to back).
    first = {jax.local_devices()[0]}
    assert all(a.devices() == first for a in jax.tree.leaves((sp, mp))), \
        {str(a.devices()) for a in jax.tree.leaves((sp, mp))}
    mesh = parallel.make_mesh()
    sh = parallel.state_sharding(state, mesh)
    ss = parallel.put_state(state, sh)
    sstep = parallel.sharded_step(step, mesh, sh, donate=False)
    ms = []
    for b in batches:
      ss, m = sstep(ss, parallel.shard_batch(b, mesh), key); ms.append(m)
    return (s1, m1), (sp, mp), (ss, ms)

  def check_step(name, step, state, batches, key, params=lambda s: s.params, **tol):
    (s1, m1), (sp, mp), (ss, ms) = run_three(step, state, batches, key)
    close(params(s1), params(sp), name + " pmap params", **tol)
    close(m1, mp, name + " pmap metrics", **tol)
    close(params(s1), params(ss), name + " sharded params", **tol)
    close(m1, ms, name + " sharded metrics", **tol)
    # The steps moved the parameters (the comparison is not of no-ops).
    assert not np.allclose(np.asarray(jax.tree.leaves(params(s1))[0]),
                           np.asarray(jax.tree.leaves(params(state))[0]))
    print("ok", name, flush=True)

  key = jax.random.key(7)
  batches = [jnp.asarray(x_all[i * B:(i + 1) * B]) for i in range(3)]

  # --- randomness: the draws of 8 devices are the draws of one. The random
  # bits are equal exactly; a normal computed from them in another program
  # may round differently in its last bit.
  assert jax.config.jax_threefry_partitionable
  k = jax.random.key(3)
  normal = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
  mesh = parallel.make_mesh()
  for draw, same in ((jax.random.bits, np.testing.assert_array_equal),
                     (jax.random.normal, normal)):
    want = np.asarray(draw(k, (B, 64)))
    got = jax.pmap(lambda _: parallel.batch_draw(draw, k, (B // D, 64), axis_name="i"),
                   axis_name="i")(jnp.zeros(D))
    same(np.asarray(got).reshape(B, 64), want)
    xs = parallel.shard_batch(np.zeros((B, 64), want.dtype), mesh)
    got = jax.jit(lambda x: x + draw(k, x.shape, x.dtype))(xs)
    same(np.asarray(got), want)
    assert got.sharding.spec == jax.sharding.PartitionSpec("data")
  clean = batches[0]
  noisy1 = autoencoder.corrupt(k, clean, "salt_pepper", 0.3)
  noisyp = jax.pmap(lambda x: autoencoder.corrupt(k, x, "salt_pepper", 0.3, "i"),
                    axis_name="i")(parallel.split_batch(clean, D))
  np.testing.assert_array_equal(np.asarray(noisyp).reshape(clean.shape), np.asarray(noisy1))
  print("ok randomness", flush=True)

  # --- VAE, GAN, codec, k-means. (The AE, denoising so that its step draws
  # noise, is checked through training.fit in every mode below.)
  cfg = autoencoder.AEConfig(hidden=(32,), latent_dim=8, corruption="gaussian",
                             noise_level=0.2, learning_rate=3e-3)
  ae0 = autoencoder.init_state(jax.random.key(0), cfg, batches[0])

  vcfg = vae.VAEConfig(hidden=(32,), latent_dim=4)
  v0 = vae.init_state(jax.random.key(0), vcfg, batches[0])
  # Adam divides each gradient by its own RMS, so a near-zero gradient whose
  # float32 sum runs in another order on 8 devices moves by a visibly
  # different step: 1% of the learning rate (1e-3) is the tolerance, far
  # below what a wrong device mean would give.
  check_step("vae", vae.train_step, v0, batches, key, rtol=1e-4, atol=1e-5)

  # minibatch_std: D's feature is the global batch's standard deviation.
  gcfg = gan.GANConfig(data_shape=(64,), output="sigmoid", latent_dim=8,
                       g_hidden=(32,), d_hidden=(32,), loss="wgan",
                       gp_weight=10.0, n_critic=2, pac=2, g_lr=1e-3, d_lr=1e-3,
                       minibatch_std=True)
  g0 = gan.init_state(jax.random.key(0), gcfg, batches[0])
  # Plain SGD, so the parameters move by the gradients themselves: Adam
  # would turn a near-zero gradient component summed in another order into
  # a step of +-lr, hiding the comparison under the tolerance it needs.
  import optax
  sgd = lambda ts: ts.replace(tx=optax.sgd(1e-2), opt_state=optax.sgd(1e-2).init(ts.params))
  g0 = g0.replace(g=sgd(g0.g), d=sgd(g0.d))
  check_step("gan", gan.train_step, g0, batches, key,
             params=lambda s: (s.g.params, s.d.params, s.g.ema_params))

  from unsupjax.models.codec import model as codec_model
  images = [b.reshape(B, 8, 8, 1) for b in batches]
  ccfg = codec_model.CodecConfig(hidden=(32,), latent_dim=4, mixtures=2)
  c0 = codec_model.init_state(jax.random.key(0), ccfg, images[0])
  check_step("codec", codec_model.train_step, c0, images, key, rtol=1e-4, atol=1e-5)

  km0 = kmeans.minibatch_init(jax.random.key(0), batches[0], 5)
  check_step("kmeans", kmeans.minibatch_train_step, km0, batches, key,
             params=lambda s: (s.centroids, s.counts), rtol=1e-5, atol=1e-4)

  # --- DEC / IDEC: the loop with its target refreshes (and so the step,
  # targets looked up per example), under pmap and sharded.
  acfg = autoencoder.AEConfig(hidden=(32,), latent_dim=4, loss="mse", linear_code=True)
  ae_dec = autoencoder.init_state(jax.random.key(0), acfg, batches[0])
  from unsupjax.models import dec as dec_model
  dcfg = dec_model.DECConfig(n_clusters=5, idec=True, gamma=0.1, optimizer="sgd",
                             learning_rate=0.05, update_interval=3, tol=0.0)
  d0 = dec_model.init_state(jax.random.key(1), dcfg, ae_dec, x_all, n_init=2)
  ref, ref_labels = dc.fit(jax.tree.map(jnp.copy, d0), x_all, key=jax.random.key(2),
                           max_epochs=1.5, batch_size=B, parallel="none", progress=False)
  for mode in ("pmap", "sharded"):
    got, labels = dc.fit(jax.tree.map(jnp.copy, d0), x_all, key=jax.random.key(2),
                         max_epochs=1.5, batch_size=B, parallel=mode, progress=False)
    assert int(got.state.step) == int(ref.state.step) > 0, (int(got.state.step), mode)
    close(ref.state.params, got.state.params, "dec fit " + mode, rtol=1e-4, atol=1e-5)
    close(ref.state.target, got.state.target, "dec targets " + mode, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(labels, ref_labels)
  print("ok dec", flush=True)

  # --- parameters split along a 'model' axis: same numbers.
  mesh2 = parallel.make_mesh(model_axis=2)
  sh2 = parallel.state_sharding(ae0, mesh2, min_size=64)
  assert sh2.params["encoder"]["dense_0"]["kernel"].spec == jax.sharding.PartitionSpec(None, "model"), sh2.params
  s2 = parallel.put_state(ae0, sh2)
  step2 = parallel.sharded_step(autoencoder.train_step, mesh2, sh2, donate=False)
  s1 = ae0
  for b in batches:
    s1, _ = jax.jit(autoencoder.train_step)(s1, b, key)
    s2, _ = step2(s2, parallel.shard_batch(b, mesh2), key)
  close(s1.params, s2.params, "model axis")
  assert s2.params["encoder"]["dense_0"]["kernel"].sharding.spec == jax.sharding.PartitionSpec(None, "model")
  print("ok model_axis", flush=True)

  # --- training.fit: every parallel mode and epoch mode ends where one device does.
  def fit(batch_size=B, **kw):
    # A copy each time: fit donates the state's buffers.
    return training.fit(jax.tree.map(jnp.copy, ae0), autoencoder.train_step,
                     autoencoder.eval_step, x_all,
                     x_all[:64], key=jax.random.key(1), epochs=2, batch_size=batch_size,
                     progress=False, **kw)
  ref = fit(parallel="none")
  assert parallel.resolve(None) == "sharded"
  for kw in [dict(parallel="sharded"),
             dict(parallel="sharded", mode="stream", model_axis=2),
             dict(parallel="pmap")]:
    res = fit(**kw)
    close(ref.state.params, res.state.params, str(kw))
    for a, b in zip(ref.history, res.history):
      np.testing.assert_allclose(a["train_loss"], b["train_loss"], rtol=1e-5)
      np.testing.assert_allclose(a["test_loss"], b["test_loss"], rtol=1e-5)
  # A sharded run checkpoints and resumes to the same parameters.
  with tempfile.TemporaryDirectory() as wd:
    training.fit(jax.tree.map(jnp.copy, ae0), autoencoder.train_step, None, x_all,
              key=jax.random.key(1),
              epochs=1, batch_size=B, progress=False, workdir=wd, parallel="pmap")
    res = fit(parallel="sharded", workdir=wd, resume=True)
    assert res.start_epoch == 1
    close(ref.state.params, res.state.params, "resumed")
  print("ok fit", flush=True)

  # --- clear errors.
  def raises(fn, *words):
    try:
      fn()
    except ValueError as e:
      assert all(w in str(e) for w in words), str(e)
      return
    raise AssertionError(f"no ValueError for {words}")
  raises(lambda: parallel.split_batch(np.zeros((30, 2)), D), "batch", "multiple of the 8 devices", "30")
  raises(lambda: fit(parallel="pmap", batch_size=36), "batch_size", "multiple of the 8 devices", "36")
  raises(lambda: fit(parallel="sharded", batch_size=36), "batch_size", "36")
  raises(lambda: parallel.pmap_step(lambda s, b, k: (s, {})), "axis_name")
  raises(lambda: fit(parallel="pmap", mode="scan"), "mode", "scan")
  raises(lambda: parallel.resolve("dp"), "parallel", "dp")
  print("ok errors", flush=True)

  # --- the command line on the same 8 devices, in this process: each
  # call's exit code, stdout and stderr, for test_eight_devices_equal_one.
  import contextlib, io, json, os, sys
  from unsupjax import cli
  os.chdir(sys.argv[1])
  results = []
  for args in json.loads(sys.argv[2]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
      try:
        code = cli.main(args)
      except SystemExit as e:
        code = e.code
    results.append([code, out.getvalue(), err.getvalue()])
  with open("cli.json", "w") as f:
    json.dump(results, f)
  print("ok cli", flush=True)
""")

CHECKS = ("randomness", "vae", "gan", "codec", "kmeans", "dec", "model_axis", "fit", "errors",
          "cli")


# The command lines SCRIPT runs last, each as `unsupjax ARGS` in its
# directory: deep clustering with pretraining and the IDEC phase both
# data-parallel, then the clear errors (each with what stderr must say).
_IDEC = ["train", "idec", "--pretrain-epochs", "1", "--epochs", "1", "--batch-size", "64",
         "--hidden", "32", "--latent-dim", "4", "--update-interval", "10",
         "--workdir", "idec", "--no-progress", "--parallel", "sharded"]
_BAD = ["train", "ae", "--epochs", "1", "--workdir", "bad", "--no-progress"]
_CLI_ERRORS = [(["--parallel", "pmap", "--batch-size", "36"],
                "--batch-size: expected a multiple of the 8 devices the batch is split over, got 36"),
               (["--parallel", "sharded", "--model-axis", "3"], "--model-axis"),
               (["--coordinator", "127.0.0.1:1"], "--coordinator/--num-processes/--process-id")]


@pytest.fixture(scope="module")
def eight_devices(tmp_path_factory):
  """SCRIPT's process and the directory its command lines ran in."""
  import json

  from conftest import fake_devices_env
  env = fake_devices_env(8)
  env["UNSUPJAX_CACHE_DIR"] = os.environ["UNSUPJAX_TEST_CACHE"]
  wd = tmp_path_factory.mktemp("eight")
  calls = [_IDEC] + [_BAD + args for args, _ in _CLI_ERRORS]
  proc = subprocess.run([sys.executable, "-c", SCRIPT, str(wd), json.dumps(calls)], env=env,
                        cwd=ROOT, capture_output=True, text=True, timeout=900)
  return proc, wd


@pytest.mark.slow
def test_eight_devices_equal_one(eight_devices):
  """Every check of SCRIPT passed, then `--parallel` from the command line:
  a run, and the clear errors. (One test: the 8-device subprocess runs
  once, whichever xdist worker takes it; a failure names the checks. The
  CLI across two processes is in test_multihost.)"""
  import json

  from conftest import digits_labels, hungarian_accuracy

  proc, wd = eight_devices
  done = {line.split()[1] for line in proc.stdout.splitlines() if line.startswith("ok ")}
  missing = [c for c in CHECKS if c not in done]
  assert not missing, (f"checks {missing} did not pass (exit "
                       f"{proc.returncode}):\n{proc.stdout}\n{proc.stderr[-6000:]}")

  (code, out, err), *errors = json.loads((wd / "cli.json").read_text())
  assert code == 0, err[-4000:]
  assert " after 1 epoch (" in out, out  # one epoch: no plural
  summary = json.loads((wd / "idec" / "summary.json").read_text())
  assert summary["device"].startswith("8 x cpu") and summary.get("steps", 0) > 0
  # The reported ACC is the Hungarian matching's (scipy) of the saved labels.
  assert summary["acc"] == pytest.approx(
      hungarian_accuracy(digits_labels(), np.load(wd / "idec" / "labels.npy")), abs=1e-12)
  for (args, message), (code, _, err) in zip(_CLI_ERRORS, errors, strict=True):
    assert code == 2 and message in err, (args, err[-2000:])
  assert not (wd / "bad" / "run.json").exists()


def test_one_process_helpers(monkeypatch):
  """What runs without several devices: mode resolution, shards, flags."""
  from unsupjax import parallel

  assert parallel.resolve(None) == "none"  # this process sees one device
  assert parallel.process_shard(10, 1, 3) == slice(3, 6)
  assert parallel.process_shard(10, 2, 3) == slice(6, 9)  # remainder dropped
  with pytest.raises(ValueError, match="n: 2 examples cannot be split over 3"):
    parallel.process_shard(2, 0, 3)
  for var in (parallel.ENV_COORDINATOR, parallel.ENV_NUM_PROCESSES,
              parallel.ENV_PROCESS_ID, "TPU_WORKER_HOSTNAMES",
              "MEGASCALE_COORDINATOR_ADDRESS"):
    monkeypatch.delenv(var, raising=False)
  assert parallel.initialize_distributed() is False
  assert parallel.initialize_distributed("127.0.0.1:1", 1, 0) is False
  with pytest.raises(ValueError, match="needs all three"):
    parallel.initialize_distributed("127.0.0.1:1", 2, None)
  monkeypatch.setenv(parallel.ENV_NUM_PROCESSES, "2")
  monkeypatch.setenv(parallel.ENV_PROCESS_ID, "2")
  with pytest.raises(ValueError, match="process_id: expected 0..1, got 2"):
    parallel.initialize_distributed("127.0.0.1:1")
  assert parallel.tfds_split("train", 0, 1) == "train"


def test_lead_process_only_writes_on_process_zero(monkeypatch, tmp_path):
  """summary.json and pictures are written by process 0 and skipped by the
  others (which hold the same values)."""
  import jax

  from unsupjax import parallel, plots
  from unsupjax.tasks import base

  write_summary = parallel.lead_process_only(base.write_json)
  img = np.zeros((2, 4, 4, 1), np.float32)
  monkeypatch.setattr(jax, "process_index", lambda: 1)
  write_summary(tmp_path / "summary.json", {"acc": 1.0})
  plots.save_image_grid(tmp_path / "grid.png", [img])
  assert list(tmp_path.iterdir()) == []
  monkeypatch.setattr(jax, "process_index", lambda: 0)
  write_summary(tmp_path / "summary.json", {"acc": 1.0})
  plots.save_image_grid(tmp_path / "grid.png", [img])
  assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.png", "summary.json"]
