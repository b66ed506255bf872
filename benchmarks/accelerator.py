"""The headline results on whatever accelerator JAX sees, in a time budget.

One resumable run that writes `results.json` and `results.md` into --out:

  ae, vae       the dense AE (AEConfig defaults, 784-128-32-128-784, batch
                256) and the VAE (VAEConfig defaults, batch 128, output-bias
                warm start, test split binarised once) on MNIST through
                `training.fit`, the protocol of benchmarks/autoencoders.py:
                compile time, first and median epoch time, FLOPs per epoch
                (XLA's cost_analysis of the lowered step x steps),
                achieved FLOP/s as a share of the matmul peak measured in
                the same run (f32 at JAX's default precision, f32 at
                HIGHEST, bf16), test MSE; the VAE's test -ELBO after 10
                epochs.
  kmeans        seconds per Lloyd iteration, unsupjax on the accelerator
                against scikit-learn on this machine's CPU cores, from the
                same initial centres (MNIST: scikit-learn's k-means++;
                blobs: k random rows), tol = 0, (t(b) - t(a)) / iterations
                between (benchmarks/kmeans_timing.py), the fraction of
                labels both assign alike: MNIST k = 10 and 256, 1,000,000 x
                32 Gaussian blobs at k = 1,000.
  compile       benchmarks/compile.py in a subprocess (every train step's
                cold and cached compile, step time); its table verbatim.
  mnist_gan     `unsupjax train gan --dataset mnist` (the default, 20
                epochs) and `unsupjax evaluate`: FID against the
                real-vs-real floor (train[:10k] vs test, same feature net,
                measured here); goal FID <= 2x floor.
  stacked_mnist `unsupjax train gan --dataset stacked_mnist` (the default,
                140 epochs; --gan-epochs trains on, the learning rate is
                constant) and `unsupjax evaluate`: modes of 26,000 samples,
                reverse KL (goal < 0.05), FID; the in-training KL every
                --gan-metrics-every epochs.

Budget and resuming: parts run in the order above; one that needs more than
the budget has left waits for the next invocation with the same --out, which
skips every part already done. The GANs train in chunks through the CLI in
this process (`--resume`, checkpoints every 5 epochs): the first chunk is
one epoch, the next as many as its timing says fit in the budget left, so a
second invocation continues the run where the first stopped. After each
chunk --out/<part>.tar holds the run with its newest checkpoint (~10 MB);
on a fresh machine, a --out holding results.json and the tars (what
--copy-to wrote) continues from them.

Data: prepared MNIST in --data-dir (TFDS), or, where TFDS is not installed
(a GPU box), --mnist-npz FILE of uint8 xtr, xte (labels ytr, yte optional;
`--write-mnist-npz FILE` makes one here). The npz is also put into unsupjax's
decoded-data cache under a data directory named after the file, so the CLI's
GAN runs load it without TFDS.

--tiny shrinks every part to seconds on a CPU (512 training images, 1 epoch,
small k-means shapes, GANs on a 512-image .npy subset in two 1-epoch
chunks), to check the script end to end; compile.py keeps its full list of
steps (one repetition, one cache run).

  python benchmarks/accelerator.py --budget-seconds 480 --out runs/accelerator \\
      [--mnist-npz runs/mnist_uint8.npz] [--copy-to DIR] [--parts ae,vae,...]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import math
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import time
import traceback

REPO = pathlib.Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
for _p in (str(REPO), str(BENCH)):
  if _p not in sys.path:
    sys.path.insert(0, _p)

import _bench  # noqa: E402

PARTS = ("ae", "vae", "kmeans", "compile", "mnist_gan", "stacked_mnist")
DEFAULT_DATA_DIR = REPO.parent / "shared" / "data" / "tfds"
DEFAULT_OUT = REPO / "benchmarks" / "results" / "accelerator"
RESULTS_JSON, RESULTS_MD = "results.json", "results.md"
DONE = "done"
KL_GOAL = 0.05          # Stacked MNIST reverse KL (README's goal row)
FID_FLOOR_RATIO = 2.0   # MNIST FID <= 2 x the real-vs-real floor
GAN_CHECKPOINT_EVERY = 5
# Budget seconds a part needs to be started (on an accelerator; --tiny: 1).
MIN_SECONDS = {"ae": 20, "vae": 30, "kmeans": 60, "compile": 120, "mnist_gan": 90,
               "stacked_mnist": 60}
GPU_COMMAND = ("python3 benchmarks/accelerator.py --budget-seconds 480 --out runs/accelerator "
               "--mnist-npz runs/mnist_uint8.npz --copy-to $OUT")


@dataclasses.dataclass(frozen=True)
class Sizes:
  """What each part runs; FULL is the measurement, TINY the CPU check."""
  n_train: int | None            # MNIST rows (None: the whole split)
  n_test: int | None
  ae_epochs: int
  vae_epochs: int
  kmeans_cases: tuple            # (name, data, n, d, k); n None: the whole split
  kmeans_iters: tuple[int, int]
  kmeans_reps: int
  peak_n: int | None             # matmul side (None: by backend)
  peak_reps: int
  gan_subset: int | None         # GANs on an .npy of this many images
  gan_chunk: int                 # epochs per chunk (0: as many as the budget allows)
  floor_n: int                   # images per side of the FID floor
  compile_args: tuple[str, ...]


FULL = Sizes(
    n_train=None, n_test=None, ae_epochs=10, vae_epochs=10,
    kmeans_cases=(("mnist_k10", "mnist", None, 784, 10),
                  ("mnist_k256", "mnist", None, 784, 256),
                  ("blobs_1m_k1000", "blobs", 1_000_000, 32, 1000)),
    kmeans_iters=(2, 12), kmeans_reps=3, peak_n=None, peak_reps=10, gan_subset=None,
    gan_chunk=0, floor_n=10_000, compile_args=("--cache-runs", "1"))
TINY = Sizes(
    n_train=512, n_test=256, ae_epochs=1, vae_epochs=1,
    kmeans_cases=(("mnist_k10", "mnist", None, 784, 10),
                  ("blobs_2k_k20", "blobs", 2000, 8, 20)),
    kmeans_iters=(2, 5), kmeans_reps=1, peak_n=256, peak_reps=3, gan_subset=512,
    gan_chunk=1, floor_n=256, compile_args=("--cache-runs", "1", "--repeats", "1"))


def now() -> float:
  return time.perf_counter()


class Run:
  """One invocation: arguments, budget, the results file and the data."""

  def __init__(self, args):
    self.args = args
    self.sizes = TINY if args.tiny else FULL
    self.out = pathlib.Path(args.out)
    self.t0 = now()
    self.deadline = self.t0 + args.budget_seconds
    self.results = self._read()
    self.invocation = {"started": time.time(), "argv": args.argv,
                       "budget_seconds": args.budget_seconds, "parts": list(args.parts)}
    self.results["invocations"].append(self.invocation)
    self._peaks = None
    self._mnist = {}
    self.data_dir = str(args.data_dir)

  # -- results ---------------------------------------------------------

  def _read(self) -> dict:
    path = self.out / RESULTS_JSON
    if not path.exists():
      return {"tiny": self.args.tiny, "invocations": [], "parts": {}}
    results = json.loads(path.read_text())
    if results.get("tiny") != self.args.tiny:
      what = "a --tiny run" if results.get("tiny") else "a full run"
      raise ValueError(f"--out: {self.out} holds {what}; choose another --out")
    return results

  def save(self) -> None:
    self.invocation["wall_seconds"] = now() - self.t0
    self.out.mkdir(parents=True, exist_ok=True)
    for name, text in ((RESULTS_JSON, json.dumps(self.results, indent=2, default=_jsonable)),
                       (RESULTS_MD, markdown(self.results))):
      _write_text(self.out / name, text)
      if self.args.copy_to:
        dest = pathlib.Path(self.args.copy_to)
        dest.mkdir(parents=True, exist_ok=True)
        _write_text(dest / name, text)

  def save_part(self, name: str, r: dict) -> None:
    self.results["parts"][name] = r
    self.save()

  def remaining(self) -> float:
    return self.deadline - now()

  def log(self, msg: str) -> None:
    print(f"[{now() - self.t0:7.1f} s] {msg}", flush=True)

  # -- machine ---------------------------------------------------------

  def peaks(self) -> dict:
    """Matmul FLOP/s measured now: f32 (JAX's default precision: TF32 on
    recent GPUs), f32 at HIGHEST, bf16."""
    if self._peaks is None:
      self._peaks = matmul_peaks(self.sizes.peak_n, self.sizes.peak_reps)
      self.invocation["peaks"] = self._peaks
      self.log("matmul peak: " + ", ".join(f"{k} {v / 1e12:.3g} TFLOP/s"
                                            for k, v in self._peaks.items() if k != "n"))
    return self._peaks

  # -- data ------------------------------------------------------------

  def mnist(self, split: str):
    """f32[n, 28, 28, 1] in [0, 1]: MNIST `split`, the first --tiny rows."""
    import numpy as np
    if split not in self._mnist:
      n = self.sizes.n_train if split == "train" else self.sizes.n_test
      if self.args.mnist_npz:
        with np.load(self.args.mnist_npz) as z:
          x = z["xtr" if split == "train" else "xte"]
        x = x[:n] if n else x
        x = x.reshape(-1, 28, 28, 1).astype(np.float32) / np.float32(255.0)
      else:
        from unsupjax import data
        x = data.load("mnist", f"{split}[:{n}]" if n else split, data_dir=self.data_dir,
                      download=False).x
      self._mnist[split] = x
    return self._mnist[split]


def _jsonable(v):
  try:
    return float(v)
  except (TypeError, ValueError):
    return str(v)


def _write_text(path: pathlib.Path, text: str) -> None:
  tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
  tmp.write_text(text)
  os.replace(tmp, path)


def matmul_peaks(n: int | None, reps: int) -> dict:
  import functools

  import jax
  import jax.numpy as jnp
  if n is None:
    n = 2048 if jax.default_backend() == "cpu" else 16384
  out = {"n": n}
  for name, dtype, precision in (("f32", jnp.float32, None),
                                 ("f32_highest", jnp.float32, jax.lax.Precision.HIGHEST),
                                 ("bf16", jnp.bfloat16, None)):
    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    dot = jax.jit(functools.partial(jnp.dot, precision=precision)).lower(a, a).compile()
    seconds = _bench.median_seconds(lambda dot=dot, a=a: dot(a, a).block_until_ready(), reps)
    out[name] = 2.0 * n**3 / seconds
  return out


def numpy_peak(n: int = 2048, reps: int = 3) -> float:
  """NumPy's f32 matmul FLOP/s on this machine's CPU cores (scikit-learn's BLAS)."""
  import numpy as np
  a = np.random.default_rng(0).standard_normal((n, n), np.float32)
  return 2.0 * n**3 / _bench.median_seconds(lambda: a @ a, reps)


def machine() -> dict:
  import jax
  m = _bench.machine()
  m["blas"] = _bench.blas_info()
  m["default_matmul_precision"] = str(jax.config.jax_default_matmul_precision)
  return m


# ---------------------------------------------------------------- parts ---


def part_autoencoder(run: Run, name: str) -> dict:
  """One model through `training.fit` (autoencoders.py's protocol)."""
  import jax
  import numpy as np

  from unsupjax import training
  from unsupjax.models import autoencoder as ae
  from unsupjax.models import vae

  xtr = run.mnist("train").reshape(-1, 784)
  xte = run.mnist("test").reshape(-1, 784)
  init_key, fit_key, test_key, _ = jax.random.split(jax.random.PRNGKey(0), 4)
  module, config, batch, epochs = ((vae, vae.VAEConfig(), 128, run.sizes.vae_epochs)
                                   if name == "vae" else
                                   (ae, ae.AEConfig(), 256, run.sizes.ae_epochs))
  # One compiled initialiser instead of one program per eager op (same values).
  state = jax.jit(module.init_state, static_argnums=1)(init_key, config, xtr[:1])
  if name == "vae":
    state = vae.init_output_bias(state, xtr)
    eval_x = np.asarray(vae.binarize(test_key, xte))
  else:
    eval_x = xte
  step_flops = _step_flops(module.train_step, state, xtr[:batch], fit_key)
  peaks = run.peaks()
  result = training.fit(state, module.train_step, module.eval_step, xtr, eval_x, key=fit_key,
                        epochs=epochs, batch_size=batch, progress=False)
  times = [r["epoch_seconds"] for r in result.history]
  median = statistics.median(times[1:]) if len(times) > 1 else times[0]
  epoch_flops = step_flops * (len(xtr) // batch)
  achieved = epoch_flops / median
  # fit evaluated the final state on eval_x: its last record holds the test means.
  final = {k[len("test_"):]: v for k, v in result.history[-1].items() if k.startswith("test_")}
  row = {"model": name, "batch": batch, "epochs": epochs, "train_examples": len(xtr),
         "test_examples": len(xte), "compile_seconds": result.compile_seconds,
         "first_epoch_seconds": times[0], "median_epoch_seconds": median,
         "flops_per_step": step_flops, "flops_per_epoch": epoch_flops,
         "achieved_flops": achieved,
         **{f"pct_{k}_peak": 100 * achieved / v for k, v in peaks.items() if k != "n"}}
  if name == "vae":
    row["test_neg_elbo"] = final["neg_elbo"]
  else:
    row["test_mse"] = final["mse"]
    row["test_bce"] = final["bce"]
  return row


def _step_flops(step, *args) -> float:
  """FLOPs of one step from XLA's cost analysis of the lowered program
  (before optimisation: within 1% of the compiled one's, without a second
  compile); the compiled program's where the lowered one has none."""
  import jax
  lowered = jax.jit(step).lower(*args)
  cost = lowered.cost_analysis()
  if not cost or "flops" not in cost:
    cost = lowered.compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float((cost or {}).get("flops", float("nan")))


def part_kmeans(run: Run, previous: dict | None) -> dict:
  """Per-iteration Lloyd time, unsupjax against scikit-learn; each case is
  kept as it finishes, so a rerun measures only the missing ones."""
  import jax.numpy as jnp
  import kmeans_timing as kt   # benchmarks/
  import numpy as np
  from sklearn.cluster import kmeans_plusplus

  cases = dict((previous or {}).get("cases", {}))
  a, b = run.sizes.kmeans_iters
  reps = run.sizes.kmeans_reps
  peaks = run.peaks()
  np_peak = numpy_peak(512 if run.args.tiny else 2048)
  pending = []
  for name, kind, n, d, k in run.sizes.kmeans_cases:
    if name in cases:
      continue
    if run.remaining() < (2 if run.args.tiny else 20):
      pending.append(name)
      continue
    if kind == "mnist":
      x = run.mnist("train").reshape(-1, d)
      init, _ = kmeans_plusplus(x, k, random_state=0)
    else:
      x = kt.gaussian_data(n, d)
      init = x[np.random.default_rng(1).choice(n, k, replace=False)].copy()
    init = np.asarray(init, np.float32)
    run.log(f"kmeans {name}: n={len(x)} d={d} k={k}, iterations {a} and {b}")
    xj = jnp.asarray(x)
    (us_wall, us_cpu), us_iters, res = kt.ours_per_iter(x, xj, init, a, b, reps)
    (sk_wall, sk_cpu), sk_iters, est = kt.sklearn_per_iter(x, init, a, b, reps)
    flops = 2.0 * len(x) * d * k
    labels = np.asarray(res.labels)
    cases[name] = {
        "data": kind, "n": len(x), "d": d, "k": k, "iters": [a, b],
        "unsupjax_n_iter": us_iters, "sklearn_n_iter": sk_iters,
        "unsupjax_s_per_iter": us_wall, "sklearn_s_per_iter": sk_wall,
        "speedup": sk_wall / us_wall if us_wall > 0 else float("nan"),
        "sklearn_cpu_s_per_iter": sk_cpu, "unsupjax_cpu_s_per_iter": us_cpu,
        "unsupjax_pct_f32_highest_peak": 100 * flops / us_wall / peaks["f32_highest"],
        "sklearn_pct_numpy_peak": 100 * flops / sk_wall / np_peak,
        "label_agreement": float(np.mean(labels == est.labels_)),
        "unsupjax_inertia": float(res.inertia), "sklearn_inertia": float(est.inertia_),
        "inertia_rel_diff": float(res.inertia) / float(est.inertia_) - 1.0}
    run.log(f"  sklearn {sk_wall * 1e3:.3g} ms/iter, unsupjax {us_wall * 1e3:.3g} ms/iter, "
            f"labels agree {cases[name]['label_agreement']:.4f}")
  out = {"cases": cases, "numpy_f32_peak": np_peak, "f32_highest_peak": peaks["f32_highest"]}
  if pending:
    out["status"] = f"partial: no budget left for {', '.join(pending)}"
  return out


def part_compile(run: Run) -> dict:
  """benchmarks/compile.py in a subprocess, within the budget left."""
  json_path = run.out / "compile.json"
  cmd = [sys.executable, str(BENCH / "compile.py"), "--json", str(json_path),
         *run.sizes.compile_args]
  run.log(" ".join(cmd))
  limit = max(1.0, run.remaining())
  try:
    # This process holds most of the accelerator's memory: the child allocates on demand.
    env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false")
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=limit, check=False)
  except subprocess.TimeoutExpired:
    return {"status": f"failed: compile.py ran past the {limit:.0f} s of budget left"}
  if proc.returncode:
    return {"status": f"failed: compile.py exit {proc.returncode}",
            "stderr_tail": proc.stderr[-3000:]}
  out = {"command": cmd, "stdout": proc.stdout}
  if json_path.exists():
    out["json"] = json.loads(json_path.read_text())
  return out


@contextlib.contextmanager
def _tee():
  """Captures stdout and stderr while still printing them."""
  class Tee(io.TextIOBase):
    def __init__(self, stream, buf):
      self.stream, self.buf = stream, buf

    def write(self, s):
      self.stream.write(s)
      self.buf.write(s)
      return len(s)

    def flush(self):
      self.stream.flush()

  buf = io.StringIO()
  with contextlib.redirect_stdout(Tee(sys.stdout, buf)), \
       contextlib.redirect_stderr(Tee(sys.stderr, buf)):
    yield buf


def _cli(run: Run, argv: list[str]) -> tuple[int, str]:
  """(exit status, output tail) of `unsupjax ARGV` in this process; a run
  the user interrupted (exit 130) interrupts this script too."""
  from unsupjax import cli
  run.log("unsupjax " + " ".join(argv))
  with _tee() as buf:
    try:
      rc = cli.main(argv)
    except SystemExit as e:   # argparse
      rc = e.code if isinstance(e.code, int) else 2
  if rc == 130:
    raise KeyboardInterrupt
  return rc, buf.getvalue()[-2000:]


def _failed(out: dict, command: str, rc: int, tail: str) -> dict:
  """out, marked as failed by `unsupjax COMMAND` with exit status rc."""
  out["status"] = f"failed: unsupjax {command} exit {rc}"
  out["output_tail"] = tail
  return out


def _history(workdir: pathlib.Path) -> list[dict]:
  path = workdir / "metrics.jsonl"
  if not path.exists():
    return []
  records = []
  for line in path.read_text().splitlines():
    try:
      records.append(json.loads(line))
    except ValueError:
      pass
  return records


def _gan_data(run: Run, name: str, part_dir: pathlib.Path) -> tuple[str, list[str]]:
  """(--dataset, extra train flags): the dataset itself, or with --tiny an
  .npy of a few hundred images (DCGAN, sigmoid output, pac 2, batch 64:
  the image defaults the .npy path does not pick by itself)."""
  import numpy as np
  dataset = "stacked_mnist" if name == "stacked_mnist" else "mnist"
  if run.sizes.gan_subset is None:
    return dataset, ["--data-dir", run.data_dir, "--no-download"]
  path = part_dir / f"{dataset}_{run.sizes.gan_subset}.npy"
  if not path.exists():
    import jax

    from unsupjax import data
    x = run.mnist("train")[:run.sizes.gan_subset]
    if dataset == "stacked_mnist":
      x = data.stack_channels(jax.random.key(0), data.Dataset(x, None, "mnist"),
                              run.sizes.gan_subset).x
    part_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
      np.save(f, np.asarray(x, np.float32))
    os.replace(tmp, path)
  return str(path), ["--arch", "dcgan", "--output", "sigmoid", "--pac", "2",
                     "--batch-size", "64", "--lr", "2e-4", "--metric-samples", "50"]


def part_gan(run: Run, name: str, previous: dict | None) -> dict:
  """Trains the GAN default through the CLI in budget-sized chunks, then
  `unsupjax evaluate`; a rerun continues from the newest checkpoint."""
  try:
    from unsupjax import cli  # noqa: F401
    from unsupjax.tasks.registry import TRAIN_TASKS, load
    from unsupjax.training import checkpoint_epochs
    epochs_default = load(TRAIN_TASKS["gan"]).config.EPOCHS[
        "stacked_mnist" if name == "stacked_mnist" else "mnist"]
  except Exception as e:  # the CLI is being rewritten: report, run the rest
    return {"status": f"unavailable: {type(e).__name__}: {e}"}
  out = dict(previous or {})
  out.pop("status", None)
  chunks = out.setdefault("chunks", [])
  part_dir = run.out / name
  workdir = part_dir / "run"
  dataset, flags = _gan_data(run, name, part_dir)
  tiny = run.args.tiny
  fixed = run.sizes.gan_chunk     # epochs per chunk; 0: as many as the budget allows
  user_epochs = run.args.gan_epochs if name == "stacked_mnist" else run.args.mnist_gan_epochs
  target = user_epochs or (2 * fixed if tiny else epochs_default)
  out.update(dataset=dataset, target_epochs=target, default_epochs=epochs_default)
  common = ["--dataset", dataset, *flags, "--workdir", str(workdir), "--no-progress",
            "--metrics-every", str(1 if tiny else run.args.gan_metrics_every),
            "--checkpoint-every", str(GAN_CHECKPOINT_EVERY)]
  _unpack(run, name, workdir)
  done = (checkpoint_epochs(workdir) or [0])[-1]
  while done < target:
    left = run.remaining()
    if fixed or not chunks:
      n = fixed or 1                      # time one epoch first
    else:
      per_epoch, overhead = _gan_rates(chunks)
      n = math.floor((left - 2 * overhead) / per_epoch * 0.9)
      out["estimate"] = {"seconds_per_epoch": per_epoch, "overhead_seconds": overhead}
    n = min(n, target - done)
    if n < 1 or (not tiny and left < MIN_SECONDS[name]):
      out["status"] = (f"partial: epoch {done} of {target}; no budget left for another "
                       "chunk, rerun to continue")
      break
    argv = ["train", "gan", *common, "--epochs", str(done + n)]
    if done:
      argv.append("--resume")
    elif (workdir / "run.json").exists():   # a start killed before its first checkpoint
      argv.append("--overwrite")
    t = now()
    rc, tail = _cli(run, argv)
    wall = now() - t
    if rc:
      return _failed(out, "train gan", rc, tail)
    history = _history(workdir)
    ran = [r for r in history if done < r.get("epoch", 0) <= done + n]
    summary = json.loads((workdir / "summary.json").read_text())
    chunks.append({"from_epoch": done, "to_epoch": done + n, "wall_seconds": wall,
                   "train_seconds": sum(r.get("epoch_seconds", 0) + r.get("eval_seconds", 0)
                                        for r in ran),
                   "compile_seconds": summary.get("compile_seconds"),
                   "median_epoch_seconds": summary.get("median_epoch_seconds")})
    done = (checkpoint_epochs(workdir) or [0])[-1]
    out["epochs_done"] = done
    _pack(run, name, workdir)
    run.save_part(name, {**out, "status": f"partial: epoch {done} of {target}, training"})
  out["epochs_done"] = done
  out["trajectory"] = [{k: r[k] for k in ("epoch", "modes_covered", "reverse_kl", "fid")
                        if k in r} for r in _history(workdir)
                       if "reverse_kl" in r or "fid" in r]
  if done < target:
    return out
  if "eval" not in out or out["eval"].get("epoch") != done:
    if not tiny and chunks and run.remaining() < _gan_rates(chunks)[1]:
      out["status"] = f"partial: epoch {done} of {target}; evaluate left for a rerun"
      return out
    argv = ["evaluate", str(workdir), "--no-download"]
    if run.sizes.gan_subset:            # the .npy's held-out 10%
      argv += ["--samples", str(max(6, round(0.1 * run.sizes.gan_subset)))]
    rc, tail = _cli(run, argv)
    if rc:
      return _failed(out, "evaluate", rc, tail)
    out["eval"] = json.loads((workdir / "eval.json").read_text())
  ev = out["eval"]
  if name == "stacked_mnist":
    out["kl_goal"] = KL_GOAL
    out["kl_goal_met"] = bool(ev.get("reverse_kl", math.inf) < KL_GOAL)
  else:
    out["fid_floor"] = fid_floor(run)
    out["fid_over_floor"] = ev["fid"] / out["fid_floor"]
    out["fid_goal_met"] = bool(out["fid_over_floor"] <= FID_FLOOR_RATIO)
  chunk_walls = sum(c["wall_seconds"] for c in chunks)
  out["train_wall_seconds"] = chunk_walls
  medians = [c["median_epoch_seconds"] for c in chunks if c.get("median_epoch_seconds")]
  out["median_epoch_seconds"] = statistics.median(medians) if medians else None
  return out


def _pack(run: Run, name: str, workdir: pathlib.Path) -> None:
  """<out>/<name>.tar (and a copy in --copy-to): the run's files with only
  its newest checkpoint, all a rerun on a fresh machine needs (~10 MB)."""
  import tarfile

  from unsupjax.training import CHECKPOINT_DIR, checkpoint_epochs
  newest = str(checkpoint_epochs(workdir)[-1])
  path = run.out / f"{name}.tar"
  tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
  with tarfile.open(tmp, "w") as tar:
    for p in sorted(workdir.iterdir()):
      if p.name == CHECKPOINT_DIR:
        for c in sorted(p.iterdir()):
          if c.name == newest or not c.is_dir():
            tar.add(c, arcname=str(c.relative_to(workdir.parent)))
      else:
        tar.add(p, arcname=str(p.relative_to(workdir.parent)))
  os.replace(tmp, path)
  if run.args.copy_to:
    dest = pathlib.Path(run.args.copy_to) / path.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, dest.with_name(f".{dest.name}.tmp"))
    os.replace(dest.with_name(f".{dest.name}.tmp"), dest)


