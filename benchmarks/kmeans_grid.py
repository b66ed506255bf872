"""The speed map of benchmarks/kmeans_vs_sklearn.py: per-iteration Lloyd
time against scikit-learn on a grid of (n, d, k), the full default fit on
the same grid, the storage-dtype comparison, and the heat map.

Each cell: standard normal data (`kmeans_timing.noise_data`; the default
fit uses Gaussian blobs, `gaussian_data`), the same k
random rows as initial centres for both libraries, tol = 0, per-iteration
time (t(b) - t(a)) / (b - a) from interleaved runs (scikit-learn a,
unsupjax a, scikit-learn b, unsupjax b, repeated; the minimum of each), the
labels of both after b iterations compared, and the cell skipped when its
predicted time passes the budget or its data the memory cap.
"""

from __future__ import annotations

import math
import time

import jax
import jax.numpy as jnp
import numpy as np

import kmeans_timing as kt
from unsupjax import kmeans


def _sk_fit(x, init, m):
  from sklearn.cluster import KMeans
  est = KMeans(init.shape[0], init=init, n_init=1, max_iter=m, tol=0.0)
  t = time.perf_counter()
  est.fit(x)
  return time.perf_counter() - t, est


def _us_fit(xj, init, m, **kw):
  t = time.perf_counter()
  res = kmeans.fit(jax.random.key(0), xj, init.shape[0], init=init, tol=0.0,
                   max_iter=m, **kw)
  res.inertia.block_until_ready()
  return time.perf_counter() - t, res


def lloyd_cell(n, d, k, iters, reps, budget_s, max_data_gb,
               target_s: float = 0.3, **fit_kw):
  """One cell of the per-iteration map (a dict; 'skipped' says why).

  iters = (a, b): b is raised so the b - a extra iterations take about
  `target_s` of scikit-learn's time, and at least as long as its whole
  a-iteration fit (at most 300 iterations): the difference of two fit
  times stays well above timing noise in small cells, and above the
  variation of the set-up (centring and copying x) in large ones.
  """
  a, b = iters
  out = {"n": n, "d": d, "k": k}
  if n * d * 4 > max_data_gb * 2**30:
    out["skipped"] = f"data {n * d * 4 / 2**30:.1f} GB > {max_data_gb} GB"
    return out
  if k > n:
    out["skipped"] = "k > n"
    return out
  x = kt.noise_data(n, d)
  init = x[np.random.default_rng(1).choice(n, k, replace=False)].copy()
  t1, _ = _sk_fit(x, init, a)  # probes: the first call pays one-time costs
  t1, _ = _sk_fit(x, init, a)
  t2, est = _sk_fit(x, init, a + 4)
  its = est.n_iter_ - a
  per_iter = (t2 - t1) / its if its > 0 and t2 > t1 else t1 / a
  b = max(b, a + min(300, math.ceil(max(target_s, t1) / per_iter)))
  out["iters"] = [a, b]
  predicted = (2 * t1 + per_iter * (b - a)) * reps * 2.5
  if predicted > budget_s:
    out["skipped"] = f"predicted {predicted:.0f} s > {budget_s:.0f} s budget"
    return out
  xj = jnp.asarray(x)
  t = time.perf_counter()
  _us_fit(xj, init, a, **fit_kw)
  out["unsupjax_first_call_s"] = time.perf_counter() - t
  sk = {a: [], b: []}
  us = {a: [], b: []}
  ests, results = {}, {}
  for _ in range(reps):
    for m in (a, b):
      ts, ests[m] = _sk_fit(x, init, m)
      tu, results[m] = _us_fit(xj, init, m, **fit_kw)
      sk[m].append(ts)
      us[m].append(tu)
  est, res = ests[b], results[b]
  # Both stop early on unchanged labels (tol = 0 still has strict
  # convergence): count the iterations each actually ran.
  its_sk = est.n_iter_ - ests[a].n_iter_
  its_us = int(res.n_iter) - int(results[a].n_iter)
  out["sklearn_n_iter"] = int(est.n_iter_)
  out["unsupjax_n_iter"] = int(res.n_iter)
  if its_sk < 1 or its_us < 1:
    out["skipped"] = f"converged within {a} iterations"
    return out
  out["sklearn_s_per_iter"] = (min(sk[b]) - min(sk[a])) / its_sk
  out["unsupjax_s_per_iter"] = (min(us[b]) - min(us[a])) / its_us
  if min(out["sklearn_s_per_iter"], out["unsupjax_s_per_iter"]) <= 0:
    # the b - a iterations took less than the runs' timing noise
    out["skipped"] = "timing noise: t(b) <= t(a)"
    return out
  out["speedup"] = out["sklearn_s_per_iter"] / out["unsupjax_s_per_iter"]
  out["label_mismatches"] = int(np.sum(np.asarray(res.labels) != est.labels_))
  out["label_mismatches_at_a"] = int(np.sum(
      np.asarray(results[a].labels) != ests[a].labels_))
  out["inertia_rel_diff"] = float(res.inertia) / float(est.inertia_) - 1.0
  out["plan"] = kmeans.choose_plan(n, d, k)._asdict() if "plan" not in fit_kw \
      else fit_kw["plan"]._asdict()
  out["load"] = kt.load1()
  return out


