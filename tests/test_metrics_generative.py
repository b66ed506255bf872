"""Tests of unsupjax.metrics.{fid, prdc, modes, features} against references."""

from __future__ import annotations

import pathlib
import shutil

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from scipy.spatial.distance import cdist

from unsupjax.metrics import features as F
from unsupjax.metrics import fid as fidlib
from unsupjax.metrics import modes
from unsupjax.metrics import prdc as prdclib

from conftest import shared_mnist_dir


# ----------------------------------------------------------------- helpers

def _random_cov(rng, d, rank=None, scale=1.0):
  a = rng.normal(size=(d, rank or d)) * scale
  return a @ a.T / (rank or d)


def _scipy_fd(mu1, s1, mu2, s2):
  """The classic reference: tr sqrtm(Σ1 Σ2) with scipy, in float64."""
  covmean = scipy.linalg.sqrtm(s1 @ s2)
  covmean = np.real(covmean)
  diff = mu1 - mu2
  return float(diff @ diff + np.trace(s1) + np.trace(s2)
               - 2 * np.trace(covmean))


# ---------------------------------------------------------------------- FID

def test_fid_of_a_set_with_itself_is_zero():
  x = np.random.default_rng(0).normal(size=(500, 16)).astype(np.float32) * 3
  value = float(fidlib.fid(x, x))
  scale = 2 * 9 * 16  # tr Σ1 + tr Σ2
  assert abs(value) < 1e-5 * scale


def test_frechet_distance_matches_closed_form_for_commuting_gaussians():
  # Σ1 = Q diag(a) Qᵀ and Σ2 = Q diag(b) Qᵀ commute, so
  # FID = ‖μ1 − μ2‖² + Σ_i (√a_i − √b_i)². Some a_i, b_i are 0 (singular).
  rng = np.random.default_rng(1)
  d = 12
  q, _ = np.linalg.qr(rng.normal(size=(d, d)))
  a = rng.uniform(0.1, 4.0, d)
  b = rng.uniform(0.1, 4.0, d)
  a[:3] = 0.0
  b[2:5] = 0.0
  mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
  s1, s2 = (q * a) @ q.T, (q * b) @ q.T
  want = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
  got = float(fidlib.frechet_distance(mu1, s1, mu2, s2))
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_fid_of_samples_matches_numpy_stats_and_closed_form():
  # Samples of two 1-D-per-axis Gaussians: FID of the samples equals the
  # float64 FID of their sample stats, and is near the population value.
  rng = np.random.default_rng(2)
  n, d = 20000, 4
  x = rng.normal(0.0, 1.0, size=(n, d)).astype(np.float32)
  y = rng.normal(0.5, 2.0, size=(n, d)).astype(np.float32)
  got = float(fidlib.fid(x, y))
  x64, y64 = x.astype(np.float64), y.astype(np.float64)
  ref = _scipy_fd(x64.mean(0), np.cov(x64, rowvar=False),
                  y64.mean(0), np.cov(y64, rowvar=False))
  np.testing.assert_allclose(got, ref, rtol=1e-4)
  population = d * 0.5 ** 2 + d * (1.0 - 2.0) ** 2
  np.testing.assert_allclose(got, population, rtol=0.05)


@pytest.mark.parametrize("rank1,rank2", [(None, None), (5, None), (5, 7),
                                         (3, 3)])
@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_frechet_distance_matches_scipy_sqrtm(rank1, rank2, precision):
  rng = np.random.default_rng(hash((rank1, rank2)) % 2**32)
  d = 16
  s1 = _random_cov(rng, d, rank1, scale=2.0)
  s2 = _random_cov(rng, d, rank2)
  mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
  want = _scipy_fd(mu1, s1, mu2, s2)
  got = float(fidlib.frechet_distance(mu1, s1, mu2, s2, precision=precision))
  np.testing.assert_allclose(got, want, rtol=1e-3)


def test_frechet_distance_under_jit_uses_float64_algebra():
  rng = np.random.default_rng(3)
  d = 16
  s1, s2 = _random_cov(rng, d, 4), _random_cov(rng, d)
  mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
  f32 = lambda a: jnp.asarray(a, jnp.float32)
  jitted = jax.jit(fidlib.frechet_distance)
  got = float(jitted(f32(mu1), f32(s1), f32(mu2), f32(s2)))
  want = float(fidlib.frechet_distance(*(np.float32(a).astype(np.float64)
                                         for a in (mu1, s1, mu2, s2))))
  np.testing.assert_allclose(got, want, rtol=1e-6)


