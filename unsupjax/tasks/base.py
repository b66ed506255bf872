"""The contract every `unsupjax train MODEL` follows, and the one driver.

A trainable command is a `Task`: its config class (a frozen dataclass that
extends `TrainConfig`; the command line generates its flags from it), the
model module that follows the step contract (`init_state`, `train_step`,
`eval_step`), and a few functions of its own:

  model_config(cfg) -> the model's config      (default: `derive`)
  load(cfg) -> Data                            (default: images of cfg.dataset)
  init(cfg, data, key) -> state                (default: model.init_state)
  fit_kwargs(cfg, data, state, key) -> dict    (actions, progress keys, ...)
  report(run) -> dict                          pictures + final metrics
  evaluate(cfg, state, data, key) -> dict      what `unsupjax evaluate` prints

`train(task, cfg)` does everything else, in this order, so that bad input
fails before anything expensive: check the devices and the work directory,
load the data, build the state, `training.fit`, report, write
`summary.json`. Randomness: every key is `named(run_key(seed), purpose)`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pathlib
import shutil
import time
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any, NamedTuple

import numpy as np

from unsupjax import config as config_lib
from unsupjax import data as data_lib
from unsupjax import parallel, runlog
from unsupjax.config import UsageError, flag_error, option
from unsupjax.rng import check_seed, named, run_key

RUN_FILE = runlog.RUN_FILE
SUMMARY_FILE = runlog.SUMMARY_FILE
# What a run writes into its work directory (what --overwrite replaces).
RUN_OUTPUTS = (runlog.METRICS_FILE, SUMMARY_FILE, runlog.STATUS_FILE, "checkpoints",
               "curves.png", "tensorboard", "eval.json")


def _positive(value: Any, name: str, kind: type = int) -> None:
  ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
        and np.isfinite(value) and (kind is float or float(value).is_integer()))
  if not ok:
    what = "a positive integer" if kind is int else "a positive number"
    raise ValueError(f"{name}: expected {what}, got {value!r}")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """The settings every trained model shares (a task's config extends it)."""
  dataset: str = option("digits", "'digits' (bundled with scikit-learn) or a TFDS image "
                        "dataset: mnist, fashion_mnist, cifar10, ...", group="data and training")
  data_dir: str | None = option(None, "TFDS data directory", scope="local",
                                default_help="TFDS's own, ~/tensorflow_datasets",
                                group="data and training")
  download: bool = option(True, "download a TFDS dataset that is not prepared",
                          scope="local", group="data and training")
  epochs: int | None = option(None, "total epochs", scope="grow",
                              default_help="50; 200 on digits", group="data and training")
  batch_size: int = option(256, "examples per step (over all devices)",
                           group="data and training")
  learning_rate: float = option(1e-3, "learning rate", flag="lr", group="data and training")
  seed: int = option(0, "seed of the run's PRNG key: same seed, same numbers",
                     group="data and training")
  workdir: str | None = option(None, "output directory", scope="local",
                               default_help="runs/MODEL-DATASET", group="run")
  resume: bool = option(False, "continue the run in --workdir from its newest intact "
                        "checkpoint", scope="local", group="run")
  overwrite: bool = option(False, "replace the run already in --workdir", scope="local",
                           group="run")
  checkpoint_every: int = option(10, "epochs between checkpoints (the last epoch is "
                                 "always saved)", scope="local", group="run")
  progress: bool = option(True, "a progress bar on stderr", scope="local", group="run")
  tensorboard: bool = option(False, "also write TensorBoard event files into "
                             "WORKDIR/tensorboard", scope="local", group="run")
  cache_dir: str | None = option(None, "where decoded datasets and compiled programs "
                                 "are cached", scope="local",
                                 default_help="$UNSUPJAX_CACHE_DIR or ~/.cache/unsupjax",
                                 group="run")
  compile_cache: bool = option(True, "use JAX's persistent compilation cache",
                               scope="local", group="run")
  parallel: str | None = option(None, "data parallelism: 'pmap' or 'sharded' (jit over "
                                "a device mesh)", choices=parallel.MODES, scope="local",
                                default_help="sharded when more than one device is visible",
                                group="devices and hosts")
  model_axis: int = option(1, "with --parallel sharded: devices that split large weight "
                           "matrices", scope="local", group="devices and hosts")
  coordinator: str | None = option(None, "multi-host: address of process 0", metavar="HOST:PORT",
                                   scope="local", default_help="$UNSUPJAX_COORDINATOR",
                                   group="devices and hosts")
  num_processes: int | None = option(None, "multi-host: number of processes", scope="local",
                                     default_help="$UNSUPJAX_NUM_PROCESSES",
                                     group="devices and hosts")
  process_id: int | None = option(None, "multi-host: this process's index", scope="local",
                                  default_help="$UNSUPJAX_PROCESS_ID",
                                  group="devices and hosts")

  # Epochs when --epochs is not given: small datasets need more passes.
  EPOCHS = {"digits": 200}
  EPOCHS_OTHER = 50

  def __post_init__(self):
    if self.epochs is not None:
      _positive(self.epochs, "epochs")
    _positive(self.batch_size, "batch_size")
    _positive(self.learning_rate, "learning_rate", float)
    _positive(self.checkpoint_every, "checkpoint_every")
    _positive(self.model_axis, "model_axis")
    check_seed(self.seed)
    if self.resume and self.overwrite:
      raise ValueError("resume: expected --resume or --overwrite, not both")

  def default_epochs(self) -> int:
    return self.EPOCHS.get(self.dataset, self.EPOCHS_OTHER)


def derive(cls: type, cfg: Any, **fixed: Any) -> Any:
  """An instance of config class `cls` whose fields take the values of the
  same-named fields of `cfg` (then `fixed`); ValueError names the field."""
  names = {f.name for f in dataclasses.fields(cls)}
  values = {n: getattr(cfg, n) for n in names if hasattr(cfg, n)}
  values.update(fixed)
  return cls(**values)


class Data(NamedTuple):
  """What a task trains and evaluates on: the datasets as loaded and the
  arrays the model sees (e.g. flattened rows)."""
  train: Any
  test: Any
  train_x: Any
  test_x: Any


def default_load(flat: bool) -> Callable[[Any], Data]:
  def load(cfg) -> Data:
    tr, te = load_splits(cfg)
    as_input = (lambda ds: ds.flat()) if flat else (lambda ds: ds.x)
    return Data(tr, te, as_input(tr), as_input(te))
  return load


@dataclasses.dataclass(frozen=True)
class Task:
  name: str
  help: str
  config: type
  model: ModuleType
  report: Callable[["Run"], dict]
  model_config: Callable[[Any], Any] | None = None
  load: Callable[[Any], Data] = default_load(flat=True)
  init: Callable[[Any, Data, Any], Any] | None = None
  fit_kwargs: Callable[..., dict] | None = None
  evaluate: Callable[..., dict] | None = None
  # A command whose `unsupjax train` is more than one fit (DEC's two phases,
  # clustering a pretrained run) runs its own flow, built from this
  # module's pieces: train(task, cfg) -> summary.
  train: Callable[["Task", Any], dict] | None = None

  def make_model_config(self, cfg):
    try:
      if self.model_config is not None:
        return self.model_config(cfg)
      return derive(self.model.CONFIG, cfg)
    except ValueError as e:
      raise flag_error(self.config, e) from None

  def build(self, cfg, data: Data, key):
    """The initial state (from `named(key, "init")`)."""
    if self.init is not None:
      return self.init(cfg, data, named(key, "init"))
    return self.model.init_state(named(key, "init"), self.make_model_config(cfg),
                                 data.train_x[:1])


@dataclasses.dataclass(frozen=True)
class Command:
  """A command that is not `train`: its config (the flags) and what it does."""
  name: str
  help: str
  config: type
  run: Callable[[Any], Any]


@dataclasses.dataclass
class Run:
  """One training run in progress: what `report` gets."""
  task: Task
  cfg: Any
  data: Data
  key: Any
  workdir: pathlib.Path
  state: Any = None
  result: Any = None


def load_splits(cfg) -> tuple[data_lib.Dataset, data_lib.Dataset]:
  """(train, test) of cfg.dataset, errors naming the flag."""
  try:
    kw = dict(data_dir=cfg.data_dir, download=cfg.download, cache_dir=cfg.cache_dir)
    tr = data_lib.load(cfg.dataset, "train", **kw)
    te = data_lib.load(cfg.dataset, "test", **kw)
  except data_lib.DatasetError as e:
    msg = str(e)
    raise UsageError("--" + msg if msg.startswith(("dataset:", "split:"))
                     else f"--dataset: {msg}") from None
  return tr, te


def check_data(task: Task, cfg, data: Data) -> None:
  n = len(data.train_x) if not isinstance(data.train_x, dict) else len(
      next(iter(data.train_x.values())))
  if cfg.batch_size > n:
    raise UsageError(f"--batch-size: expected at most {n} (training examples in "
                     f"{cfg.dataset}), got {cfg.batch_size}")
  shape = getattr(data.train, "image_shape", None)
  model_cfg = task.make_model_config(cfg)
  check = getattr(model_cfg, "check_input_shape", None)
  if check is not None and shape is not None:
    try:
      check(shape)
    except ValueError as e:
      raise UsageError(f"--dataset: {cfg.dataset} images {shape} do not fit "
                       f"{task.name}: {e}") from None


def init_parallel(cfg) -> str:
  """Joins the other processes (if any), then checks --parallel,
  --model-axis and --batch-size against the devices; returns the mode."""
  import jax
  try:
    parallel.initialize_distributed(cfg.coordinator, cfg.num_processes, cfg.process_id)
  except ValueError as e:
    raise UsageError(f"--coordinator/--num-processes/--process-id: {e}") from None
  mode = parallel.resolve(cfg.parallel)
  if cfg.model_axis > 1 and mode != "sharded":
    raise UsageError(f"--model-axis: expected 1, or a divisor of the device count "
                     f"with --parallel sharded, got {cfg.model_axis}")
  if mode != "none":
    if jax.device_count() % cfg.model_axis:
      raise UsageError(f"--model-axis: expected a divisor of the {jax.device_count()} "
                       f"devices, got {cfg.model_axis}")
    n = jax.device_count() // (cfg.model_axis if mode == "sharded" else 1)
    if cfg.batch_size % n:
      raise UsageError(f"--batch-size: expected a multiple of the {n} devices the "
                       f"batch is split over, got {cfg.batch_size}")
  elif jax.process_count() > 1:
    raise UsageError("--parallel: a multi-process run needs pmap or sharded, got none")
  return mode


def process_rows(x):
  """This process's shard of the training rows (all of x in one process)."""
  import jax
  n = len(x) if not isinstance(x, dict) else len(next(iter(x.values())))
  rows = parallel.process_shard(n)
  return jax.tree.map(lambda a: a[rows], x)


def resolve(task: Task, cfg):
  """cfg with its defaults filled in (epochs, workdir, cache_dir)."""
  changes = {}
  if cfg.epochs is None:
    changes["epochs"] = cfg.default_epochs()
  if cfg.workdir is None:
    changes["workdir"] = os.path.join("runs", f"{task.name}-{cfg.dataset}")
  if cfg.cache_dir is None:
    changes["cache_dir"] = str(data_lib.default_cache_dir())
  return dataclasses.replace(cfg, **changes) if changes else cfg


def read_record(workdir: pathlib.Path, flag: str = "--workdir") -> dict | None:
  """The run record in `workdir` (None when there is none)."""
  path = workdir / RUN_FILE
  if not path.exists():
    return None
  try:
    record = json.loads(path.read_text())
  except (ValueError, OSError):
    record = None
  if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
    raise UsageError(f"{flag}: {path} is not a valid run record (empty or damaged); "
                     "choose another directory")
  return record


def check_writable(workdir: pathlib.Path) -> None:
  """UsageError naming --workdir unless `workdir` can be written, checked
  without creating it (a refused command leaves no empty folder behind)."""
  if workdir.exists():
    if not workdir.is_dir():
      raise UsageError(f"--workdir: expected a directory, got the file {str(workdir)!r}")
    writable_workdir(workdir)
    return
  parent = next(p for p in workdir.absolute().parents if p.exists())
  if not (parent.is_dir() and os.access(parent, os.W_OK | os.X_OK)):
    raise UsageError(f"--workdir: expected a writable directory, got {str(workdir)!r} "
                     f"({parent} is not writable)")


def writable_workdir(path: str | os.PathLike) -> pathlib.Path:
  workdir = pathlib.Path(path)
  try:
    workdir.mkdir(parents=True, exist_ok=True)
    probe = workdir / f".write-test-{os.getpid()}"
    probe.write_text("")
    probe.unlink()
  except OSError as e:
    raise UsageError(f"--workdir: expected a writable directory, got "
                     f"{str(workdir)!r} ({e.strerror or e})") from None
  return workdir


def check_workdir(task: Task, cfg) -> tuple[pathlib.Path, dict | None]:
  """Decides what may happen in --workdir, before anything is written.

  A directory with a run of this model needs --resume (continue it) or
  --overwrite (replace it); one with files a run writes but no run record
  of this model is never touched. With --resume, every setting that shapes
  the run must match the record, and --epochs may not go below the newest
  checkpoint.
  """
  from unsupjax.training import checkpoint_epochs
  workdir = pathlib.Path(cfg.workdir)
  previous = read_record(workdir) if workdir.is_dir() else None
  ours = [n for n in RUN_OUTPUTS if (workdir / n).exists()]
  if previous is None:
    if cfg.resume:
      raise UsageError(f"--resume: no run to resume in {workdir}")
    if ours:
      raise UsageError(f"--workdir: {workdir} holds {', '.join(ours)} but no {RUN_FILE}; "
                       "it is not a run this command can replace: choose another --workdir")
    return workdir, None
  if previous.get("model") != task.name:
    raise UsageError(f"--workdir: {workdir} holds a run of model {previous.get('model')!r}, "
                     f"not {task.name!r}; choose another --workdir")
  if not (cfg.resume or cfg.overwrite):
    done = checkpoint_epochs(workdir) if (workdir / "checkpoints").exists() else []
    what = f"a run of {task.name}" + (f" (checkpoint of epoch {done[-1]})" if done else "")
    raise UsageError(f"--workdir: {workdir} already holds {what}; pass --resume to "
                     "continue it, --overwrite to replace it, or choose another --workdir")
  if cfg.resume:
    old, new = previous["config"], config_lib.to_record(cfg)
    for name, a, b, scope in config_lib.differences(old, new, type(cfg)):
      if scope == "run" and name in old:
        raise UsageError(f"--resume: the run in {workdir} used {name}={a!r}, got {b!r}")
    done = checkpoint_epochs(workdir) if (workdir / "checkpoints").exists() else []
    if not done:
      raise UsageError(f"--resume: {workdir} holds no checkpoint to resume from")
    if cfg.epochs < done[-1]:
      raise UsageError(f"--epochs: the run in {workdir} is at epoch {done[-1]}; expected "
                       f"at least that, got {cfg.epochs}")
  return workdir, previous


def prepare_workdir(task: Task, cfg, workdir: pathlib.Path, previous: dict | None) -> None:
  """Clears a replaced run (--overwrite) and writes run.json, on process 0;
  the other processes wait until it has."""
  import jax
  writable_workdir(workdir)
  parallel.sync_processes("unsupjax:workdir-checked")
  if jax.process_index() == 0:
    if previous is not None and cfg.overwrite:
      # What the replaced run wrote: the named outputs, its pictures,
      # bundles and evaluations (a user's other files stay).
      drawn = [p.name for pattern in ("*.png", "*.npz", "eval*.json")
               for p in workdir.glob(pattern)]
      clear(workdir, (*RUN_OUTPUTS, *drawn))
    write_json(workdir / RUN_FILE, run_record(task, cfg, previous if cfg.resume else None))
  parallel.sync_processes("unsupjax:workdir-ready")


# Commands that are not `train` (k-means, anomaly): one output set, no resume.


def _owner(workdir: pathlib.Path) -> str | None:
  """The model of the run in `workdir`: run.json's, or (a directory an
  earlier version wrote) summary.json's "command"."""
  record = read_record(workdir)
  if record is not None:
    return record.get("model")
  try:
    summary = json.loads((workdir / SUMMARY_FILE).read_text())
  except (OSError, ValueError):
    return None
  return summary.get("command") if isinstance(summary, dict) else None


def claim_workdir(name: str, path: str, overwrite: bool,
                  outputs: Sequence[str]) -> pathlib.Path:
  """Checks, before anything is read or written, that command `name` may
  write into --workdir `path`: a directory holding a run record or any of
  `outputs` needs --overwrite, and must hold a run of `name` (a run of
  anything else, or files of unknown origin, are never touched). A
  directory that does not exist yet is only created by `start_run`."""
  workdir = pathlib.Path(path)
  if workdir.exists() and not workdir.is_dir():
    raise UsageError(f"--workdir: expected a directory, got the file {str(workdir)!r}")
  found = [n for n in (RUN_FILE, *outputs) if (workdir / n).exists()]
  if found:
    owner = _owner(workdir)
    if owner != name:
      what = f"a run of {owner!r}" if owner else f"{', '.join(found)} of no known run"
      raise UsageError(f"--workdir: {workdir} holds {what}, not of {name!r}; choose "
                       "another --workdir")
    if not overwrite:
      raise UsageError(f"--workdir: {workdir} already holds a {name} run; pass "
                       "--overwrite to replace it, or choose another --workdir")
  check_writable(workdir)
  return workdir


def clear(workdir: pathlib.Path, names: Sequence[str]) -> None:
  """Removes the files and folders `names` of a replaced run from `workdir`
  (process 0 only; callers have checked that they may)."""
  import jax
  if jax.process_index() != 0:
    return
  for name in names:
    p = workdir / name
    if p.is_dir():
      shutil.rmtree(p)
    elif p.exists():
      p.unlink()


def start_run(name: str, cfg: Any, workdir: pathlib.Path, outputs: Sequence[str]) -> None:
  """Creates `workdir`, removes the replaced run's `outputs` (after
  `claim_workdir` allowed it) and writes run.json: {"model": name,
  "config": cfg's record, ...}."""
  writable_workdir(workdir)
  clear(workdir, outputs)
  from unsupjax import __version__
  write_json(workdir / RUN_FILE,
                  {"model": name, "config": config_lib.to_record(cfg), "created": time.time(),
                   "version": __version__})


def run_record(task: Task, cfg, previous: dict | None = None) -> dict:
  from unsupjax import __version__
  return {"model": task.name, "config": config_lib.to_record(cfg),
          "created": (previous or {}).get("created", time.time()),
          "version": __version__}


def write_json(path: pathlib.Path, obj: Any) -> None:
  """`obj` as JSON at `path`, atomically (a reader sees the old or the new)."""
  tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
  tmp.write_text(json.dumps(runlog._json_safe(obj), indent=2, sort_keys=True))
  os.replace(tmp, path)


def device_description() -> str:
  import jax
  d = jax.devices()[0]
  return f"{jax.device_count()} x {d.platform}:{d.device_kind}"


def fit_summary(task: Task, cfg, result, t_start: float) -> dict[str, Any]:
  epoch_times = [r["epoch_seconds"] for r in result.history if "epoch_seconds" in r]
  last = result.history[-1] if result.history else {}
  return {
      "model": task.name, "dataset": cfg.dataset, "config": config_lib.to_record(cfg),
      "epochs": result.last_epoch, "steps": int(result.state.step),
      **{k: v for k, v in last.items() if k.startswith("train_")},
      "compile_seconds": result.compile_seconds,
      "median_epoch_seconds": float(np.median(epoch_times)) if epoch_times else None,
      "wall_seconds": time.perf_counter() - t_start,
      "resumed_from_epoch": result.start_epoch,
      "device": device_description(),
  }


def headline_text(summary: dict, keys: list[str]) -> str:
  parts = [f"{k} {summary[k]:.5g}" for k in keys
           if isinstance(summary.get(k), (int, float)) and not isinstance(summary.get(k), bool)]
  return ", ".join(parts)


@contextlib.contextmanager
def watched(monitor):
  """Marks the run 'interrupted' or 'diverged' in status.json when the
  block raises; a checkpoint that cannot be resumed is a usage error."""
  from unsupjax import training
  try:
    yield
  except training.CheckpointError as e:
    monitor.stop("interrupted", str(e))
    raise UsageError(f"--resume: {e}") from None
  except training.TrainingDiverged as e:
    monitor.stop("diverged", str(e), epoch=e.epoch, last_checkpoint=e.last_checkpoint)
    raise
  except BaseException as e:
    monitor.stop("interrupted", type(e).__name__)
    raise


def train(task: Task, cfg) -> dict:
  """Runs one `unsupjax train` command to the end; returns its summary."""
  if task.train is not None:
    return task.train(task, cfg)
  from unsupjax import training
  from unsupjax.tasks import watch

  t_start = time.perf_counter()
  cfg = resolve(task, cfg)
  mode = init_parallel(cfg)
  task.make_model_config(cfg)                  # checks the model's settings
  workdir, previous = check_workdir(task, cfg)
  check_writable(workdir)
  data = task.load(cfg)
  check_data(task, cfg, data)
  prepare_workdir(task, cfg, workdir, previous)
  if cfg.compile_cache:
    training.enable_compilation_cache(pathlib.Path(cfg.cache_dir) / "jax")
  key = run_key(cfg.seed)
  state = task.build(cfg, data, key)
  extra = task.fit_kwargs(cfg, data, state, key) if task.fit_kwargs else {}
  monitor = watch.Monitor(workdir, task.name, cfg, enabled=True)
  observers = [monitor.observe, *extra.pop("observers", ())]
  progress_keys = extra.pop("progress_keys", runlog.progress_keys(task.name))
  with watched(monitor):
    result = training.fit(
        state, task.model.train_step, getattr(task.model, "eval_step", None),
        process_rows(data.train_x), data.test_x, key=key, epochs=cfg.epochs,
        batch_size=cfg.batch_size, workdir=workdir, checkpoint_every=cfg.checkpoint_every,
        resume=cfg.resume, progress=cfg.progress, desc=f"{task.name} {cfg.dataset}",
        observers=observers, progress_keys=progress_keys,
        parallel=mode, model_axis=cfg.model_axis, **extra)
  run = Run(task, cfg, data, key, workdir, result.state, result)
  summary = fit_summary(task, cfg, result, t_start)
  summary.update(task.report(run))
  summary["wall_seconds"] = time.perf_counter() - t_start
  parallel.lead_process_only(write_json)(workdir / SUMMARY_FILE, summary)
  monitor.finish(summary)
  keys = runlog.headline(task.name)
  epochs = f"{result.last_epoch} epoch" + ("" if result.last_epoch == 1 else "s")
  print(f"{task.name} on {cfg.dataset}: {headline_text(summary, keys) or 'done'} after "
        f"{epochs} ({summary['wall_seconds']:.1f} s; compile "
        f"{result.compile_seconds:.2f} s) -> {workdir} (curves: {workdir / 'curves.png'})")
  return summary


def restore(task: Task, cfg, data: Data, workdir: pathlib.Path, epoch: int | None):
  """(state, epoch) of `workdir`'s newest intact checkpoint (or exactly
  `epoch`'s); a damaged one is reported on stderr and skipped."""
  import sys

  from unsupjax import training
  like = task.build(cfg, data, run_key(cfg.seed))
  ckpt = training.Checkpointer(workdir / training.CHECKPOINT_DIR, read_only=True)
  try:
    state, _, restored = ckpt.restore_latest(
        like, epoch=epoch, warn=lambda m: print(f"unsupjax: warning: {m}", file=sys.stderr))
  except training.CheckpointError as e:
    raise UsageError(f"workdir: {e}") from None
  finally:
    ckpt.close()
  return state, restored


def evaluate_on_test(model: ModuleType, state, data: Data) -> dict:
  """The model module's eval_step averaged over the test split, as test_* keys."""
  from unsupjax import training
  values = training.evaluate(state, model.eval_step, data.test_x)
  return {f"test_{k}": v for k, v in values.items()}


# --------------------------------------------------------------------------
# Files of the commands that read a model and write one output file.


def check_output(out: str, src: str, overwrite: bool) -> pathlib.Path:
  """OUT as a path, if it may be written: never a directory, and an
  existing file (above all IN itself) only with --overwrite."""
  path = pathlib.Path(out)
  if path.is_dir():
    raise UsageError(f"OUT: expected a file path, got the directory {out!r}")
  if not path.parent.is_dir():
    raise UsageError(f"OUT: the directory {str(path.parent)!r} does not exist")
  if os.path.lexists(path) and not overwrite:
    same = os.path.exists(src) and os.path.exists(path) and os.path.samefile(src, path)
    what = "is the input file IN" if same else "exists"
    raise UsageError(f"OUT: {out!r} {what}; choose another path, or pass --overwrite to "
                     "replace it")
  return path


def load_bundle(workdir: str, name: str, load: Callable, expected: str,
                format_error: type[Exception]):
  """load(WORKDIR/name), a trained model's bundle (the codecs'); UsageError
  naming --model (and `expected`, what --model should be) when it is
  missing or `load` raises `format_error`."""
  path = pathlib.Path(workdir) / name
  if not path.is_file():
    raise UsageError(f"--model: expected {expected} (holding {name}), got {workdir!r}")
  try:
    return load(path)
  except format_error as e:
    raise UsageError(f"--model: {e}") from None
