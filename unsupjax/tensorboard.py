"""TensorBoard event files: every metrics.jsonl value as a scalar, pictures as images.

Offers `EventWriter(logdir)`, which writes one event file per writer into
`logdir` (`write_record(record, step)`, `write_image(tag, png_path, step)`,
`close()`), and `read_scalars(logdir)` / `read_images(logdir)`, which read
them back (for tests, and for users who want the numbers without
TensorBoard). `EventWriter(None)` is a disabled writer: every method
returns at once and tensorboardX is never imported.

The events are TensorBoard's own format (TFRecord framing around `Event`
protocol buffers), built with tensorboardX's protos and record writer, so
no TensorFlow is needed to write or read them. Writes are synchronous and
flushed after each call, so `tensorboard --logdir runs/` shows an epoch as
soon as it is logged. Scalars are stored as float32, as TensorBoard stores
them.

A resumed run passes `purge_step` (its first new step): the writer marks the
file with a session START at that step, and TensorBoard then drops the
earlier events at steps >= purge_step, which the interrupted run logged
before its last checkpoint was taken (the same convention as tensorboardX's
and PyTorch's `purge_step`); `read_scalars` applies the same rule.

Multi-process runs: every process holds the same values, so only the lead
process should write (the others pass logdir=None); the caller decides.

Does not offer: histograms, graphs, hyperparameter tables, or remote
(s3://, gs://) log directories.
"""

from __future__ import annotations

import os
import pathlib
import socket
import struct
import time
from collections.abc import Mapping
from typing import Any

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PNG colour type -> TensorBoard colorspace (1 grey, 2 grey+alpha, 3 RGB, 4 RGBA).
_COLORSPACE = {0: 1, 4: 2, 2: 3, 6: 4, 3: 3}


def _png_header(data: bytes, name: str) -> tuple[int, int, int]:
  """(height, width, colorspace) of PNG bytes; ValueError naming `name` if not a PNG."""
  if len(data) < 33 or not data.startswith(_PNG_SIGNATURE) or data[12:16] != b"IHDR":
    raise ValueError(f"png_path: expected a PNG file, got {name!r}")
  width, height = struct.unpack(">II", data[16:24])
  return height, width, _COLORSPACE.get(data[25], 3)


def _scalars(record: Mapping[str, Any], prefix: str = ""):
  """(tag, value) for every number in record; lists become tag/i, dicts tag/key."""
  for key, value in record.items():
    tag = f"{prefix}{key}"
    if isinstance(value, Mapping):
      yield from _scalars(value, tag + "/")
    elif isinstance(value, (list, tuple)):
      yield from _scalars({str(i): v for i, v in enumerate(value)}, tag + "/")
    elif isinstance(value, (int, float)):   # bool too: 0/1
      yield tag, float(value)
    elif hasattr(value, "item") and getattr(value, "shape", None) == ():
      item = value.item()                     # a NumPy / JAX scalar
      if isinstance(item, (int, float)):
        yield tag, float(item)


class EventWriter:
  """Writes TensorBoard events into `logdir` (None: a disabled writer).

  One event file per writer, named events.out.tfevents.TIME.HOST.PID.NS so
  that files sort in the order they were opened.
  purge_step: for a resumed run, its first new step (see the module
    docstring).
  """

  def __init__(self, logdir: str | os.PathLike | None, *, purge_step: int | None = None):
    self.logdir = None if logdir is None else pathlib.Path(logdir)
    self._writer = None
    if self.logdir is None:
      return
    from tensorboardX.proto import event_pb2, summary_pb2
    from tensorboardX.record_writer import RecordWriter
    self._event_pb2, self._summary_pb2 = event_pb2, summary_pb2
    if purge_step is not None:
      purge_step = _check_step(purge_step, "purge_step")
    self.logdir.mkdir(parents=True, exist_ok=True)
    now = time.time()
    name = (f"events.out.tfevents.{int(now):010d}.{socket.gethostname()}."
            f"{os.getpid()}.{time.time_ns()}")
    self.path = self.logdir / name
    self._writer = RecordWriter(str(self.path))
    self._write(event_pb2.Event(wall_time=now, step=purge_step or 0,
                                file_version="brain.Event:2"))
    if purge_step is not None:
      self._write(event_pb2.Event(
          wall_time=now, step=purge_step,
          session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START)))
    self.flush()

  @property
  def enabled(self) -> bool:
    return self._writer is not None

  def _write(self, event) -> None:
    self._writer.write(event.SerializeToString())

  def write_record(self, record: Mapping[str, Any], step: int, *,
                   prefix: str = "", wall_time: float | None = None) -> None:
    """Every number of `record` (a metrics.jsonl object) as a scalar at
    `step`, tagged `prefix + key`; a list value becomes key/0, key/1, ...,
    a dict value key/subkey; strings and None are skipped."""
    if self._writer is None:
      return
    step = _check_step(step, "step")
    summary_pb2 = self._summary_pb2
    values = [summary_pb2.Summary.Value(tag=tag, simple_value=v)
              for tag, v in _scalars(record, prefix)]
    if values:
      self._write(self._event_pb2.Event(
          wall_time=time.time() if wall_time is None else wall_time, step=step,
          summary=summary_pb2.Summary(value=values)))
      self.flush()

  def write_image(self, tag: str, png_path: str | os.PathLike, step: int) -> None:
    """The PNG file `png_path` as image `tag` at `step` (its bytes as they
    are: no decoding, no re-encoding)."""
    if self._writer is None:
      return
    step = _check_step(step, "step")
    try:
      data = pathlib.Path(png_path).read_bytes()
    except OSError as e:
      raise FileNotFoundError(f"png_path: cannot read {str(png_path)!r} "
                              f"({e.strerror or e})") from None
    height, width, colorspace = _png_header(data, str(png_path))
    summary_pb2 = self._summary_pb2
    image = summary_pb2.Summary.Image(height=height, width=width, colorspace=colorspace,
                                      encoded_image_string=data)
    self._write(self._event_pb2.Event(
        wall_time=time.time(), step=step,
        summary=summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, image=image)])))
    self.flush()

  def flush(self) -> None:
    """Writes buffered events to the file."""
    if self._writer is not None:
      self._writer.flush()

  def close(self) -> None:
    """Flushes and closes the file; later writes are ignored."""
    if self._writer is not None:
      self._writer.flush()
      self._writer.close()
      self._writer = None

  def __enter__(self) -> EventWriter:
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def _check_step(step: Any, name: str) -> int:
  if isinstance(step, bool) or not isinstance(step, int):
    if hasattr(step, "item") and getattr(step, "shape", None) == ():
      step = step.item()
    if isinstance(step, float) and step.is_integer():
      step = int(step)
  if isinstance(step, bool) or not isinstance(step, int) or step < 0:
    raise ValueError(f"{name}: expected a non-negative integer, got {step!r}")
  return step


