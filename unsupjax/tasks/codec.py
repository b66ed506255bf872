"""`unsupjax train codec`, `unsupjax compress`, `unsupjax decompress`: the
learned image codec, trained for one --lambda, and its two file commands.

`train codec` trains `models.codec`'s dense autoencoder with a factorised
prior on MSE + lambda * rate (through `base.train`: process shards, pmap
or sharded data parallelism, checkpoints), counts the residual tables of
every step in `RESIDUAL_STEPS` on the training split, then writes the
codec bundle (`codec.npz`: transforms, integer coding tables, model id)
that `compress` / `decompress` read, a picture of test images beside their
decoded versions, and a summary with the test split's rate (the prior's
estimate and the real coded bytes) and PSNR, without and with each
residual step. `unsupjax evaluate` rebuilds the bundle of the evaluated
checkpoint from the state (the same bytes: the tables are a pure function
of the parameters and the training split) and codes the test split again.

`compress --model WORKDIR IN OUT`: IN is a PNG (one image) or a .npy stack
(uint8, or float in [0, 1], shaped (n, h, w) / (n, h, w, c)); OUT is the
container of `models.codec.io`. `--residual-step S` also sends the 8-bit
residual against the decoder's picture, quantised with the odd step S:
every pixel within (S - 1) / 2 of the original, S = 1 lossless.

`decompress --model WORKDIR IN OUT`: OUT is a .png (a file holding one
image) or a .npy (f32 in [0, 1]; a stack is (n, h, w, c)). A file that is
not a codec file, was made by another model, is truncated or corrupt is
refused with one line naming the problem.

A .wav IN to `compress`, and an audio container IN or a .wav OUT to
`decompress`, go to the speech codec (`tasks.audio_codec`), with the same
guarantees.

Both refuse (exit 2) to write over an existing file, the input above all,
unless given --overwrite, and write OUT atomically: under a temporary name,
renamed into place when complete, so a failure leaves no partial file.
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np

from unsupjax import plots
from unsupjax.config import UsageError, flag_error, option
from unsupjax.models.codec import io as codec_io
from unsupjax.models.codec import model as codec_model
from unsupjax.models.codec import residual
from unsupjax.parallel import lead_process_only
from unsupjax.tasks import base

N_SHOWN = 12  # test images in reconstructions.png
_DEFAULT = codec_model.CodecConfig()


# --------------------------------------------------------------------------
# unsupjax train codec


@dataclasses.dataclass(frozen=True)
class CodecFlags(base.TrainConfig):
  lam: float = option(_DEFAULT.lam, "price of the rate (bits per pixel) in units of "
                      "distortion (per-pixel MSE, pixels in [0, 1]); the loss is MSE + "
                      "lambda * bpp: larger, fewer bits and lower quality", flag="lambda",
                      group="model")
  hidden: tuple[int, ...] = option(_DEFAULT.hidden, "encoder layer widths (mirrored by the "
                                   "decoder)", group="model")
  latent_dim: int = option(_DEFAULT.latent_dim, "latent channels: the integers each image "
                           "is coded as", group="model")
  mixtures: int = option(_DEFAULT.mixtures, "logistic components per latent channel in the "
                         "prior", group="model")

  def __post_init__(self):
    object.__setattr__(self, "hidden", tuple(self.hidden))
    super().__post_init__()
    base.derive(codec_model.CodecConfig, self)   # the model's own checks


def make_bundle(state, data: base.Data) -> codec_io.Codec:
  """The codec of `state`, with residual tables counted on every training
  image (all rows in every process, so every process makes the same one)."""
  return codec_io.Codec.from_state(state).with_residual(data.train.x)


def coded_metrics(c: codec_io.Codec, x: np.ndarray, per_image: bool = True) -> dict:
  """Real coded sizes and quality on images x: f32[n, h, w, c].

  stream_bpp: one container holding all of x (header included), in bits
  per pixel; ideal_bpp: the tables' code length; psnr, mse of the decoded
  images (mean over images); residual: `residual_metrics` of every step
  the codec has. With per_image, file_bytes: the mean size of one
  container per image (each with its own 32-byte header). Also checks
  that decoding gives back the quantised latents.
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
  _, q, r = codec_io.decode_symbols(c, blob)
  x_u8 = codec_io.to_uint8(x).reshape(n, -1)
  base_u8 = c.base_pixels(q)
  if not np.array_equal(r, residual.residual_symbols(x_u8, base_u8, step)):
    raise RuntimeError("decoded residual differs from the encoder's (a codec bug)")
  err = residual.residual_pixels(base_u8, r, step).astype(np.float64) - x_u8
  mse = np.mean(err**2, axis=1)
  psnr = 10 * np.log10(255.0**2 / np.maximum(mse, 255.0**2 * 1e-10))
  return {"stream_bytes": len(blob), "stream_bpp": len(blob) * 8 / x_u8.size,
          "psnr_8bit": float(np.mean(psnr)), "max_abs_error": int(np.abs(err).max()),
          "lossless_fraction": float(np.mean(mse == 0))}


