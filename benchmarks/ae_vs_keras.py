"""The classic Keras MNIST autoencoder vs unsupjax's, in one run.

Same architecture (784-128-32-128-784, ReLU, sigmoid output), loss (binary
cross-entropy), optimizer (Adam 1e-3), batch (256), initialisation (Glorot
uniform) and data (TFDS MNIST). Reports, for each: the first epoch (tracing
and compilation included), unsupjax's cold XLA compile of the whole-epoch
program, the median of the following epochs, achieved FLOP/s as a fraction
of this machine's f32 matmul peak measured in the same run, and test MSE/BCE
after the same number of epochs.

  pip install -e '.[tf]'
  python benchmarks/ae_vs_keras.py --data-dir ../shared/data/tfds --epochs 6

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


def run_unsupjax(x_train, x_test, epochs: int, seed: int) -> dict:
  import jax
  import jax.numpy as jnp
  import numpy as np
  from unsupjax import autoencoder as ae, train

  key = jax.random.PRNGKey(seed)
  init_key, fit_key = jax.random.split(key)
  data_key, step_key = jax.random.split(fit_key)
  state = ae.init_state(init_key, ae.AEConfig(), x_train[:1])
  x_dev = jax.device_put(x_train)
  epoch_fn = jax.jit(train.make_epoch_fn(ae.train_step, BATCH), donate_argnums=0)

  t0 = time.perf_counter()
  lowered = epoch_fn.lower(state, x_dev, data_key, step_key, jnp.int32(0))
  t1 = time.perf_counter()
  compiled = lowered.compile()
  t2 = time.perf_counter()
  # XLA's own count for one step (cost_analysis counts a scan body once).
  step_cost = jax.jit(ae.train_step).lower(state, x_dev[:BATCH], step_key).compile().cost_analysis()
  step_cost = step_cost[0] if isinstance(step_cost, (list, tuple)) else step_cost
  times = []
  for epoch in range(1, epochs + 1):
    t = time.perf_counter()
    state, m = compiled(state, x_dev, data_key, step_key, jnp.int32(epoch))
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t)
  ev = train.evaluate(state, ae.eval_step, x_test)
  steps = x_train.shape[0] // BATCH
  return {"trace_seconds": t1 - t0, "compile_seconds": t2 - t1,
          "first_epoch_seconds": (t2 - t0) + times[0],
          "epoch_seconds": times, "median_epoch_seconds": statistics.median(times[1:]),
          "examples_per_epoch": steps * BATCH,
          "xla_flops_per_example": float(step_cost["flops"]) / BATCH,
          "test_mse": ev["mse"], "test_bce": ev["bce"]}


def run_keras(x_train, x_test, epochs: int, seed: int) -> dict:
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  import numpy as np
  import tensorflow as tf
  from tensorflow import keras

  keras.utils.set_random_seed(seed)
  inp = keras.Input(shape=(784,))
  h = keras.layers.Dense(128, activation="relu")(inp)
  z = keras.layers.Dense(32, activation="relu")(h)
  h = keras.layers.Dense(128, activation="relu")(z)
  out = keras.layers.Dense(784, activation="sigmoid")(h)
  model = keras.Model(inp, out)
  model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")

  class Timer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
      self.t = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
      times.append(time.perf_counter() - self.t)

  times: list[float] = []
  model.fit(x_train, x_train, epochs=epochs, batch_size=BATCH, shuffle=True,
            verbose=0, callbacks=[Timer()])
  recon = model.predict(x_test, batch_size=1000, verbose=0).astype(np.float64)
  t = x_test.astype(np.float64)
  eps = 1e-7  # Keras clips probabilities the same way in its BCE
  p = np.clip(recon, eps, 1 - eps)
  bce = float(np.mean(-(t * np.log(p) + (1 - t) * np.log(1 - p))))
  steps = -(-x_train.shape[0] // BATCH)
  return {"first_epoch_seconds": times[0], "epoch_seconds": times,
          "median_epoch_seconds": statistics.median(times[1:]),
          "examples_per_epoch": x_train.shape[0], "steps": steps,
          "test_mse": float(np.mean((recon - t) ** 2)), "test_bce": bce,
          "tensorflow": tf.__version__}


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--data-dir", default=os.path.join("..", "shared", "data", "tfds"))
  p.add_argument("--epochs", type=int, default=6)
  p.add_argument("--seed", type=int, default=0)
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
  ours = run_unsupjax(x_train, x_test, args.epochs, args.seed)
  keras = None if args.skip_keras else run_keras(x_train, x_test, args.epochs, args.seed)
  peak_after = _bench.matmul_peak_flops()

  fpe = train_flops_per_example()
  def frac(r):
    return fpe * r["examples_per_epoch"] / r["median_epoch_seconds"] / peak

  rows = []
  def row(name, key, fmt=float):
    k = keras[key] if keras else "-"
    o = ours[key]
    ratio = (k / o) if keras and isinstance(o, float) and o else "-"
    rows.append([name, k, o, ratio])
  row("first epoch incl. tracing/compile (s)", "first_epoch_seconds")
  rows.append(["cold XLA compile of the epoch (s)", "-", ours["compile_seconds"], "-"])
  row(f"median epoch, epochs 2-{args.epochs} (s)", "median_epoch_seconds")
  rows.append(["achieved matmul FLOP/s, % of peak",
               f"{100 * frac(keras):.1f}%" if keras else "-",
               f"{100 * frac(ours):.1f}%", "-"])
  row(f"test MSE after {args.epochs} epochs", "test_mse")
  row(f"test BCE after {args.epochs} epochs (nats/pixel)", "test_bce")

  print(f"machine: {info['cores']} cores, {info['cpu']}, JAX {info['jax']} on "
        f"{info['backend']}; TensorFlow {keras['tensorflow'] if keras else '-'}")
  print(f"f32 matmul peak (2048^3 jnp.dot): {peak / 1e9:.1f} GFLOP/s "
        f"(again after the runs: {peak_after / 1e9:.1f})")
  print(f"training FLOPs per example: {fpe:.4g} (matmuls, analytic); "
        f"{ours['xla_flops_per_example']:.4g} (XLA cost_analysis of one step, all ops)")
  print()
  print(_bench.markdown_table(["", "Keras", "unsupjax", "Keras / unsupjax"], rows))
  _bench.write_json(args.json, {"machine": info, "peak_flops": peak,
                                "peak_flops_after": peak_after, "epochs": args.epochs,
                                "unsupjax": ours, "keras": keras})


if __name__ == "__main__":
  main()
