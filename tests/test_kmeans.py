"""k-means against scikit-learn and NumPy float64 references.

Float32 results are compared with float64 references at float32's
accuracy: labels exactly, inertia to rtol 1e-5 (a float32 sum of ~10^3
positive terms is good to ~1e-6), centroids to 1e-4 (means of ~10^2 rows
of magnitude <= 20). Layout plans, the estimator and dtypes have their own
files (test_kmeans_plans.py, test_kmeans_estimator.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import cluster as skc
from sklearn.datasets import load_digits, make_blobs

from unsupjax import kmeans
from unsupjax.kmeans import fitting


def _blobs():
  x, y = make_blobs(1500, 8, centers=6, cluster_std=1.5, random_state=0)
  return x.astype(np.float32), y


def _digits():
  bunch = load_digits()
  return (bunch.data / 16.0).astype(np.float32), bunch.target


def _aniso():
  x, y = make_blobs(1200, 2, centers=3, random_state=170)
  return (x @ np.array([[0.6, -0.6], [-0.4, 0.8]])).astype(np.float32), y


DATA = {"blobs": _blobs, "digits": _digits, "aniso": _aniso}


@pytest.fixture(scope="module")
def digits():
  return _digits()


def _rows(x, k, seed):
  """k distinct rows, jittered: digits' integer pixels make exact distance
  ties, which float32 and float64 may break differently."""
  rng = np.random.default_rng(seed)
  rows = x[rng.choice(len(x), k, replace=False)]
  return (rows + 1e-2 * x.std() * rng.normal(size=rows.shape)).astype(np.float32)


# 30: past XLA's fast argmin; each case compiles a fit, so not all pairs.
@pytest.mark.parametrize("name, k", [("blobs", 3), ("digits", 10),
                                     ("digits", 30), ("aniso", 30)])
def test_same_init_matches_sklearn(name, k):
  x, _ = DATA[name]()
  init = _rows(x, k, seed=k)
  ref = skc.KMeans(k, init=init.astype(np.float64), n_init=1).fit(
      x.astype(np.float64))
  res = kmeans.fit(jax.random.key(0), x, k, init=init)
  np.testing.assert_array_equal(np.asarray(res.labels), ref.labels_)
  np.testing.assert_allclose(float(res.inertia), ref.inertia_, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(res.centroids), ref.cluster_centers_,
                             rtol=1e-4, atol=1e-4)
  assert int(res.n_iter) == ref.n_iter_


def test_sample_weight_matches_sklearn(digits):
  x, _ = digits
  w = np.random.default_rng(0).uniform(0.1, 3.0, len(x)).astype(np.float32)
  w[:50] = 0.0
  init = _rows(x, 8, seed=1)
  ref = skc.KMeans(8, init=init.astype(np.float64), n_init=1).fit(
      x.astype(np.float64), sample_weight=w.astype(np.float64))
  res = kmeans.fit(jax.random.key(0), x, 8, init=init, sample_weight=w)
  np.testing.assert_array_equal(np.asarray(res.labels), ref.labels_)
  np.testing.assert_allclose(float(res.inertia), ref.inertia_, rtol=1e-5)
  assert int(res.n_iter) == ref.n_iter_


def test_integer_weights_equal_repeated_rows():
  x, _ = _aniso()
  x = x[:300]
  w = np.random.default_rng(0).integers(1, 4, len(x))
  init = x[:4]
  a = kmeans.fit(jax.random.key(0), x, 4, init=init, sample_weight=w)
  ref = skc.KMeans(4, init=init.astype(np.float64), n_init=1).fit(
      np.repeat(x, w, axis=0).astype(np.float64))
  np.testing.assert_array_equal(np.asarray(a.labels),
                                ref.labels_[np.cumsum(w) - w])
  np.testing.assert_allclose(np.asarray(a.centroids), ref.cluster_centers_,
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(float(a.inertia), ref.inertia_, rtol=1e-5)


def test_max_iter_and_n_iter_semantics(digits):
  x, _ = digits
  init = _rows(x, 10, seed=0)
  for max_iter in (1, 2, 5):
    ref = skc.KMeans(10, init=init.astype(np.float64), n_init=1,
                     max_iter=max_iter).fit(x.astype(np.float64))
    res = kmeans.fit(jax.random.key(0), x, 10, init=init, max_iter=max_iter)
    assert int(res.n_iter) == ref.n_iter_ == max_iter
    assert not bool(res.converged)
    # Labels are those of the returned centroids (the final E-step).
    c64 = np.asarray(res.centroids, np.float64)
    d2 = ((x.astype(np.float64)[:, None] - c64[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(np.asarray(res.labels), d2.argmin(1))
    np.testing.assert_array_equal(np.asarray(res.labels), ref.labels_)
    np.testing.assert_allclose(float(res.inertia), ref.inertia_, rtol=1e-5)


def test_converges_before_max_iter_on_easy_data():
  x, y = make_blobs(600, 4, centers=4, cluster_std=0.3, random_state=1)
  res = kmeans.fit(jax.random.key(3), x.astype(np.float32), 4, max_iter=100)
  assert bool(res.converged)
  assert int(res.n_iter) < 10
  # Every blob is one cluster.
  assert len({(a, b) for a, b in zip(y, np.asarray(res.labels))}) == 4


def test_tol_uses_mean_feature_variance():
  x, _ = _blobs()
  init = _rows(x, 6, seed=2)
  for tol in (1e-1, 1e-2, 1e-4):
    ref = skc.KMeans(6, init=init.astype(np.float64), n_init=1, tol=tol).fit(
        x.astype(np.float64))
    res = kmeans.fit(jax.random.key(0), x, 6, init=init, tol=tol)
    assert int(res.n_iter) == ref.n_iter_
  # Scaling x scales the tolerance with it: same iterations.
  a = kmeans.fit(jax.random.key(0), x, 6, init=init, tol=1e-1)
  b = kmeans.fit(jax.random.key(0), 100 * x, 6, init=100 * init, tol=1e-1)
  assert int(a.n_iter) == int(b.n_iter)


def test_empty_cluster_is_relocated_like_sklearn(digits):
  x, _ = digits
  init = _rows(x, 10, seed=3)
  init[3] = init[1]  # duplicate centre: ties go to 1, so 3 starts empty
  init[5] = 50.0     # a centre far from all data: empty
  ref = skc.KMeans(10, init=init.astype(np.float64), n_init=1).fit(
      x.astype(np.float64))
  res = kmeans.fit(jax.random.key(0), x, 10, init=init)
  c = np.asarray(res.centroids)
  assert np.isfinite(c).all()
  assert len(np.unique(np.asarray(res.labels))) == 10
  np.testing.assert_array_equal(np.asarray(res.labels), ref.labels_)
  np.testing.assert_allclose(float(res.inertia), ref.inertia_, rtol=1e-5)


def test_more_empty_clusters_than_one_iteration_can_fill():
  x = np.concatenate([np.zeros((5, 2)), np.ones((5, 2))]).astype(np.float32)
  x += np.random.default_rng(0).normal(0, 0.01, x.shape).astype(np.float32)
  init = np.full((4, 2), 9.0, np.float32)  # all centres far: 3 empty
  init[:, 0] += np.arange(4)
  res = kmeans.fit(jax.random.key(0), x, 4, init=init)
  ref = skc.KMeans(4, init=init.astype(np.float64), n_init=1).fit(
      x.astype(np.float64))
  assert np.isfinite(np.asarray(res.centroids)).all()
  assert len(np.unique(np.asarray(res.labels))) == 4
  np.testing.assert_array_equal(np.asarray(res.labels), ref.labels_)
  np.testing.assert_allclose(np.asarray(res.centroids), ref.cluster_centers_,
                             atol=1e-6)
  np.testing.assert_allclose(float(res.inertia), ref.inertia_, rtol=1e-5)


@pytest.mark.parametrize("rows, k", [(np.ones((4, 2)), 3),
                                     ([[0, 0], [0, 0], [0, 0], [1, 1]], 3),
                                     ([[2, 1], [2, 1], [5, 5], [5, 5]], 4)])
def test_duplicate_points_warn_and_match_sklearn(rows, k):
  """Fewer distinct points than k: no NaN centre, scikit-learn's centres and
  labels, and its ConvergenceWarning."""
  from sklearn.exceptions import ConvergenceWarning
  x = np.asarray(rows, np.float32)
  init = x[np.arange(k) % len(x)][::-1].copy()
  with pytest.warns(ConvergenceWarning, match="distinct clusters"):
    ref = skc.KMeans(k, init=init.astype(np.float64), n_init=1).fit(
        x.astype(np.float64))
  with pytest.warns(ConvergenceWarning,
                    match=r"Number of distinct clusters \(\d\) found smaller "
                          rf"than n_clusters \({k}\)"):
    res = kmeans.fit(jax.random.key(0), x, k, init=init)
  c = np.asarray(res.centroids)
  assert np.isfinite(c).all()
  np.testing.assert_array_equal(np.asarray(res.labels), ref.labels_)
  np.testing.assert_allclose(c, ref.cluster_centers_, atol=1e-6)
  assert int(res.n_iter) == ref.n_iter_
  assert float(res.inertia) == pytest.approx(ref.inertia_, abs=1e-6)
  with pytest.warns(ConvergenceWarning):
    est = kmeans.KMeans(k, random_state=0).fit(x)
  assert np.isfinite(est.cluster_centers_).all()


def test_empty_cluster_left_empty_takes_the_heaviest_centre():
  """All rows sit on their centres, so nothing is relocated and the empty
  cluster 1 takes the centre of the heaviest cluster (2: three rows).
  scikit-learn 1.9 means the same rule but copies cluster 2 before
  averaging it (its loop reaches cluster 1 first), so its centre 1 is the
  sum of cluster 2's centred rows, [-0.5, -0.5]: not compared here."""
  from sklearn.exceptions import ConvergenceWarning
  x = np.array([[0, 0], [0, 0], [0, 0], [1, 1]], np.float32)
  init = np.array([[1, 1], [1, 1], [0, 0]], np.float32)
  with pytest.warns(ConvergenceWarning):
    res = kmeans.fit(jax.random.key(0), x, 3, init=init)
  np.testing.assert_array_equal(np.asarray(res.centroids),
                                [[1, 1], [0, 0], [0, 0]])
  np.testing.assert_array_equal(np.asarray(res.labels), [1, 1, 1, 0])


