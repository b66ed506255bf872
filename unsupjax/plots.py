"""Pictures a run leaves behind: PNG image grids (Pillow), curves and
scatters (matplotlib, imported only when drawn).

In a multi-process run only process 0 writes a picture (every process
holds the same values, and two writers of one file could tear it;
`parallel.lead_process_only`).

Does not offer interactive plotting.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from unsupjax.parallel import lead_process_only


def to_uint8_grid(rows: Sequence[np.ndarray], pad: int = 1,
                  scale: int = 1) -> np.ndarray:
  """rows: sequence of f32[m, h, w, c] in [0, 1] -> u8[H, W, c] grid image.

  Row r holds rows[r]; every row must have the same m, h, w, c. Images are
  clipped to [0, 1], separated by `pad` pixels of mid grey, then upscaled by
  `scale` (nearest neighbour).
  """
  if not rows:
    raise ValueError("rows: expected at least one row of images")
  shapes = {np.shape(r) for r in rows}
  if len(shapes) != 1 or len(next(iter(shapes))) != 4:
    raise ValueError(f"rows: expected equal f32[m, h, w, c] arrays, got shapes {sorted(shapes)}")
  m, h, w, c = next(iter(shapes))
  grid = np.full((len(rows) * (h + pad) + pad, m * (w + pad) + pad, c), 0.5,
                 np.float32)
  for r, imgs in enumerate(rows):
    for i in range(m):
      y, x = pad + r * (h + pad), pad + i * (w + pad)
      grid[y:y + h, x:x + w] = np.clip(np.asarray(imgs[i], np.float32), 0.0, 1.0)
  out = np.round(grid * 255.0).astype(np.uint8)
  if scale > 1:
    out = out.repeat(scale, axis=0).repeat(scale, axis=1)
  return out


def _label_rows(img, labels: Sequence[str], row_h: int, stride: int, top: int):
  """img (a PIL image of the grid) with a white margin on the left naming
  each row, its text centred on the row."""
  from PIL import Image, ImageDraw, ImageFont

  font = ImageFont.load_default(size=max(11, min(18, row_h // 3)))
  margin = int(max(font.getlength(t) for t in labels)) + 12
  white, black = (255, 0) if img.mode == "L" else ((255,) * 3, (0,) * 3)
  out = Image.new(img.mode, (img.width + margin, img.height), white)
  out.paste(img, (margin, 0))
  draw = ImageDraw.Draw(out)
  for r, text in enumerate(labels):
    draw.text((margin - 6, top + r * stride + row_h // 2), text, fill=black,
              font=font, anchor="rm")
  return out


@lead_process_only
def save_image_grid(path: str | os.PathLike, rows: Sequence[np.ndarray],
                    pad: int = 1, target_width: int = 800,
                    labels: Sequence[str] | None = None) -> None:
  """Writes `to_uint8_grid(rows)` as a PNG about `target_width` pixels wide
  (grid alone), with `labels` (one per row, when given) in a left margin."""
  from PIL import Image

  if labels is not None and len(labels) != len(rows):
    raise ValueError(f"labels: expected one per row ({len(rows)}), got {len(labels)}")
  probe = to_uint8_grid(rows, pad)
  scale = max(1, target_width // probe.shape[1])
  img = to_uint8_grid(rows, pad, scale)
  img = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
  if labels is not None:
    h = np.shape(rows[0])[1]
    img = _label_rows(img, labels, h * scale, (h + pad) * scale, pad * scale)
  img.save(path)


@lead_process_only
def save_reconstructions(path: str | os.PathLike, originals: np.ndarray,
                         reconstructions: np.ndarray) -> None:
  """Originals f32[m, h, w, c] in the top row, reconstructions below."""
  save_image_grid(path, [np.asarray(originals), np.asarray(reconstructions)],
                  labels=["original", "reconstruction"])


@lead_process_only
def save_confusion(path: str | os.PathLike, table: np.ndarray, title: str = "") -> None:
  """A contingency table i64[clusters, classes] as an annotated heat map."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  table = np.asarray(table)
  fig, ax = plt.subplots(figsize=(1.0 + 0.5 * table.shape[1], 1.0 + 0.5 * table.shape[0]))
  ax.imshow(table, cmap="Blues")
  if table.size <= 400:
    top = table.max() if table.size else 0
    for (i, j), v in np.ndenumerate(table):
      ax.text(j, i, str(v), ha="center", va="center", fontsize=6,
              color="white" if v > top / 2 else "black")
  ax.set_xlabel("class")
  ax.set_ylabel("cluster (matched order)")
  ax.set_title(title, fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


@lead_process_only
def save_scatter(path: str | os.PathLike, points: np.ndarray, colors: np.ndarray,
                 title: str = "") -> None:
  """points: f32[n, 2] coloured by the integer labels colors: i32[n]."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(5, 5))
  ax.scatter(points[:, 0], points[:, 1], c=colors, cmap="tab10" if colors.max() < 10
             else "tab20", s=2, alpha=0.6, linewidths=0)
  ax.set_xticks([])
  ax.set_yticks([])
  ax.set_title(title, fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
