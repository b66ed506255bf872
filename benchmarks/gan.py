"""GAN step speed (MLP and DCGAN) and the time to cover all ring8 modes.

For each configuration (the defaults of `gan.config_for`): the compile time
of a whole-epoch `lax.scan` program (`_bench.make_epoch_fn`: the loop's
scan of steps, `training.make_steps_fn`), its steady-state time per step,
and, as the baseline measured in the same run, the time per step of the
same `train_step` jitted alone and dispatched from a Python loop; the ratio
is what compiling the epoch buys. FLOPs per step come from XLA's `cost_analysis()` of one step
and are reported as a fraction of this machine's f32 matmul peak (a large
`jnp.dot`, measured in the same run).

Then trains the ring8 default configuration (batch 256, 200 steps an epoch)
and reports the steps and seconds until the EMA generator's 2,500 samples
cover all 8 modes (PacGAN protocol: a mode counts when a sample within 3
sigma has it as nearest centre), and the coverage / high-quality fraction /
reverse KL at the end.

  python benchmarks/gan.py [--quick] [--configs ring8 digits] [--json results.json]

On a 2-core CPU the DCGAN MNIST/CIFAR rows take many minutes; there,
`--quick --configs ring8 digits` is the practical run.

DCGAN inputs are random images in [0, 1]: step time does not depend on the
pixel values.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import _bench  # noqa: E402

CONFIGS = (  # name, dataset, data shape, batch size
    ("mlp ring8", "ring8", (2,), 256),
    ("dcgan digits 8x8", "digits", (8, 8, 1), 64),
    ("dcgan mnist 28x28", "mnist", (28, 28, 1), 64),
    ("dcgan cifar10 32x32", "cifar10", (32, 32, 3), 64),
)


def bench_config(name, dataset, shape, batch, steps, repeats) -> dict:
  import jax
  import jax.numpy as jnp
  import numpy as np

  from unsupjax import toys, training
  from unsupjax.models import gan

  key = jax.random.PRNGKey(0)
  k_data, k_init, k_step, k_fit = jax.random.split(key, 4)
  cfg = gan.config_for(dataset, shape)
  n = batch * steps
  if dataset in toys.TOYS:
    x = np.asarray(toys.TOYS[dataset].sample(k_data, n))
  else:
    x = np.asarray(jax.random.uniform(k_data, (n,) + shape))
  state = gan.init_state(k_init, cfg, x[:batch])
  x_dev = jax.device_put(x)

  epoch_fn = jax.jit(_bench.make_epoch_fn(gan.train_step, batch))
  t0 = time.perf_counter()
  compiled_epoch = training.compile_lowered(
      epoch_fn.lower(state, x_dev, k_fit, k_step, jnp.int32(0)))
  compile_s = time.perf_counter() - t0

  def run_epoch():
    s, m = compiled_epoch(state, x_dev, k_fit, k_step, jnp.int32(1))
    jax.block_until_ready((s, m))

  epoch_s = _bench.median_seconds(run_epoch, repeats)

  step_jit = jax.jit(gan.train_step)
  compiled_step = step_jit.lower(state, x_dev[:batch], k_step).compile()
  cost = compiled_step.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0]
  flops = float(cost.get("flops", float("nan"))) if cost else float("nan")
  batches = [x_dev[i * batch:(i + 1) * batch] for i in range(steps)]

  def run_loop():
    s = state
    for b in batches:
      s, m = compiled_step(s, b, k_step)
    jax.block_until_ready((s, m))

  loop_s = _bench.median_seconds(run_loop, repeats)
  return {"name": name, "batch": batch, "steps": steps,
          "compile_s": compile_s, "step_ms_scan": 1e3 * epoch_s / steps,
          "step_ms_loop": 1e3 * loop_s / steps, "flops_per_step": flops,
          "params_g": sum(v.size for v in jax.tree.leaves(state.g.params)),
          "params_d": sum(v.size for v in jax.tree.leaves(state.d.params))}


def ring8_to_coverage(max_epochs: int, steps_per_epoch: int = 200,
                      batch: int = 256, seed: int = 0) -> dict:
  import jax
  import jax.numpy as jnp
  import numpy as np

  from unsupjax import toys, training
  from unsupjax.models import gan

  key = jax.random.PRNGKey(seed)
  k_data, k_init, k_fit, k_step, k_view = jax.random.split(key, 5)
  x = np.asarray(toys.ring8(k_data, batch * steps_per_epoch))
  cfg = gan.config_for("ring8", (2,))
  state = gan.init_state(k_init, cfg, x[:batch])
  x_dev = jax.device_put(x)
  t0 = time.perf_counter()
  epoch = training.compile_lowered(jax.jit(_bench.make_epoch_fn(gan.train_step, batch)).lower(
      state, x_dev, k_fit, k_step, jnp.int32(0)))
  view = training.compile_lowered(jax.jit(lambda s: gan.sample(s, k_view, 2500)).lower(state))
  compile_s = time.perf_counter() - t0

  def stats(samples):
    d2 = ((samples[:, None].astype(np.float64) - toys.RING8_CENTERS[None]) ** 2).sum(-1)
    hq = d2.min(1) <= (3 * toys.RING8_SIGMA) ** 2
    counts = np.bincount(d2.argmin(1)[hq], minlength=8)
    p = counts / max(counts.sum(), 1)
    kl = float(np.sum(p[p > 0] * np.log(8 * p[p > 0])))
    return int((counts > 0).sum()), float(hq.mean()), kl

  t_train = 0.0
  first_full = None
  for e in range(1, max_epochs + 1):
    t = time.perf_counter()
    state, _ = epoch(state, x_dev, k_fit, k_step, jnp.int32(e))
    jax.block_until_ready(state)
    t_train += time.perf_counter() - t
    covered, hq, kl = stats(np.asarray(view(state)))
    if covered == 8 and first_full is None:
      first_full = {"steps": e * steps_per_epoch, "train_s": t_train}
  return {"compile_s": compile_s, "first_full_coverage": first_full,
          "final": {"epochs": max_epochs, "steps": max_epochs * steps_per_epoch,
                    "train_s": t_train, "modes_covered": covered,
                    "hq_fraction": hq, "reverse_kl": kl}}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true",
                      help="fewer steps and repetitions (CPU smoke run)")
  parser.add_argument("--ring8-epochs", type=int, default=None,
                      help="ring8 epochs of 200 steps (default 50; 10 with --quick)")
  parser.add_argument("--configs", nargs="+", default=None,
                      choices=[c[1] for c in CONFIGS],
                      help="which step-time configurations to run (default: all)")
  parser.add_argument("--json", default=None, help="write the results here")
  args = parser.parse_args()

  machine = _bench.machine()
  peak = _bench.matmul_peak_flops(4096 if machine["backend"] != "cpu" else 2048)
  steps, repeats = (10, 3) if args.quick else (100, 5)
  rows, results = [], []
  for name, dataset, shape, batch in CONFIGS:
    if args.configs and dataset not in args.configs:
      continue
    r = bench_config(name, dataset, shape, batch, steps, repeats)
    r["pct_peak"] = 100 * r["flops_per_step"] / (r["step_ms_scan"] / 1e3) / peak
    results.append(r)
    rows.append([name, r["batch"], f"{r['params_g'] / 1e3:.0f}k / {r['params_d'] / 1e3:.0f}k",
                 r["compile_s"], r["step_ms_scan"], r["step_ms_loop"],
                 r["step_ms_loop"] / r["step_ms_scan"], r["flops_per_step"] / 1e9,
                 r["pct_peak"]])
  print(f"machine: {machine}")
  print(f"f32 matmul peak (jnp.dot): {peak / 1e9:.1f} GFLOP/s\n")
  print(_bench.markdown_table(
      ["config", "batch", "params G / D", "compile s (epoch scan)",
       "ms/step (epoch scan)", "ms/step (jit step, Python loop)",
       "loop / scan", "GFLOP/step (XLA)", "% of matmul peak"], rows))

  ring_epochs = args.ring8_epochs or (10 if args.quick else 50)
  ring = ring8_to_coverage(ring_epochs)
  full = ring["first_full_coverage"]
  fin = ring["final"]
  print("\nring8, default config (batch 256, 200 steps/epoch), seed 0:")
  print(_bench.markdown_table(
      ["compile s", "steps to 8/8 modes", "train s to 8/8", "steps run",
       "train s", "final modes", "final HQ", "final reverse KL"],
      [[ring["compile_s"], full["steps"] if full else "not reached",
        full["train_s"] if full else "-", fin["steps"], fin["train_s"],
        fin["modes_covered"], fin["hq_fraction"], fin["reverse_kl"]]]))
  _bench.write_json(args.json, {"machine": machine, "matmul_peak_flops": peak,
                                "configs": results, "ring8": ring,
                                "quick": args.quick})


if __name__ == "__main__":
  main()
