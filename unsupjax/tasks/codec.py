"""`unsupjax train codec`: a learned image codec, trained for one --lambda.

Trains `codec.py`'s dense autoencoder with a factorised prior on MSE +
lambda * rate, counts the residual tables of every step in
`codec.RESIDUAL_STEPS` on the training split, then writes the codec bundle
(`codec.npz`: transforms, integer coding tables, model id) that `unsupjax
compress` / `decompress` read, a picture of test images beside their decoded
versions, and a summary with the test split's rate (the prior's estimate and
the real coded bytes) and PSNR, without and with each residual step.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from unsupjax import codec, codec_io, plots, train
from unsupjax.tasks import common

HELP = ("learned image codec: autoencoder + quantised latents + learned "
        "factorised prior, trained on MSE + lambda * rate")
N_SHOWN = 12


def add_arguments(parser: argparse.ArgumentParser) -> None:
  common.add_training_arguments(parser)
  m = parser.add_argument_group("model")
  m.add_argument("--lambda", dest="lam", type=float, default=codec.CodecConfig.lam,
                 help="price of the rate (bits per pixel) in units of distortion "
                      "(per-pixel MSE, pixels in [0, 1]); the loss is MSE + lambda * "
                      "bpp: larger, fewer bits and lower quality")
  m.add_argument("--latent-dim", type=int, default=codec.CodecConfig.latent_dim)
  m.add_argument("--hidden", type=int, nargs="+", default=list(codec.CodecConfig.hidden),
                 help="encoder layer widths (mirrored by the decoder)")
  m.add_argument("--mixtures", type=int, default=codec.CodecConfig.mixtures,
                 help="logistic components per latent channel in the prior")


def build_config(args: argparse.Namespace) -> codec.CodecConfig:
  common.check_positive(args.lam, "--lambda", float)
  common.check_positive(args.latent_dim, "--latent-dim")
  common.check_positive(args.mixtures, "--mixtures")
  for h in args.hidden:
    common.check_positive(h, "--hidden")
  return codec.CodecConfig(lam=float(args.lam), hidden=tuple(args.hidden),
                           latent_dim=args.latent_dim, mixtures=args.mixtures,
                           learning_rate=args.lr)


def _config_from_record(cfg: dict) -> codec.CodecConfig:
  return codec.CodecConfig(lam=cfg["lambda"], hidden=tuple(cfg["hidden"]),
                           latent_dim=cfg["latent_dim"], mixtures=cfg["mixtures"],
                           learning_rate=cfg["lr"])


def coded_metrics(c: codec_io.Codec, x: np.ndarray, per_image: bool = True) -> dict:
  """Real coded sizes and quality on images x: f32[n, h, w, c].

  stream_bpp: one container holding all of x (header included), in bits
  per pixel; file_bytes: the mean size of one container per image (each
  with its own 32-byte header); psnr of the decoded images (mean over
  images). Also checks that decoding gives back the quantised latents.
  """
  n = x.shape[0]
  npix = n * x.shape[1] * x.shape[2]
  q = c.quantise(x)
  blob = codec_io.compress(c, x)
  _, q_back = codec_io.decode_latents(c, blob)
  if not np.array_equal(q, q_back):
    raise RuntimeError("decoded latents differ from the encoder's (a codec bug)")
  recon = c.reconstruct(q)
  mse = np.mean((recon.reshape(n, -1).astype(np.float64) - x.reshape(n, -1)) ** 2, axis=1)
  psnr = 10 * np.log10(1.0 / np.maximum(mse, 1e-10))
  out = {"stream_bytes": len(blob), "stream_bpp": len(blob) * 8 / npix,
         "ideal_bpp": float(c.tables.bits(q).sum() / npix),
         "psnr": float(np.mean(psnr)), "mse": float(np.mean(mse))}
  if c.residual:
    out["residual"] = {str(s): residual_metrics(c, x, s) for s in sorted(c.residual)}
  if per_image:
    models = codec_io.coding_models(c.tables)
    sizes = [codec_io.HEADER.size + len(codec_io.entropy_encode(q[i:i + 1], c.tables, models))
             for i in range(n)]
    out["file_bytes"] = float(np.mean(sizes))
    out["file_bpp"] = out["file_bytes"] * 8 / (x.shape[1] * x.shape[2])
  return out


def residual_metrics(c: codec_io.Codec, x: np.ndarray, step: int) -> dict:
  """Coded size and 8-bit quality of x (all in one container) with the
  residual of `step`: stream_bpp, psnr_8bit (mean over images of
  10 log10(255^2 / MSE), images decoded exactly counted at 100 dB),
  max_abs_error (in 8-bit levels) and lossless_fraction. Checks that the
  decoded residual symbols equal the encoder's."""
  n = x.shape[0]
  blob = codec_io.compress(c, x, residual_step=step)
  header, q, r = codec_io.decode_symbols(c, blob)
  x_u8 = codec_io.to_uint8(x).reshape(n, -1)
  want = codec.residual_symbols(x_u8, c.base_pixels(q), step)
  if not np.array_equal(r, want):
    raise RuntimeError("decoded residual differs from the encoder's (a codec bug)")
  got = codec.residual_pixels(c.base_pixels(q), r, step).astype(np.float64)
  err = got - x_u8
  mse = np.mean(err**2, axis=1)
  psnr = 10 * np.log10(255.0**2 / np.maximum(mse, 255.0**2 * 1e-10))
  return {"stream_bytes": len(blob), "stream_bpp": len(blob) * 8 / x_u8.size,
          "psnr_8bit": float(np.mean(psnr)), "max_abs_error": int(np.abs(err).max()),
          "lossless_fraction": float(np.mean(mse == 0))}


