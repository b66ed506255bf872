"""Anomaly detection benchmarks: one-class MNIST (vmapped) and breast cancer.

1. One-class MNIST: ten dense autoencoders, one per digit, each trained on
   that digit's training images only, all ten at once with `jax.vmap`;
   each scores the whole test split (its digit normal, the nine others
   anomalous). Prints the per-class AUROC table, the mean, and the wall time
   of the vmapped training; also times a few epochs of the same ten models
   trained one after the other (the same compiled per-class function) for
   the speed-up ratio, measured in this run.
2. Breast cancer (scikit-learn's bundled WDBC, malignant = anomaly): the
   tabular AE detector against scikit-learn's IsolationForest and
   OneClassSVM (and PCA reconstruction error) on the same rows, several
   seeds, mean ± std, in two protocols: `contaminated` (all 357 benign rows
   plus 10 random malignant ones, fit and scored together: the unsupervised
   outlier setting, as ODDS builds `wdbc`) and `novelty` (fit on a random
   half of the benign rows, score the other half with all 212 malignant
   rows).

Run:  nice -n 10 env JAX_PLATFORMS=cpu PYTHONPATH=. python benchmarks/anomaly.py \
        --data-dir /work/shared/data/tfds --json benchmarks/results/anomaly.json
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import _bench  # noqa: E402


def one_class_mnist(args) -> dict:
  import jax
  import numpy as np

  from unsupjax import anomaly, data, rng, training
  from unsupjax.models import autoencoder

  kw = dict(data_dir=args.data_dir, download=False)
  tr, te = data.load(args.dataset, "train", **kw), data.load(args.dataset, "test", **kw)
  classes = list(range(10))
  x, y = tr.flat(), tr.y
  config = autoencoder.AEConfig(hidden=tuple(args.hidden), latent_dim=args.latent_dim)
  key = rng.run_key(0)  # the keys of `unsupjax anomaly one-class --seed 0`
  t0 = time.perf_counter()
  r = anomaly.one_class_benchmark(config, args.score, x, y, te.flat(), te.y, classes,
                                  key=key, epochs=args.epochs, batch_size=args.batch_size,
                                  contamination=0.05, progress=False)
  wall = time.perf_counter() - t0
  for k in ("scores", "labels", "state"):
    r.pop(k)

  # Speed-up: the same steps (the run's own order, from its data key), one
  # class at a time (one compiled per-class program, called ten times) vs
  # the ten vmapped, over `timing_epochs` epochs as one scan of steps.
  rows, counts = anomaly.class_rows(y, classes)
  steps = anomaly.steps_per_epoch_for(counts, args.batch_size)
  order = anomaly.class_order(rng.named(key, "data"), rows, counts, args.batch_size, steps,
                              classes)
  ids = np.concatenate([order(e) for e in range(1, args.timing_epochs + 1)])  # [s, k, b]
  step_key = rng.named(key, "steps")
  stacked = anomaly.init_one_class(autoencoder, config, x[:1], key, classes)
  x_d, ids_d = jax.device_put(x), jax.device_put(ids)
  vm = jax.jit(training.make_steps_fn(anomaly.stacked_step(autoencoder.train_step)))
  one = jax.jit(training.make_steps_fn(autoencoder.train_step))
  # Slices of the stack: the same static fields (optimizer), one compile;
  # class c's step key as stacked_step derives it.
  singles = [jax.tree.map(lambda a, i=i: a[i], stacked.states) for i in range(len(classes))]
  single_ids = [ids_d[:, i] for i in range(len(classes))]
  single_keys = [jax.random.fold_in(step_key, c) for c in classes]
  vm_c = training.compile_lowered(vm.lower(stacked, x_d, ids_d, step_key))
  one_c = training.compile_lowered(one.lower(singles[0], x_d, single_ids[0], single_keys[0]))
  t_vmap = _bench.median_seconds(
      lambda: jax.block_until_ready(vm_c(stacked, x_d, ids_d, step_key)), repeats=3)
  t_seq = _bench.median_seconds(
      lambda: jax.block_until_ready([one_c(singles[i], x_d, single_ids[i], single_keys[i])
                                     for i in range(len(classes))]), repeats=3)
  return {"dataset": args.dataset, "model": "dense AE", "hidden": args.hidden,
          "latent_dim": args.latent_dim, "score": args.score, "epochs": args.epochs,
          "batch_size": args.batch_size, **r, "benchmark_wall_seconds": wall,
          "timing_epochs": args.timing_epochs, "vmapped_seconds": t_vmap,
          "sequential_seconds": t_seq, "vmap_speedup": t_seq / t_vmap}


def _protocol(x, y, protocol: str, seed: int):
  """(fit rows, test rows, test labels) of one protocol and seed."""
  import numpy as np
  rng = np.random.default_rng(seed)
  benign, malignant = np.nonzero(y == 0)[0], np.nonzero(y == 1)[0]
  if protocol == "contaminated":
    # All benign rows plus 10 random malignant ones (2.7%), fit and scored
    # together: how ODDS builds its `wdbc` outlier set.
    idx = np.r_[benign, rng.choice(malignant, 10, replace=False)]
    return x[idx], x[idx], y[idx]
  benign = rng.permutation(benign)
  half = len(benign) // 2
  test_idx = np.r_[benign[half:], malignant]
  return x[benign[:half]], x[test_idx], y[test_idx]


def breast_cancer(args) -> dict:
  import numpy as np
  from sklearn.datasets import load_breast_cancer

  from unsupjax import anomaly
  from unsupjax.anomaly import AnomalyDetector
  from unsupjax.models import autoencoder

  bc = load_breast_cancer()
  x = bc.data.astype(np.float64)
  y = (bc.target == 0).astype(int)  # sklearn: 0 = malignant
  configs = [tuple(int(v) for v in c.split(":")) for c in args.tab_configs]
  out = {"protocols": {}, "seeds": args.seeds, "batch_size": args.tab_batch_size}
  for protocol in ("contaminated", "novelty"):
    rows = {}
    for seed in range(args.seeds):
      fit_x, test_x, test_y = _protocol(x, y, protocol, seed)
      for hidden, latent, epochs in configs:
        det = AnomalyDetector(
            autoencoder.AEConfig(hidden=(hidden,), latent_dim=latent, loss="mse"),
            standardize=True, contamination=0.05, epochs=epochs,
            batch_size=args.tab_batch_size, seed=seed).fit(fit_x)
        rows.setdefault(f"autoencoder {hidden}-{latent}, {epochs} epochs", []).append(
            float(anomaly.auroc(det.score_samples(test_x), test_y)))
      for name, s in _baselines_fit_score(fit_x, test_x, seed).items():
        rows.setdefault(name, []).append(float(anomaly.auroc(s, test_y)))
    out["protocols"][protocol] = {
        k: {"auroc_mean": float(np.mean(v)), "auroc_std": float(np.std(v)),
            "auroc_per_seed": v} for k, v in rows.items()}
  return out


def _baselines_fit_score(fit_x, test_x, seed):
  """Anomaly scores (higher = worse) on the test rows of detectors fit on
  the standardised fit rows: scikit-learn's IsolationForest and
  OneClassSVM (defaults), and the reconstruction error of PCA with 8
  components (a linear autoencoder: same principle, no training)."""
  import numpy as np
  from sklearn.decomposition import PCA
  from sklearn.ensemble import IsolationForest
  from sklearn.preprocessing import StandardScaler
  from sklearn.svm import OneClassSVM
  sc = StandardScaler().fit(fit_x)
  zf, zt = sc.transform(fit_x), sc.transform(test_x)
  pca = PCA(8).fit(zf)
  pca_err = np.mean((pca.inverse_transform(pca.transform(zt)) - zt) ** 2, axis=1)
  return {"IsolationForest": -IsolationForest(random_state=seed).fit(zf).score_samples(zt),
          "OneClassSVM": -OneClassSVM().fit(zf).score_samples(zt),
          "PCA-8 reconstruction error": pca_err}


def main() -> None:
  _bench.reexec_without_blas_throttles()
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--dataset", default="mnist")
  p.add_argument("--data-dir", default=None)
  p.add_argument("--epochs", type=int, default=20)
  p.add_argument("--batch-size", type=int, default=128)
  p.add_argument("--hidden", type=int, nargs="+", default=[128])
  p.add_argument("--latent-dim", type=int, default=32)
  p.add_argument("--score", default="mse")
  p.add_argument("--timing-epochs", type=int, default=2)
  p.add_argument("--seeds", type=int, default=5)
  p.add_argument("--tab-configs", nargs="+", default=["16:2:20", "64:8:100"],
                 help="tabular AEs to run, each HIDDEN:LATENT:EPOCHS (the first is the "
                      "CLI's default on 30 features)")
  p.add_argument("--tab-batch-size", type=int, default=64)
  p.add_argument("--skip-mnist", action="store_true")
  p.add_argument("--json", default=None)
  args = p.parse_args()

  result = {"machine": _bench.machine(), "blas": _bench.blas_info()}
  if not args.skip_mnist:
    oc = one_class_mnist(args)
    result["one_class"] = oc
    print(f"\n### One-class {oc['dataset']} (dense AE {oc['hidden']}-{oc['latent_dim']}, "
          f"score {oc['score']}, {oc['epochs']} epochs, batch {oc['batch_size']})\n")
    print("| normal class | AUROC | AP | test FPR | test recall |")
    print("|---|---|---|---|---|")
    for i, c in enumerate(oc["classes"]):
      print(f"| {c} | {oc['auroc_per_class'][i]:.4f} | "
            f"{oc['average_precision_per_class'][i]:.4f} | {oc['test_fpr_per_class'][i]:.3f} | "
            f"{oc['test_recall_per_class'][i]:.3f} |")
    print(f"| **mean** | **{oc['auroc_mean']:.4f}** | {oc['average_precision_mean']:.4f} | "
          f"{oc['test_fpr_mean']:.3f} | {oc['test_recall_mean']:.3f} |")
    print(f"\nvmapped training of the ten models: {oc['train_seconds']:.1f} s "
          f"({oc['epochs']} epochs; compile {oc['compile_seconds']:.1f} s; scoring "
          f"{oc['score_seconds']:.1f} s). Speed-up of vmap over ten sequential runs "
          f"({oc['timing_epochs']} epochs each): {oc['sequential_seconds']:.2f} s / "
          f"{oc['vmapped_seconds']:.2f} s = {oc['vmap_speedup']:.2f}x")
  bc = breast_cancer(args)
  result["breast_cancer"] = bc
  print(f"\n### Breast cancer (malignant = anomaly), AUROC mean ± std over {bc['seeds']} seeds\n")
  names = list(bc["protocols"]["novelty"])
  print("| detector | " + " | ".join(bc["protocols"]) + " |")
  print("|---|" + "---|" * len(bc["protocols"]))
  for name in names:
    print(f"| {name} | " + " | ".join(
        f"{r[name]['auroc_mean']:.4f} ± {r[name]['auroc_std']:.4f}"
        for r in bc["protocols"].values()) + " |")
  m = result["machine"]
  print(f"\nmachine: {m['cores']} cores, {m['cpu']}, jax {m['jax']} {m['backend']}; "
        f"BLAS: {result['blas']}")
  if args.json:
    path = pathlib.Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
  main()