def _unpack(run: Run, name: str, workdir: pathlib.Path) -> None:
  """A run carried to a fresh machine as <out>/<name>.tar continues: it is
  unpacked when the work directory holds no checkpoint."""
  import tarfile

  from unsupjax.training import checkpoint_epochs
  path = run.out / f"{name}.tar"
  if checkpoint_epochs(workdir) or not path.exists():
    return
  run.log(f"{name}: unpacking {path}")
  with tarfile.open(path) as tar:
    if hasattr(tarfile, "data_filter"):   # refuses paths outside the folder, links, devices
      tar.extractall(workdir.parent, filter="data")
    else:
      if any(n.startswith(("/", "..")) or "/../" in n for n in tar.getnames()):
        raise ValueError(f"{path}: member paths outside {workdir.parent}")
      tar.extractall(workdir.parent)


def _gan_rates(chunks: list[dict]) -> tuple[float, float]:
  """(seconds per epoch, seconds of start-up and final report per chunk)
  from the chunks run so far: the start-up is the most any chunk spent
  outside its epochs; an epoch's cost is measured over the longest chunk
  (its periodic sample metrics included), else its training time + 25%."""
  overhead = max(c["wall_seconds"] - c["train_seconds"] for c in chunks)
  longest = max(chunks, key=lambda c: c["to_epoch"] - c["from_epoch"])
  n = longest["to_epoch"] - longest["from_epoch"]
  if n > 1:
    per_epoch = max((longest["wall_seconds"] - overhead) / n, longest["train_seconds"] / n)
  else:
    per_epoch = 1.25 * longest["train_seconds"] / max(n, 1)
  return max(per_epoch, 1e-3), max(overhead, 0.0)


