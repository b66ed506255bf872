"""How a Lloyd pass is laid out (`Plan`) and the cost model that picks one
from n, d and k (`choose_plan`).

A plan fixes: the rows per block; the distance form (a matmul on centred
x, or the direct sum of (x - c)^2 for few features); the distance layout,
(k, block) or (block, k); how the nearest centre is found (one argmin
reduction, or a running minimum unrolled over tiles of centres); and how
per-cluster sums are formed (one-hot matmul or `segment_sum` per block, or
one `segment_sum` over all rows after the pass). Every plan gives the same
labels. Also `bucket`/`pad_to`: the padded shape small inputs compile
for. Does not run anything; the constants in `CPU_COSTS` come from
`benchmarks/kmeans_calibrate.py` (docs/results/kmeans.md has the runs).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

LAYOUTS = ("kb", "bk")
DISTANCES = ("matmul", "direct")
ARGMINS = ("reduce", "unrolled")
SUMS = ("onehot", "segment", "after")


class Plan(NamedTuple):
  """Static layout of one Lloyd pass (hashable: a jit static argument).

  block: rows per block. layout: "kb" lays distances out (k, block), "bk"
  (block, k). distance: "matmul" (||c||^2 - 2 x.c) or "direct" (sum of
  (x - c)^2, elementwise, unrolled over d <= DIRECT_MAX_D; layout "kb",
  argmin "unrolled"). argmin: "reduce" (XLA's argmin) or "unrolled" (a
  running minimum over the centres, unrolled; layout "kb"; above `tile`
  centres, one tile at a time under `lax.scan`).
  sums: "onehot" (a (k, block) @ (block, d) matmul per block), "segment"
  (`segment_sum` per block) or "after" (one `segment_sum` over all rows).
  """
  block: int
  layout: str = "kb"
  distance: str = "matmul"
  argmin: str = "reduce"
  sums: str = "segment"
  tile: int = 128


# The direct form is unrolled over the features: only for few of them.
DIRECT_MAX_D = 8
# Untiled, XLA:CPU recomputes the fused direct distances for each consumer
# (labels, sums): slower than the matmul from ~30 centres on; tiled (more
# than `tile` centres) it is computed once per tile.
DIRECT_UNTILED_MAX_K = 10
# Centres per unrolled tile: the unrolled minimum slows down past it.
TILE = 128

# Seconds per counted unit on XLA:CPU (`plan_counts` names the units),
# fitted by benchmarks/kmeans_calibrate.py; docs/results/kmeans.md has the run.
CPU_COSTS = {
    "iter": 0,               # one iteration's fixed work (update, checks)
    "row": 1.32e-09,         # per-row work of any plan (labels, norms)
    "step": 4.48e-06,        # one block (scan step) of fixed overhead
    "step_sums": 3.63e-06,   # per block, for sums formed inside the block
    "flop": 8.61e-12,        # one multiply-add of a skinny matmul
    "dist_kb": 1.23e-10,     # writing and reading one distance, (k, B)
    "dist_bk": 0,            # the same, (B, k)
    "reduce_fast_kb": 6.6e-11,  # argmin reduction per distance, k' <= 24
    "reduce_fast_bk": 4.56e-10,
    "reduce_slow_kb": 1.49e-09,  # argmin reduction per distance above
    "reduce_slow_bk": 1.52e-09,
    "unrolled": 1.2e-10,     # unrolled running minimum per distance
    "tile": 1e-05,           # one centre tile of one block
    "direct": 1.64e-12,      # direct form per (row, centre, feature)
    "onehot": 7.09e-10,      # one one-hot entry
    "scatter": 2.12e-10,     # segment_sum per added element
    "scatter_row": 0,        # segment_sum per row
    "read": 6.49e-11,        # re-reading one element of x ("after")
    "xcopy": 5.85e-10,       # copying one element of x out of the scan
    "spill": 7.93e-11,       # per distance or x element of a block past cache
}
# XLA:CPU's argmin reduction is fast up to this many entries per row
# (LLVM unrolls it); past it the loop runs serially.
REDUCE_FAST_MAX_K = 24
# A block's distances (and, for fused sums, its rows) within this many bytes
# stay in cache; the candidate blocks target these sizes.
CACHE_BYTES = 1 << 23
BLOCK_BYTES = (1 << 18, 1 << 20, 1 << 22, 1 << 24)
MIN_BLOCK, MAX_BLOCK = 128, 1 << 17
# All rows as one block is a candidate too while its distances fit in this
# many bytes: one block runs without the scan, so without copying blocks
# out of x.
ONE_BLOCK_BYTES = 1 << 26
GPU_BLOCK_BYTES = 1 << 27  # ~128 MiB of distances per block on GPU


def padded_k(k: int, plan: Plan) -> int:
  """Centres the pass computes distances to: k, or with tiles a multiple of
  the tile (extra centres at +inf distance)."""
  if plan.argmin != "unrolled" or k <= plan.tile:
    return k
  return -(-k // plan.tile) * plan.tile


def even_blocks(n: int, target: int) -> int:
  """The block size near `target` that cuts n rows into equal blocks (up to
  rounding to 8 rows), so padding wastes little work."""
  nb = -(-n // max(1, min(target, n)))
  b = -(-n // nb)
  return -(-b // 8) * 8 if b > 8 else b


def _held(kp: int, plan: Plan) -> int:
  """Distances per row a block holds at once: a tile's, when tiled."""
  return min(kp, plan.tile) if plan.argmin == "unrolled" else kp


