"""The command line, run as a user runs it: in a subprocess."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import cli_env as _env
from conftest import run_cli as _run


def test_train_ae_leaves_its_files(tmp_path):
  wd = tmp_path / "run"
  out = _run(["train", "ae", "--epochs", "30", "--workdir", str(wd),
              "--checkpoint-every", "10", "--no-progress"], tmp_path)
  assert out.returncode == 0, out.stderr
  assert "test MSE" in out.stdout and "test BCE" in out.stdout
  records = [json.loads(l) for l in open(wd / "metrics.jsonl")]
  assert [r["epoch"] for r in records] == list(range(1, 31))
  for key in ("epoch", "step", "train_loss", "test_loss", "epoch_seconds"):
    assert key in records[0]
  assert records[-1]["test_loss"] < records[0]["test_loss"]
  summary = json.loads((wd / "summary.json").read_text())
  for key in ("test_mse", "test_bce", "compile_seconds", "wall_seconds", "config"):
    assert key in summary
  assert 0 < summary["test_mse"] < 0.05
  assert summary["test_bce"] == pytest.approx(records[-1]["test_bce"], rel=1e-5)
  from PIL import Image
  img = Image.open(wd / "reconstructions.png")
  assert img.size[0] > img.size[1] > 0
  steps = sorted(p.name for p in (wd / "checkpoints").iterdir() if p.name.isdigit())
  assert steps == ["10", "20", "30"]


def test_same_seed_same_numbers(tmp_path):
  args = ["train", "ae", "--epochs", "3", "--no-progress", "--checkpoint-every", "3"]
  a = _run(args + ["--workdir", "a"], tmp_path)
  b = _run(args + ["--workdir", "b", "--no-compile-cache"], tmp_path)
  c = _run(args + ["--workdir", "c", "--seed", "1"], tmp_path)
  assert a.returncode == b.returncode == c.returncode == 0, a.stderr + b.stderr + c.stderr
  sa, sb, sc = (json.loads((tmp_path / d / "summary.json").read_text()) for d in "abc")
  assert sa["test_mse"] == sb["test_mse"]
  assert sa["test_mse"] != sc["test_mse"]


@pytest.mark.parametrize("args, message", [
    (["--dataset", "nope"], "dataset: unknown dataset 'nope'"),
    (["--batch-size", "5000"], "--batch-size: expected at most 1437"),
    (["--epochs", "0"], "--epochs: expected a positive integer, got 0"),
    (["--lr", "-0.1"], "--lr: expected a positive number, got -0.1"),
    (["--latent-dim", "0"], "--latent-dim: expected a positive integer"),
    (["--workdir", "/proc/forbidden"], "--workdir: expected a writable directory"),
    (["--resume", "--workdir", "empty"], "--resume: no run to resume"),
    (["--epochs", "x"], "argument --epochs: invalid int value"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, args, message):
  out = _run(["train", "ae", "--no-progress", *args], tmp_path)
  assert out.returncode == 2, out.stderr
  lines = [l for l in out.stderr.splitlines() if l.startswith("unsupjax")]
  assert len(lines) == 1 and message in lines[0], out.stderr
  assert "Traceback" not in out.stderr


def test_workdir_of_another_model_is_refused(tmp_path):
  wd = tmp_path / "other"
  wd.mkdir()
  (wd / "run.json").write_text(json.dumps({"model": "vae", "config": {}}))
  out = _run(["train", "ae", "--workdir", str(wd), "--no-progress"], tmp_path)
  assert out.returncode == 2
  assert "holds a checkpoint of model 'vae'" in out.stderr


def test_resume_with_changed_settings_is_refused(tmp_path):
  base = ["train", "ae", "--workdir", "r", "--no-progress", "--epochs", "2"]
  assert _run(base, tmp_path).returncode == 0
  out = _run(base + ["--resume", "--lr", "0.01"], tmp_path)
  assert out.returncode == 2 and "--resume: the run in r used lr=0.001" in out.stderr


def test_help_and_module_entry(tmp_path):
  out = _run(["--help"], tmp_path)
  assert out.returncode == 0 and "train" in out.stdout
  out = _run(["train", "ae", "--help"], tmp_path)
  assert out.returncode == 0 and "--resume" in out.stdout


def _params(wd):
  import jax
  from unsupjax import autoencoder as ae, train
  like = ae.init_state(jax.random.PRNGKey(0), ae.AEConfig(), np.zeros((1, 64), np.float32))
  return train.restore_state(wd, like)


@pytest.mark.slow
def test_sigkill_then_resume_is_bit_exact(tmp_path):
  epochs = "60"
  common = ["train", "ae", "--epochs", epochs, "--batch-size", "32",
            "--checkpoint-every", "1", "--no-progress"]
  ref = _run(common + ["--workdir", "straight"], tmp_path)
  assert ref.returncode == 0, ref.stderr

  wd = tmp_path / "killed"
  proc = subprocess.Popen([sys.executable, "-m", "unsupjax", *common, "--workdir", str(wd)],
                          cwd=tmp_path, env=_env(tmp_path),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 240
  ckpt = wd / "checkpoints"
  # Kill it as soon as a few epochs have been checkpointed: mid-run, and
  # quite possibly mid-write.
  while time.time() < deadline and proc.poll() is None:
    if ckpt.exists() and sum(p.name.isdigit() for p in ckpt.iterdir()) >= 2:
      break
    time.sleep(0.01)
  assert proc.poll() is None, "the run ended before it could be killed"
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  n_lines = len((wd / "metrics.jsonl").read_text().splitlines())
  assert n_lines < int(epochs)

  out = _run(common + ["--workdir", str(wd), "--resume"], tmp_path)
  assert out.returncode == 0, out.stderr
  assert "resumed from epoch" in out.stderr
  import jax
  a, b = _params(tmp_path / "straight"), _params(wd)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  lines = [json.loads(l) for l in open(wd / "metrics.jsonl")]
  assert [r["epoch"] for r in lines] == list(range(1, int(epochs) + 1))


def test_family_runs_leave_their_files(tmp_path):
  runs = {
      "conv-ae": ["--epochs", "2", "--latent-dim", "8"],
      "dae": ["--epochs", "3", "--noise", "salt_pepper", "--noise-level", "0.2"],
      "vae": ["--epochs", "3", "--latent-dim", "2", "--hidden", "64", "--iwae-k", "20",
              "--iwae-examples", "100"],
  }
  for model, extra in runs.items():
    out = _run(["train", model, "--workdir", model, "--no-progress", *extra], tmp_path)
    assert out.returncode == 0, out.stderr
    summary = json.loads((tmp_path / model / "summary.json").read_text())
    assert 0 < summary["test_mse"] < 0.2
    assert (tmp_path / model / "reconstructions.png").exists()
  vae_summary = json.loads((tmp_path / "vae" / "summary.json").read_text())
  assert vae_summary["test_iwae_nll"] < vae_summary["test_neg_elbo"] + 1.0
  for png in ("samples.png", "interpolation.png", "latent.png"):
    assert (tmp_path / "vae" / png).exists()
  dae_summary = json.loads((tmp_path / "dae" / "summary.json").read_text())
  assert "test_denoised_mse" in dae_summary


@pytest.mark.parametrize("model, args, message", [
    ("vae", ["--beta", "-1"], "--beta: expected a finite value >= 0"),
    ("vae", ["--latent-dim", "0"], "--latent-dim: expected a positive integer"),
    ("dae", ["--noise", "mask", "--noise-level", "1.5"], "--noise-level: expected a value in (0.0, 1.0]"),
    ("dae", ["--noise", "fog"], "argument --noise: invalid choice"),
])
def test_family_bad_input(tmp_path, model, args, message):
  out = _run(["train", model, "--no-progress", *args], tmp_path)
  assert out.returncode == 2 and message in out.stderr, out.stderr
  assert "Traceback" not in out.stderr


def test_evaluate_reopens_a_run_from_its_files(tmp_path):
  assert _run(["train", "ae", "--workdir", "r", "--epochs", "3", "--no-progress"],
              tmp_path).returncode == 0
  out = _run(["evaluate", "r"], tmp_path)
  assert out.returncode == 0, out.stderr
  evaluated = json.loads((tmp_path / "r" / "eval.json").read_text())
  summary = json.loads((tmp_path / "r" / "summary.json").read_text())
  assert evaluated["test_mse"] == pytest.approx(summary["test_mse"], rel=1e-6)
  assert evaluated["step"] == summary["steps"]
  assert evaluated["epoch"] == 3
  bad = _run(["evaluate", "nowhere"], tmp_path)
  assert bad.returncode == 2 and "workdir: expected a run directory" in bad.stderr


def test_evaluate_an_earlier_checkpoint(tmp_path):
  """--epoch N scores that epoch's checkpoint (the test MSE the run logged
  for epoch N) into eval-epochN.json and leaves eval.json alone; a missing
  epoch or --raw-generator on an autoencoder is refused by name."""
  assert _run(["train", "ae", "--workdir", "r", "--epochs", "3", "--checkpoint-every", "1",
               "--no-progress"], tmp_path).returncode == 0
  logged = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
  out = _run(["evaluate", "r", "--epoch", "2"], tmp_path)
  assert out.returncode == 0, out.stderr
  assert not (tmp_path / "r" / "eval.json").exists()
  evaluated = json.loads((tmp_path / "r" / "eval-epoch2.json").read_text())
  assert (evaluated["epoch"], evaluated["step"]) == (2, logged[1]["step"])
  assert evaluated["test_mse"] == pytest.approx(logged[1]["test_mse"], rel=1e-6)
  assert evaluated["test_mse"] != pytest.approx(logged[2]["test_mse"], rel=1e-3)
  for flags, message in ((["--epoch", "7"], "--epoch: expected one of the saved epochs [1, 2, 3]"),
                         (["--raw-generator"], "--raw-generator: only GAN runs")):
    bad = _run(["evaluate", "r", *flags], tmp_path)
    assert bad.returncode == 2 and message in bad.stderr, bad.stderr
    assert "Traceback" not in bad.stderr
