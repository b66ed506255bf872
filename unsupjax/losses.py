"""Per-example losses: pure functions of arrays returning f32[batch].

Every loss reduces over all non-batch axes and keeps the batch axis, so a
train step takes the mean, an anomaly detector uses the values as scores, and
a multi-device step can average them across devices. Reductions over
features are means (per-pixel units, what Keras reports) unless the name
says `sum` (nats per example, what likelihood papers report).

Offers: `mse`, `bce_with_logits`, `bernoulli_nll_with_logits` (summed BCE),
`psnr`. Generative-model and clustering losses join this module as they land.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def _feature_mean(v: jax.Array) -> jax.Array:
  return v.reshape(v.shape[0], -1).mean(axis=1)


def _feature_sum(v: jax.Array) -> jax.Array:
  return v.reshape(v.shape[0], -1).sum(axis=1)


def mse(pred: jax.Array, target: jax.Array) -> jax.Array:
  """Mean squared error per example. pred, target: f32[b, ...] -> f32[b]."""
  return _feature_mean(jnp.square(pred - target))


def bce_with_logits(logits: jax.Array, target: jax.Array) -> jax.Array:
  """Binary cross-entropy per example, mean over features (nats per pixel).

  logits: f32[b, ...] pre-sigmoid outputs; target: f32[b, ...] in [0, 1]
  (soft targets allowed). Computed as max(l, 0) - l*t + log1p(exp(-|l|)),
  which never overflows and never takes log(0), unlike
  `-t*log(sigmoid(l)) - ...` on probabilities.
  """
  return _feature_mean(optax.sigmoid_binary_cross_entropy(logits, target))


def bernoulli_nll_with_logits(logits: jax.Array, target: jax.Array) -> jax.Array:
  """Summed binary cross-entropy per example (nats per example): f32[b]."""
  return _feature_sum(optax.sigmoid_binary_cross_entropy(logits, target))


def psnr(pred: jax.Array, target: jax.Array, max_value: float = 1.0) -> jax.Array:
  """Peak signal-to-noise ratio per example in dB: f32[b].

  An exact reconstruction has infinite PSNR; the MSE is floored at 1e-10
  (100 dB for max_value=1) so averages stay finite.
  """
  err = jnp.maximum(mse(pred, target), 1e-10)
  return 10.0 * jnp.log10(max_value**2 / err)


# --------------------------------------------------------------------------
# Latent-variable models. Sums over features: nats per example.

_LOG_2PI = 1.8378770664093453


def gaussian_kl(mean: jax.Array, log_var: jax.Array) -> jax.Array:
  """KL(N(mean, exp(log_var)) || N(0, I)) per example, closed form: f32[b].

  mean, log_var: f32[b, d] of a diagonal Gaussian.
  """
  return 0.5 * _feature_sum(jnp.exp(log_var) + jnp.square(mean) - 1.0 - log_var)


def diag_gaussian_log_prob(z: jax.Array, mean: jax.Array,
                           log_var: jax.Array) -> jax.Array:
  """log N(z; mean, diag(exp(log_var))) per example: f32[b]."""
  return -0.5 * _feature_sum(
      _LOG_2PI + log_var + jnp.square(z - mean) * jnp.exp(-log_var))


def gaussian_nll(x: jax.Array, mean: jax.Array, log_scale: jax.Array) -> jax.Array:
  """-log N(x; mean, exp(log_scale)^2) summed per example: f32[b].

  log_scale broadcasts against x (e.g. one learned value per pixel).
  """
  log_scale = jnp.broadcast_to(log_scale, x.shape)
  return 0.5 * _feature_sum(
      _LOG_2PI + 2.0 * log_scale + jnp.square(x - mean) * jnp.exp(-2.0 * log_scale))