def _metrics(state, data: base.Data, bundle: codec_io.Codec, per_image: bool) -> dict:
  values = base.evaluate_on_test(codec_model, state, data)
  coded = coded_metrics(bundle, data.test.x, per_image=per_image)
  return {"model_id": bundle.model_id.hex(), **values,
          **{f"test_coded_{k}": v for k, v in coded.items()}}


def evaluate(cfg, state, data: base.Data, key, opts=None) -> dict:
  """The test split by the prior (test_bpp, test_psnr, ...: eval_step on the
  rounded latents) and by the real coder (test_coded_*), with the bundle of
  `state` (model_id). Deterministic: no key is drawn."""
  return _metrics(state, data, make_bundle(state, data), per_image=False)


def report(run: base.Run) -> dict:
  """codec.npz (the bundle `compress` reads), reconstructions.png and the
  final test metrics: `evaluate`'s, one-image file sizes and the latents'
  support widths."""
  bundle = make_bundle(run.state, run.data)
  lead_process_only(bundle.save)(run.workdir / codec_io.BUNDLE_FILE)
  values = _metrics(run.state, run.data, bundle, per_image=True)
  shown = run.data.test.x[:N_SHOWN]
  plots.save_image_grid(run.workdir / "reconstructions.png",
                        [shown, bundle.reconstruct(bundle.quantise(shown))],
                        labels=["original", "decoded"])
  values["latent_support"] = [int(w) for w in bundle.tables.width]
  print(f"codec, lambda {run.cfg.lam:g}: test {values['test_coded_stream_bpp']:.4f} bpp coded "
        f"({values['test_bpp']:.4f} bpp by the prior; "
        f"{values['test_coded_file_bytes']:.1f} bytes per one-image file), PSNR "
        f"{values['test_coded_psnr']:.2f} dB; model {bundle.model_id.hex()}")
  if "test_coded_residual" in values:
    print("with a residual (--residual-step S): " + "; ".join(
        f"S={s}: {m['stream_bpp']:.3f} bpp, "
        + ("lossless" if m["lossless_fraction"] == 1 else f"{m['psnr_8bit']:.1f} dB")
        for s, m in values["test_coded_residual"].items()))
  return values


CODEC = base.Task(
    name="codec",
    help="learned image codec: autoencoder + quantised latents + learned factorised prior, "
         "trained on MSE + lambda * rate; writes codec.npz for `unsupjax compress`",
    config=CodecFlags, model=codec_model, load=base.default_load(flat=False),
    report=report, evaluate=evaluate)


# --------------------------------------------------------------------------
# unsupjax compress / decompress

_MODEL_HELP = "a directory written by `unsupjax train codec` (or `train audio-codec`)"
_OVERWRITE_HELP = "replace OUT if it exists (even when it is IN)"


def _check_model(cfg) -> None:
  if cfg.model is None:
    raise ValueError(f"model: expected {_MODEL_HELP}, got none")


@dataclasses.dataclass(frozen=True)
class CompressConfig:
  input: str = option(help="a .png image or a .npy stack (uint8, or float in [0, 1]); or a "
                      "mono .wav for a model of `unsupjax train audio-codec`",
                      positional=True, metavar="IN")
  output: str = option(help="the compressed file to write", positional=True, metavar="OUT")
  model: str | None = option(None, _MODEL_HELP, metavar="WORKDIR", default_help="required")
  residual_step: int = option(0, "0: the latents only; an odd step of the model (1, 3, 5, 9, "
                              "17, 33, 65, 129 for models trained by `unsupjax train codec`): "
                              "also code the residual, every pixel within (S - 1) / 2 levels "
                              "of the original, 1 = lossless", metavar="S")
  overwrite: bool = option(False, _OVERWRITE_HELP)

  def __post_init__(self):
    _check_model(self)
    step = self.residual_step
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
      raise ValueError(f"residual_step: expected 0 (none) or an odd step, got {step!r}")


