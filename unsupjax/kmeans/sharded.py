"""Rows of x over the devices of a mesh: placement and the `shard_map`ped
Lloyd run behind `fit_sharded`.

Offers `place` (a sharding constraint or reshard, for auto and explicit mesh
axes) and `run_sharded` (each device runs Lloyd on its own row blocks; sums,
counts, label changes and the inertia are `psum`-reduced over the axis).
Does not validate inputs or draw initial centres (`fitting.py` does).
"""

from __future__ import annotations

from typing import Callable

import jax
from jax import lax
from jax.sharding import PartitionSpec as P

from unsupjax.kmeans.lloyd import Blocks, KMeansResult

Array = jax.Array


def place(a: Array, mesh: jax.sharding.Mesh, spec: P) -> Array:
  """`a` constrained to `spec` on `mesh`, for explicit and auto mesh axes."""
  sharding = jax.sharding.NamedSharding(mesh, spec)
  explicit = jax.sharding.AxisType.Explicit in tuple(
      getattr(mesh, "axis_types", ()))
  if explicit:
    return jax.sharding.reshard(a, sharding)
  return lax.with_sharding_constraint(a, sharding)


def run_sharded(runs: Callable, blocks: Blocks, c0: Array, tol_abs: Array,
                max_iter: Array, mesh: jax.sharding.Mesh, axis_name: str
                ) -> KMeansResult:
  """`runs(blocks, c0, tol_abs, max_iter, axis_name)` on every device's row
  blocks (blocks' leading axis is split over `axis_name`); returns the
  restarts' results with labels gathered: labels i32[r, nb, B]."""
  rows = P(axis_name)
  blocks = jax.tree.map(lambda a: place(a, mesh, rows), blocks)
  c0, tol_abs, max_iter = (place(a, mesh, P()) for a in (c0, tol_abs, max_iter))

  def local(b, c0, t, m):
    return runs(b, c0, t, m, axis_name)

  res = jax.shard_map(
      local, mesh=mesh,
      in_specs=(Blocks(rows, rows, rows, rows), P(), P(), P()),
      out_specs=KMeansResult(P(), P(None, axis_name), P(), P(), P()),
      check_vma=False)(blocks, c0, tol_abs, max_iter)
  return res._replace(labels=place(res.labels, mesh, P()))
