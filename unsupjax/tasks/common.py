"""What every `unsupjax train MODEL` shares: flags, validation, work directory.

Validation happens here, before data reaches a device and before anything
compiles: a bad argument raises `UsageError` with one line naming the flag
and what was expected, which the CLI prints and turns into exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import shutil
import time
from typing import Any

import numpy as np

from unsupjax import data as data_lib
from unsupjax import parallel, train

RUN_FILE = "run.json"
SUMMARY_FILE = "summary.json"


class UsageError(ValueError):
  """A command-line argument is wrong; the message names it."""


@dataclasses.dataclass(frozen=True)
class TrainDefaults:
  """Defaults users rely on, named once (the classic Keras AE recipe)."""
  batch_size: int = 256
  learning_rate: float = 1e-3
  seed: int = 0
  checkpoint_every: int = 10
  # Epochs when --epochs is not given: small datasets need more passes.
  epochs_by_dataset: tuple[tuple[str, int], ...] = (("digits", 200),)
  epochs_other: int = 50

  def epochs_for(self, dataset: str) -> int:
    return dict(self.epochs_by_dataset).get(dataset, self.epochs_other)


DEFAULTS = TrainDefaults()


def add_training_arguments(parser: argparse.ArgumentParser,
                           defaults: TrainDefaults = DEFAULTS,
                           dataset: str = "digits") -> None:
  """The flags every trainable model takes."""
  g = parser.add_argument_group("data and training")
  g.add_argument("--dataset", default=dataset,
                 help="'digits' (bundled with scikit-learn, the default) or a "
                      "TFDS image dataset name: mnist, fashion_mnist, cifar10, ...")
  g.add_argument("--data-dir", default=None,
                 help="TFDS data directory (default: TFDS's own, ~/tensorflow_datasets)")
  g.add_argument("--no-download", action="store_true",
                 help="never try to download a dataset that is not prepared")
  g.add_argument("--epochs", type=int, default=None,
                 help=f"total epochs (default: {defaults.epochs_other}; "
                      f"{defaults.epochs_for('digits')} on digits)")
  g.add_argument("--batch-size", type=int, default=defaults.batch_size)
  g.add_argument("--lr", type=float, default=defaults.learning_rate,
                 help="Adam learning rate")
  g.add_argument("--seed", type=int, default=defaults.seed,
                 help="seed of the run's PRNG key: same seed, same numbers")
  r = parser.add_argument_group("run")
  r.add_argument("--workdir", default=None,
                 help="output directory (default: runs/MODEL-DATASET)")
  r.add_argument("--resume", action="store_true",
                 help="continue from the latest checkpoint in --workdir")
  r.add_argument("--checkpoint-every", type=int, default=defaults.checkpoint_every,
                 help="epochs between checkpoints (the last epoch is always saved)")
  r.add_argument("--no-progress", action="store_true", help="no progress bar")
  r.add_argument("--cache-dir", default=None,
                 help="where decoded datasets and compiled programs are cached "
                      "(default: $UNSUPJAX_CACHE_DIR or ~/.cache/unsupjax)")
  r.add_argument("--no-compile-cache", action="store_true",
                 help="do not use JAX's persistent compilation cache")
  add_parallel_arguments(parser)


def add_parallel_arguments(parser: argparse.ArgumentParser) -> None:
  """--parallel and the multi-host flags (see `unsupjax.parallel`)."""
  from unsupjax import parallel
  p = parser.add_argument_group("devices and hosts")
  p.add_argument("--parallel", choices=parallel.MODES, default=None,
                 help="data parallelism: 'pmap' (replicated state, pmean of "
                      "gradients) or 'sharded' (jit over a device mesh); "
                      "default: sharded when more than one device is visible")
  p.add_argument("--model-axis", type=int, default=1,
                 help="with --parallel sharded: devices that split large "
                      "weight matrices (the mesh's 'model' axis)")
  p.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                 help="multi-host: address of process 0 (or $UNSUPJAX_COORDINATOR; "
                      "cloud TPU VMs need no flag)")
  p.add_argument("--num-processes", type=int, default=None,
                 help="multi-host: number of processes (or $UNSUPJAX_NUM_PROCESSES)")
  p.add_argument("--process-id", type=int, default=None,
                 help="multi-host: this process's index (or $UNSUPJAX_PROCESS_ID)")


def init_parallel(args: argparse.Namespace) -> str:
  """Joins the other processes (if any), then checks --parallel,
  --model-axis and --batch-size against the devices; returns the mode."""
  import jax

  from unsupjax import parallel
  try:
    parallel.initialize_distributed(getattr(args, "coordinator", None),
                                    getattr(args, "num_processes", None),
                                    getattr(args, "process_id", None))
  except ValueError as e:
    raise UsageError(f"--coordinator/--num-processes/--process-id: {e}") from None
  mode = parallel.resolve(getattr(args, "parallel", None))
  model_axis = getattr(args, "model_axis", 1)
  if model_axis < 1 or (model_axis > 1 and mode != "sharded"):
    raise UsageError(f"--model-axis: expected 1, or a divisor of the device "
                     f"count with --parallel sharded, got {model_axis}")
  if mode != "none":
    n = jax.device_count() // (model_axis if mode == "sharded" else 1)
    if model_axis > 1 and jax.device_count() % model_axis:
      raise UsageError(f"--model-axis: expected a divisor of the "
                       f"{jax.device_count()} devices, got {model_axis}")
    if args.batch_size % n:
      raise UsageError(f"--batch-size: expected a multiple of the {n} devices "
                       f"the batch is split over, got {args.batch_size}")
  elif jax.process_count() > 1:
    raise UsageError("--parallel: a multi-process run needs pmap or sharded, got none")
  args.parallel = mode
  return mode


def fit_parallel(args: argparse.Namespace) -> dict[str, Any]:
  """The `train.fit` keywords for the --parallel flags."""
  return {"parallel": getattr(args, "parallel", None),
          "model_axis": getattr(args, "model_axis", 1)}


def process_rows(x):
  """This process's shard of the training rows (all of x in one process)."""
  from unsupjax import parallel
  return x[parallel.process_shard(len(x))]


