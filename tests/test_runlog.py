"""unsupjax.runlog: reading work directories, run status, the runs table.

Work directories are built by hand (no training): tiny run.json,
metrics.jsonl and summary.json files as the loop and the tasks write them.
"""

import json
import math
import os
import pathlib
import subprocess

import pytest

from unsupjax import runlog

AE_CONFIG = {"dataset": "digits", "epochs": 3, "batch_size": 256, "lr": 0.001, "seed": 0,
             "arch": "dense", "hidden": [128], "latent_dim": 32, "loss": "bce"}


def ae_records(n, steps_per_epoch=5, scale=1.0):
  return [{"epoch": e, "step": e * steps_per_epoch, "train_loss": scale * 0.7 / e,
           "test_bce": scale * 0.69 / e, "test_loss": scale * 0.69 / e,
           "test_mse": scale * 0.17 / e, "test_psnr": 7.0 + e,
           "eval_seconds": 0.01, "epoch_seconds": 0.5} for e in range(1, n + 1)]


def make_run(root, name, *, model="ae", config=None, records=(), summary=None,
             run_json=True, checkpoints=(), status=None, raw_tail=""):
  d = pathlib.Path(root) / name
  d.mkdir(parents=True)
  config = dict(AE_CONFIG if config is None else config)
  if run_json:
    (d / "run.json").write_text(json.dumps({"model": model, "config": config,
                                            "created": 1.0}))
  if records or raw_tail:
    (d / "metrics.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in records) + raw_tail)
  if summary is not None:
    (d / "summary.json").write_text(json.dumps(summary))
  for e in checkpoints:
    (d / "checkpoints" / str(e)).mkdir(parents=True)
  if status is not None:
    (d / "status.json").write_text(json.dumps(status))
  return d


def fit_summary(model, config, records, **extra):
  last = records[-1]
  return {"model": model, "dataset": config["dataset"], "config": config,
          "epochs": config["epochs"], "steps": last["step"],
          **{k: v for k, v in last.items() if k.startswith("train_")},
          **{k: v for k, v in last.items() if k.startswith("test_") and k != "test_loss"},
          "wall_seconds": 12.5, **extra}


VAE_CONFIG = {"dataset": "digits", "epochs": 4, "batch_size": 128, "lr": 0.001, "seed": 0,
              "arch": "dense", "hidden": [500], "latent_dim": 20, "beta": 1.0}


def vae_records(n):
  return [{"epoch": e, "step": 11 * e, "train_kl": 0.2 * e, "train_loss": 30.0 - e,
           "train_neg_elbo": 30.0 - e, "train_nll": 29.8 - e, "test_kl": 0.19 * e,
           "test_loss": 30.5 - e, "test_neg_elbo": 30.5 - e, "test_nll": 30.3 - e,
           "test_mse": 0.1, "epoch_seconds": 0.2} for e in range(1, n + 1)]


GAN_CONFIG = {"dataset": "ring8", "epochs": 10, "batch_size": 256, "seed": 0,
              "lr_schedule": "cosine", "loss": "ns", "latent_dim": 8, "g_lr": 0.001}


def gan_records(n):
  return [{"epoch": e, "step": 200 * e, "train_d_loss": 1.38, "train_g_loss": 0.70,
           "train_d_real_acc": 0.5 + 0.01 * e, "train_d_fake_acc": 0.5,
           "test_d_loss": 1.37, "test_g_loss": 0.69, "test_d_real_acc": 0.55,
           "test_d_fake_acc": 0.52, "epoch_seconds": 3.0, "modes_covered": min(8, 3 + e),
           "hq_fraction": 0.01, "reverse_kl": 0.7 / e} for e in range(1, n + 1)]


KMEANS_SUMMARY = {"command": "kmeans", "source": "dataset", "data": "digits", "n": 1437,
                  "d": 64, "k": 8, "metric": "euclidean", "init": "k-means++", "n_init": 1,
                  "minibatch": None, "seed": 0, "inertia": 4027.2, "n_iter": 24,
                  "converged": True, "seconds": 5.5, "acc": 0.68, "nmi": 0.67, "ari": 0.55}


@pytest.fixture
def mixed(tmp_path):
  """A finished AE and VAE, an interrupted GAN, a k-means run (summary only)."""
  ae = ae_records(3)
  make_run(tmp_path, "ae", records=ae, summary=fit_summary("ae", AE_CONFIG, ae),
           checkpoints=(3,))
  vae = vae_records(4)
  make_run(tmp_path, "vae", model="vae", config=VAE_CONFIG, records=vae,
           summary=fit_summary("vae", VAE_CONFIG, vae))
  make_run(tmp_path, "gan", model="gan", config=GAN_CONFIG, records=gan_records(4),
           checkpoints=(4,), raw_tail='{"epoch": 5, "step": 10')  # killed mid-write
  make_run(tmp_path, "km", run_json=False, summary=KMEANS_SUMMARY)
  return tmp_path


def parse_table(text):
  lines = [l for l in text.splitlines() if l.startswith("|")]
  rows = [[c.strip() for c in l.strip("|").split(" | ")] for l in lines]
  header, body = rows[0], rows[2:]
  assert set(lines[1]) <= set("|-: ")
  return header, [dict(zip(header, r)) for r in body]


def fmt(v):
  return str(v) if isinstance(v, int) else f"{v:.4g}"


# --------------------------------------------------------------------------
# read_run and status


def test_read_finished_run_matches_files(mixed):
  run = runlog.read_run(mixed / "ae")
  recs = [json.loads(l) for l in (mixed / "ae" / "metrics.jsonl").read_text().splitlines()]
  summary = json.loads((mixed / "ae" / "summary.json").read_text())
  assert (run.model, run.dataset, run.status) == ("ae", "digits", "finished")
  assert run.records == recs and run.summary == summary
  assert run.config == AE_CONFIG
  assert (run.epochs_done, run.epochs_planned) == (3, 3)
  assert run.wall_seconds == 12.5 and run.wall_exact
  assert run.checkpoints == (3,)
  assert run.metrics["test_mse"] == summary["test_mse"]
  assert run.metrics["test_loss"] == recs[-1]["test_loss"]  # in records only


def test_interrupted_run_ignores_truncated_last_line(mixed):
  run = runlog.read_run(mixed / "gan")
  assert run.status == "interrupted"
  assert [r["epoch"] for r in run.records] == [1, 2, 3, 4]
  assert (run.epochs_done, run.epochs_planned) == (4, 10)
  assert run.wall_seconds == pytest.approx(4 * 3.0) and not run.wall_exact
  assert run.summary is None


def test_earlier_versions_with_only_a_summary(tmp_path):
  km = runlog.read_run(make_run(tmp_path, "km", run_json=False, summary=KMEANS_SUMMARY))
  assert (km.model, km.dataset, km.status) == ("kmeans", "digits", "finished")
  assert km.config == {k: KMEANS_SUMMARY[k] for k in ("k", "metric", "init", "n_init",
                                                      "minibatch", "seed")}
  assert km.epochs_done is None and km.wall_seconds == 5.5 and km.records == []
  old = make_run(tmp_path, "old", run_json=False,
                 summary={"model": "ae", "dataset": "digits", "config": AE_CONFIG,
                          "epochs": 3, "steps": 15, "test_mse": 0.05, "wall_seconds": 4.0})
  run = runlog.read_run(old)
  assert (run.model, run.status, run.epochs_done, run.epochs_planned) == ("ae", "finished", 3, 3)


def test_empty_and_killed_before_first_epoch(tmp_path):
  assert runlog.read_run(make_run(tmp_path, "e")).status == "empty"
  run = runlog.read_run(make_run(tmp_path, "c", checkpoints=(10,)))
  assert run.status == "interrupted" and run.epochs_done == 10
  bare = tmp_path / "bare"
  bare.mkdir()
  assert runlog.read_run(bare).status == "empty"


def test_summary_older_than_the_records_is_not_finished(tmp_path):
  # Finished at 3 epochs, resumed with --epochs 6, killed after epoch 5.
  recs = ae_records(5)
  summary = fit_summary("ae", AE_CONFIG, recs[:3])
  run = runlog.read_run(make_run(tmp_path, "r", config={**AE_CONFIG, "epochs": 6},
                                 records=recs, summary=summary))
  assert run.status == "interrupted"
  assert run.metrics["test_mse"] == recs[-1]["test_mse"]  # the newer value


def test_summary_before_a_resume_for_more_epochs(tmp_path):
  # Finished at 3 epochs; resumed with --epochs 6 (run.json rewritten), killed
  # before its first new epoch: the records still end where the summary does.
  recs = ae_records(3)
  d = make_run(tmp_path, "r", config={**AE_CONFIG, "epochs": 6}, records=recs,
               summary=fit_summary("ae", AE_CONFIG, recs))
  run = runlog.read_run(d)
  assert (run.status, run.epochs_done, run.epochs_planned) == ("interrupted", 3, 6)
  runlog.write_status(d, "finished")     # an explicit marker is the latest word
  assert runlog.read_run(d).status == "finished"
  runlog.write_status(d, "interrupted", epoch=3)
  assert runlog.read_run(d).status == "interrupted"


def test_diverged_from_marker_or_last_record(tmp_path):
  marker = {"status": "diverged", "epoch": 3, "last_checkpoint": 2,
            "metrics": {"loss": "nan"}, "pid": 1, "host": "elsewhere"}
  run = runlog.read_run(make_run(tmp_path, "m", records=ae_records(2), status=marker))
  assert (run.status, run.diverged_epoch) == ("diverged", 3)
  recs = ae_records(3)
  recs[-1]["train_loss"] = math.nan
  run = runlog.read_run(make_run(tmp_path, "r", records=recs))
  assert (run.status, run.diverged_epoch) == ("diverged", 3)
  # A run resumed after diverging, then finished: its marker says running.
  recs = ae_records(3)
  run = runlog.read_run(make_run(
      tmp_path, "f", records=recs, summary=fit_summary("ae", AE_CONFIG, recs),
      status={"status": "running", "pid": 2 ** 22 + 12345, "host": "elsewhere",
              "updated": 0.0}))
  assert run.status == "finished"


def test_running_marker_checks_the_process(tmp_path):
  dead = subprocess.Popen(["true"])  # a pid that has exited
  dead.wait()
  d = make_run(tmp_path, "r", records=ae_records(2))
  runlog.write_status(d, "running", epoch=2, epochs=3)
  marker = json.loads((d / "status.json").read_text())
  assert marker["pid"] == os.getpid() and marker["epoch"] == 2
  assert runlog.read_run(d).status == "running"
  (d / "status.json").write_text(json.dumps({**marker, "pid": dead.pid}))
  assert runlog.read_run(d).status == "interrupted"
  assert not list(d.glob(".*tmp"))


def test_write_status_rejects_unknown_status(tmp_path):
  with pytest.raises(ValueError, match="^status: "):
    runlog.write_status(tmp_path, "done")
  path = runlog.write_status(tmp_path, "diverged", epoch=4, metrics={"loss": math.inf})
  assert json.loads(path.read_text())["metrics"] == {"loss": "inf"}


def test_deep_clustering_epochs_span_both_phases(tmp_path):
  config = {"dataset": "digits", "epochs": 20, "pretrain_epochs": 3, "pretrained": None,
            "batch_size": 256, "lr": 0.001, "seed": 0, "update_interval": None}
  pre = [{"epoch": e, "step": 7 * e, "train_loss": 0.1 / e} for e in (1, 2, 3)]
  pre[-1].update(kmeans_acc=0.7, kmeans_nmi=0.6)
  phase = [{"phase": "idec", "step": s, "epoch": s / 7, "delta_label": None if s == 0 else 0.01,
            "acc": 0.75, "nmi": 0.7, "ari": 0.6} for s in (0, 7, 14, 17)]
  summary = {"model": "idec", "dataset": "digits", "config": config, "epochs": 3,
             "steps": 21, "cluster_steps": 17, "acc": 0.76, "nmi": 0.71,
             "wall_seconds": 9.0}
  d = make_run(tmp_path, "idec", model="idec", config=config, records=pre + phase,
               summary=summary)
  run = runlog.read_run(d)
  assert run.status == "finished"
  assert runlog.epoch_axis(run.records) == [1, 2, 3, 3, 4, 5, pytest.approx(3 + 17 / 7)]
  assert run.epochs_done == pytest.approx(3 + 17 / 7) and run.epochs_planned == 23
  assert run.metrics["acc"] == 0.76


def test_read_run_names_the_argument(tmp_path):
  with pytest.raises(FileNotFoundError, match="^workdir: "):
    runlog.read_run(tmp_path / "nope")


# --------------------------------------------------------------------------
# find_runs


def test_find_runs_recursive_natural_order(tmp_path):
  for seed in (10, 2, 1):
    make_run(tmp_path / "sweep", f"seed{seed}", config={**AE_CONFIG, "seed": seed},
             records=ae_records(1))
  make_run(tmp_path, "km", run_json=False, summary=KMEANS_SUMMARY)
  # A checkpoint that happens to hold a summary.json is not a run.
  (tmp_path / "sweep" / "seed1" / "checkpoints" / "1").mkdir(parents=True)
  (tmp_path / "sweep" / "seed1" / "checkpoints" / "1" / "summary.json").write_text("{}")
  (tmp_path / "notes").mkdir()
  runs = runlog.find_runs([tmp_path])
  assert [r.path.relative_to(tmp_path).as_posix() for r in runs] == [
      "km", "sweep/seed1", "sweep/seed2", "sweep/seed10"]
  assert [r.name for r in runlog.find_runs(tmp_path / "sweep" / "seed2")] == ["seed2"]
  with pytest.raises(FileNotFoundError, match="^dirs: "):
    runlog.find_runs([tmp_path, tmp_path / "missing"])


# --------------------------------------------------------------------------
# runs_table


def test_table_values_equal_the_files(mixed):
  runs = runlog.find_runs([mixed])
  header, rows = parse_table(runlog.runs_table(runs))
  assert header[:3] == ["run", "model", "dataset"] and header[-2:] == ["wall", "status"]
  by_model = {r["model"]: r for r in rows}
  assert set(by_model) == {"ae", "vae", "gan", "kmeans"}
  ae_summary = json.loads((mixed / "ae" / "summary.json").read_text())
  vae_summary = json.loads((mixed / "vae" / "summary.json").read_text())
  gan_last = [json.loads(l) for l in (mixed / "gan" / "metrics.jsonl").read_text()
              .splitlines()[:4]][-1]
  assert by_model["ae"]["test_mse"] == fmt(ae_summary["test_mse"])
  assert by_model["vae"]["test_neg_elbo"] == fmt(vae_summary["test_neg_elbo"])
  assert by_model["vae"]["test_kl"] == fmt(vae_summary["test_kl"])
  assert by_model["gan"]["modes_covered"] == fmt(gan_last["modes_covered"])
  assert by_model["gan"]["reverse_kl"] == fmt(gan_last["reverse_kl"])
  assert by_model["kmeans"]["inertia"] == fmt(KMEANS_SUMMARY["inertia"])
  assert by_model["kmeans"]["acc"] == fmt(KMEANS_SUMMARY["acc"])
  assert by_model["gan"]["test_mse"] == "-"     # a metric the run does not have
  assert "fid" not in header                    # no run has it
  assert [by_model[m]["status"] for m in ("ae", "vae", "gan", "kmeans")] == [
      "finished", "finished", "interrupted", "finished"]
  assert [by_model[m]["epochs"] for m in ("ae", "vae", "gan", "kmeans")] == [
      "3/3", "4/4", "4/10", "-"]
  assert by_model["ae"]["wall"] == "12.5 s" and by_model["gan"]["wall"] == "~12.0 s"
  assert by_model["kmeans"]["wall"] == "5.5 s"


def test_setting_columns_are_exactly_the_differing_keys(tmp_path):
  make_run(tmp_path, "a", records=ae_records(3))
  make_run(tmp_path, "b", config={**AE_CONFIG, "lr": 0.01, "seed": 1}, records=ae_records(3))
  make_run(tmp_path, "c", config={**AE_CONFIG, "lr": 0.1, "epochs": 9}, records=ae_records(3))
  runs = runlog.find_runs(tmp_path)
  assert runlog.differing_settings(runs) == ["lr", "seed"]   # epochs has its own column
  header, rows = parse_table(runlog.runs_table(runs))
  assert header == ["run", "model", "dataset", "lr", "seed", "epochs", "test_mse", "wall",
                    "status"]
  assert [r["lr"] for r in rows] == ["0.001", "0.01", "0.1"]
  assert [r["epochs"] for r in rows] == ["3/3", "3/3", "3/9"]
  assert runlog.run_labels(runs) == ["lr=0.001, seed=0", "lr=0.01, seed=1", "lr=0.1, seed=0"]
  # One run alone: nothing differs.
  assert parse_table(runlog.runs_table(runs[:1]))[0] == [
      "run", "model", "dataset", "epochs", "test_mse", "wall", "status"]


def test_setting_recorded_by_one_run_only_is_not_a_column(mixed):
  runs = runlog.find_runs(mixed)
  keys = runlog.differing_settings(runs)
  # Shared by ae and vae with different values; gan's own keys (g_lr) and the
  # k-means settings appear in one run each.
  assert keys == ["batch_size", "hidden", "latent_dim", "loss"]


def test_sort_by_metric_direction_and_missing_last(tmp_path):
  for name, scale in (("a", 1.0), ("b", 0.5), ("c", 2.0)):
    make_run(tmp_path, name, records=ae_records(3, scale=scale))
  make_run(tmp_path, "km", run_json=False, summary=KMEANS_SUMMARY)
  runs = runlog.find_runs(tmp_path)
  order = lambda **kw: [r["run"].split("/")[-1]
                        for r in parse_table(runlog.runs_table(runs, **kw))[1]]
  assert order() == ["a", "b", "c", "km"]
  assert order(sort_by="test_mse") == ["b", "a", "c", "km"]          # lower first
  assert order(sort_by="test_mse", descending=True) == ["c", "a", "b", "km"]
  assert order(sort_by="test_psnr") == ["a", "b", "c", "km"]         # higher first (ties)
  assert order(sort_by="acc") == ["km", "a", "b", "c"]
  header, _ = parse_table(runlog.runs_table(runs, sort_by="test_psnr"))
  assert "test_psnr" in header      # the sort key is shown even when not a headline
  assert runlog.higher_is_better("modes_covered") and runlog.higher_is_better("test_psnr")
  assert not runlog.higher_is_better("fid") and not runlog.higher_is_better("test_neg_elbo")


def test_table_errors_name_the_argument(mixed):
  runs = runlog.find_runs(mixed)
  with pytest.raises(ValueError, match="^sort_by: .*'tset_mse'.*test_mse"):
    runlog.runs_table(runs, sort_by="tset_mse")
  with pytest.raises(ValueError, match="^runs: "):
    runlog.runs_table([])


def test_diverged_status_in_table(tmp_path):
  make_run(tmp_path, "d", records=ae_records(2),
           status={"status": "diverged", "epoch": 3, "host": "x", "pid": 1})
  _, rows = parse_table(runlog.runs_table(runlog.find_runs(tmp_path)))
  assert rows[0]["status"] == "diverged (epoch 3)" and rows[0]["epochs"] == "2/3"


def test_headline_keys():
  assert runlog.headline("vae") == ["test_neg_elbo", "test_kl"]
  assert runlog.headline("conv-ae") == ["test_mse"]
  assert runlog.headline("dec") == ["acc", "nmi"]
  assert runlog.headline("something-new") == ["test_loss"]
  assert runlog.progress_keys("gan")[:2] == ["train_d_loss", "train_g_loss"]
  assert runlog.progress_keys("ae") == ["train_loss", "test_loss", "test_mse"]


def test_monitor_draws_after_two_seconds_and_once_at_the_end(tmp_path, monkeypatch):
  """curves.png is drawn once a run has trained for MIN_REDRAW_SECONDS, then
  when due again, and always by finish/stop (whose marker its title names);
  a run shorter than that draws once."""
  import types

  from unsupjax.tasks import watch
  clock = [100.0]
  monkeypatch.setattr(watch.time, "perf_counter", lambda: clock[0])
  status = lambda wd: json.loads((wd / "status.json").read_text())["status"]
  monkeypatch.setattr(runlog, "read_run", status)
  drawn = []
  from unsupjax import curves
  monkeypatch.setattr(curves, "save_run_curves", lambda path, run: drawn.append(run))

  def run(times, end):
    drawn.clear()
    wd = tmp_path / str(len(list(tmp_path.iterdir())))
    wd.mkdir()
    clock[0] = 100.0
    m = watch.Monitor(wd, "ae", types.SimpleNamespace(epochs=len(times)))
    for epoch, t in enumerate(times, 1):
      clock[0] = t
      m.observe([{"epoch": e} for e in range(1, epoch + 1)])
    clock[0] += 0.1
    m.finish({"epochs": len(times)}) if end == "finish" else m.stop(end, "stopped")
    return list(drawn)

  assert watch.MIN_REDRAW_SECONDS == 2.0
  assert run([100.5, 101.9, 102.1, 103.0], "finish") == ["running", "finished"]
  assert run([100.5, 102.1, 103.0, 104.2], "finish") == ["running", "running", "finished"]
  assert run([100.1], "finish") == ["finished"]
  assert run([100.1, 100.2], "interrupted") == ["interrupted"]
