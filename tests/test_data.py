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


def test_csv_rows_and_columns(tmp_path):
  """The CSV core both --csv readers share: missing cells are NaN, text is
  an error naming the column, the value and its line."""
  path = tmp_path / "t.csv"
  path.write_text("a, b ,c\n1,2,x\n\n3,NA,y\n4,null\n , ,\n5.5,1e3,z\n")
  header, rows = data.read_csv_rows(path)
  assert header == ["a", "b", "c"] and len(rows) == 4  # blank rows skipped
  np.testing.assert_array_equal(data.csv_column(rows, 0, "a"), [1, 3, 4, 5.5])
  np.testing.assert_array_equal(data.csv_column(rows, 1, "b"), [2, np.nan, np.nan, 1e3])
  with pytest.raises(data.CSVError, match=r"column 'c' is not numeric: 'x' at line 2"):
    data.csv_column(rows, 2, "c")
  for text, match in [("", "empty"), ("a,b\n", "no data rows"), ("a,a\n1,2\n", "duplicate")]:
    path.write_text(text)
    with pytest.raises(data.CSVError, match=match):
      data.read_csv_rows(path)
  with pytest.raises(data.CSVError, match="expected an existing CSV file"):
    data.read_csv_rows(tmp_path / "missing.csv")