def fid_floor(run: Run) -> float:
  """FID of real MNIST train[:10k] against the test split (the floor a
  perfect generator would reach; README: 0.0566 on the CPU)."""
  from unsupjax.metrics import features, fid
  n = run.sizes.floor_n
  return float(fid.fid(features.features(run.mnist("train")[:n]),
                       features.features(run.mnist("test")[:n])))


# --------------------------------------------------------------- report ---


def _f(v, fmt=".4g") -> str:
  return format(v, fmt) if isinstance(v, (int, float)) and not math.isnan(v) else "-"


def headline(name: str, r: dict) -> str:
  if not r.get("status", "").startswith((DONE, "partial")):
    return r.get("status", "")
  if name in ("ae", "vae"):
    s = (f"median epoch {_f(r.get('median_epoch_seconds'))} s, compile "
         f"{_f(r.get('compile_seconds'))} s, {_f(r.get('pct_f32_peak'), '.3g')}% of the f32 "
         f"matmul peak")
    if name == "vae":
      return s + f", test -ELBO {_f(r.get('test_neg_elbo'))} nats after {r.get('epochs')} epochs"
    return s + f", test MSE {_f(r.get('test_mse'))}"
  if name == "kmeans":
    return "; ".join(f"{k}: {_f(c['speedup'], '.3g')}x scikit-learn, labels agree "
                     f"{_f(c['label_agreement'], '.4f')}" for k, c in r.get("cases", {}).items())
  if name == "compile":
    cases = r.get("json", {}).get("cases", {})
    if not cases:
      return "see below"
    worst = max(cases.values(), key=lambda c: c["compile_s"])
    return (f"{len(cases)} steps; slowest cold compile {worst['step']}/{worst['batch']} "
            f"{worst['compile_s']:.3g} s")
  ev = r.get("eval", {})
  s = f"epoch {r.get('epochs_done')} of {r.get('target_epochs')}"
  if name == "stacked_mnist" and ev:
    s += (f": modes {ev.get('modes_covered')}/1000, KL {_f(ev.get('reverse_kl'))} "
          f"(goal < {KL_GOAL}: {'met' if r.get('kl_goal_met') else 'not met'}), "
          f"FID {_f(ev.get('fid'))}")
  if name == "mnist_gan" and ev:
    s += (f": FID {_f(ev.get('fid'))} = {_f(r.get('fid_over_floor'), '.3g')}x the floor "
          f"{_f(r.get('fid_floor'))} (goal <= {FID_FLOOR_RATIO:g}x: "
          f"{'met' if r.get('fid_goal_met') else 'not met'})")
  return s


