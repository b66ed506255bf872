"""Two local CPU processes train like one: `jax.distributed` over 127.0.0.1.

Each process has 2 fake CPU devices and first runs `unsupjax train ae` in
process with `--coordinator/--num-processes/--process-id`, which joins the
coordinator on 127.0.0.1; then, in the same group, it reads its own half of
the data (`parallel.process_shard`) and runs `training.fit`
with parallel='sharded' and then 'pmap' (cross-process collectives over
gloo, JAX's CPU default). Both must end with the parameters of one process
stepping through the same global batches (each process's rows, in process
order), and the orbax checkpoint they write together must restore to them.
"""

from __future__ import annotations

import json
import pathlib
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
EPOCHS, BATCH, N = 2, 32, 256
MODES = ("sharded", "pmap")

# The command line each process runs first, in the run's directory: it
# joins the coordinator through its own flags.
CLI_ARGS = ["train", "ae", "--epochs", "2", "--hidden", "32", "--latent-dim", "8",
            "--batch-size", "64", "--no-progress", "--workdir", "cli"]

WORKER = textwrap.dedent(r"""
  import contextlib, io, os, sys
  pid, port, root = int(sys.argv[1]), sys.argv[2], sys.argv[3]
  coordinator = f"127.0.0.1:{port}"
  from unsupjax import cli
  os.chdir(root)
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    code = cli.main(%(CLI_ARGS)r + ["--coordinator", coordinator, "--num-processes", "2",
                                    "--process-id", str(pid)])
  assert code == 0, code
  with open(f"cli-{pid}.out", "w") as f:
    f.write(out.getvalue())
  import jax, jax.numpy as jnp, numpy as np
  from unsupjax import parallel
  # The same process and group again (the CLI joined it): nothing new.
  assert parallel.initialize_distributed(coordinator, 2, pid)
  try:
    parallel.initialize_distributed(coordinator, 2, 1 - pid)
    raise AssertionError("no ValueError for another process id")
  except ValueError as e:
    assert "already joined a run as process" in str(e), e
  from unsupjax import data
  from unsupjax.models import autoencoder
  from unsupjax import training
  assert jax.process_count() == 2 and jax.device_count() == 4
  for _ in range(2):  # the same name twice: each call is its own barrier
    parallel.sync_processes("test")
  x = data.load("digits", "train").flat()[:%(N)d]
  shard = x[parallel.process_shard(len(x))]
  cfg = autoencoder.AEConfig(hidden=(32,), latent_dim=8, corruption="gaussian",
                             noise_level=0.2, learning_rate=3e-3)
  for mode in %(MODES)r:
    state = autoencoder.init_state(jax.random.key(0), cfg, x[:1])
    res = training.fit(state, autoencoder.train_step, autoencoder.eval_step, shard,
                    x[:64], key=jax.random.key(1), epochs=%(EPOCHS)d,
                    batch_size=%(BATCH)d, progress=False, parallel=mode,
                    workdir=os.path.join(root, mode))
    flat = jax.tree_util.tree_flatten_with_path(res.state.params)[0]
    np.savez(os.path.join(root, f"{mode}-{pid}.npz"),
             **{jax.tree_util.keystr(k): np.asarray(v) for k, v in flat})
    print("done", mode, pid, flush=True)
""") % dict(N=N, MODES=MODES, EPOCHS=EPOCHS, BATCH=BATCH, CLI_ARGS=CLI_ARGS)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _run_together(commands, env, cwd, logdir, timeout=120) -> list[tuple[str, str]]:
  """Runs the commands at once (the processes of one run); their (stdout,
  stderr) once all exited 0. Output goes to files, not pipes: an undrained
  pipe of one process would block it mid-run, and the others with it in
  their next collective. A process still running `timeout` s after the
  start, or 30 s after another one failed, is ended with SIGABRT so that
  faulthandler prints its threads' Python stacks; the failure shows every
  process's output. A hang or a crash fails the test: it is not retried."""
  logdir = pathlib.Path(logdir)
  logdir.mkdir(parents=True, exist_ok=True)
  env = dict(env, PYTHONFAULTHANDLER="1")
  files = [(logdir / f"proc{i}.out", logdir / f"proc{i}.err") for i in range(len(commands))]
  procs = []
  for c, (o, e) in zip(commands, files):
    with open(o, "w") as fo, open(e, "w") as fe:
      procs.append(subprocess.Popen(c, env=env, cwd=cwd, stdout=fo, stderr=fe, text=True))
  start, failed_at, aborted = time.monotonic(), None, False
  while any(p.poll() is None for p in procs):
    now = time.monotonic()
    if failed_at is None and any(p.returncode not in (None, 0) for p in procs):
      failed_at = now
    if now - start > timeout or (failed_at is not None and now - failed_at > 30):
      aborted = True
      for p in procs:
        if p.poll() is None:
          p.send_signal(signal.SIGABRT)
      for p in procs:
        try:
          p.wait(timeout=20)
        except subprocess.TimeoutExpired:
          p.kill()
          p.wait()
      break
    time.sleep(0.2)
  outs = [(o.read_text(), e.read_text()) for o, e in files]
  if any(p.returncode != 0 for p in procs):
    report = "\n".join(f"--- process {i} (exit {p.returncode}) stdout:\n{out[-2000:]}"
                       f"\n--- process {i} stderr:\n{err[-6000:]}"
                       for i, (p, (out, err)) in enumerate(zip(procs, outs)))
    what = (f"still running {timeout} s after the start or 30 s after another "
            "process failed" if aborted else "failed")
    raise AssertionError(f"processes {what}\n{report}")
  return outs


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
  logs = tmp_path_factory.mktemp("multihost")
  from conftest import fake_devices_env
  env = fake_devices_env(2)
  # A cache of its own: both processes prepare the dataset for the CLI run.
  env["UNSUPJAX_CACHE_DIR"] = str(logs / "cache")

  run = logs / "run"
  run.mkdir()
  port = str(_free_port())
  _run_together([[sys.executable, "-c", WORKER, str(i), port, str(run)] for i in range(2)],
                env, ROOT, logs / "logs")
  return run


