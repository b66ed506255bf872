"""The real-vs-real floor of unsupjax's MNIST metrics, and what they cost.

Computes, with the shipped MNIST feature net, FID / KID / precision, recall,
density, coverage between real MNIST sets (train vs test split, and two
disjoint halves of train at the sample sizes a GAN evaluation uses), so a
generator's numbers can be read against the best a perfect generator could
get. Beside each on-device metric it runs a float64 NumPy/SciPy baseline in
the same process (FID with `scipy.linalg.sqrtm`, KID on the same subsets)
and reports both values and the time ratio; it also reports the feature
extraction throughput as a fraction of this machine's measured f32 matmul
peak. Finally it scores train[:10k] after small, seeded changes a reader
would barely see (pixel noise, a Gaussian blur, a one-pixel shift,
quantisation) against the test split, so a generator's FID can be read as
"as far from the test digits as real digits blurred by ...".

  nice -n 10 python benchmarks/fid_floor.py [--data-dir ../shared/data/tfds]
      [--json PATH]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import _bench  # noqa: E402

_bench.reexec_without_blas_throttles()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import scipy.linalg  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from unsupjax import data  # noqa: E402
from unsupjax.metrics import features as F  # noqa: E402
from unsupjax.metrics import fid as fidlib  # noqa: E402
from unsupjax.metrics import prdc as prdclib  # noqa: E402


def timed(fn, reps=3):
  """(median seconds, last result) of fn() ended by block_until_ready."""
  times, out = [], None
  for _ in range(reps):
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return statistics.median(times), out


def net_macs_per_image() -> int:
  """Multiply-adds of one MnistNet forward pass to the features, counted
  from the layer shapes (XLA's cost analysis reports no conv FLOPs on GPU)."""
  h = w = 28
  c_in, macs = 1, 0
  for width, size in ((32, 5), (64, 3), (64, 3)):
    h, w = -(-h // 2), -(-w // 2)  # stride 2, SAME padding
    macs += h * w * size * size * c_in * width
    c_in = width
  return macs + h * w * c_in * F.FEATURE_DIM


def scipy_fid(x: np.ndarray, y: np.ndarray) -> float:
  x, y = x.astype(np.float64), y.astype(np.float64)
  mu1, mu2 = x.mean(0), y.mean(0)
  s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
  covmean = scipy.linalg.sqrtm(s1 @ s2)
  if not np.all(np.isfinite(covmean)):  # the usual ε fix of the reference
    eps = 1e-6 * np.eye(len(s1))
    covmean = scipy.linalg.sqrtm((s1 + eps) @ (s2 + eps))
  diff = mu1 - mu2
  return float(diff @ diff + np.trace(s1) + np.trace(s2)
               - 2 * np.trace(np.real(covmean)))


def numpy_kid(x, y, idx1, idx2) -> tuple[float, float]:
  d = x.shape[1]
  vals = []
  for a, b in zip(idx1, idx2):
    xa, yb = x[a].astype(np.float64), y[b].astype(np.float64)
    m = len(a)
    kxx = (xa @ xa.T / d + 1) ** 3
    kyy = (yb @ yb.T / d + 1) ** 3
    kxy = (xa @ yb.T / d + 1) ** 3
    vals.append((kxx.sum() - np.trace(kxx)) / (m * (m - 1))
                + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                - 2 * kxy.mean())
  return float(np.mean(vals)), float(np.std(vals))


def perturbed(x: np.ndarray, seed: int = 0) -> list[tuple[str, np.ndarray]]:
  """(description, images in [0, 1]) of `x` (f32[n, 28, 28, 1]) slightly changed."""
  import scipy.ndimage
  rng = np.random.default_rng(seed)
  out = [("unchanged", x)]
  for s in (0.02, 0.05, 0.1, 0.2):
    out.append((f"Gaussian noise, sigma {s}, clipped",
                np.clip(x + s * rng.standard_normal(x.shape, np.float32), 0, 1)))
  for s in (0.5, 0.75, 1.0):
    out.append((f"Gaussian blur, sigma {s} px", scipy.ndimage.gaussian_filter(
        x, sigma=(0, s, s, 0), mode="constant")))
  shifted = np.zeros_like(x)
  shifted[:, :, 1:] = x[:, :, :-1]
  out.append(("shifted 1 px right", shifted))
  out.append(("quantised to 4 grey levels", np.round(x * 3) / 3))
  out.append(("binarised at 0.5", (x > 0.5).astype(np.float32)))
  return [(name, np.asarray(img, np.float32)) for name, img in out]


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--data-dir", default=str(REPO.parent / "shared/data/tfds"))
  p.add_argument("--json", default=None, help="also write results here")
  p.add_argument("--kid-subsets", type=int, default=100)
  p.add_argument("--kid-subset-size", type=int, default=1000)
  p.add_argument("--prdc-n", type=int, default=10000)
  args = p.parse_args(argv)

  info = dict(_bench.machine(), blas=_bench.blas_info())
  peak = _bench.matmul_peak_flops()
  train = data.load("mnist", "train", data_dir=args.data_dir)
  test = data.load("mnist", "test", data_dir=args.data_dir)
  net = F.load_feature_net()

  # Feature extraction throughput; FLOPs from XLA's cost analysis.
  xb = jnp.asarray(train.x[:10000])
  feat_fn = lambda: F.features(xb, net)
  jax.block_until_ready(feat_fn())
  t_feat, _ = timed(feat_fn)
  flops = 2 * net_macs_per_image() * xb.shape[0]
  ftrain = np.asarray(F.features(train.x, net))
  ftest = np.asarray(F.features(test.x, net))
  n_half = len(ftest)
  fa, fb = ftrain[:n_half], ftrain[n_half:2 * n_half]

  rows, results = [], dict(machine=info, matmul_peak_flops=peak,
                           feature_net_sha256=net.sha256)
  results["feature_extraction"] = dict(
      images=int(xb.shape[0]), seconds=t_feat,
      images_per_s=xb.shape[0] / t_feat, flops=flops,
      pct_of_peak=100 * flops / t_feat / peak)

  # FID: ours (float64 algebra, float32 device stats), ours all-float32,
  # and the SciPy float64 reference, each on the same features.
  for name, x, y in (("train (60k) vs test (10k)", ftrain, ftest),
                     ("train[:10k] vs train[10k:20k]", fa, fb),
                     ("train[:10k] vs test (10k)", fa, ftest)):
    xj, yj = jnp.asarray(x), jnp.asarray(y)
    fid64 = lambda: fidlib.fid(xj, yj)
    fid32 = lambda: fidlib.fid(xj, yj, precision="float32")
    jax.block_until_ready(fid64()), jax.block_until_ready(fid32())
    t64, v64 = timed(fid64)
    t32, v32 = timed(fid32)
    tref, vref = timed(lambda: scipy_fid(x, y))
    rows.append((f"FID {name}", f"{float(v64):.4f}",
                 f"{float(v32):.4f} (f32)", f"{vref:.4f}",
                 f"{t64 * 1e3:.1f} / {tref * 1e3:.1f} ms",
                 f"{tref / t64:.1f}x"))
    lam = max(np.linalg.eigvalsh(np.cov(a.astype(np.float64), rowvar=False))[-1]
              for a in (x, y))
    bound = 2 * x.shape[1] * np.sqrt(np.finfo(np.float32).eps * lam)
    results[f"fid {name}"] = dict(
        fid=float(v64), fid_float32=float(v32), fid_scipy=vref,
        abs_err_float32=abs(float(v32) - vref), float32_bound=float(bound),
        rel_err_float32=abs(float(v32) - vref) / vref,
        rel_err_float64=abs(float(v64) - vref) / vref,
        seconds=t64, seconds_float32=t32, seconds_scipy=tref)

  key = jax.random.key(0)
  s, m = args.kid_subsets, args.kid_subset_size
  xj, yj = jnp.asarray(ftrain), jnp.asarray(ftest)
  kid_fn = lambda: fidlib.kid(xj, yj, key, num_subsets=s, subset_size=m)
  jax.block_until_ready(kid_fn())
  t_kid, (kmean, kstd) = timed(kid_fn)
  i1, i2 = fidlib.kid_subset_indices(key, len(ftrain), len(ftest), s, m)
  i1, i2 = np.asarray(i1), np.asarray(i2)
  t_kref, (rmean, rstd) = timed(lambda: numpy_kid(ftrain, ftest, i1, i2), 1)
  rows.append(("KID train vs test", f"{float(kmean):.2e} ± {float(kstd):.1e}",
               "", f"{rmean:.2e} ± {rstd:.1e}",
               f"{t_kid * 1e3:.0f} / {t_kref * 1e3:.0f} ms",
               f"{t_kref / t_kid:.1f}x"))
  results["kid train vs test"] = dict(
      mean=float(kmean), std=float(kstd), mean_numpy=rmean, std_numpy=rstd,
      num_subsets=s, subset_size=m, seconds=t_kid, seconds_numpy=t_kref)

  n = min(args.prdc_n, len(ftest))
  pr_fn = lambda: prdclib.prdc(jnp.asarray(ftrain[:n]), jnp.asarray(ftest[:n]))
  jax.block_until_ready(pr_fn())
  t_pr, pr = timed(pr_fn, 1)
  rows.append((f"P/R/D/C train[:{n}] vs test[:{n}], k=5",
               " / ".join(f"{float(v):.3f}" for v in pr), "", "",
               f"{t_pr * 1e3:.0f} ms", ""))
  results["prdc"] = dict(n=n, k=5, seconds=t_pr,
                         **{k: float(v) for k, v in pr._asdict().items()})

  # How far small changes to real digits move FID (10k vs the test split).
  sens_rows = []
  for name, imgs in perturbed(np.asarray(train.x[:n_half], np.float32)):
    f = F.features(imgs, net)
    v = float(fidlib.fid(f, jnp.asarray(ftest)))
    conf = float(jnp.mean(jnp.max(F.class_probs(imgs, net), axis=-1)))
    sens_rows.append((name, f"{v:.4f}", f"{v / results['fid train[:10k] vs test (10k)']['fid']:.1f}x",
                      f"{conf:.4f}"))
    results.setdefault("perturbed train[:10k] vs test (10k)", {})[name] = dict(
        fid=v, confidence=conf)

  print(f"Machine: {info['cores']} cores, {info['cpu']}, JAX {info['jax']} "
        f"backend {info['backend']} ({info['device']}); BLAS: {info['blas']}")
  print(f"f32 matmul peak (2048^3 jnp.dot): {peak / 1e9:.1f} GFLOP/s")
  fe = results["feature_extraction"]
  print(f"Feature extraction: {fe['images_per_s']:.0f} images/s "
        f"({fe['flops'] / xb.shape[0] / 1e6:.2f} MFLOP/image, "
        f"{fe['pct_of_peak']:.1f}% of the f32 matmul peak)")
  print(f"Feature net SHA-256: {net.sha256}")
  for k, v in results.items():
    if k.startswith("fid "):
      print(f"{k}: float32-path error {v['abs_err_float32']:.2e}, bound "
            f"2 d sqrt(eps32 lambda_max) = {v['float32_bound']:.2e}")
  print()
  print("| metric (MNIST, real vs real) | unsupjax | | SciPy/NumPy float64 "
        "| time unsupjax / reference | speed-up |")
  print("|---|---|---|---|---|---|")
  for r in rows:
    print("| " + " | ".join(r) + " |")
  print()
  print("| train[:10k], changed, vs test (10k) | FID | x the floor | confidence |")
  print("|---|---|---|---|")
  for r in sens_rows:
    print("| " + " | ".join(r) + " |")
  _bench.write_json(args.json, results)
  return 0


if __name__ == "__main__":
  sys.exit(main())