def _distinct_rows(centroids, idx, x, k) -> np.ndarray:
  """An init's indices as NumPy, checked to be k distinct rows of x that are
  its centroids."""
  idx = np.asarray(idx)
  assert len(np.unique(idx)) == k
  np.testing.assert_array_equal(np.asarray(centroids), x[idx])
  return idx


def _np_inertia(x, c) -> float:
  """float64 sum of squared distances to the nearest of centres c."""
  d2 = ((x.astype(np.float64)[:, None] - np.asarray(c, np.float64)[None]) ** 2)
  return float(d2.sum(-1).min(1).sum())


def test_kmeans_plusplus_distinct_and_spread():
  x, y = make_blobs(2000, 5, centers=8, cluster_std=0.5, center_box=(-30, 30),
                    random_state=4)
  x = x.astype(np.float32)
  covered_pp, covered_rand = [], []
  for seed in range(20):
    idx = _distinct_rows(*kmeans.kmeans_plusplus(jax.random.key(seed), x, 8), x, 8)
    covered_pp.append(len(np.unique(y[idx])))
    _, ridx = kmeans.random_init(jax.random.key(seed), x, 8)
    assert len(np.unique(np.asarray(ridx))) == 8
    covered_rand.append(len(np.unique(y[np.asarray(ridx)])))
  # One seed per blob nearly always; uniform draws miss blobs (8!/8^8 ~ 0.2%
  # chance of covering all 8).
  assert np.mean(np.array(covered_pp) == 8) >= 0.9
  assert np.mean(np.array(covered_rand) == 8) <= 0.2


