"""Where a train step's XLA compile time goes, phase by phase and by source.

For each case (default: the DCGAN step at batch 64, the one step whose cold
compile misses the 2 s goal in `benchmarks/compile.py`), the step is traced
and lowered once, then compiled as the library compiles it
(`training.compile_lowered`) under `jax.profiler`, and two tables are printed:

  * phases: XLA's own trace events during the compile (HLO passes, the
    per-fusion kernel compiler, LLVM code generation, ...), each summed
    over the compiler's threads, so the sums can exceed the wall time, and
    nested (an event's time includes the events it encloses);
  * fusions: the fusion kernels of the optimised program grouped by where
    their root op came from (the first Flax module or JAX function in its
    `op_name`, autodiff wrappers removed; "top level" for ops of the step
    itself: optimiser updates, EMA, metrics), with the share that comes
    from spectral normalisation's power iteration.

  python benchmarks/compile_phases.py [--cases dcgan/64 ae/256 ...] [--top 15]
                                      [--json benchmarks/results/compile_phases.json]
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import pathlib
import re
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import _bench  # noqa: E402
import compile as compile_bench  # noqa: E402  (benchmarks/compile.py)

_WRAPPER = re.compile(r"^(?:jvp|transpose|vmap|remat|checkpoint|pjit)\((.*)\)$")
_FUSION = re.compile(r"= \S+ fusion\(.*\bcalls=")


def _profiled_compile(lowered) -> tuple[object, float, list[dict]]:
  """(compiled, wall seconds, the profiler's complete events)."""
  import jax

  from unsupjax import training
  with tempfile.TemporaryDirectory() as d:
    jax.profiler.start_trace(d)
    t0 = time.perf_counter()
    compiled = training.compile_lowered(lowered)
    wall = time.perf_counter() - t0
    jax.profiler.stop_trace()
    files = glob.glob(os.path.join(d, "**", "*.trace.json.gz"), recursive=True)
    if not files:
      raise SystemExit("jax.profiler wrote no *.trace.json.gz; cannot split the compile")
    with gzip.open(files[0]) as f:
      events = [e for e in json.load(f)["traceEvents"] if e.get("ph") == "X"]
  return compiled, wall, events


def phases(events: list[dict], top: int) -> list[list]:
  """[name, seconds summed over threads, count] of the XLA (not Python) events."""
  total, count = collections.Counter(), collections.Counter()
  for e in events:
    name = e["name"]
    if name.startswith("$"):   # Python frames recorded by the profiler
      continue
    total[name] += e["dur"] / 1e6
    count[name] += 1
  return [[n, s, count[n]] for n, s in total.most_common(top)]


def fusion_source(op_name: str) -> str:
  """The first Flax module / JAX function in an op_name, or 'top level'."""
  parts = op_name.split("/")[1:]   # drop jit(<step>)
  for p in parts:
    while (m := _WRAPPER.match(p)):
      p = m.group(1)
    if not p:
      continue
    if re.match(r"^[A-Z]", p) or p.startswith("jit("):
      return p
    return "top level"
  return "top level"


def fusions(hlo_text: str) -> tuple[collections.Counter, int, int]:
  """(count per source, total, of which spectral normalisation)."""
  by_source: collections.Counter = collections.Counter()
  spectral = 0
  for line in hlo_text.splitlines():
    if not _FUSION.search(line):
      continue
    m = re.search(r'op_name="([^"]+)"', line)
    op_name = m.group(1) if m else ""
    by_source[fusion_source(op_name) if op_name else "(no source recorded)"] += 1
    spectral += "_spectral_normalize" in op_name
  return by_source, sum(by_source.values()), spectral


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--cases", nargs="+", default=["dcgan/64"],
                  help="NAME/BATCH from benchmarks/compile.py's cases")
  ap.add_argument("--top", type=int, default=15, help="phases listed per case")
  ap.add_argument("--json", default=None)
  args = ap.parse_args()
  known = {f"{n}/{b}" for n, b in compile_bench.CASES}
  for case in args.cases:
    if case not in known:
      ap.error(f"--cases: expected some of {sorted(known)}, got {case!r}")
  if args.top < 1:
    ap.error(f"--top: expected a positive count, got {args.top}")
  _bench.reexec_without_blas_throttles()

  import jax
  jax.config.update("jax_enable_compilation_cache", False)   # a cold compile
  out = {}
  for case in args.cases:
    name, batch = case.split("/")
    step, state, x, key = compile_bench.build(name, int(batch))
    lowered = jax.jit(step).trace(state, x, key).lower()
    compiled, wall, events = _profiled_compile(lowered)
    rows = phases(events, args.top)
    by_source, total, spectral = fusions(compiled.as_text())
    out[case] = {"compile_wall_s": wall, "phases": rows, "fusions": total,
                 "spectral_norm_fusions": spectral, "fusions_by_source": dict(by_source)}
    print(f"\n{case}: compile {wall:.2f} s wall (under the profiler)\n")
    print(_bench.markdown_table(["XLA event", "seconds (summed over threads)", "count"], rows))
    print(f"\n{total} fusions in the optimised program, {spectral} of them "
          f"({100 * spectral / max(total, 1):.0f}%) from spectral normalisation:\n")
    print(_bench.markdown_table(["source", "fusions"],
                                [[s, c] for s, c in by_source.most_common()]))
  m = _bench.machine()
  m["load_average"] = os.getloadavg()
  print(f"\nMachine: {m['cores']} cores, {m['cpu']}, JAX {m['jax']}; load average "
        f"{m['load_average'][0]:.1f}")
  _bench.write_json(args.json, {"machine": m, "cases": out})


if __name__ == "__main__":
  main()
