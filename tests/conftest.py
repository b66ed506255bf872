"""Shared test setup: CPU only, one device, small data."""

import os
import pathlib
import subprocess
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The suite compiles hundreds of small programs and runs each a few times,
# so compile time is most of its time: LLVM's optimisation passes (level 0)
# and XLA's newer fusion emitters (off: the older emitters generate far less
# code for small fusions) cost more than they save here. Both change how
# fast the machine code is, not what it computes. Set before JAX starts its
# backend, and inherited by every subprocess the tests launch.
for _flag in ("--xla_backend_optimization_level=0", "--xla_cpu_use_fusion_emitters=false"):
  if _flag.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()

import pytest  # noqa: E402


def pytest_configure(config):
  """One cache directory for the whole run, shared by both xdist workers
  (they inherit this environment): decoded datasets, numba's cache, and
  JAX's persistent compilation cache for every program, so that the many tests that compile
  the same program (the same model on the same data, in process) compile
  it once. The controller makes it and removes it at the end."""
  if "UNSUPJAX_TEST_CACHE" in os.environ:
    return
  import tempfile
  path = pathlib.Path(tempfile.mkdtemp(prefix="unsupjax-test-cache-"))
  os.environ["UNSUPJAX_TEST_CACHE"] = str(path)
  os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(path / "jax"))
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
  # UMAP's numba functions too: compiled cold as in CI's fresh environment,
  # and never written into the installed packages.
  os.environ.setdefault("NUMBA_CACHE_DIR", str(path / "numba"))
  config._unsupjax_test_cache = path


def pytest_unconfigure(config):
  path = getattr(config, "_unsupjax_test_cache", None)
  if path is not None:
    import shutil
    shutil.rmtree(path, ignore_errors=True)


REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_TFDS = REPO.parent / "shared" / "data" / "tfds"


def pytest_collection_modifyitems(config, items):
  """Modules that hold a `slow` test run first, each module's tests still
  together and in order: xdist then hands the light modules out last, so
  both workers finish at about the same time instead of one waiting on a
  long multi-process test that came last."""
  heavy = {item.module.__name__ for item in items
           if item.get_closest_marker("slow") and getattr(item, "module", None)}
  items.sort(key=lambda item: getattr(item, "module", None) is None
             or item.module.__name__ not in heavy)


# UNSUPJAX_TEST_PROFILE=1: each test's seconds of JAX tracing, lowering and
# XLA compilation in this process (not in the subprocesses it starts), and a
# table of the costliest at the end, beside pytest's --durations: what the
# suite's minutes go to.
_PROFILE = os.environ.get("UNSUPJAX_TEST_PROFILE") == "1"
_JAX_EVENTS = {"/jax/core/compile/jaxpr_trace_duration": "trace",
               "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower",
               "/jax/core/compile/backend_compile_duration": "compile"}
_jax_seconds = dict.fromkeys(_JAX_EVENTS.values(), 0.0)  # this worker's, so far
_listening = False


def _record_jax_event(event, seconds, **_):
  if event in _JAX_EVENTS:
    _jax_seconds[_JAX_EVENTS[event]] += seconds


def pytest_runtest_setup(item):
  global _listening
  if _PROFILE:
    if not _listening:
      import jax
      jax.monitoring.register_event_duration_secs_listener(_record_jax_event)
      _listening = True
    item._jax_before = dict(_jax_seconds)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
  before = getattr(item, "_jax_before", None)
  if before is not None and call.when == "teardown":  # before the report is made
    item.user_properties.append(
        ("jax_seconds", {k: _jax_seconds[k] - v for k, v in before.items()}))
  yield


def pytest_terminal_summary(terminalreporter):
  if not _PROFILE:
    return
  wall, jax_seconds = {}, {}  # per test: setup + call seconds; its JAX seconds
  for reports in terminalreporter.stats.values():
    for r in reports:
      when = getattr(r, "when", None)
      if when in ("setup", "call"):
        wall[r.nodeid] = wall.get(r.nodeid, 0.0) + r.duration
      elif when == "teardown":
        jax_seconds.update((r.nodeid, v) for k, v in r.user_properties if k == "jax_seconds")
  totals = {k: sum(js.get(k, 0.0) for js in jax_seconds.values()) for k in _jax_seconds}
  tr = terminalreporter
  tr.section("where the time went (UNSUPJAX_TEST_PROFILE)")
  tr.write_line(f"{sum(wall.values()):8.1f} s in tests (setup + call, all workers); "
                "in-process JAX: " + ", ".join(f"{k} {v:.1f} s" for k, v in totals.items()))
  for nodeid in sorted(wall, key=wall.get, reverse=True)[:40]:
    js = jax_seconds.get(nodeid, {})
    tr.write_line(f"{wall[nodeid]:7.1f} s  (trace {js.get('trace', 0):5.1f}, lower "
                  f"{js.get('lower', 0):5.1f}, compile {js.get('compile', 0):5.1f})  {nodeid}")


