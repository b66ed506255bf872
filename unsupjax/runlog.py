"""Reading work directories: what a run did, how it ended, and a table of runs.

Offers `read_run(workdir) -> Run` (the run's settings, its per-epoch records
from `metrics.jsonl`, its `summary.json`, and a status: finished, running,
interrupted, diverged or empty), `find_runs(dirs)`, `headline(model)` (the
metrics a model is judged by), `progress_keys(model)` (what a progress bar
shows), `higher_is_better(metric)`, `epoch_axis(records)` (one epoch axis
for runs with a pretraining and a clustering phase), `differing_settings`
and `run_labels(runs)`, and `runs_table(runs, sort_by=...)`, a markdown
table of runs whose columns are the settings that differ between them.
`write_status(workdir, status, ...)` writes the `status.json` marker a
training loop leaves so that a reader can tell a diverged or a killed run
from a finished one.

Every file may be missing: work directories of earlier versions (no
run.json, or only summary.json as `unsupjax kmeans` writes), runs killed
before their first epoch, or a metrics.jsonl whose last line a kill cut
short (ignored, as the loop ignores it on resume).

Status rules, the first that applies:
  running      status.json says 'running' and its process is alive (same
               host: the pid exists; another host: a heartbeat younger than
               max(5 min, 5 median epochs)).
  (marker)     status.json says 'diverged', 'interrupted' or 'finished': the
               loop rewrites it at every start, so it is the latest word.
  diverged     the last record holds a non-finite train_* value.
  finished     summary.json exists and agrees with the last record (same
               step count) and with run.json's epochs: a summary from before
               a resume for more epochs does not make the run finished.
  interrupted  records, checkpoints or a status.json but no summary that
               agrees with them (a run killed, stopped with Ctrl-C, or, before
               status.json existed, one that diverged).
  empty        nothing but run.json, or nothing at all.

Does not offer: plotting (`unsupjax.curves`), TensorBoard
(`unsupjax.tensorboard`), or anything that needs JAX.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import re
import socket
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

RUN_FILE = "run.json"
SUMMARY_FILE = "summary.json"
METRICS_FILE = "metrics.jsonl"
STATUS_FILE = "status.json"
CHECKPOINT_DIR = "checkpoints"

STATUSES = ("finished", "running", "interrupted", "diverged", "empty")
# What a loop may write into status.json (read_run infers the rest).
MARKER_STATUSES = ("running", "finished", "interrupted", "diverged")

# Models with an autoencoder pretraining phase, then (dec, idec) a clustering
# phase whose records carry "phase" and a fractional "epoch" from 0.
DEEP_CLUSTERING = ("dec", "idec", "ae-kmeans", "n2d")
CLUSTER_PHASE = ("dec", "idec")

# The metrics each model is judged by, as its summary.json and metrics.jsonl
# name them. A run lacks some (a GAN on a 2-D toy has no FID, one on images
# no mode count): tables and figures skip what a run does not have.
HEADLINE: dict[str, tuple[str, ...]] = {
    "ae": ("test_mse",),
    "conv-ae": ("test_mse",),
    "dae": ("test_mse",),
    "vae": ("test_neg_elbo", "test_kl"),
    "gan": ("fid", "modes_covered", "reverse_kl"),
    "dec": ("acc", "nmi"),
    "idec": ("acc", "nmi"),
    "ae-kmeans": ("acc", "nmi"),
    "n2d": ("acc", "nmi"),
    "codec": ("test_bpp", "test_psnr"),
    "kmeans": ("inertia", "acc", "nmi"),
    "anomaly-one-class": ("auroc_mean",),
    "anomaly-table": ("auroc", "average_precision"),
}
DEFAULT_HEADLINE = ("test_loss",)

# Settings of commands whose summary.json has no "config" (k-means).
_SUMMARY_SETTINGS = {"kmeans": ("k", "metric", "init", "n_init", "minibatch", "seed")}

# Name tokens of metrics where higher is better; every other metric (losses,
# MSE, FID, KID, KL, -ELBO, rate, inertia, seconds) sorts lower-first.
_HIGHER_IS_BETTER = frozenset({
    "acc", "nmi", "ari", "psnr", "modes", "covered", "precision", "recall",
    "density", "coverage", "auroc", "inception", "hq", "confidence",
    "lossless", "average"})

# Columns of the table that are not metrics (sort_by may name them too).
_OWN_SORT_KEYS = ("wall_seconds", "epochs")


@dataclasses.dataclass(frozen=True)
class Run:
  """One work directory as read from disk (see `read_run`).

  path: the directory as found. model, dataset: None when no file says.
  config: the run's settings (run.json's "config", else summary.json's;
    k-means: its settings keys), nested dicts flattened to "a.b" keys.
  records: metrics.jsonl's objects in order (a truncated last line dropped).
  summary: summary.json, or None.
  status: one of STATUSES. marker: status.json, or None.
  wall_seconds: summary.json's wall time; without one (unfinished runs),
    the seconds spent in the recorded epochs (`wall_exact` False).
  epochs_done, epochs_planned: the last recorded epoch (pretraining plus
    clustering epochs for deep clustering) and the run's total; None when
    unknown (k-means has no epochs).
  diverged_epoch: the epoch whose loss became non-finite, when known.
  checkpoints: the epochs with a checkpoint directory, ascending.
  """
  path: pathlib.Path
  model: str | None
  dataset: str | None
  config: dict[str, Any]
  records: list[dict[str, Any]]
  summary: dict[str, Any] | None
  status: str
  wall_seconds: float | None
  wall_exact: bool
  epochs_done: float | None
  epochs_planned: int | None
  diverged_epoch: int | None = None
  marker: dict[str, Any] | None = None
  checkpoints: tuple[int, ...] = ()

  @property
  def name(self) -> str:
    return self.path.name

  @property
  def metrics(self) -> dict[str, float]:
    """Latest numeric value of every key: the last record holding it, and
    summary.json's values over those for a finished run (under them for an
    unfinished one, whose summary, if any, predates its last records)."""
    from_records: dict[str, float] = {}
    for rec in self.records:
      for k, v in rec.items():
        if _is_number(v):
          from_records[k] = v
    from_summary = {k: v for k, v in (self.summary or {}).items() if _is_number(v)}
    if self.status == "finished":
      return {**from_records, **from_summary}
    return {**from_summary, **from_records}


def _is_number(v: Any) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool)


def _read_json(path: pathlib.Path) -> dict | None:
  try:
    value = json.loads(path.read_text())
  except (OSError, ValueError):
    return None
  return value if isinstance(value, dict) else None


def read_records(path: str | os.PathLike) -> list[dict[str, Any]]:
  """The objects of a metrics.jsonl (none if it is missing); stops at a line
  that does not parse, which only a kill mid-write leaves (the last one)."""
  records = []
  try:
    f = open(path)
  except FileNotFoundError:
    return []
  with f:
    for line in f:
      line = line.strip()
      if not line:
        continue
      try:
        rec = json.loads(line)
      except ValueError:
        break
      if isinstance(rec, dict):
        records.append(rec)
  return records


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  out: dict[str, Any] = {}
  for k, v in d.items():
    if isinstance(v, Mapping):
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def _checkpoint_epochs(workdir: pathlib.Path) -> tuple[int, ...]:
  # Orbax names each finished checkpoint after its step (here: the epoch);
  # unfinished ones carry a temporary suffix and are not counted.
  try:
    names = os.listdir(workdir / CHECKPOINT_DIR)
  except OSError:
    return ()
  return tuple(sorted(int(n) for n in names if n.isdigit()))


def epoch_axis(records: Sequence[Mapping[str, Any]]) -> list[float | None]:
  """Each record's position on one epoch axis (None: a record without one).

  A record's own "epoch", except in deep clustering's clustering phase
  (records with "phase", whose fractional "epoch" starts again from 0):
  those are placed after the pretraining epochs recorded before them.
  """
  xs: list[float | None] = []
  pretrain = 0.0
  for rec in records:
    e = rec.get("epoch")
    if not _is_number(e):
      xs.append(None)
    elif "phase" in rec:
      xs.append(pretrain + e)
    else:
      pretrain = float(e)
      xs.append(float(e))
  return xs


def _finite(v: Any) -> bool:
  if isinstance(v, (list, tuple)):
    return all(_finite(x) for x in v)
  return not _is_number(v) or math.isfinite(v)


def _nonfinite_train(rec: Mapping[str, Any]) -> bool:
  return any(k.startswith("train_") and not _finite(v) for k, v in rec.items())


def _alive(marker: Mapping[str, Any], records: Sequence[Mapping[str, Any]]) -> bool:
  """Whether the process that wrote a 'running' marker still runs."""
  pid, host = marker.get("pid"), marker.get("host")
  if isinstance(pid, int) and host == socket.gethostname():
    try:
      os.kill(pid, 0)
    except ProcessLookupError:
      return False
    except PermissionError:
      return True  # someone else's process
    except OSError:
      return False
    return True
  updated = marker.get("updated")
  if not _is_number(updated):
    return False
  epoch_times = sorted(r["epoch_seconds"] for r in records
                       if _is_number(r.get("epoch_seconds")))
  median = epoch_times[len(epoch_times) // 2] if epoch_times else 0.0
  return time.time() - updated < max(300.0, 5 * median)


def _summary_agrees(summary: Mapping[str, Any], last: Mapping[str, Any] | None,
                    model: str | None, config: Mapping[str, Any]) -> bool:
  """Whether summary.json describes the state the last record was logged at,
  and the epochs run.json asks for (a run resumed for more epochs rewrites
  run.json before its first new record)."""
  planned, summarised = config.get("epochs"), summary.get("epochs")
  if (model not in DEEP_CLUSTERING and _is_number(planned) and _is_number(summarised)
      and summarised < planned):
    return False
  if last is None:
    return True
  steps = summary.get("cluster_steps") if "phase" in last else summary.get("steps")
  if _is_number(steps) and _is_number(last.get("step")):
    return int(steps) == int(last["step"])
  if "phase" not in last and _is_number(summary.get("epochs")) and _is_number(last.get("epoch")):
    return int(summary["epochs"]) == int(last["epoch"])
  return True


def _epochs(model: str | None, config: Mapping[str, Any], records: Sequence[Mapping],
            summary: Mapping[str, Any] | None, checkpoints: Sequence[int],
            finished: bool) -> tuple[float | None, int | None]:
  planned = config.get("epochs")
  if not _is_number(planned) and summary is not None:
    planned = summary.get("epochs")
  planned = int(planned) if _is_number(planned) else None
  if model in DEEP_CLUSTERING and _is_number(config.get("pretrain_epochs")):
    pre = 0 if config.get("pretrained") else int(config["pretrain_epochs"])
    planned = pre + (int(config["epochs"]) if model in CLUSTER_PHASE
                     and _is_number(config.get("epochs")) else 0)
  xs = [x for x in epoch_axis(records) if x is not None]
  if xs:
    done: float | None = xs[-1]
  elif checkpoints:
    done = float(checkpoints[-1])
  elif finished and summary is not None and _is_number(summary.get("epochs")):
    done = float(summary["epochs"])
  else:
    done = None
  if done is not None and float(done).is_integer():
    done = int(done)
  return done, planned


def read_run(workdir: str | os.PathLike) -> Run:
  """Reads the work directory `workdir` (see the module docstring).

  Raises FileNotFoundError naming `workdir` when it is not a directory.
  """
  path = pathlib.Path(workdir)
  if not path.is_dir():
    raise FileNotFoundError(f"workdir: expected a work directory, got {str(path)!r} "
                            f"({'a file' if path.exists() else 'no such directory'})")
  run_rec = _read_json(path / RUN_FILE) or {}
  summary = _read_json(path / SUMMARY_FILE)
  marker = _read_json(path / STATUS_FILE)
  records = read_records(path / METRICS_FILE)
  checkpoints = _checkpoint_epochs(path)
  s = summary or {}

  model = run_rec.get("model") or s.get("model") or s.get("command")
  config = run_rec.get("config") or s.get("config")
  if not isinstance(config, Mapping):
    config = {k: s[k] for k in _SUMMARY_SETTINGS.get(model, ()) if k in s}
  config = _flatten(config)
  dataset = config.get("dataset") or s.get("dataset") or s.get("data")

  last = records[-1] if records else None
  state = marker.get("status") if marker else None
  diverged_epoch = None
  if state == "running" and _alive(marker, records):
    status = "running"
  elif state == "diverged":
    status = "diverged"
    diverged_epoch = marker.get("epoch")
  elif state in ("interrupted", "finished"):
    status = state
  elif last is not None and _nonfinite_train(last):
    status = "diverged"
    diverged_epoch = last.get("epoch")
  elif summary is not None and _summary_agrees(summary, last, model, config):
    status = "finished"
  elif records or checkpoints or marker or summary is not None:
    status = "interrupted"
  else:
    status = "empty"
  if diverged_epoch is not None and not _is_number(diverged_epoch):
    diverged_epoch = None

  done, planned = _epochs(model, config, records, summary, checkpoints,
                          status == "finished")
  wall = s.get("wall_seconds", s.get("seconds"))
  wall_exact = status == "finished" and _is_number(wall)
  if not wall_exact:
    spent = [r.get("epoch_seconds", 0.0) + r.get("eval_seconds", 0.0) for r in records
             if _is_number(r.get("epoch_seconds"))]
    wall = sum(spent) if spent else (wall if _is_number(wall) else None)
  return Run(path=path, model=model, dataset=dataset, config=dict(config),
             records=records, summary=summary, status=status,
             wall_seconds=float(wall) if wall is not None else None,
             wall_exact=wall_exact, epochs_done=done, epochs_planned=planned,
             diverged_epoch=int(diverged_epoch) if diverged_epoch is not None else None,
             marker=marker, checkpoints=checkpoints)


def write_status(workdir: str | os.PathLike, status: str, **fields: Any) -> pathlib.Path:
  """Writes `status.json` into `workdir` atomically: {"status": status,
  "pid", "host", "updated": unix time, **fields}.

  The training loop's marker (only the lead process of a multi-process run
  writes it): 'running' when a run starts or resumes and after each epoch
  (fields: epoch, epochs), 'diverged' on a non-finite loss (epoch,
  last_checkpoint, metrics, message), 'interrupted' on Ctrl-C or an error
  (epoch, message), 'finished' once summary.json is written. Non-finite
  floats in `fields` are written as strings.
  """
  if status not in MARKER_STATUSES:
    raise ValueError(f"status: expected one of {MARKER_STATUSES}, got {status!r}")
  path = pathlib.Path(workdir)
  record = {"status": status, "pid": os.getpid(), "host": socket.gethostname(),
            "updated": time.time(), **fields}
  tmp = path / f".{STATUS_FILE}.{os.getpid()}.tmp"
  tmp.write_text(json.dumps(_json_safe(record), indent=2))
  os.replace(tmp, path / STATUS_FILE)
  return path / STATUS_FILE


def _json_safe(v: Any) -> Any:
  if isinstance(v, Mapping):
    return {str(k): _json_safe(x) for k, x in v.items()}
  if isinstance(v, (list, tuple)):
    return [_json_safe(x) for x in v]
  if isinstance(v, float) and not math.isfinite(v):
    return str(v)
  if hasattr(v, "item") and callable(v.item):  # NumPy / JAX scalars
    return _json_safe(v.item())
  return v


def _natural_key(path: pathlib.Path) -> list:
  return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def find_runs(dirs: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Run]:
  """Every directory holding run.json or summary.json under `dirs` (each
  searched recursively, itself included; checkpoints/ and hidden directories
  are not entered), read with `read_run`, in natural order of their paths
  (seed2 before seed10). Raises FileNotFoundError naming `dirs` for a path
  that is not a directory.
  """
  if isinstance(dirs, (str, os.PathLike)):
    dirs = [dirs]
  found: set[pathlib.Path] = set()
  for d in dirs:
    root = pathlib.Path(d)
    if not root.is_dir():
      raise FileNotFoundError(f"dirs: expected directories, got {str(root)!r} "
                              f"({'a file' if root.exists() else 'no such directory'})")
    for here, subdirs, files in os.walk(root):
      subdirs[:] = [s for s in subdirs if s != CHECKPOINT_DIR and not s.startswith(".")]
      if RUN_FILE in files or SUMMARY_FILE in files:
        found.add(pathlib.Path(here))
  return [read_run(p) for p in sorted(found, key=_natural_key)]


def headline(model: str | None) -> list[str]:
  """The metric keys `model` is judged by (HEADLINE; ["test_loss"] for a
  model not in it). A run may lack some of them (see HEADLINE)."""
  return list(HEADLINE.get(model, DEFAULT_HEADLINE)) if model else list(DEFAULT_HEADLINE)


def progress_keys(model: str | None) -> list[str]:
  """The record keys a progress bar shows for `model`: its losses, then its
  headline metrics and what deep clustering logs per refresh (a bar shows
  those a record has)."""
  if model == "gan":
    losses = ["train_d_loss", "train_g_loss"]
  elif model == "vae":
    losses = ["train_neg_elbo", "test_neg_elbo"]
  else:
    losses = ["train_loss", "test_loss"]
  extra = ["kmeans_acc"] if model in DEEP_CLUSTERING else []
  return list(dict.fromkeys(losses + headline(model) + extra))


def higher_is_better(metric: str) -> bool:
  """Whether a larger value of `metric` is better (ACC, PSNR, modes covered,
  AUROC, ...); losses, FID, KL, rate and times are lower-is-better."""
  return bool(_HIGHER_IS_BETTER & set(metric.lower().split("_")))


def _canonical(v: Any) -> str:
  return json.dumps(v, sort_keys=True, separators=(",", ":"))


def differing_settings(runs: Sequence[Run]) -> list[str]:
  """The config keys that at least two of `runs` record with different
  values, in the order they first appear (dataset and epochs excluded: the
  table has columns of its own for them)."""
  seen: dict[str, set[str]] = {}
  counts: dict[str, int] = {}
  for run in runs:
    for k, v in run.config.items():
      if k in ("dataset", "epochs"):
        continue
      seen.setdefault(k, set()).add(_canonical(v))
      counts[k] = counts.get(k, 0) + 1
  return [k for k in seen if counts[k] >= 2 and len(seen[k]) >= 2]


def _setting_text(v: Any) -> str:
  if isinstance(v, str):
    return v
  if isinstance(v, float):
    return f"{v:g}"
  if v is None:
    return "none"
  return _canonical(v)


def run_labels(runs: Sequence[Run]) -> list[str]:
  """A short label per run: its differing settings ("lr=0.01, seed=1",
  with model and dataset when those differ), or its directory name when
  that is shorter to tell apart or the settings do not tell them apart."""
  keys = differing_settings(runs)
  parts = [[] for _ in runs]
  for attr in ("model", "dataset"):
    if len({getattr(r, attr) for r in runs}) > 1:
      for p, r in zip(parts, runs):
        p.append(str(getattr(r, attr)))
  for k in keys[:3]:
    for p, r in zip(parts, runs):
      if k in r.config:
        p.append(f"{k}={_setting_text(r.config[k])}")
  labels = [", ".join(p) for p in parts]
  if len(keys) > 3 or len(set(labels)) < len(labels) or not all(labels):
    names = [r.name for r in runs]
    if len(set(names)) < len(names):
      names = [str(r.path) for r in runs]
    return names
  return labels


def _metric_text(v: Any) -> str:
  if v is None:
    return "-"
  if isinstance(v, int):
    return str(v)
  return f"{v:.4g}"


def _wall_text(seconds: float | None, exact: bool) -> str:
  if seconds is None:
    return "-"
  if seconds < 60:
    text = f"{seconds:.1f} s"
  elif seconds < 3600:
    text = f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
  else:
    text = f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"
  return text if exact else "~" + text


def _epochs_text(run: Run) -> str:
  def one(e):
    if e is None:
      return "-"
    return str(e) if float(e).is_integer() else f"{e:.2f}"
  if run.epochs_done is None and run.epochs_planned is None:
    return "-"
  return f"{one(run.epochs_done)}/{one(run.epochs_planned)}"


def _sort_value(run: Run, key: str) -> float | None:
  if key == "wall_seconds":
    v = run.wall_seconds
  elif key == "epochs":
    v = run.epochs_done
  else:
    v = run.metrics.get(key)
  return float(v) if _is_number(v) and not math.isnan(v) else None


def _table_columns(runs: Sequence[Run], sort_by: str | None = None) -> tuple[list[str], list[str]]:
  """(settings, metrics): the setting columns (`differing_settings`) and the
  metric columns of `runs_table`: every headline metric of the runs' models
  that at least one run has, then sort_by if it is not among them."""
  values = [r.metrics for r in runs]
  metrics: list[str] = []
  for run in runs:
    for k in headline(run.model):
      if k not in metrics and any(k in m for m in values):
        metrics.append(k)
  if sort_by is not None and sort_by not in metrics and sort_by not in _OWN_SORT_KEYS:
    metrics.append(sort_by)
  return differing_settings(runs), metrics


def runs_table(runs: Sequence[Run], sort_by: str | None = None,
               descending: bool | None = None) -> str:
  """A markdown table of `runs`, one row each: run (its path), model,
  dataset, the settings that differ between them (`differing_settings`),
  epochs done/planned, the headline metrics of their models (final values
  for a finished run, the latest logged for others; "-" where a run has
  none), wall time ("~": time in recorded epochs, no summary) and status.

  sort_by: a metric key that some run has (any key of `Run.metrics`, or
    'wall_seconds' / 'epochs'); best first: lower first unless
    `higher_is_better(sort_by)`, reversed by `descending`. Runs lacking it
    come last, in the given order. None keeps the given order.
  """
  runs = list(runs)
  if not runs:
    raise ValueError("runs: expected at least one run, got none")
  if sort_by is not None:
    known = sorted(set().union(*(r.metrics for r in runs)) | set(_OWN_SORT_KEYS))
    if sort_by not in known:
      raise ValueError(f"sort_by: no listed run has a metric {sort_by!r}; they have: "
                       f"{', '.join(known)}")
    if descending is None:
      descending = higher_is_better(sort_by)
    have = [r for r in runs if _sort_value(r, sort_by) is not None]
    lack = [r for r in runs if _sort_value(r, sort_by) is None]
    have.sort(key=lambda r: _sort_value(r, sort_by), reverse=bool(descending))
    runs = have + lack
  settings, metrics = _table_columns(runs, sort_by)
  header = ["run", "model", "dataset", *settings, "epochs", *metrics, "wall", "status"]
  rows = []
  for r in runs:
    m = r.metrics
    status = r.status
    if status == "diverged" and r.diverged_epoch is not None:
      status = f"diverged (epoch {r.diverged_epoch})"
    rows.append([str(r.path), r.model or "?", r.dataset or "?",
                 *[_setting_text(r.config[k]) if k in r.config else "" for k in settings],
                 _epochs_text(r), *[_metric_text(m.get(k)) for k in metrics],
                 _wall_text(r.wall_seconds, r.wall_exact), status])
  cells = [header] + rows
  cells = [[c.replace("|", "\\|") for c in row] for row in cells]
  widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
  numeric = {i for i, h in enumerate(header) if h in metrics or h in ("epochs", "wall")}

  def line(row):
    return "| " + " | ".join(c.rjust(w) if i in numeric else c.ljust(w)
                             for i, (c, w) in enumerate(zip(row, widths))) + " |"

  rule = "|" + "|".join(("-" * (w + 1) + ":") if i in numeric else "-" * (w + 2)
                        for i, w in enumerate(widths)) + "|"
  out = [line(cells[0]), rule, *(line(row) for row in cells[1:])]
  if any(not r.wall_exact and r.wall_seconds is not None for r in runs):
    out.append("")
    out.append("~: seconds spent in the recorded epochs (the run wrote no final summary)")
  return "\n".join(out)
