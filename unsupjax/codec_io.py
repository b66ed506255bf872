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
    residual symbols grouped by base value (see `codec.py`);
  - `read_images` / `write_images` (PNG or .npy) and `atomic_write`, which
    leaves no file behind when writing fails.

Exactness: the integer tables are computed once (NumPy float64) when the
bundle is made and stored as integers; coder and decoder build their models
from those stored integers, so any process decodes the latents (and
residual symbols) the encoder made, bit for bit. Decoded pixels come from
the decoder network and may differ in the last float bits across backends;
the latents do not. With a residual, the pixels are the base of the
fixed-point decoder (the same integers on every platform) plus the decoded
residual: the same 8-bit images everywhere, the originals at step 1.

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
FORMAT_VERSION = 2          # the newest container version read and written
LATENTS_ONLY_VERSION = 1    # written when there is no residual, as before it existed
BUNDLE_VERSIONS = (1, 2)    # bundle format: 1 without residual tables, 2 with
KIND_IMAGE, KIND_STACK = 0, 1
HEADER = struct.Struct("<4sBB8sIHHBBII")
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
  nested dicts of f32 NumPy arrays; tables: the integer coding tables of the
  latents; residual: {step: the residual symbols' tables, one per base
  value} (empty: the codec is lossy only; `with_residual` counts them);
  model_id: 8 bytes identifying params and all tables together.
  """
  config: codec_lib.CodecConfig
  image_shape: tuple[int, int, int]
  params: dict
  tables: codec_lib.Tables
  residual: dict = dataclasses.field(default_factory=dict)

  def _arrays(self) -> dict[str, np.ndarray]:
    arrays = {f"param/{k}": v.astype(np.float32) for k, v in _flatten(self.params).items()}
    arrays.update(lo=self.tables.lo.astype(np.int32),
                  width=self.tables.width.astype(np.int32),
                  freq=self.tables.freq.astype(np.uint32))
    # Residual frequencies are < 2**16 (every context has >= 2 symbols, each >= 1).
    arrays.update({f"residual/{s}": t.freq.astype(np.uint16)
                   for s, t in sorted(self.residual.items())})
    return arrays

  def _meta(self) -> dict[str, Any]:
    cfg = dataclasses.asdict(self.config)
    cfg["hidden"] = list(cfg["hidden"])
    meta = {"format": 2 if self.residual else 1, "config": cfg,
            "image_shape": list(self.image_shape), "freq_bits": codec_lib.FREQ_BITS}
    if self.residual:
      meta["residual_steps"] = sorted(self.residual)
    return meta

  @property
  def num_pixels(self) -> int:
    h, w, c = self.image_shape
    return h * w * c

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
      residual = {}
      for step in meta.get("residual_steps", []):
        freq = arrays[f"residual/{step}"].astype(np.uint32)
        lo, width = codec_lib.residual_support(step)
        if freq.shape != (256, int(width.max())):
          raise ValueError(f"residual table of step {step} has shape {freq.shape}")
        residual[int(step)] = codec_lib.Tables(lo=lo, width=width, freq=freq)
      out = cls(config=config, image_shape=tuple(int(s) for s in meta["image_shape"]),
                params=params, tables=tables, residual=residual)
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as e:
      raise CodecFormatError(f"{path}: not a codec bundle ({e})") from None
    if meta.get("format") not in BUNDLE_VERSIONS:
      raise CodecFormatError(f"{path}: bundle format {meta.get('format')!r} is not supported "
                             f"(this build reads {', '.join(map(str, BUNDLE_VERSIONS))})")
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

  # The residual layer.

  def base_pixels(self, q: np.ndarray) -> np.ndarray:
    """The 8-bit base the residual is taken against: u8[n, h*w*c], from
    the fixed-point decoder (`codec.integer_base`): the same integers in
    every process on every platform; the float decoder's picture rounded
    to 8 bits, but for a pixel now and then one level apart."""
    layers = self.__dict__.get("_integer_layers")
    if layers is None:
      layers = codec_lib.integer_decoder(self.params["net"])
      object.__setattr__(self, "_integer_layers", layers)
    q = np.asarray(q)
    return np.concatenate([codec_lib.integer_base(layers, q[i:i + 4096])
                           for i in range(0, q.shape[0], 4096)] or
                          [np.zeros((0, self.num_pixels), np.uint8)])

  def with_residual(self, x: np.ndarray, steps=codec_lib.RESIDUAL_STEPS) -> Codec:
    """This codec plus residual tables for `steps`, counted on images x:
    f32[n, h, w, c] in [0, 1] (the training set; the images are taken on
    the 8-bit grid). A new model id."""
    x = self._check_images(x)
    steps = sorted({codec_lib._check_step(s) for s in steps})
    if not steps:
      raise ValueError("steps: expected at least one residual step")
    x_u8 = to_uint8(x).reshape(x.shape[0], -1)
    base = np.concatenate([self.base_pixels(self.quantise(x[i:i + 4096]))
                           for i in range(0, x.shape[0], 4096)])
    residual = {s: codec_lib.build_residual_tables(
        codec_lib.residual_symbols(x_u8, base, s), base, s) for s in steps}
    return dataclasses.replace(self, residual=residual)

  def check_residual_step(self, step: int, what: str = "residual_step") -> int:
    """step (0: none) if this codec can code it; ValueError naming `what` if not."""
    if step == 0:
      return 0
    if not self.residual:
      raise ValueError(f"{what}: this model has no residual tables (a bundle made before "
                       f"they existed, or without them: see Codec.with_residual)")
    if step not in self.residual:
      raise ValueError(f"{what}: expected 0 (none) or one of this model's steps "
                       f"{sorted(self.residual)}, got {step!r}")
    return int(step)

  def _check_images(self, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    if x.ndim != 4 or tuple(x.shape[1:]) != self.image_shape:
      raise ValueError(f"x: expected images of shape (n, {', '.join(map(str, self.image_shape))}),"
                       f" got {x.shape}")
    return x

  def _models(self, step: int) -> list:
    """Cached constriction models: the latents' (step 0) or a residual's."""
    cache = self.__dict__.setdefault("_coding_models", {})
    if step not in cache:
      cache[step] = coding_models(self.tables if step == 0 else self.residual[step])
    return cache[step]


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
  enc = constriction.stream.queue.RangeEncoder()
  _encode_into(enc, q, tables, models)
  return enc.get_compressed().astype("<u4").tobytes()


def _encode_into(enc, q: np.ndarray, tables: codec_lib.Tables, models: list | None) -> None:
  q = np.asarray(q)
  if q.ndim != 2 or q.shape[1] != tables.lo.shape[0]:
    raise ValueError(f"q: expected shape (n, {tables.lo.shape[0]}), got {q.shape}")
  if np.any(q < tables.lo) or np.any(q > tables.hi):
    raise ValueError("q: symbols outside the tables' support (quantise clamps them)")
  for j, model in enumerate(models or coding_models(tables)):
    if model is not None:
      enc.encode(np.ascontiguousarray(q[:, j] - tables.lo[j], np.int32), model)


def _decode_from(dec, n: int, tables: codec_lib.Tables, models: list | None) -> np.ndarray:
  q = np.empty((n, tables.lo.shape[0]), np.int32)
  for j, model in enumerate(models or coding_models(tables)):
    q[:, j] = tables.lo[j] if model is None else np.asarray(dec.decode(model, n)) + tables.lo[j]
  return q


def entropy_decode(payload: bytes, n: int, tables: codec_lib.Tables,
                   models: list | None = None) -> np.ndarray:
  """The inverse of `entropy_encode`: i32[n, d]."""
  import constriction
  if len(payload) % 4:
    raise CodecFormatError(f"payload of {len(payload)} bytes is not whole 32-bit words")
  words = np.frombuffer(payload, "<u4").astype(np.uint32)
  return _decode_from(constriction.stream.queue.RangeDecoder(words), n, tables, models)


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
  head = HEADER.pack(MAGIC, version, kind, model_id, n, *shape, residual_step,
                     len(payload), 0)
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
  magic, version, kind, model_id, n, h, w, c, step, size, crc = HEADER.unpack_from(blob)
  if version not in (LATENTS_ONLY_VERSION, FORMAT_VERSION):
    raise CodecFormatError(f"{what}: format version {version} is not supported "
                           f"(this build reads versions {LATENTS_ONLY_VERSION}-{FORMAT_VERSION})")
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
    r = codec_lib.residual_symbols(to_uint8(x).reshape(x.shape[0], -1), base, residual_step)
  return pack(kind, codec.model_id, x.shape[0], codec.image_shape,
              encode_symbols(codec, q, r, residual_step, base), residual_step)


def encode_symbols(codec: Codec, q: np.ndarray, r: np.ndarray | None = None,
                   residual_step: int = 0, base: np.ndarray | None = None) -> bytes:
  """The payload of a container: latents q: i32[n, d], then (with a
  residual step) residual symbols r: i32[n, h*w*c], range-coded. base:
  `codec.base_pixels(q)` when the caller has it already."""
  import constriction
  enc = constriction.stream.queue.RangeEncoder()
  _encode_into(enc, q, codec.tables, codec._models(0))
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
    q = _decode_from(dec, header.n, codec.tables, codec._models(0))
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
  pixels = codec_lib.residual_pixels(base, r, step)
  return (pixels.astype(np.float32) / np.float32(255.0)).reshape(
      (q.shape[0],) + tuple(codec.image_shape))


def decompress(codec: Codec, blob: bytes, what: str = "input") -> tuple[Header, np.ndarray]:
  """Container bytes -> (header, images f32[n, h, w, c] in [0, 1])."""
  header, q, r, base = _decode(codec, blob, what)
  return header, images_from_symbols(codec, header.residual_step, q, r, base)


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
