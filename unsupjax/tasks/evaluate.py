"""`unsupjax evaluate WORKDIR`: re-open a run from its files alone.

Reads `run.json`, rebuilds the run's config with `config.from_record` and
its task from the registry, restores the newest intact checkpoint (or
`--epoch N`'s), evaluates it on the test split with the task's own
`evaluate`, prints a table and writes `eval.json` (`eval-epochN.json`,
`eval-raw.json` for the other choices, so `eval.json` always holds the
latest). Keys are re-derived by name from the run's seed, so the numbers
are the ones training reported.
"""

from __future__ import annotations

import dataclasses
import pathlib

from unsupjax import config as config_lib
from unsupjax.config import UsageError, option
from unsupjax.tasks import base

EVAL_FILE = "eval.json"


@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
  workdir: str = option(help="a directory written by `unsupjax train`", positional=True)
  epoch: int | None = option(None, "evaluate the checkpoint of this epoch",
                             default_help="the newest intact one")
  data_dir: str | None = option(None, "TFDS data directory, if the run's dataset needs one",
                                default_help="the run's own")
  download: bool = option(True, "download the run's dataset if it is not prepared")
  cache_dir: str | None = option(None, "where decoded datasets are cached",
                                 default_help="$UNSUPJAX_CACHE_DIR or ~/.cache/unsupjax")
  iwae_k: int = option(0, "VAE: importance samples for the IWAE bound (0: the run's own --iwae-k)")
  iwae_examples: int = option(1000, "VAE: test examples the IWAE bound uses")
  raw_generator: bool = option(False, "GAN: score the generator's own parameters, not "
                               "their EMA")
  samples: int = option(0, "GAN: generated samples scored against the test split",
                        default_help="10,000, at most the split's size")

  def __post_init__(self):
    for name in ("iwae_k", "samples"):
      if getattr(self, name) < 0:
        raise ValueError(f"{name}: expected an integer >= 0, got {getattr(self, name)}")
    if self.iwae_examples < 1:
      raise ValueError(f"iwae_examples: expected a positive integer, got {self.iwae_examples}")


def output_name(epoch: int, latest: int, raw_generator: bool) -> str:
  parts = ([f"epoch{epoch}"] if epoch != latest else []) + (["raw"] if raw_generator else [])
  return "-".join(["eval", *parts]) + ".json" if parts else EVAL_FILE


def open_run(workdir: pathlib.Path, opts: EvaluateConfig):
  """(task, config) of the run in `workdir`, its local settings replaced by
  this command's (data_dir, download, cache_dir)."""
  from unsupjax.tasks import registry
  from unsupjax import data as data_lib
  record = base.read_record(workdir, flag="workdir")
  if record is None:
    raise UsageError(f"workdir: expected a run directory holding {base.RUN_FILE}, got "
                     f"{str(workdir)!r}")
  model = record.get("model")
  if model not in registry.TRAIN_TASKS:
    raise UsageError(f"workdir: runs of model {model!r} cannot be evaluated")
  task = registry.load(registry.TRAIN_TASKS[model])
  if task.evaluate is None:
    raise UsageError(f"workdir: runs of model {model!r} cannot be evaluated")
  saved = dict(record["config"])
  for f in dataclasses.fields(task.config):   # records of 0.1 used the flag names
    flag = f.metadata.get("flag")
    if flag and flag in saved and f.name not in saved:
      saved[f.name] = saved.pop(flag)
  try:
    cfg = config_lib.from_record(task.config, saved)
  except (ValueError, TypeError) as e:
    raise UsageError(f"workdir: {workdir / base.RUN_FILE} does not describe a {model} run "
                     f"of this version ({e})") from None
  cfg = dataclasses.replace(
      cfg, data_dir=opts.data_dir or cfg.data_dir, download=opts.download,
      cache_dir=opts.cache_dir or str(data_lib.default_cache_dir()),
      resume=False, overwrite=False, workdir=str(workdir))
  return task, cfg


def run(opts: EvaluateConfig) -> dict:
  from unsupjax import training
  from unsupjax.rng import run_key
  workdir = pathlib.Path(opts.workdir)
  task, cfg = open_run(workdir, opts)
  if opts.raw_generator and task.name != "gan":
    raise UsageError(f"--raw-generator: only GAN runs have an EMA generator; this run's "
                     f"model is {task.name!r}")
  epochs = (training.checkpoint_epochs(workdir)
            if (workdir / training.CHECKPOINT_DIR).exists() else [])
  if not epochs:
    raise UsageError(f"workdir: {workdir} holds no checkpoints")
  if opts.epoch is not None and opts.epoch not in epochs:
    raise UsageError(f"--epoch: expected one of the saved epochs {epochs}, got {opts.epoch}")
  data = task.load(cfg)
  state, epoch = base.restore(task, cfg, data, workdir, opts.epoch)
  values = task.evaluate(cfg, state, data, run_key(cfg.seed), opts)
  results = {"model": task.name, "workdir": str(workdir), "epoch": epoch,
             "step": int(state.step) if hasattr(state, "step") else None,
             **({"generator": "raw" if opts.raw_generator else "ema"}
                if task.name == "gan" else {}),
             **values}
  base.write_json(workdir / output_name(epoch, epochs[-1], opts.raw_generator), results)
  width = max(len(k) for k in results)
  for k, v in results.items():
    print(f"{k:<{width}}  {v:.6g}" if isinstance(v, float) else f"{k:<{width}}  {v}")
  return results


COMMAND = base.Command("evaluate", "evaluate a trained run from its work directory "
                       "(writes eval.json)", EvaluateConfig, run)