# --------------------------------------------------------------------------
# Reading.


def event_files(logdir: str | os.PathLike) -> list[pathlib.Path]:
  """The event files directly in `logdir`, in TensorBoard's (name) order."""
  path = pathlib.Path(logdir)
  if not path.is_dir():
    raise FileNotFoundError(f"logdir: expected a directory, got {str(path)!r}")
  return sorted((p for p in path.iterdir() if "tfevents" in p.name and p.is_file()),
                key=lambda p: p.name)


def _records(path: pathlib.Path):
  """The payloads of a TFRecord file; stops at a torn or corrupt record (the
  tail of a file being written)."""
  from tensorboardX.record_writer import masked_crc32c
  data = path.read_bytes()
  pos = 0
  while pos + 12 <= len(data):
    header = data[pos:pos + 8]
    (length,), (header_crc,) = struct.unpack("<Q", header), struct.unpack(
        "<I", data[pos + 8:pos + 12])
    end = pos + 12 + length + 4
    if header_crc != masked_crc32c(header) or end > len(data):
      return
    payload = data[pos + 12:pos + 12 + length]
    if struct.unpack("<I", data[end - 4:end])[0] != masked_crc32c(payload):
      return
    yield payload
    pos = end


def _events(logdir: str | os.PathLike):
  from tensorboardX.proto import event_pb2
  for path in event_files(logdir):
    for payload in _records(path):
      event = event_pb2.Event()
      event.ParseFromString(payload)
      yield event


def _read(logdir, kind: str) -> dict[str, list]:
  from tensorboardX.proto import event_pb2
  out: dict[str, list] = {}
  for event in _events(logdir):
    which = event.WhichOneof("what")
    if which == "session_log" and event.session_log.status == event_pb2.SessionLog.START:
      for tag in out:   # TensorBoard's purge: steps >= this one are orphaned
        out[tag] = [item for item in out[tag] if item[0] < event.step]
    elif which == "summary":
      for v in event.summary.value:
        if kind == "scalar" and v.WhichOneof("value") == "simple_value":
          out.setdefault(v.tag, []).append((int(event.step), float(v.simple_value)))
        elif kind == "image" and v.WhichOneof("value") == "image":
          out.setdefault(v.tag, []).append((int(event.step), bytes(v.image.encoded_image_string)))
  for tag in out:
    out[tag].sort(key=lambda item: item[0])
  return {tag: items for tag, items in out.items() if items}


def read_scalars(logdir: str | os.PathLike) -> dict[str, list[tuple[int, float]]]:
  """{tag: [(step, value), ...]} of the scalars in `logdir`'s event files,
  ascending in step, after TensorBoard's purge of steps a resumed run
  re-logged. Values are float32 as stored."""
  return _read(logdir, "scalar")


def read_images(logdir: str | os.PathLike) -> dict[str, list[tuple[int, bytes]]]:
  """{tag: [(step, encoded PNG bytes), ...]} of the images in `logdir`."""
  return _read(logdir, "image")
