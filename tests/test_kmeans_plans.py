"""Every layout plan the cost model can choose, forced, against scikit-learn
(labels, inertia, iterations) and NumPy float64 (one pass's labels,
distances and sums); the storage dtypes against scikit-learn on the rounded
data; the cost model's choices are valid plans."""

from __future__ import annotations

import itertools

import jax
import ml_dtypes
import numpy as np
import pytest
from sklearn import cluster as skc
from sklearn.datasets import make_blobs

from unsupjax import kmeans
from unsupjax.kmeans import lloyd, plan as plan_lib

HIGHEST = jax.lax.Precision.HIGHEST


@pytest.fixture(scope="module")
def blobs():
  x, _ = make_blobs(300, 3, centers=5, cluster_std=2.0, random_state=0)
  return x.astype(np.float32)


def _init(x, k, seed):
  rng = np.random.default_rng(seed)
  rows = x[rng.choice(len(x), k, replace=False)]
  return (rows + 0.01 * rng.normal(size=rows.shape)).astype(np.float32)


def _all_plans():
  """Every (distance, layout, argmin, sums) at 64-row blocks; tile 8, so
  k = 21 runs the tiled running minimum (3 tiles, 3 padded centres)."""
  forms = [("matmul", "kb", "reduce"), ("matmul", "bk", "reduce"),
           ("matmul", "kb", "unrolled"), ("direct", "kb", "unrolled")]
  return [kmeans.Plan(64, layout, distance, argmin, sums, tile=8)
          for (distance, layout, argmin), sums in itertools.product(
              forms, plan_lib.SUMS)]


def _p(distance, layout, argmin, sums):
  return kmeans.Plan(64, layout, distance, argmin, sums, tile=8)


# Each distance form and each sums method, in full Lloyd runs (a fit
# compiles in ~1 s, so not all 12 pairs; `assign_blocks` is checked for all
# pairs below). k = 21 > tile: tiled.
CASES = [(4, _p("matmul", "kb", "reduce", "onehot")),
         (4, _p("matmul", "bk", "reduce", "segment")),
         (4, _p("matmul", "kb", "unrolled", "after")),
         (4, _p("direct", "kb", "unrolled", "segment")),
         (21, _p("matmul", "kb", "unrolled", "onehot")),
         (21, _p("matmul", "kb", "unrolled", "segment")),
         (21, _p("direct", "kb", "unrolled", "after")),
         # one block: the 300 rows are padded to 2048 (`plan.bucket`)
         (4, kmeans.Plan(2048, "kb", "matmul", "reduce", "segment")),
         (4, kmeans.Plan(2048, "kb", "direct", "unrolled", "onehot"))]


@pytest.mark.parametrize("k, plan", CASES, ids=[
    f"k{k}-{p.distance}-{p.layout}-{p.argmin}-{p.sums}-b{p.block}"
    for k, p in CASES])
def test_forced_plan_matches_sklearn(blobs, k, plan):
  """300 rows, padded to 2048, in blocks of 64 or in one block, with
  weights."""
  x = blobs
  w = np.random.default_rng(k).uniform(0.5, 2.0, len(x)).astype(np.float32)
  init = _init(x, k, seed=k)
  ref = skc.KMeans(k, init=init.astype(np.float64), n_init=1).fit(
      x.astype(np.float64), sample_weight=w.astype(np.float64))
  res = kmeans.fit(jax.random.key(0), x, k, init=init, sample_weight=w,
                   plan=plan)
  np.testing.assert_array_equal(np.asarray(res.labels), ref.labels_)
  np.testing.assert_allclose(float(res.inertia), ref.inertia_, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(res.centroids), ref.cluster_centers_,
                             rtol=1e-4, atol=1e-5)
  assert int(res.n_iter) == ref.n_iter_


