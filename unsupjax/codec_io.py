"""Bytes for the learned codec: the model bundle, the range coder and the
container format.

Offers
  - `Codec`: a trained codec on the host (transforms' parameters, integer
    tables, model id), built from a train state (`Codec.from_state`), saved
    to and loaded from one `.npz` bundle (`save` / `load`), with `quantise`
    (images -> integer latents) and `reconstruct` (integer latents -> images);
  - `entropy_encode` / `entropy_decode`: integer latents <-> range-coded
    bytes with `constriction`'s queue (range) coder and per-channel
    categorical models built from the stored integer tables;
  - `compress` / `decompress`: images <-> a container: a 32-byte header,
    then the payload:

        offset size field
        0      4    magic b"UJXC"
        4      1    format version (FORMAT_VERSION)
        5      1    kind: 0 one image, 1 a stack of images
        6      8    model id (first 8 bytes of the bundle's SHA-256)
        14     4    n, images (u32)
        18     6    h, w, c (u16 each)
        24     4    payload length in bytes (u32)
        28     4    CRC-32 of bytes 0..27 and the payload
    all little-endian;
  - `read_images` / `write_images` (PNG or .npy) and `atomic_write`, which
    leaves no file behind when writing fails.

Exactness: the integer tables are computed once (NumPy float64) when the
bundle is made and stored as integers; coder and decoder build their models
from those stored integers, so any process decodes the latents the encoder
quantised, bit for bit. Decoded pixels come from the decoder network and may
differ in the last float bits across backends; the latents do not.

Does not offer: training (see `codec.py`), or streaming of stacks larger
than memory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import struct
import zipfile
import zlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from unsupjax import codec as codec_lib

BUNDLE_FILE = "codec.npz"
MAGIC = b"UJXC"
FORMAT_VERSION = 1
KIND_IMAGE, KIND_STACK = 0, 1
HEADER = struct.Struct("<4sBB8sIHHHII")
assert HEADER.size == 32


class CodecFormatError(ValueError):
  """A compressed file or model bundle is malformed, foreign or corrupt."""


# --------------------------------------------------------------------------
# The model bundle.


def _flatten(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
  out = {}
  for k in sorted(tree):
    v = tree[k]
    if isinstance(v, dict):
      out.update(_flatten(v, f"{prefix}{k}/"))
    else:
      out[f"{prefix}{k}"] = np.asarray(v)
  return out


def _unflatten(flat: dict[str, np.ndarray]) -> dict:
  tree: dict = {}
  for key, v in flat.items():
    node = tree
    *path, leaf = key.split("/")
    for p in path:
      node = node.setdefault(p, {})
    node[leaf] = v
  return tree


def _digest(meta: dict, arrays: dict[str, np.ndarray]) -> bytes:
  h = hashlib.sha256(json.dumps(meta, sort_keys=True).encode())
  for k in sorted(arrays):
    a = np.ascontiguousarray(arrays[k])
    h.update(f"{k}|{a.dtype.newbyteorder('<').str}|{a.shape}".encode())
    h.update(a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes())
  return h.digest()


@dataclasses.dataclass(frozen=True, eq=False)
class Codec:
  """A trained codec on the host.

  config: the CodecConfig; image_shape: (h, w, c); params: {'net', 'prior'}
  nested dicts of f32 NumPy arrays; tables: the integer coding tables;
  model_id: 8 bytes identifying params and tables together.
  """
  config: codec_lib.CodecConfig
  image_shape: tuple[int, int, int]
  params: dict
  tables: codec_lib.Tables

  def _arrays(self) -> dict[str, np.ndarray]:
    arrays = {f"param/{k}": v.astype(np.float32) for k, v in _flatten(self.params).items()}
    arrays.update(lo=self.tables.lo.astype(np.int32),
                  width=self.tables.width.astype(np.int32),
                  freq=self.tables.freq.astype(np.uint32))
    return arrays

  def _meta(self) -> dict[str, Any]:
    cfg = dataclasses.asdict(self.config)
    cfg["hidden"] = list(cfg["hidden"])
    return {"format": FORMAT_VERSION, "config": cfg, "image_shape": list(self.image_shape),
            "freq_bits": codec_lib.FREQ_BITS}

  @property
  def model_id(self) -> bytes:
    cached = self.__dict__.get("_model_id")
    if cached is None:
      cached = _digest(self._meta(), self._arrays())[:8]
      object.__setattr__(self, "_model_id", cached)
    return cached

  @classmethod
  def from_state(cls, state: codec_lib.CodecState) -> Codec:
    params = jax.tree.map(lambda a: np.asarray(a, np.float32), jax.device_get(state.params))
    return cls(config=state.config, image_shape=tuple(state.image_shape),
               params=params, tables=codec_lib.build_tables(params["prior"]))

  def save(self, path: str | os.PathLike) -> None:
    meta = dict(self._meta(), model_id=self.model_id.hex())
    atomic_write(path, lambda f: np.savez(f, meta=np.array(json.dumps(meta)), **self._arrays()))

  @classmethod
  def load(cls, path: str | os.PathLike) -> Codec:
    """Loads a bundle; raises CodecFormatError if it is not one or its
    contents do not match the model id recorded in it."""
    path = pathlib.Path(path)
    try:
      with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
      meta = json.loads(str(arrays.pop("meta")))
      cfg = dict(meta["config"])
      config = codec_lib.CodecConfig(**cfg)
      tables = codec_lib.Tables(lo=arrays["lo"], width=arrays["width"], freq=arrays["freq"])
      params = _unflatten({k[len("param/"):]: v for k, v in arrays.items()
                           if k.startswith("param/")})
      out = cls(config=config, image_shape=tuple(int(s) for s in meta["image_shape"]),
                params=params, tables=tables)
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as e:
      raise CodecFormatError(f"{path}: not a codec bundle ({e})") from None
    if meta.get("format") != FORMAT_VERSION:
      raise CodecFormatError(f"{path}: bundle format {meta.get('format')!r} is not supported "
                             f"(this build reads {FORMAT_VERSION})")
    if out.model_id.hex() != meta.get("model_id"):
      raise CodecFormatError(f"{path}: bundle contents do not match its model id "
                             f"{meta.get('model_id')!r} (corrupt file)")
    return out

  # Transforms (JAX).

  def _net(self):
    return codec_lib.CodecNet(image_shape=self.image_shape, hidden=self.config.hidden,
                              latent_dim=int(self.config.latent_dim))

  def latents(self, x: np.ndarray) -> np.ndarray:
    """Continuous latents f32[n, d] of images x: f32[n, h, w, c] in [0, 1]."""
    fn = self.__dict__.get("_encode_fn")
    if fn is None:
      net, p = self._net(), self.params["net"]
      fn = jax.jit(lambda x: net.apply({"params": p}, x, method="encode"))
      object.__setattr__(self, "_encode_fn", fn)
    return np.asarray(fn(jnp.asarray(x, jnp.float32)))

  def quantise(self, x: np.ndarray) -> np.ndarray:
    """The integer latents the codec sends: i32[n, d] (rounded, clamped)."""
    return codec_lib.quantise(self.latents(x), self.tables)

  def reconstruct(self, q: np.ndarray) -> np.ndarray:
    """Images f32[n, h, w, c] in [0, 1] decoded from integer latents i32[n, d]."""
    fn = self.__dict__.get("_decode_fn")
    if fn is None:
      net, p = self._net(), self.params["net"]
      fn = jax.jit(lambda y: jax.nn.sigmoid(net.apply({"params": p}, y, method="decode")))
      object.__setattr__(self, "_decode_fn", fn)
    out = np.asarray(fn(jnp.asarray(q, jnp.float32)))
    return out.reshape((q.shape[0],) + tuple(self.image_shape))


# --------------------------------------------------------------------------
# Entropy coding.


def coding_models(tables: codec_lib.Tables) -> list:
  """One constriction categorical per channel (None: a one-symbol channel,
  which costs no bits and is not coded). Build once, pass to
  `entropy_encode` / `entropy_decode` when coding many small streams."""
  import constriction
  out = []
  for j in range(tables.lo.shape[0]):
    w = int(tables.width[j])
    out.append(None if w == 1 else constriction.stream.model.Categorical(
        tables.freq[j, :w].astype(np.float64), perfect=False))
  return out


def entropy_encode(q: np.ndarray, tables: codec_lib.Tables, models: list | None = None) -> bytes:
  """Range-codes q: i32[n, d] (each column within its support), channel by
  channel, into little-endian 32-bit words."""
  import constriction
  q = np.asarray(q)
  if q.ndim != 2 or q.shape[1] != tables.lo.shape[0]:
    raise ValueError(f"q: expected shape (n, {tables.lo.shape[0]}), got {q.shape}")
  if np.any(q < tables.lo) or np.any(q > tables.hi):
    raise ValueError("q: symbols outside the tables' support (quantise clamps them)")
  enc = constriction.stream.queue.RangeEncoder()
  for j, model in enumerate(models or coding_models(tables)):
    if model is not None:
      enc.encode(np.ascontiguousarray(q[:, j] - tables.lo[j], np.int32), model)
  return enc.get_compressed().astype("<u4").tobytes()


def entropy_decode(payload: bytes, n: int, tables: codec_lib.Tables,
                   models: list | None = None) -> np.ndarray:
  """The inverse of `entropy_encode`: i32[n, d]."""
  import constriction
  if len(payload) % 4:
    raise CodecFormatError(f"payload of {len(payload)} bytes is not whole 32-bit words")
  words = np.frombuffer(payload, "<u4").astype(np.uint32)
  dec = constriction.stream.queue.RangeDecoder(words)
  q = np.empty((n, tables.lo.shape[0]), np.int32)
  for j, model in enumerate(models or coding_models(tables)):
    q[:, j] = tables.lo[j] if model is None else np.asarray(dec.decode(model, n)) + tables.lo[j]
  return q


# --------------------------------------------------------------------------
# The container.


@dataclasses.dataclass(frozen=True)
class Header:
  kind: int
  model_id: bytes
  n: int
  shape: tuple[int, int, int]
  payload: bytes


def pack(kind: int, model_id: bytes, n: int, shape, payload: bytes) -> bytes:
  head = HEADER.pack(MAGIC, FORMAT_VERSION, kind, model_id, n, *shape, len(payload), 0)
  crc = zlib.crc32(payload, zlib.crc32(head[:28]))
  return head[:28] + struct.pack("<I", crc) + payload


def parse(blob: bytes, what: str = "input") -> Header:
  """Checks and splits a container; raises CodecFormatError naming `what`."""
  if len(blob) < 4 or blob[:4] != MAGIC:
    raise CodecFormatError(f"{what}: not an unsupjax codec file (expected magic {MAGIC!r}, "
                           f"got {bytes(blob[:4])!r})")
  if len(blob) < HEADER.size:
    raise CodecFormatError(f"{what}: truncated: {len(blob)} bytes, shorter than the "
                           f"{HEADER.size}-byte header")
  magic, version, kind, model_id, n, h, w, c, size, crc = HEADER.unpack_from(blob)
  if version != FORMAT_VERSION:
    raise CodecFormatError(f"{what}: format version {version} is not supported "
                           f"(this build reads version {FORMAT_VERSION})")
  payload = bytes(blob[HEADER.size:])
  if len(payload) < size:
    raise CodecFormatError(f"{what}: truncated: the header announces {size} payload bytes, "
                           f"the file holds {len(payload)}")
  if len(payload) > size:
    raise CodecFormatError(f"{what}: {len(payload) - size} unexpected bytes after the "
                           f"{size}-byte payload")
  if zlib.crc32(payload, zlib.crc32(bytes(blob[:28]))) != crc:
    raise CodecFormatError(f"{what}: corrupt: CRC-32 mismatch")
  if kind not in (KIND_IMAGE, KIND_STACK) or (kind == KIND_IMAGE and n != 1):
    raise CodecFormatError(f"{what}: corrupt header (kind {kind}, {n} images)")
  return Header(kind=kind, model_id=model_id, n=n, shape=(h, w, c), payload=payload)


def compress(codec: Codec, x: np.ndarray, kind: int = KIND_STACK) -> bytes:
  """Images x: f32[n, h, w, c] in [0, 1] -> container bytes."""
  x = np.asarray(x, np.float32)
  if x.ndim != 4 or tuple(x.shape[1:]) != codec.image_shape:
    raise ValueError(f"x: expected images of shape (n, {', '.join(map(str, codec.image_shape))}), "
                     f"got {x.shape}")
  if kind == KIND_IMAGE and x.shape[0] != 1:
    raise ValueError(f"kind: one image expected, got {x.shape[0]}")
  if x.shape[0] >= 2**32:
    raise ValueError(f"x: at most {2**32 - 1} images per file, got {x.shape[0]}")
  q = codec.quantise(x)
  return pack(kind, codec.model_id, x.shape[0], codec.image_shape,
              entropy_encode(q, codec.tables))


def decode_latents(codec: Codec, blob: bytes, what: str = "input") -> tuple[Header, np.ndarray]:
  """Checks a container against `codec` and entropy-decodes its latents i32[n, d]."""
  header = parse(blob, what)
  if header.model_id != codec.model_id:
    raise CodecFormatError(f"{what}: compressed by model {header.model_id.hex()}, but this "
                           f"model is {codec.model_id.hex()}")
  if header.shape != codec.image_shape:
    raise CodecFormatError(f"{what}: holds {header.shape} images, the model codes "
                           f"{codec.image_shape}")
  try:
    q = entropy_decode(header.payload, header.n, codec.tables)
  except CodecFormatError as e:
    raise CodecFormatError(f"{what}: corrupt: {e}") from None
  except Exception as e:  # the coder's own complaint about a bad stream
    raise CodecFormatError(f"{what}: corrupt payload ({e})") from None
  return header, q


def decompress(codec: Codec, blob: bytes, what: str = "input") -> tuple[Header, np.ndarray]:
  """Container bytes -> (header, images f32[n, h, w, c] in [0, 1])."""
  header, q = decode_latents(codec, blob, what)
  return header, codec.reconstruct(q)


# --------------------------------------------------------------------------
# Files.


def atomic_write(path: str | os.PathLike, write) -> None:
  """Calls write(file object) on a temporary file beside `path`, then renames
  it to `path`; on any error the temporary file is removed and `path` is
  untouched."""
  path = pathlib.Path(path)
  tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
  try:
    with open(tmp, "wb") as f:
      write(f)
    os.replace(tmp, path)
  except BaseException:
    tmp.unlink(missing_ok=True)
    raise


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


def to_uint8(x: np.ndarray) -> np.ndarray:
  return np.clip(np.round(np.asarray(x) * 255.0), 0, 255).astype(np.uint8)


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
