"""N2D below 4,096 rows: UMAP on the neighbours `manifold_cluster` hands it
against UMAP finding them itself, on digits' autoencoder-sized embedding
(PCA to 10 dimensions). Prints the largest difference of the fuzzy graphs
and of the embeddings (0 and 0: the same UMAP), and the seconds of each
fit in this process. Handed runs first: its first fit compiles the numba
functions both paths share, UMAP's own then compiles only its neighbour
search; the second seed has both warm.

  JAX_PLATFORMS=cpu PYTHONPATH=. python benchmarks/n2d_neighbours.py
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--neighbors", type=int, default=20)
  p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
  a = p.parse_args()
  from sklearn.datasets import load_digits
  from sklearn.decomposition import PCA
  t = time.perf_counter()
  import umap
  print(f"import umap: {time.perf_counter() - t:.1f} s")
  from unsupjax import deep_clustering as dc
  z = PCA(10, random_state=0).fit_transform(load_digits().data).astype(np.float32)
  print("| seed | path | fit s | graph max diff | embedding max diff |")
  print("|---|---|---|---|---|")
  for seed in a.seeds:
    fits = {}
    for path in ("handed", "umap's own"):
      kw = {} if path == "umap's own" else {
          "precomputed_knn": dc._exact_neighbours(z, a.neighbors)}
      t = time.perf_counter()
      with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = umap.UMAP(n_components=10, n_neighbors=a.neighbors, min_dist=0.0,
                      metric="euclidean", random_state=seed, **kw).fit(z)
      fits[path] = (r, time.perf_counter() - t)
    (own, t_own), (handed, t_handed) = fits["umap's own"], fits["handed"]
    g = abs(own.graph_.tocsr() - handed.graph_.tocsr()).max()
    e = np.abs(own.embedding_ - handed.embedding_).max()
    print(f"| {seed} | handed | {t_handed:.1f} | | |")
    print(f"| {seed} | umap's own | {t_own:.1f} | {g:.3g} | {e:.3g} |")


if __name__ == "__main__":
  main()