@pytest.fixture(scope="module")
def one_process():
  """The reference: one device stepping through the global batches."""
  import jax
  from unsupjax import data, parallel
  from unsupjax.models import autoencoder

  x = data.load("digits", "train").flat()[:N]
  shards = [x[parallel.process_shard(N, i, 2)] for i in range(2)]
  cfg = autoencoder.AEConfig(hidden=(32,), latent_dim=8, corruption="gaussian",
                             noise_level=0.2, learning_rate=3e-3)
  state = autoencoder.init_state(jax.random.key(0), cfg, x[:1])
  from unsupjax.rng import named
  data_key, step_key = named(jax.random.key(1), "data"), named(jax.random.key(1), "steps")
  step = jax.jit(autoencoder.train_step)
  for epoch in range(1, EPOCHS + 1):
    for ids in np.asarray(data.batch_indices(data_key, epoch, N // 2, BATCH // 2)):
      state, _ = step(state, np.concatenate([s[ids] for s in shards]), step_key)
  return state


@pytest.mark.slow
def test_two_processes_end_like_one_and_write_once(two_processes, one_process):
  """`unsupjax train ae --coordinator ... --num-processes 2 --process-id I`
  end to end, then `training.fit` in the same two processes: both end with
  the one-device parameters, in every mode; the records are written once
  and the checkpoint restores to them. (One test: the two-process fixture
  runs once, whichever xdist worker takes it.)"""
  import jax
  from unsupjax import training

  # The CLI: the same numbers on both processes (the timings after them
  # differ), and the run's files written once (process 0), describing the
  # 4-device run.
  lines = [(two_processes / f"cli-{i}.out").read_text().strip().splitlines()[-1].split(" (")[0]
           for i in range(2)]
  assert lines[0] == lines[1] and lines[0].startswith("ae on digits: test_mse"), lines
  cli_run = two_processes / "cli"
  summary = json.loads((cli_run / "summary.json").read_text())
  assert summary["device"].startswith("4 x cpu") and summary["steps"] == 2 * (1437 // 64)
  records = (cli_run / "metrics.jsonl").read_text().splitlines()
  assert [json.loads(r)["epoch"] for r in records] == [1, 2]
  assert (cli_run / "reconstructions.png").stat().st_size > 0

  want = {jax.tree_util.keystr(k): np.asarray(v) for k, v in
          jax.tree_util.tree_flatten_with_path(one_process.params)[0]}
  for mode in MODES:
    for pid in range(2):
      got = np.load(two_processes / f"{mode}-{pid}.npz")
      assert set(got.files) == set(want)
      for k, v in want.items():
        np.testing.assert_allclose(got[k], v, rtol=2e-5, atol=2e-6,
                                   err_msg=f"{mode} process {pid} {k}")
    workdir = two_processes / mode
    records = [json.loads(line) for line in
               (workdir / training.METRICS_FILE).read_text().splitlines()]
    assert [r["epoch"] for r in records] == list(range(1, EPOCHS + 1))
    restored = training.restore_state(workdir, one_process)
    assert int(restored.step) == int(one_process.step)
    for a, b in zip(jax.tree.leaves(restored.params),
                    jax.tree.leaves(one_process.params)):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=2e-6,
                                 err_msg=f"{mode} restored")