def test_kmeans_plusplus_respects_weights():
  x = np.arange(20, dtype=np.float32)[:, None]
  w = np.zeros(20, np.float32)
  w[[3, 11, 17]] = 1.0
  _, idx = kmeans.kmeans_plusplus(jax.random.key(0), x, 3, sample_weight=w)
  assert sorted(np.asarray(idx).tolist()) == [3, 11, 17]


def test_kmeans_parallel_seeds_every_blob_in_few_passes():
  """k-means|| covers well-separated blobs as k-means++ does, and its
  initial potential is of the same order (both are O(log k)-approximate)."""
  x, y = make_blobs(3000, 5, centers=25, cluster_std=0.5, center_box=(-60, 60),
                    random_state=5)
  x = x.astype(np.float32)
  covered, ratio = [], []
  for seed in range(10):
    c, idx = kmeans.kmeans_parallel(jax.random.key(seed), x, 25)
    idx = _distinct_rows(c, idx, x, 25)
    covered.append(len(np.unique(y[idx])))
    c_pp, _ = kmeans.kmeans_plusplus(jax.random.key(seed), x, 25)
    ratio.append(_np_inertia(x, c) / _np_inertia(x, c_pp))
  assert np.mean(np.array(covered) == 25) >= 0.9
  assert np.median(ratio) < 1.5
  # A Lloyd run from it reaches scikit-learn's optimum.
  res = kmeans.fit(jax.random.key(0), x, 25, init="k-means||", n_init=2)
  ref = skc.KMeans(25, n_init=3, random_state=0).fit(x)
  assert float(res.inertia) == pytest.approx(ref.inertia_, rel=1e-4)


def test_kmeans_parallel_weights_and_arguments():
  x = np.arange(20, dtype=np.float32)[:, None]
  w = np.zeros(20, np.float32)
  w[[3, 11, 17]] = 1.0
  # Zero-weight rows are never drawn (neither as candidates nor as centres).
  for seed in range(5):
    _, idx = kmeans.kmeans_parallel(jax.random.key(seed), x, 3, sample_weight=w)
    assert sorted(np.asarray(idx).tolist()) == [3, 11, 17]
  a = kmeans.kmeans_parallel(jax.random.key(2), x, 3, sample_weight=w + 1)[1]
  b = kmeans.kmeans_parallel(jax.random.key(2), x, 3, sample_weight=w + 1)[1]
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  with pytest.raises(ValueError, match="rounds"):
    kmeans.kmeans_parallel(jax.random.key(0), x, 3, rounds=0)
  with pytest.raises(ValueError, match="oversampling"):
    kmeans.kmeans_parallel(jax.random.key(0), x, 3, oversampling=-1.0)
  est = kmeans.KMeans(3, init="k-means||", random_state=0).fit(x, sample_weight=w)
  assert sorted(np.round(est.cluster_centers_[:, 0]).tolist()) == [3.0, 11.0, 17.0]


def test_n_init_keeps_best_and_matches_sklearn_quality(digits):
  x, _ = digits
  key = jax.random.key(0)
  # Restart i starts from kmeans_plusplus(split(key, n_init)[i]); scikit-learn
  # run from each of those starts is the reference.
  singles = []
  for kk in jax.random.split(key, 5):
    init, _ = kmeans.kmeans_plusplus(kk, x, 10)
    singles.append(skc.KMeans(10, init=np.asarray(init, np.float64),
                              n_init=1).fit(x.astype(np.float64)).inertia_)
  best = kmeans.fit(key, x, 10, n_init=5)
  np.testing.assert_allclose(float(best.inertia), min(singles), rtol=1e-5)
  assert len(set(np.round(singles, 1))) > 1  # the restarts did differ
  np.testing.assert_allclose(float(best.inertia),
                             _np_inertia(x, best.centroids), rtol=1e-5)
  ref = skc.KMeans(10, n_init=5, random_state=0).fit(x)
  assert float(best.inertia) == pytest.approx(ref.inertia_, rel=0.02)


def test_random_init_n_init(digits):
  x, _ = digits
  res = kmeans.fit(jax.random.key(1), x, 10, init="random", n_init=4)
  ref = skc.KMeans(10, init="random", n_init=4, random_state=0).fit(x)
  assert float(res.inertia) == pytest.approx(ref.inertia_, rel=0.03)


