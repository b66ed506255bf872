"""Datasets as in-memory arrays, keyed shuffling and batching.

Offers:
  * `load(name, split, data_dir=...)`: a dataset name and split -> a `Dataset`
    of float32 images in [0, 1] (NHWC) and integer labels. `digits` is
    scikit-learn's bundled 8x8 digits (no network, no files); any other name is
    a TFDS image dataset (`mnist`, `fashion_mnist`, `cifar10`, ...) read with
    `tfds.data_source` from `data_dir`, prepared by TFDS's download path when
    it is missing and the network allows. Decoded arrays are cached as `.npz`
    so a second load skips PNG decoding.
  * `epoch_permutation(key, epoch, n)`: the keyed example order of an epoch.
  * `batch_indices(...)`: that order cut into whole batches.
  * `stack_channels(key, ds, n)`: Stacked MNIST from MNIST (random digits
    as the channels of one image; 1,000 modes).

Does not offer: data augmentation (model modules draw their own corruption
from keys), or streaming of datasets larger than host memory (the training
loop streams device batches from host arrays; k-means has its own mini-batch
reader).
"""

from __future__ import annotations

import hashlib
import os
import pathlib
from typing import NamedTuple

import jax
import numpy as np

DIGITS = "digits"
# Fixed, documented split of scikit-learn's digits (it ships without one):
# a stratified 80/20 split drawn once with this seed. It is part of the
# dataset's definition, like a TFDS split, not a hidden training seed.
DIGITS_SPLIT_SEED = 0
DIGITS_TEST_SIZE = 360


class DatasetError(ValueError):
  """A dataset cannot be served: unknown, not prepared, or malformed."""


class Dataset(NamedTuple):
  """An in-memory split.

  x: f32[n, h, w, c] in [0, 1].
  y: i32[n] class labels, or None when the split has none. Labels are for
     reporting only; no unsupervised model in unsupjax trains on them.
  name: dataset name, for messages and summaries.
  """
  x: np.ndarray
  y: np.ndarray | None
  name: str

  @property
  def num_examples(self) -> int:
    return int(self.x.shape[0])

  @property
  def image_shape(self) -> tuple[int, ...]:
    return tuple(self.x.shape[1:])

  def flat(self) -> np.ndarray:
    """x as f32[n, h*w*c]."""
    return self.x.reshape(self.x.shape[0], -1)


def default_cache_dir() -> pathlib.Path:
  """Where unsupjax keeps decoded datasets and compiled programs.

  `$UNSUPJAX_CACHE_DIR`, else `$XDG_CACHE_HOME/unsupjax`, else
  `~/.cache/unsupjax`.
  """
  env = os.environ.get("UNSUPJAX_CACHE_DIR")
  if env:
    return pathlib.Path(env).expanduser()
  xdg = os.environ.get("XDG_CACHE_HOME")
  base = pathlib.Path(xdg).expanduser() if xdg else pathlib.Path.home() / ".cache"
  return base / "unsupjax"


def _digits(split: str) -> Dataset:
  from sklearn.datasets import load_digits
  from sklearn.model_selection import train_test_split

  bunch = load_digits()
  images = (bunch.images / 16.0).astype(np.float32)[..., None]
  labels = bunch.target.astype(np.int32)
  idx = np.arange(len(labels))
  train_idx, test_idx = train_test_split(
      idx, test_size=DIGITS_TEST_SIZE, stratify=labels,
      random_state=DIGITS_SPLIT_SEED)
  if split == "train":
    sel = np.sort(train_idx)
  elif split == "test":
    sel = np.sort(test_idx)
  elif split == "all":
    sel = idx
  else:
    raise DatasetError(
        f"split: digits has splits 'train', 'test' and 'all', got {split!r}")
  return Dataset(images[sel], labels[sel], DIGITS)


def tfds_default_data_dir() -> str:
  import tensorflow_datasets as tfds
  return os.path.expanduser(tfds.core.constants.DATA_DIR)


def _prepare_hint(name: str, data_dir: str) -> str:
  return (f"prepare it with: pip install 'unsupjax[tf]' && "
          f"tfds build {name} --data_dir {data_dir} --file_format array_record")