def test_frechet_distance_on_device_in_float64_when_x64_is_on():
  rng = np.random.default_rng(31)
  d = 16
  s1, s2 = _random_cov(rng, d, 6), _random_cov(rng, d, 6)
  mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
  want = _scipy_fd(mu1, s1, mu2, s2)
  with jax.enable_x64(True):
    got = jax.jit(fidlib.frechet_distance)(mu1, s1, mu2, s2)
    assert got.dtype == jnp.float64
    x = rng.normal(size=(200, d))
    shifted = fidlib.fid(x, x + 0.5)
    assert shifted.dtype == jnp.float64
  np.testing.assert_allclose(float(got), want, rtol=1e-3)
  # A pure shift: FID = ‖shift‖², exactly up to float64 round-off.
  np.testing.assert_allclose(float(shifted), d * 0.25, rtol=1e-9)


def test_gaussian_stats_matches_numpy():
  x = np.random.default_rng(4).normal(3.0, 2.0, size=(300, 7))
  mu, sigma = fidlib.gaussian_stats(x.astype(np.float32))
  chex.assert_shape(mu, (7,))
  chex.assert_shape(sigma, (7, 7))
  np.testing.assert_allclose(mu, x.mean(0), rtol=1e-5)
  np.testing.assert_allclose(sigma, np.cov(x, rowvar=False), rtol=1e-4,
                             atol=1e-5)


# ---------------------------------------------------------------------- KID

def _numpy_mmd2(x, y):
  x, y = x.astype(np.float64), y.astype(np.float64)
  d = x.shape[1]
  k = lambda a, b: (a @ b.T / d + 1.0) ** 3
  m, n = len(x), len(y)
  kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
  return ((kxx.sum() - np.trace(kxx)) / (m * (m - 1))
          + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
          - 2 * kxy.mean())


def test_mmd2_unbiased_matches_numpy():
  rng = np.random.default_rng(5)
  x = rng.normal(size=(60, 5)).astype(np.float32)
  y = rng.normal(0.3, 1.2, size=(45, 5)).astype(np.float32)
  np.testing.assert_allclose(float(fidlib.mmd2_unbiased(x, y)),
                             _numpy_mmd2(x, y), rtol=1e-4)


def test_kid_is_mean_and_std_of_mmd2_over_keyed_subsets():
  rng = np.random.default_rng(6)
  x = rng.normal(size=(300, 6)).astype(np.float32)
  y = rng.normal(0.2, 1.0, size=(250, 6)).astype(np.float32)
  key = jax.random.key(7)
  mean, std = fidlib.kid(x, y, key, num_subsets=8, subset_size=50)
  i1, i2 = fidlib.kid_subset_indices(key, 300, 250, 8, 50)
  i1, i2 = np.asarray(i1), np.asarray(i2)
  assert all(len(set(row)) == 50 for row in i1)  # without replacement
  ref = np.array([_numpy_mmd2(x[a], y[b]) for a, b in zip(i1, i2)])
  np.testing.assert_allclose(float(mean), ref.mean(), rtol=1e-4)
  np.testing.assert_allclose(float(std), ref.std(), rtol=1e-3)
  # Same key, same answer; another key, another answer.
  again = fidlib.kid(x, y, key, num_subsets=8, subset_size=50)
  assert float(again[0]) == float(mean)
  other = fidlib.kid(x, y, jax.random.key(8), num_subsets=8, subset_size=50)
  assert float(other[0]) != float(mean)


