"""`unsupjax anomaly [table | one-class]`: anomaly detection from the command line.

Two modes, one set of flags (`AnomalyConfig`):

  unsupjax anomaly --csv FILE [--label-column NAME] [--contamination C]
      (mode `table`, the default) A dense autoencoder on the standardised
      numeric columns of any CSV (fit on every row: the unsupervised
      outlier setting); writes the score and flag of every row. With a
      label column (0 normal / 1 anomaly, never trained on) it also reports
      AUROC, average precision and the threshold's realised FPR / recall;
      --compare adds scikit-learn's IsolationForest and OneClassSVM on the
      same rows.

  unsupjax anomaly one-class --dataset {digits,mnist,fashion_mnist} [--model ae]
      The one-class benchmark: one model per class, trained on that class's
      training images only, all classes at once (`jax.vmap` over stacked
      states, through `training.fit`); each is tested on the whole test
      split with its class normal and every other class anomalous. Reports
      AUROC per class and the mean.

A flag of the other mode is refused. Outputs in --workdir: run.json,
summary.json, scores.npy, roc.png (with labels), flags.csv (table),
worst.png (the highest-scoring test images of each class), metrics.jsonl,
status.json, curves.png and checkpoints/ (one-class). A --workdir that
holds a run is replaced only with --overwrite.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
import time
from typing import Any

import numpy as np

from unsupjax import anomaly
from unsupjax import config as config_lib
from unsupjax.config import UsageError, flag_error, option
from unsupjax.models import autoencoder, vae
from unsupjax.rng import check_seed, run_key
from unsupjax.tasks import base

HELP = ("anomaly detection: an autoencoder detector on a numeric CSV (`anomaly --csv "
        "FILE`) or the vmapped one-class benchmark (`anomaly one-class`)")
MODES = ("table", "one-class")
ONE_CLASS_MODELS = ("ae", "dae", "conv-ae", "vae")
# The VAE's scores the vmapped benchmark offers (IWAE's samples per example
# are not batched over stacked models).
ONE_CLASS_SCORES = {"vae": ("neg_elbo", "mse"), "ae": anomaly.AE_SCORES}
DEFAULT_CONTAMINATION = 0.05
N_WORST = 12
# Model names in run.json (what `unsupjax runs` lists) and what each writes.
RUN_MODELS = {"table": "anomaly-table", "one-class": "anomaly-one-class"}
OUTPUTS = {"table": (base.SUMMARY_FILE, "scores.npy", "flags.csv", "roc.png"),
           "one-class": (base.SUMMARY_FILE, "scores.npy", "roc.png", "worst.png",
                         "metrics.jsonl", "status.json", "curves.png", "checkpoints")}
# Defaults that depend on the mode (and, for one-class, the dataset).
TABLE_EPOCHS, TABLE_BATCH, TABLE_HIDDEN = 20, 64, (16,)
ONE_CLASS_EPOCHS = {"digits": 300}
ONE_CLASS_EPOCHS_OTHER = 30
ONE_CLASS_BATCH = {"digits": 32}
ONE_CLASS_BATCH_OTHER = 128

_TABLE = "table (the default mode)"
_ONE_CLASS = "one-class"
_THRESHOLD = "threshold"
_TRAIN = "model, training and run"


@dataclasses.dataclass(frozen=True)
class AnomalyConfig:
  mode: str = option("table", "table: score the rows of --csv (the default); one-class: "
                     "the one-class benchmark on an image dataset", positional=True,
                     choices=MODES)
  csv: str | None = option(None, "a numeric CSV with a header row", metavar="FILE",
                           group=_TABLE)
  label_column: str | None = option(None, "column of 0 (normal) / 1 (anomaly) labels: "
                                    "reported on, never trained on", group=_TABLE)
  drop_columns: tuple[str, ...] = option((), "columns to ignore (e.g. an id or a "
                                         "timestamp)", default_help="none", group=_TABLE)
  compare: bool = option(False, "also fit IsolationForest and OneClassSVM (scikit-learn) on "
                         "the same rows and report their AUROC", group=_TABLE)
  dataset: str | None = option(None, "a labelled image dataset: digits, mnist, "
                               "fashion_mnist, ...", default_help="digits", group=_ONE_CLASS)
  data_dir: str | None = option(None, "TFDS data directory", scope="local",
                                group=_ONE_CLASS)
  download: bool = option(True, "download a TFDS dataset that is not prepared",
                          scope="local", group=_ONE_CLASS)
  model: str | None = option(None, "the model of each class", choices=ONE_CLASS_MODELS,
                             default_help="ae", group=_ONE_CLASS)
  score: str | None = option(None, "anomaly score: mse or bce for the AEs; neg_elbo or mse "
                             "for the VAE", default_help="mse; neg_elbo for the VAE",
                             group=_ONE_CLASS)
  loss: str | None = option(None, "training loss of the AEs", choices=autoencoder.LOSSES,
                            default_help="bce", group=_ONE_CLASS)
  noise_level: float | None = option(None, "--model dae: standard deviation of the "
                                     "Gaussian corruption", default_help="0.3",
                                     group=_ONE_CLASS)
  classes: tuple[int, ...] | None = option(None, "the normal classes to run",
                                           default_help="all", group=_ONE_CLASS)
  contamination: float | None = option(
      None, "expected anomaly fraction of the training data: the threshold is that "
      "quantile of the training scores", default_help=f"{DEFAULT_CONTAMINATION} unless "
      "--target-fpr", group=_THRESHOLD)
  target_fpr: float | None = option(None, "instead: the threshold with at most this "
                                    "false-positive rate on a held-out split of the "
                                    "(assumed normal) training data", group=_THRESHOLD)
  validation_fraction: float = option(0.2, "the held-out fraction for --target-fpr",
                                      group=_THRESHOLD)
  hidden: tuple[int, ...] | None = option(None, "encoder hidden widths",
                                          default_help="16 for a table; the model's own "
                                          "for one-class", group=_TRAIN)
  latent_dim: int | None = option(None, "code size; a narrow code keeps the AE from "
                                  "reconstructing anomalies too", default_help="2 (1 for 2 "
                                  "features) for a table; the model's own for one-class",
                                  group=_TRAIN)
  epochs: int | None = option(None, "training epochs", default_help=f"{TABLE_EPOCHS} for a "
                              "table; one-class: 300 on digits, 30 otherwise", group=_TRAIN)
  batch_size: int | None = option(None, "examples per step (per class for one-class)",
                                  default_help=f"{TABLE_BATCH} for a table; one-class: 32 "
                                  "on digits, 128 otherwise; at most the training rows "
                                  "(of the smallest class)", group=_TRAIN)
  learning_rate: float = option(1e-3, "Adam learning rate", flag="lr", group=_TRAIN)
  seed: int = option(0, "seed of the run's PRNG key: same seed, same numbers", group=_TRAIN)
  workdir: str | None = option(None, "output directory", scope="local",
                               default_help="runs/anomaly-csv or runs/anomaly-DATASET",
                               group=_TRAIN)
  overwrite: bool = option(False, "replace the run already in --workdir", scope="local",
                           group=_TRAIN)
  cache_dir: str | None = option(None, "where decoded datasets are cached", scope="local",
                                 default_help="$UNSUPJAX_CACHE_DIR or ~/.cache/unsupjax",
                                 group=_TRAIN)
  progress: bool = option(True, "a progress bar on stderr", scope="local", group=_TRAIN)

  def __post_init__(self):
    if self.mode not in MODES:
      raise ValueError(f"mode: expected one of {MODES}, got {self.mode!r}")
    if self.mode == "one-class":
      for name in ("csv", "label_column", "drop_columns", "compare"):
        if getattr(self, name):
          raise ValueError(f"{name}: scores a table; not used by `anomaly one-class`")
    else:
      for name in ("dataset", "data_dir", "model", "score", "loss", "noise_level", "classes"):
        if getattr(self, name) is not None:
          raise ValueError(f"{name}: only used by `anomaly one-class`")
      if self.csv is None:
        raise ValueError("csv: expected a CSV file, or the `one-class` mode")
    if self.classes is not None and (not self.classes or len(set(self.classes)) !=
                                     len(self.classes)):
      raise ValueError(f"classes: expected distinct class labels, got {self.classes!r}")
    for name in ("epochs", "batch_size", "latent_dim"):
      v = getattr(self, name)
      if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
        raise ValueError(f"{name}: expected a positive integer, got {v!r}")
    if self.hidden is not None and (not self.hidden or any(
        isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in self.hidden)):
      raise ValueError(f"hidden: expected positive layer widths, got {self.hidden!r}")
    if not (isinstance(self.learning_rate, (int, float)) and self.learning_rate > 0
            and math.isfinite(self.learning_rate)):
      raise ValueError(f"learning_rate: expected a positive number, got {self.learning_rate!r}")
    check_seed(self.seed)
    for name in ("contamination", "target_fpr", "validation_fraction"):
      v = getattr(self, name)
      if v is not None and not (isinstance(v, (int, float)) and 0.0 < v < 1.0):
        raise ValueError(f"{name}: expected a fraction in (0, 1), got {v!r}")
    if self.contamination is not None and self.target_fpr is not None:
      raise ValueError("target_fpr: give either --contamination or --target-fpr, not both")
    model = self.model or "ae"
    if self.noise_level is not None:
      if model != "dae":
        raise ValueError(f"noise_level: only used by --model dae, got --model {model}")
      if not 0.0 < self.noise_level <= 1.0:
        raise ValueError(f"noise_level: expected a value in (0, 1], got {self.noise_level}")
    if self.loss is not None and model == "vae":
      raise ValueError("loss: the VAE trains on its ELBO; --loss is for the AEs")
    allowed = ONE_CLASS_SCORES["vae" if model == "vae" else "ae"]
    if self.score is not None and self.score not in allowed:
      raise ValueError(f"score: expected one of {allowed} for --model {model}, got "
                       f"{self.score!r}")


def _threshold_defaults(cfg: AnomalyConfig) -> dict[str, Any]:
  if cfg.contamination is None and cfg.target_fpr is None:
    return {"contamination": DEFAULT_CONTAMINATION}
  return {}


def run(cfg: AnomalyConfig) -> dict:
  """Runs `unsupjax anomaly` to the end; returns its summary."""
  return run_one_class(cfg) if cfg.mode == "one-class" else run_table(cfg)


# --------------------------------------------------------------------------
# Plots and files.


def save_roc(path, curves: dict[str, tuple[np.ndarray, np.ndarray]], title: str) -> None:
  """curves: label -> (scores, labels 1 = anomaly); one ROC line each."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  from sklearn.metrics import roc_curve

  fig, ax = plt.subplots(figsize=(5, 5))
  for name, (s, y) in curves.items():
    fpr, tpr, _ = roc_curve(y, s)
    ax.plot(fpr, tpr, lw=1, label=name)
  ax.plot([0, 1], [0, 1], "k:", lw=0.8)
  ax.set_xlabel("false-positive rate")
  ax.set_ylabel("true-positive rate (recall)")
  ax.set_title(title)
  ax.legend(fontsize=7, loc="lower right")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def _save_npy(path: pathlib.Path, array: np.ndarray) -> None:
  tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npy")
  np.save(tmp, array)
  os.replace(tmp, path)


