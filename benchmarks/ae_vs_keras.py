"""The classic Keras MNIST autoencoder vs unsupjax's, in one run.

Same architecture (784-128-32-128-784, ReLU, sigmoid output), loss (binary
cross-entropy), optimizer (Adam 1e-3), batch (256), initialisation (Glorot
uniform) and data (TFDS MNIST). Reports, for each: the first epoch (tracing
and compilation included), unsupjax's cold XLA compile of the whole-epoch
program, the median of the following epochs, achieved FLOP/s as a fraction
of this machine's f32 matmul peak measured in the same run, and test MSE/BCE
after the same number of epochs.

  pip install -e '.[tf]'
  python benchmarks/ae_vs_keras.py --data-dir ../shared/data/tfds --epochs 5 --seeds 3

Differences kept on purpose: Keras runs the last partial batch of each epoch
(235 steps), unsupjax drops it (234 steps, a different example each epoch);
Adam's epsilon is 1e-7 in Keras and 1e-8 in Optax.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import _bench  # noqa: E402

LAYERS = (784, 128, 32, 128, 784)
BATCH = 256


def train_flops_per_example() -> float:
  """Matmul FLOPs of one training example: forward 2·Σ in·out, backward twice
  that, less the input gradient of the first layer (nothing needs it)."""
  fwd = 2 * sum(a * b for a, b in zip(LAYERS[:-1], LAYERS[1:]))
  return 3 * fwd - 2 * LAYERS[0] * LAYERS[1]


class Unsupjax:
  """unsupjax's AE: the loop's own whole-epoch program, compiled cold."""

  def __init__(self, x_train, seed: int):
    import jax
    import jax.numpy as jnp

    from unsupjax import rng, training
    from unsupjax.models import autoencoder as ae

    self.jax, self.jnp, self.ae, self.training = jax, jnp, ae, training
    # The keys `unsupjax train ae --seed SEED` uses (base.train and training.fit).
    key = rng.run_key(seed)
    self.data_key, self.step_key = rng.named(key, "data"), rng.named(key, "steps")
    self.state = ae.init_state(rng.named(key, "init"), ae.AEConfig(), x_train[:1])
    self.x = jax.device_put(x_train)
    epoch_fn = jax.jit(_bench.make_epoch_fn(ae.train_step, BATCH), donate_argnums=0)
    t0 = time.perf_counter()
    lowered = epoch_fn.lower(self.state, self.x, self.data_key, self.step_key, jnp.int32(0))
    t1 = time.perf_counter()
    self.compiled = training.compile_lowered(lowered)
    t2 = time.perf_counter()
    self.trace_seconds, self.compile_seconds = t1 - t0, t2 - t1
    self.setup_seconds = t2 - t0
    # XLA's own count for one step (cost_analysis counts a scan body once).
    cost = jax.jit(ae.train_step).lower(self.state, self.x[:BATCH], self.step_key).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    self.xla_flops_per_example = float(cost["flops"]) / BATCH
    self.examples_per_epoch = (x_train.shape[0] // BATCH) * BATCH
    self.epoch = 0

  def run_epoch(self) -> float:
    self.epoch += 1
    t = time.perf_counter()
    self.state, m = self.compiled(self.state, self.x, self.data_key, self.step_key,
                                  self.jnp.int32(self.epoch))
    self.jax.block_until_ready(m)
    return time.perf_counter() - t

  def test_metrics(self, x_test) -> dict:
    ev = self.training.evaluate(self.state, self.ae.eval_step, x_test)
    return {"test_mse": ev["mse"], "test_bce": ev["bce"]}


class Keras:
  """The classic Keras model, trained one `fit` epoch at a time."""

  def __init__(self, x_train, seed: int):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    from tensorflow import keras

    self.version = tf.__version__
    keras.utils.set_random_seed(seed)
    inp = keras.Input(shape=(784,))
    h = keras.layers.Dense(128, activation="relu")(inp)
    z = keras.layers.Dense(32, activation="relu")(h)
    h = keras.layers.Dense(128, activation="relu")(z)
    out = keras.layers.Dense(784, activation="sigmoid")(h)
    self.model = keras.Model(inp, out)
    self.model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
    self.x = x_train
    self.examples_per_epoch = x_train.shape[0]
    self.epoch = 0

  def run_epoch(self) -> float:
    t = time.perf_counter()
    self.model.fit(self.x, self.x, epochs=self.epoch + 1, initial_epoch=self.epoch,
                   batch_size=BATCH, shuffle=True, verbose=0)
    self.epoch += 1
    return time.perf_counter() - t

  def test_metrics(self, x_test) -> dict:
    import numpy as np
    recon = self.model.predict(x_test, batch_size=1000, verbose=0).astype(np.float64)
    t = x_test.astype(np.float64)
    p = np.clip(recon, 1e-7, 1 - 1e-7)  # Keras clips probabilities the same way
    return {"test_mse": float(np.mean((recon - t) ** 2)),
            "test_bce": float(np.mean(-(t * np.log(p) + (1 - t) * np.log(1 - p))))}


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--data-dir", default=os.path.join("..", "shared", "data", "tfds"))
  p.add_argument("--epochs", type=int, default=5)
  p.add_argument("--seed", type=int, default=0, help="first seed")
  p.add_argument("--seeds", type=int, default=3, help="number of seeds")
  p.add_argument("--skip-keras", action="store_true")
  p.add_argument("--json", default=None)
  args = p.parse_args()
  if args.epochs < 2:
    p.error("--epochs: expected at least 2 (the median skips the first)")

  from unsupjax import data
  tr = data.load("mnist", "train", data_dir=args.data_dir)
  te = data.load("mnist", "test", data_dir=args.data_dir)
  x_train, x_test = tr.flat(), te.flat()

  info = _bench.machine()
  peak = _bench.matmul_peak_flops()
  # Interleave the epochs so that both see the same machine load; several
  # seeds, because test MSE after a few epochs moves by ~2% between seeds.
  ours_times, keras_times, ours_first, keras_first, compiles = [], [], [], [], []
  o_runs, k_runs = [], []
  for seed in range(args.seed, args.seed + args.seeds):
    ours = Unsupjax(x_train, seed)
    keras = None if args.skip_keras else Keras(x_train, seed)
    compiles.append(ours.compile_seconds)
    for epoch in range(args.epochs):
      t = ours.run_epoch()
      (ours_first.append(ours.setup_seconds + t) if epoch == 0 else ours_times.append(t))
      if keras:
        t = keras.run_epoch()
        (keras_first.append(t) if epoch == 0 else keras_times.append(t))
    o_runs.append(ours.test_metrics(x_test))
    if keras:
      k_runs.append(keras.test_metrics(x_test))
  peak_after = _bench.matmul_peak_flops()

  fpe = train_flops_per_example()
  med = statistics.median
  def frac(examples, ts):
    return fpe * examples / med(ts) / peak
  def mean_std(runs, key):
    v = [r[key] for r in runs]
    return statistics.mean(v), (statistics.stdev(v) if len(v) > 1 else 0.0)
  rows = []
  def row(name, k, o):
    rows.append([name, "-" if k is None else k, o,
                 (k / o) if isinstance(k, float) and o else "-"])
  row("first epoch incl. tracing/compile (s)", med(keras_first) if keras else None,
      med(ours_first))
  rows.append(["cold XLA compile of the epoch (s)", "-", med(compiles), "-"])
  row(f"median epoch, epochs 2-{args.epochs} (s)", med(keras_times) if keras else None,
      med(ours_times))
  rows.append(["achieved matmul FLOP/s, % of peak",
               f"{100 * frac(keras.examples_per_epoch, keras_times):.1f}%" if keras else "-",
               f"{100 * frac(ours.examples_per_epoch, ours_times):.1f}%", "-"])
  for key, label in (("test_mse", "test MSE"), ("test_bce", "test BCE (nats/pixel)")):
    om, osd = mean_std(o_runs, key)
    km, ksd = mean_std(k_runs, key) if keras else (None, None)
    rows.append([f"{label} after {args.epochs} epochs, mean ± sd of {args.seeds} seeds",
                 f"{km:.5f} ± {ksd:.5f}" if keras else "-", f"{om:.5f} ± {osd:.5f}",
                 f"{km / om:.3f}" if keras else "-"])

  print(f"machine: {info['cores']} cores, {info['cpu']}, JAX {info['jax']} on "
        f"{info['backend']}; TensorFlow {keras.version if keras else '-'}")
  print(f"f32 matmul peak (2048^3 jnp.dot): {peak / 1e9:.1f} GFLOP/s "
        f"(again after the runs: {peak_after / 1e9:.1f})")
  print(f"training FLOPs per example: {fpe:.4g} (matmuls, analytic); "
        f"{ours.xla_flops_per_example:.4g} (XLA cost_analysis of one step, all ops)")
  print(f"epochs 2.. (s), unsupjax: {[round(t, 3) for t in ours_times]}")
  if keras:
    print(f"epochs 2.. (s), Keras:    {[round(t, 3) for t in keras_times]}")
  print()
  print(_bench.markdown_table(["", "Keras", "unsupjax", "Keras / unsupjax"], rows))
  _bench.write_json(args.json, {
      "machine": info, "peak_flops": peak, "peak_flops_after": peak_after,
      "epochs": args.epochs, "seeds": args.seeds, "unsupjax_epoch_seconds": ours_times,
      "keras_epoch_seconds": keras_times, "unsupjax_compile_seconds": compiles,
      "unsupjax": o_runs, "keras": k_runs})


if __name__ == "__main__":
  main()
