"""`unsupjax kmeans`: cluster a dataset, a CSV table or a .npy matrix.

Sources (exactly one): `--dataset NAME` (digits or a TFDS image dataset;
images are flattened), `--csv FILE [--columns ...]` (numeric columns,
standardised; rows with missing values are reported and skipped; prints a
per-cluster profile: size and mean of each column in the CSV's units), or
`--npy FILE` (a 2-D float matrix such as text embeddings, usually with
`--metric cosine`).

Prints inertia, iterations and time, and, when the data has labels,
clustering accuracy (Hungarian matching), NMI and ARI. Writes to --workdir
`summary.json`, `centroids.png` (image data) and `assignments.csv` (CSV and
.npy data: row, cluster).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import pathlib
import time
from typing import Any

import numpy as np

from unsupjax.tasks.common import UsageError

HELP = "k-means clustering of a dataset, a CSV table or a .npy matrix"

DEFAULT_K = 8
DEFAULT_EPOCHS = 10  # passes over the data with --minibatch


def add_arguments(parser: argparse.ArgumentParser) -> None:
  src = parser.add_argument_group("data (one of --dataset, --csv, --npy)")
  src.add_argument("--dataset", default=None,
                   help="'digits' or a TFDS image dataset: mnist, fashion_mnist, ...")
  src.add_argument("--split", default="train",
                   help="dataset split (digits: train, test or all)")
  src.add_argument("--data-dir", default=None, help="TFDS data directory")
  src.add_argument("--no-download", action="store_true",
                   help="never try to download a dataset that is not prepared")
  src.add_argument("--cache-dir", default=None,
                   help="where decoded datasets are cached")
  src.add_argument("--csv", default=None, metavar="FILE",
                   help="a CSV file with a header row; numeric columns are "
                        "standardised and clustered")
  src.add_argument("--columns", nargs="+", default=None,
                   help="CSV columns to use (default: every numeric column)")
  src.add_argument("--npy", default=None, metavar="FILE",
                   help="a .npy file holding f32[n, d] vectors")
  m = parser.add_argument_group("k-means")
  m.add_argument("--k", type=int, default=DEFAULT_K, help="number of clusters")
  m.add_argument("--init", default="k-means++", choices=("k-means++", "k-means||", "random"))
  m.add_argument("--n-init", type=int, default=None,
                 help="restarts, run vectorized; the lowest inertia wins "
                      "(default: 1 for k-means++, 10 for random, like scikit-learn)")
  m.add_argument("--metric", default="euclidean", choices=("euclidean", "cosine"),
                 help="cosine: spherical k-means on L2-normalised rows")
  m.add_argument("--max-iter", type=int, default=300)
  m.add_argument("--tol", type=float, default=1e-4,
                 help="relative to the mean per-feature variance (scikit-learn's)")
  m.add_argument("--minibatch", type=int, default=None, metavar="BATCH",
                 help="mini-batch k-means with this batch size instead of Lloyd")
  m.add_argument("--epochs", type=int, default=None,
                 help=f"passes over the data with --minibatch (default {DEFAULT_EPOCHS})")
  m.add_argument("--seed", type=int, default=0,
                 help="seed of the PRNG key: same seed, same clustering")
  parser.add_argument("--workdir", default=None,
                      help="output directory (default: runs/kmeans-SOURCE)")
  parser.add_argument("--parallel", choices=("none", "sharded"), default=None,
                      help="Lloyd's rows split over every device (sharded; the "
                           "default when more than one device is visible)")


# ----------------------------------------------------------------------------
# Validation and data.


def _positive(value, flag: str) -> None:
  if value is not None and (not isinstance(value, int) or value < 1):
    raise UsageError(f"{flag}: expected a positive integer, got {value!r}")


def _check_args(args: argparse.Namespace) -> str:
  """Checks flags that need no data; returns the source kind."""
  given = [f for f, v in (("--dataset", args.dataset), ("--csv", args.csv),
                          ("--npy", args.npy)) if v is not None]
  if len(given) > 1:
    raise UsageError(f"{given[1]}: expected one data source, got both "
                     f"{given[0]} and {given[1]}")
  if args.columns is not None and args.csv is None:
    raise UsageError("--columns: only applies with --csv")
  for flag in ("k", "n_init", "max_iter", "minibatch", "epochs"):
    _positive(getattr(args, flag), "--" + flag.replace("_", "-"))
  if not (math.isfinite(args.tol) and args.tol >= 0):
    raise UsageError(f"--tol: expected a number >= 0, got {args.tol!r}")
  if args.epochs is not None and args.minibatch is None:
    raise UsageError("--epochs: only applies with --minibatch")
  for flag, path in (("--csv", args.csv), ("--npy", args.npy)):
    if path is not None and not os.path.isfile(path):
      raise UsageError(f"{flag}: expected an existing file, got {path!r}")
  if not given:
    args.dataset = "digits"
  return "csv" if args.csv else "npy" if args.npy else "dataset"


def _read_csv(path: str, columns: list[str] | None):
  """(x f64[n, d], names, kept row numbers, skipped row numbers): the numeric
  columns (or `columns`), rows with a missing value skipped (and reported)."""
  from unsupjax import data as data_lib
  try:
    header, rows = data_lib.read_csv_rows(path)
  except data_lib.CSVError as e:
    raise UsageError(f"--csv: {e}") from None

  def column(j: int) -> np.ndarray | None:
    try:
      return data_lib.csv_column(rows, j, header[j])
    except data_lib.CSVError:
      return None

  if columns is None:
    values = {j: v for j in range(len(header)) if (v := column(j)) is not None}
    if not values:
      raise UsageError(f"--csv: {path} has no numeric column (columns: "
                       f"{', '.join(header)})")
  else:
    missing = [c for c in columns if c not in header]
    if missing:
      raise UsageError(f"--columns: {', '.join(missing)} not in {path} "
                       f"(columns: {', '.join(header)})")
    values = {header.index(c): column(header.index(c)) for c in columns}
    bad = [header[j] for j, v in values.items() if v is None]
    if bad:
      raise UsageError(f"--columns: expected numeric columns, {', '.join(bad)} "
                       "holds text")
  x = np.stack(list(values.values()), axis=1)
  ok = np.isfinite(x).all(axis=1)
  return x[ok], [header[j] for j in values], np.nonzero(ok)[0], np.nonzero(~ok)[0]


def _load(args: argparse.Namespace, kind: str) -> dict[str, Any]:
  if kind == "csv":
    raw, names, kept, skipped = _read_csv(args.csv, args.columns)
    mean, std = raw.mean(0), raw.std(0)
    std = np.where(std > 0, std, 1.0)
    return dict(x=((raw - mean) / std).astype(np.float32), raw=raw,
                names=names, rows=kept, skipped=skipped, y=None,
                image_shape=None, name=pathlib.Path(args.csv).stem)
  if kind == "npy":
    try:
      x = np.load(args.npy, allow_pickle=False)
    except (ValueError, OSError) as e:
      raise UsageError(f"--npy: cannot read {args.npy} ({e})") from None
    if x.ndim != 2 or x.dtype.kind not in "fiu":
      raise UsageError(f"--npy: expected a 2-D numeric array, got "
                       f"{x.dtype}{list(x.shape)}")
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
      raise UsageError(f"--npy: expected finite values, found NaN/Inf in "
                       f"{int(bad.sum())} rows (first: "
                       f"{np.nonzero(bad)[0][:5].tolist()})")
    return dict(x=x.astype(np.float32), rows=np.arange(len(x)), y=None,
                image_shape=None, name=pathlib.Path(args.npy).stem)
  from unsupjax import data as data_lib
  try:
    ds = data_lib.load(args.dataset, args.split, data_dir=args.data_dir,
                       download=not args.no_download,
                       cache_dir=args.cache_dir or True)
  except data_lib.DatasetError as e:
    msg = str(e)
    raise UsageError(msg if msg.startswith(("dataset:", "split:"))
                     else f"--dataset: {msg}") from None
  return dict(x=ds.flat(), y=ds.y, image_shape=ds.image_shape, rows=None,
              name=ds.name)


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
  with open(path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["row", "cluster"])
    w.writerows(zip(np.asarray(rows).tolist(), np.asarray(labels).tolist()))


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


def run(args: argparse.Namespace) -> dict:
  kind = _check_args(args)
  d = _load(args, kind)
  x = d["x"]
  n = x.shape[0]
  if args.k > n:
    raise UsageError(f"--k: expected at most {n} (rows of data), got {args.k}")
  if args.minibatch is not None and args.minibatch > n:
    raise UsageError(f"--minibatch: expected at most {n} (rows of data), got "
                     f"{args.minibatch}")
  if args.minibatch is not None and args.minibatch < args.k:
    raise UsageError(f"--minibatch: expected at least --k = {args.k} rows "
                     f"(the first batch seeds the centroids), got {args.minibatch}")
  workdir = pathlib.Path(args.workdir or os.path.join("runs", f"kmeans-{d['name']}"))
  try:
    workdir.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise UsageError(f"--workdir: expected a writable directory, got "
                     f"{str(workdir)!r} ({e.strerror or e})") from None

  import jax
  from unsupjax import kmeans
  from unsupjax.metrics import clustering

  n_init = args.n_init or (10 if args.init == "random" else 1)
  key = jax.random.key(args.seed)
  t0 = time.perf_counter()
  from unsupjax import parallel
  if args.parallel == "sharded" and args.minibatch is not None:
    raise UsageError("--parallel: sharded k-means runs Lloyd's algorithm; "
                     "drop --minibatch or use --parallel none")
  sharded = args.minibatch is None and parallel.resolve(args.parallel) == "sharded"
  if sharded:
    mesh = jax.make_mesh((jax.device_count(),), ("data",))
    res = kmeans.fit_sharded(key, x, args.k, mesh=mesh, init=args.init,
                             n_init=n_init, max_iter=args.max_iter, tol=args.tol,
                             metric=args.metric)
  elif args.minibatch is None:
    res = kmeans.fit(key, x, args.k, init=args.init, n_init=n_init,
                     max_iter=args.max_iter, tol=args.tol, metric=args.metric)
  if args.minibatch is None:
    centroids, labels = res.centroids, res.labels
    inertia = float(res.inertia)
    n_iter, converged = int(res.n_iter), bool(res.converged)
  else:
    state, _ = kmeans.minibatch_fit_arrays(
        key, x, args.k, batch_size=args.minibatch,
        epochs=args.epochs or DEFAULT_EPOCHS, init=args.init,
        metric=args.metric)
    centroids = state.centroids
    labels, inertia = kmeans.predict_with_inertia(centroids, x,
                                                  metric=args.metric)
    inertia = float(inertia)
    n_iter, converged = int(state.step), None
  labels = np.asarray(labels)
  seconds = time.perf_counter() - t0

  summary: dict[str, Any] = {
      "command": "kmeans", "source": kind, "data": d["name"], "n": int(n),
      "d": int(x.shape[1]), "k": args.k, "metric": args.metric,
      "init": args.init, "n_init": n_init, "minibatch": args.minibatch,
      "seed": args.seed, "inertia": inertia, "n_iter": n_iter,
      "converged": converged, "seconds": seconds,
      "cluster_sizes": np.bincount(labels, minlength=args.k).tolist(),
      "device": f"{jax.device_count()} x {jax.devices()[0].platform}",
  }
  print(f"k-means on {d['name']} ({n} x {x.shape[1]}), k={args.k}, "
        f"{args.metric}: inertia {inertia:.6g}, "
        f"{'steps' if args.minibatch else 'iterations'} {n_iter}, "
        f"{seconds:.2f} s (compilation included)")
  if d.get("y") is not None:
    report = clustering.clustering_report(d["y"], labels)
    summary.update(report)
    print(f"ACC {report['acc']:.4f}  NMI {report['nmi']:.4f}  "
          f"ARI {report['ari']:.4f}")
  if kind == "csv":
    if len(d["skipped"]):
      print(f"skipped {len(d['skipped'])} rows with missing values "
            f"(data rows {d['skipped'][:10].tolist()}"
            f"{' ...' if len(d['skipped']) > 10 else ''})")
    summary["skipped_rows"] = d["skipped"].tolist()
    summary["columns"] = d["names"]
    table = _profile_table(d["raw"], d["names"], labels, args.k)
    print(table)
  if d["rows"] is not None:
    _write_assignments(workdir / "assignments.csv", d["rows"], labels)
  if d["image_shape"] is not None:
    _save_centroids_png(workdir / "centroids.png", centroids, d["image_shape"])
  tmp = workdir / "summary.json.tmp"
  tmp.write_text(json.dumps(summary, indent=2, sort_keys=True))
  os.replace(tmp, workdir / "summary.json")
  print(f"wrote {workdir}")
  return summary