# --------------------------------------------------------------------------
# One-class benchmark.


def one_class_model_config(cfg: AnomalyConfig):
  """The AEConfig / VAEConfig of every class's model (cfg resolved)."""
  kw: dict[str, Any] = {k: v for k, v in (("hidden", cfg.hidden),
                                          ("latent_dim", cfg.latent_dim)) if v is not None}
  try:
    if cfg.model == "vae":
      return vae.VAEConfig(learning_rate=cfg.learning_rate, **kw)
    kw.update(arch="conv" if cfg.model == "conv-ae" else "dense",
              learning_rate=cfg.learning_rate, loss=cfg.loss)
    if cfg.model == "dae":
      kw.update(corruption="gaussian", noise_level=cfg.noise_level)
    return autoencoder.AEConfig(**kw)
  except ValueError as e:
    raise flag_error(AnomalyConfig, e) from None


def resolve_one_class(cfg: AnomalyConfig) -> AnomalyConfig:
  """cfg with the one-class defaults filled in (batch_size stays None:
  it depends on the smallest class)."""
  from unsupjax import data as data_lib
  dataset = cfg.dataset or "digits"
  model = cfg.model or "ae"
  changes: dict[str, Any] = dict(
      dataset=dataset, model=model, **_threshold_defaults(cfg),
      epochs=cfg.epochs or ONE_CLASS_EPOCHS.get(dataset, ONE_CLASS_EPOCHS_OTHER),
      score=cfg.score or ("neg_elbo" if model == "vae" else "mse"),
      workdir=cfg.workdir or os.path.join("runs", f"anomaly-{dataset}"),
      cache_dir=cfg.cache_dir or str(data_lib.default_cache_dir()))
  if model != "vae":
    changes["loss"] = cfg.loss or "bce"
  if model == "dae" and cfg.noise_level is None:
    changes["noise_level"] = 0.3
  cfg = dataclasses.replace(cfg, **changes)
  model_cfg = one_class_model_config(cfg)
  return dataclasses.replace(cfg, hidden=tuple(model_cfg.hidden),
                             latent_dim=int(model_cfg.latent_dim))