def markdown(results: dict) -> str:
  parts = results["parts"]
  inv = results["invocations"][-1] if results["invocations"] else {}
  lines = ["# Accelerator run" + (" (--tiny: a CPU check, not a measurement)"
                                  if results.get("tiny") else ""), ""]
  m = inv.get("machine") or {}
  if m:
    lines.append(f"Machine: JAX {m.get('jax')} on {m.get('backend')} ({m.get('device')}, "
                 f"{m.get('devices')} device(s)); {m.get('cores')} CPU cores, {m.get('cpu')}; "
                 f"BLAS {m.get('blas')}.")
  pk = inv.get("peaks")
  if pk:
    lines.append(f"Matmul peak measured in the same run ({pk['n']}^3 jnp.dot): f32 "
                 f"{pk['f32'] / 1e12:.4g} TFLOP/s (default precision), f32 HIGHEST "
                 f"{pk['f32_highest'] / 1e12:.4g}, bf16 {pk['bf16'] / 1e12:.4g}.")
  lines += ["", _bench.markdown_table(
      ["part", "status", "result", "wall (s)"],
      [[p, parts[p].get("status", "").split(":")[0], headline(p, parts[p]),
        _f(parts[p].get("wall_seconds"), ".1f")] for p in PARTS if p in parts])]
  ae_rows = [parts[p] for p in ("ae", "vae") if parts.get(p, {}).get("status") == DONE]
  if ae_rows:
    lines += ["", "## Dense AE and VAE on MNIST (training.fit)", "", _bench.markdown_table(
        ["model", "batch", "epochs", "compile (s)", "first epoch (s)", "median epoch (s)",
         "GFLOP/epoch", "TFLOP/s", "% f32 peak", "% bf16 peak", "test MSE",
         "test -ELBO (nats)"],
        [[r["model"], r["batch"], r["epochs"], r["compile_seconds"], r["first_epoch_seconds"],
          r["median_epoch_seconds"], r["flops_per_epoch"] / 1e9, r["achieved_flops"] / 1e12,
          r["pct_f32_peak"], r["pct_bf16_peak"], r.get("test_mse", "-"),
          r.get("test_neg_elbo", "-")] for r in ae_rows])]
  cases = parts.get("kmeans", {}).get("cases", {})
  if cases:
    lines += ["", ("## k-means per Lloyd iteration: accelerator vs scikit-learn on the "
                   "CPU cores"), "", _bench.markdown_table(
                  ["case", "n", "d", "k", "iterations (a, b)", "scikit-learn ms/iter",
                   "unsupjax ms/iter", "speed-up", "unsupjax % f32 HIGHEST peak",
                   "labels agreeing", "inertia rel. diff"],
                  [[k, c["n"], c["d"], c["k"], f"{c['iters'][0]}, {c['iters'][1]}",
                    c["sklearn_s_per_iter"] * 1e3, c["unsupjax_s_per_iter"] * 1e3,
                    f"{c['speedup']:.3g}x", c["unsupjax_pct_f32_highest_peak"],
                    f"{c['label_agreement']:.4f}", f"{c['inertia_rel_diff']:.2g}"]
                   for k, c in cases.items()])]
  for p, title in (("mnist_gan", "MNIST DCGAN (default)"),
                   ("stacked_mnist", "Stacked MNIST GAN (default)")):
    r = parts.get(p)
    if not r or "chunks" not in r:
      continue
    lines += ["", f"## {title}", "", headline(p, r), "",
              _bench.markdown_table(
                  ["chunk epochs", "wall (s)", "train (s)", "compile (s)", "median epoch (s)"],
                  [[f"{c['from_epoch']} -> {c['to_epoch']}", c["wall_seconds"],
                    c["train_seconds"], c.get("compile_seconds"),
                    c.get("median_epoch_seconds")] for c in r["chunks"]])]
    traj = [t for t in r.get("trajectory", []) if "reverse_kl" in t or "fid" in t]
    if traj:
      lines += ["", "In training: " + "; ".join(
          f"epoch {t['epoch']}: " + ", ".join(f"{k} {_f(t[k])}" for k in
                                              ("modes_covered", "reverse_kl", "fid") if k in t)
          for t in traj)]
  if parts.get("compile", {}).get("stdout"):
    lines += ["", "## benchmarks/compile.py", "", parts["compile"]["stdout"].strip()]
  return "\n".join(lines) + "\n"


