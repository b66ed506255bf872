"""Dataset loading, caching, keyed order and batching."""

import numpy as np
import jax
import pytest
import tensorflow_datasets as tfds

from unsupjax import data
from conftest import shared_mnist_dir


def test_digits_splits(digits):
  train, test = digits
  assert train.x.shape == (1437, 8, 8, 1) and test.x.shape == (360, 8, 8, 1)
  assert train.x.dtype == np.float32 and 0.0 <= train.x.min() and train.x.max() <= 1.0
  assert train.x.max() == 1.0
  # Stratified: every class in both splits, disjoint, together the whole set.
  assert set(train.y) == set(test.y) == set(range(10))
  full = data.load("digits", "all")
  assert full.num_examples == train.num_examples + test.num_examples
  assert train.flat().shape == (1437, 64)


def test_mock_tfds_dataset_loads_as_unit_float(tmp_path):
  with tfds.testing.mock_data(num_examples=20):
    ds = data.load("mnist", "train", cache_dir=tmp_path)
  assert ds.x.shape == (20, 28, 28, 1) and ds.x.dtype == np.float32
  assert ds.y.shape == (20,) and ds.y.dtype == np.int32
  assert 0.0 <= ds.x.min() and ds.x.max() <= 1.0
  # The decoded arrays were cached and a second load reads them back.
  cached = list((tmp_path / "data").glob("mnist-train-*.npz"))
  assert len(cached) == 1
  again = data.load("mnist", "train", cache_dir=tmp_path)
  np.testing.assert_array_equal(again.x, ds.x)
  np.testing.assert_array_equal(again.y, ds.y)


@pytest.mark.slow
def test_shared_mnist(tmp_path):
  data_dir = shared_mnist_dir()
  test = data.load("mnist", "test", data_dir=str(data_dir), cache_dir=tmp_path)
  assert test.x.shape == (10000, 28, 28, 1)
  np.testing.assert_array_equal(np.bincount(test.y),
                                [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])
  # Images are real digits: about 19% of MNIST pixels are non-zero.
  assert 0.15 < (test.x > 0).mean() < 0.25
  # Same content as TFDS's own reader.
  src = tfds.data_source("mnist", split="test", data_dir=str(data_dir))
  np.testing.assert_array_equal(np.round(test.x[123] * 255).astype(np.uint8), src[123]["image"])


def test_unknown_dataset_is_named():
  with pytest.raises(data.DatasetError, match="dataset: unknown dataset 'not_a_dataset'"):
    data.load("not_a_dataset")


def test_unprepared_dataset_names_dir_and_command(tmp_path):
  with pytest.raises(data.DatasetError) as info:
    data.load("fashion_mnist", "train", data_dir=str(tmp_path), download=False)
  msg = str(info.value)
  assert "fashion_mnist" in msg and str(tmp_path) in msg and "tfds build" in msg


def test_bad_digits_split():
  with pytest.raises(data.DatasetError, match="split"):
    data.load("digits", "validation")


def test_epoch_order_is_keyed():
  key = jax.random.PRNGKey(3)
  a = data.epoch_permutation(key, 1, 50)
  np.testing.assert_array_equal(a, data.epoch_permutation(key, 1, 50))
  assert sorted(np.asarray(a).tolist()) == list(range(50))
  assert not np.array_equal(a, data.epoch_permutation(key, 2, 50))
  assert not np.array_equal(a, data.epoch_permutation(jax.random.PRNGKey(4), 1, 50))
  idx = data.batch_indices(key, 1, 50, 16)
  assert idx.shape == (3, 16)
  np.testing.assert_array_equal(np.asarray(idx).ravel(), np.asarray(a)[:48])


def test_check_finite():
  x = np.zeros((4, 3), np.float32)
  data.check_finite(x)
  x[2, 1] = np.nan
  with pytest.raises(ValueError, match="x: expected finite values.*rows"):
    data.check_finite(x)


def test_stack_channels_builds_stacked_digits_with_mode_labels(digits):
  """Every channel of a stacked image is one of the source images, and the
  label is 100*d0 + 10*d1 + d2 of those images' digits."""
  train = data.load("digits", "train")
  stacked = data.stack_channels(jax.random.PRNGKey(3), train, 500)
  assert stacked.x.shape == (500, 8, 8, 3) and stacked.x.dtype == np.float32
  assert stacked.name == "stacked_digits"
  flat = train.x.reshape(len(train.x), -1)
  for i in range(0, 500, 7):
    expect = 0
    for c in range(3):
      hits = np.nonzero((flat == stacked.x[i, ..., c].reshape(-1)).all(axis=1))[0]
      assert hits.size >= 1
      assert len(set(train.y[hits].tolist())) == 1  # duplicates agree on the digit
      expect = 10 * expect + int(train.y[hits[0]])
    assert stacked.y[i] == expect
  again = data.stack_channels(jax.random.PRNGKey(3), train, 500)
  np.testing.assert_array_equal(again.x, stacked.x)
  other = data.stack_channels(jax.random.PRNGKey(4), train, 500)
  assert not np.array_equal(other.x, stacked.x)


def test_stack_channels_modes_are_uniform():
  """20,000 stacked digits cover all 1,000 modes about uniformly (a chi-square
  test against the class frequencies of the source, at the 0.1% level)."""
  from scipy import stats
  train = data.load("digits", "train")
  stacked = data.stack_channels(jax.random.PRNGKey(0), train, 20_000)
  counts = np.bincount(stacked.y, minlength=1000)
  assert (counts > 0).all()
  p = np.bincount(train.y, minlength=10) / len(train.y)
  expected = np.einsum("i,j,k->ijk", p, p, p).reshape(-1) * 20_000
  assert stats.chisquare(counts, expected).pvalue > 1e-3


def test_stack_channels_bad_input():
  train = data.load("digits", "train")
  with pytest.raises(data.DatasetError, match="ds: expected 1-channel"):
    data.stack_channels(jax.random.PRNGKey(0), data.Dataset(np.zeros((4, 8, 8, 3)), None, "x"), 2)
  with pytest.raises(ValueError, match="n: expected a positive"):
    data.stack_channels(jax.random.PRNGKey(0), train, 0)