def run_one_class(cfg: AnomalyConfig) -> dict:
  from unsupjax import plots, training
  from unsupjax.tasks import watch
  t_start = time.perf_counter()
  cfg = resolve_one_class(cfg)
  config = one_class_model_config(cfg)
  workdir = base.claim_workdir(RUN_MODELS["one-class"], cfg.workdir, cfg.overwrite,
                          OUTPUTS["one-class"])
  try:
    train_ds, test_ds = base.load_splits(cfg)
  except UsageError as e:               # "dataset: ..." -> "--dataset: ..."
    raise flag_error(AnomalyConfig, e) from None
  if train_ds.y is None or test_ds.y is None:
    raise UsageError(f"--dataset: {cfg.dataset} has no labels; the one-class protocol "
                     "needs them to define normal and anomalous")
  labels_present = sorted(set(np.unique(train_ds.y).tolist()))
  classes = list(cfg.classes) if cfg.classes is not None else labels_present
  unknown = sorted(set(classes) - set(labels_present))
  if unknown:
    raise UsageError(f"--classes: {unknown} not among the labels of {cfg.dataset}")
  try:
    config.check_input_shape(train_ds.image_shape)
  except ValueError as e:
    raise UsageError(f"--dataset: {cfg.dataset} images {train_ds.image_shape} do not fit "
                     f"--model {cfg.model}: {e}") from None
  _, counts = anomaly.class_rows(train_ds.y, classes)
  fit_counts = counts - (np.ceil(cfg.validation_fraction * counts).astype(int)
                         if cfg.target_fpr is not None else 0)
  smallest = int(fit_counts.min())
  if smallest < 1:
    raise UsageError(f"--validation-fraction: a class with {int(counts.min())} training "
                     f"images keeps none to train on after holding out {cfg.validation_fraction}")
  cfg = dataclasses.replace(cfg, classes=tuple(int(c) for c in classes))
  if cfg.batch_size is None:
    default = ONE_CLASS_BATCH.get(cfg.dataset, ONE_CLASS_BATCH_OTHER)
    cfg = dataclasses.replace(cfg, batch_size=min(default, smallest))
  elif cfg.batch_size > smallest:
    raise UsageError(f"--batch-size: expected at most {smallest} (training images of the "
                     f"smallest class), got {cfg.batch_size}")
  base.start_run(RUN_MODELS["one-class"], cfg, workdir, OUTPUTS["one-class"])

  flat = getattr(config, "arch", "dense") == "dense"
  as_input = (lambda ds: ds.flat()) if flat else (lambda ds: ds.x)
  monitor = watch.Monitor(workdir, RUN_MODELS["one-class"], cfg)
  try:
    result = anomaly.one_class_benchmark(
        config, cfg.score, as_input(train_ds), train_ds.y, as_input(test_ds), test_ds.y,
        classes, key=run_key(cfg.seed), epochs=cfg.epochs, batch_size=cfg.batch_size,
        contamination=cfg.contamination, target_fpr=cfg.target_fpr,
        validation_fraction=cfg.validation_fraction, workdir=workdir,
        checkpoint_every=cfg.epochs, progress=cfg.progress,
        desc=f"one-class {cfg.dataset}", observers=[monitor.observe],
        progress_keys=("train_loss",))
  except training.TrainingDiverged as e:
    monitor.stop("diverged", str(e), epoch=e.epoch, last_checkpoint=e.last_checkpoint)
    raise
  except ValueError as e:
    monitor.stop("interrupted", str(e))
    raise flag_error(AnomalyConfig, e) from None
  except BaseException as e:
    monitor.stop("interrupted", type(e).__name__)
    raise
  scores, labels = result.pop("scores"), result.pop("labels")
  result.pop("state")
  _save_npy(workdir / "scores.npy", scores)
  save_roc(workdir / "roc.png",
           {f"{c} (AUROC {a:.3f})": (scores[i], labels[i])
            for i, (c, a) in enumerate(zip(classes, result["auroc_per_class"]))},
           f"one-class {cfg.dataset}, {cfg.model}: mean AUROC {result['auroc_mean']:.3f}")
  worst = np.argsort(-scores, axis=1)[:, :N_WORST]
  plots.save_image_grid(workdir / "worst.png", [test_ds.x[w] for w in worst])
  summary = {"mode": "one-class", "dataset": cfg.dataset, "model": cfg.model,
             "score": cfg.score, "config": config_lib.to_record(cfg), **result,
             "wall_seconds": time.perf_counter() - t_start,
             "device": base.device_description()}
  base.write_json(workdir / base.SUMMARY_FILE, summary)
  monitor.finish(summary)
  print(f"one-class {cfg.dataset} ({cfg.model}, score {cfg.score}): mean AUROC "
        f"{summary['auroc_mean']:.4f} over {len(classes)} classes; training "
        f"{summary['train_seconds']:.1f} s (vmapped), total {summary['wall_seconds']:.1f} s "
        f"-> {workdir}")
  return summary


