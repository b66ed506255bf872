"""`unsupjax evaluate WORKDIR`: re-open a finished (or interrupted) run from
its files alone, evaluate its latest checkpoint on the test split, print a
table and write `eval.json` beside the checkpoints.

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
  parser.add_argument("--samples", type=int, default=0,
                      help="GAN on MNIST-like images: generated samples scored against "
                           "the held-out split (default: 10,000, at most its size)")


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
  if not (workdir / train.CHECKPOINT_DIR).exists():
    raise common.UsageError(f"workdir: {workdir} holds no checkpoints")
  if args.cache_dir is None:
    args.cache_dir = str(data.default_cache_dir())
  results = module.evaluate(workdir, record, args)
  results = {"model": model, "workdir": str(workdir), **results}
  (workdir / EVAL_FILE).write_text(json.dumps(results, indent=2, sort_keys=True))
  width = max(len(k) for k in results)
  for k, v in results.items():
    print(f"{k:<{width}}  {v:.6g}" if isinstance(v, float) else f"{k:<{width}}  {v}")
  return results
