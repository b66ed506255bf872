"""Compile and step times of every train step, and compilations per CLI run.

For each train step (dense AE, conv AE, VAE, DCGAN, a k-means iteration)
and a few batch sizes, on MNIST-shaped data (28x28x1; k-means on 784-d
rows):

  * trace + lower: `jax.jit(step).trace(...)` then `.lower()`;
  * compile (cold): `lowered.compile()` with an empty persistent cache;
  * compile from the cache: the `compile()` of the same trace + lower in a
    fresh process sharing the (now warm) persistent compilation cache, with
    the cache hit confirmed by JAX's `/jax/compilation_cache/cache_hits`
    event; the median over `--cache-runs` such processes;
  * GFLOP per step from `compiled.cost_analysis()`, the steady step time
    (median of repetitions, each ended by block_until_ready), the achieved
    FLOP/s and its fraction of this machine's f32 matmul peak measured in the
    same run;

and, separately, the compilations a full `unsupjax train ae` run performs
(counted from JAX's compile log, grouped by program name and argument
shapes: a group compiled twice is a recompilation).

Programs are compiled as the library compiles its steps
(`training.compile_lowered`: on CPU with `training.CPU_COMPILER_OPTIONS`).
`--xla-defaults` measures with XLA's default options instead;
`--compare-xla-defaults` also compiles every case with XLA's defaults, and
`--compare-options JSON` (repeatable) with the given XLA options, e.g.
'{"xla_cpu_use_fusion_emitters": false}'; each alternative's steps are
timed round-robin with the library's in the same run.

  python benchmarks/compile.py [--compare-xla-defaults] [--compare-options JSON ...]
                               [--json benchmarks/results/compile.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import _bench  # noqa: E402

CASES = [("ae", 256), ("ae", 1024), ("conv_ae", 128), ("conv_ae", 512),
         ("vae", 128), ("vae", 512), ("dcgan", 64), ("dcgan", 128),
         ("kmeans", 1024), ("kmeans", 8192)]


def build(name: str, batch: int):
  """(step, state, batch array, key) for one case; the step is unjitted."""
  import jax
  import numpy as np

  from unsupjax import kmeans
  from unsupjax.models import autoencoder, gan, vae

  rng = np.random.default_rng(0)
  img = rng.uniform(size=(batch, 28, 28, 1)).astype(np.float32)
  key = jax.random.key(1)
  init_key = jax.random.key(0)
  if name == "ae":
    x = img.reshape(batch, -1)
    state = autoencoder.init_state(init_key, autoencoder.AEConfig(), x[:1])
    return autoencoder.train_step, state, x, key
  if name == "conv_ae":
    state = autoencoder.init_state(init_key, autoencoder.AEConfig(arch="conv"), img[:1])
    return autoencoder.train_step, state, img, key
  if name == "vae":
    x = img.reshape(batch, -1)
    state = vae.init_state(init_key, vae.VAEConfig(), x[:1])
    return vae.train_step, state, x, key
  if name == "dcgan":
    cfg = gan.config_for("mnist", (28, 28, 1))
    state = gan.init_state(init_key, cfg, img)
    return gan.train_step, state, img, key
  if name == "kmeans":
    x = img.reshape(batch, -1)
    state = kmeans.minibatch_init(init_key, x[:64], 10, init="random")
    return kmeans.minibatch_train_step, state, x, key
  raise ValueError(name)


def trace_lower_compile(step, state, x, key):
  import jax

  from unsupjax import training
  t0 = time.perf_counter()
  traced = jax.jit(step).trace(state, x, key)
  lowered = traced.lower()
  t1 = time.perf_counter()
  compiled = training.compile_lowered(lowered)
  t2 = time.perf_counter()
  return compiled, t1 - t0, t2 - t1, lowered


def compile_with(lowered, options):
  """(compiled, seconds): the same lowered program compiled with `options`
  (None: XLA's defaults)."""
  t0 = time.perf_counter()
  compiled = lowered.compile(compiler_options=options) if options else lowered.compile()
  return compiled, time.perf_counter() - t0


def _count_cache_hits():
  import jax
  hits = []
  jax.monitoring.register_event_listener(
      lambda event, **kw: hits.append(event)
      if event == "/jax/compilation_cache/cache_hits" else None)
  return hits


def child(cache_dir: str) -> None:
  """Trace + lower + compile every case with the persistent cache warm."""
  from unsupjax import training
  training.enable_compilation_cache(cache_dir)
  hits = _count_cache_hits()
  out = {}
  for name, batch in CASES:
    step, state, x, key = build(name, batch)
    before = len(hits)
    _, lower_s, compile_s, _ = trace_lower_compile(step, state, x, key)
    out[f"{name}/{batch}"] = {"lower_s": lower_s, "compile_s": compile_s,
                              "cache_hit": len(hits) > before}
  print("RESULT " + json.dumps(out))


def count_cli_compilations(workdir: str) -> dict:
  """Compilations of one `unsupjax train ae` run, grouped by program and shapes."""
  import jax

  from unsupjax import cli
  records: list[str] = []

  class Grab(logging.Handler):
    def emit(self, record):
      msg = record.getMessage()
      if msg.startswith("Compiling "):
        records.append(msg)

  handler = Grab(level=logging.WARNING)
  logger = logging.getLogger("jax._src.interpreters.pxla")
  logger.addHandler(handler)
  quiet = [logging.getLogger(n) for n in ("jax._src.interpreters.pxla",
                                          "jax._src.dispatch")]
  props = [q.propagate for q in quiet]
  # Keep the compile log off stderr: not passed up, and a handler on each
  # (a logger without one would fall back to logging.lastResort, stderr).
  null = logging.NullHandler()
  jax.config.update("jax_log_compiles", True)
  for q in quiet:
    q.propagate = False
    q.addHandler(null)
  try:
    cli.main(["train", "ae", "--epochs", "3", "--workdir", workdir,
              "--no-progress", "--no-compile-cache"])
  finally:
    jax.config.update("jax_log_compiles", False)
    logger.removeHandler(handler)
    for q, p in zip(quiet, props):
      q.propagate = p
      q.removeHandler(null)
  groups: dict[str, int] = {}
  for msg in records:
    m = re.match(r"Compiling (\S+) with global shapes and types (.*?)\. Argument mapping", msg,
                 re.S)
    k = f"{m.group(1)} {m.group(2)}" if m else msg
    groups[k] = groups.get(k, 0) + 1
  # The loop's own programs (the train epoch/step, evaluation, batch
  # indices). The other entries are JAX's eager ops (initialisers, key
  # splits), whose static parameters (e.g. a shape) the log does not show,
  # so equal names and argument types there are not necessarily a recompile.
  loop = ("steps_fn", "epoch_fn", "eval_fn", "train_step", "<lambda>", "batch_indices")
  own = {k: v for k, v in groups.items() if any(f"({n})" in k.split(" ", 1)[0]
                                                 for n in loop)}
  return {"compilations": len(records), "programs": len(groups),
          "loop_programs": {k.split(" ", 1)[0]: v for k, v in own.items()},
          "loop_recompiled": {k: v for k, v in own.items() if v > 1},
          "eager_same_types": {k.split(" ", 1)[0]: v for k, v in groups.items()
                               if v > 1 and k not in own}}


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--json", default=None)
  ap.add_argument("--repeats", type=int, default=5)
  ap.add_argument("--cache-runs", type=int, default=3,
                  help="fresh processes that load every step from the warm cache "
                       "(the median is reported)")
  ap.add_argument("--xla-defaults", action="store_true",
                  help="compile with XLA's default options, not the library's CPU options")
  ap.add_argument("--compare-xla-defaults", action="store_true",
                  help="also compile each case with XLA's defaults; time both steps "
                       "round-robin")
  ap.add_argument("--compare-options", action="append", default=[], metavar="JSON",
                  help="also compile each case with these XLA options (a JSON object; "
                       "repeatable); time both steps round-robin")
  ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
  args = ap.parse_args()
  extra_options = []   # (the flag's text, its parsed options), parsed once
  for text in args.compare_options:
    try:
      parsed = json.loads(text)
    except json.JSONDecodeError:
      parsed = None
    if not (isinstance(parsed, dict) and parsed):
      ap.error(f"--compare-options: expected a non-empty JSON object of XLA options, "
               f"got {text!r}")
    extra_options.append((text, parsed))
  if args.xla_defaults:
    os.environ["UNSUPJAX_CPU_COMPILER_OPTIONS"] = "0"  # read by the child too
  if args.child:
    child(args.child)
    return
  _bench.reexec_without_blas_throttles()

  import jax
  import numpy as np

  from unsupjax import training

  cache_dir = tempfile.mkdtemp(prefix="unsupjax-compile-bench-")
  training.enable_compilation_cache(cache_dir)
  peak = _bench.matmul_peak_flops()
  options = training.compiler_options()
  rows, results = [], {}
  alternatives = []   # (label, options) each case is also compiled with
  if args.compare_xla_defaults and options:
    alternatives.append(("XLA defaults", None))
  alternatives += extra_options
  compare_rows = {label: [] for label, _ in alternatives}
  for name, batch in CASES:
    step, state, x, key = build(name, batch)
    compiled, lower_s, compile_s, lowered = trace_lower_compile(step, state, x, key)
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float(cost.get("flops", 0.0)) if cost else 0.0
    xs = jax.device_put(x)
    step_s = _bench.median_seconds(
        lambda: jax.block_until_ready(compiled(state, xs, key)), args.repeats)
    results[f"{name}/{batch}"] = r = {
        "step": name, "batch": batch, "lower_s": lower_s, "compile_s": compile_s,
        "gflop": flops / 1e9, "step_s": step_s, "flops_per_s": flops / step_s,
        "fraction_of_peak": flops / step_s / peak}
    for label, other in alternatives:
      alt, alt_s = compile_with(lowered, other)
      runs = {"options": compiled, label: alt}
      times = {k: [] for k in runs}
      for _ in range(3):   # round-robin, each a median of `repeats` steps
        for k, fn in runs.items():
          times[k].append(_bench.median_seconds(
              lambda: jax.block_until_ready(fn(state, xs, key)), args.repeats))
      opt_ms, alt_ms = (1e3 * float(np.median(times[k])) for k in runs)
      r.setdefault("compare", {})[label] = {
          "options": other, "compile_s": alt_s, "round_robin_step_ms": alt_ms,
          "round_robin_step_ms_library": opt_ms}
      compare_rows[label].append([name, batch, alt_s, compile_s, compile_s / alt_s,
                                  alt_ms, opt_ms, opt_ms / alt_ms])
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [str(pathlib.Path(__file__).resolve().parents[1])] +
      [p for p in [os.environ.get("PYTHONPATH")] if p]))
  warm_runs = []
  for _ in range(args.cache_runs):  # one sample per fresh process; the median kept
    proc = subprocess.run([sys.executable, __file__, "--child", cache_dir], env=env,
                          capture_output=True, text=True)
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    if proc.returncode or not line:
      raise SystemExit("cache-warm child failed:\n" + proc.stdout + proc.stderr[-4000:])
    warm_runs.append(json.loads(line[0][len("RESULT "):]))
  for k, r in results.items():
    r["cached_lower_s"] = float(np.median([w[k]["lower_s"] for w in warm_runs]))
    r["cached_compile_s"] = float(np.median([w[k]["compile_s"] for w in warm_runs]))
    r["cached_compile_s_runs"] = [w[k]["compile_s"] for w in warm_runs]
    r["cache_hit"] = all(w[k]["cache_hit"] for w in warm_runs)
    rows.append([r["step"], r["batch"], r["lower_s"], r["compile_s"],
                 r["cached_compile_s"], "yes" if r["cache_hit"] else "NO",
                 r["gflop"], r["step_s"] * 1e3, r["flops_per_s"] / 1e9,
                 100 * r["fraction_of_peak"]])
  with tempfile.TemporaryDirectory() as wd:
    cli_counts = count_cli_compilations(wd)

  m = _bench.machine()
  load = os.getloadavg()
  m["load_average"] = load
  print(f"Machine: {m['cores']} cores, {m['cpu']}, JAX {m['jax']} on {m['backend']} "
        f"({m['devices']} device(s)); f32 matmul peak measured here: "
        f"{peak / 1e9:.1f} GFLOP/s; load average at the end {load[0]:.1f} "
        f"(other jobs share these cores)\n")
  print(f"Compiler options: {options or 'XLA defaults'}\n")
  print(_bench.markdown_table(
      ["step", "batch", "trace+lower s", "compile s (cold)", "compile s (cache)",
       "cache hit", "GFLOP/step", "step ms", "GFLOP/s", "% of peak"], rows))
  for label, crow in compare_rows.items():
    print(f"\nThe library's CPU options against {label} (same run; step times "
          f"round-robin, median of 3 rounds):\n")
    print(_bench.markdown_table(
        ["step", "batch", "compile s (other)", "compile s (library)", "ratio",
         "step ms (other)", "step ms (library)", "ratio"], crow))
  slow = [k for k, r in results.items() if r["compile_s"] >= 2.0]
  slow_cached = [k for k, r in results.items() if r["cached_compile_s"] >= 0.3]
  print(f"\nGoal < 2 s cold: {'met' if not slow else 'NOT met for ' + ', '.join(slow)}; "
        f"< 0.3 s from the cache: "
        f"{'met' if not slow_cached else 'NOT met for ' + ', '.join(slow_cached)}")
  for label in compare_rows:
    slow = [k for k, r in results.items() if r["compare"][label]["compile_s"] >= 2.0]
    print(f"  with {label}: < 2 s cold "
          f"{'met' if not slow else 'NOT met for ' + ', '.join(slow)}")
  print(f"\n`unsupjax train ae --epochs 3` (digits, in process): "
        f"{cli_counts['compilations']} compilations in all; the loop's programs "
        f"compiled: {cli_counts['loop_programs']}; loop programs compiled more "
        f"than once: {cli_counts['loop_recompiled'] or 'none'}; eager JAX ops "
        f"with equal names and argument types (static parameters not logged): "
        f"{cli_counts['eager_same_types'] or 'none'}")
  _bench.write_json(args.json, {"machine": m, "peak_flops": peak, "cases": results,
                                "compiler_options": options, "cli_ae": cli_counts})


if __name__ == "__main__":
  main()
