"""Checkpoints: orbax writes, checksums verify, damaged ones are skipped.

`Checkpointer` saves (state, loop position) per epoch with orbax, which
writes into a temporary directory and renames it when complete, so a process
killed mid-write leaves nothing that restores wrong. After each save commits,
the SHA-256 of every file it wrote goes to `checksums.json` in the same
directory; `restore_latest` checks them and, when a checkpoint is damaged
(a flipped byte, a truncated or foreign file, a missing part), says so in one
line and falls back to the newest intact one.

`read_only=True` (evaluation, reading a pretrained run) creates, removes and
cleans up nothing, so it is safe beside a run that is writing a checkpoint
into the same directory.

Does not offer: asynchronous saves (the next epoch donates the state's
buffers), or checkpoints of anything but pytrees of arrays plus JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
from collections.abc import Callable
from typing import Any

import jax

CHECKPOINT_DIR = "checkpoints"
CHECKSUMS = "checksums.json"


class CheckpointError(RuntimeError):
  """No checkpoint in a directory can be restored; the message says why."""


def _digest(path: pathlib.Path) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()


def _files(directory: pathlib.Path) -> list[pathlib.Path]:
  return sorted(p for p in directory.rglob("*") if p.is_file() and p.name != CHECKSUMS)


def write_checksums(directory: pathlib.Path) -> None:
  """checksums.json: {relative path: sha256} of every file under directory."""
  sums = {str(p.relative_to(directory)): _digest(p) for p in _files(directory)}
  tmp = directory / (CHECKSUMS + ".tmp")
  tmp.write_text(json.dumps(sums, indent=1, sort_keys=True))
  os.replace(tmp, directory / CHECKSUMS)


def verify_checksums(directory: pathlib.Path) -> str | None:
  """None when every file matches checksums.json (or there is none: a save
  killed before its checksums were written is checked by restoring it);
  otherwise what is wrong, in a few words."""
  path = directory / CHECKSUMS
  if not path.exists():
    return None
  try:
    sums = json.loads(path.read_text())
    if not isinstance(sums, dict):
      raise ValueError
  except ValueError:
    return f"{CHECKSUMS} is not valid"
  for rel, want in sorted(sums.items()):
    p = directory / rel
    if not p.is_file():
      return f"{rel} is missing"
    if _digest(p) != want:
      return f"{rel} does not match its checksum"
  extra = [str(p.relative_to(directory)) for p in _files(directory)
           if str(p.relative_to(directory)) not in sums]
  if extra:
    return f"{extra[0]} was not part of the save"
  return None


class Checkpointer:
  """Orbax checkpoints of (state, loop position) under `directory`."""

  def __init__(self, directory: pathlib.Path, max_to_keep: int = 3, *,
               read_only: bool = False):
    import orbax.checkpoint as ocp
    self._ocp = ocp
    self.directory = pathlib.Path(directory).absolute()
    self.read_only = read_only
    self.manager = ocp.CheckpointManager(
        self.directory,
        # Not orbax's own read_only option, which logs warnings on every open;
        # a reader never saves, so not creating and not cleaning is enough.
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=not read_only,
            cleanup_tmp_directories=not read_only,
            enable_async_checkpointing=False))

  def epochs(self) -> list[int]:
    """The epochs with a committed checkpoint here, ascending."""
    return sorted(int(e) for e in self.manager.all_steps())

  def latest_epoch(self) -> int | None:
    """The newest checkpointed epoch, or None without one."""
    epochs = self.epochs()
    return epochs[-1] if epochs else None

  def step_dir(self, epoch: int) -> pathlib.Path:
    """The directory of epoch `epoch`'s checkpoint."""
    return self.directory / str(epoch)

  def save(self, epoch: int, state, meta: dict) -> None:
    """Saves and commits, then records the checksums of what was written."""
    if self.read_only:
      raise ValueError("save: this Checkpointer was opened read_only")
    ocp = self._ocp
    self.manager.save(epoch, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
        force=True)
    self.manager.wait_until_finished()
    if jax.process_index() == 0:
      write_checksums(self.step_dir(epoch))

  def restore(self, epoch: int, like) -> tuple[Any, dict]:
    """The checkpoint of `epoch`, unverified (see `restore_latest`)."""
    ocp = self._ocp
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    out = self.manager.restore(epoch, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
    return out["state"], out["meta"]

  def restore_latest(self, like, *, epoch: int | None = None,
                     warn: Callable[[str], None] | None = None
                     ) -> tuple[Any, dict, int]:
    """(state, meta, epoch) of the newest intact checkpoint (at most `epoch`).

    A checkpoint whose checksums do not match, or that orbax cannot read, is
    reported through `warn` in one line and skipped. Raises CheckpointError
    when none is intact (or there is none).
    """
    epochs = [e for e in self.epochs() if epoch is None or e <= epoch]
    if epoch is not None and epoch not in epochs:
      raise CheckpointError(f"no checkpoint of epoch {epoch} in {self.directory} "
                            f"(saved: {self.epochs()})")
    problems = []
    for e in reversed(epochs):
      problem = verify_checksums(self.step_dir(e))
      if problem is None:
        try:
          state, meta = self.restore(e, like)
          if not isinstance(meta, dict) or int(meta.get("epoch", -1)) != e:
            raise ValueError("its loop position does not name this epoch")
          return state, meta, e
        except Exception as err:  # a damaged or foreign checkpoint, whatever orbax says
          problem = f"it cannot be read ({type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''})"
      problems.append(f"epoch {e}: {problem}")
      if warn is not None:
        warn(f"checkpoint of epoch {e} in {self.directory} is damaged ({problem}); "
             f"skipping it")
      if epoch is not None:
        break
    if not epochs:
      raise CheckpointError(f"no checkpoint in {self.directory}")
    raise CheckpointError(f"no intact checkpoint in {self.directory} ({'; '.join(problems)})")

  def set_aside(self, epoch: int) -> pathlib.Path:
    """Renames a damaged checkpoint to `damaged-EPOCH[-n]` beside the others
    (kept for a post-mortem, invisible to restores), so the run can save
    that epoch again."""
    if self.read_only:
      raise ValueError("set_aside: this Checkpointer was opened read_only")
    target = self.directory / f"damaged-{epoch}"
    n = 1
    while target.exists():
      n += 1
      target = self.directory / f"damaged-{epoch}-{n}"
    if jax.process_index() == 0:
      os.replace(self.step_dir(epoch), target)
    self.manager.reload()
    return target

  def close(self) -> None:
    """Closes the orbax checkpoint manager."""
    self.manager.close()


def checkpoint_epochs(workdir: str | os.PathLike) -> list[int]:
  """The epochs of the checkpoints saved in `workdir`, ascending."""
  directory = pathlib.Path(workdir) / CHECKPOINT_DIR
  if not directory.is_dir():
    return []
  ckpt = Checkpointer(directory, read_only=True)
  try:
    return ckpt.epochs()
  finally:
    ckpt.close()


def restore_state(workdir: str | os.PathLike, like, epoch: int | None = None, *,
                  warn: Callable[[str], None] | None = None):
  """The state saved in `workdir`: the newest intact checkpoint, or exactly
  `epoch`'s. like: a state of the same structure (e.g. from the model's
  init_state) supplying shapes, dtypes and the static fields. Raises
  CheckpointError when there is no intact one."""
  directory = pathlib.Path(workdir) / CHECKPOINT_DIR
  if not directory.is_dir():
    raise CheckpointError(f"no checkpoint in {workdir}")
  ckpt = Checkpointer(directory, read_only=True)
  try:
    state, _, _ = ckpt.restore_latest(like, epoch=epoch, warn=warn)
    return state
  finally:
    ckpt.close()
