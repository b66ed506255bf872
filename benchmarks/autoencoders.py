"""The autoencoder family on MNIST: quality at equal epochs, and speed.

For each model (dense AE, conv AE, denoising AE, VAE) with the library's
defaults: XLA compile time, median epoch time, achieved FLOP/s as a share of
this machine's f32 matmul peak (measured in the same run; FLOPs per step from
XLA's cost_analysis), test MSE after the same number of epochs, and for the
VAE the test negative ELBO and IWAE-k NLL in nats (dynamically binarised
training, test set binarised once).

  python benchmarks/autoencoders.py --data-dir ../shared/data/tfds --epochs 10
  python benchmarks/autoencoders.py --models vae --vae-epochs 10 50 100 --iwae-k 1000

--arrays FILE.npz (keys xtr, xte as uint8 images) serves machines without
TFDS, e.g. a GPU box: the numbers are the same data.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import _bench  # noqa: E402

MODELS = ("ae", "conv-ae", "dae", "vae")


def load(args):
  import numpy as np
  if args.arrays:
    z = np.load(args.arrays)
    return (z["xtr"].astype(np.float32) / 255).reshape(-1, 28, 28, 1), \
           (z["xte"].astype(np.float32) / 255).reshape(-1, 28, 28, 1)
  from unsupjax import data
  return (data.load("mnist", "train", data_dir=args.data_dir).x,
          data.load("mnist", "test", data_dir=args.data_dir).x)


def step_flops(step, state, batch, key) -> float:
  import jax
  cost = jax.jit(step).lower(state, batch, key).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get("flops", float("nan")))


def bench_model(name, xtr, xte, epochs, seed, iwae_k, iwae_examples, activation=None,
                output_bias=True, ema_decay=None):
  import numpy as np

  from unsupjax import training
  from unsupjax.metrics import reconstruction
  from unsupjax.models import autoencoder as ae
  from unsupjax.models import vae
  from unsupjax.rng import named, run_key

  # The keys `unsupjax train MODEL --seed SEED` uses for the same purposes.
  fit_key = run_key(seed)
  init_key, test_key = named(fit_key, "init"), named(fit_key, "test-binarize")
  iwae_key = named(fit_key, "iwae")
  flat = name in ("ae", "dae", "vae")
  x_train = xtr.reshape(len(xtr), -1) if flat else xtr
  x_test = xte.reshape(len(xte), -1) if flat else xte
  if name == "vae":
    module, batch = vae, 128
    overrides = {k: v for k, v in (("activation", activation), ("ema_decay", ema_decay))
                 if v is not None}
    state = vae.init_state(init_key, vae.VAEConfig(**overrides), x_train[:1])
    if output_bias:
      state = vae.init_output_bias(state, x_train)
    eval_x = np.asarray(vae.binarize(test_key, x_test))
  else:
    module, batch = ae, 256
    cfg = {"ae": ae.AEConfig(), "conv-ae": ae.AEConfig(arch="conv"),
           "dae": ae.AEConfig(corruption="gaussian", noise_level=0.3)}[name]
    state = ae.init_state(init_key, cfg, x_train[:1])
    eval_x = x_test
  flops = step_flops(module.train_step, state, x_train[:batch], named(fit_key, "steps"))
  result = training.fit(state, module.train_step, module.eval_step, x_train, eval_x,
                        key=fit_key, epochs=epochs, batch_size=batch, progress=False)
  times = [r["epoch_seconds"] for r in result.history]
  median = statistics.median(times[1:]) if len(times) > 1 else times[0]
  steps = len(x_train) // batch
  row = {"model": name, "seed": seed, "epochs": epochs, "batch": batch,
         "compile_seconds": result.compile_seconds, "median_epoch_seconds": median,
         "flops_per_step": flops, "achieved_flops": flops * steps / median}
  if name == "vae":
    final = training.evaluate(result.state, vae.eval_step, eval_x)
    row["test_neg_elbo"] = final["neg_elbo"]
    grey = reconstruction.dataset_means(
        lambda b: reconstruction.from_reconstruction(vae.reconstruct(result.state, b), b), x_test)
    row["test_mse"] = grey["mse"]
    if iwae_k:
      t = time.perf_counter()
      row["test_iwae_nll"] = vae.dataset_iwae_nll(result.state, eval_x[:iwae_examples],
                                                  iwae_key, iwae_k)
      row["iwae_seconds"] = time.perf_counter() - t
  else:
    final = training.evaluate(result.state, ae.eval_step, x_test)
    row["test_mse"] = final["mse"]
    row["test_bce"] = final["bce"]
  return row


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--data-dir", default=os.path.join("..", "shared", "data", "tfds"))
  p.add_argument("--arrays", default=None, help="npz with uint8 xtr, xte (instead of TFDS)")
  p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
  p.add_argument("--epochs", type=int, default=10)
  p.add_argument("--vae-epochs", type=int, nargs="+", default=None,
                 help="VAE budgets to run (default: --epochs)")
  p.add_argument("--iwae-k", type=int, default=1000)
  p.add_argument("--iwae-examples", type=int, default=1000)
  p.add_argument("--seeds", type=int, nargs="+", default=[0])
  p.add_argument("--vae-activation", default=None,
                 help="the VAE's hidden nonlinearity (default: VAEConfig's)")
  p.add_argument("--vae-ema-decay", type=float, default=None,
                 help="decay of the weight average the VAE is evaluated with "
                      "(default: VAEConfig's; 0: the last iterate)")
  p.add_argument("--vae-no-output-bias", action="store_true",
                 help="skip the VAE's output-bias warm start (vae.init_output_bias)")
  p.add_argument("--json", default=None)
  args = p.parse_args()

  info = _bench.machine()
  peak = _bench.matmul_peak_flops()
  xtr, xte = load(args)
  rows = []
  for name in args.models:
    budgets = (args.vae_epochs or [args.epochs]) if name == "vae" else [args.epochs]
    for epochs in budgets:
      for seed in args.seeds:
        row = bench_model(name, xtr, xte, epochs, seed, args.iwae_k if name == "vae" else 0,
                          args.iwae_examples, args.vae_activation,
                          not args.vae_no_output_bias, args.vae_ema_decay)
        rows.append(row)
        print(row, file=sys.stderr, flush=True)

  print(f"machine: {info['cores']} cores, {info['cpu']}, JAX {info['jax']} on "
        f"{info['backend']} ({info['device']}); f32 matmul peak {peak / 1e9:.1f} GFLOP/s")
  print()
  table = []
  for r in rows:
    table.append([r["model"], r["seed"], r["epochs"], r["compile_seconds"], r["median_epoch_seconds"],
                  f"{100 * r['achieved_flops'] / peak:.1f}%", r["test_mse"],
                  r.get("test_bce", "-"), r.get("test_neg_elbo", "-"),
                  r.get("test_iwae_nll", "-")])
  print(_bench.markdown_table(
      ["model", "seed", "epochs", "compile (s)", "median epoch (s)", "% of matmul peak",
       "test MSE", "test BCE (nats/pixel)", "VAE test -ELBO (nats)",
       f"VAE IWAE-{args.iwae_k} NLL (nats, {args.iwae_examples} test images)"], table))
  if len(args.seeds) > 1:
    print()
    groups = {}
    for r in rows:
      groups.setdefault((r["model"], r["epochs"]), []).append(r)
    agg = []
    for (model, epochs), rs in groups.items():
      def ms(key):
        v = [r[key] for r in rs if key in r]
        return (f"{statistics.mean(v):.2f} ± {statistics.stdev(v):.2f}" if len(v) > 1
                else "-")
      agg.append([model, epochs, len(rs), f"{statistics.mean(r['test_mse'] for r in rs):.5f}",
                  ms("test_neg_elbo"), ms("test_iwae_nll")])
    print(_bench.markdown_table(["model", "epochs", "seeds", "mean test MSE",
                                 "VAE test -ELBO (nats)", "VAE IWAE NLL (nats)"], agg))
  _bench.write_json(args.json, {"machine": info, "peak_flops": peak, "rows": rows})


if __name__ == "__main__":
  main()
