"""One-class MNIST: which autoencoder and which score? (the exploration
behind the defaults of `unsupjax anomaly one-class`).

`python benchmarks/anomaly_variants.py CONFIG EPOCHS` trains ten models of
CONFIG (one per digit, vmapped) and prints the mean and per-class test AUROC
of the `mse` and `bce` scores every 5 epochs. `--code-scores` (with the
`base` config) also reports an ensemble of the MSE scores over the second
half of the epochs, the Mahalanobis distance of the code under a Gaussian
fitted to the class's training codes, and two combinations of it with the
MSE.

Run:  nice -n 10 env JAX_PLATFORMS=cpu PYTHONPATH=. python \
        benchmarks/anomaly_variants.py base 20 --data-dir /work/shared/data/tfds
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from unsupjax import anomaly, data, rng, training
from unsupjax.models import autoencoder

CONFIGS = {
    "base": dict(arch="dense"),                      # 784-128-32, BCE training
    "lat8": dict(arch="dense", latent_dim=8),
    "lat16_h256": dict(arch="dense", hidden=(256, 64), latent_dim=16),
    "lat64": dict(arch="dense", hidden=(256,), latent_dim=64),
    "mseloss": dict(arch="dense", loss="mse"),
    "dae": dict(arch="dense", latent_dim=16, corruption="gaussian", noise_level=0.3),
}


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("config", choices=tuple(CONFIGS))
  p.add_argument("epochs", type=int)
  p.add_argument("--dataset", default="mnist", help="mnist (the study), or digits for a "
                 "quick check")
  p.add_argument("--data-dir", default=None)
  p.add_argument("--batch-size", type=int, default=128)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--code-scores", action="store_true")
  args = p.parse_args()
  kw = dict(data_dir=args.data_dir, download=False)
  tr, te = data.load(args.dataset, "train", **kw), data.load(args.dataset, "test", **kw)
  cfg = autoencoder.AEConfig(**CONFIGS[args.config])
  xtr, xte = tr.flat(), te.flat()
  classes = list(range(10))
  rows, counts = anomaly.class_rows(tr.y, classes)
  # The keys of `unsupjax anomaly one-class --seed SEED`.
  key = rng.run_key(args.seed)
  stacked = anomaly.init_one_class(autoencoder, cfg, xtr[:1], key, classes)
  labels = np.stack([te.y != c for c in classes])
  auroc = lambda s: np.asarray(jax.vmap(anomaly.auroc)(s, labels))
  score = lambda states, name: anomaly.score_stacked(
      states, lambda s, b: autoencoder.eval_step(s, b)[name], xte)
  t0 = time.time()
  snapshots = []

  def report(epoch: int, st) -> None:
    if args.code_scores and epoch > args.epochs // 2:
      snapshots.append(score(st.states, "mse"))
    if epoch % 5 == 0 or epoch == args.epochs:
      row = {name: auroc(score(st.states, name)) for name in ("mse", "bce")}
      print(f"{args.config} epoch {epoch} ({time.time() - t0:.0f} s): " + "; ".join(
          f"{k} mean AUROC {v.mean():.4f} {np.round(v.astype(float), 3).tolist()}"
          for k, v in row.items()), flush=True)

  result = anomaly.train_one_class(stacked, autoencoder.train_step, xtr, rows, counts,
                                   key=key, epochs=args.epochs, batch_size=args.batch_size,
                                   actions=[training.Action(report)], progress=False)
  states = result.state.states
  if not args.code_scores:
    return
  mse = snapshots[-1]
  z = [(s - s.mean(1, keepdims=True)) / s.std(1, keepdims=True) for s in snapshots]
  print(f"MSE ensemble over epochs {args.epochs // 2 + 1}-{args.epochs}: "
        f"{auroc(np.mean(z, 0)).mean():.4f}")
  mahal, combined = [], []
  for i in range(10):
    one = jax.tree.map(lambda a, i=i: a[i], states)
    enc = jax.jit(lambda b: autoencoder.encode(one, b))
    own = xtr[rows[i, :counts[i]]]
    c_tr = np.asarray(enc(own), np.float64)
    c_te = np.asarray(enc(xte), np.float64)
    mu = c_tr.mean(0)
    prec = np.linalg.inv(np.cov(c_tr.T) + 1e-3 * np.eye(c_tr.shape[1]))
    d_te = np.einsum("ni,ij,nj->n", c_te - mu, prec, c_te - mu)
    d_tr = np.einsum("ni,ij,nj->n", c_tr - mu, prec, c_tr - mu)
    r_tr = anomaly.score_dataset(one, lambda s, b: autoencoder.eval_step(s, b)["mse"],
                                 own)
    mahal.append(d_te)
    combined.append((d_te - d_tr.mean()) / d_tr.std() + (mse[i] - r_tr.mean()) / r_tr.std())
  mahal = np.array(mahal)
  print(f"code Mahalanobis: {auroc(mahal).mean():.4f}; MSE + Mahalanobis (z-scored on "
        f"training): {auroc(np.array(combined)).mean():.4f}; log MSE + log Mahalanobis: "
        f"{auroc(np.log(mse) + np.log(mahal)).mean():.4f}")


if __name__ == "__main__":
  main()