def check_positive(value, flag: str, kind: type = int) -> None:
  ok = isinstance(value, (int, float)) and value > 0 and (
      kind is float or float(value).is_integer())
  if not ok or (kind is float and not np.isfinite(value)):
    what = "a positive integer" if kind is int else "a positive number"
    raise UsageError(f"{flag}: expected {what}, got {value!r}")


def resolve_common(args: argparse.Namespace, model: str,
                   defaults: TrainDefaults = DEFAULTS) -> None:
  """Checks and completes the shared flags in place (no data is read)."""
  if args.epochs is None:
    args.epochs = defaults.epochs_for(args.dataset)
  check_positive(args.epochs, "--epochs")
  check_positive(args.batch_size, "--batch-size")
  check_positive(args.lr, "--lr", float)
  check_positive(args.checkpoint_every, "--checkpoint-every")
  init_parallel(args)
  if args.workdir is None:
    args.workdir = os.path.join("runs", f"{model}-{args.dataset}")
  if args.cache_dir is None:
    args.cache_dir = str(data_lib.default_cache_dir())


def run_config(args: argparse.Namespace, **model_fields: Any) -> dict[str, Any]:
  """The settings that shape a run: the shared flags plus the model's own."""
  return {"dataset": args.dataset, "epochs": args.epochs,
          "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
          **model_fields}


def load_splits(args: argparse.Namespace, check_shape=None,
                model: str = "") -> tuple[data_lib.Dataset, data_lib.Dataset]:
  """(train, test) of --dataset, with errors turned into UsageError.

  check_shape: the model's `check_input_shape`, which raises ValueError when
  the dataset's images do not fit it.
  """
  try:
    kw = dict(data_dir=args.data_dir, download=not args.no_download,
              cache_dir=args.cache_dir)
    tr = data_lib.load(args.dataset, "train", **kw)
    te = data_lib.load(args.dataset, "test", **kw)
  except data_lib.DatasetError as e:
    msg = str(e)
    raise UsageError(msg if msg.startswith(("dataset:", "split:"))
                     else f"--dataset: {msg}") from None
  if check_shape is not None:
    try:
      check_shape(tr.image_shape)
    except ValueError as e:
      raise UsageError(f"--dataset: {args.dataset} images {tr.image_shape} do not "
                       f"fit {model}: {e}") from None
  if args.batch_size > tr.num_examples:
    raise UsageError(
        f"--batch-size: expected at most {tr.num_examples} (training examples "
        f"in {args.dataset}), got {args.batch_size}")
  return tr, te


