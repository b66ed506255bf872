"""The learned codec's files: the compressed container and image files.

Offers
  - `compress` / `decompress`: images <-> a container: a 32-byte header,
    then the payload:

        offset size field
        0      4    magic b"UJXC"
        4      1    format version: 1 latents only, 2 latents + residual
        5      1    kind: 0 one image, 1 a stack of images
        6      8    model id (first 8 bytes of the bundle's SHA-256)
        14     4    n, images (u32)
        18     4    h, w (u16 each)
        22     1    c (u8)
        23     1    residual step (u8; 0 = none, always 0 in version 1)
        24     4    payload length in bytes (u32)
        28     4    CRC-32 of bytes 0..27 and the payload
    all little-endian (version 1 stored c as a u16, whose high byte is the
    residual byte: the layouts agree). The payload is the range coder's
    words: the latents channel by channel, then, with a residual step, the
    residual symbols grouped by base value (see `residual`);
    `pack` / `parse`, `encode_symbols` / `decode_symbols` /
    `decode_latents` are the steps in between;
  - `read_images` / `write_images` (PNG or .npy; written atomically).

For convenience it also re-exports what a user of the files needs from the
lower modules: `Codec`, `BUNDLE_FILE`, `atomic_write` (`bundle`),
`CodecFormatError`, `coding_models`, `entropy_encode`, `entropy_decode`
(`entropy`) and `to_uint8` (`residual`).

Exactness: decoding gives back the encoder's integers bit for bit in any
process (`bundle`); with a residual, the pixels are the base of the
fixed-point decoder (the same integers on every platform) plus the decoded
residual: the same 8-bit images everywhere, the originals at step 1.

Does not offer: checks that an output path is free (the command line
refuses to replace a file unless asked), or streaming of stacks larger
than memory.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import struct
import zlib

import numpy as np

from unsupjax.models.codec import entropy
from unsupjax.models.codec import residual as residual_lib
from unsupjax.models.codec.bundle import BUNDLE_FILE, Codec, atomic_write  # noqa: F401
from unsupjax.models.codec.entropy import (CodecFormatError, coding_models,  # noqa: F401
                                           entropy_decode, entropy_encode)
from unsupjax.models.codec.residual import to_uint8

MAGIC = b"UJXC"
FORMAT_VERSION = 2          # the newest container version read and written
LATENTS_ONLY_VERSION = 1    # written when there is no residual, as before it existed
KIND_IMAGE, KIND_STACK = 0, 1
HEADER = struct.Struct("<4sBB8sIHHBBII")
assert HEADER.size == 32


# --------------------------------------------------------------------------
# The container.


@dataclasses.dataclass(frozen=True)
class Header:
  kind: int
  model_id: bytes
  n: int
  shape: tuple[int, int, int]
  payload: bytes
  residual_step: int = 0


def pack(kind: int, model_id: bytes, n: int, shape, payload: bytes,
         residual_step: int = 0) -> bytes:
  version = FORMAT_VERSION if residual_step else LATENTS_ONLY_VERSION
  return seal(HEADER.pack(MAGIC, version, kind, model_id, n, *shape, residual_step,
                          len(payload), 0), payload)


def seal(head: bytes, payload: bytes) -> bytes:
  """A container: a 32-byte header whose last 4 bytes become the CRC-32 of
  its first 28 and the payload, then the payload. (Shared with the audio
  codec's container.)"""
  crc = zlib.crc32(payload, zlib.crc32(head[:28]))
  return head[:28] + struct.pack("<I", crc) + payload


def unseal(blob: bytes, magic: bytes, header: struct.Struct, name: str,
           what: str) -> tuple[tuple, bytes]:
  """The inverse of `seal` for a header `struct` that starts with the magic
  and ends with (payload size, CRC-32): (the header's fields, the payload).
  Raises CodecFormatError naming `what` for another file type, a short or
  long file, or a CRC mismatch; the caller checks the other fields."""
  if len(blob) < 4 or blob[:4] != magic:
    raise CodecFormatError(f"{what}: not an unsupjax {name} file (expected magic {magic!r}, "
                           f"got {bytes(blob[:4])!r})")
  if len(blob) < header.size:
    raise CodecFormatError(f"{what}: truncated: {len(blob)} bytes, shorter than the "
                           f"{header.size}-byte header")
  fields = header.unpack_from(blob)
  size, crc = fields[-2:]
  payload = bytes(blob[header.size:])
  if len(payload) < size:
    raise CodecFormatError(f"{what}: truncated: the header announces {size} payload bytes, "
                           f"the file holds {len(payload)}")
  if len(payload) > size:
    raise CodecFormatError(f"{what}: {len(payload) - size} unexpected bytes after the "
                           f"{size}-byte payload")
  if zlib.crc32(payload, zlib.crc32(bytes(blob[:28]))) != crc:
    raise CodecFormatError(f"{what}: corrupt: CRC-32 mismatch")
  return fields, payload


def parse(blob: bytes, what: str = "input") -> Header:
  """Checks and splits a container; raises CodecFormatError naming `what`."""
  fields, payload = unseal(blob, MAGIC, HEADER, "codec", what)
  magic, version, kind, model_id, n, h, w, c, step, size, crc = fields
  if version not in (LATENTS_ONLY_VERSION, FORMAT_VERSION):
    raise CodecFormatError(f"{what}: format version {version} is not supported "
                           f"(this build reads versions {LATENTS_ONLY_VERSION}-{FORMAT_VERSION})")
  if kind not in (KIND_IMAGE, KIND_STACK) or (kind == KIND_IMAGE and n != 1):
    raise CodecFormatError(f"{what}: corrupt header (kind {kind}, {n} images)")
  if (step != 0) != (version == FORMAT_VERSION):
    raise CodecFormatError(f"{what}: corrupt header (version {version}, residual step {step})")
  return Header(kind=kind, model_id=model_id, n=n, shape=(h, w, c), payload=payload,
                residual_step=step)


def compress(codec: Codec, x: np.ndarray, kind: int = KIND_STACK,
             residual_step: int = 0) -> bytes:
  """Images x: f32[n, h, w, c] in [0, 1] -> container bytes.

  residual_step: 0 sends the latents only (the decoder's picture); an odd
  step of `codec.residual` also sends the residual of the 8-bit image
  (round(x * 255)) against it, quantised with that step: every decoded
  pixel within (step - 1) / 2 of it, step 1 lossless.
  """
  residual_step = codec.check_residual_step(residual_step)
  x = codec._check_images(x)
  if kind == KIND_IMAGE and x.shape[0] != 1:
    raise ValueError(f"kind: one image expected, got {x.shape[0]}")
  if x.shape[0] >= 2**32:
    raise ValueError(f"x: at most {2**32 - 1} images per file, got {x.shape[0]}")
  q = codec.quantise(x)
  r = base = None
  if residual_step:
    base = codec.base_pixels(q)
    r = residual_lib.residual_symbols(to_uint8(x).reshape(x.shape[0], -1), base, residual_step)
  return pack(kind, codec.model_id, x.shape[0], codec.image_shape,
              encode_symbols(codec, q, r, residual_step, base), residual_step)


def encode_symbols(codec: Codec, q: np.ndarray, r: np.ndarray | None = None,
                   residual_step: int = 0, base: np.ndarray | None = None) -> bytes:
  """The payload of a container: latents q: i32[n, d], then (with a
  residual step) residual symbols r: i32[n, h*w*c], range-coded. base:
  `codec.base_pixels(q)` when the caller has it already."""
  import constriction
  enc = constriction.stream.queue.RangeEncoder()
  entropy.encode_into(enc, q, codec.tables, codec._models(0))
  if residual_step:
    t, models = codec.residual[residual_step], codec._models(residual_step)
    base = (codec.base_pixels(q) if base is None else np.asarray(base)).ravel()
    r = np.asarray(r).ravel()
    if r.shape != base.shape:
      raise ValueError(f"r: expected {base.size} residual symbols, got {r.size}")
    for b, sel in _by_context(base):
      sym = r[sel] - t.lo[b]
      if np.any(sym < 0) or np.any(sym >= t.width[b]):
        raise ValueError(f"r: symbols outside the support of base value {b}")
      if models[b] is not None:
        enc.encode(np.ascontiguousarray(sym, np.int32), models[b])
  return enc.get_compressed().astype("<u4").tobytes()


def _by_context(base: np.ndarray):
  """(b, indices of base == b in order) for each base value present: the
  order in which residual symbols are coded."""
  order = np.argsort(base, kind="stable")
  values, starts = np.unique(base[order], return_index=True)
  for b, sel in zip(values, np.split(order, starts[1:])):
    yield int(b), sel


def decode_symbols(codec: Codec, blob: bytes, what: str = "input"
                   ) -> tuple[Header, np.ndarray, np.ndarray | None]:
  """Checks a container against `codec` and entropy-decodes it: (header,
  latents i32[n, d], residual symbols i32[n, h*w*c] or None)."""
  return _decode(codec, blob, what)[:3]


def _decode(codec: Codec, blob: bytes, what: str):
  """(header, latents, residual symbols or None, base or None)."""
  import constriction
  header = parse(blob, what)
  if header.model_id != codec.model_id:
    raise CodecFormatError(f"{what}: compressed by model {header.model_id.hex()}, but this "
                           f"model is {codec.model_id.hex()}")
  if header.shape != codec.image_shape:
    raise CodecFormatError(f"{what}: holds {header.shape} images, the model codes "
                           f"{codec.image_shape}")
  if header.residual_step and header.residual_step not in codec.residual:
    raise CodecFormatError(f"{what}: coded with residual step {header.residual_step}, which "
                           f"this model has no tables for")
  if len(header.payload) % 4:
    raise CodecFormatError(f"{what}: corrupt: payload of {len(header.payload)} bytes is not "
                           f"whole 32-bit words")
  try:
    dec = constriction.stream.queue.RangeDecoder(
        np.frombuffer(header.payload, "<u4").astype(np.uint32))
    q = entropy.decode_from(dec, header.n, codec.tables, codec._models(0))
    r = base = None
    if header.residual_step:
      t, models = codec.residual[header.residual_step], codec._models(header.residual_step)
      base = codec.base_pixels(q)
      r = np.empty(base.size, np.int32)
      for b, sel in _by_context(base.ravel()):
        r[sel] = t.lo[b] if models[b] is None else np.asarray(dec.decode(models[b], sel.size)) \
            + t.lo[b]
      r = r.reshape(base.shape)
  except Exception as e:  # the coder's own complaint about a bad stream
    raise CodecFormatError(f"{what}: corrupt payload ({e})") from None
  return header, q, r, base


def decode_latents(codec: Codec, blob: bytes, what: str = "input") -> tuple[Header, np.ndarray]:
  """Checks a container against `codec` and entropy-decodes its latents i32[n, d]."""
  header, q, _ = decode_symbols(codec, blob, what)
  return header, q


def images_from_symbols(codec: Codec, step: int, q: np.ndarray, r: np.ndarray | None,
                        base: np.ndarray | None = None) -> np.ndarray:
  """Decoded images f32[n, h, w, c] in [0, 1]: the decoder's output on q,
  or with a residual (step > 0), the 8-bit base (`codec.base_pixels(q)`,
  passed in when known) plus the residual."""
  if not step:
    return codec.reconstruct(q)
  base = codec.base_pixels(q) if base is None else base
  pixels = residual_lib.residual_pixels(base, r, step)
  return (pixels.astype(np.float32) / np.float32(255.0)).reshape(
      (q.shape[0],) + tuple(codec.image_shape))


def decompress(codec: Codec, blob: bytes, what: str = "input") -> tuple[Header, np.ndarray]:
  """Container bytes -> (header, images f32[n, h, w, c] in [0, 1])."""
  header, q, r, base = _decode(codec, blob, what)
  return header, images_from_symbols(codec, header.residual_step, q, r, base)


# --------------------------------------------------------------------------
# Files.


# --------------------------------------------------------------------------
# Image files.


def read_images(path: str | os.PathLike, image_shape, what: str = "IN") -> tuple[np.ndarray, int]:
  """A PNG (one image) or .npy (a stack f32 in [0, 1] or uint8, shaped
  (n, h, w), (n, h, w, c) or (h, w)) -> (f32[n, h, w, c] in [0, 1], kind).
  Raises ValueError naming `what` when the file does not fit image_shape."""
  path = pathlib.Path(path)
  h, w, c = image_shape
  if not path.is_file():
    raise ValueError(f"{what}: no such file: {str(path)!r}")
  if path.suffix.lower() == ".npy":
    try:
      x = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
      raise ValueError(f"{what}: not a readable .npy file ({e})") from None
    kind = KIND_IMAGE if x.ndim == 2 else KIND_STACK
    if x.ndim == 2:
      x = x[None]
    if x.ndim == 3 and c == 1:
      x = x[..., None]
    if x.ndim != 4 or tuple(x.shape[1:]) != (h, w, c):
      raise ValueError(f"{what}: expected an array of shape (n, {h}, {w}"
                       f"{', ' + str(c) if c != 1 else ''}) for this model, got {x.shape}")
    if x.dtype == np.uint8:
      x = x.astype(np.float32) / np.float32(255.0)
    elif np.issubdtype(x.dtype, np.floating):
      x = x.astype(np.float32)
      if not np.all(np.isfinite(x)) or x.min(initial=0) < 0 or x.max(initial=0) > 1:
        raise ValueError(f"{what}: expected float pixel values in [0, 1]")
    else:
      raise ValueError(f"{what}: expected uint8 or float pixels, got dtype {x.dtype}")
    if x.shape[0] == 0:
      raise ValueError(f"{what}: expected at least one image, got 0")
    return x, kind
  from PIL import Image, UnidentifiedImageError
  try:
    with Image.open(path) as im:
      im.load()
      mode, size = im.mode, im.size
      want = "L" if c == 1 else "RGB"
      if mode != want:
        raise ValueError(f"{what}: expected a {'grayscale (L)' if c == 1 else 'RGB'} image "
                         f"for this model, got mode {mode}")
      arr = np.asarray(im, np.uint8)
  except (UnidentifiedImageError, OSError) as e:
    raise ValueError(f"{what}: not a readable image ({e})") from None
  if size != (w, h):
    raise ValueError(f"{what}: expected a {w}x{h} image for this model, got {size[0]}x{size[1]}")
  return (arr.reshape(1, h, w, c).astype(np.float32) / np.float32(255.0)), KIND_IMAGE


def write_images(path: str | os.PathLike, x: np.ndarray, kind: int) -> None:
  """Writes decoded images f32[n, h, w, c]: one image to .png or .npy
  (f32[h, w] / [h, w, c]), a stack to .npy (f32[n, h, w, c]); atomically."""
  path = pathlib.Path(path)
  if path.suffix.lower() == ".npy":
    arr = x[0] if kind == KIND_IMAGE else x
    if kind == KIND_IMAGE and arr.shape[-1] == 1:
      arr = arr[..., 0]
    atomic_write(path, lambda f: np.save(f, arr.astype(np.float32)))
    return
  from PIL import Image
  img = to_uint8(x[0])
  img = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
  atomic_write(path, lambda f: img.save(f, format="PNG"))
