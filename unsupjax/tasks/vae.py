"""`unsupjax train vae`: the variational autoencoder, end to end.

Protocol for [0, 1] images with the Bernoulli decoder: training images are
binarised dynamically (a fresh draw every step), the test split once with a
key derived from --seed; test values are in nats per example on that
binarised test set. --iwae-k K estimates -log p(x) with K importance samples
on the first --iwae-examples test images.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from unsupjax import plots, train, vae
from unsupjax.metrics import reconstruction
from unsupjax.tasks import common

HELP = ("variational autoencoder (Gaussian encoder, Bernoulli or Gaussian decoder, "
        "ELBO with beta, IWAE log-likelihood)")
MODEL = "vae"
DEFAULTS = common.TrainDefaults(batch_size=128)
N_SHOWN = 12


def add_arguments(parser: argparse.ArgumentParser) -> None:
  common.add_training_arguments(parser, DEFAULTS)
  m = parser.add_argument_group("model")
  m.add_argument("--arch", choices=("dense", "conv"), default="dense")
  m.add_argument("--latent-dim", type=int, default=vae.VAEConfig.latent_dim)
  m.add_argument("--hidden", type=int, nargs="+", default=list(vae.VAEConfig.hidden),
                 help="encoder hidden widths (dense), or the width after the convs")
  m.add_argument("--conv-features", type=int, nargs="+",
                 default=list(vae.VAEConfig.conv_features))
  m.add_argument("--activation", choices=tuple(vae.ACTIVATIONS), default=vae.VAEConfig.activation,
                 help="hidden-layer nonlinearity of encoder and decoder")
  m.add_argument("--ema-decay", type=float, default=vae.VAEConfig.ema_decay,
                 help="decay of the weight average that evaluation and sampling use "
                      "(0: the last iterate)")
  m.add_argument("--beta", type=float, default=vae.VAEConfig.beta,
                 help="weight of the KL term (1 = the ELBO)")
  m.add_argument("--likelihood", choices=vae.LIKELIHOODS, default="bernoulli")
  m.add_argument("--no-binarize", action="store_true",
                 help="train the Bernoulli decoder on grey levels (no dynamic binarisation)")
  e = parser.add_argument_group("evaluation")
  e.add_argument("--iwae-k", type=int, default=0,
                 help="importance samples for the IWAE NLL estimate (0: skip)")
  e.add_argument("--iwae-examples", type=int, default=1000,
                 help="test images the IWAE estimate runs on")


def build_config(args: argparse.Namespace) -> vae.VAEConfig:
  common.check_positive(args.latent_dim, "--latent-dim")
  for h in args.hidden:
    common.check_positive(h, "--hidden")
  for f in args.conv_features:
    common.check_positive(f, "--conv-features")
  if not (args.beta >= 0 and np.isfinite(args.beta)):
    raise common.UsageError(f"--beta: expected a finite value >= 0, got {args.beta}")
  if not (0.0 <= args.ema_decay < 1.0):
    raise common.UsageError(f"--ema-decay: expected a value in [0, 1), got {args.ema_decay}")
  if args.iwae_k < 0:
    raise common.UsageError(f"--iwae-k: expected 0 (skip) or a positive integer, got {args.iwae_k}")
  if args.iwae_k:
    common.check_positive(args.iwae_examples, "--iwae-examples")
  return vae.VAEConfig(arch=args.arch, hidden=tuple(args.hidden),
                       conv_features=tuple(args.conv_features),
                       latent_dim=args.latent_dim, beta=args.beta,
                       likelihood=args.likelihood,
                       binarize=args.likelihood == "bernoulli" and not args.no_binarize,
                       learning_rate=args.lr, activation=args.activation,
                       ema_decay=args.ema_decay)


def _save_latent_plot(path, state, test_x, labels, image_shape):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  z = np.asarray(vae.encode(state, test_x))
  n = 15
  grid = np.linspace(-2.5, 2.5, n)
  zz = np.stack(np.meshgrid(grid, -grid), -1).reshape(-1, 2).astype(np.float32)
  images = np.asarray(vae.decode_mean(state, zz)).reshape((n * n,) + tuple(image_shape))
  fig, (a, b) = plt.subplots(1, 2, figsize=(12, 5.6))
  sc = a.scatter(z[:, 0], z[:, 1], c=labels, cmap="tab10", s=3)
  a.set_title("test set, posterior means")
  a.set_xlabel("z[0]")
  a.set_ylabel("z[1]")
  if labels is not None:
    fig.colorbar(sc, ax=a, ticks=range(10))
  manifold = plots.to_uint8_grid([images[r * n:(r + 1) * n] for r in range(n)], pad=0)
  b.imshow(manifold.squeeze(-1) if manifold.shape[-1] == 1 else manifold,
           cmap="gray", extent=(-2.5, 2.5, -2.5, 2.5))
  b.set_title("decoded means over a grid of z")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def evaluate(workdir, record: dict, args: argparse.Namespace) -> dict:
  cfg = record["config"]
  config = vae.VAEConfig(arch=cfg["arch"], hidden=tuple(cfg["hidden"]),
                         conv_features=tuple(cfg["conv_features"]),
                         latent_dim=cfg["latent_dim"], beta=cfg["beta"],
                         likelihood=cfg["likelihood"], binarize=cfg["binarize"],
                         learning_rate=cfg["lr"], activation=cfg.get("activation", "relu"),
                         ema_decay=cfg.get("ema_decay", 0.0))
  test_ds = common.load_test_split(record, args)
  test_grey = test_ds.flat() if config.arch == "dense" else test_ds.x
  _, _, test_key, _, iwae_key = jax.random.split(jax.random.PRNGKey(cfg["seed"]), 5)
  test_x = (np.asarray(vae.binarize(test_key, test_grey)) if config.binarize
            else test_grey)
  like = vae.init_state(jax.random.PRNGKey(0), config, test_x[:1])
  state = train.restore_state(workdir, like, args.epoch)
  values = train.evaluate(state, vae.eval_step, test_x)
  out = {"step": int(state.step), "test_neg_elbo": values["neg_elbo"],
         "test_kl": values["kl"], "test_nll_term": values["nll"]}
  if args.iwae_k > 0:
    n = min(args.iwae_examples, len(test_x))
    out.update(test_iwae_nll=vae.dataset_iwae_nll(state, test_x[:n], iwae_key, args.iwae_k),
               iwae_k=args.iwae_k, iwae_examples=n)
  return out


def run(args: argparse.Namespace) -> dict:
  t_start = time.perf_counter()
  common.resolve_common(args, MODEL, DEFAULTS)
  try:
    config = build_config(args)
  except ValueError as e:
    raise common.UsageError(str(e)) from None
  run_config = common.run_config(
      args, arch=config.arch, hidden=list(config.hidden),
      conv_features=list(config.conv_features), latent_dim=config.latent_dim,
      beta=config.beta, likelihood=config.likelihood, binarize=config.binarize,
      activation=config.activation, ema_decay=config.ema_decay)
  train_ds, test_ds = common.load_splits(args, config.check_input_shape,
                                         f"vae --arch {config.arch}")
  if args.iwae_k and args.iwae_examples > test_ds.num_examples:
    raise common.UsageError(f"--iwae-examples: expected at most {test_ds.num_examples} "
                            f"(test examples), got {args.iwae_examples}")
  workdir = common.prepare_workdir(args, MODEL, run_config)
  common.setup_compile_cache(args)

  as_input = (lambda ds: ds.flat()) if config.arch == "dense" else (lambda ds: ds.x)
  train_x, test_grey = as_input(train_ds), as_input(test_ds)
  init_key, fit_key, test_key, sample_key, iwae_key = jax.random.split(
      jax.random.PRNGKey(args.seed), 5)
  test_x = (np.asarray(vae.binarize(test_key, test_grey)) if config.binarize
            else test_grey)
  state = vae.init_output_bias(vae.init_state(init_key, config, train_x[:1]), train_x)
  result = train.fit(state, vae.train_step, vae.eval_step,
                     common.process_rows(train_x), test_x,
                     key=fit_key, epochs=args.epochs, batch_size=args.batch_size,
                     workdir=workdir, checkpoint_every=args.checkpoint_every,
                     resume=args.resume, progress=not args.no_progress,
                     desc=f"{MODEL} {args.dataset}", **common.fit_parallel(args))
  state = result.state

  final = train.evaluate(state, vae.eval_step, test_x)
  grey = reconstruction.dataset_means(
      lambda b: reconstruction.from_reconstruction(vae.reconstruct(state, b), b), test_grey)
  summary = common.fit_summary(MODEL, args, run_config, result, t_start)
  summary.update({"test_neg_elbo": final["neg_elbo"], "test_nll_term": final["nll"],
                  "test_kl": final["kl"], "test_mse": grey["mse"],
                  "test_psnr": grey["psnr"],
                  "test_protocol": "dynamically binarised training, test set binarised once"
                  if config.binarize else "inputs as given"})
  if args.iwae_k:
    t_iwae = time.perf_counter()
    x_eval = test_x[:args.iwae_examples]
    summary["test_iwae_nll"] = vae.dataset_iwae_nll(state, x_eval, iwae_key, args.iwae_k)
    summary["iwae_k"] = args.iwae_k
    summary["iwae_examples"] = len(x_eval)
    summary["iwae_seconds"] = time.perf_counter() - t_iwae

  image_shape = test_ds.image_shape
  shown = test_ds.x[:N_SHOWN]
  plots.save_image_grid(workdir / "reconstructions.png", [
      shown, np.asarray(test_x[:N_SHOWN]).reshape(shown.shape),
      np.asarray(vae.reconstruct(state, test_x[:N_SHOWN])).reshape(shown.shape)])
  samples = np.asarray(vae.sample(state, sample_key, 64)).reshape((64,) + image_shape)
  plots.save_image_grid(workdir / "samples.png", [samples[r * 8:(r + 1) * 8] for r in range(8)],
                        target_width=480)
  pairs = [(0, 1), (2, 3), (4, 5), (6, 7)]
  rows = [np.asarray(vae.interpolate(state, test_grey[a], test_grey[b], 10)).reshape(
      (10,) + image_shape) for a, b in pairs]
  plots.save_image_grid(workdir / "interpolation.png", rows)
  if config.latent_dim == 2:
    _save_latent_plot(workdir / "latent.png", state, test_grey, test_ds.y, image_shape)

  summary["wall_seconds"] = time.perf_counter() - t_start
  common.write_summary(workdir, summary)
  iw = (f", IWAE-{args.iwae_k} NLL {summary['test_iwae_nll']:.2f}" if args.iwae_k else "")
  print(f"{MODEL} on {args.dataset}: test -ELBO {final['neg_elbo']:.2f} nats{iw}, "
        f"test MSE {grey['mse']:.5f} after {args.epochs} epochs "
        f"({summary['wall_seconds']:.1f} s) -> {workdir}")
  return summary
