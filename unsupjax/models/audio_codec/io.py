"""The speech codec's files: its saved model (a bundle) and its compressed
container, built from the image codec's pieces (`codec.bundle`'s npz
bundle and model id, `codec.entropy`'s tables and range coder).

Offers
  - `AudioCodec`: a trained speech codec on the host: the transforms'
    parameters, the integer coding tables of the latent channels and a
    model id (the first 8 bytes of the SHA-256 of all of them), made from a
    train state (`from_state`), saved to and loaded from one `.npz`
    (`save` / `load`, which checks the contents against the recorded id),
    with `quantise` (waveform -> integer latents) and `reconstruct`
    (integer latents -> waveform);
  - `compress` / `decompress`: one utterance <-> a container: a 32-byte
    header, then the payload:

        offset size field
        0      4    magic b"UJXA"
        4      1    format version (1)
        5      1    reserved (0)
        6      8    model id
        14     4    sample rate in Hz (u32)
        18     4    samples (u32)
        22     2    latent channels (u16)
        24     4    payload length in bytes (u32)
        28     4    CRC-32 of bytes 0..27 and the payload
    all little-endian; the payload is the range coder's 32-bit words: the
    latents i32[frames, channels] (frames = ceil(samples / hop)) coded
    channel by channel; `pack` / `parse` are the steps in between;
  - `read_input`: a WAV file checked against the codec (mono, its rate).

Exactness: the integer tables are computed once when the bundle is made
and stored as integers, so any process decodes the encoder's latents bit
for bit. The waveform comes from the decoder network (float: the last
bits may differ across backends). The encoder and the decoder run on the
signal zero-padded to whole BUCKET_FRAMES (a fixed set of shapes, so a
long list of utterances compiles a few programs, not one per length);
only the utterance's own frames are sent.

Does not offer: streaming (one utterance is one stream; frames are not
independently decodable), stereo, or files longer than memory.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pathlib
import struct
import zipfile
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from unsupjax import audio
from unsupjax.models.audio_codec import model as model_lib
from unsupjax.models.codec import bundle as bundle_lib
from unsupjax.models.codec import entropy
from unsupjax.models.codec import io as codec_io
from unsupjax.models.codec.bundle import atomic_write  # noqa: F401  (re-exported)
from unsupjax.models.codec.entropy import CodecFormatError, Tables

BUNDLE_FILE = "audio_codec.npz"
BUNDLE_FORMAT = 1
MAGIC = b"UJXA"
FORMAT_VERSION = 1
HEADER = struct.Struct("<4sBB8sIIHII")
assert HEADER.size == 32
BUCKET_FRAMES = 50         # signals are processed in whole multiples of this many frames


@dataclasses.dataclass(frozen=True, eq=False)
class AudioCodec:
  """A trained speech codec on the host.

  config: the AudioCodecConfig; params: {'net', 'prior'} nested dicts of
  f32 NumPy arrays; tables: the integer coding tables of the latent
  channels; model_id: 8 bytes identifying params and tables together.
  """
  config: model_lib.AudioCodecConfig
  params: dict
  tables: Tables

  def _arrays(self) -> dict[str, np.ndarray]:
    arrays = {f"param/{k}": v.astype(np.float32)
              for k, v in bundle_lib.flatten_tree(self.params).items()}
    arrays.update(lo=self.tables.lo.astype(np.int32), width=self.tables.width.astype(np.int32),
                  freq=self.tables.freq.astype(np.uint32))
    return arrays

  def _meta(self) -> dict[str, Any]:
    cfg = {k: list(v) if isinstance(v, tuple) else v
           for k, v in dataclasses.asdict(self.config).items()}
    return {"format": BUNDLE_FORMAT, "kind": "audio-codec", "config": cfg,
            "freq_bits": entropy.FREQ_BITS}

  @property
  def model_id(self) -> bytes:
    cached = self.__dict__.get("_model_id")
    if cached is None:
      cached = bundle_lib.content_id(self._meta(), self._arrays())
      object.__setattr__(self, "_model_id", cached)
    return cached

  @property
  def sample_rate(self) -> int:
    return int(self.config.sample_rate)

  @property
  def hop(self) -> int:
    return self.config.hop

  @classmethod
  def from_state(cls, state) -> AudioCodec:
    """The codec of a train state (the discriminator, if any, is left out)."""
    params = jax.tree.map(lambda a: np.asarray(a, np.float32),
                          jax.device_get({k: state.params[k] for k in ("net", "prior")}))
    return cls(config=state.config, params=params,
               tables=entropy.build_tables(params["prior"]))

  def save(self, path: str | os.PathLike) -> None:
    bundle_lib.write_npz(path, dict(self._meta(), model_id=self.model_id.hex()), self._arrays())

  @classmethod
  def load(cls, path: str | os.PathLike) -> AudioCodec:
    """Loads a bundle; CodecFormatError if it is not an audio codec bundle
    or its contents do not match the model id recorded in it."""
    path = pathlib.Path(path)
    try:
      meta, arrays = bundle_lib.read_npz(path)
      if meta.get("kind") != "audio-codec":
        raise ValueError(f"a bundle of kind {meta.get('kind', 'image codec')!r}")
      if meta.get("format") != BUNDLE_FORMAT:
        raise ValueError(f"bundle format {meta.get('format')!r} is not supported (this build "
                         f"reads {BUNDLE_FORMAT})")
      config = model_lib.AudioCodecConfig(**meta["config"])
      tables = Tables(lo=arrays["lo"], width=arrays["width"], freq=arrays["freq"])
      params = bundle_lib.unflatten_tree({k[len("param/"):]: v for k, v in arrays.items()
                                          if k.startswith("param/")})
      out = cls(config=config, params=params, tables=tables)
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as e:
      raise CodecFormatError(f"{path}: not an audio codec bundle ({e})") from None
    if out.model_id.hex() != meta.get("model_id"):
      raise CodecFormatError(f"{path}: bundle contents do not match its model id "
                             f"{meta.get('model_id')!r} (corrupt file)")
    return out

  # Transforms (JAX).

  def _fn(self, name: str):
    fn = _transform(self.config.channels, self.config.strides, int(self.config.latent_dim),
                    name)
    return functools.partial(fn, self.params["net"])

  def _frames(self, n: int) -> tuple[int, int]:
    """(frames sent, frames processed) for n samples."""
    frames = -(-n // self.hop)
    return frames, -(-frames // BUCKET_FRAMES) * BUCKET_FRAMES

  def latents(self, x: np.ndarray) -> np.ndarray:
    """Continuous latents f32[frames, latent_dim] of one waveform f32[t]."""
    x = self._check_audio(x)
    frames, padded = self._frames(x.shape[0])
    xp = np.zeros((1, padded * self.hop), np.float32)
    xp[0, :x.shape[0]] = x
    return np.asarray(self._fn("encode")(jnp.asarray(xp)))[0, :frames]

  def quantise(self, x: np.ndarray) -> np.ndarray:
    """The integer latents the codec sends: i32[frames, latent_dim]."""
    return entropy.quantise(self.latents(x), self.tables)

  def reconstruct(self, q: np.ndarray, samples: int) -> np.ndarray:
    """The waveform f32[samples] in [-1, 1] decoded from integer latents
    i32[frames, latent_dim] (frames = ceil(samples / hop))."""
    frames, padded = self._frames(samples)
    if q.shape != (frames, self.tables.lo.shape[0]):
      raise ValueError(f"q: expected latents of shape ({frames}, {self.tables.lo.shape[0]}) "
                       f"for {samples} samples, got {q.shape}")
    yp = np.zeros((1, padded, q.shape[1]), np.float32)
    yp[0, :frames] = q
    out = np.asarray(self._fn("decode")(jnp.asarray(yp)))[0, :samples]
    return np.clip(out, -1.0, 1.0)

  def _check_audio(self, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    if x.ndim != 1 or x.shape[0] == 0:
      raise ValueError(f"x: expected one non-empty waveform f32[t], got shape {x.shape}")
    if x.shape[0] >= 2**32:
      raise ValueError(f"x: at most {2**32 - 1} samples per file, got {x.shape[0]}")
    if not np.all(np.isfinite(x)):
      raise ValueError("x: expected finite samples")
    return x


@functools.lru_cache(maxsize=16)
def _transform(channels: tuple, strides: tuple, latent_dim: int, method: str):
  """The jitted encoder or decoder of one architecture, parameters as an
  argument: codecs of one shape share the compiled programs."""
  net = model_lib.AudioCodecNet(channels, strides, latent_dim)
  return jax.jit(lambda p, v: net.apply({"params": p}, v, method=method))


# --------------------------------------------------------------------------
# The container.


@dataclasses.dataclass(frozen=True)
class Header:
  model_id: bytes
  sample_rate: int
  samples: int
  channels: int
  payload: bytes


def pack(model_id: bytes, sample_rate: int, samples: int, channels: int,
         payload: bytes) -> bytes:
  return codec_io.seal(HEADER.pack(MAGIC, FORMAT_VERSION, 0, model_id, sample_rate, samples,
                                   channels, len(payload), 0), payload)


def parse(blob: bytes, what: str = "input") -> Header:
  """Checks and splits a container; raises CodecFormatError naming `what`."""
  fields, payload = codec_io.unseal(blob, MAGIC, HEADER, "audio codec", what)
  _, version, reserved, model_id, rate, samples, channels, size, crc = fields
  if version != FORMAT_VERSION:
    raise CodecFormatError(f"{what}: format version {version} is not supported (this build "
                           f"reads version {FORMAT_VERSION})")
  if reserved != 0 or samples == 0 or size % 4:
    raise CodecFormatError(f"{what}: corrupt header")
  return Header(model_id=model_id, sample_rate=rate, samples=samples, channels=channels,
                payload=payload)


def compress(codec: AudioCodec, x: np.ndarray) -> bytes:
  """One waveform f32[t] in [-1, 1] at codec.sample_rate -> container bytes."""
  q = codec.quantise(x)
  return pack(codec.model_id, codec.sample_rate, int(np.shape(x)[0]), q.shape[1],
              entropy.entropy_encode(q, codec.tables, codec_models(codec)))


def codec_models(codec: AudioCodec) -> list:
  """The range coder's models of codec.tables (built once per codec)."""
  models = codec.__dict__.get("_coding_models")
  if models is None:
    models = entropy.coding_models(codec.tables)
    object.__setattr__(codec, "_coding_models", models)
  return models


