"""`unsupjax anomaly`: anomaly detection from the command line.

Two modes:

  unsupjax anomaly one-class --dataset {digits,mnist,fashion_mnist} [--model ae]
      The one-class benchmark: one model per class, trained on that class's
      training images only, all classes at once (`jax.vmap` over stacked
      states); each is tested on the whole test split with its class normal
      and every other class anomalous. Reports AUROC per class and the mean.

  unsupjax anomaly --csv FILE [--label-column NAME] [--contamination C]
      A dense autoencoder on the standardised numeric columns of any CSV
      (fit on every row: the unsupervised outlier setting); writes the score
      and flag of every row. With a label column (0 normal / 1 anomaly, never
      trained on) it also reports AUROC, average precision and the threshold's
      realised FPR / recall; --compare adds scikit-learn's IsolationForest
      and OneClassSVM on the same rows.

Outputs in --workdir: summary.json, scores.npy, roc.png (with labels),
worst.png (image data: the highest-scoring test images), flags.csv (CSV).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import time

import numpy as np

from unsupjax import anomaly, autoencoder, plots, vae
from unsupjax.anomaly_detector import AnomalyDetector, CSVError, read_numeric_csv
from unsupjax.tasks import common

HELP = ("anomaly detection: the vmapped one-class benchmark (`anomaly one-class`) "
        "or an autoencoder detector on a numeric CSV (`anomaly --csv FILE`)")
ONE_CLASS_MODELS = ("ae", "dae", "conv-ae", "vae")
DEFAULT_CONTAMINATION = 0.05
N_WORST = 12


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--csv", default=None, metavar="FILE",
                      help="a numeric CSV with a header row (tabular mode)")
  parser.add_argument("--label-column", default=None,
                      help="column of 0 (normal) / 1 (anomaly) labels: reported on, "
                           "never trained on")
  parser.add_argument("--drop-columns", nargs="+", default=[],
                      help="columns to ignore (e.g. an id or a timestamp)")
  _calibration_flags(parser)
  parser.add_argument("--hidden", type=int, nargs="+", default=[16],
                      help="encoder hidden widths of the tabular AE")
  parser.add_argument("--latent-dim", type=int, default=None,
                      help="code size of the tabular AE (default: 2, or 1 for 2 features); "
                           "a narrow code keeps the AE from reconstructing anomalies too")
  parser.add_argument("--compare", action="store_true",
                      help="also fit IsolationForest and OneClassSVM (scikit-learn) "
                           "on the same rows and report their AUROC")
  _run_flags(parser, epochs=20, batch_size=64)
  sub = parser.add_subparsers(dest="mode", metavar="MODE")
  oc = sub.add_parser("one-class", help="the one-class benchmark on an image dataset",
                      description="Train one model per class at once (vmap) and report "
                                  "per-class AUROC.")
  oc.add_argument("--dataset", default="digits",
                  help="digits (default), mnist or fashion_mnist (any labelled TFDS "
                       "image dataset with 10 classes works)")
  oc.add_argument("--data-dir", default=None, help="TFDS data directory")
  oc.add_argument("--no-download", action="store_true")
  oc.add_argument("--model", choices=ONE_CLASS_MODELS, default="ae")
  oc.add_argument("--score", default=None,
                  help="anomaly score: mse (default) or bce for the AEs; neg_elbo "
                       "(default) or mse for the VAE")
  oc.add_argument("--hidden", type=int, nargs="+", default=None,
                  help="hidden widths (default: the model's own)")
  oc.add_argument("--latent-dim", type=int, default=None)
  oc.add_argument("--loss", choices=autoencoder.LOSSES, default="bce",
                  help="training loss of the AEs")
  oc.add_argument("--noise-level", type=float, default=0.3,
                  help="dae: standard deviation of the Gaussian corruption")
  oc.add_argument("--classes", type=int, nargs="+", default=None,
                  help="the normal classes to run (default: all)")
  _calibration_flags(oc)
  _run_flags(oc, epochs=None, batch_size=None)


def _calibration_flags(p: argparse.ArgumentParser) -> None:
  g = p.add_argument_group("threshold")
  g.add_argument("--contamination", type=float, default=None,
                 help="expected anomaly fraction of the training data: the threshold "
                      f"is that quantile of the training scores (default {DEFAULT_CONTAMINATION} "
                      "unless --target-fpr)")
  g.add_argument("--target-fpr", type=float, default=None,
                 help="instead: the threshold with at most this false-positive rate on a "
                      "held-out split of the (assumed normal) training data")
  g.add_argument("--validation-fraction", type=float, default=0.2,
                 help="the held-out fraction for --target-fpr")


def _run_flags(p: argparse.ArgumentParser, epochs: int | None, batch_size: int) -> None:
  g = p.add_argument_group("training and run")
  g.add_argument("--epochs", type=int, default=epochs,
                 help="epochs" + ("" if epochs else " (default: 30 on mnist-size data, "
                                  "300 on digits)"))
  g.add_argument("--batch-size", type=int, default=batch_size,
                 help=f"examples per step (default: {batch_size or '128; 32 on digits'})")
  g.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
  g.add_argument("--seed", type=int, default=0)
  g.add_argument("--workdir", default=None,
                 help="output directory (default: runs/anomaly-DATASET or runs/anomaly-csv)")
  g.add_argument("--cache-dir", default=None)
  g.add_argument("--no-progress", action="store_true", help="no per-epoch lines")


def _check_threshold_flags(args) -> None:
  if args.contamination is not None and args.target_fpr is not None:
    raise common.UsageError("--target-fpr: give either --contamination or --target-fpr, not both")
  for flag, v in (("--contamination", args.contamination), ("--target-fpr", args.target_fpr),
                  ("--validation-fraction", args.validation_fraction)):
    if v is not None and not 0.0 < v < 1.0:
      raise common.UsageError(f"{flag}: expected a fraction in (0, 1), got {v}")
  if args.contamination is None and args.target_fpr is None:
    args.contamination = DEFAULT_CONTAMINATION


def _check_run_flags(args) -> None:
  common.check_positive(args.epochs, "--epochs")
  common.check_positive(args.batch_size, "--batch-size")
  common.check_positive(args.lr, "--lr", float)
  if args.cache_dir is None:
    args.cache_dir = str(common.data_lib.default_cache_dir())


def _workdir(path: str) -> pathlib.Path:
  return common.writable_workdir(path)


def run(args: argparse.Namespace) -> dict:
  if args.mode == "one-class":
    if args.csv is not None:
      raise common.UsageError("--csv: not used with `anomaly one-class` (give one mode)")
    return run_one_class(args)
  if args.csv is None:
    raise common.UsageError("--csv: expected a CSV file, or the `one-class` mode")
  return run_csv(args)


# --------------------------------------------------------------------------
# Plots.


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


# --------------------------------------------------------------------------
# One-class benchmark.


def _one_class_config(args):
  if args.latent_dim is not None:
    common.check_positive(args.latent_dim, "--latent-dim")
  for h in args.hidden or ():
    common.check_positive(h, "--hidden")
  if args.model == "vae":
    kw = {"learning_rate": args.lr}
    if args.hidden:
      kw["hidden"] = tuple(args.hidden)
    if args.latent_dim:
      kw["latent_dim"] = args.latent_dim
    config = vae.VAEConfig(**kw)
    scores = anomaly.VAE_SCORES
    score = args.score or "neg_elbo"
    if score == "iwae":
      raise common.UsageError("--score: iwae is not offered in the vmapped benchmark "
                              "(use neg_elbo or mse)")
  else:
    kw = {"arch": "conv" if args.model == "conv-ae" else "dense", "learning_rate": args.lr,
          "loss": args.loss}
    if args.hidden:
      kw["hidden"] = tuple(args.hidden)
    if args.latent_dim:
      kw["latent_dim"] = args.latent_dim
    if args.model == "dae":
      if not 0.0 < args.noise_level <= 1.0:
        raise common.UsageError(
            f"--noise-level: expected a value in (0, 1], got {args.noise_level}")
      kw.update(corruption="gaussian", noise_level=args.noise_level)
    config = autoencoder.AEConfig(**kw)
    scores = anomaly.AE_SCORES
    score = args.score or "mse"
  if score not in scores:
    raise common.UsageError(f"--score: expected one of {scores} for --model {args.model}, "
                            f"got {score!r}")
  return config, score


def run_one_class(args: argparse.Namespace) -> dict:
  t_start = time.perf_counter()
  if args.epochs is None:
    args.epochs = 300 if args.dataset == "digits" else 30
  if args.batch_size is None:
    args.batch_size = 32 if args.dataset == "digits" else 128
  _check_run_flags(args)
  _check_threshold_flags(args)
  config, score = _one_class_config(args)
  ns = argparse.Namespace(dataset=args.dataset, data_dir=args.data_dir,
                          no_download=args.no_download, cache_dir=args.cache_dir,
                          batch_size=1)
  train_ds, test_ds = common.load_splits(ns, config.check_input_shape, args.model)
  if train_ds.y is None or test_ds.y is None:
    raise common.UsageError(f"--dataset: {args.dataset} has no labels; the one-class "
                            "protocol needs them to define normal and anomalous")
  classes = sorted(set(np.unique(train_ds.y).tolist())) if args.classes is None else args.classes
  unknown = sorted(set(classes) - set(np.unique(train_ds.y).tolist()))
  if unknown:
    raise common.UsageError(f"--classes: {unknown} not among the labels of {args.dataset}")
  flat = getattr(config, "arch", "dense") == "dense"
  as_input = (lambda ds: ds.flat()) if flat else (lambda ds: ds.x)
  train_x, test_x = as_input(train_ds), as_input(test_ds)
  xs, counts = anomaly.one_class_data(train_x, train_ds.y, classes)
  fit_counts = counts - (np.ceil(args.validation_fraction * counts).astype(int)
                         if args.target_fpr is not None else 0)
  if args.batch_size > fit_counts.min():
    raise common.UsageError(f"--batch-size: expected at most {fit_counts.min()} (training "
                            f"images of the smallest class), got {args.batch_size}")
  workdir = _workdir(args.workdir or os.path.join("runs", f"anomaly-{args.dataset}"))
  record = {"model": "anomaly-one-class", "config": {
      "dataset": args.dataset, "model": args.model, "score": score,
      "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
      "classes": list(classes), "contamination": args.contamination,
      "target_fpr": args.target_fpr, "model_config": _config_dict(config)}}
  (workdir / common.RUN_FILE).write_text(json.dumps(record, indent=2))

  result = anomaly.one_class_benchmark(
      config, score, xs, counts, test_x, test_ds.y, classes, epochs=args.epochs,
      batch_size=args.batch_size, seed=args.seed, contamination=args.contamination,
      target_fpr=args.target_fpr, validation_fraction=args.validation_fraction,
      log=None if args.no_progress else print, metrics_path=workdir / "metrics.jsonl")
  np.save(workdir / "scores.npy", result.pop("scores"))
  labels = result.pop("labels")
  scores = np.load(workdir / "scores.npy")
  save_roc(workdir / "roc.png",
           {f"{c} (AUROC {a:.3f})": (scores[i], labels[i])
            for i, (c, a) in enumerate(zip(classes, result["auroc_per_class"]))},
           f"one-class {args.dataset}, {args.model}: mean AUROC {result['auroc_mean']:.3f}")
  worst = np.argsort(-scores, axis=1)[:, :N_WORST]
  plots.save_image_grid(workdir / "worst.png", [test_ds.x[w] for w in worst])
  summary = {"mode": "one-class", **record["config"], **result,
             "wall_seconds": time.perf_counter() - t_start,
             "device": common.device_description()}
  common.write_summary(workdir, summary)
  print(f"one-class {args.dataset} ({args.model}, score {score}): mean AUROC "
        f"{summary['auroc_mean']:.4f} over {len(classes)} classes; training "
        f"{summary['train_seconds']:.1f} s (vmapped), total {summary['wall_seconds']:.1f} s "
        f"-> {workdir}")
  return summary


def _config_dict(config) -> dict:
  import dataclasses
  return {k: list(v) if isinstance(v, tuple) else v
          for k, v in dataclasses.asdict(config).items()}


# --------------------------------------------------------------------------
# Tabular CSV.


def run_csv(args: argparse.Namespace) -> dict:
  t_start = time.perf_counter()
  _check_run_flags(args)
  _check_threshold_flags(args)
  for h in args.hidden:
    common.check_positive(h, "--hidden")
  if args.latent_dim is not None:
    common.check_positive(args.latent_dim, "--latent-dim")
  if args.label_column is not None and args.label_column in args.drop_columns:
    raise common.UsageError(f"--drop-columns: {args.label_column!r} is the --label-column")
  try:
    x, y, features = read_numeric_csv(args.csv, args.label_column, tuple(args.drop_columns))
  except CSVError as e:
    raise common.UsageError(f"--csv: {e}") from None
  if y is not None and (y.min() == y.max()):
    raise common.UsageError(f"--label-column: {args.label_column!r} holds only "
                            f"{int(y[0])}s; AUROC needs both normal (0) and anomalous (1) rows")
  latent = args.latent_dim or max(1, min(2, len(features) - 1))
  config = autoencoder.AEConfig(hidden=tuple(args.hidden), latent_dim=latent,
                                learning_rate=args.lr, loss="mse")
  n_fit = len(x) - (int(np.ceil(args.validation_fraction * len(x)))
                    if args.target_fpr is not None else 0)
  if args.batch_size > n_fit:
    raise common.UsageError(f"--batch-size: expected at most {n_fit} (training rows), "
                            f"got {args.batch_size}")
  workdir = _workdir(args.workdir or os.path.join("runs", "anomaly-csv"))
  det = AnomalyDetector(config, standardize=True, contamination=args.contamination,
                        target_fpr=args.target_fpr,
                        validation_fraction=args.validation_fraction,
                        epochs=args.epochs, batch_size=args.batch_size, seed=args.seed)
  t0 = time.perf_counter()
  det.fit(x)
  fit_seconds = time.perf_counter() - t0
  scores = det.score_samples(x)
  flags = (scores > det.threshold_).astype(np.int32)
  np.save(workdir / "scores.npy", scores)
  with open(workdir / "flags.csv", "w") as f:
    f.write("row,score,flag" + (",label" if y is not None else "") + "\n")
    for i in range(len(x)):
      f.write(f"{i},{scores[i]:.6g},{flags[i]}" + (f",{y[i]}" if y is not None else "") + "\n")
  summary = {"mode": "csv", "csv": str(args.csv), "rows": int(len(x)),
             "features": features, "label_column": args.label_column,
             "config": {"hidden": list(config.hidden), "latent_dim": latent,
                        "epochs": args.epochs, "batch_size": args.batch_size,
                        "lr": args.lr, "seed": args.seed},
             "threshold": float(det.threshold_), "calibration": det.calibration_,
             "flagged": int(flags.sum()), "flagged_fraction": float(flags.mean()),
             "fit_seconds": fit_seconds}
  if y is not None:
    realised = anomaly.rates(scores, y, det.threshold_)
    summary.update({"auroc": float(anomaly.auroc(scores, y)),
                    "average_precision": anomaly.average_precision(scores, y),
                    **{f"realised_{k}": v for k, v in realised.items()}})
    curves = {f"autoencoder (AUROC {summary['auroc']:.3f})": (scores, y)}
    if args.compare:
      summary["baselines"] = {}
      for name, s in baseline_scores(x, args.seed).items():
        a = float(anomaly.auroc(s, y))
        summary["baselines"][name] = {"auroc": a,
                                      "average_precision": anomaly.average_precision(s, y)}
        curves[f"{name} (AUROC {a:.3f})"] = (s, y)
    save_roc(workdir / "roc.png", curves, f"{pathlib.Path(args.csv).name}")
  summary["wall_seconds"] = time.perf_counter() - t_start
  common.write_summary(workdir, summary)
  line = (f"anomaly --csv {args.csv}: {summary['flagged']} of {len(x)} rows flagged "
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
