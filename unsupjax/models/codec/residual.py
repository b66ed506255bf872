"""The residual layer of the learned codec: from the decoder's picture to
any PSNR, up to lossless.

The base b is the decoder's picture in 8 bits, computed by an integer
version of the decoder network (`integer_base`): fixed-point weights and
activations whose arithmetic is exact, so every process on every platform
computes the same b from the same latents. The encoder sends the 8-bit
residual e = x - b quantised with an odd step s,

    r = round(e / s)         (no ties: e is an integer, s odd),
    x' = clip(b + s r, 0, 255),  so |x' - x| <= (s - 1) / 2,

and s = 1 is lossless. r is coded with one integer table per value of b
(256 contexts; b is known to the decoder before any residual symbol),
counted from the training set's residuals (`build_residual_tables`); each
context's support is the residuals its b allows.

Offers the quantiser (`residual_symbols`, `residual_pixels`,
`residual_support`), its tables (`build_residual_tables`,
`residual_bits`), the fixed-point decoder (`integer_decoder`,
`integer_base`, `logit_thresholds`) and `to_uint8` (images on the 8-bit
grid).

Does not offer: the range coder (`entropy`), or the order in which a
container codes the symbols (`io`).
"""

from __future__ import annotations

import numpy as np

from unsupjax.models.codec.entropy import FREQ_BITS, Tables, quantise_pmf

RESIDUAL_STEPS = (1, 3, 5, 9, 17, 33, 65, 129)
FIXED_POINT_BITS = 16     # fractional bits of the integer decoder's weights and activations
_EXACT = 2.0**52          # float64 sums of integers below this are exact in any order


def check_step(step: int) -> int:
  if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 1 \
      or step % 2 == 0 or step > 255:
    raise ValueError(f"step: expected an odd integer in [1, 255], got {step!r}")
  return int(step)