def fit_cell(n, d, k, seeds, budget_s, max_data_gb):
  """Default fits, scikit-learn's `KMeans(k, random_state=s).fit(x)` and
  unsupjax's `KMeans(k, random_state=s).fit(x)`: mean time (unsupjax
  compiled first) and mean inertia over the seeds."""
  from sklearn.cluster import KMeans as SkKMeans
  out = {"n": n, "d": d, "k": k}
  if n * d * 4 > max_data_gb * 2**30:
    out["skipped"] = f"data {n * d * 4 / 2**30:.1f} GB > {max_data_gb} GB"
    return out
  # Before any fit: ~30 Lloyd iterations at 50 GFLOP/s per seed and library.
  rough = 2 * 30 * 2 * n * d * k / 50e9 * len(seeds)
  if rough > budget_s:
    out["skipped"] = f"predicted {rough:.0f} s > {budget_s:.0f} s budget"
    return out
  x = kt.gaussian_data(n, d)
  t = time.perf_counter()
  first = SkKMeans(k, random_state=seeds[0]).fit(x)
  t_first = time.perf_counter() - t
  if t_first * len(seeds) * 2.5 > budget_s:
    out["skipped"] = (f"predicted {t_first * len(seeds) * 2.5:.0f} s > "
                      f"{budget_s:.0f} s budget")
    return out
  xj = jnp.asarray(x)
  t = time.perf_counter()
  kmeans.KMeans(k, random_state=10**6).fit(xj)  # compile
  out["unsupjax_compile_s"] = time.perf_counter() - t
  sk_t, us_t, sk_i, us_i, sk_n, us_n = [], [], [], [], [], []
  for s in seeds:
    t = time.perf_counter()
    est = first if s == seeds[0] else SkKMeans(k, random_state=s).fit(x)
    sk_t.append(t_first if s == seeds[0] else time.perf_counter() - t)
    t = time.perf_counter()
    ours = kmeans.KMeans(k, random_state=s).fit(xj)
    us_t.append(time.perf_counter() - t)
    sk_i.append(est.inertia_)
    us_i.append(ours.inertia_)
    sk_n.append(est.n_iter_)
    us_n.append(ours.n_iter_)
  out.update(sklearn_s=float(np.mean(sk_t)), unsupjax_s=float(np.mean(us_t)),
             speedup=float(np.mean(sk_t) / np.mean(us_t)),
             sklearn_inertia=float(np.mean(sk_i)),
             unsupjax_inertia=float(np.mean(us_i)),
             inertia_ratio=float(np.mean(us_i) / np.mean(sk_i)),
             sklearn_n_iter=float(np.mean(sk_n)),
             unsupjax_n_iter=float(np.mean(us_n)), load=kt.load1())
  return out


def np_inertia(x: np.ndarray, c: np.ndarray, chunk: int = 8192) -> float:
  """float64 inertia of x under centres c (nearest centre, chunked)."""
  c = np.asarray(c, np.float64)
  total = 0.0
  for s in range(0, len(x), chunk):
    xb = x[s:s + chunk].astype(np.float64)
    d2 = ((xb * xb).sum(1)[:, None] - 2 * xb @ c.T + (c * c).sum(1)[None])
    total += float(np.maximum(d2.min(1), 0).sum())
  return total


