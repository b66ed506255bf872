"""Never losing a user's work: fault injection on tiny runs.

Each test damages something a real user could damage (a second run in the
same folder, a flipped byte, a truncated or garbage checkpoint file, Ctrl-C
in the middle of a checkpoint write, contradictory records) and checks that
unsupjax keeps what it should, explains itself in one line, and resumes to
exactly the numbers of a run that never failed. In process (conftest
`cli_main`), with fault points patched in, except the one Ctrl-C that a
real process must receive.
"""

import json
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import cli_env

TINY = ["train", "ae", "--hidden", "16", "--latent-dim", "4", "--batch-size", "128",
        "--checkpoint-every", "1", "--no-progress"]


def _leaves(wd, epoch=None):
  import jax

  from unsupjax import training
  from unsupjax.models import autoencoder as ae
  like = ae.init_state(jax.random.PRNGKey(0), ae.AEConfig(hidden=(16,), latent_dim=4),
                       np.zeros((1, 64), np.float32))
  return [np.asarray(x) for x in jax.tree.leaves(training.restore_state(wd, like, epoch))]


def _snapshot(wd: pathlib.Path) -> dict:
  return {str(p.relative_to(wd)): p.read_bytes() for p in sorted(wd.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
  """A 4-epoch run that never failed: the numbers every recovery must reach."""
  from unsupjax import cli
  wd = tmp_path_factory.mktemp("straight") / "run"
  assert cli.main([*TINY, "--epochs", "4", "--workdir", str(wd)]) == 0
  return _leaves(wd)


def _weights_file(step_dir: pathlib.Path) -> pathlib.Path:
  files = [p for p in step_dir.rglob("*") if p.is_file() and "checksums" not in p.name
           and p.parent.name != "meta" and p.name not in ("_METADATA", "_CHECKPOINT_METADATA")]
  return max(files, key=lambda p: p.stat().st_size)


def test_a_second_run_keeps_the_first(tmp_path, cli_main):
  assert cli_main(*TINY, "--epochs", "2", "--workdir", "r")[0] == 0
  before = _snapshot(tmp_path / "r")
  code, _, err = cli_main(*TINY, "--epochs", "2", "--workdir", "r")
  assert code == 2 and "--workdir: r already holds a run of ae" in err
  assert "--resume" in err and "--overwrite" in err
  assert _snapshot(tmp_path / "r") == before
  code, _, err = cli_main(*TINY, "--epochs", "3", "--workdir", "r", "--overwrite")
  assert code == 0, err
  lines = (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()
  assert [json.loads(l)["epoch"] for l in lines] == [1, 2, 3]


def test_a_folder_with_the_users_own_files_is_never_touched(tmp_path, cli_main):
  wd = tmp_path / "mine"
  wd.mkdir()
  (wd / "summary.json").write_text('{"mine": true}')
  (wd / "metrics.jsonl").write_text('{"epoch": 1}\n')
  for extra in ([], ["--overwrite"]):
    code, _, err = cli_main(*TINY, "--epochs", "1", "--workdir", "mine", *extra)
    assert code == 2 and "holds metrics.jsonl, summary.json but no run.json" in err, err
  assert (wd / "summary.json").read_text() == '{"mine": true}'
  assert (wd / "metrics.jsonl").read_text() == '{"epoch": 1}\n'


@pytest.mark.parametrize("damage", ["flip", "truncate", "metadata"])
def test_a_damaged_checkpoint_is_skipped_and_the_resume_is_exact(
    tmp_path, cli_main, straight, damage):
  assert cli_main(*TINY, "--epochs", "3", "--workdir", "r")[0] == 0
  step = tmp_path / "r" / "checkpoints" / "3"
  if damage == "flip":
    f = _weights_file(step)
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x01
    f.write_bytes(bytes(data))
  elif damage == "truncate":
    f = _weights_file(step)
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
  else:
    (step / "_CHECKPOINT_METADATA").write_text("{ not json")
  # evaluate falls back too, and says so.
  code, out, err = cli_main("evaluate", "r")
  assert code == 0, err
  assert "checkpoint of epoch 3" in err and "damaged" in err
  assert json.loads((tmp_path / "r" / "eval-epoch2.json").read_text())["epoch"] == 2
  code, _, err = cli_main(*TINY, "--epochs", "4", "--workdir", "r", "--resume")
  assert code == 0, err
  assert "resumed from epoch 2" in err and "damaged-3" in err
  assert (tmp_path / "r" / "checkpoints" / "damaged-3").is_dir()     # kept, set aside
  for a, b in zip(straight, _leaves(tmp_path / "r")):
    np.testing.assert_array_equal(a, b)
  epochs = [json.loads(l)["epoch"] for l in open(tmp_path / "r" / "metrics.jsonl")]
  assert epochs == [1, 2, 3, 4]


def test_no_intact_checkpoint_is_one_line(tmp_path, cli_main):
  assert cli_main(*TINY, "--epochs", "1", "--workdir", "r")[0] == 0
  f = _weights_file(tmp_path / "r" / "checkpoints" / "1")
  f.write_bytes(b"garbage")
  code, _, err = cli_main(*TINY, "--epochs", "2", "--workdir", "r", "--resume")
  assert code == 2 and "no intact checkpoint" in err and "Traceback" not in err
  code, _, err = cli_main("evaluate", "r")
  assert code == 2 and "no intact checkpoint" in err and "Traceback" not in err


def test_records_cannot_contradict_each_other(tmp_path, cli_main):
  assert cli_main(*TINY, "--epochs", "3", "--workdir", "r")[0] == 0
  record = (tmp_path / "r" / "run.json").read_text()
  code, _, err = cli_main(*TINY, "--epochs", "2", "--workdir", "r", "--resume")
  assert code == 2 and "--epochs: the run in r is at epoch 3" in err
  assert (tmp_path / "r" / "run.json").read_text() == record
  # A record with no checkpoint does not silently start again.
  (tmp_path / "s").mkdir()
  (tmp_path / "s" / "run.json").write_text(record)
  code, _, err = cli_main(*TINY, "--epochs", "3", "--workdir", "s", "--resume")
  assert code == 2 and "--resume: s holds no checkpoint" in err
  # An empty run.json: one line from train and from evaluate.
  (tmp_path / "s" / "run.json").write_text("")
  for args in ([*TINY, "--workdir", "s"], ["evaluate", "s"]):
    code, _, err = cli_main(*args)
    assert code == 2 and "not a valid run record" in err and "Traceback" not in err


def test_ctrl_c_while_a_checkpoint_is_written(tmp_path, cli_main, straight, monkeypatch):
  """KeyboardInterrupt after orbax wrote epoch 2's files but before their
  checksums: exit 130 with one line, status 'interrupted', and a resume
  that reaches the straight run's numbers."""
  from conftest import interrupt_checksums_at
  restore = interrupt_checksums_at(monkeypatch, 2)
  code, _, err = cli_main(*TINY, "--epochs", "4", "--workdir", "r")
  assert code == 130
  assert [l for l in err.splitlines() if l.strip()] == [
      "unsupjax: interrupted; the newest complete checkpoint is kept"]
  assert json.loads((tmp_path / "r" / "status.json").read_text())["status"] == "interrupted"
  restore()
  code, _, err = cli_main(*TINY, "--epochs", "4", "--workdir", "r", "--resume")
  assert code == 0, err
  for a, b in zip(straight, _leaves(tmp_path / "r")):
    np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_sigint_to_a_real_process_checkpointing_every_epoch(tmp_path):
  """A real Ctrl-C (SIGINT) to a run that checkpoints every epoch: exit
  130, a short message and no traceback, whatever it was doing."""
  wd = tmp_path / "r"
  proc = subprocess.Popen([sys.executable, "-m", "unsupjax", *TINY, "--epochs", "400",
                           "--batch-size", "32", "--workdir", str(wd)],
                          cwd=tmp_path, env=cli_env(tmp_path), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 120
  while time.time() < deadline and proc.poll() is None:
    ckpt = wd / "checkpoints"
    if ckpt.exists() and sum(p.name.isdigit() for p in ckpt.iterdir()) >= 2:
      break
    time.sleep(0.02)
  assert proc.poll() is None, proc.communicate()
  proc.send_signal(signal.SIGINT)
  out, err = proc.communicate(timeout=60)
  assert proc.returncode == 130, err
  assert "Traceback" not in err and len(err.strip().splitlines()) <= 3, err
  assert json.loads((wd / "status.json").read_text())["status"] == "interrupted"


def test_an_interrupted_checkpoint_write_adds_no_warnings_at_exit(cli_main, monkeypatch):
  """Ctrl-C in the middle of an orbax write leaves coroutines that were never
  awaited; the CLI's exit says its one line, not Python's warning about each
  (seen once from the real SIGINT above). Other warnings still show."""
  import warnings

  from unsupjax.tasks import base

  def interrupted_write(*args, **kwargs):
    raise KeyboardInterrupt
  monkeypatch.setattr(base, "train", interrupted_write)
  with warnings.catch_warnings(record=True) as seen:
    warnings.simplefilter("always")
    code, _, err = cli_main(*TINY, "--epochs", "1", "--workdir", "r")
    warnings.warn("coroutine 'Checkpointer.save' was never awaited", RuntimeWarning)
    warnings.warn("another warning", RuntimeWarning)
  assert code == 130 and err.strip() == ("unsupjax: interrupted; the newest complete "
                                         "checkpoint is kept")
  assert [str(w.message) for w in seen] == ["another warning"]
