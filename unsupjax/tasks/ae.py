"""`unsupjax train ae | conv-ae | dae`: deterministic autoencoders, end to end.

`make_task` builds the HELP / add_arguments / run triple the CLI expects for
one variant; this module is the dense `ae`, `conv_ae.py` and `dae.py` are the
other two.
"""

from __future__ import annotations

import argparse
import time
from types import SimpleNamespace

import jax
import numpy as np

from unsupjax import autoencoder, plots, train
from unsupjax.tasks import common

N_SHOWN = 12  # examples in reconstructions.png


def make_task(model: str, help_text: str, arch: str, denoising: bool) -> SimpleNamespace:
  """The CLI task for one autoencoder variant."""

  def add_arguments(parser: argparse.ArgumentParser) -> None:
    common.add_training_arguments(parser)
    m = parser.add_argument_group("model")
    m.add_argument("--latent-dim", type=int, default=autoencoder.AEConfig.latent_dim)
    if arch == "dense":
      m.add_argument("--hidden", type=int, nargs="+",
                     default=list(autoencoder.AEConfig.hidden),
                     help="hidden layer widths of the encoder (mirrored by the decoder)")
    else:
      m.add_argument("--conv-features", type=int, nargs="+",
                     default=list(autoencoder.AEConfig.conv_features),
                     help="channels of the stride-2 convolutions (each halves h and w)")
    m.add_argument("--loss", choices=autoencoder.LOSSES, default="bce")
    if denoising:
      m.add_argument("--noise", choices=tuple(autoencoder.CORRUPTIONS), default="gaussian",
                     help="corruption of the input: " + "; ".join(
                         f"{k}: level = {v[1]}" for k, v in autoencoder.CORRUPTIONS.items()))
      m.add_argument("--noise-level", type=float, default=0.3)

  def build_config(args: argparse.Namespace) -> autoencoder.AEConfig:
    common.check_positive(args.latent_dim, "--latent-dim")
    widths = args.hidden if arch == "dense" else args.conv_features
    for w in widths:
      common.check_positive(w, "--hidden" if arch == "dense" else "--conv-features")
    kw = dict(arch=arch, latent_dim=args.latent_dim, learning_rate=args.lr, loss=args.loss)
    kw["hidden" if arch == "dense" else "conv_features"] = tuple(widths)
    if denoising:
      (lo, hi), meaning = autoencoder.CORRUPTIONS[args.noise]
      if not lo < args.noise_level <= hi:
        raise common.UsageError(f"--noise-level: expected a value in ({lo}, {hi}] "
                                f"for --noise {args.noise} ({meaning}), got {args.noise_level}")
      kw.update(corruption=args.noise, noise_level=args.noise_level)
    return autoencoder.AEConfig(**kw)

  def run(args: argparse.Namespace) -> dict:
    t_start = time.perf_counter()
    common.resolve_common(args, model)
    config = build_config(args)
    run_config = common.run_config(
        args, arch=arch, hidden=list(config.hidden),
        conv_features=list(config.conv_features), latent_dim=config.latent_dim,
        loss=config.loss, corruption=config.corruption, noise_level=config.noise_level)
    train_ds, test_ds = common.load_splits(args, config.check_input_shape, model)
    workdir = common.prepare_workdir(args, model, run_config)
    common.setup_compile_cache(args)

    # The dense model sees flat vectors (the layout its matmuls want); the
    # conv model sees images.
    as_input = (lambda ds: ds.flat()) if arch == "dense" else (lambda ds: ds.x)
    train_x, test_x = as_input(train_ds), as_input(test_ds)
    init_key, fit_key = jax.random.split(jax.random.PRNGKey(args.seed))
    state = autoencoder.init_state(init_key, config, train_x[:1])
    result = train.fit(
        state, autoencoder.train_step, autoencoder.eval_step,
        common.process_rows(train_x), test_x, key=fit_key, epochs=args.epochs,
        batch_size=args.batch_size, workdir=workdir,
        checkpoint_every=args.checkpoint_every, resume=args.resume,
        progress=not args.no_progress, desc=f"{model} {args.dataset}",
        **common.fit_parallel(args))
    state = result.state

    final = train.evaluate(state, autoencoder.eval_step, test_x)
    shown = test_ds.x[:N_SHOWN]
    rows = [shown]
    if denoising:
      noisy = autoencoder.corrupt(jax.random.PRNGKey(args.seed), test_x[:N_SHOWN],
                                  config.corruption, config.noise_level)
      rows.append(np.asarray(noisy).reshape(shown.shape))
      rows.append(np.asarray(autoencoder.reconstruct(state, noisy)).reshape(shown.shape))
    else:
      rows.append(np.asarray(autoencoder.reconstruct(state, test_x[:N_SHOWN])).reshape(shown.shape))
    plots.save_image_grid(workdir / "reconstructions.png", rows)
    summary = common.fit_summary(model, args, run_config, result, t_start)
    summary.update({"test_mse": final["mse"], "test_bce": final["bce"],
                    "test_psnr": final["psnr"]})
    if denoising:
      denoised = train.evaluate(
          state, lambda s, b: autoencoder.denoising_eval_step(s, b, jax.random.PRNGKey(args.seed)),
          test_x)
      summary.update({f"test_denoised_{k}": v for k, v in denoised.items()})
    summary["wall_seconds"] = time.perf_counter() - t_start
    common.write_summary(workdir, summary)
    print(f"{model} on {args.dataset}: test MSE {final['mse']:.5f}, test BCE "
          f"{final['bce']:.5f} nats/pixel, PSNR {final['psnr']:.2f} dB after "
          f"{args.epochs} epochs ({summary['wall_seconds']:.1f} s; compile "
          f"{result.compile_seconds:.2f} s) -> {workdir}")
    return summary

  def evaluate(workdir, record: dict, args: argparse.Namespace) -> dict:
    cfg = record["config"]
    config = autoencoder.AEConfig(
        arch=cfg["arch"], hidden=tuple(cfg["hidden"]),
        conv_features=tuple(cfg["conv_features"]), latent_dim=cfg["latent_dim"],
        learning_rate=cfg["lr"], loss=cfg["loss"], corruption=cfg["corruption"],
        noise_level=cfg["noise_level"])
    test_ds = common.load_test_split(record, args)
    test_x = test_ds.flat() if arch == "dense" else test_ds.x
    like = autoencoder.init_state(jax.random.PRNGKey(0), config, test_x[:1])
    state = train.restore_state(workdir, like, args.epoch)
    values = train.evaluate(state, autoencoder.eval_step, test_x)
    return {"step": int(state.step), **{f"test_{k}": v for k, v in values.items()}}

  return SimpleNamespace(HELP=help_text, add_arguments=add_arguments, run=run,
                         build_config=build_config, evaluate=evaluate)


_task = make_task("ae", "dense autoencoder (784-128-32-128-784 on MNIST: ReLU, "
                  "sigmoid output, binary cross-entropy, Adam)", "dense", False)
HELP, add_arguments, run, evaluate = _task.HELP, _task.add_arguments, _task.run, _task.evaluate
