"""Deep clustering on the standard protocol: ACC / NMI / ARI, mean ± std over seeds.

All examples of the dataset (MNIST: the 70,000 train + test images), k = the
number of classes. Per seed: k-means on raw pixels, then one autoencoder
pretraining (`unsupjax train ae-kmeans`) whose workdir the other methods
reuse with --pretrained (`dec`, `idec`, `n2d`), each run as the CLI runs it
(a subprocess), so the numbers are the CLI's summary.json. Wall time per row
is pretraining + that method's clustering phase (the pretraining is shared,
so it is also reported on its own).

    nice -n 10 python benchmarks/deep_clustering.py --dataset mnist \
        --data-dir /work/shared/data/tfds --seeds 0 1 2 3 4

The autoencoder is pretrained with the CLI's default recipe (--recipe
dec-sgd: SGD lr 1, momentum 0.9, fan-in uniform kernels, 300 epochs);
`--recipe adam` (200 epochs unless --pretrain-epochs says otherwise)
writes deep_clustering_adam.json instead.

Runs that already left a summary.json in --runs-dir are not re-run (a killed
benchmark continues where it stopped). Fashion-MNIST: prepare it once with
`tfds build fashion_mnist --data_dir DIR` (needs the internet once), then pass
`--dataset fashion_mnist --data-dir DIR`.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import _bench  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
METHODS = ("ae-kmeans", "dec", "idec", "n2d")
PUBLISHED = {  # (ACC, NMI) on MNIST, from the papers / the Keras DEC re-implementation
    "kmeans-raw": "0.53-0.57", "ae-kmeans": "0.88 / 0.81 (Keras DEC)",
    "dec": "0.84 (paper), 0.91 / 0.87 (Keras)", "idec": "0.88 / 0.87",
    "n2d": "0.979 / 0.942",
}


def run_cli(args: list[str], log) -> None:
  _bench.run_cli(args, log, REPO)


def unfinished(wd: pathlib.Path, method: str) -> list[str]:
  """The flag that lets a run start in `wd` again after a killed benchmark
  left it unfinished (run.json, no summary.json): --resume where it can
  continue (dec/idec resume whichever phase was cut short; the others need
  a checkpoint), else --overwrite."""
  if not (wd / "run.json").exists():
    return []
  ckpt = wd / "checkpoints"
  can_resume = method in ("dec", "idec") or (ckpt.is_dir() and any(ckpt.iterdir()))
  return ["--resume"] if can_resume else ["--overwrite"]


def check_cached(wd: pathlib.Path, config: dict, want: dict) -> None:
  """Refuses a run in `wd` whose recorded config (summary.json's "config",
  the run.json record: field names such as n_clusters, learning_rate,
  n_components, n_neighbors) differs from what this benchmark asks for."""
  bad = [f"{k}={config.get(k)!r}, expected {v!r}" for k, v in want.items()
         if config.get(k) != v]
  if bad:
    raise SystemExit(f"{wd} holds a run with other settings ({'; '.join(bad)}): move it "
                     "away or choose another --runs-dir")


def raw_kmeans(dataset: str, data_dir: str | None, seed: int, n_init: int) -> dict:
  import jax
  import jax.numpy as jnp
  import numpy as np

  from unsupjax import data, kmeans
  from unsupjax.metrics import clustering as cm
  kw = dict(data_dir=data_dir, download=False)
  parts = [data.load(dataset, s, **kw) for s in ("train", "test")]
  x = np.concatenate([p.flat() for p in parts])
  y = np.concatenate([p.y for p in parts])
  t0 = time.perf_counter()
  km = kmeans.fit(jax.random.PRNGKey(seed), jnp.asarray(x), int(np.unique(y).size),
                  n_init=n_init)
  labels = np.asarray(km.labels)
  return {**cm.clustering_report(y, labels), "wall_seconds": time.perf_counter() - t0,
          "pretrain_seconds": 0.0, "cluster_seconds": time.perf_counter() - t0}


def main() -> None:
  sys.path.insert(0, str(REPO))
  from unsupjax.tasks import deep_clustering as task  # the CLI's recipes

  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--dataset", default="mnist")
  p.add_argument("--data-dir", default=None)
  p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS,
                 help="methods to run (cached runs of the others are reported too)")
  p.add_argument("--pretrain-epochs", type=int, default=None,
                 help="autoencoder pretraining epochs (default: 300 with --recipe "
                      "dec-sgd, 200 with adam)")
  p.add_argument("--epochs", type=int, default=10,
                 help="most epochs of the DEC / IDEC clustering phase")
  p.add_argument("--kmeans-init", type=int, default=3, help="restarts of raw k-means")
  p.add_argument("--pretrained-seed", type=int, default=None,
                 help="pretrain one autoencoder (this seed) and let every seed reuse it, "
                      "so the seeds vary only the clustering phase (cheaper)")
  p.add_argument("--ae-output", choices=("sigmoid", "linear"), default="linear",
                 help="the pretrained autoencoder's decoder output (--output of the CLI)")
  p.add_argument("--recipe", choices=tuple(task.RECIPES), default="dec-sgd",
                 help="autoencoder pretraining (--recipe of the CLI): the Keras DEC "
                      "recipe (SGD lr 1, momentum 0.9, U(+-1/sqrt(fan_in)) kernels), or "
                      "Adam (lr 1e-3) with Keras's default init")
  p.add_argument("--idec-optimizer", choices=("sgd", "adam"), default="adam",
                 help="IDEC's clustering-phase optimizer (--optimizer of the CLI)")
  p.add_argument("--skip-raw", action="store_true", help="no k-means on raw pixels")
  p.add_argument("--runs-dir", default=str(REPO / "runs" / "bench-deep-clustering"))
  p.add_argument("--json", default=None,
                 help="default: benchmarks/results/deep_clustering.json, or "
                      "deep_clustering_adam.json with --recipe adam")
  a = p.parse_args()
  if a.pretrain_epochs is None:  # the recipe's own budget, else 200
    a.pretrain_epochs = task.RECIPES[a.recipe].get("pretrain_epochs", 200)
  if a.json is None:
    suffix = "" if a.recipe == "dec-sgd" else f"_{a.recipe}"
    a.json = str(REPO / "benchmarks" / "results" / f"deep_clustering{suffix}.json")
  # One cache per autoencoder setting, so runs of another setting are never reused.
  setting = f"{a.ae_output}-output" + ("" if a.recipe == "adam" else f"-{a.recipe}")
  runs = pathlib.Path(a.runs_dir) / a.dataset / setting
  runs.mkdir(parents=True, exist_ok=True)
  log = lambda s: print(f"[{time.strftime('%H:%M:%S')}] {s}", file=sys.stderr, flush=True)
  common = ["--dataset", a.dataset, "--no-progress", "--no-download"]
  recipe = ["--recipe", a.recipe]
  if a.data_dir:
    common += ["--data-dir", a.data_dir]

  results: dict[str, list[dict]] = {}

  def table_and_json():
    rows = []
    for name, rs in results.items():
      def ms(key):
        return _bench.mean_std([r[key] for r in rs])
      def sec(key):
        return f"{statistics.mean(r[key] for r in rs):.0f}"
      rows.append([name, len(rs), ms("acc"), ms("nmi"), ms("ari"), sec("pretrain_seconds"),
                   sec("cluster_seconds"), sec("total_seconds"), PUBLISHED.get(name, "")])
    table = _bench.markdown_table(
        ["method", "seeds", "ACC", "NMI", "ARI", "pretrain s", "clustering s", "total s",
         "published ACC / NMI"], rows)
    payload = {"dataset": a.dataset, "seeds": a.seeds, "pretrained_seed": a.pretrained_seed,
               "pretrain_epochs": a.pretrain_epochs, "ae_output": a.ae_output,
               "recipe": a.recipe,
               "idec_optimizer": a.idec_optimizer,
               "cluster_epochs": a.epochs, "machine": _bench.machine(), "results": results,
               "table": table}
    _bench.write_json(a.json, payload)
    return table

  def want(method: str, seed: int, reuse: bool, pre_dir: pathlib.Path) -> dict:
    """The recorded settings a cached run of `method` must have."""
    w = {"dataset": a.dataset, "seed": seed, "output": a.ae_output, "n_clusters": None,
         "pretrain_epochs": a.pretrain_epochs}
    if method in ("dec", "idec"):
      w["epochs"] = a.epochs
    if method == "idec":
      w["optimizer"] = a.idec_optimizer
    if method == "n2d":
      w.update(n_components=None, n_neighbors=task.N2DFlags.n_neighbors)
    if method != "ae-kmeans" or reuse:
      w["pretrained"] = str(pre_dir)
    else:
      w["recipe"] = a.recipe
    return w

  for seed in a.seeds:
    raw_file = runs / f"kmeans-raw-s{seed}.json"
    if raw_file.exists():
      results.setdefault("kmeans-raw", []).append(json.loads(raw_file.read_text()))
    elif not a.skip_raw:
      log(f"seed {seed}: k-means on raw pixels")
      r = raw_kmeans(a.dataset, a.data_dir, seed, a.kmeans_init)
      r.update(seed=seed, total_seconds=r["wall_seconds"])
      raw_file.write_text(json.dumps(r))
      results.setdefault("kmeans-raw", []).append(r)
    table_and_json()
    ps = seed if a.pretrained_seed is None else a.pretrained_seed
    pre_dir = runs / f"ae-kmeans-s{ps}"
    reuse = ps != seed
    suffix = f"-ae{ps}" if reuse else ""
    pretrain_s = (json.loads((pre_dir / "summary.json").read_text())["pretrain_seconds"]
                  if reuse else None)
    for method in METHODS:  # runs --methods; reports every cached run too
      tag = "-adam" if method == "idec" and a.idec_optimizer == "adam" else ""
      wd = (pre_dir if method == "ae-kmeans" and not reuse
            else runs / f"{method}{tag}-s{seed}{suffix}")
      if not (wd / "summary.json").exists():
        if method not in a.methods:
          continue
        args = ["train", method, *common, "--seed", str(seed), "--workdir", str(wd),
                "--pretrain-epochs", str(a.pretrain_epochs), "--output", a.ae_output]
        if method in ("dec", "idec"):  # ae-kmeans and n2d train only the autoencoder
          args += ["--epochs", str(a.epochs)]
        if method != "ae-kmeans" or reuse:
          args += ["--pretrained", str(pre_dir)]
        else:
          args += recipe
        if method == "idec":
          args += ["--optimizer", a.idec_optimizer]
        args += unfinished(wd, method)
        run_cli(args, log)
      s = json.loads((wd / "summary.json").read_text())
      check_cached(wd, s["config"], want(method, seed, reuse, pre_dir))
      if method == "ae-kmeans" and not reuse:
        pretrain_s = s["pretrain_seconds"]
      if pretrain_s is None:
        continue
      r = {k: s[k] for k in ("acc", "nmi", "ari", "wall_seconds", "cluster_seconds")}
      r["pretrain_seconds"] = pretrain_s
      r["total_seconds"] = pretrain_s + s["cluster_seconds"]
      r["seed"] = seed
      r["ae_seed"] = ps
      for k in ("init_kmeans_acc", "cluster_steps", "stopped_by_tol"):
        if k in s:
          r[k] = s[k]
      results.setdefault(method, []).append(r)
      log(f"{method} seed {seed}: ACC {r['acc']:.4f} NMI {r['nmi']:.4f}")
      table_and_json()
  shared = ("" if a.pretrained_seed is None else
            f"; one autoencoder (seed {a.pretrained_seed}) shared by all seeds")
  print(f"Deep clustering on {a.dataset} (all train + test examples), "
        f"{a.pretrain_epochs} pretraining epochs{shared}; machine: {_bench.machine()}")
  print(table_and_json())


if __name__ == "__main__":
  main()
