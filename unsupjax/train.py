"""The training loop every unsupjax model runs through.

Offers `fit`, which knows only the contract

    state, metrics = train_step(state, batch, key)   # pure, unjitted
    values = eval_step(state, batch)                 # dict of f32[batch]

and does the rest: compiles the step once; runs each epoch as one compiled
`lax.scan` over device-resident, keyed-shuffled batches (or, when the data
does not fit on the device, a loop over host batches with the same order);
evaluates in padded batches; logs one JSON object per epoch to
`metrics.jsonl` and to a tqdm bar; writes orbax checkpoints atomically;
resumes exactly (an interrupted and resumed run ends with bit-identical
parameters); and stops on a NaN/Inf loss keeping the last good checkpoint.
`enable_compilation_cache` turns on JAX's persistent compilation cache.

Multi-device and multi-process runs (`parallel='pmap'` or `'sharded'`) use
the wrappers of `unsupjax.parallel`: the same batches, the same per-example
randomness and the same gradients as the one-device run; only the first
process writes `metrics.jsonl`, and orbax writes each checkpoint once.

Does not offer: model-specific logic (no model is imported here).

Randomness: `key` is split into a data key (epoch orders via
`data.epoch_permutation(data_key, epoch, n)`) and a step key passed
unchanged to every `train_step`, which derives per-step keys with
`fold_in(key, state.step)`. Both depend only on (key, epoch, step), never on
how many epochs ran in this process, which is what makes resume exact.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from unsupjax import data as data_lib

TrainStep = Callable[[Any, jax.Array, jax.Array], tuple[Any, Mapping[str, jax.Array]]]
EvalStep = Callable[[Any, jax.Array], Mapping[str, jax.Array]]

METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"
DEFAULT_EVAL_BATCH = 1000


class TrainingDiverged(RuntimeError):
  """The training loss became NaN/Inf; the last good checkpoint was kept."""

  def __init__(self, epoch: int, last_checkpoint: int | None, metrics: dict):
    self.epoch = epoch
    self.last_checkpoint = last_checkpoint
    self.metrics = metrics
    where = (f"the last good checkpoint (epoch {last_checkpoint}) is kept"
             if last_checkpoint is not None else "no checkpoint had been written")
    super().__init__(
        f"training loss became non-finite in epoch {epoch} "
        f"({_fmt(metrics)}); stopped, {where}")


class FitResult(NamedTuple):
  state: Any
  history: list[dict]          # one record per epoch run in this call
  compile_seconds: float       # tracing + XLA compilation of train and eval
  wall_seconds: float          # the whole call
  start_epoch: int             # epochs already done before this call (resume)


def enable_compilation_cache(path: str | os.PathLike) -> None:
  """Turns on JAX's persistent compilation cache in `path` (every program).

  A second run of the same command then loads its compiled programs instead
  of recompiling them.
  """
  path = pathlib.Path(path).expanduser()
  path.mkdir(parents=True, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", str(path))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def _fmt(metrics: Mapping[str, Any]) -> str:
  return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                   for k, v in metrics.items())


def _to_python(tree: Mapping[str, Any]) -> dict:
  return {k: float(v) for k, v in jax.device_get(dict(tree)).items()}


# --------------------------------------------------------------------------
# Compiled pieces.


def make_epoch_fn(train_step: TrainStep, batch_size: int) -> Callable:
  """(state, x, data_key, step_key, epoch) -> (state, mean metrics).

  x: f32[n, ...] on device, or a pytree of such arrays sharing n. One
  `lax.scan` over the epoch's n // batch_size whole batches; each step
  gathers its batch from x on device, so nothing crosses the host boundary
  inside an epoch.
  """

  steps_fn = make_steps_fn(train_step)

  def epoch_fn(state, x, data_key, step_key, epoch):
    idx = data_lib.batch_indices(data_key, epoch, num_examples(x), batch_size)
    return steps_fn(state, x, idx, step_key)

  return epoch_fn


def make_steps_fn(train_step: TrainStep) -> Callable:
  """(state, x, ids int[m, b], key) -> (state, mean metrics): m steps as one
  `lax.scan`, step i gathering its batch x[ids[i]] on device (x an array or
  a pytree of arrays sharing the leading axis)."""

  def steps_fn(state, x, ids, key):
    def body(state, row):
      return train_step(state, take(x, row), key)

    state, metrics = jax.lax.scan(body, state, ids)
    return state, jax.tree.map(lambda m: jnp.mean(m, axis=0), metrics)

  return steps_fn


def take(x, ids):
  """Rows `ids` of x, an array or a pytree of arrays sharing the leading axis."""
  return jax.tree.map(lambda a: jnp.take(a, ids, axis=0), x)


def num_examples(x) -> int:
  """The leading size shared by every leaf of x (an array or a pytree)."""
  sizes = {int(np.shape(a)[0]) for a in jax.tree.leaves(x)}
  if len(sizes) != 1:
    raise ValueError(f"train_x: expected arrays sharing one leading size, got sizes {sorted(sizes)}")
  return sizes.pop()


def _nbytes(x) -> int:
  return sum(int(np.asarray(a).nbytes) for a in jax.tree.leaves(x))


def _pad_batches(x, batch_size: int):
  """x: [n, ...] (or a pytree of them) -> (x padded to [nb, batch_size, ...],
  mask f32[nb, batch_size])."""
  n = num_examples(x)
  nb = max(1, math.ceil(n / batch_size))
  pad = nb * batch_size - n

  def pad_one(a):
    a = np.asarray(a)
    ap = np.concatenate([a, np.zeros((pad,) + a.shape[1:], a.dtype)]) if pad else a
    return ap.reshape((nb, batch_size) + a.shape[1:])

  mask = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
  return jax.tree.map(pad_one, x), mask.reshape(nb, batch_size)


def make_eval_fn(eval_step: EvalStep) -> Callable:
  """(state, xb f32[nb, b, ...], mask f32[nb, b]) -> dict of dataset means."""

  def eval_fn(state, xb, mask):
    def body(carry, inputs):
      batch, m = inputs
      values = eval_step(state, batch)
      return carry, jax.tree.map(lambda v: jnp.sum(v * m), values)

    _, sums = jax.lax.scan(body, None, (xb, mask))
    count = jnp.sum(mask)
    return jax.tree.map(lambda s: jnp.sum(s) / count, sums)

  return eval_fn


def evaluate(state, eval_step: EvalStep, x: np.ndarray,
             batch_size: int = DEFAULT_EVAL_BATCH) -> dict[str, float]:
  """Dataset means of `eval_step`'s per-example values over all of x.

  Reuses the program `fit` compiled for the same eval_step and shapes (a
  run's final evaluation does not compile again).
  """
  xb, mask = _pad_batches(x, min(batch_size, num_examples(x)))
  xb, mask = jax.device_put(xb), jax.device_put(mask)
  return _to_python(compiled_eval_fn(eval_step, state, xb, mask)(state, xb, mask))


# XLA options for the library's compiled steps on the CPU backend: LLVM
# optimisation level 1 instead of XLA's default. On this project's 2-core
# CPU the cold compiles took 0.76-1.05x as long (DCGAN 2.87 -> 2.48 s)
# and the steps 0.92-1.06x, within noise (benchmarks/compile.py
# --compare-xla-defaults times both in one run).
# UNSUPJAX_CPU_COMPILER_OPTIONS=0 turns it off; a jaxlib that no longer
# knows the option compiles with XLA's defaults (and says so once).
CPU_COMPILER_OPTIONS = {"xla_backend_optimization_level": 1}
_COMPILER_OPTIONS_OK = [True]


def compiler_options() -> dict | None:
  """The XLA options `compile_lowered` uses: CPU_COMPILER_OPTIONS on the
  CPU backend (unless UNSUPJAX_CPU_COMPILER_OPTIONS=0), else None."""
  if (jax.default_backend() != "cpu" or not _COMPILER_OPTIONS_OK[0]
      or os.environ.get("UNSUPJAX_CPU_COMPILER_OPTIONS", "1") == "0"):
    return None
  return dict(CPU_COMPILER_OPTIONS)


def compile_lowered(lowered):
  """lowered.compile() with `compiler_options()`."""
  options = compiler_options()
  if options:
    try:
      return lowered.compile(compiler_options=options)
    except jax.errors.JaxRuntimeError as e:
      if "No such compile option" not in str(e):
        raise
      _COMPILER_OPTIONS_OK[0] = False
      print(f"unsupjax: this jaxlib does not take {sorted(options)} ({e}); compiling "
            f"with XLA's defaults", file=sys.stderr)
  return lowered.compile()


_EVAL_PROGRAMS: dict = {}
_EVAL_PROGRAMS_MAX = 16


def compiled_eval_fn(eval_step: EvalStep, state, xb, mask) -> Callable:
  """The compiled `make_eval_fn(eval_step)` for these arguments' structure,
  shapes, dtypes and placements, compiled on first use and kept (a few)."""
  args = (state, xb, mask)
  key = (eval_step, jax.tree.structure(args),
         tuple((np.shape(a), getattr(a, "dtype", None), getattr(a, "sharding", None))
               for a in jax.tree.leaves(args)))
  try:
    hash(key)
  except TypeError:  # unhashable static fields: compile without keeping it
    return compile_lowered(jax.jit(make_eval_fn(eval_step)).lower(*args))
  if key not in _EVAL_PROGRAMS:
    if len(_EVAL_PROGRAMS) >= _EVAL_PROGRAMS_MAX:
      _EVAL_PROGRAMS.pop(next(iter(_EVAL_PROGRAMS)))
    _EVAL_PROGRAMS[key] = compile_lowered(jax.jit(make_eval_fn(eval_step)).lower(*args))
  return _EVAL_PROGRAMS[key]


MODES = ("scan", "loop", "stream")


def _sub_jaxprs(params):
  for v in params.values():
    for item in (v if isinstance(v, (list, tuple)) else (v,)):
      if hasattr(item, "eqns"):
        yield item
      elif hasattr(item, "jaxpr") and hasattr(item.jaxpr, "eqns"):
        yield item.jaxpr


def _has_convolution(jaxpr) -> bool:
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "conv_general_dilated":
      return True
    if any(_has_convolution(sub) for sub in _sub_jaxprs(eqn.params)):
      return True
  return False


def _on_device_mode(jaxpr) -> str:
  """'loop' for a program with convolutions on CPU (jax-ml/jax#12868), else 'scan'."""
  if jax.default_backend() == "cpu" and _has_convolution(jaxpr):
    return "loop"
  return "scan"


def choose_mode(train_step: TrainStep, state, batch, key, nbytes: int) -> str:
  """The epoch mode `fit` picks when given none (see `fit`); traces the step."""
  if not _fits_on_device(nbytes):
    return "stream"
  batch = jax.tree.map(jnp.asarray, batch)
  return _on_device_mode(jax.make_jaxpr(train_step)(state, batch, key).jaxpr)


def _fits_on_device(nbytes: int) -> bool:
  device = jax.local_devices()[0]
  if device.platform == "cpu":
    return True
  try:
    limit = device.memory_stats()["bytes_limit"]
  except Exception:  # backends without memory stats
    return nbytes < 2**30
  return nbytes < limit // 4


# --------------------------------------------------------------------------
# Checkpoints.


class Checkpointer:
  """Orbax checkpoints of (state, loop position) under `directory`.

  Orbax writes each checkpoint into a temporary directory and renames it when
  complete, so a process killed mid-write leaves no checkpoint that restores
  wrong; leftovers are removed when the training loop next opens the
  directory. `read_only=True` (evaluation, reading a pretrained run) creates,
  removes and cleans up nothing, so it is safe beside a run that is writing
  a checkpoint into the same directory.
  """

  def __init__(self, directory: pathlib.Path, max_to_keep: int = 3, *,
               read_only: bool = False):
    import orbax.checkpoint as ocp
    self._ocp = ocp
    self.manager = ocp.CheckpointManager(
        directory.absolute(),
        # Not orbax's own read_only option, which logs warnings on every open;
        # a reader never saves, so not creating and not cleaning is enough.
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=not read_only,
            cleanup_tmp_directories=not read_only,
            # Synchronous: the next epoch donates the state's buffers.
            enable_async_checkpointing=False))

  def latest_epoch(self) -> int | None:
    return self.manager.latest_step()

  def epochs(self) -> list[int]:
    """The epochs with a checkpoint here, ascending."""
    return sorted(int(e) for e in self.manager.all_steps())

  def save(self, epoch: int, state, meta: dict) -> None:
    ocp = self._ocp
    self.manager.save(epoch, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
        force=True)
    self.manager.wait_until_finished()

  def restore(self, epoch: int, like) -> tuple[Any, dict]:
    ocp = self._ocp
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    out = self.manager.restore(epoch, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
    return out["state"], out["meta"]

  def close(self) -> None:
    self.manager.close()


def checkpoint_epochs(workdir: str | os.PathLike) -> list[int]:
  """The epochs of the checkpoints saved in `workdir`, ascending."""
  ckpt = Checkpointer(pathlib.Path(workdir) / CHECKPOINT_DIR, read_only=True)
  try:
    return ckpt.epochs()
  finally:
    ckpt.close()


def restore_state(workdir: str | os.PathLike, like, epoch: int | None = None):
  """Restores the state saved in `workdir` (latest epoch by default).

  like: a state of the same structure (e.g. from the model's init_state),
  which supplies shapes, dtypes and the non-array fields.
  """
  ckpt = Checkpointer(pathlib.Path(workdir) / CHECKPOINT_DIR, read_only=True)
  try:
    epoch = ckpt.latest_epoch() if epoch is None else epoch
    if epoch is None:
      raise FileNotFoundError(f"no checkpoint in {workdir}")
    state, _ = ckpt.restore(epoch, like)
    return state
  finally:
    ckpt.close()


def _read_history(path: pathlib.Path, upto_epoch: int) -> list[dict]:
  if not path.exists():
    return []
  records = []
  with open(path) as f:
    for line in f:
      line = line.strip()
      if not line:
        continue
      try:
        rec = json.loads(line)
      except ValueError:
        break  # a write cut short by a kill: only ever the last line
      if rec.get("epoch", 0) <= upto_epoch:
        records.append(rec)
  return records


# --------------------------------------------------------------------------
# The loop.


def fit(state, train_step: TrainStep, eval_step: EvalStep | None,
        train_x: np.ndarray, eval_x: np.ndarray | None = None, *,
        key: jax.Array, epochs: int, batch_size: int,
        eval_batch_size: int = DEFAULT_EVAL_BATCH,
        workdir: str | os.PathLike | None = None,
        checkpoint_every: int = 1, max_to_keep: int = 3, resume: bool = False,
        progress: bool = True, desc: str = "train",
        epoch_callback: Callable[[int, Any], Mapping[str, Any]] | None = None,
        mode: str | None = None,
        log: Callable[[str], None] | None = None,
        parallel: str | None = None, model_axis: int = 1) -> FitResult:
  """Trains `state` for `epochs` epochs over `train_x`.

  Args:
    state: the model's train state (a pytree with a `step` field).
    train_step: pure `(state, batch f32[b, ...], key) -> (state, metrics)`,
      metrics a dict of scalars; its `loss` is checked for NaN/Inf.
    eval_step: pure `(state, batch) -> dict of f32[b]` per-example values, or
      None; evaluated on `eval_x` after every epoch.
    train_x: f32[n, ...] host array of training examples (no labels: the
      loop trains unsupervised models), or a pytree of host arrays sharing
      the leading n (e.g. `{"x": images, "index": arange(n)}` for a step
      that looks up per-example state); batches keep the pytree's structure.
      In a multi-process run: this process's shard (equal sizes everywhere).
    eval_x: f32[m, ...] held-out examples (or a pytree, as train_x), or None.
      In a multi-process run every process passes the same eval_x.
    key: the run's PRNG key (see the module docstring).
    epochs: total epochs of the run (a resumed run continues up to it).
    batch_size: examples per step (the global batch over every device and
      process); n // (batch_size / processes) steps per epoch.
    workdir: where `metrics.jsonl` and `checkpoints/` go; None: nowhere.
    checkpoint_every: save every this many epochs (and after the last).
    resume: continue from the latest checkpoint in `workdir`.
    progress: show a tqdm bar on stderr.
    epoch_callback: `(epoch, state) -> dict` of extra values to log.
    mode: how an epoch runs. 'scan': one compiled `lax.scan` over
      device-resident data; 'loop': a Python loop over one compiled step,
      data on device; 'stream': the same loop feeding host batches. None
      picks 'stream' when the data does not fit in device memory, else
      'loop' for a step with convolutions on CPU (XLA:CPU runs convolutions
      inside loop bodies an order of magnitude slower, jax-ml/jax#12868),
      else 'scan'. All three see the same batches in the same order.
      pmap runs 'loop' or 'stream'; several processes run 'stream'.
    log: a function that prints a line (default: tqdm.write on stderr).
    parallel: None, 'none', 'pmap' or 'sharded' (see `unsupjax.parallel`);
      None is 'sharded' when more than one device is visible. batch_size
      must then be a multiple of the device count. Every mode sees the same
      global batches and, for the library's steps, the same randomness, so
      it ends with the one-device parameters up to float rounding.
    model_axis: with 'sharded', devices along the mesh's 'model' axis: large
      weight matrices (and their optimizer moments) are split over them.

  Returns:
    FitResult. Raises TrainingDiverged on a non-finite loss.
  """
  from tqdm.auto import tqdm

  from unsupjax import parallel as par_lib

  t_start = time.perf_counter()
  par = par_lib.resolve(parallel)
  nproc = jax.process_count()
  lead = jax.process_index() == 0
  n = num_examples(train_x)
  if nproc > 1 and par == "none":
    raise ValueError(f"parallel: a run over {nproc} processes needs 'pmap' or "
                     "'sharded', got 'none'")
  if par == "none":
    local_batch = batch_size
  else:
    if batch_size < 1:
      raise ValueError(f"batch_size: expected a positive integer, got {batch_size}")
    par_lib.check_batch_size(batch_size, par_lib.batch_split(par, model_axis))
    local_batch = batch_size // nproc
  if local_batch < 1 or local_batch > n:
    raise ValueError(f"batch_size: expected 1..{n * nproc} (training examples), got {batch_size}")
  if epochs < 1:
    raise ValueError(f"epochs: expected a positive integer, got {epochs}")
  if checkpoint_every < 1:
    raise ValueError(f"checkpoint_every: expected >= 1, got {checkpoint_every}")
  if resume and workdir is None:
    raise ValueError("resume: needs a workdir to resume from")
  if mode is not None and mode not in MODES:
    raise ValueError(f"mode: expected one of {MODES} or None, got {mode!r}")
  if par == "pmap" and model_axis != 1:
    raise ValueError(f"model_axis: only 'sharded' splits parameters, got {model_axis} with 'pmap'")
  if nproc > 1 and mode not in (None, "stream"):
    raise ValueError(f"mode: a run over {nproc} processes streams each process's "
                     f"own data ('stream'), got {mode!r}")
  log = log or (lambda s: tqdm.write(s, file=sys.stderr))
  if not lead:
    log, progress = (lambda s: None), False

  data_key, step_key = jax.random.split(key)
  idx_fn = jax.jit(data_lib.batch_indices, static_argnums=(2, 3))
  steps_per_epoch = n // local_batch

  # Compile once, up front, and time it.
  t0 = time.perf_counter()
  runner = make_runner(train_step, state, train_x, step_key, batch_size=local_batch,
                       steps=steps_per_epoch, mode=mode, parallel=par,
                       model_axis=model_axis)
  state = runner.place(state)
  compiled_eval = None
  if eval_step is not None and eval_x is not None:
    eb, emask = _pad_batches(eval_x, min(eval_batch_size, num_examples(eval_x)))
    eb, emask = runner.put_view((eb, emask))
    compiled_eval = compiled_eval_fn(eval_step, runner.host(state), eb, emask)
  compile_seconds = time.perf_counter() - t0

  workdir = pathlib.Path(workdir) if workdir is not None else None
  ckpt = None
  start_epoch = 0
  history: list[dict] = []
  if workdir is not None:
    if lead:
      workdir.mkdir(parents=True, exist_ok=True)
    ckpt = Checkpointer(workdir / CHECKPOINT_DIR, max_to_keep=max_to_keep)
    latest = ckpt.latest_epoch()
    if resume and latest is not None:
      restored, meta = ckpt.restore(latest, runner.saved(runner.host(state)))
      state = runner.place(restored)
      start_epoch = int(meta["epoch"])
      log(f"resumed from epoch {start_epoch} in {workdir}")
    # Keep only the records the restored state had seen.
    if lead:
      kept = _read_history(workdir / METRICS_FILE, start_epoch)
      with open(workdir / METRICS_FILE, "w") as f:
        for rec in kept:
          f.write(json.dumps(rec) + "\n")

  metrics_path = workdir / METRICS_FILE if (workdir is not None and lead) else None
  last_saved = start_epoch if (ckpt is not None and start_epoch > 0) else None
  bar = tqdm(total=epochs, initial=start_epoch, desc=desc, unit="epoch",
             disable=not progress, file=sys.stderr, dynamic_ncols=True)
  try:
    for epoch in range(start_epoch + 1, epochs + 1):
      t_epoch = time.perf_counter()
      ids = idx_fn(data_key, epoch, n, local_batch)
      state, train_metrics = runner.run(state, ids)
      epoch_seconds = time.perf_counter() - t_epoch
      view = runner.host(state)

      record: dict[str, Any] = {"epoch": epoch,
                                "step": int(jax.device_get(view.step))}
      record.update({f"train_{k}": v for k, v in train_metrics.items()})
      if not all(math.isfinite(v) for v in train_metrics.values()):
        raise TrainingDiverged(epoch, last_saved, train_metrics)
      if compiled_eval is not None:
        t_eval = time.perf_counter()
        test_metrics = _to_python(compiled_eval(view, eb, emask))
        record.update({f"test_{k}": v for k, v in test_metrics.items()})
        record["eval_seconds"] = time.perf_counter() - t_eval
      record["epoch_seconds"] = epoch_seconds
      if epoch_callback is not None:
        record.update(epoch_callback(epoch, view))

      # The record goes to disk before the checkpoint: a kill between the
      # two re-runs this epoch on resume (its record is dropped), while the
      # other order could leave a checkpoint whose record was never written.
      if metrics_path is not None:
        with open(metrics_path, "a") as f:
          f.write(json.dumps(record) + "\n")
      if ckpt is not None and (epoch % checkpoint_every == 0 or epoch == epochs):
        ckpt.save(epoch, runner.saved(view), {"epoch": epoch, "step": record["step"]})
        last_saved = epoch
      history.append(record)
      bar.set_postfix({k: f"{v:.4g}" for k, v in record.items()
                       if k in ("train_loss", "test_loss")})
      bar.update(1)
  finally:
    bar.close()
    if ckpt is not None:
      ckpt.close()
  return FitResult(runner.host(state), history, compile_seconds,
                   time.perf_counter() - t_start, start_epoch)


# A step's metrics added to the running sums in one dispatch, not one per
# metric (over several processes, each is a program every process runs).
_add_trees = jax.jit(lambda a, b: jax.tree.map(jnp.add, a, b))


def _mean_of_steps(sums, count: int) -> dict[str, float]:
  return _to_python(jax.tree.map(lambda s: s / count, sums))


class StepRunner(NamedTuple):
  """A train step compiled for one placement, run over given batches.

  Built by `make_runner`; `fit` drives it one epoch at a time, and loops with
  their own schedule (DEC's target refreshes) drive it the same way.

    mode: 'scan', 'loop' or 'stream' (see `fit`).
    run(state, ids) -> (state, dict of the steps' mean metrics, floats):
      ids int[m, batch] are rows of train_x, one row of ids per step, in
      order ('scan' runs all m steps as one compiled `lax.scan`).
    place(state): a state as the caller holds it -> where the steps want it
      (fresh buffers on one device, the mesh for 'sharded', one copy per
      device for 'pmap'). Every state passed to `run` went through it.
    host(state): a placed state -> as the caller sees it (pmap: one copy).
    saved(view): `host`'s view -> what checkpoints hold (arrays on the mesh
      with multiple devices, so orbax writes replicated arrays once). Taken
      from the view, so a multi-process pmap state is unreplicated once.
    put_view(tree): host arrays placed to be used whole next to `host`'s
      view (replicated on the mesh for 'sharded'; evaluation batches).
  """
  mode: str
  run: Callable
  place: Callable
  host: Callable
  saved: Callable
  put_view: Callable


def make_runner(train_step: TrainStep, state, train_x, step_key: jax.Array, *,
                batch_size: int, steps: int, mode: str | None = None,
                parallel: str = "none", model_axis: int = 1) -> StepRunner:
  """Compiles `train_step` to run over batches of `train_x` (see `StepRunner`).

  batch_size: rows per step taken from this process's train_x (the global
  batch over processes is their concatenation). steps: the usual number of
  steps per `run` call, compiled up front for 'scan' (another count
  compiles on first use). mode: as in `fit`; None decides from a trace of
  the step. parallel: 'none', 'pmap' or 'sharded' (not None: resolve it
  with `parallel.resolve`). The step key is passed unchanged to every step.
  """
  from unsupjax import parallel as par_lib

  if parallel not in par_lib.MODES:
    raise ValueError(f"parallel: expected one of {par_lib.MODES}, got {parallel!r}")
  multi = jax.process_count() > 1

  def fresh(tree):
    # The steps donate the state: fresh buffers keep the caller's state
    # valid, and stop a state whose leaves share a buffer (an EMA
    # initialised to the parameters) from being donated twice.
    return jax.tree.map(lambda a: jnp.array(a, copy=True) if isinstance(a, jax.Array)
                        else a, tree)

  identity = lambda t: t
  if parallel == "none":
    step, key = train_step, step_key
    put_x, put_ids, put_batch = jax.device_put, identity, jax.device_put
    jit = lambda f, n_args: jax.jit(f, donate_argnums=0)
    place, host, saved, get_metrics = fresh, identity, identity, identity
    put_view = jax.device_put
  elif parallel == "sharded":
    mesh = par_lib.make_mesh(model_axis)
    st_sh, rep = par_lib.state_sharding(state, mesh), par_lib.replicated(mesh)
    step = lambda st, b, k: train_step(st, par_lib.constrain_batch(b, mesh), k)
    key = par_lib.put_state(step_key, rep)
    put_x = put_ids = lambda a: jax.device_put(a, rep)
    put_batch = lambda b: par_lib.shard_batch(b, mesh)
    jit = lambda f, n_args: jax.jit(f, donate_argnums=0, out_shardings=(st_sh, rep))
    place = lambda st: par_lib.put_state(st, st_sh)
    host, saved, get_metrics = identity, identity, identity
    put_view = lambda t: par_lib.put_state(t, jax.tree.map(lambda _: rep, t))
  else:
    if not par_lib.accepts_axis_name(train_step):
      par_lib.pmap_step(train_step)  # raises the error that explains why
    if mode == "scan":
      raise ValueError("mode: 'scan' is not available with parallel='pmap'; use "
                       "'loop' or 'stream' (or parallel='sharded')")
    d = jax.local_device_count()
    ax = par_lib.DATA_AXIS
    # Checkpoints live on a mesh (model axis 1), so that orbax writes the
    # replicated arrays once across processes.
    st_sh = par_lib.state_sharding(state, par_lib.make_mesh(1))
    step = lambda st, b, k: train_step(st, b, k, axis_name=ax)
    key = step_key
    put_x = par_lib.replicate
    put_ids = lambda ids: ids.reshape(d, -1)
    put_batch = lambda b: par_lib.split_batch(b, d)
    jit = lambda f, n_args: jax.pmap(f, axis_name=ax, in_axes=(0,) * (n_args - 1) + (None,),
                                     donate_argnums=(0,))
    place = lambda st: par_lib.replicate(jax.tree.map(
        lambda a: a.addressable_data(0) if isinstance(a, jax.Array) else a, st))
    host = par_lib.unreplicate
    saved = lambda view: par_lib.put_state(view, st_sh)
    get_metrics = par_lib.unreplicate
    put_view = jax.device_put

  # The compile's example (a placed copy is freed when this returns).
  placed = state if parallel == "none" else place(state)
  zeros = lambda *shape: np.zeros(shape, np.int32)
  if mode is None and (multi or not _fits_on_device(_nbytes(train_x))):
    mode = "stream"
  if mode is None and parallel == "pmap":
    mode = "loop"
  x_dev = None
  if mode in (None, "scan"):
    x_dev = put_x(train_x)
    scan_jit = jit(make_steps_fn(step), 4)
    traced = scan_jit.trace(placed, x_dev, put_ids(zeros(steps, batch_size)), key)
    if mode is None:  # decided from this trace, so the step is traced once
      mode = _on_device_mode(traced.jaxpr.jaxpr)
    if mode == "scan":
      programs = {steps: compile_lowered(traced.lower())}

      def run(st, ids):
        m, ids = int(np.shape(ids)[0]), put_ids(ids)
        if m not in programs:
          programs[m] = compile_lowered(scan_jit.lower(st, x_dev, ids, key))
        st, metrics = programs[m](st, x_dev, ids, key)
        return st, _to_python(metrics)

      return StepRunner(mode, run, place, host, saved, put_view)

  if mode == "loop":
    x_dev = put_x(train_x) if x_dev is None else x_dev
    one = jit(lambda st, x, ids, k: step(st, take(x, ids), k), 4)
    example = (placed, x_dev, put_ids(zeros(batch_size)), key)
  else:
    one = jit(step, 3)
    example = (placed, put_batch(jax.tree.map(lambda a: np.asarray(a[:batch_size]),
                                              train_x)), key)
  # Over several processes an AOT-compiled pmap wants global arrays; the
  # pmapped function itself takes each process's local ones (and compiles
  # on its first call, once).
  compiled = one if (multi and parallel == "pmap") else compile_lowered(one.lower(*example))
  del placed, example
  # Several processes on CPU: each step finishes before the next is sent.
  # Dispatching far ahead there deadlocked now and then: one device's launch
  # of a collective step waited for a free in-flight slot, all held by other
  # queued programs, while the other devices waited in the step's all-reduce
  # (the two-process tests on a loaded 2-core machine; docs/parallel.md).
  pace = multi and jax.devices()[0].platform == "cpu"

  def run(st, ids):
    ids = np.asarray(ids)
    sums = None
    for row in ids:
      if mode == "loop":
        st, metrics = compiled(st, x_dev, put_ids(row), key)
      else:
        st, metrics = compiled(st, put_batch(jax.tree.map(lambda a: a[row], train_x)), key)
      metrics = get_metrics(metrics)
      sums = metrics if sums is None else _add_trees(sums, metrics)
      if pace:
        jax.block_until_ready(sums)
    return st, _mean_of_steps(sums, len(ids))

  return StepRunner(mode, run, place, host, saved, put_view)