def test_kid_is_unbiased_for_two_samples_of_one_distribution():
  # Independent pools from N(0, I): the unbiased estimate averages to ~0,
  # while the biased (V-statistic) estimate sits clearly above 0.
  rng = np.random.default_rng(9)
  x = rng.normal(size=(20000, 4)).astype(np.float32)
  y = rng.normal(size=(20000, 4)).astype(np.float32)
  m, subsets = 50, 200
  mean, std = fidlib.kid(x, y, jax.random.key(10), num_subsets=subsets,
                         subset_size=m)
  stderr = float(std) / np.sqrt(subsets)
  assert abs(float(mean)) < 4 * stderr
  # The biased estimator's offset: (E k(x,x) − E k(x,y)) · 2/m, estimated.
  xs = x[:2000].astype(np.float64)
  kxx_diag = ((np.sum(xs * xs, 1) / 4 + 1) ** 3).mean()
  kxy = ((xs[:1000] @ xs[1000:].T / 4 + 1) ** 3).mean()
  bias = 2 * (kxx_diag - kxy) / m
  assert abs(float(mean)) < 0.1 * bias


# --------------------------------------------------------------------- PRDC

def _numpy_prdc(real, fake, k):
  real, fake = real.astype(np.float64), fake.astype(np.float64)
  r_real = np.sort(cdist(real, real), axis=1)[:, k]
  r_fake = np.sort(cdist(fake, fake), axis=1)[:, k]
  d = cdist(real, fake)  # [N, M]
  fake_in_real_ball = d <= r_real[:, None]
  real_in_fake_ball = d <= r_fake[None, :]
  return dict(
      precision=fake_in_real_ball.any(axis=0).mean(),
      recall=real_in_fake_ball.any(axis=1).mean(),
      density=fake_in_real_ball.sum() / (k * fake.shape[0]),
      coverage=fake_in_real_ball.any(axis=1).mean())


@pytest.mark.parametrize("block_size", [1024, 7])
def test_prdc_matches_brute_force_numpy(block_size):
  rng = np.random.default_rng(11)
  real = rng.normal(size=(150, 5)).astype(np.float32) + 10.0
  fake = (rng.normal(size=(110, 5)) * 1.3 + 10.4).astype(np.float32)
  k = 5
  got = prdclib.prdc(real, fake, k, block_size=block_size)
  want = _numpy_prdc(real, fake, k)
  for name, value in want.items():
    # A membership flip from float32 rounding at a ball's boundary would
    # move a fraction by one sample; none happens at this seed.
    np.testing.assert_allclose(float(getattr(got, name)), value, atol=1e-6,
                               err_msg=name)


def test_prdc_blockwise_equals_single_block_and_jits():
  rng = np.random.default_rng(12)
  real = rng.normal(size=(97, 3)).astype(np.float32)
  fake = rng.normal(size=(61, 3)).astype(np.float32)
  one = prdclib.prdc(real, fake, 3)
  jitted = jax.jit(prdclib.prdc, static_argnames=("k", "block_size"))
  many = jitted(real, fake, k=3, block_size=10)
  chex.assert_trees_all_close(tuple(one), tuple(many))


def test_prdc_never_holds_an_n_by_n_matrix():
  # Compiled (not run) for N = M = 8192: XLA's own accounting of the
  # program's scratch memory stays far below one N x N float32 matrix.
  n = 8192
  spec = jax.ShapeDtypeStruct((n, 16), jnp.float32)
  compiled = prdclib._prdc.lower(spec, spec, k=5, block_size=256).compile()
  temp = compiled.memory_analysis().temp_size_in_bytes
  assert temp < n * n * 4 / 50  # measured: 2.1 MB vs 268 MB


def test_collapsed_generator_has_high_precision_and_low_recall():
  rng = np.random.default_rng(13)
  centres = rng.normal(size=(10, 8)) * 10
  real = (centres[rng.integers(0, 10, 1000)]
          + rng.normal(size=(1000, 8))).astype(np.float32)
  # The generator produces good samples of mode 0 only.
  fake = (centres[0] + rng.normal(size=(1000, 8))).astype(np.float32)
  got = prdclib.prdc(real, fake, 5)
  assert float(got.precision) > 0.9
  assert float(got.recall) < 0.2
  assert float(got.coverage) < 0.2
  # And a good generator has both high.
  good = (centres[rng.integers(0, 10, 1000)]
          + rng.normal(size=(1000, 8))).astype(np.float32)
  got = prdclib.prdc(real, good, 5)
  assert float(got.precision) > 0.9 and float(got.recall) > 0.9


# -------------------------------------------------------------------- modes

