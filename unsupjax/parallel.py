"""Data-parallel training on several devices and several hosts.

Offers two ways to run any unsupjax `train_step(state, batch, key)` over
many devices, both tested against the one-device step on fake CPU devices:

  * 'pmap' (`pmap_step`): the classic Flax pattern. The state is replicated
    (`replicate` / `unreplicate`), the batch gets a leading device axis
    (`split_batch`), and the step is called with `axis_name=DATA_AXIS`, which
    makes it average its gradients and metrics with `lax.pmean`. Only steps
    that accept an `axis_name` keyword can be pmapped (AE, VAE, GAN and
    `kmeans.minibatch_step` do); a step without it would silently train on
    per-device gradients, so `pmap_step` refuses it.
  * 'sharded' (`sharded_step`): `jit` over a `Mesh` of every device, the
    batch sharded along the 'data' axis with `NamedSharding`, the state
    replicated (or, with `model_axis > 1`, large parameter matrices and
    their optimizer moments split along a 'model' axis). The step is
    unchanged: it sees the global batch, and XLA inserts the reductions.

Randomness contract (what makes 8 devices draw what 1 device draws): a step
draws per-example noise for its whole batch from fold_in(key, state.step).
Under 'sharded' the step sees the global batch, so its draws are the
one-device draws by jit's semantics (and with
`jax_threefry_partitionable`, on by default, each device generates only its
own rows). Under 'pmap' each device sees only its rows, so steps draw
batch-shaped noise through `batch_draw`, which with an `axis_name` draws
the global batch's noise and keeps this device's rows (every device
generates the whole batch's noise, a small cost next to the network).

Also `resolve` (the `--parallel` flag: None means 'sharded' when more than
one device is visible), `make_mesh`, `batch_split` (how many parts a batch
is split into), `shard_batch`, `initialize_distributed`
(`jax.distributed.initialize` from flags or the cloud-TPU environment) and
`process_shard` (the rows a process reads), `lead_process_only` (a file
writer that runs on process 0 alone) and `sync_processes` (a barrier).

Does not offer: pipeline or tensor parallelism inside a layer beyond
splitting parameter matrices along 'model', cross-device batch statistics
for layers that use them under pmap (the GAN's minibatch-std uses the
per-device batch there), or gradient accumulation.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

MODES = ("none", "pmap", "sharded")
DATA_AXIS = "data"
MODEL_AXIS = "model"
# Leaves at least this big (and 2-D or more) are split along 'model'.
MIN_MODEL_SHARD_SIZE = 2**16


def resolve(parallel: str | None) -> str:
  """The mode to run: `parallel` checked, or (None) 'sharded' when more
  than one device is visible, else 'none'."""
  if parallel is None:
    return "sharded" if jax.device_count() > 1 else "none"
  if parallel not in MODES:
    raise ValueError(f"parallel: expected one of {MODES} or None, got {parallel!r}")
  return parallel


def batch_split(parallel: str, model_axis: int = 1) -> int:
  """How many parts a global batch is split into: one per device under
  'pmap', one per row of the ('data', 'model') mesh under 'sharded'
  (devices // model_axis), 1 under 'none'."""
  if parallel == "none":
    return 1
  return jax.device_count() // (model_axis if parallel == "sharded" else 1)


def check_batch_size(batch_size: int, n_devices: int | None = None,
                     what: str = "batch_size") -> int:
  """batch_size // n_devices; a ValueError naming `what` unless it divides."""
  n = jax.device_count() if n_devices is None else n_devices
  if batch_size % n:
    raise ValueError(f"{what}: expected a multiple of the {n} devices the batch "
                     f"is split over, got {batch_size}")
  return batch_size // n


# --------------------------------------------------------------------------
# What a step uses to be pmap-able.


def pmean(tree, axis_name: str | None):
  """lax.pmean of every leaf over `axis_name`; the identity for None."""
  if axis_name is None:
    return tree
  return jax.tree.map(lambda a: jax.lax.pmean(a, axis_name), tree)


def batch_draw(sample: Callable[..., jax.Array], key: jax.Array,
               shape: Sequence[int], *args: Any,
               axis_name: str | None = None, **kwargs: Any) -> jax.Array:
  """sample(key, shape, ...) for a batch-leading `shape`, equal across
  device counts.

  Without `axis_name` this is `sample(key, shape, *args, **kwargs)`. Inside
  pmap over `axis_name` with local batch b = shape[0] on each of D devices,
  it draws the global batch's values, shape (D * b, ...), and returns this
  device's rows [i * b, (i + 1) * b), so the concatenation over devices is
  what one device would draw for the global batch. E.g.
  `batch_draw(jax.random.normal, k, x.shape, axis_name=ax)`.
  """
  shape = tuple(int(s) for s in shape)
  if axis_name is None:
    return sample(key, shape, *args, **kwargs)
  d = jax.lax.axis_size(axis_name)
  full = sample(key, (d * shape[0],) + shape[1:], *args, **kwargs)
  return jax.lax.dynamic_slice_in_dim(
      full, jax.lax.axis_index(axis_name) * shape[0], shape[0], axis=0)


def accepts_axis_name(fn: Callable) -> bool:
  """Whether `fn` takes an `axis_name` keyword (what `pmap_step` binds)."""
  target = fn.func if isinstance(fn, functools.partial) else fn
  try:
    return "axis_name" in inspect.signature(target).parameters
  except (TypeError, ValueError):
    return False


# --------------------------------------------------------------------------
# pmap.


def replicate(tree, devices: Sequence[jax.Device] | None = None,
              axis_name: str = DATA_AXIS):
  """One copy of every leaf on each local device: leading axis len(devices).

  The copies are laid out on a mesh whose axis is `axis_name`, the axis a
  `pmap` over the same name gives its outputs, so a pmapped step that is
  first called on `replicate`'s arrays and then on its own outputs compiles
  once (another axis name retraces and recompiles on the second call). The
  copies are made on the host: no device program per leaf shape.
  """
  devices = list(devices or jax.local_devices())
  sharding = NamedSharding(Mesh(np.asarray(devices), (axis_name,)), P(axis_name))

  def one(a):
    if isinstance(a, jax.Array) and jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
      impl = jax.random.key_impl(a)
      return jax.random.wrap_key_data(one(jax.random.key_data(a)), impl=impl)
    a = np.asarray(a)
    return jax.device_put(np.broadcast_to(a[None], (len(devices),) + a.shape), sharding)

  return jax.tree.map(one, tree)


def unreplicate(tree):
  """The first local device's copy of a replicated tree, on that device.

  Each leaf is read from that device's own shard. Indexing the whole array
  instead compiles a program over all local devices, with a collective
  between them, per leaf; over several CPU processes, such programs sent
  back to back deadlock (docs/guide/parallel.md).
  """
  def one(a):
    if isinstance(a, jax.Array):
      a = a.addressable_data(0)
    return a[0]

  return jax.tree.map(one, tree)


def split_batch(batch, n_devices: int | None = None):
  """[b, ...] -> [n_devices, b / n_devices, ...] for every leaf (a pytree).

  A ValueError when b is not divisible by n_devices (default: the local
  devices).
  """
  n = jax.local_device_count() if n_devices is None else n_devices

  def one(a):
    b = np.shape(a)[0]
    check_batch_size(b, n, "batch")
    return a.reshape((n, b // n) + tuple(np.shape(a)[1:]))

  return jax.tree.map(one, batch)


def pmap_step(train_step: Callable, axis_name: str = DATA_AXIS, *,
              devices: Sequence[jax.Device] | None = None,
              donate: bool = True) -> Callable:
  """`train_step` pmapped with its gradients averaged over the devices.

  Returns step(state_r, batch f32[D, b, ...], key) -> (state_r, metrics_r),
  state_r replicated (`replicate`), metrics replicated (pmean-ed; take
  `unreplicate(metrics)`), key shared by all devices. The step is called as
  `train_step(state, batch, key, axis_name=axis_name)`.
  """
  if not accepts_axis_name(train_step):
    raise ValueError(
        f"train_step: {getattr(train_step, '__name__', train_step)!r} takes no "
        "axis_name keyword, so pmap could not average its gradients; use "
        "parallel='sharded' (any step) or add axis_name to the step")
  step = functools.partial(train_step, axis_name=axis_name)
  return jax.pmap(step, axis_name=axis_name, in_axes=(0, 0, None),
                  devices=devices, donate_argnums=(0,) if donate else ())


# --------------------------------------------------------------------------
# Sharded jit.


def make_mesh(model_axis: int = 1,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A ('data', 'model') mesh over `devices` (default: every device of every
  process), `model_axis` devices along 'model'."""
  devices = list(devices or jax.devices())
  if model_axis < 1 or len(devices) % model_axis:
    raise ValueError(f"model_axis: expected a divisor of the {len(devices)} "
                     f"devices, got {model_axis}")
  grid = np.asarray(devices, dtype=object).reshape(len(devices) // model_axis,
                                                   model_axis)
  return Mesh(grid, (DATA_AXIS, MODEL_AXIS))


def data_sharding(mesh: Mesh) -> NamedSharding:
  """Rows split along 'data'."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def state_sharding(state, mesh: Mesh,
                   min_size: int = MIN_MODEL_SHARD_SIZE):
  """A tree of NamedShardings for `state`: every leaf replicated, except,
  when the mesh's 'model' axis has more than one device, leaves with
  ndim >= 2, at least `min_size` elements and a last axis divisible by it,
  which are split along 'model' on their last axis (weight matrices and
  their Adam moments alike)."""
  m = mesh.shape[MODEL_AXIS]

  def one(a):
    shape = np.shape(a)
    if (m > 1 and len(shape) >= 2 and int(np.prod(shape)) >= min_size
        and shape[-1] % m == 0):
      return NamedSharding(mesh, P(*([None] * (len(shape) - 1)), MODEL_AXIS))
    return NamedSharding(mesh, P())

  return jax.tree.map(one, state)


def put_state(state, shardings):
  """`state` placed with `shardings` (works across processes: every process
  must hold the same values)."""
  if jax.process_count() == 1:
    return jax.device_put(state, shardings)

  def one(a, s):
    if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
      impl = jax.random.key_impl(a)
      data = one(jax.random.key_data(a), s)
      return jax.random.wrap_key_data(data, impl=impl)
    a = np.asarray(jax.device_get(a))
    return jax.make_array_from_callback(a.shape, s, lambda idx: a[idx])

  return jax.tree.map(one, state, shardings)


def shard_batch(batch, mesh: Mesh):
  """A global batch from this process's rows, split along 'data'.

  batch: [b_local, ...] (or a pytree); across P processes the global batch is
  the processes' rows concatenated in process order, [P * b_local, ...].
  """
  sharding = data_sharding(mesh)
  check_batch_size(num_rows(batch) * jax.process_count(), mesh.shape[DATA_AXIS],
                   "batch")
  return jax.tree.map(
      lambda a: jax.make_array_from_process_local_data(sharding, np.asarray(a)),
      batch)


def num_rows(batch) -> int:
  return int(np.shape(jax.tree.leaves(batch)[0])[0])


def constrain_batch(batch, mesh: Mesh):
  """Inside jit: ask for the batch's rows to be split along 'data'."""
  return jax.lax.with_sharding_constraint(batch, data_sharding(mesh))


def sharded_step(train_step: Callable, mesh: Mesh, state_shardings, *,
                 donate: bool = True) -> Callable:
  """`train_step` jitted over `mesh`: step(state, batch, key) -> (state,
  metrics) with the batch split along 'data', the state kept in
  `state_shardings` (`state_sharding(state, mesh)`), metrics replicated."""

  def step(state, batch, key):
    return train_step(state, constrain_batch(batch, mesh), key)

  return jax.jit(step, out_shardings=(state_shardings, replicated(mesh)),
                 donate_argnums=(0,) if donate else ())


# --------------------------------------------------------------------------
# Several hosts.

# Environment variables that name the coordinator when no flag does; cloud
# TPU VMs need none of these (jax.distributed.initialize() finds its peers).
ENV_COORDINATOR = "UNSUPJAX_COORDINATOR"
ENV_NUM_PROCESSES = "UNSUPJAX_NUM_PROCESSES"
ENV_PROCESS_ID = "UNSUPJAX_PROCESS_ID"
_TPU_ENV = ("TPU_WORKER_HOSTNAMES", "CLOUD_TPU_TASK_ID", "MEGASCALE_COORDINATOR_ADDRESS")


def initialize_distributed(coordinator: str | None = None,
                           num_processes: int | None = None,
                           process_id: int | None = None) -> bool:
  """Calls `jax.distributed.initialize` when this run spans several processes.

  From the arguments, else UNSUPJAX_COORDINATOR / _NUM_PROCESSES /
  _PROCESS_ID, else (on a multi-host cloud TPU, detected from the variables
  TPU VMs set) with no arguments, letting JAX read the TPU metadata. Returns
  whether this run spans several processes. A second call with the same
  process count and id (another run in the same process) joins nothing new.
  Must run before anything touches a device.
  """
  coordinator = coordinator or os.environ.get(ENV_COORDINATOR)
  if num_processes is None and os.environ.get(ENV_NUM_PROCESSES):
    num_processes = int(os.environ[ENV_NUM_PROCESSES])
  if process_id is None and os.environ.get(ENV_PROCESS_ID):
    process_id = int(os.environ[ENV_PROCESS_ID])
  if coordinator is None and num_processes is None and process_id is None:
    hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
    if "," in hosts or os.environ.get("MEGASCALE_COORDINATOR_ADDRESS"):
      jax.distributed.initialize()
      return True
    return False
  if coordinator is None or num_processes is None or process_id is None:
    raise ValueError(
        "coordinator, num_processes, process_id: a multi-process run needs all "
        f"three, got {coordinator!r}, {num_processes!r}, {process_id!r}")
  if num_processes < 1 or not 0 <= process_id < num_processes:
    raise ValueError(f"process_id: expected 0..{num_processes - 1}, got {process_id}")
  if jax.distributed.is_initialized():
    # A second run in the same process (a notebook, a script that trains
    # twice) is already in the group; JAX allows one initialize per process.
    if (jax.process_count(), jax.process_index()) != (num_processes, process_id):
      raise ValueError(
          f"process_id: this process already joined a run as process "
          f"{jax.process_index()} of {jax.process_count()}, got {process_id} of {num_processes}")
    return True
  if num_processes == 1:
    return False
  jax.distributed.initialize(coordinator_address=coordinator,
                             num_processes=num_processes, process_id=process_id)
  return True


def lead_process_only(write: Callable[..., None]) -> Callable[..., None]:
  """`write` runs on process 0 only (a no-op elsewhere): for writers of a
  run's files from values every process holds. A function that computes
  with global arrays must still run on every process."""
  @functools.wraps(write)
  def wrapped(*args, **kwargs) -> None:
    if jax.process_index() == 0:
      write(*args, **kwargs)
  return wrapped


_barriers = itertools.count()


def sync_processes(name: str, timeout_s: float = 1800.0) -> None:
  """A barrier: returns once every process of the run has called it with
  this `name` (at once in a single-process run). For the file system:
  process 0 changes a run's files between two barriers, so that no other
  process reads them half-changed or acts on them before they are ready.

  Waits at a barrier of jax.distributed's coordination service: no program
  is compiled (a first compile would settle, before a task has enabled it,
  that the persistent compilation cache is off), and a process that never
  arrives raises an error after `timeout_s` instead of hanging the others.
  Every process calls the same barriers in the same order; a counter makes
  each one's id unique.
  """
  if jax.process_count() == 1:
    return
  barrier = f"{name}:{next(_barriers)}"
  from jax._src import distributed  # the client jax.distributed.initialize made
  client = distributed.global_state.client
  if client is None:  # processes joined by other means: a device collective
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(barrier)
  else:
    client.wait_at_barrier(barrier, timeout_in_ms=int(timeout_s * 1000))


def process_shard(n: int, process_index: int | None = None,
                  process_count: int | None = None) -> slice:
  """The rows [start, stop) of n examples that a process reads: equal
  contiguous shards, n // process_count each (the remainder is dropped so
  every process runs the same number of steps)."""
  i = jax.process_index() if process_index is None else process_index
  p = jax.process_count() if process_count is None else process_count
  size = n // p
  if size == 0:
    raise ValueError(f"n: {n} examples cannot be split over {p} processes")
  return slice(i * size, (i + 1) * size)


def tfds_split(split: str, process_index: int | None = None,
               process_count: int | None = None) -> str:
  """TFDS split-slicing string for this process's shard, e.g.
  'train[50%:100%]' for process 1 of 2 (`tfds.even_splits` semantics)."""
  i = jax.process_index() if process_index is None else process_index
  p = jax.process_count() if process_count is None else process_count
  if p == 1:
    return split
  import tensorflow_datasets as tfds
  return tfds.even_splits(split, n=p, drop_remainder=True)[i]
