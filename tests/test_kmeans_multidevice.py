"""Sharded k-means on 8 fake CPU devices equals the single-device result.

The check runs in a subprocess that sets
XLA_FLAGS=--xla_force_host_platform_device_count=8 before importing JAX, so
the rest of the suite keeps one device.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
  import jax, numpy as np
  from sklearn.datasets import make_blobs
  from unsupjax import kmeans

  assert jax.device_count() == 8, jax.devices()
  mesh = jax.make_mesh((8,), ("data",))
  # 1003 rows: not a multiple of 8 devices or of the block size.
  x, _ = make_blobs(1003, 5, centers=7, cluster_std=2.0, random_state=0)
  x = x.astype(np.float32)
  w = np.random.default_rng(0).uniform(0.5, 2.0, len(x)).astype(np.float32)
  init = x[:7].copy()
  init[6] = 100.0   # far from the data: starts empty, must be relocated
  tiled = kmeans.Plan(64, "kb", "matmul", "unrolled", "after", tile=4)
  cases = [dict(init=init), dict(init=init, sample_weight=w),
           dict(init="k-means++", n_init=2), dict(init=init, max_iter=3),
           dict(init=init, metric="cosine"), dict(init=init, plan=tiled)]
  for kw in cases:
    one = kmeans.fit(jax.random.key(1), x, 7, block_size=64, **kw)
    many = kmeans.fit_sharded(jax.random.key(1), x, 7, mesh=mesh,
                              block_size=16, **kw)
    name = {k: (v if isinstance(v, (str, int, tuple)) else "array")
            for k, v in kw.items()}
    np.testing.assert_array_equal(np.asarray(one.labels),
                                  np.asarray(many.labels), err_msg=str(name))
    np.testing.assert_allclose(np.asarray(one.centroids),
                               np.asarray(many.centroids), rtol=1e-5,
                               atol=1e-5, err_msg=str(name))
    np.testing.assert_allclose(float(one.inertia), float(many.inertia),
                               rtol=1e-5, err_msg=str(name))
    assert int(one.n_iter) == int(many.n_iter), name
    assert bool(one.converged) == bool(many.converged), name
    print("ok", name, int(one.n_iter))
  # A classic Mesh (auto axis types) works too.
  auto = jax.sharding.Mesh(np.array(jax.devices()), ("rows",))
  res = kmeans.fit_sharded(jax.random.key(1), x, 7, mesh=auto, init=init,
                           block_size=16)
  np.testing.assert_array_equal(np.asarray(res.labels), np.asarray(
      kmeans.fit(jax.random.key(1), x, 7, init=init).labels))
  print("ok auto mesh")
""")


@pytest.mark.slow
def test_sharded_fit_equals_single_device():
  from conftest import fake_devices_env
  env = fake_devices_env(8)
  proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, cwd=ROOT,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  assert proc.stdout.count("ok") == 7