def test_mode_centres_have_the_documented_geometry():
  c, sigma = modes.RING8
  chex.assert_shape(c, (8, 2))
  assert c.dtype == np.float32 and sigma == 0.01
  np.testing.assert_allclose(np.linalg.norm(c, axis=1), 1.0, rtol=1e-6)
  np.testing.assert_allclose(c[2], [0.0, 1.0], atol=1e-6)  # angle 2π·2/8
  c, sigma = modes.GRID25
  chex.assert_shape(c, (25, 2))
  assert sigma == 0.05
  np.testing.assert_array_equal(c[0], [-4, -4])
  np.testing.assert_array_equal(c[5 * 3 + 1], [2, -2])
  assert sorted(set(c[:, 0].tolist())) == [-4, -2, 0, 2, 4]


def test_all_samples_on_one_mode_cover_one_mode():
  c, sigma = modes.GRID25
  rng = np.random.default_rng(14)
  x = c[7] + rng.normal(size=(2500, 2)) * sigma
  got = modes.mode_stats(x, c, sigma)
  assert int(got.modes_covered) == 1
  assert int(got.counts[7]) == int(np.sum(got.counts))
  # Within 3σ: about 98.9% of a 2-D Gaussian's mass (1 − e^{−9/2}).
  np.testing.assert_allclose(float(got.hq_fraction), 1 - np.exp(-4.5),
                             atol=0.01)
  np.testing.assert_allclose(float(got.reverse_kl), np.log(25), rtol=1e-5)


def test_uniform_samples_over_all_modes_cover_all_with_zero_rkl():
  for c, sigma in (modes.RING8, modes.GRID25):
    k = len(c)
    rng = np.random.default_rng(k)
    x = np.repeat(c, 100, axis=0) + rng.normal(size=(100 * k, 2)) * sigma / 10
    got = modes.mode_stats(x, c, sigma)
    assert int(got.modes_covered) == k
    assert float(got.hq_fraction) == 1.0
    assert abs(float(got.reverse_kl)) < 1e-6
    summary = got.summary()
    assert summary["modes_covered"] == k and summary["hq_fraction"] == 1.0
    assert set(summary) == {"modes_covered", "hq_fraction", "reverse_kl"}
  assert modes.MODE_SETS["ring8"] is modes.RING8


def test_mode_stats_matches_a_hand_count():
  c, sigma = modes.RING8
  x = np.array([
      c[0], c[0] + [0.02, 0.0],        # mode 0, both HQ (2σ)
      c[1] + [0.0, 0.029],             # mode 1, HQ (2.9σ)
      c[2] + [0.031, 0.0],             # mode 2, not HQ (3.1σ)
      [0.0, 0.0],                      # far from every mode
  ], np.float32)
  got = modes.mode_stats(x, c, sigma)
  np.testing.assert_array_equal(got.counts, [2, 1, 0, 0, 0, 0, 0, 0])
  assert int(got.modes_covered) == 2
  np.testing.assert_allclose(float(got.hq_fraction), 3 / 5)
  p = np.array([2 / 3, 1 / 3])
  np.testing.assert_allclose(float(got.reverse_kl), np.sum(p * np.log(p * 8)),
                             rtol=1e-5)
  none = modes.mode_stats(np.zeros((3, 2), np.float32), c, sigma)
  assert int(none.modes_covered) == 0 and np.isinf(float(none.reverse_kl))


def test_mode_stats_jits():
  c, sigma = modes.RING8
  x = np.repeat(c, 3, axis=0)
  f = jax.jit(lambda s: modes.mode_stats(s, c, sigma))
  assert int(f(x).modes_covered) == 8


def test_stacked_mnist_stats():
  rng = np.random.default_rng(15)
  every = np.stack(np.meshgrid(*[np.arange(10)] * 3, indexing="ij"),
                   -1).reshape(-1, 3)
  got = modes.stacked_mnist_stats(np.concatenate([every] * 26))
  assert int(got.modes_covered) == 1000
  assert abs(float(got.reverse_kl)) < 1e-6
  digits = rng.integers(0, 10, size=(26000, 3))
  digits[:, 0] = 3  # only 100 modes reachable
  got = modes.stacked_mnist_stats(digits)
  ids = digits[:, 0] * 100 + digits[:, 1] * 10 + digits[:, 2]
  counts = np.bincount(ids, minlength=1000)
  p = counts / counts.sum()
  nz = p > 0
  assert int(got.modes_covered) == nz.sum() == 100
  np.testing.assert_array_equal(got.counts, counts)
  np.testing.assert_allclose(float(got.reverse_kl),
                             np.sum(p[nz] * np.log(p[nz] * 1000)), rtol=1e-4)