# ----------------------------------------------------------------- main ---


def run_part(run: Run, name: str) -> None:
  previous = run.results["parts"].get(name)
  more = {"stacked_mnist": run.args.gan_epochs, "mnist_gan": run.args.mnist_gan_epochs}.get(name)
  if previous and previous.get("status") == DONE and not (
      more and more > previous.get("epochs_done", 0)):    # a GAN asked to train on
    run.log(f"{name}: done in an earlier run, skipped")
    return
  need = 1 if run.args.tiny else MIN_SECONDS[name]
  if run.remaining() < need:
    run.log(f"{name}: {run.remaining():.0f} s of budget left, needs ~{need} s: left for a rerun")
    run.save_part(name, {**(previous or {}),
                         "status": f"pending: {run.remaining():.0f} s of budget left at its "
                                   f"turn; rerun with the same --out"})
    return
  run.log(f"{name}: start")
  t, cpu = now(), time.process_time()
  try:
    if name in ("ae", "vae"):
      r = part_autoencoder(run, name)
    elif name == "kmeans":
      r = part_kmeans(run, previous)
    elif name == "compile":
      r = part_compile(run)
    else:
      r = part_gan(run, name, previous)
  except KeyboardInterrupt:
    raise
  except Exception as e:
    r = {**(previous or {}), "status": f"failed: {type(e).__name__}: {e}",
         "traceback": traceback.format_exc()[-4000:]}
  r.setdefault("status", DONE)
  r["wall_seconds"] = (previous or {}).get("wall_seconds", 0.0) + now() - t
  r["process_cpu_seconds"] = time.process_time() - cpu   # this invocation's, all threads
  r["invocation"] = len(run.results["invocations"])
  if run._peaks is not None:
    r["peaks"] = run._peaks
  run.save_part(name, r)
  run.log(f"{name}: {r['status'][:200]} ({now() - t:.1f} s)")


