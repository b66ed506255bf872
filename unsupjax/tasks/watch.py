"""What a run shows while it trains: status.json, curves.png, TensorBoard.

`Monitor.observe` is a `training.fit` observer: after each epoch it marks
the run 'running' (status.json), writes the new records to TensorBoard
(with --tensorboard) and redraws `curves.png` once the run has trained
for 2 s, then at most every max(2 s, 10 x the last drawing's time), so
that drawing never costs a run more than a tenth of its time. `stop` and
`finish` write the final marker ('interrupted', 'diverged', 'finished')
and the last picture (its title names that marker), so a run shorter
than 2 s draws once. Only the lead process of a multi-process run writes.
"""

from __future__ import annotations

import pathlib
import time
from typing import Any

from unsupjax import runlog

CURVES_FILE = "curves.png"
TENSORBOARD_DIR = "tensorboard"
MIN_REDRAW_SECONDS = 2.0


class Monitor:

  def __init__(self, workdir: pathlib.Path, model: str, cfg: Any, enabled: bool = True):
    import jax
    self.workdir = pathlib.Path(workdir)
    self.model = model
    self.epochs = cfg.epochs
    self.enabled = enabled and jax.process_index() == 0
    self.tensorboard = getattr(cfg, "tensorboard", False)
    self._writer = None
    self._written = 0          # records already sent to TensorBoard
    self._next_draw = time.perf_counter() + MIN_REDRAW_SECONDS
    self._records: list[dict] = []
    if self.enabled:
      runlog.write_status(self.workdir, "running", epoch=None, epochs=self.epochs)

  def _draw(self) -> None:
    from unsupjax import curves
    try:
      t = time.perf_counter()
      curves.save_run_curves(self.workdir / CURVES_FILE, runlog.read_run(self.workdir))
      took = time.perf_counter() - t
      self._next_draw = time.perf_counter() + max(MIN_REDRAW_SECONDS, 10 * took)
    except ValueError:       # nothing to draw yet
      pass

  def _send(self, records: list[dict]) -> None:
    if not self.tensorboard:
      return
    from unsupjax import tensorboard
    if self._writer is None:
      first = next((r.get("step") for r in records[self._written:]), None)
      self._writer = tensorboard.EventWriter(self.workdir / TENSORBOARD_DIR,
                                             purge_step=first if self._written == 0 else None)
    for rec in records[self._written:]:
      step = rec.get("step", rec.get("epoch", 0))
      self._writer.write_record(rec, int(step))
    self._written = len(records)

  def observe(self, history: list[dict]) -> None:
    if not self.enabled:
      return
    self._records = history
    last = history[-1] if history else {}
    runlog.write_status(self.workdir, "running", epoch=last.get("epoch"), epochs=self.epochs)
    self._send(history)
    if time.perf_counter() >= self._next_draw:
      self._draw()

  def _close(self) -> None:
    if self._writer is not None:
      for png in sorted(self.workdir.glob("*.png")):
        self._writer.write_image(png.stem, png, int(self._records[-1].get("step", 0))
                                 if self._records else 0)
      self._writer.close()
      self._writer = None

  def stop(self, status: str, message: str, **fields: Any) -> None:
    if not self.enabled:
      return
    epoch = self._records[-1].get("epoch") if self._records else None
    runlog.write_status(self.workdir, status, **{"epoch": epoch, "message": message, **fields})
    if self._records:
      self._draw()
    self._close()

  def finish(self, summary: dict) -> None:
    if not self.enabled:
      return
    runlog.write_status(self.workdir, "finished", epoch=summary.get("epochs"),
                        epochs=self.epochs)
    if self._records:
      self._draw()
    self._close()
