"""Scale on paper: what each train step costs, and where data parallelism
stops being compute-bound.

For every workload (dense AE, conv AE, VAE, DCGAN, one k-means iteration) at
MNIST size and at ImageNet size (224×224×3 inputs; 64×64×3 for the DCGAN,
its usual ImageNet resolution), XLA's `cost_analysis()` of the compiled step
gives FLOPs and bytes accessed per example; parameters give the bytes a
data-parallel gradient all-reduce moves per step (f32 gradients; k-means
reduces its per-cluster sums and counts instead). Nothing is run but the
compiler, so the ImageNet rows cost seconds.

Costs are taken at two batch sizes and split into a per-example part and a
per-step part (mostly parameters and optimizer state read and written). From
those measured numbers and a device's peak FLOP/s, memory bandwidth and
all-reduce bandwidth (flags; defaults are the published TPU v5e figures,
change them for your hardware) it prints, per workload, the time of an
all-reduce of the gradients over N devices (latency per hop times the hops
of a 2-D torus, plus a ring's bandwidth term) and the smallest per-device batch
B* whose step time, max(FLOPs / peak, bytes / bandwidth), covers it; and
at a chosen per-device batch (256), the step time, what bounds it and the
examples per second per device. XLA:CPU's byte counts stand in for the
accelerator's (fusion differs by backend), so treat the bytes as estimates.

  python benchmarks/scale.py --json benchmarks/results/scale.json
"""

from __future__ import annotations

import argparse
import math
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import _bench  # noqa: E402

BATCHES = (32, 64)  # the costs are taken at two batch sizes and fitted as a + b * batch


def _cost_at(fn, *args) -> tuple[float, float]:
  import jax
  cost = jax.jit(fn).lower(*args).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get("flops", 0.0)), float(cost.get("bytes accessed", 0.0))


def _cost(make_args, fn) -> tuple[float, float, float, float]:
  """(flops per example, flops per step fixed, bytes per example, bytes per step
  fixed): the slope and intercept of XLA's counts between two batch sizes.
  The fixed bytes are mostly parameters and optimizer state read and written."""
  (f1, b1), (f2, b2) = (_cost_at(fn, *make_args(b)) for b in BATCHES)
  span = BATCHES[1] - BATCHES[0]
  fs, bs = (f2 - f1) / span, (b2 - b1) / span
  return fs, max(f1 - fs * BATCHES[0], 0.0), bs, max(b1 - bs * BATCHES[0], 0.0)


def _params(tree) -> int:
  import jax
  import numpy as np
  return int(sum(np.size(a) for a in jax.tree.leaves(tree)))


def lloyd_iteration(c, x):
  """One Lloyd iteration without loops: distances, nearest centre, each
  cluster's sum and count. (`kmeans` runs it over row blocks in a loop, and
  XLA's cost analysis counts a loop body once, so its own step would
  under-count.)"""
  import jax
  import jax.numpy as jnp

  from unsupjax import distances
  labels = jnp.argmin(distances.sq_distances(x, c), axis=1)
  k = c.shape[0]
  return (jax.ops.segment_sum(x, labels, k),
          jax.ops.segment_sum(jnp.ones(x.shape[0], x.dtype), labels, k))