def shared_mnist_dir() -> pathlib.Path:
  """The prepared MNIST beside the checkout, or skip the test."""
  if not (SHARED_TFDS / "mnist").is_dir():
    message = f"prepared MNIST not found at {SHARED_TFDS} (../shared absent)"
    if os.environ.get("CI") == "true":
      pytest.fail(message + "; CI must run the real-data checks")
    pytest.skip(message)
  return SHARED_TFDS


def digits_labels():
  """The classes of the rows the clustering commands cluster on digits (all
  1,797: train, then test)."""
  import numpy as np
  from unsupjax import data
  return np.concatenate([data.load("digits", s).y for s in ("train", "test")])


def hungarian_accuracy(y, labels) -> float:
  """Clustering accuracy under the best one-to-one map of clusters to
  classes, by scipy's Hungarian algorithm: a reference independent of
  unsupjax.metrics.clustering."""
  import numpy as np
  from scipy.optimize import linear_sum_assignment
  y, labels = np.asarray(y), np.asarray(labels)
  table = np.zeros((labels.max() + 1, y.max() + 1), np.int64)
  np.add.at(table, (labels, y), 1)
  r, c = linear_sum_assignment(-table)
  return table[r, c].sum() / len(y)


@pytest.fixture(scope="session")
def digits():
  from unsupjax import data
  return data.load("digits", "train"), data.load("digits", "test")


@pytest.fixture(autouse=True)
def _isolated_cache(monkeypatch):
  """Decoded datasets and compiled programs go to the run's cache directory
  (`pytest_configure`), never to the user's."""
  monkeypatch.setenv("UNSUPJAX_CACHE_DIR", os.environ["UNSUPJAX_TEST_CACHE"])


def cli_env(tmp_path) -> dict:
  """The environment of a CLI subprocess: CPU, this checkout, the run's
  cache directory (`pytest_configure`)."""
  env = dict(os.environ)
  env["JAX_PLATFORMS"] = "cpu"
  env["UNSUPJAX_CACHE_DIR"] = os.environ["UNSUPJAX_TEST_CACHE"]
  env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
  return env


def fake_devices_env(n: int) -> dict:
  """The environment of a subprocess whose JAX sees n fake CPU devices and
  imports this checkout."""
  env = dict(os.environ)
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                      f" --xla_force_host_platform_device_count={n}").strip()
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in [env.get("PYTHONPATH")] if p])
  return env


def run_cli(args, tmp_path, **kw) -> subprocess.CompletedProcess:
  """`python -m unsupjax ARGS` in tmp_path, as a user runs it."""
  return subprocess.run([sys.executable, "-m", "unsupjax", *args], cwd=tmp_path,
                        env=cli_env(tmp_path), capture_output=True, text=True,
                        timeout=300, **kw)


@pytest.fixture
def cli_main(tmp_path, monkeypatch, capsys):
  """`unsupjax ARGS` in this process, in tmp_path: (exit code, stdout, stderr).

  In-process runs share this interpreter's compiled programs, which is what
  keeps the CLI tests cheap; `run_cli` remains for a process that must die.
  """
  from unsupjax import cli
  monkeypatch.chdir(tmp_path)

  def run(*args):
    try:
      code = cli.main([str(a) for a in args])
    except SystemExit as e:       # argparse: --help, bad flags
      code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err
  return run


def interrupt_checksums_at(monkeypatch, epoch: int):
  """Ctrl-C during a checkpoint write: KeyboardInterrupt after orbax wrote
  `epoch`'s files but before their checksums. Returns a function that puts
  the real checksum writer back."""
  from unsupjax.training import checkpoint
  real = checkpoint.write_checksums

  def interrupted(directory):
    if directory.name == str(epoch):
      raise KeyboardInterrupt
    real(directory)
  monkeypatch.setattr(checkpoint, "write_checksums", interrupted)
  return lambda: monkeypatch.setattr(checkpoint, "write_checksums", real)


@pytest.fixture
def small_toys(monkeypatch):
  """ring8/grid25 GAN runs of 5,120 training and 512 evaluation points."""
  from unsupjax.tasks import gan as gan_task
  monkeypatch.setattr(gan_task, "TOY_TRAIN", 5120)
  monkeypatch.setattr(gan_task, "TOY_EVAL", 512)
