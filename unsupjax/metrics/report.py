"""One report of sample quality for generated MNIST-like images.

`image_report(real, fake, key)` puts every metric of this package that
applies to f32[n, 28, 28, 1 | 3] images in [0, 1] into one dict, under the
names `metrics.jsonl`, `summary.json` and `eval.json` use:

  fid, kid, kid_std          feature-space distances (features.py's network)
  precision, recall, density, coverage    k-NN manifolds, k = 5
  inception_score, inception_score_std    with the MNIST classifier
  confidence                 the classifier's mean top class probability
                             (over images and channels; 500 real MNIST
                             test digits: 0.991), low for ambiguous digits
  modes_covered, reverse_kl  Stacked MNIST only (3 channels, 1,000 modes)

Does not offer: metrics for other image sizes (the feature network is an
MNIST classifier; its FIDs are comparable only with each other).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from unsupjax.metrics import features, fid, modes, prdc

IMAGE_SHAPES = ((28, 28, 1), (28, 28, 3))


def supports(shape: tuple[int, ...]) -> bool:
  """Whether images of `shape` (no batch axis) can be scored here."""
  return tuple(shape) in IMAGE_SHAPES


def image_report(real: Any, fake: Any, key: jax.Array, *,
                 real_features: Any | None = None, k: int = 5,
                 kid_subsets: int = 100) -> dict[str, float | int]:
  """Sample-quality metrics of `fake` against `real` (see the module docstring).

  Args:
    real: f32[n, 28, 28, c] reference images (ignored when `real_features`
      is given), n > k.
    fake: f32[m, 28, 28, c] generated images, m > k.
    key: draws KID's subsets.
    real_features: precomputed `features.features(real)`, to score many
      sample sets against one reference cheaply.
  """
  fake = np.asarray(fake, np.float32)
  if not supports(fake.shape[1:]):
    raise ValueError(f"fake: expected images of shape (m, 28, 28, 1 or 3), got {fake.shape}")
  f_real = features.features(real) if real_features is None else real_features
  f_fake = features.features(fake)
  n, m = int(f_real.shape[0]), int(f_fake.shape[0])
  subset = max(2, min(1000, n, m))
  kid_mean, kid_std = fid.kid(f_real, f_fake, key, num_subsets=kid_subsets,
                              subset_size=subset)
  pr = prdc.prdc(f_real, f_fake, k=k)
  probs = features.class_probs(fake)
  out: dict[str, float | int] = {
      "fid": float(fid.fid(f_real, f_fake)),
      "kid": float(kid_mean), "kid_std": float(kid_std),
      **{name: float(v) for name, v in pr._asdict().items()},
      "confidence": float(np.mean(np.max(np.asarray(probs), axis=-1))),
  }
  if fake.shape[-1] == 1:
    is_mean, is_std = features.inception_score(probs, num_splits=min(10, m))
    out.update(inception_score=float(is_mean), inception_score_std=float(is_std))
  else:
    stats = modes.stacked_mnist_stats(np.asarray(probs.argmax(-1), np.int32))
    out.update(modes_covered=int(stats.modes_covered),
               reverse_kl=float(stats.reverse_kl))
  out["metric_samples"] = m
  return out