def test_digit_kl_and_the_stacked_kl_decomposition():
  """digit_kl against NumPy histograms; the Stacked-MNIST KL equals their
  sum plus the total correlation, and dependent channels with uniform
  digits have digit_kl 0 but a positive KL."""
  rng = np.random.default_rng(16)
  digits = np.stack([rng.choice(10, 26000, p=np.r_[0.3, [0.7 / 9] * 9]),
                     rng.integers(0, 10, 26000), rng.integers(0, 10, 26000)], 1)
  digits[:5000, 2] = digits[:5000, 1]  # some dependence between channels
  got = np.asarray(modes.digit_kl(digits))
  kl = lambda q: np.sum(q[q > 0] * np.log(q[q > 0] * len(q)))
  counts = [np.bincount(digits[:, c], minlength=10) for c in range(3)]
  np.testing.assert_array_equal(modes.digit_counts(digits), counts)
  hists = [h / 26000 for h in counts]
  np.testing.assert_allclose(got, [kl(h) for h in hists], rtol=1e-4)
  assert got[0] > 0.1 and got[1] < 0.01
  joint = np.bincount(digits @ [100, 10, 1], minlength=1000) / 26000
  product = np.einsum("i,j,k->ijk", *hists).ravel()
  nz = joint > 0
  tc = np.sum(joint[nz] * np.log(joint[nz] / product[nz]))
  np.testing.assert_allclose(float(modes.stacked_mnist_stats(digits).reverse_kl),
                             got.sum() + tc, rtol=1e-4)
  every = np.stack(np.meshgrid(*[np.arange(10)] * 3, indexing="ij"), -1).reshape(-1, 3)
  tied = np.repeat(every[:, :1], 3, axis=1)  # all three channels the same digit
  np.testing.assert_allclose(np.asarray(modes.digit_kl(tied)), 0.0, atol=1e-6)
  assert float(modes.stacked_mnist_stats(tied).reverse_kl) == pytest.approx(np.log(100), rel=1e-5)
  with pytest.raises(ValueError, match="digits: expected i32"):
    modes.digit_kl(np.zeros((4, 2), np.int32))


# ------------------------------------------------------------ feature net

@pytest.fixture(scope="module")
def net():
  return F.load_feature_net()


def test_shipped_weights_match_their_checksum(net):
  assert net.sha256 == F.FEATURE_NET_SHA256 == F.file_sha256(
      F.default_weights_path())
  size = pathlib.Path(F.default_weights_path()).stat().st_size
  assert size < 600_000