def residual_symbols(x_u8: np.ndarray, base_u8: np.ndarray, step: int) -> np.ndarray:
  """r = round((x - b) / step): i32, the shape of x_u8 (8-bit images and
  bases of one shape)."""
  step = check_step(step)
  e = np.asarray(x_u8, np.int32) - np.asarray(base_u8, np.int32)
  return (np.sign(e) * ((np.abs(e) + step // 2) // step)).astype(np.int32)


def residual_pixels(base_u8: np.ndarray, r: np.ndarray, step: int) -> np.ndarray:
  """x' = clip(b + step r, 0, 255): u8, the shape of base_u8."""
  step = check_step(step)
  return np.clip(np.asarray(base_u8, np.int32) + step * np.asarray(r, np.int32),
                 0, 255).astype(np.uint8)


def residual_support(step: int) -> tuple[np.ndarray, np.ndarray]:
  """(lo, width): i32[256] each; the residual symbols of base value b are
  lo[b] .. lo[b] + width[b] - 1, the r of every x in [0, 255]."""
  b = np.arange(256)
  lo = residual_symbols(np.zeros(256), b, step)
  hi = residual_symbols(np.full(256, 255), b, step)
  return lo.astype(np.int32), (hi - lo + 1).astype(np.int32)


def build_residual_tables(r: np.ndarray, base_u8: np.ndarray, step: int) -> Tables:
  """Integer tables for residual symbols r of `step` in the 256 contexts of
  their base values base_u8 (arrays of one shape, e.g. the training set's
  [n, pixels]): the counts plus 1/2 over each context's support, quantised
  like the latent tables (`quantise_pmf`)."""
  step = check_step(step)
  r, base = np.asarray(r).ravel(), np.asarray(base_u8).ravel()
  if r.shape != base.shape or r.size == 0:
    raise ValueError(f"r, base_u8: expected arrays of one non-empty shape, got "
                     f"{np.shape(r)} and {np.shape(base_u8)}")
  lo, width = residual_support(step)
  off = r - lo[base]
  if np.any(off < 0) or np.any(off >= width[base]):
    raise ValueError(f"r: symbols outside the support of their base values for step {step}")
  wmax = int(width.max())
  counts = np.bincount(base.astype(np.int64) * wmax + off, minlength=256 * wmax)
  counts = counts.reshape(256, wmax).astype(np.float64)
  freq = np.zeros((256, wmax), np.uint32)
  for b in range(256):
    c = counts[b, :width[b]] + 0.5
    freq[b, :width[b]] = quantise_pmf(c / c.sum())
  return Tables(lo=lo, width=width, freq=freq)


def residual_bits(tables: Tables, r: np.ndarray, base_u8: np.ndarray) -> float:
  """The ideal code length in bits of residual symbols r in their contexts."""
  base = np.asarray(base_u8).ravel().astype(np.int64)
  f = tables.freq[base, np.asarray(r).ravel() - tables.lo[base]].astype(np.float64)
  return float(np.sum(FREQ_BITS - np.log2(f)))


def integer_decoder(net_params: dict) -> list[tuple[np.ndarray, np.ndarray]]:
  """The decoder's dense layers in fixed point: [(kernel, bias)] as float64
  arrays of integers, kernel = round(w 2^F), bias = round(b 2^F), F =
  FIXED_POINT_BITS (scaling float32 by 2^F and rounding is exact)."""
  dec = net_params["decoder"]
  layers = []
  for i in range(len(dec)):
    d = dec[f"dense_{i}"]
    layers.append(tuple(np.round(np.asarray(d[k], np.float64) * 2.0**FIXED_POINT_BITS)
                        for k in ("kernel", "bias")))
  return layers


def _exact_matmul(a: np.ndarray, w: np.ndarray) -> np.ndarray:
  """a @ w for integer-valued float64 arrays, exactly: BLAS in float64 when
  every partial sum is below 2^52 in magnitude (then any summation order
  gives the exact integer), int64 otherwise."""
  bound = float(np.max(np.abs(a), initial=0)) * float(np.max(np.sum(np.abs(w), axis=0),
                                                              initial=0))
  if bound < _EXACT:
    return a @ w
  if bound < 2.0**62:
    return (a.astype(np.int64) @ w.astype(np.int64)).astype(np.float64)
  raise ValueError("q: the fixed-point decoder overflows on these latents")


def logit_thresholds() -> np.ndarray:
  """T: i64[255], T[k-1] = ceil(2^F logit((k - 1/2) / 255)); a fixed-point
  logit z gives the pixel #{k : z >= T[k-1]} = round(255 sigmoid(z / 2^F))
  (halves rounded up). The middle one is log(1) = 0 exactly; no other
  2^F logit(...) is within 1e-6 of an integer (tested), so any faithfully
  rounded log gives these values."""
  k = np.arange(1, 256, dtype=np.float64)
  return np.ceil(np.log((2 * k - 1) / (511 - 2 * k)) * 2.0**FIXED_POINT_BITS).astype(np.int64)


_THRESHOLDS = logit_thresholds()


def integer_base(layers: list, q: np.ndarray) -> np.ndarray:
  """The 8-bit base u8[n, pixels] of integer latents q: i32[n, d], by the
  fixed-point decoder: exact integer arithmetic (activations floored to F
  fractional bits after each layer, ReLU between layers), then the logits
  thresholded. The same integers on every platform."""
  scale = 2.0**FIXED_POINT_BITS
  a = np.asarray(q, np.float64)
  for i, (w, b) in enumerate(layers):
    z = _exact_matmul(a, w)
    z = (z if i == 0 else np.floor(z / scale)) + b  # back to F fractional bits
    a = np.maximum(z, 0.0) if i < len(layers) - 1 else z
  return np.searchsorted(_THRESHOLDS, a, side="right").astype(np.uint8)


def to_uint8(x: np.ndarray) -> np.ndarray:
  """Images in [0, 1] on the 8-bit grid: round(255 x), clipped; u8, x's shape."""
  return np.clip(np.round(np.asarray(x) * 255.0), 0, 255).astype(np.uint8)