def _row_bytes(d: int, held: int, sums: str) -> int:
  return 4 * (held + (d if sums != "after" else 0))


def plan_counts(plan: Plan, n: int, d: int, k: int) -> dict[str, float]:
  """How many of each `CPU_COSTS` unit one Lloyd pass with sums runs."""
  kp = padded_k(k, plan)
  nb = -(-n // plan.block)
  rows = nb * plan.block
  c = dict.fromkeys(CPU_COSTS, 0.0)
  c["iter"], c["row"], c["step"] = 1.0, rows, nb
  if nb > 1:  # one block runs without the scan, so without the copy
    c["xcopy"] = rows * d
  if plan.sums != "after":
    c["step_sums"] = nb
  if plan.distance == "direct":
    c["direct"] = rows * kp * d
    c["unrolled"] = rows * kp
    if kp > plan.tile:
      c["tile"] = nb * (kp // plan.tile)
  else:
    c["flop"] = rows * kp * d
    c["dist_" + plan.layout] = rows * kp
    if plan.argmin == "unrolled":
      c["unrolled"] = rows * kp
      if kp > plan.tile:
        c["tile"] = nb * (kp // plan.tile)
    else:
      speed = "fast" if kp <= REDUCE_FAST_MAX_K else "slow"
      c[f"reduce_{speed}_{plan.layout}"] = rows * kp
  if plan.sums == "onehot":
    c["flop"] += rows * k * d
    c["onehot"] = rows * k
  else:
    c["scatter"] = rows * d
    c["scatter_row"] = rows
    if plan.sums == "after":
      c["read"] = rows * d
  held = _held(kp, plan)
  if plan.block * _row_bytes(d, held, plan.sums) > CACHE_BYTES:
    c["spill"] = rows * (held + (d if plan.sums != "after" else 0))
  return c


def plan_cost(plan: Plan, n: int, d: int, k: int, costs=None) -> float:
  """Predicted seconds of one Lloyd pass with sums on XLA:CPU."""
  costs = CPU_COSTS if costs is None else costs
  return sum(v * costs[u] for u, v in plan_counts(plan, n, d, k).items())


def candidate_plans(n: int, d: int, k: int, restarts: int = 1) -> list[Plan]:
  """Every plan the cost model weighs for (n, d, k) on CPU: each distance
  form, layout, argmin and sums method, at blocks of BLOCK_BYTES, and all
  n rows as one block while the distances of its `restarts` (vmapped
  `n_init`) fit in ONE_BLOCK_BYTES."""
  forms = [("matmul", "kb", "reduce"), ("matmul", "bk", "reduce"),
           ("matmul", "kb", "unrolled")]
  if d <= DIRECT_MAX_D and (k <= DIRECT_UNTILED_MAX_K or k > TILE):
    forms.append(("direct", "kb", "unrolled"))
  out = []
  for sums in SUMS:
    for distance, layout, argmin in forms:
      p = Plan(0, layout, distance, argmin, sums, TILE)
      held = _held(padded_k(k, p), p)
      per_row = _row_bytes(d, held, sums)
      blocks = {even_blocks(n, min(MAX_BLOCK, max(MIN_BLOCK, b // per_row)))
                for b in BLOCK_BYTES}
      if 4 * n * held * restarts <= ONE_BLOCK_BYTES:
        blocks.add(n)
      out += [p._replace(block=b) for b in sorted(blocks)]
  return out


def choose_plan(n: int, d: int, k: int, backend: str | None = None,
                block_size: int | None = None, costs=None,
                restarts: int = 1) -> Plan:
  """The plan the cost model predicts fastest for n rows (per device), d
  features and k centres, run for `restarts` vmapped restarts at once
  (they bound the one-block candidate's memory); `block_size` overrides
  its block."""
  backend = backend or jax.default_backend()
  if backend != "cpu":  # few large blocks; XLA's GPU/TPU reductions are fine
    b = max(4096, GPU_BLOCK_BYTES // (4 * max(k, 1)))
    plan = Plan(even_blocks(n, b), "bk", "matmul", "reduce", "segment")
  else:
    plan = min(candidate_plans(n, d, k, restarts),
               key=lambda p: plan_cost(p, n, d, k, costs))
  if block_size is not None:
    plan = plan._replace(block=int(block_size))
  return plan


def default_block_size(n: int, d: int, k: int, backend: str | None = None) -> int:
  """Rows per distance block of the plan `choose_plan` picks."""
  return choose_plan(n, d, k, backend).block


def check_plan(plan: Plan) -> None:
  """Raises ValueError naming the bad field of a user-given plan."""
  if not isinstance(plan, Plan):
    raise ValueError(f"plan: expected a kmeans.Plan, got {plan!r}")
  if not isinstance(plan.block, int) or plan.block < 1:
    raise ValueError(f"plan: expected block >= 1, got {plan.block!r}")
  for field, allowed in (("layout", LAYOUTS), ("distance", DISTANCES),
                         ("argmin", ARGMINS), ("sums", SUMS)):
    if getattr(plan, field) not in allowed:
      raise ValueError(f"plan: expected {field} in {allowed}, got "
                       f"{getattr(plan, field)!r}")
  if plan.argmin == "unrolled" and plan.layout != "kb":
    raise ValueError("plan: expected layout='kb' with argmin='unrolled'")
  if plan.distance == "direct" and (plan.layout, plan.argmin) != (
      "kb", "unrolled"):
    raise ValueError("plan: expected layout='kb' and argmin='unrolled' with "
                     "distance='direct'")
  if not isinstance(plan.tile, int) or not 1 <= plan.tile <= 4 * TILE:
    raise ValueError(f"plan: expected 1 <= tile <= {4 * TILE}, got "
                     f"{plan.tile!r}")


# Data this small is padded to one shape (zero rows of weight 0, zero
# columns), so fits of small arrays of any size share one compilation.
SMALL_ROWS = 2048
SMALL_COLS = (8, 16, 32, 64, 128, 256)


def bucket(n: int, d: int) -> tuple[int, int]:
  """The padded (rows, columns) `fit` compiles for n x d data."""
  if n > SMALL_ROWS:
    return n, d
  return SMALL_ROWS, next((c for c in SMALL_COLS if c >= d), d)


def pad_to(a, rows: int, cols: int) -> jax.Array:
  """f32 a [r, c] with zero rows and columns appended to [rows, cols]."""
  a = jnp.asarray(a, jnp.float32)
  if a.shape == (rows, cols):
    return a
  return jnp.pad(a, ((0, rows - a.shape[0]), (0, cols - a.shape[1])))
