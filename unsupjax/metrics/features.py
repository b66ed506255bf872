"""The MNIST feature network that unsupjax's FID/KID/PRDC/IS are computed in.

Offers:
  * `MnistNet`: a small Flax Linen conv classifier for 28x28x1 images in
    [0, 1] (99.27% MNIST test accuracy); its penultimate layer (64 ReLU
    units) is the feature space, scaled so that the mean of ||f||² / 64 over
    the MNIST train split is 1.
  * `load_feature_net(path=None)`: the shipped, trained weights
    (`unsupjax/assets/mnist_features.msgpack`, written by
    `scripts/train_feature_net.py`), verified against a SHA-256 stored here.
  * `features(images)`, `class_probs(images)`, `predict_digits(images)`:
    batched, on device. Single-channel images use the net directly;
    3-channel (Stacked MNIST) images are classified channel by channel with
    the same net (features are the three channels' features concatenated).
  * `inception_score(probs, num_splits)`: the Inception-style score
    exp(E_x KL(p(y|x) || p(y))) over splits, mean and std.

Does not offer: Inception-v3 features. FIDs computed here are comparable
only with other FIDs computed with this same network (same checksum); they
are not the FIDs of papers that use Inception features. Images must be
scaled to [0, 1]; GAN output in [-1, 1] must be mapped first.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
import os
from typing import NamedTuple

import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

from unsupjax import nn as nn_lib
from unsupjax.batched import batched_apply

FEATURE_DIM = 64
NUM_CLASSES = 10
IMAGE_SHAPE = (28, 28)
ASSET_NAME = "mnist_features.msgpack"
# SHA-256 of the shipped weights file; printed by scripts/train_feature_net.py.
FEATURE_NET_SHA256 = (
    "7ec3cda997c4d80bae3edd3e802bea8d015b17407375de678ce1dc5b8eb948dc")


class MnistNet(nn.Module):
  """x: f32[b, 28, 28, 1] in [0, 1] -> logits f32[b, 10] (or features).

  conv5x5(32, stride 2) -> conv3x3(64, stride 2) -> conv3x3(64, stride 2)
  -> dense(64) [the features, after ReLU] -> dense(10); ReLU after every
  conv. About 122k params (0.49 MB as float32). Strided convolutions rather
  than max-pooling because XLA's CPU backward pass of pooling is slow and
  the net must be trainable on a CPU. No batch norm or dropout, so
  inference is a pure function of (params, x).
  """
  feature_dim: int = FEATURE_DIM
  num_classes: int = NUM_CLASSES

  @nn.compact
  def __call__(self, x: jax.Array, *, return_features: bool = False
               ) -> jax.Array:
    # Centre the [0, 1] input; keeps the first layer's inputs near zero mean.
    x = x - 0.5
    for width, size in ((32, 5), (64, 3), (64, 3)):
      x = nn.relu(nn.Conv(width, (size, size), strides=(2, 2),
                          padding="SAME")(x))
    x = x.reshape(x.shape[0], -1)
    h = nn.relu(nn.Dense(self.feature_dim, name="features")(x))
    if return_features:
      return h
    return nn.Dense(self.num_classes, name="logits")(h)


class FeatureNet(NamedTuple):
  """`MnistNet()` params, and the SHA-256 of the file they came from."""
  params: dict
  sha256: str


class ChecksumError(ValueError):
  """The feature-net weights file is not the one this code was built for."""


def default_weights_path() -> str:
  """Path of the shipped weights (package data)."""
  return str(importlib.resources.files("unsupjax") / "assets" / ASSET_NAME)


def init_params(key: jax.Array) -> dict:
  """Fresh (untrained) params of `MnistNet`, for training scripts."""
  return nn_lib.init_variables(MnistNet(), key, jnp.zeros((1, 28, 28, 1), jnp.float32))["params"]


def file_sha256(path: str | os.PathLike) -> str:
  """The hex SHA-256 of the file at `path`, read in 1 MiB chunks."""
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()


def load_feature_net(path: str | os.PathLike | None = None, *,
                     sha256: str | None = FEATURE_NET_SHA256) -> FeatureNet:
  """Loads and verifies the feature network.

  Args:
    path: a weights file written by `scripts/train_feature_net.py`; default
      the shipped `unsupjax/assets/mnist_features.msgpack`.
    sha256: the expected SHA-256 hex digest of the file; default the digest
      of the shipped weights. None skips the check (for your own nets; their
      FIDs are then not comparable with the shipped net's).

  Raises:
    FileNotFoundError: no file at `path`.
    ChecksumError (a ValueError): the file's digest is not `sha256`.
  """
  path = default_weights_path() if path is None else os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f"path: no feature-net weights at {path}; the shipped file is "
        f"unsupjax/assets/{ASSET_NAME} (regenerate with "
        "scripts/train_feature_net.py)")
  digest = file_sha256(path)
  if sha256 is not None and digest != sha256:
    raise ChecksumError(
        f"path: feature-net weights {path} have SHA-256 {digest}, expected "
        f"{sha256}; the file is corrupted or from a different training run, "
        "and FIDs computed with it would not be comparable")
  with open(path, "rb") as f:
    params = flax.serialization.msgpack_restore(f.read())
  template = jax.eval_shape(init_params, jax.random.key(0))
  got = jax.tree.map(lambda a: tuple(np.shape(a)), params)
  want = jax.tree.map(lambda a: tuple(a.shape), template)
  if got != want:
    raise ValueError(
        f"path: {path} does not hold MnistNet params (shapes {got}, "
        f"expected {want})")
  params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)
  return FeatureNet(params, digest)


@functools.lru_cache(maxsize=1)
def _shipped_net() -> FeatureNet:
  return load_feature_net()


def _resolve(net: FeatureNet | None) -> FeatureNet:
  return _shipped_net() if net is None else net


def _check_images(images, name: str = "images") -> int:
  """Validates f32[n, 28, 28, c in {1, 3}] in [0, 1]; returns c."""
  shape = tuple(np.shape(images))
  if len(shape) != 4 or shape[1:3] != IMAGE_SHAPE or shape[3] not in (1, 3):
    raise ValueError(
        f"{name}: expected f32[n, 28, 28, 1] (MNIST) or f32[n, 28, 28, 3] "
        f"(Stacked MNIST), got shape {shape}")
  if shape[0] == 0:
    raise ValueError(f"{name}: expected at least one image, got 0")
  if not isinstance(images, jax.core.Tracer):
    arr = np.asarray(images)
    if not np.all(np.isfinite(arr)):
      raise ValueError(f"{name}: expected finite values, found NaN/Inf")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
      raise ValueError(
          f"{name}: expected values in [0, 1], got range [{lo:.3g}, {hi:.3g}]"
          "; map generator output in [-1, 1] with (x + 1) / 2 first")
  return shape[3]


@functools.partial(jax.jit, static_argnames=("what",))
def _apply_batch(params, x, what: str) -> jax.Array:
  """x: f32[b, 28, 28, 1] -> features f32[b, 64] or probs f32[b, 10]."""
  out = MnistNet().apply({"params": params}, x.astype(jnp.float32),
                         return_features=(what == "features"))
  return out if what == "features" else jax.nn.softmax(out)


def _apply(params, images, what: str, batch_size: int) -> jax.Array:
  """Channels become examples ([n, 28, 28, c] -> [n * c, 28, 28, 1]), run
  through `batched_apply`: batches of one power-of-two size cut on the host,
  so calls with nearby sample counts (a few samples during training, more
  at the end, any --samples) share one compiled network and no
  shape-specific program runs outside `_apply_batch`.

  A Python loop over jitted batches rather than `lax.map`: XLA's CPU
  backend ran convolutions inside a loop ~20x slower than as separate calls
  (see scripts/train_feature_net.py).
  """
  images = np.asarray(images)
  n, c = images.shape[0], images.shape[-1]
  x = np.moveaxis(images, -1, 1).reshape(n * c, 28, 28, 1)
  out = batched_apply(functools.partial(_apply_batch, params, what=what), x, batch_size)
  return jnp.asarray(out.reshape(n, c, -1))


def features(images: jax.Array, net: FeatureNet | None = None, *,
             batch_size: int = 500) -> jax.Array:
  """Penultimate-layer features.

  Args:
    images: f32[n, 28, 28, 1] or f32[n, 28, 28, 3], values in [0, 1].
    net: a `FeatureNet`; default the shipped, checksum-verified one.
    batch_size: images per device batch.

  Returns:
    f32[n, 64] for 1-channel images; f32[n, 3 * 64] for 3-channel images
    (channel 0's features, then channel 1's, then channel 2's).
  """
  _check_images(images)
  net = _resolve(net)
  out = _apply(net.params, images, "features", int(batch_size))
  return out.reshape(out.shape[0], -1)


def class_probs(images: jax.Array, net: FeatureNet | None = None, *,
                batch_size: int = 500) -> jax.Array:
  """Softmax class probabilities.

  Returns f32[n, 10] for 1-channel images, f32[n, 3, 10] for 3-channel ones
  (each channel classified on its own).
  """
  c = _check_images(images)
  net = _resolve(net)
  out = _apply(net.params, images, "probs", int(batch_size))
  return out[:, 0] if c == 1 else out


def predict_digits(images: jax.Array, net: FeatureNet | None = None, *,
                   batch_size: int = 500) -> jax.Array:
  """Argmax digits: i32[n] for 1-channel images, i32[n, 3] for 3-channel."""
  return jnp.argmax(class_probs(images, net, batch_size=batch_size),
                    axis=-1).astype(jnp.int32)


def inception_score(probs: jax.Array, num_splits: int = 10
                    ) -> tuple[jax.Array, jax.Array]:
  """Inception-style score exp(E_x KL(p(y|x) || p(y))) with our classifier.

  As in Salimans et al. (2016): the samples are cut into `num_splits` equal
  consecutive parts (a remainder is dropped), the score is computed within
  each with p(y) the part's mean prediction, and the mean and (population)
  std over parts are returned. The score lies in [1, number of classes].

  Args:
    probs: f32[n, C] class probabilities (rows sum to 1), e.g. `class_probs`.
    num_splits: number of parts; n must be >= num_splits.

  Returns:
    (mean, std), scalars.
  """
  shape = tuple(np.shape(probs))
  if len(shape) != 2:
    raise ValueError(f"probs: expected f32[n, C], got shape {shape}")
  if num_splits < 1 or shape[0] < num_splits:
    raise ValueError(
        f"num_splits: expected 1 <= num_splits <= n = {shape[0]}, got "
        f"{num_splits}")
  if not isinstance(probs, jax.core.Tracer):
    arr = np.asarray(probs)
    if not np.all(np.isfinite(arr)) or arr.min() < 0:
      raise ValueError("probs: expected finite, non-negative probabilities")
  return _inception_score(jnp.asarray(probs), int(num_splits))


@functools.partial(jax.jit, static_argnums=1)
def _inception_score(p: jax.Array, num_splits: int) -> tuple[jax.Array, jax.Array]:
  m = p.shape[0] // num_splits
  p = p[: m * num_splits].reshape(num_splits, m, p.shape[1])
  marginal = jnp.mean(p, axis=1, keepdims=True)
  # xlogy gives 0 * log 0 = 0 for classes a sample puts no mass on.
  kl = jnp.sum(jax.scipy.special.xlogy(p, p)
               - jax.scipy.special.xlogy(p, marginal), axis=-1)
  scores = jnp.exp(jnp.mean(kl, axis=1))
  return jnp.mean(scores), jnp.std(scores)
