"""Losses against float64 NumPy references."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unsupjax import losses


def _np_bce(logits, t):
  logits = logits.astype(np.float64)
  t = t.astype(np.float64)
  p = 1.0 / (1.0 + np.exp(-logits))
  # Reference on probabilities, only valid for moderate logits.
  v = -(t * np.log(p) + (1 - t) * np.log1p(-p))
  return v.reshape(len(v), -1).mean(1)


class LossesTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_mse_matches_numpy(self):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 4, 3)).astype(np.float32)
    b = rng.normal(size=(5, 4, 3)).astype(np.float32)
    got = self.variant(losses.mse)(a, b)
    chex.assert_shape(got, (5,))
    want = ((a.astype(np.float64) - b) ** 2).reshape(5, -1).mean(1)
    np.testing.assert_allclose(got, want, rtol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_bce_matches_numpy(self):
    rng = np.random.default_rng(1)
    logits = rng.normal(scale=3, size=(6, 7, 7, 1)).astype(np.float32)
    target = rng.uniform(size=(6, 7, 7, 1)).astype(np.float32)
    got = self.variant(losses.bce_with_logits)(logits, target)
    chex.assert_shape(got, (6,))
    np.testing.assert_allclose(got, _np_bce(logits, target), rtol=1e-5)
    summed = self.variant(losses.bernoulli_nll_with_logits)(logits, target)
    np.testing.assert_allclose(summed, _np_bce(logits, target) * 49, rtol=1e-5)


def test_bce_stable_for_extreme_logits():
  logits = jnp.array([[1e4, -1e4, 0.0]], jnp.float32)
  target = jnp.array([[1.0, 0.0, 1.0]], jnp.float32)
  got = losses.bce_with_logits(logits, target)
  np.testing.assert_allclose(got, [np.log(2.0) / 3], rtol=1e-6)
  # Wrong-side extreme logits cost |l| nats, finite, not inf.
  wrong = losses.bce_with_logits(logits, 1.0 - target)
  np.testing.assert_allclose(wrong, [(1e4 + 1e4 + np.log(2.0)) / 3], rtol=1e-6)
  grads = jax.grad(lambda l: losses.bce_with_logits(l, target).sum())(logits)
  assert np.all(np.isfinite(grads))


def test_psnr():
  x = jnp.zeros((2, 4))
  y = jnp.stack([jnp.full(4, 0.1), jnp.zeros(4)])
  got = losses.psnr(y, x)
  np.testing.assert_allclose(got[0], 20.0, rtol=1e-5)  # mse 0.01 -> 20 dB
  np.testing.assert_allclose(got[1], 100.0, rtol=1e-5)  # floored
