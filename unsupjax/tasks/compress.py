"""`unsupjax compress --model WORKDIR IN OUT`: images -> a compressed file.

IN is a PNG (one image) or a .npy stack (uint8, or float in [0, 1], shaped
(n, h, w) / (n, h, w, c)); OUT is the container of `codec_io.py`. The latents
are quantised here, once; OUT is written atomically (no partial file on
error). `--residual-step S` also sends the 8-bit residual against the
decoder's picture, quantised with the odd step S: every pixel within
(S - 1) / 2 of the original, S = 1 lossless.
"""

from __future__ import annotations

import argparse
import pathlib

from unsupjax import codec_io
from unsupjax.tasks import common

HELP = "compress a PNG image or a .npy stack of images with a trained codec"


def add_model_argument(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--model", required=True, metavar="WORKDIR",
                      help="a directory written by `unsupjax train codec`")


def load_codec(workdir: str) -> codec_io.Codec:
  path = pathlib.Path(workdir) / codec_io.BUNDLE_FILE
  if not path.is_file():
    raise common.UsageError(f"--model: expected a directory written by `unsupjax train codec` "
                            f"(holding {codec_io.BUNDLE_FILE}), got {workdir!r}")
  try:
    return codec_io.Codec.load(path)
  except codec_io.CodecFormatError as e:
    raise common.UsageError(f"--model: {e}") from None


def check_output(out: str, flag: str = "OUT") -> pathlib.Path:
  path = pathlib.Path(out)
  if path.is_dir():
    raise common.UsageError(f"{flag}: expected a file path, got the directory {out!r}")
  if not path.parent.is_dir():
    raise common.UsageError(f"{flag}: the directory {str(path.parent)!r} does not exist")
  return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
  add_model_argument(parser)
  parser.add_argument("input", metavar="IN", help="a .png image or a .npy stack")
  parser.add_argument("output", metavar="OUT", help="the compressed file to write")
  parser.add_argument("--residual-step", type=int, default=0, metavar="S",
                      help="0 (default): the latents only; an odd step of the model "
                           "(1, 3, 5, 9, 17, 33, 65, 129 for models trained by `unsupjax train "
                           "codec`): also code the residual, every pixel within (S - 1) / 2 "
                           "levels of the original, 1 = lossless")


def run(args: argparse.Namespace) -> dict:
  c = load_codec(args.model)
  out = check_output(args.output)
  try:
    step = c.check_residual_step(args.residual_step, "--residual-step")
    x, kind = codec_io.read_images(args.input, c.image_shape, "IN")
  except ValueError as e:
    raise common.UsageError(str(e)) from None
  blob = codec_io.compress(c, x, kind, residual_step=step)
  codec_io.atomic_write(out, lambda f: f.write(blob))
  h, w, _ = c.image_shape
  bpp = len(blob) * 8 / (x.shape[0] * h * w)
  extra = f", residual step {step}" if step else ""
  print(f"{args.input}: {x.shape[0]} image(s) -> {out} ({len(blob)} bytes, {bpp:.4f} bpp, "
        f"model {c.model_id.hex()}{extra})")
  return {"bytes": len(blob), "bpp": bpp, "images": int(x.shape[0]), "residual_step": step}
