"""Image grids: the pixels are the images, and labelled rows say which is which."""

import numpy as np
import pytest
from PIL import Image

from unsupjax import plots


def _rows(c: int):
  rng = np.random.default_rng(0)
  return [rng.uniform(size=(5, 6, 6, c)).astype(np.float32) for _ in range(3)]


@pytest.mark.parametrize("channels", [1, 3])
def test_labels_sit_beside_an_unchanged_grid(tmp_path, channels):
  rows = _rows(channels)
  plots.save_image_grid(tmp_path / "plain.png", rows, target_width=200)
  plots.save_image_grid(tmp_path / "named.png", rows, target_width=200,
                        labels=["original", "input", "reconstruction"])
  plain = np.asarray(Image.open(tmp_path / "plain.png"))
  named = np.asarray(Image.open(tmp_path / "named.png"))
  scale = 200 // (5 * 7 + 1)
  expected = plots.to_uint8_grid(rows, 1, scale)
  np.testing.assert_array_equal(plain, expected[..., 0] if channels == 1 else expected)
  margin = named.shape[1] - plain.shape[1]
  assert margin > 40 and named.shape[0] == plain.shape[0]
  np.testing.assert_array_equal(named[:, margin:], plain)
  # Dark text in the margin, within each row's band and nowhere else.
  ink = (named[:, :margin] if channels == 1 else named[:, :margin].min(-1)) < 128
  for r in range(3):
    top = (1 + 7 * r) * scale
    assert ink[top:top + 6 * scale].any()
  assert not ink[:scale].any()


def test_one_label_per_row(tmp_path):
  with pytest.raises(ValueError, match=r"labels: expected one per row \(3\), got 2"):
    plots.save_image_grid(tmp_path / "x.png", _rows(1), labels=["a", "b"])
  assert not (tmp_path / "x.png").exists()