def decode_latents(codec: AudioCodec, blob: bytes, what: str = "input"
                   ) -> tuple[Header, np.ndarray]:
  """Checks a container against `codec` and entropy-decodes its latents
  i32[frames, latent_dim]."""
  header = parse(blob, what)
  if header.model_id != codec.model_id:
    raise CodecFormatError(f"{what}: compressed by model {header.model_id.hex()}, but this "
                           f"model is {codec.model_id.hex()}")
  if header.sample_rate != codec.sample_rate or header.channels != codec.tables.lo.shape[0]:
    raise CodecFormatError(f"{what}: corrupt header ({header.sample_rate} Hz, "
                           f"{header.channels} channels for this model's "
                           f"{codec.sample_rate} Hz, {codec.tables.lo.shape[0]})")
  frames = -(-header.samples // codec.hop)
  try:
    q = entropy.entropy_decode(header.payload, frames, codec.tables, codec_models(codec))
  except Exception as e:  # the coder's own complaint about a bad stream
    raise CodecFormatError(f"{what}: corrupt payload ({e})") from None
  return header, q


def decompress(codec: AudioCodec, blob: bytes, what: str = "input"
               ) -> tuple[Header, np.ndarray]:
  """Container bytes -> (header, waveform f32[samples] in [-1, 1])."""
  header, q = decode_latents(codec, blob, what)
  return header, codec.reconstruct(q, header.samples)


def read_input(codec: AudioCodec, path: str | os.PathLike, what: str = "IN") -> np.ndarray:
  """The waveform of a mono WAV file at the codec's rate; ValueError
  naming `what` for anything else (stereo, another rate, not a WAV)."""
  return audio.read_wav(path, codec.sample_rate, what=what)[0]