@dataclasses.dataclass(frozen=True)
class DecompressConfig:
  input: str = option(help="a file written by `unsupjax compress`", positional=True,
                      metavar="IN")
  output: str = option(help="the .png or .npy to write (.wav for an audio codec file)",
                       positional=True, metavar="OUT")
  model: str | None = option(None, _MODEL_HELP, metavar="WORKDIR", default_help="required")
  overwrite: bool = option(False, _OVERWRITE_HELP)

  def __post_init__(self):
    _check_model(self)


def load_codec(workdir: str) -> codec_io.Codec:
  """The bundle in `workdir`; UsageError naming --model if there is none."""
  return base.load_bundle(workdir, codec_io.BUNDLE_FILE, codec_io.Codec.load, _MODEL_HELP,
                          codec_io.CodecFormatError)


def compress(cfg: CompressConfig) -> dict:
  if pathlib.Path(cfg.input).suffix.lower() == ".wav":   # speech: the audio codec's
    from unsupjax.tasks import audio_codec
    return audio_codec.compress_wav(cfg)
  c = load_codec(cfg.model)
  out = base.check_output(cfg.output, cfg.input, cfg.overwrite)
  try:
    step = c.check_residual_step(cfg.residual_step, "residual_step")
    x, kind = codec_io.read_images(cfg.input, c.image_shape, "IN")
  except ValueError as e:
    raise flag_error(CompressConfig, e) from None
  blob = codec_io.compress(c, x, kind, residual_step=step)
  codec_io.atomic_write(out, lambda f: f.write(blob))
  h, w, _ = c.image_shape
  bpp = len(blob) * 8 / (x.shape[0] * h * w)
  extra = f", residual step {step}" if step else ""
  print(f"{cfg.input}: {x.shape[0]} image(s) -> {out} ({len(blob)} bytes, {bpp:.4f} bpp, "
        f"model {c.model_id.hex()}{extra})")
  return {"bytes": len(blob), "bpp": bpp, "images": int(x.shape[0]), "residual_step": step}


def decompress(cfg: DecompressConfig) -> dict:
  if pathlib.Path(cfg.output).suffix.lower() == ".wav" or _is_audio_file(cfg.input):
    from unsupjax.tasks import audio_codec
    return audio_codec.decompress_wav(cfg)
  c = load_codec(cfg.model)
  out = base.check_output(cfg.output, cfg.input, cfg.overwrite)
  suffix = out.suffix.lower()
  if suffix not in (".png", ".npy"):
    raise UsageError(f"OUT: expected a .png or .npy path, got {cfg.output!r}")
  src = pathlib.Path(cfg.input)
  if not src.is_file():
    raise UsageError(f"IN: no such file: {cfg.input!r}")
  blob = src.read_bytes()
  try:
    header = codec_io.parse(blob, "IN")
    if header.kind == codec_io.KIND_STACK and suffix != ".npy":
      raise UsageError(f"OUT: IN holds a stack of {header.n} images, which decodes to "
                       f".npy, got {cfg.output!r}")
    header, x = codec_io.decompress(c, blob, "IN")
  except codec_io.CodecFormatError as e:
    raise UsageError(str(e)) from None
  codec_io.write_images(out, x, header.kind)
  print(f"{cfg.input}: {header.n} image(s) -> {out}")
  return {"images": header.n}


def _is_audio_file(path: str) -> bool:
  from unsupjax.models.audio_codec.io import MAGIC
  try:
    with open(path, "rb") as f:
      return f.read(len(MAGIC)) == MAGIC
  except OSError:
    return False


COMPRESS = base.Command("compress", "compress a PNG image or a .npy stack of images (or a "
                        "WAV file) with a trained codec", CompressConfig, compress)
DECOMPRESS = base.Command("decompress", "decompress a file written by `unsupjax compress` "
                          "to .png or .npy (or .wav)", DecompressConfig, decompress)
