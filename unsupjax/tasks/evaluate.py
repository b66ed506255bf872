"""`unsupjax evaluate WORKDIR`: re-open a finished (or interrupted) run from
its files alone, evaluate its latest checkpoint on the test split, print a
table and write `eval.json` beside the checkpoints.

`--epoch N` evaluates the checkpoint of epoch N instead, and a GAN's
`--raw-generator` scores the generator's own parameters instead of their
EMA; either writes its own file (`eval-epochN.json`, `eval-raw.json`,
`eval-epochN-raw.json`), so `eval.json` always holds the latest EMA.

The model is read from the run's `run.json`; its task module (the one
behind `unsupjax train MODEL`) provides `evaluate(workdir, record, args)`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pathlib

from unsupjax.tasks import common

HELP = "evaluate a trained run from its work directory (writes eval.json)"
EVAL_FILE = "eval.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("workdir", help="a directory written by `unsupjax train`")
  parser.add_argument("--data-dir", default=None,
                      help="TFDS data directory, if the run's dataset needs one")
  parser.add_argument("--no-download", action="store_true")
  parser.add_argument("--cache-dir", default=None)
  parser.add_argument("--iwae-k", type=int, default=0,
                      help="VAE: importance samples for the IWAE NLL (0: skip)")
  parser.add_argument("--iwae-examples", type=int, default=1000)
  parser.add_argument("--epoch", type=int, default=None,
                      help="evaluate the checkpoint of this epoch (default: the latest)")
  parser.add_argument("--raw-generator", action="store_true",
                      help="GAN: score the generator's parameters, not their EMA")
  parser.add_argument("--samples", type=int, default=0,
                      help="GAN on MNIST-like images: generated samples scored against "
                           "the held-out split (default: 10,000, at most its size)")


def output_name(epoch: int, latest: int, raw_generator: bool) -> str:
  """eval.json for the latest checkpoint's EMA; otherwise a name saying which."""
  parts = ([f"epoch{epoch}"] if epoch != latest else []) + (["raw"] if raw_generator else [])
  return "-".join(["eval", *parts]) + ".json" if parts else EVAL_FILE


def run(args: argparse.Namespace) -> dict:
  from unsupjax import cli, data, train

  workdir = pathlib.Path(args.workdir)
  run_file = workdir / common.RUN_FILE
  if not run_file.exists():
    raise common.UsageError(f"workdir: expected a run directory holding {common.RUN_FILE}, "
                            f"got {str(workdir)!r}")
  record = json.loads(run_file.read_text())
  model = record.get("model")
  module_name = cli.TRAIN_TASKS.get(model)
  module = importlib.import_module(module_name) if module_name else None
  if module is None or not hasattr(module, "evaluate"):
    raise common.UsageError(f"workdir: runs of model {model!r} cannot be evaluated yet")
  if args.raw_generator and model != "gan":
    raise common.UsageError(f"--raw-generator: only GAN runs have an EMA generator; "
                            f"this run's model is {model!r}")
  epochs = (train.checkpoint_epochs(workdir)
            if (workdir / train.CHECKPOINT_DIR).exists() else [])
  if not epochs:
    raise common.UsageError(f"workdir: {workdir} holds no checkpoints")
  if args.epoch is None:
    args.epoch = epochs[-1]
  elif args.epoch not in epochs:
    raise common.UsageError(f"--epoch: expected one of the saved epochs {epochs}, "
                            f"got {args.epoch}")
  if args.cache_dir is None:
    args.cache_dir = str(data.default_cache_dir())
  results = module.evaluate(workdir, record, args)
  results = {"model": model, "workdir": str(workdir), "epoch": args.epoch,
             **({"generator": "raw" if args.raw_generator else "ema"}
                if model == "gan" else {}),
             **results}
  (workdir / output_name(args.epoch, epochs[-1], args.raw_generator)).write_text(
      json.dumps(results, indent=2, sort_keys=True))
  width = max(len(k) for k in results)
  for k, v in results.items():
    print(f"{k:<{width}}  {v:.6g}" if isinstance(v, float) else f"{k:<{width}}  {v}")
  return results