def run(args: argparse.Namespace) -> dict:
  t_start = time.perf_counter()
  model = "codec"
  common.resolve_common(args, model)
  config = build_config(args)
  run_config = common.run_config(args, **{
      "lambda": config.lam, "hidden": list(config.hidden),
      "latent_dim": config.latent_dim, "mixtures": config.mixtures})
  train_ds, test_ds = common.load_splits(args, None, model)
  if len(train_ds.image_shape) != 3:
    raise common.UsageError(f"--dataset: expected images (h, w, c), got {train_ds.image_shape}")
  workdir = common.prepare_workdir(args, model, run_config)
  common.setup_compile_cache(args)

  train_x, test_x = train_ds.flat(), test_ds.flat()
  init_key, fit_key = jax.random.split(jax.random.PRNGKey(args.seed))
  state = codec.init_state(init_key, config, train_x[:1], train_ds.image_shape)
  result = train.fit(
      state, codec.train_step, codec.eval_step, train_x, test_x, key=fit_key,
      epochs=args.epochs, batch_size=args.batch_size, workdir=workdir,
      checkpoint_every=args.checkpoint_every, resume=args.resume,
      progress=not args.no_progress, desc=f"codec {args.dataset}")
  state = result.state

  final = train.evaluate(state, codec.eval_step, test_x)
  bundle = codec_io.Codec.from_state(state).with_residual(train_ds.x)
  bundle.save(workdir / codec_io.BUNDLE_FILE)
  coded = coded_metrics(bundle, test_ds.x)
  shown = test_ds.x[:N_SHOWN]
  plots.save_image_grid(workdir / "reconstructions.png",
                        [shown, bundle.reconstruct(bundle.quantise(shown))])
  summary = common.fit_summary(model, args, run_config, result, t_start)
  summary.update({"model_id": bundle.model_id.hex(),
                  "test_bpp_prior": final["bpp"], "test_mse": final["mse"],
                  "test_psnr": final["psnr"],
                  "latent_support": [int(w) for w in bundle.tables.width],
                  **{f"test_{k}": v for k, v in coded.items()}})
  summary["wall_seconds"] = time.perf_counter() - t_start
  common.write_summary(workdir, summary)
  print(f"codec on {args.dataset}, lambda {config.lam:g}: test {coded['stream_bpp']:.4f} bpp "
        f"coded ({final['bpp']:.4f} bpp by the prior; {coded['file_bytes']:.1f} bytes per "
        f"one-image file), PSNR {coded['psnr']:.2f} dB after {args.epochs} epochs "
        f"({summary['wall_seconds']:.1f} s) -> {workdir}")
  if "residual" in coded:
    print("with a residual (--residual-step S): " + "; ".join(
        f"S={s}: {m['stream_bpp']:.3f} bpp, "
        + ("lossless" if m["lossless_fraction"] == 1 else f"{m['psnr_8bit']:.1f} dB")
        for s, m in coded["residual"].items()))
  return summary


def evaluate(workdir, record: dict, args: argparse.Namespace) -> dict:
  test_ds = common.load_test_split(record, args)
  try:
    bundle = codec_io.Codec.load(workdir / codec_io.BUNDLE_FILE)
  except (codec_io.CodecFormatError, FileNotFoundError) as e:
    raise common.UsageError(f"workdir: {e}") from None
  like = codec.init_state(jax.random.PRNGKey(0), _config_from_record(record["config"]),
                          test_ds.flat()[:1], test_ds.image_shape)
  state = train.restore_state(workdir, like, args.epoch)
  values = train.evaluate(state, codec.eval_step, test_ds.flat())
  coded = coded_metrics(bundle, test_ds.x, per_image=False)
  return {"step": int(state.step), "model_id": bundle.model_id.hex(),
          **{f"test_{k}": v for k, v in values.items()},
          **{f"test_coded_{k}": v for k, v in coded.items()}}
