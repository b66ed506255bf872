"""The saved model of the learned codec: one `.npz` bundle.

Offers `Codec`, a trained codec on the host: the transforms' parameters,
the integer coding tables of the latents and (optionally) of the residual
layer, and a model id (the first 8 bytes of the SHA-256 of all of them),
built from a train state (`Codec.from_state`, `with_residual`), saved to
and loaded from one bundle (`save` / `load`, which checks the contents
against the recorded id), with `quantise` (images -> integer latents),
`reconstruct` (integer latents -> images) and `base_pixels` (the residual
layer's exact 8-bit base). Also `atomic_write`: a file written under a
temporary name and renamed into place, so no partial file is ever left.

Exactness: the integer tables are computed once (NumPy float64) when the
bundle is made and stored as integers; coder and decoder build their models
from those stored integers, so any process decodes the symbols the encoder
made, bit for bit. Decoded pixels come from the decoder network and may
differ in the last float bits across backends; the latents do not.

The pieces any bundle is made of are public, for other codecs' bundles
(the audio codec's): `flatten_tree` / `unflatten_tree` (nested parameter
dicts <-> "a/b/c" keyed arrays), `content_id` (the model id of a bundle's
metadata and arrays), `write_npz` / `read_npz` (one .npz holding JSON
metadata and the arrays, written atomically).

Does not offer: the container format or image files (`io`), or training
(`model`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import zipfile
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from unsupjax.models.codec import entropy
from unsupjax.models.codec import model as codec_lib
from unsupjax.models.codec import residual as residual_lib
from unsupjax.models.codec.entropy import CodecFormatError, Tables

BUNDLE_FILE = "codec.npz"
BUNDLE_VERSIONS = (1, 2)    # bundle format: 1 without residual tables, 2 with


def flatten_tree(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
  """A nested dict of arrays as one dict keyed by "a/b/c" paths."""
  out = {}
  for k in sorted(tree):
    v = tree[k]
    if isinstance(v, dict):
      out.update(flatten_tree(v, f"{prefix}{k}/"))
    else:
      out[f"{prefix}{k}"] = np.asarray(v)
  return out


def unflatten_tree(flat: dict[str, np.ndarray]) -> dict:
  """The inverse of `flatten_tree`."""
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


def content_id(meta: dict, arrays: dict[str, np.ndarray]) -> bytes:
  """A bundle's model id: the first 8 bytes of the SHA-256 of its JSON
  metadata and its arrays (names, dtypes, shapes and bytes)."""
  return _digest(meta, arrays)[:8]


def write_npz(path: str | os.PathLike, meta: dict, arrays: dict[str, np.ndarray]) -> None:
  """meta (as JSON, under the key 'meta') and arrays in one .npz, atomically."""
  atomic_write(path, lambda f: np.savez(f, meta=np.array(json.dumps(meta)), **arrays))


def read_npz(path: str | os.PathLike) -> tuple[dict, dict[str, np.ndarray]]:
  """(meta, arrays) of a `write_npz` file; the errors of a file that is
  not one (OSError, ValueError, KeyError, zipfile.BadZipFile ...) pass."""
  with np.load(path, allow_pickle=False) as z:
    arrays = {k: z[k] for k in z.files}
  return json.loads(str(arrays.pop("meta"))), arrays


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
  tables: Tables
  residual: dict = dataclasses.field(default_factory=dict)

  def _arrays(self) -> dict[str, np.ndarray]:
    arrays = {f"param/{k}": v.astype(np.float32) for k, v in flatten_tree(self.params).items()}
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
            "image_shape": list(self.image_shape), "freq_bits": entropy.FREQ_BITS}
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
      cached = content_id(self._meta(), self._arrays())
      object.__setattr__(self, "_model_id", cached)
    return cached

  @classmethod
  def from_state(cls, state: codec_lib.CodecState) -> Codec:
    params = jax.tree.map(lambda a: np.asarray(a, np.float32), jax.device_get(state.params))
    return cls(config=state.config, image_shape=tuple(state.image_shape),
               params=params, tables=entropy.build_tables(params["prior"]))

  def save(self, path: str | os.PathLike) -> None:
    meta = dict(self._meta(), model_id=self.model_id.hex())
    write_npz(path, meta, self._arrays())

  @classmethod
  def load(cls, path: str | os.PathLike) -> Codec:
    """Loads a bundle; raises CodecFormatError if it is not one or its
    contents do not match the model id recorded in it."""
    path = pathlib.Path(path)
    try:
      meta, arrays = read_npz(path)
      cfg = dict(meta["config"])
      config = codec_lib.CodecConfig(**cfg)
      tables = Tables(lo=arrays["lo"], width=arrays["width"], freq=arrays["freq"])
      params = unflatten_tree({k[len("param/"):]: v for k, v in arrays.items()
                               if k.startswith("param/")})
      residual = {}
      for step in meta.get("residual_steps", []):
        freq = arrays[f"residual/{step}"].astype(np.uint32)
        lo, width = residual_lib.residual_support(step)
        if freq.shape != (256, int(width.max())):
          raise ValueError(f"residual table of step {step} has shape {freq.shape}")
        residual[int(step)] = Tables(lo=lo, width=width, freq=freq)
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
    return entropy.quantise(self.latents(x), self.tables)

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
    the fixed-point decoder (`residual.integer_base`): the same integers in
    every process on every platform; the float decoder's picture rounded
    to 8 bits, but for a pixel now and then one level apart."""
    layers = self.__dict__.get("_integer_layers")
    if layers is None:
      layers = residual_lib.integer_decoder(self.params["net"])
      object.__setattr__(self, "_integer_layers", layers)
    q = np.asarray(q)
    return np.concatenate([residual_lib.integer_base(layers, q[i:i + 4096])
                           for i in range(0, q.shape[0], 4096)] or
                          [np.zeros((0, self.num_pixels), np.uint8)])

  def with_residual(self, x: np.ndarray, steps=residual_lib.RESIDUAL_STEPS) -> Codec:
    """This codec plus residual tables for `steps`, counted on images x:
    f32[n, h, w, c] in [0, 1] (the training set; the images are taken on
    the 8-bit grid). A new model id."""
    x = self._check_images(x)
    steps = sorted({residual_lib.check_step(s) for s in steps})
    if not steps:
      raise ValueError("steps: expected at least one residual step")
    x_u8 = residual_lib.to_uint8(x).reshape(x.shape[0], -1)
    base = np.concatenate([self.base_pixels(self.quantise(x[i:i + 4096]))
                           for i in range(0, x.shape[0], 4096)])
    residual = {s: residual_lib.build_residual_tables(
        residual_lib.residual_symbols(x_u8, base, s), base, s) for s in steps}
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
      cache[step] = entropy.coding_models(self.tables if step == 0 else self.residual[step])
    return cache[step]


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
