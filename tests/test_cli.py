"""The command line as a user meets it: flags from configs, one-line errors,
work directories that keep their runs, evaluate, runs. In process (see
conftest.cli_main), except where a process must really die."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import cli_env as _env


def test_train_ae_leaves_its_files(tmp_path, cli_main):
  wd = tmp_path / "run"
  code, out, err = cli_main("train", "ae", "--epochs", 30, "--workdir", wd,
                            "--checkpoint-every", 10, "--no-progress")
  assert code == 0, err
  assert "test_mse" in out and "curves.png" in out and " after 30 epochs (" in out
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
  record = json.loads((wd / "run.json").read_text())
  assert record["model"] == "ae" and record["config"]["epochs"] == 30
  assert record["config"]["learning_rate"] == 1e-3 and record["config"]["hidden"] == [128]
  from PIL import Image
  img = Image.open(wd / "reconstructions.png")
  assert img.size[0] > img.size[1] > 0
  assert Image.open(wd / "curves.png").size[0] > 400
  assert json.loads((wd / "status.json").read_text())["status"] == "finished"
  steps = sorted(p.name for p in (wd / "checkpoints").iterdir() if p.name.isdigit())
  assert steps == ["10", "20", "30"]


def test_same_seed_same_numbers(tmp_path, cli_main):
  args = ["train", "ae", "--epochs", "3", "--no-progress", "--checkpoint-every", "3"]
  assert cli_main(*args, "--workdir", "a")[0] == 0
  assert cli_main(*args, "--workdir", "b", "--no-compile-cache")[0] == 0
  assert cli_main(*args, "--workdir", "c", "--seed", "1")[0] == 0
  sa, sb, sc = (json.loads((tmp_path / d / "summary.json").read_text()) for d in "abc")
  assert sa["test_mse"] == sb["test_mse"]
  assert sa["test_mse"] != sc["test_mse"]


@pytest.mark.parametrize("args, message", [
    (["--dataset", "nope"], "dataset: unknown dataset 'nope'"),
    (["--batch-size", "5000"], "--batch-size: expected at most 1437"),
    (["--epochs", "0"], "--epochs: expected a positive integer, got 0"),
    (["--lr", "-0.1"], "--lr: expected a positive number, got -0.1"),
    (["--latent-dim", "0"], "--latent-dim: expected a positive integer"),
    (["--hidden", "64", "0"], "--hidden: expected positive layer widths"),
    (["--workdir", "/proc/forbidden"], "--workdir: expected a writable directory"),
    (["--resume", "--workdir", "empty"], "--resume: no run to resume"),
    (["--resume", "--overwrite"], "--resume: expected --resume or --overwrite, not both"),
    (["--seed", "99999999999999999999"], "--seed: expected an integer in [0, 4294967295]"),
    (["--seed", "4294967296"], "--seed: expected an integer in [0, 4294967295]"),
    (["--seed", "-1"], "--seed: expected an integer in [0, 4294967295]"),
    (["--model-axis", "2"], "--model-axis: expected 1"),
    (["--epochs", "x"], "argument --epochs: invalid int value"),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, cli_main, args, message):
  code, out, err = cli_main("train", "ae", "--no-progress", "--workdir", "wd", *args)
  assert code == 2, err
  lines = [l for l in err.splitlines() if l.strip()]
  assert len(lines) in (1, 2) and message in lines[-1], err   # argparse adds a usage line
  assert "Traceback" not in err
  assert not (tmp_path / "wd").exists()          # not even an empty folder


def test_help_lists_flags_with_defaults(cli_main):
  code, out, _ = cli_main("--help")
  assert code == 0 and "train" in out and "kmeans" in out and "runs" in out
  code, out, _ = cli_main("train", "ae", "--help")
  assert code == 0
  text = " ".join(out.split())
  for flag, default in (("--lr LR", "0.001"), ("--latent-dim LATENT_DIM", "32"),
                        ("--hidden HIDDEN [HIDDEN ...]", "128"),
                        ("--batch-size BATCH_SIZE", "256"), ("--resume", None),
                        ("--progress, --no-progress", "on")):
    assert flag in text
    if default:
      after = text.split(flag + " ", 2)[-1]
      assert f"(default: {default})" in after[:300], after[:300]
  code, out, _ = cli_main("train", "dae", "--help")
  text = " ".join(out.split())
  assert "--noise {gaussian,mask,salt_pepper}" in text and "(default: 0.3)" in text
  code, out, _ = cli_main("--version")
  assert code == 0 and out.startswith("unsupjax ")


def test_help_is_quick_and_module_entry_works(tmp_path):
  """`python -m unsupjax --help` imports no task module (and so no JAX):
  only the registry, which names them."""
  code = ("import sys, unsupjax.cli as c; sys.argv=['unsupjax','--help']\n"
          "try: c.main()\nexcept SystemExit: pass\n"
          "print(sorted(m for m in sys.modules if m.startswith(('jax', 'unsupjax.tasks'))\n"
          "             and m not in ('unsupjax.tasks', 'unsupjax.tasks.registry')))")
  out = subprocess.run([sys.executable, "-c", code], env=_env(tmp_path), cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr
  assert out.stdout.strip().splitlines()[-1] == "[]"


def test_family_runs_leave_their_files(tmp_path, cli_main):
  runs = {
      "conv-ae": ["--epochs", "2", "--latent-dim", "8"],
      "dae": ["--epochs", "3", "--noise", "salt_pepper", "--noise-level", "0.2"],
  }
  for model, extra in runs.items():
    code, _, err = cli_main("train", model, "--workdir", model, "--no-progress", *extra)
    assert code == 0, err
    summary = json.loads((tmp_path / model / "summary.json").read_text())
    assert 0 < summary["test_mse"] < 0.2
    assert (tmp_path / model / "reconstructions.png").exists()
  dae_summary = json.loads((tmp_path / "dae" / "summary.json").read_text())
  assert "test_denoised_mse" in dae_summary
  record = json.loads((tmp_path / "dae" / "run.json").read_text())
  assert record["config"]["corruption"] == "salt_pepper"


@pytest.mark.parametrize("model, args, message", [
    ("dae", ["--noise", "mask", "--noise-level", "1.5"],
     "--noise-level: expected a value in (0.0, 1.0]"),
    ("dae", ["--noise", "fog"], "argument --noise: invalid choice"),
    ("conv-ae", ["--conv-features", "8", "8", "8", "8"], "--dataset: digits images"),
])
def test_family_bad_input(cli_main, model, args, message):
  code, _, err = cli_main("train", model, "--no-progress", *args)
  assert code == 2 and message in err, err
  assert "Traceback" not in err


def test_evaluate_reopens_a_run_from_its_files(tmp_path, cli_main):
  assert cli_main("train", "dae", "--workdir", "r", "--epochs", "3", "--no-progress")[0] == 0
  code, out, err = cli_main("evaluate", "r")
  assert code == 0, err
  evaluated = json.loads((tmp_path / "r" / "eval.json").read_text())
  summary = json.loads((tmp_path / "r" / "summary.json").read_text())
  # The denoising metrics too: their noise is re-derived by name from the seed.
  for key in ("test_mse", "test_denoised_mse"):
    assert evaluated[key] == pytest.approx(summary[key], rel=1e-6)
  assert evaluated["step"] == summary["steps"]
  assert evaluated["epoch"] == 3
  code, _, err = cli_main("evaluate", "nowhere")
  assert code == 2 and "workdir: expected a run directory" in err


def test_evaluate_an_earlier_checkpoint(tmp_path, cli_main):
  """--epoch N scores that epoch's checkpoint (the test MSE the run logged
  for epoch N) into eval-epochN.json and leaves eval.json alone; a missing
  epoch or --raw-generator on an autoencoder is refused by name."""
  assert cli_main("train", "ae", "--workdir", "r", "--epochs", "3", "--checkpoint-every", "1",
                  "--no-progress")[0] == 0
  logged = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
  code, _, err = cli_main("evaluate", "r", "--epoch", "2")
  assert code == 0, err
  assert not (tmp_path / "r" / "eval.json").exists()
  evaluated = json.loads((tmp_path / "r" / "eval-epoch2.json").read_text())
  assert (evaluated["epoch"], evaluated["step"]) == (2, logged[1]["step"])
  assert evaluated["test_mse"] == pytest.approx(logged[1]["test_mse"], rel=1e-6)
  assert evaluated["test_mse"] != pytest.approx(logged[2]["test_mse"], rel=1e-3)
  for flags, message in ((["--epoch", "7"], "--epoch: expected one of the saved epochs [1, 2, 3]"),
                         (["--raw-generator"], "--raw-generator: only GAN runs")):
    code, _, err = cli_main("evaluate", "r", *flags)
    assert code == 2 and message in err, err
    assert "Traceback" not in err


def test_runs_table_and_plot(tmp_path, cli_main):
  for lr in ("0.001", "0.01"):
    assert cli_main("train", "ae", "--workdir", f"runs/ae-{lr}", "--epochs", "2", "--lr", lr,
                    "--no-progress")[0] == 0
  code, out, err = cli_main("runs", "runs", "--sort", "test_mse", "--plot", "test_loss",
                            "--out", "cmp.png")
  assert code == 0, err
  lines = [l for l in out.splitlines() if l.startswith("| runs/")]
  assert len(lines) == 2 and all("finished" in l for l in lines)
  assert "learning_rate" in out.splitlines()[0]      # the setting that differs
  mse = [json.loads((tmp_path / "runs" / f"ae-{lr}" / "summary.json").read_text())["test_mse"]
         for lr in ("0.001", "0.01")]
  best = "ae-0.01" if mse[1] < mse[0] else "ae-0.001"
  assert best in lines[0]
  assert (tmp_path / "cmp.png").stat().st_size > 1000
  code, _, err = cli_main("runs", "runs", "--sort", "nope")
  assert code == 2 and "--sort: no listed run has a metric 'nope'" in err


def _params(wd):
  import jax
  from unsupjax import training
  from unsupjax.models import autoencoder as ae
  like = ae.init_state(jax.random.PRNGKey(0), ae.AEConfig(), np.zeros((1, 64), np.float32))
  return training.restore_state(wd, like)


@pytest.mark.slow
def test_kill_then_resume_is_bit_exact(tmp_path, cli_main):
  """A run killed mid-run (SIGKILL: possibly mid-write) resumes from its
  newest intact checkpoint to the same parameters as a run never stopped."""
  epochs = "16"
  common = ["train", "ae", "--epochs", epochs, "--batch-size", "32",
            "--checkpoint-every", "1", "--no-progress"]
  assert cli_main(*common, "--workdir", "straight")[0] == 0

  wd = tmp_path / "killed"
  proc = subprocess.Popen([sys.executable, "-m", "unsupjax", *common, "--workdir", str(wd)],
                          cwd=tmp_path, env=_env(tmp_path),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 240
  ckpt = wd / "checkpoints"
  while time.time() < deadline and proc.poll() is None:
    if ckpt.exists() and sum(p.name.isdigit() for p in ckpt.iterdir()) >= 2:
      break
    time.sleep(0.01)
  assert proc.poll() is None, "the run ended before it could be killed"
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  n_lines = len((wd / "metrics.jsonl").read_text().splitlines())
  assert n_lines < int(epochs)

  code, _, err = cli_main(*common, "--workdir", wd, "--resume")
  assert code == 0, err
  assert "resumed from epoch" in err
  import jax
  a, b = _params(tmp_path / "straight"), _params(wd)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  lines = [json.loads(l) for l in open(wd / "metrics.jsonl")]
  assert [r["epoch"] for r in lines] == list(range(1, int(epochs) + 1))


def test_tensorboard_holds_what_metrics_jsonl_holds(tmp_path, cli_main):
  from unsupjax import tensorboard
  code, _, err = cli_main("train", "ae", "--workdir", "r", "--epochs", "3", "--no-progress",
                          "--tensorboard")
  assert code == 0, err
  records = [json.loads(l) for l in open(tmp_path / "r" / "metrics.jsonl")]
  scalars = tensorboard.read_scalars(tmp_path / "r" / "tensorboard")
  for key in ("train_loss", "test_loss", "test_mse"):
    assert [s for s, _ in scalars[key]] == [r["step"] for r in records]
    np.testing.assert_allclose([v for _, v in scalars[key]], [r[key] for r in records],
                               rtol=1e-6)
  images = tensorboard.read_images(tmp_path / "r" / "tensorboard")
  assert {"curves", "reconstructions"} <= set(images)


def test_runs_lists_a_mix_of_models_one_interrupted(tmp_path, cli_main, monkeypatch,
                                                   small_toys):
  from conftest import interrupt_checksums_at
  assert cli_main("train", "ae", "--workdir", "runs/ae", "--epochs", "2", "--no-progress")[0] == 0
  assert cli_main("train", "vae", "--workdir", "runs/vae", "--epochs", "2", "--hidden", "32",
                  "--no-progress")[0] == 0
  assert cli_main("kmeans", "--k", "10", "--workdir", "runs/kmeans")[0] == 0
  assert cli_main("train", "gan", "--workdir", "runs/gan", "--epochs", "1", "--batch-size",
                  "128", "--no-progress")[0] == 0               # ring8, small_toys' points
  restore = interrupt_checksums_at(monkeypatch, 2)
  assert cli_main("train", "ae", "--workdir", "runs/stopped", "--epochs", "4",
                  "--checkpoint-every", "1", "--no-progress")[0] == 130
  restore()
  code, out, err = cli_main("runs", "runs")
  assert code == 0, err
  rows = {l.split("|")[1].strip(): l for l in out.splitlines() if l.startswith("| runs/")}
  assert set(rows) == {"runs/ae", "runs/vae", "runs/kmeans", "runs/gan", "runs/stopped"}
  assert "interrupted" in rows["runs/stopped"] and "finished" in rows["runs/ae"]
  assert all("finished" in rows[f"runs/{m}"] for m in ("vae", "kmeans", "gan"))
  vae = json.loads((tmp_path / "runs" / "vae" / "summary.json").read_text())
  assert f"{vae['test_neg_elbo']:.4g}"[:4] in rows["runs/vae"]
  # The GAN's headline columns carry its summary's numbers.
  header = next(l for l in out.splitlines() if l.startswith("| run"))
  cells = dict(zip([c.strip() for c in header.split("|")],
                   [c.strip() for c in rows["runs/gan"].split("|")]))
  gan = json.loads((tmp_path / "runs" / "gan" / "summary.json").read_text())
  assert cells["model"] == "gan" and cells["modes_covered"] == f"{gan['modes_covered']:.4g}"