def test_one_pass_of_every_plan_against_numpy(blobs):
  """`assign_blocks`: labels, squared distances and weighted sums of one
  pass, for every plan at k = 21 (tiled), against NumPy float64."""
  k = 21
  x = blobs - blobs.mean(0)
  c = _init(x, k, seed=k + 1)
  w = np.random.default_rng(k).uniform(0.0, 2.0, len(x)).astype(np.float32)
  blocks = lloyd.to_blocks(x, w, 64)
  d2 = ((x.astype(np.float64)[:, None] - c.astype(np.float64)[None]) ** 2
        ).sum(-1)
  lab_ref = d2.argmin(1)
  member = np.eye(k)[lab_ref] * w[:, None]
  for plan in _all_plans():
    lab, mind, sums, counts = jax.jit(
        lambda b, c, plan=plan: lloyd.assign_blocks(
            b, c, plan, with_sums=True, precision=HIGHEST))(blocks, c)
    np.testing.assert_array_equal(np.asarray(lab).reshape(-1)[:len(x)],
                                  lab_ref, err_msg=str(plan))
    # float32 expansion: absolute error ~ eps * (|x|^2 + |c|^2) ~ 1e-5.
    np.testing.assert_allclose(np.asarray(mind).reshape(-1)[:len(x)],
                               d2.min(1), rtol=1e-5, atol=1e-4,
                               err_msg=str(plan))
    np.testing.assert_allclose(np.asarray(sums), member.T @ x, rtol=1e-5,
                               atol=1e-5, err_msg=str(plan))
    np.testing.assert_allclose(np.asarray(counts), member.sum(0), rtol=1e-6,
                               err_msg=str(plan))


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_storage_matches_sklearn_on_rounded_data(blobs, dtype):
  """dtype stores the centred x rounded to 16 bits: the fit equals
  scikit-learn's (float64) on that rounded data from the same start."""
  x = blobs * 10.0
  k = 6
  init = _init(x, k, seed=3)
  mean = x.mean(0)
  storage = {"bfloat16": ml_dtypes.bfloat16, "float16": np.float16}[dtype]
  rounded = (x - mean).astype(storage).astype(np.float64)
  ref = skc.KMeans(k, init=(init - mean).astype(np.float64), n_init=1).fit(
      rounded)
  res = kmeans.fit(jax.random.key(0), x, k, init=init, dtype=dtype)
  np.testing.assert_array_equal(np.asarray(res.labels), ref.labels_)
  np.testing.assert_allclose(float(res.inertia), ref.inertia_, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(res.centroids) - mean,
                             ref.cluster_centers_, rtol=1e-4, atol=1e-4)
  assert res.centroids.dtype == np.float32


GRID = list(itertools.product((10**4, 10**5, 10**6), (2, 8, 32, 128, 784),
                              (3, 10, 30, 100, 1000)))


def test_chosen_plans_are_valid_and_cheapest_candidates():
  for n, d, k in GRID:
    plan = kmeans.choose_plan(n, d, k, backend="cpu")
    plan_lib.check_plan(plan)
    assert 1 <= plan.block <= n
    assert plan.distance == "matmul" or d <= plan_lib.DIRECT_MAX_D
    costs = [plan_lib.plan_cost(p, n, d, k)
             for p in plan_lib.candidate_plans(n, d, k)]
    assert plan_lib.plan_cost(plan, n, d, k) == min(costs)
  assert kmeans.choose_plan(10**4, 8, 5, block_size=77).block == 77
  assert kmeans.default_block_size(10**4, 8, 5) == kmeans.choose_plan(
      10**4, 8, 5).block


def test_one_block_candidate_only_while_its_distances_fit():
  """All rows as one block is weighed while its distances fit in
  ONE_BLOCK_BYTES; past that, only blocks sized to BLOCK_BYTES."""
  fits = plan_lib.ONE_BLOCK_BYTES // (4 * 10)
  assert {p.block for p in plan_lib.candidate_plans(fits, 32, 10)} >= {fits}
  too_big = fits + 8
  blocks = {p.block for p in plan_lib.candidate_plans(too_big, 32, 10)}
  assert max(blocks) <= plan_lib.MAX_BLOCK
  # vmapped restarts hold their distances at once
  blocks = {p.block for p in plan_lib.candidate_plans(fits, 32, 10, 2)}
  assert max(blocks) <= plan_lib.MAX_BLOCK


def test_plan_counts_count_the_work():
  """The cost model's unit counts for a tiled pass with one-hot sums."""
  p = kmeans.Plan(100, "kb", "matmul", "unrolled", "onehot", tile=8)
  c = plan_lib.plan_counts(p, 1000, 3, 21)
  assert plan_lib.padded_k(21, p) == 24
  assert c["step"] == 10 and c["tile"] == 10 * 3
  assert c["flop"] == 1000 * 24 * 3 + 1000 * 21 * 3
  assert c["unrolled"] == 1000 * 24 and c["onehot"] == 1000 * 21
  assert c["scatter"] == 0
