"""The training loop every unsupjax model runs through: `fit`.

`fit` knows only the contract

    state, metrics = train_step(state, batch, key)   # pure, unjitted
    values = eval_step(state, batch)                 # dict of f32[batch]

and does the rest: compiles the step once; runs each epoch as one chunk of
steps (a compiled `lax.scan`, or a loop over one compiled step, see
`runner`); evaluates in padded batches; runs periodic actions (sample
metrics, DEC's target refresh: anything that needs the state between
epochs, may change it, or may stop the run); logs one JSON object per epoch
to `metrics.jsonl`; writes verified checkpoints; resumes exactly (an
interrupted and resumed run ends with bit-identical parameters); stops on a
NaN/Inf metric, keeping the last good checkpoint.

Randomness: the data order comes from `named(key, "data")` and every step
gets `named(key, "steps")`, from which it derives its own keys with
`fold_in(key, state.step)`. Both depend only on (key, epoch, step), never on
how many epochs ran in this process, which is what makes resume exact.

Multi-device and multi-process runs (`parallel='pmap'` or `'sharded'`) see
the same batches, the same per-example randomness and the same gradients as
the one-device run; only the first process writes `metrics.jsonl`.

Does not offer: model-specific logic (no model is imported here), or
reading data (the caller passes host arrays).
"""

from __future__ import annotations

import json
import os
import pathlib
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np

from unsupjax import data as data_lib
from unsupjax import parallel as par_lib
from unsupjax import runlog
from unsupjax.rng import named
from unsupjax.training import runner as runner_lib
from unsupjax.training.checkpoint import CHECKPOINT_DIR, CheckpointError, Checkpointer
from unsupjax.training.evaluation import DEFAULT_EVAL_BATCH, Evaluator

METRICS_FILE = "metrics.jsonl"


class TrainingDiverged(RuntimeError):
  """A training metric became NaN/Inf; the last good checkpoint was kept."""

  def __init__(self, epoch: int, last_checkpoint: int | None, metrics: dict):
    self.epoch = epoch
    self.last_checkpoint = last_checkpoint
    self.metrics = metrics
    where = (f"the last good checkpoint (epoch {last_checkpoint}) is kept"
             if last_checkpoint is not None else "no checkpoint had been written")
    super().__init__(
        f"training loss became non-finite in epoch {epoch} "
        f"({_fmt(metrics)}); stopped, {where}")


class ActionOutput(NamedTuple):
  """What a periodic action returns: values to log (None: none), a new state
  (None: unchanged) and whether the run should stop after this epoch."""
  values: Mapping[str, Any] | None = None
  state: Any = None
  stop: bool = False


class Action(NamedTuple):
  """`fn(epoch, state) -> ActionOutput | dict | None`, run after every
  `every` epochs (and after the last epoch when `at_end`), before the
  epoch's record is written and its checkpoint saved. `at_start`: also run
  once before the first epoch of a fresh run (epoch 0; its values are
  logged as a record of epoch 0).
  """
  fn: Callable[[int, Any], Any]
  every: int = 1
  at_end: bool = True
  at_start: bool = False


class FitResult(NamedTuple):
  """What `fit` returns: the final state, this call's records and timings."""
  state: Any
  history: list[dict]          # one record per epoch run in this call
  compile_seconds: float       # tracing + XLA compilation of train and eval
  wall_seconds: float          # the whole call
  start_epoch: int             # epochs already done before this call (resume)
  last_epoch: int              # the last epoch run (< epochs when an action stopped it)
  evaluator: Evaluator | None  # eval_step compiled for this run's placement


def _fmt(metrics: Mapping[str, Any]) -> str:
  return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                   for k, v in metrics.items())


def _finite(v: Any) -> bool:
  return bool(np.all(np.isfinite(np.asarray(v, dtype=float))))


def read_history(path: pathlib.Path, upto_epoch: int) -> list[dict]:
  """The records of metrics.jsonl up to `upto_epoch` (a line cut short by a
  kill, only ever the last, is dropped)."""
  return [r for r in runlog.read_records(path) if r.get("epoch", 0) <= upto_epoch]


# One jitted function for every run of the process: runs over the same
# (n, batch_size) share its compiled program.
_batch_indices = jax.jit(data_lib.batch_indices, static_argnums=(2, 3))