def _open_tfds(name: str, split: str, data_dir: str | None, download: bool):
  """Returns (tfds data source, the data_dir it came from)."""
  import tensorflow_datasets as tfds

  try:
    tfds.builder_cls(name)
  except Exception as e:  # TFDS raises several types for unknown names.
    raise DatasetError(
        f"dataset: unknown dataset {name!r}; expected 'digits' or a TFDS "
        f"image dataset name such as 'mnist', 'fashion_mnist', 'cifar10'"
    ) from e
  searched = data_dir or tfds_default_data_dir()
  try:
    return tfds.data_source(name, split=split, data_dir=searched), searched
  except Exception as first:  # not prepared, or a bad split
    if "split" in str(first).lower() and "unknown" in str(first).lower():
      raise DatasetError(f"split: {name} has no split {split!r}") from first
    if not download:
      raise DatasetError(
          f"dataset: {name!r} is not prepared in {searched}; "
          f"{_prepare_hint(name, searched)}") from first
    try:
      builder = tfds.builder(name, data_dir=searched, file_format="array_record")
      builder.download_and_prepare()
      return tfds.data_source(name, split=split, data_dir=searched), searched
    except Exception as second:
      raise DatasetError(
          f"dataset: {name!r} is not prepared in {searched} and could not be "
          f"downloaded ({type(second).__name__}); "
          f"{_prepare_hint(name, searched)}") from second


def _decode(source, name: str) -> tuple[np.ndarray, np.ndarray | None]:
  n = len(source)
  if n == 0:
    raise DatasetError(f"dataset: {name} split is empty")
  first = source[0]
  if "image" not in first:
    raise DatasetError(
        f"dataset: {name} has no 'image' feature (features: {sorted(first)}); "
        "unsupjax serves image datasets")
  image0 = np.asarray(first["image"])
  images = np.empty((n,) + image0.shape, dtype=np.uint8)
  labels = np.empty((n,), dtype=np.int32) if "label" in first else None
  for i in range(n):
    rec = source[i]
    images[i] = rec["image"]
    if labels is not None:
      labels[i] = rec["label"]
  return images, labels


def _cache_path(cache_dir: pathlib.Path, name: str, split: str,
                source_dir: str) -> pathlib.Path:
  tag = hashlib.sha1(os.path.realpath(source_dir).encode()).hexdigest()[:10]
  safe_split = "".join(c if c.isalnum() else "_" for c in split)
  return cache_dir / "data" / f"{name}-{safe_split}-{tag}.npz"


def _tfds(name: str, split: str, data_dir: str | None, download: bool,
          cache_dir: pathlib.Path | None) -> Dataset:
  source_dir = data_dir or tfds_default_data_dir()
  path = None
  if cache_dir is not None:
    path = _cache_path(cache_dir, name, split, source_dir)
    if path.exists():
      with np.load(path) as z:
        labels = z["labels"] if "labels" in z.files else None
        return Dataset(_to_unit_float(z["images"]), labels, name)
  source, _ = _open_tfds(name, split, data_dir, download)
  images, labels = _decode(source, name)
  if path is not None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
    arrays = {"images": images}
    if labels is not None:
      arrays["labels"] = labels
    np.savez(tmp, **arrays)
    os.replace(tmp, path)  # atomic: a half-written cache is never read
  return Dataset(_to_unit_float(images), labels, name)


def _to_unit_float(images: np.ndarray) -> np.ndarray:
  return images.astype(np.float32) * np.float32(1.0 / 255.0)


def load(name: str, split: str = "train", *, data_dir: str | None = None,
         download: bool = True,
         cache_dir: str | os.PathLike | None | bool = True) -> Dataset:
  """Loads a dataset split into host memory.

  Args:
    name: 'digits' or a TFDS image dataset name.
    split: 'train', 'test' (digits also 'all'); TFDS split syntax such as
      'train[:10%]' works for TFDS datasets.
    data_dir: the TFDS data directory to read (default: TFDS's own).
    download: when the dataset is not prepared in `data_dir`, try TFDS's
      download-and-prepare path before giving up.
    cache_dir: where decoded arrays are cached; True means
      `default_cache_dir()`, False/None disables the cache.

  Returns:
    A `Dataset` with x: f32[n, h, w, c] in [0, 1].

  Raises:
    DatasetError: unknown dataset or split, or a dataset that is not prepared
      (the message names the directory searched and the command to prepare it).
  """
  if not isinstance(name, str) or not name:
    raise DatasetError(f"dataset: expected a dataset name, got {name!r}")
  if name == DIGITS:
    return _digits(split)
  if cache_dir is True:
    cache = default_cache_dir()
  elif cache_dir:
    cache = pathlib.Path(cache_dir)
  else:
    cache = None
  return _tfds(name, split, data_dir, download, cache)


def check_finite(x: np.ndarray, what: str = "x") -> None:
  """Raises ValueError naming `what` if `x` holds NaN or Inf."""
  bad = ~np.isfinite(x)
  if bad.any():
    rows = np.unique(np.nonzero(bad.reshape(bad.shape[0], -1))[0])
    raise ValueError(
        f"{what}: expected finite values, found NaN/Inf in {rows.size} rows "
        f"(first: {rows[:5].tolist()})")