def test_determinism_per_key(digits):
  x, _ = digits
  a = kmeans.fit(jax.random.key(7), x, 5, max_iter=7)
  b = kmeans.fit(jax.random.key(7), x, 5, max_iter=7)
  c = kmeans.fit(jax.random.key(8), x, 5, max_iter=7)
  np.testing.assert_array_equal(np.asarray(a.centroids), np.asarray(b.centroids))
  np.testing.assert_array_equal(np.asarray(a.labels), np.asarray(b.labels))
  assert not np.array_equal(np.asarray(a.centroids), np.asarray(c.centroids))


def test_no_recompile_for_same_shapes(digits):
  x, _ = digits
  kmeans.fit(jax.random.key(0), x, 5, max_iter=7)
  size = fitting._fit_jit._cache_size()
  kmeans.fit(jax.random.key(1), x + 1.0, 5, max_iter=9)
  kmeans.fit(jax.random.key(2), x[:1000] * 2.0, 5, max_iter=7, tol=1e-3)
  assert fitting._fit_jit._cache_size() == size


def test_jit_by_caller_and_shapes(digits):
  x, _ = digits
  init = _rows(x, 6, seed=8)
  f = jax.jit(kmeans.fit, static_argnames=("k", "n_init"))
  res = f(jax.random.key(0), jnp.asarray(x), k=6, init=jnp.asarray(init),
          max_iter=50)
  ref = skc.KMeans(6, init=init.astype(np.float64), n_init=1,
                   max_iter=50).fit(x.astype(np.float64))
  assert res.centroids.shape == (6, 64) and res.centroids.dtype == jnp.float32
  assert res.labels.shape == (len(x),) and res.labels.dtype == jnp.int32
  assert res.inertia.shape == () and res.n_iter.dtype == jnp.int32
  np.testing.assert_array_equal(np.asarray(res.labels), ref.labels_)
  np.testing.assert_allclose(float(res.inertia), ref.inertia_, rtol=1e-5)
  g = jax.jit(kmeans.fit, static_argnames=("k", "init", "n_init"))
  res = g(jax.random.key(0), jnp.asarray(x), k=6, n_init=2, max_iter=50)
  assert res.labels.shape == (len(x),)


def test_block_size_does_not_change_result(digits):
  x, _ = digits
  init = _rows(x, 10, seed=5)
  ref = skc.KMeans(10, init=init.astype(np.float64), n_init=1).fit(
      x.astype(np.float64))
  res = kmeans.fit(jax.random.key(0), x, 10, init=init, block_size=100)
  np.testing.assert_array_equal(np.asarray(res.labels), ref.labels_)
  np.testing.assert_allclose(float(res.inertia), ref.inertia_, rtol=1e-5)


def test_inertia_accurate_in_float32_far_from_origin():
  # A large common offset: the ||x||^2 - 2x.c + ||c||^2 expansion cancels
  # catastrophically in float32; centring and the direct final sum do not.
  x, _ = _blobs()
  x64 = x.astype(np.float64) + 1e4
  x32 = x64.astype(np.float32)
  init = _rows(x32, 6, seed=0)
  ref = skc.KMeans(6, init=init.astype(np.float64), n_init=1).fit(x64)
  res = kmeans.fit(jax.random.key(0), x32, 6, init=init)
  np.testing.assert_array_equal(np.asarray(res.labels), ref.labels_)
  c = np.asarray(res.centroids, np.float64)
  direct = np.sum((x32.astype(np.float64) - c[np.asarray(res.labels)]) ** 2)
  np.testing.assert_allclose(float(res.inertia), direct, rtol=1e-5)
  np.testing.assert_allclose(float(res.inertia), ref.inertia_, rtol=1e-3)


def test_predict_transform_against_numpy(digits):
  x, _ = digits
  c = _rows(x, 9, seed=6)
  d64 = np.sqrt(((x[:, None, :].astype(np.float64) - c[None]) ** 2).sum(-1))
  np.testing.assert_allclose(np.asarray(kmeans.transform(c, x)), d64,
                             rtol=1e-4, atol=1e-4)
  np.testing.assert_array_equal(np.asarray(kmeans.predict(c, x)),
                                d64.argmin(1))
  np.testing.assert_allclose(float(kmeans.inertia(c, x)),
                             (d64.min(1) ** 2).sum(), rtol=1e-5)


def _spherical_reference(x, init, iters):
  x = x / np.linalg.norm(x, axis=1, keepdims=True)
  c = init / np.linalg.norm(init, axis=1, keepdims=True)
  for _ in range(iters):
    lab = (x @ c.T).argmax(1)
    c = np.stack([x[lab == j].sum(0) for j in range(len(c))])
    c /= np.linalg.norm(c, axis=1, keepdims=True)
  lab = (x @ c.T).argmax(1)
  return c, lab, np.sum(1 - (x * c[lab]).sum(1))


def test_cosine_matches_numpy_spherical_kmeans():
  rng = np.random.default_rng(0)
  directions = rng.normal(size=(5, 20))
  x = (directions[rng.integers(0, 5, 800)] + 0.4 * rng.normal(size=(800, 20)))
  x *= rng.uniform(0.5, 5.0, (800, 1))  # norms must not matter
  init = x[:5].astype(np.float64)
  c, lab, inert = _spherical_reference(x, init, iters=10)
  res = kmeans.fit(jax.random.key(0), x.astype(np.float32), 5,
                   init=init.astype(np.float32), metric="cosine", max_iter=10,
                   tol=0.0)
  np.testing.assert_array_equal(np.asarray(res.labels), lab)
  np.testing.assert_allclose(np.asarray(res.centroids), c, atol=1e-5)
  np.testing.assert_allclose(float(res.inertia), inert, rtol=1e-5)
  np.testing.assert_array_equal(
      np.asarray(kmeans.predict(res.centroids, x, metric="cosine")), lab)
  t = np.asarray(kmeans.transform(res.centroids, x, metric="cosine"))
  xn = x / np.linalg.norm(x, axis=1, keepdims=True)
  np.testing.assert_allclose(t, 1 - xn @ c.T, atol=1e-5)


