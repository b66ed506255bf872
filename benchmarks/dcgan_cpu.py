"""The DCGAN train step on this CPU, side by side with the two forms XLA:CPU runs slowly.

`gan.config_for("mnist")`'s DCGAN (PacGAN 2, spectral norm, EMA), MNIST-sized
random batches; every variant is the same update (same keys, same values up
to float rounding):

  * library: `jax.jit(gan.train_step)` as shipped;
  * critic in a loop: the critic update run inside a one-iteration
    `lax.scan` (how `d_step` ran it before);
  * native transposed conv: `nn.ConvTranspose` in place of `gan_nets.UpConv`
    (XLA:CPU computes its kernel gradient as a scalar loop nest);
  * both: the two together (the step as it was).

Rows are timed round-robin, so a change in machine load hits all of them.

    python benchmarks/dcgan_cpu.py [--batch 64 128] [--repeats 5]
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import _bench  # noqa: E402


def build(batch: int, native_upconv: bool, critic_in_loop: bool):
  """A compiled step function and its inputs for one variant."""
  import flax.linen as nn
  import jax
  import numpy as np

  from unsupjax import training
  from unsupjax.models import gan
  from unsupjax.models.gan import nets as gan_nets

  class NativeUp(nn.Module):
    features: int

    @nn.compact
    def __call__(self, x):
      return nn.ConvTranspose(self.features, (4, 4), strides=(2, 2),
                              padding="SAME")(x)

  saved = gan_nets.UpConv
  gan_nets.UpConv = NativeUp if native_upconv else saved
  try:
    img = np.random.default_rng(0).uniform(size=(batch, 28, 28, 1)).astype(np.float32)
    cfg = gan.config_for("mnist", (28, 28, 1))
    state = gan.init_state(jax.random.key(0), cfg, img)

    def looped(st, x, key):
      k_d, k_g = jax.random.split(jax.random.fold_in(key, st.step))
      st, _ = jax.lax.scan(lambda c, _: (gan.d_step(c, x, k_d)[0], None), st, None,
                           length=1)
      return gan.g_step(st, k_g, x.shape[0])

    step = looped if critic_in_loop else gan.train_step
    t0 = time.perf_counter()
    compiled = training.compile_lowered(jax.jit(step).trace(state, img, jax.random.key(1)).lower())
    compile_s = time.perf_counter() - t0
  finally:
    gan_nets.UpConv = saved
  return compiled, state, jax.device_put(img), jax.random.key(1), compile_s


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--batch", type=int, nargs="+", default=[64, 128])
  ap.add_argument("--repeats", type=int, default=5)
  ap.add_argument("--json", default=None)
  a = ap.parse_args()
  import jax

  variants = [("library", False, False), ("critic in a loop", False, True),
              ("native transposed conv", True, False), ("both (the old step)", True, True)]
  rows, results = [], {}
  for batch in a.batch:
    built = {name: build(batch, nat, loop) for name, nat, loop in variants}
    times = {name: [] for name, *_ in variants}
    for _ in range(a.repeats):  # round-robin
      for name, (fn, st, x, key, _) in built.items():
        jax.block_until_ready(fn(st, x, key))
        t0 = time.perf_counter()
        jax.block_until_ready(fn(st, x, key))
        times[name].append(time.perf_counter() - t0)
    base = min(times["library"])
    for name, *_ in variants:
      best = min(times[name])
      results[f"{name}/{batch}"] = {"batch": batch, "step_s": best,
                                    "compile_s": built[name][4]}
      rows.append([name, batch, best * 1e3, best / base, built[name][4]])
  m = _bench.machine()
  print(f"Machine: {m['cores']} cores, {m['cpu']}, JAX {m['jax']} on {m['backend']}")
  print(_bench.markdown_table(["variant", "batch", "step ms (best)", "x library",
                               "compile s"], rows))
  _bench.write_json(a.json, {"machine": m, "results": results})


if __name__ == "__main__":
  main()