def epoch_permutation(key: jax.Array, epoch: int | jax.Array, n: int) -> jax.Array:
  """The order of examples in `epoch`: i32[n], a function of (key, epoch) only.

  Deriving it from the epoch number, not from a key carried across epochs,
  is what lets a resumed run see exactly the batches an uninterrupted run
  sees.
  """
  return jax.random.permutation(jax.random.fold_in(key, epoch), n)


def batch_indices(key: jax.Array, epoch: int | jax.Array, n: int,
                  batch_size: int) -> jax.Array:
  """i32[n // batch_size, batch_size]: the epoch's whole batches.

  The last partial batch is dropped (a different example is dropped each
  epoch), so every step sees a full batch and compiles once.
  """
  steps = n // batch_size
  perm = epoch_permutation(key, epoch, n)
  return perm[: steps * batch_size].reshape(steps, batch_size)


def stack_channels(key: jax.Array, ds: Dataset, n: int, channels: int = 3) -> Dataset:
  """`n` images made of `channels` random 1-channel images of `ds`, one per
  channel: Stacked MNIST (Metz et al. 2017; the PacGAN / VEEGAN mode-collapse
  benchmark) when `ds` is MNIST and `channels` is 3.

  Each channel's image is drawn uniformly with replacement, independently
  of the others, from `key` alone, so the same key rebuilds the same set.
  With labels, the label of a stacked image is its mode,
  sum_c y_c * 10**(channels-1-c) (for 3 channels, 100*d0 + 10*d1 + d2, the
  numbering of `unsupjax.metrics.modes.stacked_mnist_stats`).

  Returns:
    A `Dataset` with x: f32[n, h, w, channels], named "stacked_<name>".
  """
  if ds.x.ndim != 4 or ds.x.shape[-1] != 1:
    raise DatasetError(f"ds: expected 1-channel images (n, h, w, 1), got "
                       f"{ds.x.shape}")
  if not isinstance(n, int) or n < 1:
    raise ValueError(f"n: expected a positive number of images, got {n!r}")
  if not isinstance(channels, int) or channels < 1:
    raise ValueError(f"channels: expected a positive integer, got {channels!r}")
  idx = np.asarray(jax.random.randint(key, (n, channels), 0, ds.num_examples))
  x = np.empty((n,) + ds.x.shape[1:3] + (channels,), np.float32)
  for c in range(channels):
    x[..., c] = ds.x[idx[:, c], ..., 0]
  y = None
  if ds.y is not None:
    y = np.zeros(n, np.int64)
    for c in range(channels):
      y = y * 10 + ds.y[idx[:, c]].astype(np.int64)
    y = y.astype(np.int32)
  return Dataset(x, y, f"stacked_{ds.name}")


# --------------------------------------------------------------------------
# Arrays of examples from a .npy file, and Stacked MNIST from a split.

def open_array(path: str | os.PathLike) -> np.ndarray:
  """The examples of a `.npy` file, memory-mapped (nothing is read until
  used): [n, ...] with n >= 2, numeric. DatasetError when the file cannot be
  read or holds anything else."""
  try:
    x = np.load(path, mmap_mode="r", allow_pickle=False)
  except (OSError, ValueError) as e:
    raise DatasetError(f"dataset: cannot read {str(path)!r} ({e})") from None
  if (not isinstance(x, np.ndarray) or x.ndim < 2 or x.shape[0] < 2
      or not np.issubdtype(x.dtype, np.number)):
    what = f"{x.dtype} {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
    raise DatasetError(f"dataset: expected a numeric array of shape (n, ...) with n >= 2 "
                       f"in {path}, got {what}")
  return x


def load_array(path: str | os.PathLike, *, holdout: float = 0.1,
               max_holdout: int = 5000) -> tuple[np.ndarray, np.ndarray]:
  """(train, held_out) f32 rows of the `.npy` file at `path` (`open_array`):
  the last `holdout` of the rows (at least 1, at most `max_holdout`) are
  held out, the file's order kept."""
  x = open_array(path)
  n_held = max(1, min(max_holdout, int(round(x.shape[0] * holdout, 6))))
  x = np.array(x, np.float32)  # a copy in memory, not a view of the file
  return x[:-n_held], x[-n_held:]


def load_stacked(name: str, split: str, key: jax.Array, n: int, channels: int = 3,
                 **load_kw) -> Dataset:
  """`n` images of `stack_channels(key, load(name, split), n, channels)`:
  Stacked MNIST when `name` is 'mnist'. `load_kw` go to `load`."""
  return stack_channels(key, load(name, split, **load_kw), n, channels)
