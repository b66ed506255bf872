"""`unsupjax decompress --model WORKDIR IN OUT`: a compressed file -> images.

OUT is a .png (a file holding one image) or a .npy (f32 in [0, 1]; a stack
is (n, h, w, c)). A file that is not a codec file, was made by another model,
is truncated or corrupt is refused with one line naming the problem, and OUT
is not written. Only integers are decoded here; the network then maps them
to pixels (plus the residual, for a file compressed with --residual-step).
"""

from __future__ import annotations

import argparse
import pathlib

from unsupjax import codec_io
from unsupjax.tasks import common
from unsupjax.tasks.compress import add_model_argument, check_output, load_codec

HELP = "decompress a file written by `unsupjax compress` to .png or .npy"


def add_arguments(parser: argparse.ArgumentParser) -> None:
  add_model_argument(parser)
  parser.add_argument("input", metavar="IN", help="a file written by `unsupjax compress`")
  parser.add_argument("output", metavar="OUT", help="the .png or .npy to write")


def run(args: argparse.Namespace) -> dict:
  c = load_codec(args.model)
  out = check_output(args.output)
  suffix = out.suffix.lower()
  if suffix not in (".png", ".npy"):
    raise common.UsageError(f"OUT: expected a .png or .npy path, got {args.output!r}")
  src = pathlib.Path(args.input)
  if not src.is_file():
    raise common.UsageError(f"IN: no such file: {args.input!r}")
  blob = src.read_bytes()
  try:
    header = codec_io.parse(blob, "IN")
    if header.kind == codec_io.KIND_STACK and suffix != ".npy":
      raise common.UsageError(f"OUT: IN holds a stack of {header.n} images, which decodes to "
                              f".npy, got {args.output!r}")
    header, x = codec_io.decompress(c, blob, "IN")
  except codec_io.CodecFormatError as e:
    raise common.UsageError(str(e)) from None
  codec_io.write_images(out, x, header.kind)
  print(f"{args.input}: {header.n} image(s) -> {out}")
  return {"images": header.n}
