"""`unsupjax runs DIR...`: a table of the runs under some directories, and
one metric's curves across them (`--plot METRIC`).

Reads work directories only (`runlog`): runs of earlier versions, killed
runs and k-means runs are listed with what they have.
"""

from __future__ import annotations

import dataclasses
import pathlib

from unsupjax import runlog
from unsupjax.config import UsageError, flag_error, option
from unsupjax.tasks import base


@dataclasses.dataclass(frozen=True)
class RunsConfig:
  dirs: tuple[str, ...] = option(("runs",), "work directories, or directories holding them",
                                 positional=True, nargs="*", metavar="DIR")
  sort: str | None = option(None, "sort by this metric, best first", metavar="METRIC",
                            default_help="the order found")
  descending: bool | None = option(None, "with --sort: highest first (--no-descending: "
                                   "lowest first)", default_help="by the metric's meaning")
  plot: str | None = option(None, "also draw this metric's curves for every run",
                            metavar="METRIC")
  out: str = option("runs.png", "where --plot writes its figure", metavar="PATH")


def run(cfg: RunsConfig) -> str:
  missing = [d for d in cfg.dirs if not pathlib.Path(d).exists()]
  if missing:
    raise UsageError(f"DIR: no such directory: {', '.join(missing)}")
  runs = runlog.find_runs(cfg.dirs)
  if not runs:
    raise UsageError(f"DIR: no runs under {', '.join(cfg.dirs)}")
  try:
    table = runlog.runs_table(runs, sort_by=cfg.sort, descending=cfg.descending)
  except ValueError as e:
    raise flag_error(RunsConfig, ValueError(str(e).replace("sort_by:", "sort:", 1))) from None
  print(table)
  if cfg.plot is not None:
    from unsupjax import curves
    try:
      drawn = curves.save_metric_across_runs(cfg.out, runs, cfg.plot)
    except ValueError as e:
      raise flag_error(RunsConfig, ValueError(str(e).replace("metric:", "plot:", 1))) from None
    print(f"{cfg.plot} of {len(drawn)} runs -> {cfg.out}")
  return table


COMMAND = base.Command("runs", "a table of the runs under DIR... (and --plot METRIC: their "
                       "curves on one figure)", RunsConfig, run)