def write_mnist_npz(path: str, data_dir: str) -> None:
  """MNIST train and test as uint8 arrays xtr, ytr, xte, yte (compressed)."""
  import numpy as np

  from unsupjax import data
  arrays = {}
  for split, suffix in (("train", "tr"), ("test", "te")):
    ds = data.load("mnist", split, data_dir=data_dir, download=False)
    arrays["x" + suffix] = np.rint(ds.x[..., 0] * 255).astype(np.uint8)
    arrays["y" + suffix] = ds.y
  tmp = pathlib.Path(path).with_name(f".{pathlib.Path(path).name}.{os.getpid()}.tmp.npz")
  tmp.parent.mkdir(parents=True, exist_ok=True)
  np.savez_compressed(tmp, **arrays)
  os.replace(tmp, path)
  print(f"wrote {path} ({os.path.getsize(path) / 2**20:.1f} MiB)")


def seed_loader_cache(npz: str) -> str:
  """Puts the npz's splits into unsupjax's decoded-data cache as MNIST of a
  data directory named after the file, and returns that directory: the CLI
  given `--data-dir` it then loads them without TFDS. The cache is derived
  data, so it is rewritten from the file each time."""
  import numpy as np

  from unsupjax import data
  data_dir = str(pathlib.Path(npz).resolve())
  with np.load(npz) as z:
    for split, suffix in (("train", "tr"), ("test", "te")):
      path = data._cache_path(data.default_cache_dir(), "mnist", split, data_dir)
      path.parent.mkdir(parents=True, exist_ok=True)
      arrays = {"images": z["x" + suffix].reshape(-1, 28, 28, 1)}
      if "y" + suffix in z.files:
        arrays["labels"] = z["y" + suffix].astype(np.int32)
      tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
      np.savez(tmp, **arrays)
      os.replace(tmp, path)
  return data_dir