# --------------------------------------------------------------------------
# A table.


def _read_table(cfg: AnomalyConfig):
  from unsupjax import tables
  try:
    return tables.read_table(cfg.csv, kind="csv", label_column=cfg.label_column,
                             drop_columns=list(cfg.drop_columns), label_values=(0, 1))
  except tables.TableError as e:
    flag = {"label_column": "--label-column", "drop_columns": "--drop-columns"}
    raise UsageError(f"{flag.get(e.argument, '--csv')}: {e.message}") from None


def run_table(cfg: AnomalyConfig) -> dict:
  t_start = time.perf_counter()
  cfg = dataclasses.replace(cfg, epochs=cfg.epochs or TABLE_EPOCHS,
                            hidden=cfg.hidden or TABLE_HIDDEN, **_threshold_defaults(cfg),
                            workdir=cfg.workdir or os.path.join("runs", "anomaly-csv"))
  workdir = base.claim_workdir(RUN_MODELS["table"], cfg.workdir, cfg.overwrite, OUTPUTS["table"])
  table = _read_table(cfg)
  if table.report:
    print(table.report)
  x, y, features = table.x, table.y, list(table.names)
  if y is not None and y.min() == y.max():
    raise UsageError(f"--label-column: {cfg.label_column!r} holds only {int(y[0])}s; AUROC "
                     "needs both normal (0) and anomalous (1) rows")
  n_val = int(np.ceil(cfg.validation_fraction * len(x))) if cfg.target_fpr is not None else 0
  n_fit = len(x) - n_val
  if cfg.target_fpr is not None and min(n_val, n_fit) < 2:
    raise UsageError(f"--csv: {cfg.csv}: {len(x)} rows are too few to hold out "
                     f"--validation-fraction {cfg.validation_fraction} for --target-fpr "
                     "(at least 2 rows each to fit and to calibrate)")
  if cfg.batch_size is None:
    cfg = dataclasses.replace(cfg, batch_size=max(1, min(TABLE_BATCH, n_fit)))
  elif cfg.batch_size > n_fit:
    raise UsageError(f"--batch-size: expected at most {n_fit} (training rows), got "
                     f"{cfg.batch_size}")
  if cfg.latent_dim is None:
    cfg = dataclasses.replace(cfg, latent_dim=max(1, min(2, len(features) - 1)))
  try:
    config = autoencoder.AEConfig(hidden=cfg.hidden, latent_dim=cfg.latent_dim,
                                  learning_rate=cfg.learning_rate, loss="mse")
  except ValueError as e:
    raise flag_error(AnomalyConfig, e) from None
  base.start_run(RUN_MODELS["table"], cfg, workdir, OUTPUTS["table"])
  det = anomaly.AnomalyDetector(config, standardize=True, contamination=cfg.contamination,
                                target_fpr=cfg.target_fpr,
                                validation_fraction=cfg.validation_fraction,
                                epochs=cfg.epochs, batch_size=cfg.batch_size, seed=cfg.seed)
  t0 = time.perf_counter()
  try:
    det.fit(x)
  except ValueError as e:
    if str(e).startswith("X: "):       # the rows themselves
      raise UsageError(f"--csv: {cfg.csv}: {str(e)[3:]}") from None
    raise flag_error(AnomalyConfig, e) from None
  fit_seconds = time.perf_counter() - t0
  scores = det.score_samples(x)
  flags = (scores > det.threshold_).astype(np.int32)
  _save_npy(workdir / "scores.npy", scores)
  tmp = workdir / f".flags.csv.{os.getpid()}.tmp"
  with open(tmp, "w") as f:
    f.write("row,score,flag" + (",label" if y is not None else "") + "\n")
    for i in range(len(x)):
      f.write(f"{table.rows[i]},{scores[i]:.6g},{flags[i]}" +
              (f",{y[i]}" if y is not None else "") + "\n")
  os.replace(tmp, workdir / "flags.csv")
  summary = {"mode": "table", "csv": str(cfg.csv), "rows": int(len(x)),
             "dropped": table.report.as_dict(), "features": features,
             "label_column": cfg.label_column, "config": config_lib.to_record(cfg),
             "epochs": cfg.epochs, "threshold": float(det.threshold_),
             "calibration": det.calibration_, "flagged": int(flags.sum()),
             "flagged_fraction": float(flags.mean()), "fit_seconds": fit_seconds}
  if y is not None:
    realised = anomaly.rates(scores, y, det.threshold_)
    summary.update({"auroc": float(anomaly.auroc(scores, y)),
                    "average_precision": anomaly.average_precision(scores, y),
                    **{f"realised_{k}": v for k, v in realised.items()}})
    curves = {f"autoencoder (AUROC {summary['auroc']:.3f})": (scores, y)}
    if cfg.compare:
      summary["baselines"] = {}
      for name, s in baseline_scores(x, cfg.seed).items():
        a = float(anomaly.auroc(s, y))
        summary["baselines"][name] = {"auroc": a,
                                      "average_precision": anomaly.average_precision(s, y)}
        curves[f"{name} (AUROC {a:.3f})"] = (s, y)
    save_roc(workdir / "roc.png", curves, pathlib.Path(cfg.csv).name)
  summary["wall_seconds"] = time.perf_counter() - t_start
  base.write_json(workdir / base.SUMMARY_FILE, summary)
  line = (f"anomaly --csv {cfg.csv}: {summary['flagged']} of {len(x)} rows flagged "
          f"(threshold {det.threshold_:.4g})")
  if y is not None:
    line += (f"; AUROC {summary['auroc']:.4f}, AP {summary['average_precision']:.4f}, "
             f"FPR {summary['realised_fpr']:.3f}, recall {summary['realised_recall']:.3f}")
    for name, b in summary.get("baselines", {}).items():
      line += f"; {name} AUROC {b['auroc']:.4f}"
  print(line + f" -> {workdir}")
  return summary


def baseline_scores(x: np.ndarray, seed: int) -> dict[str, np.ndarray]:
  """Anomaly scores (higher = more anomalous) of scikit-learn's
  IsolationForest and OneClassSVM (RBF, gamma='scale', nu=0.5 defaults)
  fit on the standardised rows x."""
  from sklearn.ensemble import IsolationForest
  from sklearn.preprocessing import StandardScaler
  from sklearn.svm import OneClassSVM
  z = StandardScaler().fit_transform(x)
  iso = IsolationForest(random_state=seed).fit(z)
  svm = OneClassSVM().fit(z)
  return {"isolation_forest": -iso.score_samples(z),
          "one_class_svm": -svm.score_samples(z)}


COMMAND = base.Command("anomaly", HELP, AnomalyConfig, run)