def dtype_cell(n, d, k, iters, reps):
  """float32 against bfloat16/float16 storage: per-iteration time (same
  init and iterations) and the float64 inertia of each one's centroids on
  the float32 data, relative to float32's."""
  a, b = iters
  x = kt.noise_data(n, d)
  xj = jnp.asarray(x)
  init = x[np.random.default_rng(1).choice(n, k, replace=False)].copy()
  out = {"n": n, "d": d, "k": k}
  times = {}
  for dt in ("float32", "bfloat16", "float16"):
    (wall, _), _, res = kt.ours_per_iter(x, xj, init, a, b, reps, dtype=dt)
    times[dt] = wall
    out[f"{dt}_s_per_iter"] = wall
    out[f"{dt}_inertia"] = np_inertia(x, np.asarray(res.centroids))
    out[f"{dt}_labels"] = np.asarray(res.labels)
  for dt in ("bfloat16", "float16"):
    out[f"{dt}_speedup"] = times["float32"] / times[dt]
    out[f"{dt}_inertia_gap"] = out[f"{dt}_inertia"] / out["float32_inertia"] - 1
    out[f"{dt}_label_agreement"] = float(
        np.mean(out[f"{dt}_labels"] == out["float32_labels"]))
  for dt in ("float32", "bfloat16", "float16"):
    del out[f"{dt}_labels"]
  return out


def heat_map(cells, path, title):
  """d x k heat maps of the speed-up, one per n; the ratio in every cell,
  colours diverging at 1.0x (log scale), skipped cells grey."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  from matplotlib.colors import TwoSlopeNorm

  ns = sorted({c["n"] for c in cells})
  ds = sorted({c["d"] for c in cells})
  ks = sorted({c["k"] for c in cells})
  ratios = [c["speedup"] for c in cells if c.get("speedup", 0) > 0]
  lim = max(2.0, max((abs(math.log2(r)) for r in ratios), default=1.0))
  norm = TwoSlopeNorm(vcenter=0.0, vmin=-lim, vmax=lim)
  fig, axes = plt.subplots(1, len(ns), figsize=(4.6 * len(ns) + 1.2, 4.6),
                           squeeze=False, constrained_layout=True)
  for ax, n in zip(axes[0], ns):
    grid = np.full((len(ds), len(ks)), np.nan)
    for c in cells:
      if c["n"] == n and c.get("speedup", 0) > 0:
        grid[ds.index(c["d"]), ks.index(c["k"])] = math.log2(c["speedup"])
    ax.set_facecolor("#d9d9d9")
    im = ax.imshow(np.ma.masked_invalid(grid), cmap="RdBu", norm=norm,
                   aspect="auto", origin="lower")
    for i, d in enumerate(ds):
      for j, k in enumerate(ks):
        c = next((c for c in cells if (c["n"], c["d"], c["k"]) == (n, d, k)),
                 None)
        if c is None:
          continue
        if c.get("speedup", 0) > 0:
          txt = f"{c['speedup']:.1f}x" if c["speedup"] < 10 else \
              f"{c['speedup']:.0f}x"
          dark = abs(math.log2(c["speedup"])) > 0.6 * lim
          ax.text(j, i, txt, ha="center", va="center", fontsize=11,
                  color="white" if dark else "black")
        else:
          noise = c is not None and "noise" in c.get("skipped", "")
          ax.text(j, i, "noise" if noise else "skip", ha="center",
                  va="center", fontsize=9, color="#555555")
    ax.set_xticks(range(len(ks)), [str(k) for k in ks], fontsize=11)
    ax.set_yticks(range(len(ds)), [str(d) for d in ds], fontsize=11)
    ax.set_xlabel("k (clusters)", fontsize=12)
    ax.set_ylabel("d (features)", fontsize=12)
    ax.set_title(f"n = {n:,}", fontsize=13)
  ticks = [t for t in range(-int(lim), int(lim) + 1)]
  cb = fig.colorbar(im, ax=axes[0].tolist(), ticks=ticks, shrink=0.9)
  cb.ax.set_yticklabels([f"{2.0 ** t:g}x" for t in ticks], fontsize=10)
  cb.set_label("scikit-learn time / unsupjax time (higher: unsupjax faster)",
               fontsize=10)
  fig.suptitle(title, fontsize=12)
  tmp = path + ".tmp.png"
  fig.savefig(tmp, dpi=110)
  plt.close(fig)
  import os
  os.replace(tmp, path)