def test_corrupted_weights_raise(tmp_path):
  bad = tmp_path / "mnist_features.msgpack"
  shutil.copy(F.default_weights_path(), bad)
  blob = bytearray(bad.read_bytes())
  blob[len(blob) // 2] ^= 0x01
  bad.write_bytes(bytes(blob))
  with pytest.raises(F.ChecksumError, match="SHA-256"):
    F.load_feature_net(bad)
  with pytest.raises(ValueError):  # ChecksumError is a ValueError
    F.load_feature_net(bad)
  with pytest.raises(FileNotFoundError):
    F.load_feature_net(tmp_path / "missing.msgpack")


def test_feature_shapes_and_per_channel_stacking(net):
  rng = np.random.default_rng(16)
  x = rng.uniform(size=(7, 28, 28, 3)).astype(np.float32)
  feats = F.features(x, net, batch_size=4)
  chex.assert_shape(feats, (7, 3 * F.FEATURE_DIM))
  for c in range(3):
    one = F.features(x[..., c:c + 1], net)
    chex.assert_shape(one, (7, F.FEATURE_DIM))
    np.testing.assert_allclose(
        feats[:, c * F.FEATURE_DIM:(c + 1) * F.FEATURE_DIM], one,
        rtol=1e-5, atol=1e-5)
  probs = F.class_probs(x, net)
  chex.assert_shape(probs, (7, 3, 10))
  np.testing.assert_allclose(np.sum(probs, -1), 1.0, rtol=1e-5)
  chex.assert_shape(F.predict_digits(x, net), (7, 3))


def test_feature_net_accuracy_on_mnist_test(net):
  from unsupjax import data
  test = data.load("mnist", "test", data_dir=str(shared_mnist_dir()))
  x, y = test.x[:5000], test.y[:5000]
  acc = float(np.mean(np.asarray(F.predict_digits(x, net)) == y))
  assert acc >= 0.99
  # Stacked MNIST: three real digits per image are read back as the triple.
  stacked = np.concatenate([x[:300], x[300:600], x[600:900]], axis=-1)
  digits = np.asarray(F.predict_digits(stacked, net))
  truth = np.stack([y[:300], y[300:600], y[600:900]], axis=1)
  assert np.mean(np.all(digits == truth, axis=1)) >= 0.96


def _numpy_inception_score(p, splits):
  m = len(p) // splits
  scores = []
  for s in range(splits):
    part = p[s * m:(s + 1) * m].astype(np.float64)
    marginal = part.mean(0)
    with np.errstate(divide="ignore", invalid="ignore"):
      kl = np.where(part > 0, part * (np.log(part) - np.log(marginal)), 0)
    scores.append(np.exp(kl.sum(1).mean()))
  return np.mean(scores), np.std(scores)


def test_inception_score():
  rng = np.random.default_rng(17)
  logits = rng.normal(size=(103, 10)) * 3
  p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
  mean, std = F.inception_score(p.astype(np.float32), num_splits=4)
  ref = _numpy_inception_score(p, 4)
  np.testing.assert_allclose([float(mean), float(std)], ref, rtol=1e-4)
  uniform = np.full((50, 10), 0.1, np.float32)
  np.testing.assert_allclose(float(F.inception_score(uniform, 5)[0]), 1.0,
                             rtol=1e-5)
  confident = np.eye(10, dtype=np.float32)[np.arange(100) % 10]
  np.testing.assert_allclose(float(F.inception_score(confident, 5)[0]), 10.0,
                             rtol=1e-5)


# ----------------------------------------------------------------- bad input

def test_bad_input_raises_clear_value_errors():
  x = np.zeros((20, 4), np.float32)
  y = np.zeros((20, 5), np.float32)
  nan = x.copy()
  nan[3, 1] = np.nan
  key = jax.random.key(0)
  with pytest.raises(ValueError, match="features2: expected the same"):
    fidlib.fid(x, y)
  with pytest.raises(ValueError, match="features1: expected finite"):
    fidlib.fid(nan, x)
  with pytest.raises(ValueError, match="features: expected features"):
    fidlib.gaussian_stats(x[0])
  with pytest.raises(ValueError, match="sigma2: expected shape"):
    fidlib.frechet_distance(x[0], np.eye(4), x[0], np.eye(3))
  with pytest.raises(ValueError, match="precision"):
    fidlib.frechet_distance(x[0], np.eye(4), x[0], np.eye(4),
                            precision="float16")
  with pytest.raises(ValueError, match="features2: expected the same"):
    fidlib.kid(x, y, key)
  with pytest.raises(ValueError, match="subset_size"):
    fidlib.kid(x, x, key, subset_size=21)
  with pytest.raises(ValueError, match="fake_features: expected the same"):
    prdclib.prdc(x, y)
  with pytest.raises(ValueError, match="real_features: expected more than k"):
    prdclib.prdc(x[:5], x, k=5)
  with pytest.raises(ValueError, match="fake_features: expected finite"):
    prdclib.prdc(x, nan)
  with pytest.raises(ValueError, match="k: expected"):
    prdclib.prdc(x, x, k=0)
  with pytest.raises(ValueError, match="centres: expected"):
    modes.mode_stats(x, modes.RING8.centres, 0.01)
  with pytest.raises(ValueError, match="samples: expected finite"):
    modes.mode_stats(nan[:, :2], *modes.RING8)
  with pytest.raises(ValueError, match="sigma"):
    modes.mode_stats(x[:, :2], modes.RING8.centres, -1.0)
  with pytest.raises(ValueError, match="digits: expected values in 0..9"):
    modes.stacked_mnist_stats(np.full((4, 3), 10))
  with pytest.raises(ValueError, match="digits: expected i32"):
    modes.stacked_mnist_stats(np.zeros((4, 2), np.int32))
  with pytest.raises(ValueError, match="num_splits"):
    F.inception_score(np.full((3, 10), 0.1), num_splits=4)


def test_bad_images_raise_before_loading_the_net():
  with pytest.raises(ValueError, match=r"images: expected f32\[n, 28, 28, 1\]"):
    F.features(np.zeros((2, 28, 28, 2), np.float32))
  with pytest.raises(ValueError, match=r"\(x \+ 1\) / 2"):
    F.features(np.full((2, 28, 28, 1), -1.0, np.float32))
  bad = np.zeros((2, 28, 28, 1), np.float32)
  bad[0, 0, 0, 0] = np.nan
  with pytest.raises(ValueError, match="images: expected finite"):
    F.class_probs(bad)


# ------------------------------------------------------------ image report

@pytest.fixture(scope="module")
def mnist_test_images():
  from unsupjax import data
  ds = data.load("mnist", "test", data_dir=str(shared_mnist_dir()), download=False)
  return ds.x[:1500], ds.y[:1500]


@pytest.mark.slow
def test_image_report_tells_real_from_collapsed(mnist_test_images):
  """Against 500 real test digits: 500 other real digits score FID near the
  floor, IS near 10 and high precision and recall; 500 copies of one digit
  score a large FID, IS ~1, recall ~0 and precision high (not the reverse)."""
  from unsupjax.metrics import report
  x, _ = mnist_test_images
  real, other = x[:500], x[500:1000]
  collapsed = np.repeat(x[1000:1001], 500, axis=0)
  good = report.image_report(real, other, jax.random.PRNGKey(0))
  bad = report.image_report(real, collapsed, jax.random.PRNGKey(0))
  assert good["fid"] < 1.0 < 10 * good["fid"] < bad["fid"]
  assert good["inception_score"] > 8 and bad["inception_score"] < 1.1
  assert good["recall"] > 0.8 and good["precision"] > 0.8
  assert bad["recall"] < 0.05 and bad["precision"] > 0.5
  assert abs(good["kid"]) < bad["kid"]
  # Two digits of different classes blended are ambiguous to the classifier.
  _, y = mnist_test_images
  a = np.flatnonzero(y == 0)[:100]
  b = np.flatnonzero(y == 1)[:100]
  blend = 0.5 * (x[a] + x[b])
  ambiguous = report.image_report(real, blend, jax.random.PRNGKey(0))
  assert good["confidence"] > 0.97 and ambiguous["confidence"] < 0.85  # measured 0.70
  # The features can be passed in, for scoring many sample sets cheaply.
  again = report.image_report(None, other, jax.random.PRNGKey(0),
                              real_features=F.features(real))
  assert again["fid"] == pytest.approx(good["fid"], rel=1e-5)


@pytest.mark.slow
def test_image_report_counts_stacked_mnist_modes(mnist_test_images):
  """Random triples of real digits cover about as many of the 1,000 modes as
  500 uniform draws do (1000 * (1 - (1 - 1/1000)^500) = 394, less for
  misclassified and unbalanced digits); one repeated triple covers 1."""
  from unsupjax.metrics import report
  x, y = mnist_test_images
  idx = np.random.default_rng(0).integers(0, len(x), size=(1000, 3))
  stacked = np.concatenate([x[idx[:, c]] for c in range(3)], axis=-1)
  r = report.image_report(stacked[:500], stacked[500:], jax.random.PRNGKey(1))
  truth = len(set(map(tuple, y[idx[500:]])))
  assert abs(r["modes_covered"] - truth) <= 15 and truth > 330
  # Confidence averages the channels, each classified as a 1-channel image.
  per_channel = [F.class_probs(x[idx[500:, c]]).max(-1) for c in range(3)]
  assert r["confidence"] == pytest.approx(float(np.mean(per_channel)), rel=1e-5)
  one = report.image_report(stacked[:500], np.repeat(stacked[:1], 500, 0), jax.random.PRNGKey(1))
  assert one["modes_covered"] == 1 and one["reverse_kl"] == pytest.approx(np.log(1000), rel=1e-4)
  with pytest.raises(ValueError, match="28, 28"):
    report.image_report(stacked[:10], np.zeros((10, 8, 8, 1), np.float32), jax.random.PRNGKey(0))