def stream_order(data_key: jax.Array, n: int, batch_size: int,
                 steps_per_epoch: int) -> Callable[[int], np.ndarray]:
  """epoch -> ids int[steps_per_epoch, batch_size]: the loop's epoch e is
  steps [(e-1) s, e s) of the data epochs' keyed orders laid end to end
  (`data.batch_indices` of data epochs 1, 2, ...). With s = n // batch_size
  (the default) loop epochs and data epochs coincide."""
  per_data_epoch = n // batch_size

  def order(epoch: int) -> np.ndarray:
    start = (epoch - 1) * steps_per_epoch
    stop = start + steps_per_epoch
    if steps_per_epoch == per_data_epoch:
      return np.asarray(_batch_indices(data_key, epoch, n, batch_size))
    rows = []
    for d in range(start // per_data_epoch, (stop - 1) // per_data_epoch + 1):
      ids = np.asarray(_batch_indices(data_key, d + 1, n, batch_size))
      rows.append(ids[max(start - d * per_data_epoch, 0):
                      min(stop - d * per_data_epoch, per_data_epoch)])
    return np.concatenate(rows)

  return order


def _call_action(action: Action, epoch: int, state) -> ActionOutput:
  out = action.fn(epoch, state)
  if out is None:
    return ActionOutput()
  if isinstance(out, ActionOutput):
    return out
  return ActionOutput(values=out)


def fit(state, train_step: Callable, eval_step: Callable | None,
        train_x: Any, eval_x: Any | None = None, *,
        key: jax.Array, epochs: int, batch_size: int,
        steps_per_epoch: int | None = None,
        order: Callable[[int], np.ndarray] | None = None,
        gather: Callable = runner_lib.take,
        eval_batch_size: int = DEFAULT_EVAL_BATCH,
        workdir: str | os.PathLike | None = None,
        checkpoint_every: int = 1, max_to_keep: int = 3, resume: bool = False,
        actions: Sequence[Action] = (), observers: Sequence[Callable] = (),
        progress: bool = True, desc: str = "train",
        progress_keys: Sequence[str] = ("train_loss", "test_loss"),
        mode: str | None = None, log: Callable[[str], None] | None = None,
        parallel: str | None = None, model_axis: int = 1) -> FitResult:
  """Trains `state` for `epochs` epochs over `train_x`.

  Args:
    state: the model's train state (a pytree with a `step` field).
    train_step: pure `(state, batch, key) -> (state, metrics)`, metrics a
      dict of scalars (or small arrays); every one is checked for NaN/Inf.
    eval_step: pure `(state, batch) -> dict of f32[b]` per-example values, or
      None; evaluated on `eval_x` after every epoch.
    train_x: f32[n, ...] host array of training examples, or a pytree of
      host arrays sharing the leading n (e.g. `{"x": images, "index":
      arange(n)}`). In a multi-process run: this process's shard.
    eval_x: held-out examples (as train_x), or None; the same in every process.
    key: the run's PRNG key (see the module docstring).
    epochs: total epochs of the run (a resumed run continues up to it; fewer
      than the checkpoint's is refused).
    batch_size: examples per step (the global batch over every device and
      process).
    steps_per_epoch: steps between records, checkpoints and actions
      (default: whole batches of one pass, n // batch_size); the data order
      runs on across epoch boundaries (`stream_order`).
    order, gather: a custom data order `epoch -> ids int[steps, ...]` and
      `gather(x, ids_of_one_step) -> batch` (default: `stream_order` and rows).
    workdir: where `metrics.jsonl` and `checkpoints/` go; None: nowhere.
    checkpoint_every: save every this many epochs (and after the last).
    resume: continue from the newest intact checkpoint in `workdir` (one
      must exist).
    actions: `Action`s run between epochs; observers: `fn(history)` called
      after each epoch's record is written (history: every record of the
      run so far, earlier sessions' included), e.g. to draw curves.
    progress: a tqdm bar on stderr, showing `progress_keys`.
    mode: 'scan', 'loop' or 'stream' (see `runner`); None chooses: 'stream'
      when the data does not fit on the device, else 'loop' for a step with
      convolutions on CPU, else 'scan'.
    log: prints a line (default: tqdm.write on stderr).
    parallel: None, 'none', 'pmap' or 'sharded' (see `unsupjax.parallel`);
      None is 'sharded' when more than one device is visible.
    model_axis: with 'sharded', devices along the mesh's 'model' axis.

  Returns:
    FitResult. Raises TrainingDiverged on a non-finite metric and
    CheckpointError when `resume` finds no intact checkpoint.
  """
  from tqdm.auto import tqdm

  t_start = time.perf_counter()
  par = par_lib.resolve(parallel)
  nproc = jax.process_count()
  lead = jax.process_index() == 0
  n = runner_lib.check_rows(train_x)
  if nproc > 1 and par == "none":
    raise ValueError(f"parallel: a run over {nproc} processes needs 'pmap' or "
                     f"'sharded', got 'none'")
  if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
    raise ValueError(f"batch_size: expected a positive integer, got {batch_size!r}")
  if par != "none":
    par_lib.check_batch_size(batch_size, par_lib.batch_split(par, model_axis))
  local_batch = batch_size // nproc
  if local_batch < 1 or local_batch > n:
    raise ValueError(f"batch_size: expected 1..{n * nproc} (training examples), got {batch_size}")
  if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
    raise ValueError(f"epochs: expected a positive integer, got {epochs!r}")
  if checkpoint_every < 1:
    raise ValueError(f"checkpoint_every: expected >= 1, got {checkpoint_every}")
  if resume and workdir is None:
    raise ValueError("resume: needs a workdir to resume from")
  if par == "pmap" and model_axis != 1:
    raise ValueError(f"model_axis: only 'sharded' splits parameters, got {model_axis} with 'pmap'")
  if nproc > 1 and mode not in (None, "stream"):
    raise ValueError(f"mode: a run over {nproc} processes streams each process's "
                     f"own data ('stream'), got {mode!r}")
  per_data_epoch = n // local_batch
  steps_per_epoch = steps_per_epoch or per_data_epoch
  if isinstance(steps_per_epoch, bool) or not isinstance(steps_per_epoch, int) or steps_per_epoch < 1:
    raise ValueError(f"steps_per_epoch: expected a positive integer, got {steps_per_epoch!r}")
  for a in actions:
    if not isinstance(a, Action) or a.every < 1:
      raise ValueError(f"actions: expected Action(fn, every >= 1), got {a!r}")
  log = log or (lambda s: tqdm.write(s, file=sys.stderr))
  if not lead:
    log, progress = (lambda s: None), False

  data_key, step_key = named(key, "data"), named(key, "steps")
  order = order or stream_order(data_key, n, local_batch, steps_per_epoch)
  first_ids = np.asarray(order(1))

  # Compile once, up front, and time it.
  t0 = time.perf_counter()
  runner = runner_lib.make_runner(
      train_step, state, train_x, step_key, ids_shape=first_ids.shape[1:],
      steps=first_ids.shape[0], mode=mode, parallel=par, model_axis=model_axis,
      gather=gather)
  state = runner.place(state)
  evaluator = None
  if eval_step is not None and eval_x is not None:
    evaluator = Evaluator(eval_step, eval_batch_size, put=runner.put_view)
    evaluator.prepare(runner.host(state), eval_x)
  compile_seconds = time.perf_counter() - t0

  workdir = pathlib.Path(workdir) if workdir is not None else None
  ckpt = None
  start_epoch = 0
  previous: list[dict] = []
  if workdir is not None:
    if lead:
      workdir.mkdir(parents=True, exist_ok=True)
    ckpt = Checkpointer(workdir / CHECKPOINT_DIR, max_to_keep=max_to_keep)
    if resume:
      try:
        restored, meta, _ = ckpt.restore_latest(runner.saved(runner.host(state)), warn=log)
      except CheckpointError:
        ckpt.close()
        raise
      start_epoch = int(meta["epoch"])
      for newer in [e for e in ckpt.epochs() if e > start_epoch]:
        log(f"set aside the damaged checkpoint of epoch {newer} as {ckpt.set_aside(newer).name}")
      if start_epoch > epochs:
        ckpt.close()
        raise ValueError(f"epochs: the run in {workdir} has a checkpoint of epoch "
                         f"{start_epoch}; expected epochs >= {start_epoch}, got {epochs}")
      state = runner.place(restored)
      log(f"resumed from epoch {start_epoch} in {workdir}")
    # Keep only the records the restored state had seen.
    if lead:
      previous = read_history(workdir / METRICS_FILE, start_epoch)
      tmp = workdir / (METRICS_FILE + ".tmp")
      with open(tmp, "w") as f:
        for rec in previous:
          f.write(json.dumps(rec) + "\n")
      os.replace(tmp, workdir / METRICS_FILE)

  metrics_path = workdir / METRICS_FILE if (workdir is not None and lead) else None
  last_saved = start_epoch if (ckpt is not None and start_epoch > 0) else None
  history: list[dict] = []

  def write(record: dict) -> None:
    if metrics_path is not None:
      with open(metrics_path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
    history.append(record)
    for observe in observers:
      observe(previous + history)

  starters = [a for a in actions if a.at_start]
  if start_epoch == 0 and starters:
    record: dict[str, Any] = {"epoch": 0, "step": int(jax.device_get(runner.host(state).step))}
    for a in starters:
      out = _call_action(a, 0, runner.host(state))
      if out.state is not None:
        state = runner.place(out.state)
      record.update(out.values or {})
    write(record)

  bar = tqdm(total=epochs, initial=start_epoch, desc=desc, unit="epoch",
             disable=not progress, file=sys.stderr, dynamic_ncols=True)
  epoch = start_epoch
  try:
    for epoch in range(start_epoch + 1, epochs + 1):
      t_epoch = time.perf_counter()
      state, train_metrics = runner.run(state, order(epoch))
      epoch_seconds = time.perf_counter() - t_epoch
      view = runner.host(state)
      record = {"epoch": epoch, "step": int(jax.device_get(view.step))}
      record.update({f"train_{k}": v for k, v in train_metrics.items()})
      if not all(_finite(v) for v in train_metrics.values()):
        raise TrainingDiverged(epoch, last_saved, train_metrics)
      if evaluator is not None:
        t_eval = time.perf_counter()
        record.update({f"test_{k}": v for k, v in evaluator(view, eval_x).items()})
        record["eval_seconds"] = time.perf_counter() - t_eval
      record["epoch_seconds"] = epoch_seconds
      stop = False
      for a in actions:
        if epoch % a.every == 0 or (a.at_end and epoch == epochs):
          out = _call_action(a, epoch, view)
          if out.state is not None:
            view = out.state
            state = runner.place(view)
          record.update(out.values or {})
          stop = stop or out.stop
      # The record goes to disk before the checkpoint: a kill between the
      # two re-runs this epoch on resume (its record is dropped), while the
      # other order could leave a checkpoint whose record was never written.
      write(record)
      if ckpt is not None and (epoch % checkpoint_every == 0 or epoch == epochs or stop):
        ckpt.save(epoch, runner.saved(view), {"epoch": epoch, "step": record["step"]})
        last_saved = epoch
      bar.set_postfix({k: f"{v:.4g}" for k, v in record.items()
                       if k in progress_keys and isinstance(v, float)})
      bar.update(1)
      if stop:
        break
  finally:
    bar.close()
    if ckpt is not None:
      ckpt.close()
  return FitResult(runner.host(state), history, compile_seconds,
                   time.perf_counter() - t_start, start_epoch, epoch, evaluator)


def fit_model(model: Any, key: jax.Array, config: Any, train_x: Any,
              eval_x: Any | None = None, *, epochs: int, batch_size: int,
              **fit_kwargs: Any) -> FitResult:
  """Initialises and trains a model module that follows the contract
  (`init_state(key, config, example_batch)`, `train_step`, `eval_step`).

  The initial state comes from `named(key, "init")` and the first batch of
  train_x; the loop gets `key` itself. When the module has
  `check_data(config, x, name)`, train_x and eval_x are checked with it
  first (shape, NaN, range), before anything compiles. fit_kwargs go to
  `fit`.
  """
  check = getattr(model, "check_data", None)
  if check is not None:
    check(config, train_x, "train_x")
    if eval_x is not None:
      check(config, eval_x, "eval_x")
  state = model.init_state(named(key, "init"), config,
                           jax.tree.map(lambda a: a[:max(1, batch_size)], train_x))
  return fit(state, model.train_step, getattr(model, "eval_step", None), train_x, eval_x,
             key=key, epochs=epochs, batch_size=batch_size, **fit_kwargs)
