"""A train step compiled for one placement and run over batches of indices.

`make_runner` compiles `train_step` once for the chosen epoch mode and
device placement; the loop (`unsupjax.training.fit`) drives it one chunk
of steps at a time. Modes:

  'scan'    the steps as one compiled `lax.scan`, data on the device;
  'loop'    a Python loop over one compiled step, data on the device;
  'stream'  the same loop, each batch sent from the host.

Placements: one device ('none'), `jax.pmap` with replicated state ('pmap'),
or `jit` over a device mesh ('sharded'); see `unsupjax.parallel`.

Does not offer: the epoch order (the loop passes the indices), logging,
checkpoints.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from unsupjax import parallel as par_lib
from unsupjax.batched import num_rows
from unsupjax.training.compile import compile_lowered

MODES = ("scan", "loop", "stream")


def take(x, ids):
  """Rows `ids` of x, an array or a pytree of arrays sharing the leading axis
  (host arrays are indexed on the host, device arrays and tracers on device)."""
  return jax.tree.map(lambda a: a[np.asarray(ids)] if isinstance(a, np.ndarray)
                      else jnp.take(a, ids, axis=0), x)


def make_steps_fn(train_step: Callable, gather: Callable = take) -> Callable:
  """(state, x, ids int[m, ...], key) -> (state, mean metrics): m steps as one
  `lax.scan`, step i training on gather(x, ids[i]) gathered on device."""

  def steps_fn(state, x, ids, key):
    def body(state, row):
      return train_step(state, gather(x, row), key)

    state, metrics = jax.lax.scan(body, state, ids)
    return state, jax.tree.map(lambda m: jnp.mean(m, axis=0), metrics)

  return steps_fn


def _nbytes(x) -> int:
  return sum(int(np.asarray(a).nbytes) for a in jax.tree.leaves(x))


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


def on_device_mode(jaxpr) -> str:
  """'loop' for a program with convolutions on CPU, else 'scan': XLA:CPU runs
  convolutions inside loop bodies far slower (jax-ml/jax#12868)."""
  if jax.default_backend() == "cpu" and _has_convolution(jaxpr):
    return "loop"
  return "scan"


def choose_mode(train_step: Callable, state, batch, key, nbytes: int) -> str:
  """The epoch mode `fit` picks when given none; traces the step."""
  if not fits_on_device(nbytes):
    return "stream"
  batch = jax.tree.map(jnp.asarray, batch)
  return on_device_mode(jax.make_jaxpr(train_step)(state, batch, key).jaxpr)


def fits_on_device(nbytes: int) -> bool:
  """Whether data of `nbytes` fits in a quarter of the first device's memory."""
  device = jax.local_devices()[0]
  if device.platform == "cpu":
    return True
  try:
    limit = device.memory_stats()["bytes_limit"]
  except Exception:  # backends without memory stats
    return nbytes < 2**30
  return nbytes < limit // 4


# A step's metrics added to the running sums in one dispatch, not one per
# metric (over several processes, each is a program every process runs).
_add_trees = jax.jit(lambda a, b: jax.tree.map(jnp.add, a, b))


def to_python(tree) -> dict:
  """Host floats (or lists of floats, for array values) of a dict of arrays."""
  def plain(v):
    v = np.asarray(v)
    return float(v) if v.ndim == 0 else v.astype(float).tolist()
  return {k: plain(v) for k, v in jax.device_get(dict(tree)).items()}


class StepRunner(NamedTuple):
  """A train step compiled for one placement (built by `make_runner`).

    mode: 'scan', 'loop' or 'stream'.
    run(state, ids) -> (state, dict of the steps' mean metrics as floats):
      ids int[m, ...], one row of indices per step, gathered from train_x.
    place(state): a state as the caller holds it -> where the steps want it
      (fresh buffers on one device, the mesh for 'sharded', one copy per
      device for 'pmap'). Every state passed to `run` went through it.
    host(state): a placed state -> as the caller sees it (pmap: one copy).
    saved(view): `host`'s view -> what checkpoints hold (arrays on the mesh
      with multiple devices, so orbax writes replicated arrays once).
    put_view(tree): host arrays placed to be used whole next to `host`'s
      view (replicated on the mesh for 'sharded'; evaluation batches).
  """
  mode: str
  run: Callable
  place: Callable
  host: Callable
  saved: Callable
  put_view: Callable


def make_runner(train_step: Callable, state, train_x, step_key: jax.Array, *,
                ids_shape: tuple[int, ...], steps: int, mode: str | None = None,
                parallel: str = "none", model_axis: int = 1,
                gather: Callable = take) -> StepRunner:
  """Compiles `train_step` to run over batches of `train_x` (see `StepRunner`).

  ids_shape: the shape of one step's indices (`(batch,)` for plain batches;
  the leading axis is the one split over devices). steps: the usual number
  of steps per `run` call, compiled up front for 'scan' (another count
  compiles on first use). mode: as in `fit`; None decides from a trace of
  the step. parallel: 'none', 'pmap' or 'sharded' (resolved). gather:
  `(x, ids) -> batch` (default: rows ids of every leaf). The step key is
  passed unchanged to every step.
  """
  if parallel not in par_lib.MODES:
    raise ValueError(f"parallel: expected one of {par_lib.MODES}, got {parallel!r}")
  if mode is not None and mode not in MODES:
    raise ValueError(f"mode: expected one of {MODES} or None, got {mode!r}")
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
    put_ids = lambda ids: ids.reshape((d, -1) + ids.shape[1:])
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
  if mode is None and (multi or not fits_on_device(_nbytes(train_x))):
    mode = "stream"
  if mode is None and parallel == "pmap":
    mode = "loop"
  x_dev = None
  if mode in (None, "scan"):
    x_dev = put_x(train_x)
    scan_jit = jit(make_steps_fn(step, gather), 4)
    traced = scan_jit.trace(placed, x_dev, put_ids(zeros(steps, *ids_shape)), key)
    if mode is None:  # decided from this trace, so the step is traced once
      mode = on_device_mode(traced.jaxpr.jaxpr)
    if mode == "scan":
      programs = {steps: compile_lowered(traced.lower())}

      def run(st, ids):
        m, ids = int(np.shape(ids)[0]), put_ids(ids)
        if m not in programs:
          programs[m] = compile_lowered(scan_jit.lower(st, x_dev, ids, key))
        st, metrics = programs[m](st, x_dev, ids, key)
        return st, to_python(metrics)

      return StepRunner(mode, run, place, host, saved, put_view)

  if mode == "loop":
    x_dev = put_x(train_x) if x_dev is None else x_dev
    one = jit(lambda st, x, ids, k: step(st, gather(x, ids), k), 4)
    example = (placed, x_dev, put_ids(zeros(*ids_shape)), key)
  else:
    one = jit(step, 3)
    example = (placed, put_batch(jax.device_get(gather(train_x, zeros(*ids_shape)))), key)
  # Over several processes an AOT-compiled pmap wants global arrays; the
  # pmapped function itself takes each process's local ones (and compiles
  # on its first call, once).
  compiled = one if (multi and parallel == "pmap") else compile_lowered(one.lower(*example))
  del placed, example
  # Several processes on CPU: each step finishes before the next is sent;
  # dispatching far ahead there can deadlock a collective step waiting for
  # an in-flight slot held by queued programs (docs/guide/parallel.md).
  pace = multi and jax.devices()[0].platform == "cpu"

  def run(st, ids):
    ids = np.asarray(ids)
    sums = None
    for row in ids:
      if mode == "loop":
        st, metrics = compiled(st, x_dev, put_ids(row), key)
      else:
        st, metrics = compiled(st, put_batch(jax.device_get(gather(train_x, row))), key)
      metrics = get_metrics(metrics)
      sums = metrics if sums is None else _add_trees(sums, metrics)
      if pace:
        jax.block_until_ready((st, sums))
    return st, to_python(jax.tree.map(lambda s: s / len(ids), sums))

  return StepRunner(mode, run, place, host, saved, put_view)


def check_rows(x) -> int:
  """num_rows for train_x, with the loop's argument name in the error."""
  try:
    return num_rows(x)
  except ValueError as e:
    raise ValueError(f"train_x: {str(e).partition(': ')[2]}") from None
