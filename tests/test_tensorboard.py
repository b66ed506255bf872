"""unsupjax.tensorboard: event files read back equal metrics.jsonl."""

import json
import math
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from unsupjax import runlog, tensorboard

RECORDS = [
    {"epoch": e, "step": 200 * e, "train_d_loss": 1.38 - 0.01 * e, "train_g_loss": 0.7,
     "test_d_real_acc": 0.5 + 0.05 * e, "modes_covered": 3 + e, "reverse_kl": 0.7 / e,
     "digit_kl": [0.1 * e, 0.2, math.inf], "note": "text is skipped", "delta_label": None,
     "eval_seconds": 0.0123456789, "epoch_seconds": 3.3}
    for e in range(1, 5)]


def expected_scalars(records, steps):
  want = {}
  for rec, step in zip(records, steps):
    for k, v in rec.items():
      items = enumerate(v) if isinstance(v, list) else [(None, v)]
      for i, x in items:
        if isinstance(x, (int, float)):
          tag = k if i is None else f"{k}/{i}"
          want.setdefault(tag, []).append((step, float(np.float32(x))))
  return want


def png(path, size=(40, 30), mode="RGB"):
  Image.new(mode, size, (10, 200, 30) if mode == "RGB" else 128).save(path)
  return path


def test_every_value_of_metrics_jsonl_reads_back(tmp_path):
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
  records = runlog.read_records(workdir / "metrics.jsonl")
  with tensorboard.EventWriter(workdir) as w:
    assert w.enabled
    for rec in records:
      w.write_record(rec, rec["epoch"])
  got = tensorboard.read_scalars(workdir)
  assert got == expected_scalars(records, [r["epoch"] for r in records])
  assert "note" not in got and "delta_label" not in got
  assert got["digit_kl/2"][0][1] == math.inf
  assert [p.name.startswith("events.out.tfevents.") for p in workdir.iterdir()
          if p.name != "metrics.jsonl"] == [True]


def test_image_arrives_unchanged(tmp_path):
  picture = png(tmp_path / "samples.png")
  grey = png(tmp_path / "grey.png", (8, 5), "L")
  with tensorboard.EventWriter(tmp_path / "logs") as w:
    w.write_image("samples", picture, 3)
    w.write_image("samples", picture, 7)
    w.write_image("grey", grey, 1)
  images = tensorboard.read_images(tmp_path / "logs")
  assert [s for s, _ in images["samples"]] == [3, 7]
  assert images["samples"][0][1] == picture.read_bytes()
  assert images["grey"] == [(1, grey.read_bytes())]
  assert tensorboard.read_scalars(tmp_path / "logs") == {}


def test_resume_purges_the_steps_logged_again(tmp_path):
  # Epochs 1-5 logged, checkpoint at 3, killed; resumed from 3 to 6.
  first = [{"epoch": e, "train_loss": 1.0 / e} for e in range(1, 6)]
  second = [{"epoch": e, "train_loss": 10.0 / e} for e in range(4, 7)]
  with tensorboard.EventWriter(tmp_path) as w:
    for r in first:
      w.write_record(r, r["epoch"])
  with tensorboard.EventWriter(tmp_path, purge_step=4) as w:
    for r in second:
      w.write_record(r, r["epoch"])
  final = first[:3] + second        # what metrics.jsonl holds after the resume
  assert tensorboard.read_scalars(tmp_path) == expected_scalars(final, range(1, 7))
  assert len(tensorboard.event_files(tmp_path)) == 2


def test_torn_tail_is_ignored(tmp_path):
  with tensorboard.EventWriter(tmp_path) as w:
    w.write_record({"loss": 1.5}, 1)
    w.write_record({"loss": 1.25}, 2)
  path = tensorboard.event_files(tmp_path)[0]
  data = path.read_bytes()
  path.write_bytes(data[:-7])       # the last record cut short by a kill
  assert tensorboard.read_scalars(tmp_path) == {"loss": [(1, 1.5)]}


def test_disabled_writer_is_a_no_op_and_imports_nothing(tmp_path):
  code = ("import sys; from unsupjax import tensorboard as t; w = t.EventWriter(None); "
          "w.write_record({'a': 1.0}, 1); w.write_image('x', 'missing.png', 1); w.close(); "
          "print(w.enabled, 'tensorboardX' in sys.modules)")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=tmp_path, check=True, env={"PYTHONPATH": str(
                           pathlib.Path(__file__).resolve().parents[1]),
                           "JAX_PLATFORMS": "cpu", "PATH": ""})
  assert out.stdout.split() == ["False", "False"]
  assert list(tmp_path.iterdir()) == []


def test_errors_name_the_argument(tmp_path):
  with tensorboard.EventWriter(tmp_path / "logs") as w:
    with pytest.raises(ValueError, match="^step: "):
      w.write_record({"a": 1.0}, -1)
    with pytest.raises(ValueError, match="^step: "):
      w.write_record({"a": 1.0}, 2.5)
    w.write_record({"a": 1.0}, np.int64(3))        # NumPy integers are fine
    (tmp_path / "fake.png").write_text("not a picture")
    with pytest.raises(ValueError, match="^png_path: "):
      w.write_image("x", tmp_path / "fake.png", 1)
    with pytest.raises(FileNotFoundError, match="^png_path: "):
      w.write_image("x", tmp_path / "missing.png", 1)
  with pytest.raises(ValueError, match="^purge_step: "):
    tensorboard.EventWriter(tmp_path / "logs", purge_step=-2)
  with pytest.raises(FileNotFoundError, match="^logdir: "):
    tensorboard.read_scalars(tmp_path / "nowhere")
  assert tensorboard.read_scalars(tmp_path / "logs") == {"a": [(3, 1.0)]}
