"""Training curves as PNG: one run's figure, and one metric across runs.

Offers `save_run_curves(path, run_or_records, ...)`, the `curves.png` a run
rewrites after every epoch: the loss against epoch in the first panel and
the model's headline metrics in panels beside it (`panels(model)`), and
`save_metric_across_runs(path, runs, metric)`, one line per run
(`run_figure` and `metric_figure` return the figures unsaved). Both write
atomically (a temporary file in the same directory, then `os.replace`), so
a viewer never sees half a picture, and draw on a fresh matplotlib `Figure`
(Agg) per call: no pyplot, no global state.

A panel is drawn when at least one of its series has a value; non-finite
values are left out (a gap); the y axis is logarithmic when a panel's
values are positive and span more than 10**1.5; series with few points get
markers; each legend entry ends with the series' last value.

Callers decide who draws: in a multi-process run only the lead process
should call these (two writers of one file would race).

Does not offer: pictures of samples or reconstructions (`unsupjax.plots`),
interactive plots.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

from unsupjax import runlog

LOG_SPAN = 10 ** 1.5          # max/min above which a positive panel goes log-scale
MARKERS_UP_TO = 25            # points; sparser series get markers
PANEL_SIZE = (4.2, 2.9)       # inches per panel (axes only)
DPI = 100
MAX_COLUMNS = 3

TRAIN, TEST = "#1f77b4", "#ff7f0e"


@dataclasses.dataclass(frozen=True)
class Series:
  """One line: the first of `keys` a record has (aliases across phases),
  from records of `phase` ('any', 'pretrain': without "phase", 'cluster':
  with it)."""
  keys: tuple[str, ...]
  label: str
  color: str | None = None
  dashed: bool = False
  phase: str = "any"


@dataclasses.dataclass(frozen=True)
class Panel:
  """One plot of the figure: its title, y label and `Series`; optional
  y limits, a dotted reference level `hline` and integer ticks."""
  title: str
  ylabel: str
  series: tuple[Series, ...]
  ylim: tuple[float | None, float | None] | None = None
  hline: float | None = None    # a reference level (chance accuracy)
  integer: bool = False         # counts: integer y ticks


def _pair(name: str, label: str = "", phase: str = "any") -> tuple[Series, Series]:
  pre = f"{label} " if label else ""
  return (Series((f"train_{name}",), f"{pre}train", TRAIN, phase=phase),
          Series((f"test_{name}",), f"{pre}test", TEST, dashed=True, phase=phase))


def _loss_label(config: Mapping[str, Any]) -> str:
  loss = config.get("loss")
  if loss == "bce":
    return "BCE (nats/pixel)"
  if loss == "mse":
    return "MSE (per pixel)"
  return "loss"


def panels(model: str | None, config: Mapping[str, Any] | None = None) -> tuple[Panel, ...]:
  """The panels of `model`'s curves.png (config: its settings, for units).

  ae/conv-ae/dae: loss, test MSE. vae: -ELBO, KL, reconstruction NLL.
  gan: D and G losses, D accuracy, modes covered, reverse KL, FID/KID.
  dec/idec/ae-kmeans/n2d: pretraining loss, clustering loss, ACC/NMI/ARI.
  codec: loss, rate, PSNR. anomaly-one-class: loss per class. Others:
  train/test loss.
  """
  config = config or {}
  if model in ("ae", "conv-ae", "dae"):
    return (Panel("Loss", _loss_label(config), _pair("loss")),
            Panel("Test reconstruction error", "MSE (per pixel, [0, 1] pixels)",
                  (Series(("test_mse",), "test", TEST, dashed=True),)))
  if model == "vae":
    return (Panel("Negative ELBO", "-ELBO (nats/image)",
                  (Series(("train_neg_elbo", "train_loss"), "train", TRAIN),
                   Series(("test_neg_elbo", "test_loss"), "test", TEST, dashed=True))),
            Panel("KL(q(z|x) || p(z))", "KL (nats/image)", _pair("kl")),
            Panel("Reconstruction term", "-log p(x|z) (nats/image)", _pair("nll")))
  if model == "gan":
    d_color, g_color = "#1f77b4", "#d62728"
    real, fake = "#2ca02c", "#9467bd"
    return (
        Panel("Losses", "loss (nats)",
              (Series(("train_d_loss",), "D train", d_color),
               Series(("test_d_loss",), "D test", d_color, dashed=True),
               Series(("train_g_loss",), "G train", g_color),
               Series(("test_g_loss",), "G test", g_color, dashed=True))),
        Panel("Discriminator accuracy", "accuracy",
              (Series(("train_d_real_acc",), "real, train", real),
               Series(("test_d_real_acc",), "real, test", real, dashed=True),
               Series(("train_d_fake_acc",), "fake, train", fake),
               Series(("test_d_fake_acc",), "fake, test", fake, dashed=True)),
              ylim=(0.0, 1.0), hline=0.5),
        Panel("Modes covered", "modes", (Series(("modes_covered",), "modes covered", TRAIN),),
              ylim=(0.0, None), integer=True),
        Panel("Reverse KL to the modes", "KL (nats)",
              (Series(("reverse_kl",), "reverse KL", TRAIN),)),
        Panel("Sample quality", "distance (lower is better)",
              (Series(("fid",), "FID", TRAIN), Series(("kid",), "KID", TEST))))
  if model in runlog.DEEP_CLUSTERING:
    return (
        Panel("Autoencoder pretraining", _loss_label(config),
              (Series(("train_loss",), "train", TRAIN, phase="pretrain"),)),
        Panel("Clustering loss", "loss (nats)",
              (Series(("train_loss",), "total", TRAIN, phase="cluster"),
               Series(("train_kl",), "KL(P || Q)", "#2ca02c", dashed=True, phase="cluster"),
               Series(("train_recon",), "reconstruction", "#9467bd", dashed=True,
                      phase="cluster"))),
        Panel("Clustering quality", "score (1 is perfect)",
              (Series(("acc", "kmeans_acc"), "ACC", "#1f77b4"),
               Series(("nmi", "kmeans_nmi"), "NMI", "#d62728"),
               Series(("ari", "kmeans_ari"), "ARI", "#7f7f7f", dashed=True)),
              ylim=(0.0, 1.0)))
  if model == "codec":
    return (Panel("Loss (distortion + lambda x rate)", "loss", _pair("loss")),
            Panel("Rate", "bits/pixel", _pair("bpp")),
            Panel("Test PSNR", "PSNR (dB)", (Series(("test_psnr",), "test", TEST, dashed=True),)))
  if model == "anomaly-one-class":
    classes = config.get("classes") or list(range(10))
    colors = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
              "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
    # One dense autoencoder per class; its loss setting is under model_config.
    inner = {"loss": config.get("model_config.loss")}
    return (Panel("Training loss per class", _loss_label(inner),
                  tuple(Series((f"train_loss_per_class/{i}",), f"class {c}", colors[i % 10])
                        for i, c in enumerate(classes))),)
  return (Panel("Loss", "loss", _pair("loss")),)


def _value(rec: Mapping[str, Any], key: str) -> Any:
  if "/" in key:  # an element of a list value (per-class losses)
    name, _, i = key.rpartition("/")
    v = rec.get(name)
    if isinstance(v, list) and i.isdigit() and int(i) < len(v):
      return v[int(i)]
    return None
  return rec.get(key)


def series_points(records: Sequence[Mapping[str, Any]], s: Series,
                  xs: Sequence[float | None] | None = None) -> tuple[list[float], list[float]]:
  """(epochs, values) of series `s` in `records` (finite values only)."""
  xs = runlog.epoch_axis(records) if xs is None else xs
  px, py = [], []
  for x, rec in zip(xs, records):
    if x is None:
      continue
    in_phase = "phase" in rec
    if (s.phase == "pretrain" and in_phase) or (s.phase == "cluster" and not in_phase):
      continue
    for k in s.keys:
      v = _value(rec, k)
      if v is not None:
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
          px.append(x)
          py.append(float(v))
        break
  return px, py


def _log_worthy(values: Sequence[float]) -> bool:
  return bool(values) and min(values) > 0 and max(values) / min(values) > LOG_SPAN


def _fmt(v: float) -> str:
  return f"{v:.4g}"


def _columns(n: int) -> int:
  return n if n <= MAX_COLUMNS else (2 if n == 4 else MAX_COLUMNS)


# Fixed margins (inches) instead of tight_layout, which lays out every text
# a second time.
_LEFT, _RIGHT, _BOTTOM, _TOP, _WGAP, _HGAP = 0.8, 0.2, 0.55, 0.75, 0.85, 0.9


def _figure(n: int, panel_size: tuple[float, float] = PANEL_SIZE, top: float = _TOP):
  from matplotlib.figure import Figure
  cols = _columns(n)
  rows = math.ceil(n / cols)
  w = _LEFT + _RIGHT + cols * panel_size[0] + (cols - 1) * _WGAP
  h = _BOTTOM + top + rows * panel_size[1] + (rows - 1) * _HGAP
  fig = Figure(figsize=(w, h), dpi=DPI)
  fig.subplots_adjust(left=_LEFT / w, right=1 - _RIGHT / w, bottom=_BOTTOM / h,
                      top=1 - top / h, wspace=_WGAP / panel_size[0],
                      hspace=_HGAP / panel_size[1])
  axes = fig.subplots(rows, cols, squeeze=False).ravel()
  for ax in axes[n:]:
    ax.set_visible(False)
  return fig, axes[:n]


def _style_axes(ax, title: str, ylabel: str, xlabel: str = "epoch") -> None:
  from matplotlib.ticker import MaxNLocator, ScalarFormatter
  # An explicit y turns off matplotlib's title placement, which measures
  # every tick label at each draw; few ticks, as each one is a costly object.
  ax.set_title(title, fontsize=12, y=1.0, pad=6)
  ax.set_xlabel(xlabel, fontsize=10)
  ax.set_ylabel(ylabel, fontsize=10)
  ax.tick_params(labelsize=9)
  ax.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))
  ax.yaxis.set_major_locator(MaxNLocator(nbins=6))
  # Short tick labels: x10^k above the axis for values below 0.01 or from 10^4.
  fmt = ScalarFormatter(useMathText=True)
  fmt.set_powerlimits((-2, 4))
  ax.yaxis.set_major_formatter(fmt)
  # A fixed x label position (tick labels have one height): placing it
  # automatically measures every tick label again.
  ax.xaxis.set_label_coords(0.5, -0.26 / ax.figure.get_figheight() / ax.get_position().height)
  ax.grid(True, alpha=0.3, linewidth=0.6)


def _save(fig, path: str | os.PathLike) -> pathlib.Path:
  path = pathlib.Path(path)
  tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
  try:
    fig.savefig(tmp, format="png", dpi=DPI, pil_kwargs={"compress_level": 1})
    os.replace(tmp, path)
  finally:
    if tmp.exists():
      tmp.unlink()
  return path


def _draw_line(ax, x, y, label, color=None, dashed=False) -> None:
  ax.plot(x, y, linestyle="--" if dashed else "-", color=color, linewidth=1.6,
          marker="o" if len(x) <= MARKERS_UP_TO else None, markersize=3.5,
          label=f"{label}  {_fmt(y[-1])}")


def _finish_panel(ax, values: list[float], ylim, legend_cols: int = 1) -> None:
  if _log_worthy(values):
    ax.set_yscale("log")
  elif ylim is not None:
    lo, hi = ylim
    top = max(values) if values else 1.0
    ax.set_ylim(lo, hi if hi is not None else max(1.0, top * 1.1))
  ax.legend(fontsize=8.5, loc="best", framealpha=0.8, ncol=legend_cols)


def run_figure(run_or_records: runlog.Run | Sequence[Mapping[str, Any]], *,
               title: str | None = None, model: str | None = None):
  """The matplotlib Figure `save_run_curves` writes (same arguments)."""
  run = run_or_records if isinstance(run_or_records, runlog.Run) else None
  records = list(run.records if run is not None else run_or_records)
  model = model if model is not None else (run.model if run is not None else None)
  config = run.config if run is not None else {}
  xs = runlog.epoch_axis(records)
  drawn = []
  for panel in panels(model, config):
    lines = [(s, *series_points(records, s, xs)) for s in panel.series]
    lines = [(s, x, y) for s, x, y in lines if x]
    if lines:
      drawn.append((panel, lines))
  if not drawn:
    where = str(run.path) if run is not None else f"{len(records)} records"
    raise ValueError(f"run_or_records: no values to draw for model {model!r} in {where}")

  # Where deep clustering's clustering phase starts on the epoch axis.
  phase_start = next((x for x, r in zip(xs, records) if "phase" in r and x is not None), None)
  has_pretrain = any("phase" not in r and x is not None for x, r in zip(xs, records))
  two_phases = phase_start is not None and has_pretrain
  xlabel = "epoch (pretraining, then clustering)" if two_phases else "epoch"
  fig, axes = _figure(len(drawn))
  for ax, (panel, lines) in zip(axes, drawn):
    _style_axes(ax, panel.title, panel.ylabel, xlabel)
    if panel.integer:
      from matplotlib.ticker import MaxNLocator
      ax.yaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))
    values = []
    for s, x, y in lines:
      _draw_line(ax, x, y, s.label, s.color, s.dashed)
      values.extend(y)
    if panel.hline is not None:
      ax.axhline(panel.hline, color="#999999", linewidth=0.8, linestyle=":")
    if two_phases:
      ax.axvline(phase_start, color="#555555", linewidth=0.9, linestyle=":",
                 label="clustering starts")
    if run is not None and run.status == "diverged" and run.diverged_epoch is not None:
      ax.axvline(run.diverged_epoch, color="#d62728", linewidth=1.2,
                 label=f"diverged (epoch {run.diverged_epoch})")
    _finish_panel(ax, values, panel.ylim, 2 if len(lines) > 5 else 1)
  if title is None:
    title = _run_title(run, model, len(records))
  fig.suptitle(title, fontsize=13, y=1 - 0.15 / fig.get_figheight(), va="top")
  return fig


def save_run_curves(path: str | os.PathLike,
                    run_or_records: runlog.Run | Sequence[Mapping[str, Any]], *,
                    title: str | None = None, model: str | None = None) -> pathlib.Path:
  """Draws a run's training curves into `path` (a PNG, written atomically).

  run_or_records: a `runlog.Run` (its model, dataset, directory and status
    make the title; its config the units) or metrics.jsonl records.
  title: the figure's title (default: "MODEL on DATASET - DIR: epoch E/N,
    STATUS" from the run). model: picks the panels (`panels`); default the
    run's model. A diverged run gets a red line at the epoch that failed.

  Returns `path`. Raises ValueError naming run_or_records when no panel
  has a value.
  """
  return _save(run_figure(run_or_records, title=title, model=model), path)


def _run_title(run: runlog.Run | None, model: str | None, n: int) -> str:
  if run is None:
    return f"{model or 'run'}: {n} epochs"
  def num(e):
    return "?" if e is None else (str(e) if float(e).is_integer() else f"{e:.2f}")
  what = f"{run.model or model or '?'} on {run.dataset or '?'} - {run.name}"
  return f"{what}: epoch {num(run.epochs_done)}/{num(run.epochs_planned)}, {run.status}"


_UNITS = {"psnr": "dB", "bpp": "bits/pixel", "neg_elbo": "nats/image", "kl": "nats",
          "seconds": "s"}


def _metric_label(metric: str) -> str:
  for token, unit in _UNITS.items():
    if token in metric:
      return f"{metric} ({unit})"
  return metric


def metric_figure(runs: Sequence[runlog.Run], metric: str, *, title: str | None = None):
  """(Figure, the runs drawn) of `save_metric_across_runs` (same arguments)."""
  runs = list(runs)
  if not runs:
    raise ValueError("runs: expected at least one run, got none")
  s = Series((metric,), metric)
  points = [(run, *series_points(run.records, s)) for run in runs]
  points = [(run, x, y) for run, x, y in points if x]
  if not points:
    logged = sorted({k for r in runs for rec in r.records for k, v in rec.items()
                     if isinstance(v, (int, float)) and not isinstance(v, bool)})
    raise ValueError(f"metric: none of the {len(runs)} runs logged {metric!r} per epoch; "
                     f"they logged: {', '.join(logged) if logged else 'nothing'}")
  labels = runlog.run_labels([run for run, _, _ in points])   # among those drawn
  lines = [(run, label, x, y) for (run, x, y), label in zip(points, labels)]
  wide = len(lines) > 6
  fig, (ax,) = _figure(1, (6.5, 4.2), top=0.45)
  if wide:  # room for the legend on the right
    w = fig.get_figwidth()
    fig.set_figwidth(w + 2.6)
    fig.subplots_adjust(left=_LEFT / (w + 2.6), right=(w - _RIGHT) / (w + 2.6))
  _style_axes(ax, title or f"{metric} by epoch, {len(lines)} runs", _metric_label(metric))
  values = []
  for i, (run, label, x, y) in enumerate(lines):
    _draw_line(ax, x, y, label, f"C{i % 10}", dashed=i >= 10)
    values.extend(y)
  if _log_worthy(values):
    ax.set_yscale("log")
  if wide:
    ax.legend(fontsize=8.5, loc="upper left", bbox_to_anchor=(1.01, 1.0), framealpha=0.8)
  else:
    ax.legend(fontsize=9, loc="best", framealpha=0.8)
  return fig, [run for run, *_ in lines]


def save_metric_across_runs(path: str | os.PathLike, runs: Sequence[runlog.Run],
                            metric: str, *, title: str | None = None) -> list[runlog.Run]:
  """Draws `metric` against epoch for each of `runs` that logged it, one
  line each (labelled by `runlog.run_labels`), into `path` (atomically).

  Returns the runs drawn (a run that never logged `metric` is left out).
  Raises ValueError naming `runs` when it is empty and naming `metric` when
  no run logged it per epoch (the message lists what they did log).
  """
  fig, drawn = metric_figure(runs, metric, title=title)
  _save(fig, path)
  return drawn
