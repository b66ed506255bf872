"""The `unsupjax` command line: a thin layer over the library.

`unsupjax train MODEL [flags]` trains one of the models in `TRAIN_TASKS`;
other top-level commands are listed in `COMMANDS`. Each entry names a module
under `unsupjax.tasks` that provides:

  HELP: str                                  one line for --help
  add_arguments(parser) -> None              its flags
  run(args) -> dict                          does the work, returns the summary

A task validates its arguments before any compilation and raises
`UsageError("--flag: expected ..., got ...")`; the CLI prints that one line
and exits with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from unsupjax.tasks.common import UsageError
from unsupjax.train import TrainingDiverged

# Model name -> task module (`unsupjax train NAME`).
TRAIN_TASKS: dict[str, str] = {
    "ae": "unsupjax.tasks.ae",
    "conv-ae": "unsupjax.tasks.conv_ae",
    "dae": "unsupjax.tasks.dae",
    "vae": "unsupjax.tasks.vae",
    "gan": "unsupjax.tasks.gan",
    "codec": "unsupjax.tasks.codec",
    "ae-kmeans": "unsupjax.tasks.ae_kmeans",
    "dec": "unsupjax.tasks.dec",
    "idec": "unsupjax.tasks.idec",
    "n2d": "unsupjax.tasks.n2d",
}

# Top-level command -> task module (`unsupjax NAME`).
COMMANDS: dict[str, str] = {
    "evaluate": "unsupjax.tasks.evaluate",
    "kmeans": "unsupjax.tasks.kmeans",
    "compress": "unsupjax.tasks.compress",
    "decompress": "unsupjax.tasks.decompress",
    "anomaly": "unsupjax.tasks.anomaly",
}


class _Parser(argparse.ArgumentParser):
  """argparse that reports a bad flag in one line (exit 2), like UsageError."""

  def error(self, message: str):
    self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
  parser = _Parser(
      prog="unsupjax",
      description="Unsupervised deep learning in JAX: train, evaluate and "
                  "apply autoencoders, GANs and clustering models.")
  sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
  train = sub.add_parser("train", help="train a model",
                         description="Train a model; see `unsupjax train MODEL --help`.")
  models = train.add_subparsers(dest="model", metavar="MODEL", required=True)
  for name, module_name in TRAIN_TASKS.items():
    module = importlib.import_module(module_name)
    p = models.add_parser(name, help=module.HELP, description=module.HELP)
    module.add_arguments(p)
    p.set_defaults(_task=module)
  for name, module_name in COMMANDS.items():
    module = importlib.import_module(module_name)
    p = sub.add_parser(name, help=module.HELP, description=module.HELP)
    module.add_arguments(p)
    p.set_defaults(_task=module)
  return parser


def main(argv: list[str] | None = None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  try:
    args._task.run(args)
  except UsageError as e:
    print(f"unsupjax: error: {e}", file=sys.stderr)
    return 2
  except TrainingDiverged as e:
    print(f"unsupjax: {e}", file=sys.stderr)
    return 1
  except KeyboardInterrupt:
    print("unsupjax: interrupted", file=sys.stderr)
    return 130
  return 0


if __name__ == "__main__":
  sys.exit(main())
