"""batched_apply: the same rows as one call, one program for nearby sizes,
and no new compilation for a partial of a jitted function."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unsupjax.batched import batched_apply, bucket_size


def test_outputs_are_the_rows_of_one_unbatched_call():
  rng = np.random.default_rng(0)
  x = {"a": rng.normal(size=(37, 3)).astype(np.float32),
       "b": rng.normal(size=(37,)).astype(np.float32)}
  fn = lambda t: {"s": jnp.sum(t["a"], axis=1) * t["b"], "id": t["a"]}
  out = batched_apply(fn, x, batch_size=8)
  np.testing.assert_array_equal(out["id"], x["a"])
  np.testing.assert_allclose(out["s"], x["a"].sum(1) * x["b"], rtol=1e-6)
  assert out["s"].shape == (37,)


def test_bucket_is_the_next_power_of_two_capped_at_the_batch():
  assert [bucket_size(n, 500) for n in (1, 2, 3, 5, 64, 65, 499, 10_000)] == \
      [1, 2, 4, 8, 64, 128, 500, 500]


def test_nearby_sizes_and_fresh_partials_share_one_program():
  traces = []

  @jax.jit
  def scaled(w, x):
    traces.append(x.shape)
    return x * w

  w = jnp.float32(3.0)
  for n in (5, 6, 7, 8):
    x = np.arange(n, dtype=np.float32)
    # A new partial each call, as callers bind fresh parameters.
    np.testing.assert_array_equal(batched_apply(functools.partial(scaled, w), x, 500), 3 * x)
  assert traces == [(8,)]


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_batch_size_must_be_a_positive_integer(bad):
  with pytest.raises(ValueError, match="batch_size: expected a positive integer"):
    batched_apply(lambda x: x, np.zeros(3, np.float32), bad)
