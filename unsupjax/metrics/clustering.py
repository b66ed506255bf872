"""Clustering quality against reference labels: ACC, NMI, ARI.

Offers:
  * `clustering_accuracy(y_true, y_pred)`: the best one-to-one matching of
    clusters to classes (Hungarian algorithm, `scipy.optimize
    .linear_sum_assignment` on the contingency table), as in the DEC/IDEC
    papers. With more clusters than classes the unmatched clusters count as
    errors.
  * `matching(y_true, y_pred)`: that cluster -> class map itself.
  * `nmi`, `ari`: scikit-learn's normalized mutual information (arithmetic
    normalization, scikit-learn's default) and adjusted Rand index.
  * `clustering_report(y_true, y_pred) -> {"acc", "nmi", "ari"}`.

Host-side NumPy functions (labels are small integer vectors); they accept
NumPy or JAX arrays. Does not offer: internal indices that need no labels
(silhouette etc.: use scikit-learn's).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["ari", "clustering_accuracy", "clustering_report", "contingency",
           "matching", "nmi"]


def _labels(y: Any, name: str) -> np.ndarray:
  a = np.asarray(y)
  if a.ndim != 1:
    raise ValueError(f"{name}: expected a 1-D label vector, got shape {a.shape}")
  if a.size == 0:
    raise ValueError(f"{name}: expected at least one label, got none")
  if a.dtype.kind not in "iu":
    if a.dtype.kind == "f" and np.all(np.isfinite(a)) and np.all(a == np.round(a)):
      a = a.astype(np.int64)
    else:
      raise ValueError(f"{name}: expected integer labels, got dtype {a.dtype}")
  return a


def _pair(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
  t, p = _labels(y_true, "y_true"), _labels(y_pred, "y_pred")
  if t.shape != p.shape:
    raise ValueError(f"y_pred: expected the shape of y_true {t.shape}, got "
                     f"{p.shape}")
  return t, p


def contingency(y_true, y_pred) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(table i64[n_clusters, n_classes], cluster ids, class ids)."""
  t, p = _pair(y_true, y_pred)
  classes, ti = np.unique(t, return_inverse=True)
  clusters, pi = np.unique(p, return_inverse=True)
  table = np.zeros((clusters.size, classes.size), np.int64)
  np.add.at(table, (pi, ti), 1)
  return table, clusters, classes


def matching(y_true, y_pred) -> dict[int, int]:
  """The cluster -> class map that maximizes the number of matched rows."""
  from scipy.optimize import linear_sum_assignment
  table, clusters, classes = contingency(y_true, y_pred)
  rows, cols = linear_sum_assignment(table, maximize=True)
  return {int(clusters[r]): int(classes[c]) for r, c in zip(rows, cols)}


def clustering_accuracy(y_true, y_pred) -> float:
  """Fraction of rows whose cluster maps to their class under the best
  one-to-one matching (Hungarian). In [0, 1]."""
  from scipy.optimize import linear_sum_assignment
  table, _, _ = contingency(y_true, y_pred)
  rows, cols = linear_sum_assignment(table, maximize=True)
  return float(table[rows, cols].sum() / table.sum())


def nmi(y_true, y_pred) -> float:
  """Normalized mutual information (scikit-learn, arithmetic mean)."""
  from sklearn.metrics import normalized_mutual_info_score
  t, p = _pair(y_true, y_pred)
  return float(normalized_mutual_info_score(t, p))


def ari(y_true, y_pred) -> float:
  """Adjusted Rand index (scikit-learn)."""
  from sklearn.metrics import adjusted_rand_score
  t, p = _pair(y_true, y_pred)
  return float(adjusted_rand_score(t, p))


def clustering_report(y_true, y_pred) -> dict[str, float]:
  """{"acc": ..., "nmi": ..., "ari": ...} for one clustering."""
  return {"acc": clustering_accuracy(y_true, y_pred), "nmi": nmi(y_true, y_pred),
          "ari": ari(y_true, y_pred)}