def test_minibatch_close_to_full_batch(digits):
  x, _ = digits
  rng = np.random.default_rng(0)

  def batches(epochs, size):
    for _ in range(epochs):
      perm = rng.permutation(len(x))
      for s in range(0, len(x), size):
        yield x[perm[s:s + size]]  # the last batch is short: padded

  state = kmeans.minibatch_fit(jax.random.key(0), batches(10, 256), 10)
  assert int(state.step) == 10 * -(-len(x) // 256)
  np.testing.assert_allclose(float(state.counts.sum()), 10 * len(x))
  mb = float(kmeans.inertia(state.centroids, x))
  full = float(kmeans.fit(jax.random.key(0), x, 10, n_init=3).inertia)
  assert mb <= 1.1 * full


def _np_sculley(init, batches):
  """Sculley's mini-batch k-means in NumPy float64: each centre is the
  running mean of every row assigned to it so far. Returns (centres,
  counts, each batch's inertia under the centres before its update)."""
  c = np.asarray(init, np.float64).copy()
  counts = np.zeros(len(c))
  inertias = []
  for b in batches:
    b = np.asarray(b, np.float64)
    d2 = ((b[:, None] - c[None]) ** 2).sum(-1)
    lab = d2.argmin(1)
    inertias.append(d2.min(1).sum())
    for j in np.unique(lab):
      rows = b[lab == j]
      c[j] = (c[j] * counts[j] + rows.sum(0)) / (counts[j] + len(rows))
      counts[j] += len(rows)
  return c, counts, np.array(inertias)


def test_minibatch_device_loop_and_iterator_match_numpy(digits):
  x, _ = digits
  init = _rows(x, 6, seed=4)
  key = jax.random.key(3)
  state, inertias = kmeans.minibatch_fit_arrays(key, x, 6, batch_size=200,
                                                epochs=3, init=init)
  _, batch_key = jax.random.split(key)
  batches = [x[np.asarray(idx)] for e in range(3)
             for idx in kmeans.epoch_batches(batch_key, e, len(x), 200)]
  c, counts, ref_inertias = _np_sculley(init, batches)
  it = kmeans.minibatch_fit(key, batches, 6, init=init)
  assert inertias.shape == (3 * (len(x) // 200),)
  assert int(state.step) == int(it.step) == len(batches)
  for s in (state, it):
    np.testing.assert_allclose(np.asarray(s.centroids), c, rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_array_equal(np.asarray(s.counts), counts)
  np.testing.assert_allclose(np.asarray(inertias), ref_inertias, rtol=1e-5)
  with pytest.raises(ValueError, match="batch_size: expected an int in"):
    kmeans.minibatch_fit_arrays(key, x, 6, batch_size=3, epochs=1)


def test_minibatch_step_is_running_mean():
  x = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
  state = kmeans.MiniBatchState(jnp.zeros((1, 3)), jnp.zeros((1,)),
                                jnp.zeros((), jnp.int32))
  for s in range(0, 64, 16):
    state, _ = kmeans.minibatch_step(state, x[s:s + 16])
  # One centre: after all batches it is exactly the mean of all rows seen.
  np.testing.assert_allclose(np.asarray(state.centroids[0]), x.mean(0),
                             atol=1e-6)


def test_clustering_loss_hard_soft_and_grads():
  rng = np.random.default_rng(0)
  z = rng.normal(size=(6, 3)).astype(np.float32)
  c = rng.normal(size=(4, 3)).astype(np.float32)
  d64 = ((z[:, None].astype(np.float64) - c[None]) ** 2).sum(-1)
  hard = kmeans.clustering_loss(z, c)
  assert hard.shape == (6,)
  np.testing.assert_allclose(np.asarray(hard), d64.min(1), rtol=1e-5)
  soft_cold = kmeans.clustering_loss(z, c, assignment="soft", temperature=1e-3)
  np.testing.assert_allclose(np.asarray(soft_cold), d64.min(1), rtol=1e-4)
  p = np.exp(-d64) / np.exp(-d64).sum(1, keepdims=True)
  np.testing.assert_allclose(
      np.asarray(kmeans.clustering_loss(z, c, assignment="soft")),
      (p * d64).sum(1), rtol=1e-5)
  g = jax.grad(lambda z, c: kmeans.clustering_loss(z, c).sum(),
               argnums=(0, 1))(jnp.asarray(z), jnp.asarray(c))
  nearest = d64.argmin(1)
  np.testing.assert_allclose(np.asarray(g[0]), 2 * (z - c[nearest]), atol=1e-5)


def test_estimator_matches_sklearn_attributes(digits):
  x, _ = digits
  init = _rows(x, 10, seed=9)
  ours = kmeans.KMeans(10, init=init).fit(x)
  ref = skc.KMeans(10, init=init.astype(np.float64), n_init=1).fit(
      x.astype(np.float64))
  assert ours.cluster_centers_.shape == (10, 64)
  assert ours.labels_.shape == (len(x),)
  assert isinstance(ours.inertia_, float) and isinstance(ours.n_iter_, int)
  assert ours.n_iter_ == ref.n_iter_
  assert ours.n_features_in_ == 64
  np.testing.assert_array_equal(ours.labels_, ref.labels_)
  np.testing.assert_allclose(ours.inertia_, ref.inertia_, rtol=1e-5)
  np.testing.assert_array_equal(ours.predict(x), ref.predict(x.astype(np.float64)))
  np.testing.assert_allclose(ours.transform(x[:50]), ref.transform(x[:50].astype(np.float64)),
                             rtol=1e-4, atol=1e-4)
  assert ours.score(x) == pytest.approx(ref.score(x.astype(np.float64)), rel=1e-5)
  np.testing.assert_array_equal(
      kmeans.KMeans(10, init=init).fit_predict(x), ours.labels_)
  assert kmeans.KMeans(3, init="random")._n_init() == 10
  assert kmeans.KMeans(3)._n_init() == 1
  a = kmeans.KMeans(5, random_state=0, max_iter=7).fit(x)
  b = kmeans.KMeans(5, random_state=0, max_iter=7).fit(x)
  np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)
  from sklearn.exceptions import NotFittedError
  with pytest.raises(NotFittedError):
    kmeans.KMeans(3).predict(x)


def test_bad_input_raises_before_compute(digits):
  x, _ = digits
  key = jax.random.key(0)
  cases = [
      (dict(x=x, k=0), "k: expected k >= 1"),
      (dict(x=x, k=len(x) + 1), "k: expected k <= n_samples"),
      (dict(x=x, k=2.0), "k: expected a Python int"),
      (dict(x=x[0], k=2), "x: expected a 2-D array"),
      (dict(x=np.where(np.arange(len(x))[:, None] == 5, np.nan, x), k=2),
       r"x: expected finite values, found NaN/Inf in 1 rows \(first: \[5\]\)"),
      (dict(x=np.where(np.arange(len(x))[:, None] == 2, np.inf, x), k=2),
       "x: expected finite values"),
      (dict(x=x, k=2, sample_weight=np.ones(3)), "sample_weight: expected shape"),
      (dict(x=x, k=2, sample_weight=-np.ones(len(x))),
       "sample_weight: expected non-negative"),
      (dict(x=x, k=2, init="kmeans"), "init: expected one of"),
      (dict(x=x, k=2, init=np.zeros((3, 64))), r"init: expected initial .* \(2, 64\)"),
      (dict(x=x, k=2, n_init=0), "n_init: expected an int >= 1"),
      (dict(x=x, k=2, max_iter=0), "max_iter: expected an int >= 1"),
      (dict(x=x, k=2, tol=-1.0), "tol: expected tol >= 0"),
      (dict(x=x, k=2, metric="l1"), "metric: expected one of"),
      (dict(x=x, k=2, dtype="int8"), "dtype: expected one of"),
      (dict(x=x, k=2, block_size=0), "block_size: expected an int >= 1"),
      (dict(x=x, k=2, plan="fast"), "plan: expected a kmeans.Plan"),
      (dict(x=x, k=2, plan=kmeans.Plan(64, sums="scatter")),
       "plan: expected sums in"),
      (dict(x=x, k=2, plan=kmeans.Plan(64, layout="bk", argmin="unrolled")),
       "plan: expected layout='kb' with argmin='unrolled'"),
      (dict(x=x, k=2, plan=kmeans.Plan(64, distance="direct")),
       "plan: expected layout='kb' and argmin='unrolled' with "
       "distance='direct'"),
      (dict(x=x, k=2, plan=kmeans.Plan(64, distance="direct",
                                       argmin="unrolled")),
       "plan: expected d <= 8 features with distance='direct', got 64"),
  ]
  size = fitting._fit_jit._cache_size()
  for kwargs, msg in cases:
    kwargs = dict(kwargs)
    with pytest.raises(ValueError, match=msg):
      kmeans.fit(key, kwargs.pop("x"), kwargs.pop("k"), **kwargs)
  assert fitting._fit_jit._cache_size() == size  # nothing was compiled
  with pytest.raises(ValueError, match="centroids: expected"):
    kmeans.predict(np.zeros((3, 5)), x)


# ----------------------------------------------------------------------------
# Topic clustering (the example of docs/guide/kmeans.md) and the CLI.

TOPICS = {
    "space": ["the rocket launched the satellite into orbit around the moon",
              "astronauts on the space station watched the satellite orbit",
              "the space telescope saw a distant galaxy beyond the moon",
              "a rocket will carry astronauts to the moon and into orbit",
              "the satellite orbit around the moon was stable in space",
              "a new galaxy was found by the space telescope in orbit",
              "the rocket and the satellite reached orbit in space"],
    "cooking": ["bake the bread in a hot oven with butter and flour",
                "the cake recipe needs flour sugar and butter in the oven",
                "simmer the soup with garlic onion and butter",
                "whisk the sugar and butter for the cake recipe",
                "fry the onion and garlic in butter for the soup recipe",
                "the oven bakes the cake and the bread with flour",
                "the recipe adds garlic and onion to the soup"],
    "football": ["the striker scored a goal in the final match of the league",
                 "the goalkeeper saved a penalty in the league match",
                 "the team won the league after a late goal by the striker",
                 "fans cheered as the team scored a goal in the final match",
                 "the coach praised the striker and the goalkeeper of the team",
                 "a penalty goal decided the league match for the team",
                 "the goalkeeper and the striker won the final for the team"],
}


def test_tfidf_topic_clustering_readme_example():
  from sklearn.feature_extraction.text import TfidfVectorizer
  from unsupjax.metrics import clustering
  docs = [d for ds in TOPICS.values() for d in ds]
  truth = np.repeat(np.arange(len(TOPICS)), 7)
  # --- README example ---
  vectorizer = TfidfVectorizer(stop_words="english")
  x = vectorizer.fit_transform(docs).toarray().astype(np.float32)
  res = kmeans.fit(jax.random.key(0), x, k=3, metric="cosine", n_init=10)
  terms = vectorizer.get_feature_names_out()
  top = {j: terms[np.argsort(-np.asarray(res.centroids[j]))[:5]].tolist()
         for j in range(3)}
  # ---
  assert clustering.clustering_accuracy(truth, np.asarray(res.labels)) == 1.0
  words = {"space": {"orbit", "rocket", "galaxy", "satellite", "telescope",
                     "moon", "space"},
           "cooking": {"oven", "bread", "sugar", "garlic", "onion", "butter",
                       "cake", "recipe"},
           "football": {"goal", "match", "striker", "penalty", "team",
                        "league", "goalkeeper", "final", "scored"}}
  mapping = clustering.matching(truth, np.asarray(res.labels))
  names = list(TOPICS)
  for cluster, topic in mapping.items():
    assert len(set(top[cluster][:3]) & words[names[topic]]) == 3, top


def _cli(argv):
  from unsupjax import cli
  return cli.main(argv)


def test_cli_dataset_writes_summary_and_centroids(tmp_path, capsys):
  import json
  rc = _cli(["kmeans", "--dataset", "digits", "--split", "test", "--k", "10",
             "--n-init", "3", "--workdir", str(tmp_path)])
  assert rc == 0
  out = capsys.readouterr().out
  assert "inertia" in out and "ACC" in out and "NMI" in out
  s = json.loads((tmp_path / "summary.json").read_text())
  assert s["n"] == 360 and s["d"] == 64 and sum(s["cluster_sizes"]) == 360
  # k-means on digits: ACC 0.6-0.9 depending on the restart.
  assert s["acc"] > 0.6 and s["nmi"] > 0.6 and s["ari"] > 0.45
  assert (tmp_path / "centroids.png").stat().st_size > 0
  # Same inertia as the library call with the same seed.
  from unsupjax import data
  x = data.load("digits", "test").flat()
  from unsupjax.rng import named, run_key
  ref = kmeans.fit(named(run_key(0), "kmeans"), x, 10, n_init=3)
  assert s["inertia"] == pytest.approx(float(ref.inertia), rel=1e-6)
  # run.json: what `unsupjax runs` lists, with the defaults filled in.
  record = json.loads((tmp_path / "run.json").read_text())
  assert record["model"] == "kmeans"
  assert record["config"]["dataset"] == "digits" and record["config"]["n_init"] == 3


def test_cli_csv_profile_assignments_and_missing_rows(tmp_path, capsys):
  rng = np.random.default_rng(0)
  lines = ["customer,age,spend,segment"]
  truth = []
  for i in range(40):
    g = i % 2
    age = 25 + 30 * g + rng.normal(0, 2)
    spend = 100 + 900 * g + rng.normal(0, 20)
    lines.append(f"c{i},{age:.1f},{spend:.1f},{'ab'[g]}")
    truth.append(g)
  lines[5] = "c4,,130.0,a"          # missing value: skipped and reported
  lines[9] = "c8,31.0,NA,a"
  path = tmp_path / "customers.csv"
  path.write_text("\n".join(lines) + "\n")
  rc = _cli(["kmeans", "--csv", str(path), "--columns", "age", "spend",
             "--k", "2", "--workdir", str(tmp_path / "run")])
  assert rc == 0
  out = capsys.readouterr().out
  assert "dropped 2 rows with missing values (lines 6, 10)" in out
  assert "| cluster | size | age | spend |" in out
  rows = np.loadtxt(tmp_path / "run" / "assignments.csv", delimiter=",",
                    skiprows=1, dtype=int)
  assert rows.shape == (38, 2) and 4 not in rows[:, 0] and 8 not in rows[:, 0]
  from unsupjax.metrics import clustering
  assert clustering.clustering_accuracy(np.array(truth)[rows[:, 0]],
                                        rows[:, 1]) == 1.0


def test_cli_npy_cosine(tmp_path):
  rng = np.random.default_rng(0)
  dirs = rng.normal(size=(3, 16))
  lab = np.repeat(np.arange(3), 20)
  x = (dirs[lab] + 0.1 * rng.normal(size=(60, 16))) * rng.uniform(1, 9, (60, 1))
  np.save(tmp_path / "emb.npy", x.astype(np.float32))
  rc = _cli(["kmeans", "--npy", str(tmp_path / "emb.npy"), "--k", "3",
             "--metric", "cosine", "--workdir", str(tmp_path / "run")])
  assert rc == 0
  rows = np.loadtxt(tmp_path / "run" / "assignments.csv", delimiter=",",
                    skiprows=1, dtype=int)
  from unsupjax.metrics import clustering
  assert clustering.clustering_accuracy(lab, rows[:, 1]) == 1.0


def test_cli_minibatch(tmp_path):
  import json
  rc = _cli(["kmeans", "--dataset", "digits", "--split", "test", "--k", "10",
             "--minibatch", "64", "--epochs", "5", "--workdir", str(tmp_path)])
  assert rc == 0
  s = json.loads((tmp_path / "summary.json").read_text())
  assert s["n_iter"] == 5 * (360 // 64) and s["acc"] > 0.5


@pytest.mark.parametrize("argv, msg", [
    (["--k", "0"], "--k: expected a positive integer, got 0"),
    (["--k", "5000"], "--k: expected at most 1437"),
    (["--n-init", "0"], "--n-init: expected a positive integer"),
    (["--tol", "-1"], "--tol: expected a number >= 0"),
    (["--columns", "a"], "--columns: only applies with --csv"),
    (["--epochs", "3"], "--epochs: only applies with --minibatch"),
    (["--minibatch", "4"], "--minibatch: expected at least --k = 8"),
    (["--npy", "/nonexistent.npy"], "--npy: expected an existing file"),
    (["--csv", "CSV", "--npy", "NPY"], "--npy: expected one data source"),
    (["--csv", "CSV", "--columns", "name"], "--columns: expected numeric"),
    (["--csv", "CSV", "--columns", "nope"], "--columns: nope not in"),
    (["--split", "validation"], "--split: digits has splits 'train', 'test' and 'all'"),
    (["--dataset", "digits", "--csv", "CSV"], "--csv: expected one data source"),
])
def test_cli_bad_arguments_exit_2(tmp_path, capsys, argv, msg):
  csv_path = tmp_path / "t.csv"
  csv_path.write_text("name,v\na,1\nb,2\n")
  npy_path = tmp_path / "t.npy"
  np.save(npy_path, np.zeros((3, 2), np.float32))
  argv = [str(csv_path) if a == "CSV" else str(npy_path) if a == "NPY" else a
          for a in argv]
  assert _cli(["kmeans", *argv, "--workdir", str(tmp_path / "run")]) == 2
  assert msg in capsys.readouterr().err
  assert not (tmp_path / "run" / "summary.json").exists()


def test_cli_workdir_holding_a_run_needs_overwrite(tmp_path, capsys):
  import json
  from unsupjax import runlog
  x = np.repeat(np.eye(3, dtype=np.float32), 4, axis=0)
  np.save(tmp_path / "a.npy", x)
  run = tmp_path / "run"
  assert _cli(["kmeans", "--npy", str(tmp_path / "a.npy"), "--k", "3",
               "--workdir", str(run)]) == 0
  first = (run / "summary.json").read_text()
  listed = runlog.read_run(run)
  assert listed.model == "kmeans" and listed.status == "finished"
  assert listed.config["npy"] == str(tmp_path / "a.npy") and listed.config["k"] == 3
  capsys.readouterr()
  # No data source (digits by default) does not silently replace the run.
  assert _cli(["kmeans", "--workdir", str(run)]) == 2
  assert (f"--workdir: {run} already holds a kmeans run; pass --overwrite to replace it"
          in capsys.readouterr().err)
  assert (run / "summary.json").read_text() == first
  # --overwrite replaces it, and removes what the new run does not write.
  (run / "centroids.png").write_bytes(b"from an earlier run on images")
  assert _cli(["kmeans", "--npy", str(tmp_path / "a.npy"), "--k", "3", "--seed", "1",
               "--overwrite", "--workdir", str(run)]) == 0
  assert json.loads((run / "run.json").read_text())["config"]["seed"] == 1
  assert json.loads((run / "summary.json").read_text())["seed"] == 1
  assert not (run / "centroids.png").exists()
  (run / "summary.json").write_text(first)
  # A bad argument with --overwrite leaves the old run alone.
  assert _cli(["kmeans", "--npy", str(tmp_path / "a.npy"), "--k", "99", "--overwrite",
               "--workdir", str(run)]) == 2
  assert (run / "summary.json").read_text() == first
  # A run of another command, or files no run record explains, are never replaced.
  other = tmp_path / "other"
  other.mkdir()
  (other / "run.json").write_text(json.dumps({"model": "ae", "config": {}}))
  (stray := tmp_path / "stray").mkdir()
  (stray / "assignments.csv").write_text("mine\n")
  capsys.readouterr()
  for d, what in ((other, "a run of 'ae'"), (stray, "assignments.csv of no known run")):
    assert _cli(["kmeans", "--npy", str(tmp_path / "a.npy"), "--k", "3", "--overwrite",
                 "--workdir", str(d)]) == 2
    assert f"--workdir: {d} holds {what}, not of 'kmeans'" in capsys.readouterr().err
  assert (stray / "assignments.csv").read_text() == "mine\n"


def test_cli_config_and_flags():
  import dataclasses
  from unsupjax.tasks import kmeans as task
  assert task.INITS == kmeans.INITS and task.METRICS == kmeans.METRICS
  assert task.COMMAND.name == "kmeans" and task.COMMAND.config is task.KMeansConfig
  with pytest.raises(ValueError, match="minibatch: expected at least --k = 8"):
    task.KMeansConfig(minibatch=4)
  with pytest.raises(ValueError, match="parallel: sharded k-means runs Lloyd's"):
    task.KMeansConfig(minibatch=64, parallel="sharded")
  cfg = task.resolve(task.KMeansConfig(init="random"))
  assert (cfg.dataset, cfg.n_init, cfg.epochs) == ("digits", 10, None)
  assert cfg.workdir == "runs/kmeans-digits"
  assert task.resolve(task.KMeansConfig(csv="x/t.csv")).workdir == "runs/kmeans-t"
  assert task.resolve(task.KMeansConfig(minibatch=64)).epochs == task.DEFAULT_EPOCHS
  assert {f.name for f in dataclasses.fields(cfg)} >= {"download", "overwrite", "seed"}
