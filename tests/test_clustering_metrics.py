"""Clustering metrics against brute force and closed forms."""

from __future__ import annotations

import itertools

import jax.numpy as jnp
import numpy as np
import pytest

from unsupjax.metrics import clustering as cm


def _brute_force_acc(t, p):
  classes, clusters = np.unique(t), np.unique(p)
  best = 0
  # Every injective map from clusters to classes (clusters <= classes here).
  for perm in itertools.permutations(classes, len(clusters)):
    mapping = dict(zip(clusters, perm))
    best = max(best, sum(mapping[a] == b for a, b in zip(p, t)))
  return best / len(t)


def _entropy(labels):
  _, counts = np.unique(labels, return_counts=True)
  q = counts / counts.sum()
  return -np.sum(q * np.log(q))


def _mutual_info(t, p):
  n = len(t)
  mi = 0.0
  for a in np.unique(t):
    for b in np.unique(p):
      nab = np.sum((t == a) & (p == b))
      if nab:
        mi += nab / n * np.log(n * nab / (np.sum(t == a) * np.sum(p == b)))
  return mi


def _ari(t, p):
  comb2 = lambda v: v * (v - 1) / 2
  table, _, _ = cm.contingency(t, p)
  s_ij = comb2(table).sum()
  s_a, s_b = comb2(table.sum(1)).sum(), comb2(table.sum(0)).sum()
  expected = s_a * s_b / comb2(len(t))
  return (s_ij - expected) / (0.5 * (s_a + s_b) - expected)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_accuracy_matches_brute_force(seed):
  rng = np.random.default_rng(seed)
  t = rng.integers(0, 4, 60)
  p = np.where(rng.random(60) < 0.6, (t + 1) % 4, rng.integers(0, 4, 60)) + 10
  assert cm.clustering_accuracy(t, p) == pytest.approx(_brute_force_acc(t, p))


def test_accuracy_fewer_clusters_than_classes():
  t = np.array([0, 0, 1, 1, 2, 2])
  p = np.array([5, 5, 5, 5, 7, 7])
  assert cm.clustering_accuracy(t, p) == pytest.approx(_brute_force_acc(t, p))
  assert cm.clustering_accuracy(t, p) == pytest.approx(4 / 6)


def test_accuracy_more_clusters_than_classes_counts_unmatched_as_errors():
  t = np.array([0, 0, 0, 1, 1, 1])
  p = np.array([0, 0, 2, 1, 1, 3])
  assert cm.clustering_accuracy(t, p) == pytest.approx(4 / 6)
  assert cm.matching(t, p) == {0: 0, 1: 1}


def test_permuted_labels_are_perfect():
  t = np.repeat(np.arange(5), 7)
  p = (t * 3 + 2) % 5
  report = cm.clustering_report(jnp.asarray(t), jnp.asarray(p))
  assert report == pytest.approx({"acc": 1.0, "nmi": 1.0, "ari": 1.0})


@pytest.mark.parametrize("seed", [0, 1])
def test_nmi_ari_against_numpy_formulas(seed):
  rng = np.random.default_rng(seed)
  t = rng.integers(0, 3, 80)
  p = np.where(rng.random(80) < 0.5, t, rng.integers(0, 4, 80))
  ref_nmi = _mutual_info(t, p) / (0.5 * (_entropy(t) + _entropy(p)))
  assert cm.nmi(t, p) == pytest.approx(ref_nmi, rel=1e-9)
  assert cm.ari(t, p) == pytest.approx(_ari(t, p), rel=1e-9)


def test_bad_input():
  with pytest.raises(ValueError, match="y_pred: expected the shape"):
    cm.clustering_accuracy(np.zeros(3, int), np.zeros(4, int))
  with pytest.raises(ValueError, match="y_true: expected a 1-D"):
    cm.nmi(np.zeros((3, 2), int), np.zeros(3, int))
  with pytest.raises(ValueError, match="y_pred: expected integer labels"):
    cm.ari(np.zeros(3, int), np.array([0.5, 1.0, 2.0]))
  with pytest.raises(ValueError, match="y_true: expected at least one label"):
    cm.clustering_accuracy(np.zeros(0, int), np.zeros(0, int))