def parse_args(argv: list[str]) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--budget-seconds", type=float, default=480.0,
                 help="stop starting work after this many seconds (default: 480)")
  p.add_argument("--out", default=str(DEFAULT_OUT),
                 help="results folder; a rerun with the same folder skips finished parts")
  p.add_argument("--parts", default=",".join(PARTS),
                 help=f"comma-separated, run in this order: {','.join(PARTS)}")
  p.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR),
                 help="TFDS data directory holding prepared MNIST")
  p.add_argument("--mnist-npz", default=None,
                 help="MNIST as uint8 xtr, xte (+ ytr, yte) instead of TFDS")
  p.add_argument("--write-mnist-npz", default=None, metavar="FILE",
                 help="write --data-dir's MNIST to FILE for --mnist-npz and exit")
  p.add_argument("--tiny", action="store_true", help="seconds on a CPU: checks the script")
  p.add_argument("--gan-epochs", type=int, default=None,
                 help="Stacked MNIST epochs to reach (default: the CLI's, 140)")
  p.add_argument("--mnist-gan-epochs", type=int, default=None,
                 help="MNIST GAN epochs (default: the CLI's, 20)")
  p.add_argument("--gan-metrics-every", type=int, default=10,
                 help="epochs between the in-training sample metrics (default: 10)")
  p.add_argument("--copy-to", default=None,
                 help="also write results.json and results.md here after every part")
  args = p.parse_args(argv)
  args.argv = list(argv)
  parts = [s for s in args.parts.split(",") if s]
  bad = [s for s in parts if s not in PARTS]
  if bad or not parts:
    p.error(f"--parts: expected names from {','.join(PARTS)}, got {args.parts!r}")
  args.parts = [s for s in PARTS if s in parts]
  if args.budget_seconds <= 0:
    p.error(f"--budget-seconds: expected a positive number, got {args.budget_seconds}")
  return args


