"""`unsupjax train ae`: the classic dense autoencoder, end to end."""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from unsupjax import autoencoder, plots, train
from unsupjax.tasks import common

HELP = ("dense autoencoder (784-128-32-128-784 on MNIST: ReLU, sigmoid output, "
        "binary cross-entropy, Adam)")
MODEL = "ae"
N_SHOWN = 12  # examples in reconstructions.png


def add_arguments(parser: argparse.ArgumentParser) -> None:
  common.add_training_arguments(parser)
  m = parser.add_argument_group("model")
  m.add_argument("--latent-dim", type=int, default=autoencoder.AEConfig.latent_dim)
  m.add_argument("--hidden", type=int, nargs="+",
                 default=list(autoencoder.AEConfig.hidden),
                 help="hidden layer widths of the encoder (mirrored by the decoder)")


def build_config(args: argparse.Namespace) -> autoencoder.AEConfig:
  common.check_positive(args.latent_dim, "--latent-dim")
  for h in args.hidden:
    common.check_positive(h, "--hidden")
  return autoencoder.AEConfig(hidden=tuple(args.hidden),
                              latent_dim=args.latent_dim, learning_rate=args.lr)


def run(args: argparse.Namespace) -> dict:
  t_start = time.perf_counter()
  common.resolve_common(args, MODEL)
  config = build_config(args)
  run_config = {"dataset": args.dataset, "epochs": args.epochs,
                "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
                "hidden": list(config.hidden), "latent_dim": config.latent_dim}
  train_ds, test_ds = common.load_splits(args)
  workdir = common.prepare_workdir(args, MODEL, run_config)
  common.setup_compile_cache(args)

  # The dense model sees flat vectors: the layout its matmuls want.
  train_x, test_x = train_ds.flat(), test_ds.flat()
  key = jax.random.PRNGKey(args.seed)
  init_key, fit_key = jax.random.split(key)
  state = autoencoder.init_state(init_key, config, train_x[:1])
  result = train.fit(
      state, autoencoder.train_step, autoencoder.eval_step,
      train_x, test_x, key=fit_key, epochs=args.epochs,
      batch_size=args.batch_size, workdir=workdir,
      checkpoint_every=args.checkpoint_every, resume=args.resume,
      progress=not args.no_progress, desc=f"{MODEL} {args.dataset}")
  state = result.state

  final = train.evaluate(state, autoencoder.eval_step, test_x)
  shown = test_ds.x[:N_SHOWN]
  recon = np.asarray(autoencoder.reconstruct(state, test_x[:N_SHOWN]))
  plots.save_reconstructions(workdir / "reconstructions.png", shown,
                             recon.reshape(shown.shape))
  epoch_times = [r["epoch_seconds"] for r in result.history]
  summary = {
      "model": MODEL, "dataset": args.dataset, "config": run_config,
      "epochs": args.epochs, "steps": int(state.step),
      "test_mse": final["mse"], "test_bce": final["bce"],
      "test_psnr": final["psnr"],
      "train_loss": result.history[-1]["train_loss"] if result.history else None,
      "compile_seconds": result.compile_seconds,
      "median_epoch_seconds": float(np.median(epoch_times)) if epoch_times else None,
      "wall_seconds": time.perf_counter() - t_start,
      "resumed_from_epoch": result.start_epoch,
      "device": common.device_description(),
  }
  common.write_summary(workdir, summary)
  print(f"{MODEL} on {args.dataset}: test MSE {final['mse']:.5f}, test BCE "
        f"{final['bce']:.5f} nats/pixel, PSNR {final['psnr']:.2f} dB after "
        f"{args.epochs} epochs ({summary['wall_seconds']:.1f} s; compile "
        f"{result.compile_seconds:.2f} s) -> {workdir}")
  return summary
