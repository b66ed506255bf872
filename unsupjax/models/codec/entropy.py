"""Integer probability tables and the range coder of the learned codec.

Offers
  - `Tables`: per-channel integer frequency tables (each row sums to
    2**FREQ_BITS), built from the prior once, on the host, in float64
    (`build_tables`), so that every process codes with the same integers;
    `quantise_pmf` turns any probability vector into such a row;
  - `quantise`: latents -> the integer symbols the codec sends (rounded,
    clamped to each channel's support);
  - `coding_models`, `entropy_encode` / `entropy_decode` (and
    `encode_into` / `decode_from` on an open coder): integer symbols <->
    range-coded 32-bit words with `constriction`'s queue (range) coder;
  - `CodecFormatError`, raised for malformed bytes here and in `bundle`
    and `io`.

Latents are arrays [..., d] whose last axis is the channel: one vector per
image ([n, d], `model`) or one per frame of a signal ([frames, d], the
audio codec); the coder codes them channel by channel over all positions.

Does not offer: the prior's training (`model`), the residual layer's
tables (`residual`), the container or the bundle (`io`, `bundle`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from scipy import special

from unsupjax.models.codec.model import MIN_SCALE

FREQ_BITS = 16            # frequency tables sum to 2**FREQ_BITS
TAIL_MASS = 2.0**-24      # prior mass left outside the support, per side
MAX_SUPPORT = 2**12       # at most this many symbols per channel


class CodecFormatError(ValueError):
  """A compressed file or model bundle is malformed, foreign or corrupt."""


class Tables(NamedTuple):
  """Integer entropy-coding tables of a factorised prior.

  lo: i32[d] the smallest symbol of each channel; width: i32[d] its support
  size (symbols lo .. lo + width - 1); freq: u32[d, max(width)] frequencies,
  each row summing to 2**FREQ_BITS over its first width entries (>= 1 each),
  zero-padded after.
  """
  lo: np.ndarray
  width: np.ndarray
  freq: np.ndarray

  @property
  def hi(self) -> np.ndarray:
    return self.lo + self.width - 1

  def bits(self, q: np.ndarray) -> np.ndarray:
    """The ideal code length -log2(freq / total) of q: i32[n, ..., d] -> f64[n] bits."""
    q = np.asarray(q)
    cols = np.arange(q.shape[-1])
    f = self.freq[cols, q - self.lo].astype(np.float64)
    return np.sum((FREQ_BITS - np.log2(f)).reshape(q.shape[0], -1), axis=1)


def prior_cdf_np(prior: dict[str, np.ndarray], v: np.ndarray) -> np.ndarray:
  """The mixture CDF in float64. v: f64[d, m] -> f64[d, m]."""
  logits = np.asarray(prior["logits"], np.float64)
  means = np.asarray(prior["means"], np.float64)
  raw = np.asarray(prior["raw_scales"], np.float64)
  w = special.softmax(logits, axis=-1)
  scales = np.logaddexp(0.0, raw) + MIN_SCALE
  z = (v[:, :, None] - means[:, None, :]) / scales[:, None, :]
  return np.sum(w[:, None, :] * special.expit(z), axis=-1)


def quantise_pmf(pmf: np.ndarray, total: int = 2**FREQ_BITS) -> np.ndarray:
  """f64[w] probabilities -> u32[w] frequencies >= 1 summing to total.

  Each symbol gets 1 + floor(p * (total - w)); the remainder goes to the
  most probable symbol (first on ties). Deterministic given the floats.
  """
  w = pmf.shape[0]
  if w > total // 2:
    raise ValueError(f"pmf: expected at most {total // 2} symbols, got {w}")
  freq = 1 + np.floor(pmf * (total - w)).astype(np.int64)
  freq[int(np.argmax(pmf))] += total - int(freq.sum())
  return freq.astype(np.uint32)


def build_tables(prior: dict[str, Any]) -> Tables:
  """Per-channel integer tables from prior parameters (float32 arrays of
  shape [d, K]), computed in float64 on the host.

  The support of channel j is the integer range outside of which the prior
  has less than TAIL_MASS on each side (at most MAX_SUPPORT symbols); the
  end symbols absorb the tails, matching `quantise`'s clamping.
  """
  prior = {k: np.asarray(v, np.float64) for k, v in prior.items()}
  d = prior["means"].shape[0]
  scales = np.logaddexp(0.0, prior["raw_scales"]) + MIN_SCALE
  lo_all = np.floor(np.min(prior["means"] - 60 * scales, axis=1))
  hi_all = np.ceil(np.max(prior["means"] + 60 * scales, axis=1))
  lo_all = np.clip(lo_all, -2**20, 2**20).astype(np.int64)
  hi_all = np.clip(hi_all, -2**20, 2**20).astype(np.int64)
  los, pmfs = [], []
  for j in range(d):
    grid = np.arange(lo_all[j], hi_all[j] + 2, dtype=np.float64) - 0.5   # cell edges
    c = prior_cdf_np({k: v[j:j + 1] for k, v in prior.items()}, grid[None])[0]
    # Symbols whose cell is not entirely in a tail: c(v + 1/2) > t, c(v - 1/2) < 1 - t.
    keep = np.nonzero((c[1:] > TAIL_MASS) & (c[:-1] < 1.0 - TAIL_MASS))[0]
    if keep.size == 0:   # all mass in one cell edge: take the densest cell
      keep = np.array([int(np.argmax(np.diff(c)))])
    a, b = int(keep[0]), int(keep[-1])
    if b - a + 1 > MAX_SUPPORT:  # keep the densest window of MAX_SUPPORT cells
      a = int(np.argmax(c[MAX_SUPPORT:] - c[:-MAX_SUPPORT]))
      b = a + MAX_SUPPORT - 1
    pmf = c[a + 1:b + 2] - c[a:b + 1]
    pmf[0] = c[a + 1]               # left tail folds into the first symbol
    pmf[-1] = 1.0 - c[b]            # right tail into the last
    los.append(int(lo_all[j]) + a)
    pmfs.append(np.maximum(pmf, 0.0))
  width = np.array([p.shape[0] for p in pmfs], np.int32)
  freq = np.zeros((d, int(width.max())), np.uint32)
  for j, p in enumerate(pmfs):
    freq[j, :p.shape[0]] = quantise_pmf(p)
  return Tables(lo=np.array(los, np.int32), width=width, freq=freq)


def quantise(y: np.ndarray, tables: Tables) -> np.ndarray:
  """The symbols the codec sends: round(y) clamped to each channel's
  support. y: f32[..., d] -> i32[..., d]."""
  y = np.asarray(y)
  if y.ndim < 2 or y.shape[-1] != tables.lo.shape[0]:
    raise ValueError(f"y: expected latents of shape (n, {tables.lo.shape[0]}), got {y.shape}")
  return np.clip(np.round(y), tables.lo, tables.hi).astype(np.int32)


# --------------------------------------------------------------------------
# The range coder.


def coding_models(tables: Tables) -> list:
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


def entropy_encode(q: np.ndarray, tables: Tables, models: list | None = None) -> bytes:
  """Range-codes q: i32[n, d] (each column within its support), channel by
  channel, into little-endian 32-bit words."""
  import constriction
  enc = constriction.stream.queue.RangeEncoder()
  encode_into(enc, q, tables, models)
  return enc.get_compressed().astype("<u4").tobytes()


def encode_into(enc, q: np.ndarray, tables: Tables, models: list | None = None) -> None:
  """Appends q: i32[..., d] to the range encoder `enc`, channel by channel
  (the leading axes flattened in C order: decode n = their product rows)."""
  q = np.asarray(q)
  if q.ndim < 2 or q.shape[-1] != tables.lo.shape[0]:
    raise ValueError(f"q: expected shape (n, {tables.lo.shape[0]}), got {q.shape}")
  q = q.reshape(-1, q.shape[-1])
  if np.any(q < tables.lo) or np.any(q > tables.hi):
    raise ValueError("q: symbols outside the tables' support (quantise clamps them)")
  for j, model in enumerate(models or coding_models(tables)):
    if model is not None:
      enc.encode(np.ascontiguousarray(q[:, j] - tables.lo[j], np.int32), model)


def decode_from(dec, n: int, tables: Tables, models: list | None = None) -> np.ndarray:
  """Reads n rows i32[n, d] from the range decoder `dec` (`encode_into`'s order)."""
  q = np.empty((n, tables.lo.shape[0]), np.int32)
  for j, model in enumerate(models or coding_models(tables)):
    q[:, j] = tables.lo[j] if model is None else np.asarray(dec.decode(model, n)) + tables.lo[j]
  return q


def entropy_decode(payload: bytes, n: int, tables: Tables,
                   models: list | None = None) -> np.ndarray:
  """The inverse of `entropy_encode`: i32[n, d]."""
  import constriction
  if len(payload) % 4:
    raise CodecFormatError(f"payload of {len(payload)} bytes is not whole 32-bit words")
  words = np.frombuffer(payload, "<u4").astype(np.uint32)
  return decode_from(constriction.stream.queue.RangeDecoder(words), n, tables, models)
