"""`unsupjax kmeans`: cluster a dataset, a CSV table or a .npy matrix.

Sources (at most one): `--dataset NAME` (digits or a TFDS image dataset;
images are flattened; digits when no source is given), `--csv FILE
[--columns ...]` (numeric columns, standardised; `unsupjax.tables` reads
it and says what it dropped; prints a per-cluster profile: size and mean
of each column in the CSV's units), or `--npy FILE` (a 2-D float matrix
such as text embeddings, usually with `--metric cosine`).

Prints inertia, iterations and time, and, when the data has labels,
clustering accuracy (Hungarian matching), NMI and ARI. Writes to --workdir
`run.json` (model "kmeans", the settings, as `unsupjax runs` reads them),
`summary.json`, `centroids.png` (image data) and `assignments.csv` (CSV and
.npy data: row, cluster). A --workdir that holds a run is replaced only
with --overwrite.

`base.claim_workdir` and `base.start_run` are the work-directory rules of the
commands that are not `train` (this one and `unsupjax anomaly`).
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import pathlib
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from unsupjax import config as config_lib
from unsupjax.config import UsageError, option
from unsupjax.rng import check_seed
from unsupjax.tasks import base

HELP = "k-means clustering of a dataset, a CSV table or a .npy matrix"
NAME = "kmeans"
DEFAULT_K = 8
DEFAULT_EPOCHS = 10  # passes over the data with --minibatch
INITS = ("k-means++", "k-means||", "random")    # unsupjax.kmeans.INITS
METRICS = ("euclidean", "cosine")               # unsupjax.kmeans.METRICS
# What a k-means run writes (what --overwrite replaces), besides run.json.
OUTPUTS = (base.SUMMARY_FILE, "centroids.png", "assignments.csv")

_SOURCE = "data (one of --dataset, --csv, --npy)"


@dataclasses.dataclass(frozen=True)
class KMeansConfig:
  dataset: str | None = option(None, "'digits' or a TFDS image dataset: mnist, "
                               "fashion_mnist, ...", default_help="digits, when neither "
                               "--csv nor --npy is given", group=_SOURCE)
  split: str = option("train", "dataset split (digits: train, test or all)", group=_SOURCE)
  data_dir: str | None = option(None, "TFDS data directory", scope="local", group=_SOURCE)
  download: bool = option(True, "download a TFDS dataset that is not prepared",
                          scope="local", group=_SOURCE)
  cache_dir: str | None = option(None, "where decoded datasets are cached", scope="local",
                                 default_help="$UNSUPJAX_CACHE_DIR or ~/.cache/unsupjax",
                                 group=_SOURCE)
  csv: str | None = option(None, "a CSV file with a header row; numeric columns are "
                           "standardised and clustered", metavar="FILE", group=_SOURCE)
  columns: tuple[str, ...] | None = option(None, "CSV columns to use",
                                           default_help="every numeric column",
                                           group=_SOURCE)
  npy: str | None = option(None, "a .npy file holding f32[n, d] vectors", metavar="FILE",
                           group=_SOURCE)
  k: int = option(DEFAULT_K, "number of clusters", group="k-means")
  init: str = option("k-means++", "initialisation", choices=INITS, group="k-means")
  n_init: int | None = option(None, "restarts, run vectorized; the lowest inertia wins",
                              default_help="1 for k-means++ and k-means||, 10 for random, "
                              "like scikit-learn", group="k-means")
  metric: str = option("euclidean", "cosine: spherical k-means on L2-normalised rows",
                       choices=METRICS, group="k-means")
  max_iter: int = option(300, "Lloyd iterations at most", group="k-means")
  tol: float = option(1e-4, "convergence tolerance, relative to the mean per-feature "
                      "variance (scikit-learn's)", group="k-means")
  minibatch: int | None = option(None, "mini-batch k-means with this batch size instead "
                                 "of Lloyd", metavar="BATCH", group="k-means")
  epochs: int | None = option(None, "passes over the data with --minibatch",
                              default_help=str(DEFAULT_EPOCHS), group="k-means")
  seed: int = option(0, "seed of the run's PRNG key: same seed, same clustering",
                     group="k-means")
  workdir: str | None = option(None, "output directory", scope="local",
                               default_help="runs/kmeans-SOURCE", group="run")
  overwrite: bool = option(False, "replace the run already in --workdir", scope="local",
                           group="run")
  parallel: str | None = option(None, "Lloyd's rows split over every device (sharded)",
                                choices=("none", "sharded"), scope="local",
                                default_help="sharded when more than one device is visible",
                                group="run")

  def __post_init__(self):
    given = [n for n in ("dataset", "csv", "npy") if getattr(self, n) is not None]
    if len(given) > 1:
      raise ValueError(f"{given[1]}: expected one data source, got both --{given[0]} "
                       f"and --{given[1]}")
    if self.columns is not None and self.csv is None:
      raise ValueError("columns: only applies with --csv")
    for name in ("k", "n_init", "max_iter", "minibatch", "epochs"):
      v = getattr(self, name)
      if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
        raise ValueError(f"{name}: expected a positive integer, got {v!r}")
    if not (isinstance(self.tol, (int, float)) and math.isfinite(self.tol) and self.tol >= 0):
      raise ValueError(f"tol: expected a number >= 0, got {self.tol!r}")
    if self.epochs is not None and self.minibatch is None:
      raise ValueError("epochs: only applies with --minibatch")
    if self.minibatch is not None and self.minibatch < self.k:
      raise ValueError(f"minibatch: expected at least --k = {self.k} rows (the first "
                       f"batch seeds the centroids), got {self.minibatch}")
    if self.parallel == "sharded" and self.minibatch is not None:
      raise ValueError("parallel: sharded k-means runs Lloyd's algorithm; drop "
                       "--minibatch or use --parallel none")
    check_seed(self.seed)

  @property
  def source(self) -> str:
    return "csv" if self.csv is not None else "npy" if self.npy is not None else "dataset"


# ----------------------------------------------------------------------------
# Work directories of the commands that are not `train`.


# ----------------------------------------------------------------------------
# Data.


def _read_table(path: str, kind: str, columns: Sequence[str] | None):
  """`tables.read_table` of the --csv or --npy file, its errors naming the flag."""
  from unsupjax import tables
  try:
    return tables.read_table(path, columns=None if columns is None else list(columns),
                             kind=kind)
  except tables.TableError as e:
    flag = "--columns" if e.argument == "columns" else f"--{kind}"
    raise UsageError(f"{flag}: {e.message}") from None


def _load(cfg: KMeansConfig) -> dict[str, Any]:
  if cfg.source == "csv":
    table = _read_table(cfg.csv, "csv", cfg.columns)
    raw = table.x
    mean, std = raw.mean(0), raw.std(0)
    std = np.where(std > 0, std, 1.0)
    return dict(x=((raw - mean) / std).astype(np.float32), raw=raw,
                names=list(table.names), rows=table.rows, report=table.report, y=None,
                image_shape=None, name=pathlib.Path(cfg.csv).stem)
  if cfg.source == "npy":
    table = _read_table(cfg.npy, "npy", None)
    return dict(x=table.x.astype(np.float32), rows=table.rows, report=table.report,
                y=None, image_shape=None, name=pathlib.Path(cfg.npy).stem)
  from unsupjax import data as data_lib
  try:
    ds = data_lib.load(cfg.dataset, cfg.split, data_dir=cfg.data_dir,
                       download=cfg.download, cache_dir=cfg.cache_dir)
  except data_lib.DatasetError as e:
    msg = str(e)
    raise config_lib.flag_error(KMeansConfig, ValueError(
        msg if msg.startswith(("dataset:", "split:")) else f"dataset: {msg}")) from None
  return dict(x=ds.flat(), y=ds.y, image_shape=ds.image_shape, rows=None, name=ds.name)


def resolve(cfg: KMeansConfig) -> KMeansConfig:
  """cfg with its defaults filled in (as run.json records them)."""
  from unsupjax import data as data_lib
  changes: dict[str, Any] = {}
  if cfg.source == "dataset" and cfg.dataset is None:
    changes["dataset"] = "digits"
  if cfg.n_init is None:
    changes["n_init"] = 10 if cfg.init == "random" else 1
  if cfg.minibatch is not None and cfg.epochs is None:
    changes["epochs"] = DEFAULT_EPOCHS
  if cfg.cache_dir is None:
    changes["cache_dir"] = str(data_lib.default_cache_dir())
  if cfg.workdir is None:
    path = {"csv": cfg.csv, "npy": cfg.npy}.get(cfg.source)
    name = pathlib.Path(path).stem if path else changes.get("dataset", cfg.dataset)
    changes["workdir"] = os.path.join("runs", f"kmeans-{name}")
  return dataclasses.replace(cfg, **changes) if changes else cfg


# ----------------------------------------------------------------------------
# Outputs.


def _profile_table(raw, names, labels, k) -> str:
  """Markdown table: cluster, size, mean of each column (CSV units)."""
  lines = ["| cluster | size | " + " | ".join(names) + " |",
           "|---|---|" + "---|" * len(names)]
  for j in range(k):
    sel = labels == j
    means = raw[sel].mean(0) if sel.any() else np.full(len(names), np.nan)
    lines.append(f"| {j} | {int(sel.sum())} | " +
                 " | ".join(f"{v:.6g}" for v in means) + " |")
  return "\n".join(lines)


def _write_assignments(path: pathlib.Path, rows, labels) -> None:
  tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
  with open(tmp, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["row", "cluster"])
    w.writerows(zip(np.asarray(rows).tolist(), np.asarray(labels).tolist()))
  os.replace(tmp, path)


def _save_centroids_png(path: pathlib.Path, centroids, image_shape) -> None:
  from unsupjax import plots
  imgs = np.asarray(centroids).reshape((-1,) + tuple(image_shape))
  lo, hi = imgs.min(), imgs.max()
  imgs = (imgs - lo) / (hi - lo) if hi > lo else np.zeros_like(imgs)
  per_row = min(16, len(imgs))
  n_rows = -(-len(imgs) // per_row)
  pad = n_rows * per_row - len(imgs)
  imgs = np.concatenate([imgs, np.full((pad,) + imgs.shape[1:], 0.5, imgs.dtype)])
  plots.save_image_grid(path, list(imgs.reshape((n_rows, per_row) + imgs.shape[1:])))


# ----------------------------------------------------------------------------
# The command.


def _cluster(cfg: KMeansConfig, x: np.ndarray):
  """(centroids, labels, inertia, n_iter, converged) of k-means on x."""
  import jax

  from unsupjax import kmeans, parallel
  from unsupjax.rng import named, run_key
  key = named(run_key(cfg.seed), "kmeans")
  if cfg.minibatch is not None:
    state, _ = kmeans.minibatch_fit_arrays(key, x, cfg.k, batch_size=cfg.minibatch,
                                           epochs=cfg.epochs, init=cfg.init,
                                           metric=cfg.metric)
    labels, inertia = kmeans.predict_with_inertia(state.centroids, x, metric=cfg.metric)
    return state.centroids, labels, float(inertia), int(state.step), None
  kw = dict(init=cfg.init, n_init=cfg.n_init, max_iter=cfg.max_iter, tol=cfg.tol,
            metric=cfg.metric)
  if parallel.resolve(cfg.parallel) == "sharded":
    mesh = jax.make_mesh((jax.device_count(),), ("data",))
    res = kmeans.fit_sharded(key, x, cfg.k, mesh=mesh, **kw)
  else:
    res = kmeans.fit(key, x, cfg.k, **kw)
  return (res.centroids, res.labels, float(res.inertia), int(res.n_iter),
          bool(res.converged))


def run(cfg: KMeansConfig) -> dict:
  """Runs `unsupjax kmeans` to the end; returns its summary."""
  t_start = time.perf_counter()
  cfg = resolve(cfg)
  for flag, path in (("--csv", cfg.csv), ("--npy", cfg.npy)):
    if path is not None and not os.path.isfile(path):
      raise UsageError(f"{flag}: expected an existing file, got {path!r}")
  workdir = base.claim_workdir(NAME, cfg.workdir, cfg.overwrite, OUTPUTS)
  d = _load(cfg)
  x = d["x"]
  n = x.shape[0]
  if cfg.k > n:
    raise UsageError(f"--k: expected at most {n} (rows of data), got {cfg.k}")
  if cfg.minibatch is not None and cfg.minibatch > n:
    raise UsageError(f"--minibatch: expected at most {n} (rows of data), got "
                     f"{cfg.minibatch}")
  base.start_run(NAME, cfg, workdir, OUTPUTS)

  import jax

  from unsupjax.metrics import clustering
  t0 = time.perf_counter()
  try:
    centroids, labels, inertia, n_iter, converged = _cluster(cfg, x)
  except ValueError as e:
    raise config_lib.flag_error(KMeansConfig, e) from None
  labels = np.asarray(labels)
  seconds = time.perf_counter() - t0

  summary: dict[str, Any] = {
      "command": NAME, "model": NAME, "source": cfg.source, "data": d["name"],
      "dataset": cfg.dataset, "n": int(n), "d": int(x.shape[1]), "k": cfg.k,
      "metric": cfg.metric, "init": cfg.init, "n_init": cfg.n_init,
      "minibatch": cfg.minibatch, "seed": cfg.seed, "inertia": inertia, "n_iter": n_iter,
      "converged": converged, "seconds": seconds,
      "cluster_sizes": np.bincount(labels, minlength=cfg.k).tolist(),
      "device": f"{jax.device_count()} x {jax.devices()[0].platform}",
  }
  print(f"k-means on {d['name']} ({n} x {x.shape[1]}), k={cfg.k}, {cfg.metric}: inertia "
        f"{inertia:.6g}, {'steps' if cfg.minibatch else 'iterations'} {n_iter}, "
        f"{seconds:.2f} s (compilation included)")
  if d.get("y") is not None:
    report = clustering.clustering_report(d["y"], labels)
    summary.update(report)
    print(f"ACC {report['acc']:.4f}  NMI {report['nmi']:.4f}  ARI {report['ari']:.4f}")
  if cfg.source != "dataset":
    if d["report"]:
      print(d["report"])
    summary["dropped"] = d["report"].as_dict()
  if cfg.source == "csv":
    summary["columns"] = d["names"]
    print(_profile_table(d["raw"], d["names"], labels, cfg.k))
  if d["rows"] is not None:
    _write_assignments(workdir / "assignments.csv", d["rows"], labels)
  if d["image_shape"] is not None:
    _save_centroids_png(workdir / "centroids.png", centroids, d["image_shape"])
  summary["wall_seconds"] = time.perf_counter() - t_start
  base.write_json(workdir / base.SUMMARY_FILE, summary)
  print(f"wrote {workdir}")
  return summary


COMMAND = base.Command(NAME, HELP, KMeansConfig, run)
