"""Reconstruction metrics of autoencoders, per example and per dataset.

Per-example functions return f32[b] (pure, jit-able); `dataset_means`
averages any per-example function over a whole split in padded, compiled
batches (no bias from the padding). Offers MSE, PSNR and BCE of a
reconstruction; the VAE's likelihood bounds are `vae.eval_step` (negative
ELBO) and `vae.dataset_iwae_nll` (IWAE-k NLL), all in nats per example.

Does not offer perceptual metrics (see `fid.py`, `prdc.py`).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np

from unsupjax import losses
from unsupjax.batched import batched_apply


def from_logits(logits: jax.Array, x: jax.Array) -> dict[str, jax.Array]:
  """mse, psnr (of sigmoid(logits)) and bce (nats per pixel) vs x in [0, 1]: f32[b] each."""
  recon = jax.nn.sigmoid(logits)
  return {"mse": losses.mse(recon, x), "psnr": losses.psnr(recon, x),
          "bce": losses.bce_with_logits(logits, x)}


def from_reconstruction(recon: jax.Array, x: jax.Array) -> dict[str, jax.Array]:
  """mse and psnr of a reconstruction in data space: f32[b] each."""
  return {"mse": losses.mse(recon, x), "psnr": losses.psnr(recon, x)}


def dataset_means(fn: Callable[[jax.Array], dict[str, jax.Array]], x: np.ndarray,
                  batch_size: int = 1000) -> dict[str, float]:
  """Means over all of x of fn(batch) -> dict of f32[b], computed in padded
  batches (one compile) and averaged on the host in float64."""
  values = batched_apply(fn, x, batch_size)
  return {k: float(np.mean(np.asarray(v, np.float64))) for k, v in values.items()}