def load_test_split(record: dict[str, Any], args: argparse.Namespace) -> data_lib.Dataset:
  """The test split of a saved run's dataset (for `unsupjax evaluate`)."""
  name = record["config"]["dataset"]
  try:
    return data_lib.load(name, "test", data_dir=args.data_dir,
                         download=not args.no_download, cache_dir=args.cache_dir)
  except data_lib.DatasetError as e:
    raise UsageError(f"--data-dir: the run's dataset cannot be loaded: {e}") from None


def writable_workdir(path: str | os.PathLike) -> pathlib.Path:
  """`path` as a directory, created if needed and checked writable (UsageError
  naming --workdir otherwise)."""
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


def prepare_workdir(args: argparse.Namespace, model: str,
                    run_config: dict[str, Any]) -> pathlib.Path:
  """Checks --workdir and records what trains in it.

  A workdir holding another model's run is refused. With --resume, the
  settings that shape the trajectory (everything in run_config but the epoch
  count) must match the saved run. Without --resume, a previous run of the
  same model there is replaced.

  In a multi-process run every process checks the directory as it was, and
  only then does process 0 clear the old run and write the new record; the
  others wait until it has (a process that read the new record would take
  it for a previous run and delete the checkpoints process 0 was writing).
  """
  import jax
  workdir = writable_workdir(args.workdir)
  run_file = workdir / RUN_FILE
  previous = None
  if run_file.exists():
    try:
      previous = json.loads(run_file.read_text())
    except ValueError:
      raise UsageError(f"--workdir: {run_file} is not a valid run record") from None
  elif (workdir / train.CHECKPOINT_DIR).exists():
    raise UsageError(f"--workdir: {workdir} holds checkpoints of an unknown "
                     "run; choose another --workdir")
  if previous is not None and previous.get("model") != model:
    raise UsageError(
        f"--workdir: {workdir} holds a checkpoint of model "
        f"{previous.get('model')!r}, not {model!r}; choose another --workdir")
  if args.resume:
    if previous is None:
      raise UsageError(f"--resume: no run to resume in {workdir}")
    old = {k: v for k, v in previous.get("config", {}).items() if k != "epochs"}
    new = {k: v for k, v in run_config.items() if k != "epochs"}
    for k in sorted(set(old) | set(new)):
      if old.get(k) != new.get(k):
        raise UsageError(
            f"--resume: the run in {workdir} used {k}={old.get(k)!r}, "
            f"got {k}={new.get(k)!r}")
  parallel.sync_processes("unsupjax:workdir-checked")
  if jax.process_index() == 0:
    if previous is not None and not args.resume:
      for name in (train.CHECKPOINT_DIR, train.METRICS_FILE, SUMMARY_FILE):
        p = workdir / name
        if p.is_dir():
          shutil.rmtree(p)
        elif p.exists():
          p.unlink()
    tmp = workdir / (RUN_FILE + ".tmp")
    tmp.write_text(json.dumps(
        {"model": model, "config": run_config, "created": time.time()}, indent=2))
    os.replace(tmp, run_file)
  parallel.sync_processes("unsupjax:workdir-ready")
  return workdir


def setup_compile_cache(args: argparse.Namespace) -> None:
  if not args.no_compile_cache:
    train.enable_compilation_cache(pathlib.Path(args.cache_dir) / "jax")


@parallel.lead_process_only
def write_summary(workdir: pathlib.Path, summary: dict[str, Any]) -> None:
  """summary.json, written atomically, by process 0 of a multi-process run."""
  tmp = workdir / (SUMMARY_FILE + ".tmp")
  tmp.write_text(json.dumps(summary, indent=2, sort_keys=True))
  os.replace(tmp, workdir / SUMMARY_FILE)


def fit_summary(model: str, args: argparse.Namespace, run_config: dict,
                result: train.FitResult, t_start: float) -> dict[str, Any]:
  """The summary keys every trained model reports (with the last epoch's
  train_* metrics, when this call ran an epoch)."""
  epoch_times = [r["epoch_seconds"] for r in result.history]
  last = result.history[-1] if result.history else {}
  return {
      "model": model, "dataset": args.dataset, "config": run_config,
      "epochs": args.epochs, "steps": int(result.state.step),
      **{k: v for k, v in last.items() if k.startswith("train_")},
      "compile_seconds": result.compile_seconds,
      "median_epoch_seconds": float(np.median(epoch_times)) if epoch_times else None,
      "wall_seconds": time.perf_counter() - t_start,
      "resumed_from_epoch": result.start_epoch,
      "device": device_description(),
  }


def device_description() -> str:
  import jax
  d = jax.devices()[0]
  return f"{jax.device_count()} x {d.platform}:{d.device_kind}"