def workloads(imagenet: bool):
  """Yields (name, input, (flops/ex, flops fixed, bytes/ex, bytes fixed), reduce bytes/step)."""
  import jax
  import jax.numpy as jnp

  from unsupjax.models import autoencoder as ae
  from unsupjax.models import gan, vae

  key = jax.random.PRNGKey(0)
  shape = (224, 224, 3) if imagenet else (28, 28, 1)
  dim = shape[0] * shape[1] * shape[2]
  tag = "x".join(map(str, shape))
  flat = lambda b: jnp.zeros((b, dim), jnp.float32)
  img = lambda b: jnp.zeros((b,) + shape, jnp.float32)

  st = ae.init_state(key, ae.AEConfig(), flat(1))
  yield ("dense AE 128-32-128", tag, _cost(lambda b: (st, flat(b), key), ae.train_step),
         4 * _params(st.params))
  st_c = ae.init_state(key, ae.AEConfig(arch="conv"), img(1))
  yield ("conv AE (32, 64)", tag, _cost(lambda b: (st_c, img(b), key), ae.train_step),
         4 * _params(st_c.params))
  st_v = vae.init_state(key, vae.VAEConfig(), flat(1))
  yield ("VAE 500-20", tag, _cost(lambda b: (st_v, flat(b), key), vae.train_step),
         4 * _params(st_v.params))
  gshape = (64, 64, 3) if imagenet else (28, 28, 1)
  cfg = gan.config_for("cifar10" if imagenet else "mnist", gshape)
  gx = lambda b: jnp.zeros((b,) + gshape, jnp.float32)
  st_g = gan.init_state(key, cfg, gx(2))
  yield ("DCGAN (D + G update)", "x".join(map(str, gshape)),
         _cost(lambda b: (st_g, gx(b), key), gan.train_step),
         4 * (_params(st_g.g.params) + _params(st_g.d.params)))
  # One Lloyd iteration at k = 10 (MNIST pixels) / k = 1000 (ImageNet-scale
  # embeddings, d = 2048): what crosses devices is the k x d sums and k counts.
  k, d = (10, dim) if not imagenet else (1000, 2048)
  c = jnp.zeros((k, d), jnp.float32)
  yield (f"k-means iteration (k={k})", f"d={d}",
         _cost(lambda b: (c, jnp.zeros((b, d), jnp.float32)),
               lloyd_iteration), 4 * (k * d + k))


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--peak-tflops", type=float, default=197.0,
                 help="per-device peak (default: TPU v5e bf16, 197 TFLOP/s)")
  p.add_argument("--hbm-gbs", type=float, default=819.0,
                 help="per-device memory bandwidth in GB/s (default: TPU v5e, 819)")
  p.add_argument("--link-gbs", type=float, default=200.0,
                 help="per-device all-reduce bandwidth in GB/s (default: TPU v5e "
                      "inter-chip interconnect, 1600 Gbit/s = 200 GB/s)")
  p.add_argument("--devices", type=int, default=256, help="devices in the slice")
  p.add_argument("--hop-latency-us", type=float, default=1.0,
                 help="latency of one all-reduce hop in µs (the all-reduce runs as "
                      "reduce-scatter + all-gather along each axis of a square 2-D "
                      "torus: 4 (sqrt(N) - 1) hops)")
  p.add_argument("--utilization", type=float, default=0.5,
                 help="fraction of peak a step reaches (50%% is typical of well-fed matmuls)")
  p.add_argument("--batch-per-device", type=int, default=256,
                 help="the per-device batch whose throughput and bound are reported")
  p.add_argument("--json", default=None)
  args = p.parse_args()

  peak = args.peak_tflops * 1e12 * args.utilization
  hbm, link, n = args.hbm_gbs * 1e9, args.link_gbs * 1e9, args.devices
  rows, out = [], []
  for imagenet in (False, True):
    for name, inp, (fl_ex, fl_fix, by_ex, by_fix), reduce_bytes in workloads(imagenet):
      # alpha-beta model: hops * latency + the bandwidth term of a ring.
      hops = 4 * (math.sqrt(n) - 1)
      allreduce = hops * args.hop_latency_us * 1e-6 + 2 * (n - 1) / n * reduce_bytes / link
      # Step time at per-device batch B: max(flops(B) / peak, bytes(B) / hbm);
      # B* is the smallest B whose step time covers the all-reduce.
      b_star = max(1.0, min((allreduce * peak - fl_fix) / fl_ex,
                            (allreduce * hbm - by_fix) / by_ex))
      b = args.batch_per_device
      t_compute = (fl_fix + fl_ex * b) / peak
      t_memory = (by_fix + by_ex * b) / hbm
      step = max(t_compute, t_memory, allreduce)  # communication overlapped
      bound = ("communication" if allreduce > max(t_compute, t_memory) else
               "compute" if t_compute >= t_memory else "memory")
      rec = dict(workload=name, input=inp, flops_per_example=fl_ex, flops_fixed=fl_fix,
                 bytes_per_example=by_ex, bytes_fixed=by_fix, reduce_bytes=reduce_bytes,
                 allreduce_seconds=allreduce, min_batch_per_device=b_star,
                 batch_per_device=b, bound=bound, step_seconds=step,
                 examples_per_second_per_device=b / step)
      out.append(rec)
      rows.append([name, inp, f"{fl_ex / 1e6:.3g}", f"{by_ex / 1e6:.3g}",
                   f"{by_fix / 1e6:.3g}", f"{reduce_bytes / 1e6:.3g}",
                   f"{allreduce * 1e6:.3g}", f"{b_star:,.0f}", bound,
                   f"{step * 1e6:,.0f}", f"{b / step:,.0f}"])
  print(f"device: {args.peak_tflops} TFLOP/s peak at {args.utilization:.0%} utilisation, "
        f"{args.hbm_gbs} GB/s memory, {args.link_gbs} GB/s all-reduce links, {args.hop_latency_us} µs per hop, {n} devices; "
        f"costs from XLA cost_analysis at batches {BATCHES} on {_bench.machine()['backend']}")
  print()
  print(_bench.markdown_table(
      ["workload", "input", "MFLOP / example", "MB accessed / example",
       "MB accessed / step (params, optimizer)", "all-reduce MB / step",
       "all-reduce µs / step", "min batch / device to hide it",
       f"bound at batch {args.batch_per_device}", "step µs", "examples/s/device"], rows))
  _bench.write_json(args.json, {"args": vars(args), "rows": out})


if __name__ == "__main__":
  main()