def main(argv: list[str] | None = None) -> int:
  args = parse_args(list(sys.argv[1:] if argv is None else argv))
  if args.write_mnist_npz:
    write_mnist_npz(args.write_mnist_npz, args.data_dir)
    return 0
  try:
    run = Run(args)
  except ValueError as e:
    print(f"accelerator.py: error: {e}", file=sys.stderr)
    return 2
  if args.mnist_npz:
    run.data_dir = seed_loader_cache(args.mnist_npz)
  run.invocation["machine"] = machine()
  run.log(f"JAX on {run.invocation['machine']['backend']} "
          f"({run.invocation['machine']['device']}); budget {args.budget_seconds:.0f} s; "
          f"parts {','.join(args.parts)}; out {run.out}")
  run.save()
  try:
    for name in args.parts:
      run_part(run, name)
  except KeyboardInterrupt:
    run.log("interrupted; finished parts and the GAN checkpoints are kept")
    run.save()
    return 130
  run.save()
  print(markdown(run.results))
  print(f"Results: {run.out / RESULTS_JSON}, {run.out / RESULTS_MD}")
  print(f"On a GPU machine run: {GPU_COMMAND}  (first, here: python benchmarks/accelerator.py "
        f"--write-mnist-npz runs/mnist_uint8.npz; carry that file)")
  return 0


if __name__ == "__main__":
  _bench.reexec_without_blas_throttles()  # scikit-learn's BLAS at full speed
  sys.exit(main())
