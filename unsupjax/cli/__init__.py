"""The `unsupjax` command line: a thin edge over the tasks.

`unsupjax train MODEL [flags]` runs the `Task` registered for MODEL through
`tasks.base.train`; the other commands run a `Command`. Each one's flags
are generated from its config class (`cli.flags`), and only the module of
the command being run is imported, so `--help` stays quick.

Exit status: 0 done; 1 training diverged (the last good checkpoint is
kept); 2 bad usage, one line naming the flag; 130 interrupted (Ctrl-C or
SIGTERM; the newest complete checkpoint is kept).
"""

from __future__ import annotations

import argparse
import signal
import sys
import warnings
from typing import Any

from unsupjax.tasks.registry import COMMANDS, TRAIN_TASKS, load


class _Parser(argparse.ArgumentParser):
  """argparse that reports a bad flag in one line (exit 2)."""

  def error(self, message: str):
    self.exit(2, f"{self.prog}: error: {message}\n")


def _chosen(argv: list[str]) -> tuple[str, ...]:
  words = [a for a in argv if not a.startswith("-")]
  if words[:1] == ["train"] and len(words) > 1 and words[1] in TRAIN_TASKS:
    return ("train", words[1])
  if words and words[0] in COMMANDS:
    return (words[0],)
  return ()


def build_parser(chosen: tuple[str, ...] = ()) -> tuple[argparse.ArgumentParser, Any]:
  """The parser, with flags only for the `chosen` command; and its target."""
  from unsupjax import __version__
  from unsupjax.cli.flags import add_config_flags
  parser = _Parser(prog="unsupjax",
                   description="Unsupervised deep learning in JAX: train, evaluate and "
                               "apply autoencoders, GANs and clustering models.")
  parser.add_argument("--version", action="version", version=f"unsupjax {__version__}")
  sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
  train = sub.add_parser("train", help="train a model",
                         description="Train a model; see `unsupjax train MODEL --help`.")
  models = train.add_subparsers(dest="model", metavar="MODEL", required=True)
  target = None
  for name, entry in TRAIN_TASKS.items():
    p = models.add_parser(name, help=entry[2], description=entry[2])
    if chosen == ("train", name):
      target = load(entry)
      p.description = target.help
      add_config_flags(p, target.config)
  for name, entry in COMMANDS.items():
    p = sub.add_parser(name, help=entry[2], description=entry[2])
    if chosen == (name,):
      target = load(entry)
      p.description = target.help
      add_config_flags(p, target.config)
  return parser, target


def _interrupt(signum, frame):
  raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  chosen = _chosen(argv)
  parser, target = build_parser(chosen)
  args = parser.parse_args(argv)
  from unsupjax.cli.flags import to_config
  from unsupjax.config import UsageError
  previous = None
  try:
    previous = signal.signal(signal.SIGTERM, _interrupt)
  except ValueError:         # not the main thread
    pass
  try:
    cfg = to_config(target.config, args)
    if chosen[0] == "train":
      from unsupjax.tasks import base
      base.train(target, cfg)
    else:
      target.run(cfg)
  except UsageError as e:
    print(f"unsupjax: error: {e}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print("unsupjax: interrupted; the newest complete checkpoint is kept", file=sys.stderr)
    # A checkpoint write cut short leaves orbax's coroutines unawaited, and
    # Python would name each one at exit, under the line that matters.
    warnings.filterwarnings("ignore", "coroutine .* was never awaited", RuntimeWarning)
    return 130
  except Exception as e:
    from unsupjax.training import TrainingDiverged
    if isinstance(e, TrainingDiverged):
      print(f"unsupjax: {e}", file=sys.stderr)
      return 1
    raise
  finally:
    if previous is not None:
      signal.signal(signal.SIGTERM, previous)
  return 0
