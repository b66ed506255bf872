"""unsupjax.curves: curves.png of one run and one metric across runs."""

import json
import math
import os
import pathlib

import numpy as np
import pytest
from PIL import Image

from unsupjax import curves, runlog

PNG = b"\x89PNG\r\n\x1a\n"


def vae_records(n):
  return [{"epoch": e, "step": 11 * e, "train_kl": 0.2 * e, "train_loss": 300.0 / e,
           "train_neg_elbo": 300.0 / e, "train_nll": 299.0 / e, "test_kl": 0.19 * e,
           "test_loss": 310.0 / e, "test_neg_elbo": 310.0 / e, "test_nll": 309.0 / e,
           "epoch_seconds": 0.2} for e in range(1, n + 1)]


def gan_records(n, image=False):
  recs = []
  for e in range(1, n + 1):
    r = {"epoch": e, "step": 200 * e, "train_d_loss": 1.38, "train_g_loss": 0.70,
         "train_d_real_acc": 0.6, "train_d_fake_acc": 0.55, "test_d_loss": 1.37,
         "test_g_loss": 0.69, "test_d_real_acc": 0.58, "test_d_fake_acc": 0.5}
    if image:
      if e % 5 == 0:
        r.update(fid=100.0 / e, kid=0.1 / e)
    else:
      r.update(modes_covered=min(8, e), reverse_kl=0.7 / e)
    recs.append(r)
  return recs


def write_run(root, name, model, config, records, summary=None, status=None):
  d = pathlib.Path(root) / name
  d.mkdir(parents=True)
  (d / "run.json").write_text(json.dumps({"model": model, "config": config}))
  (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
  if summary is not None:
    (d / "summary.json").write_text(json.dumps(summary))
  if status is not None:
    (d / "status.json").write_text(json.dumps(status))
  return runlog.read_run(d)


def panel_titles(fig):
  return [ax.get_title() for ax in fig.axes if ax.get_visible()]


def test_vae_curves_png(tmp_path):
  run = write_run(tmp_path, "vae20", "vae", {"dataset": "digits", "epochs": 20},
                  vae_records(20))
  out = curves.save_run_curves(tmp_path / "vae20" / "curves.png", run)
  data = out.read_bytes()
  assert data.startswith(PNG)
  with Image.open(out) as img:
    w, h = img.size
  assert 1000 <= w <= 2000 and 300 <= h <= 800
  assert sorted(p.name for p in out.parent.iterdir()) == [
      "curves.png", "metrics.jsonl", "run.json"]      # no temporary left behind
  fig = curves.run_figure(run)
  assert panel_titles(fig) == ["Negative ELBO", "KL(q(z|x) || p(z))", "Reconstruction term"]
  assert fig.texts[0].get_text() == "vae on digits - vae20: epoch 20/20, interrupted"
  elbo, kl, _ = fig.axes[:3]
  assert elbo.get_yscale() == "linear"      # 15.5 .. 310 spans 1.3 decades
  assert [l.get_text() for l in elbo.get_legend().get_texts()] == [
      "train  15", "test  15.5"]
  assert elbo.get_xlabel() == "epoch" and "nats" in elbo.get_ylabel()


def test_log_scale_when_values_span_decades():
  recs = [{"epoch": e, "train_loss": 10.0 ** -e, "test_loss": 2 * 10.0 ** -e}
          for e in range(1, 4)]
  fig = curves.run_figure(recs, model="ae")
  assert fig.axes[0].get_yscale() == "log"
  recs = [{"epoch": e, "train_loss": 1.0 - 0.2 * e} for e in range(1, 6)]   # 0 at the end
  assert curves.run_figure(recs, model="ae").axes[0].get_yscale() == "linear"


def test_panels_follow_what_the_records_hold():
  toy = curves.run_figure(gan_records(5), model="gan")
  assert panel_titles(toy) == ["Losses", "Discriminator accuracy", "Modes covered",
                               "Reverse KL to the modes"]
  image = curves.run_figure(gan_records(10, image=True), model="gan")
  assert panel_titles(image) == ["Losses", "Discriminator accuracy", "Sample quality"]
  fid_line = image.axes[2].get_lines()[0]
  assert list(fid_line.get_xdata()) == [5, 10] and fid_line.get_marker() == "o"
  # Keys missing from some records, non-finite values: gaps, no crash.
  recs = vae_records(4)
  del recs[1]["test_kl"]
  recs[2]["train_kl"] = math.nan
  fig = curves.run_figure(recs, model="vae")
  xs = fig.axes[1].get_lines()[0].get_xdata()
  assert list(xs) == [1, 2, 4]
  # Only a loss: one panel for an unknown model.
  assert panel_titles(curves.run_figure([{"epoch": 1, "train_loss": 1.0}], model=None)) == [
      "Loss"]


def test_deep_clustering_phases_share_one_axis():
  pre = [{"epoch": e, "step": 7 * e, "train_loss": 0.1 / e} for e in range(1, 11)]
  for r in pre[4::5]:
    r.update(kmeans_acc=0.6, kmeans_nmi=0.5, kmeans_ari=0.4)
  phase = [{"phase": "dec", "step": 7 * i, "epoch": float(i), "delta_label": 0.01,
            "acc": 0.7, "nmi": 0.6, "ari": 0.5, **({"train_loss": 0.2, "train_kl": 0.2}
                                                   if i else {})} for i in range(4)]
  fig = curves.run_figure(pre + phase, model="dec")
  assert panel_titles(fig) == ["Autoencoder pretraining", "Clustering loss",
                               "Clustering quality"]
  acc = fig.axes[2].get_lines()[0]
  assert list(acc.get_xdata()) == [5, 10, 10, 11, 12, 13]
  assert list(fig.axes[1].get_lines()[0].get_xdata()) == [11, 12, 13]
  assert fig.axes[0].get_xlabel() == "epoch (pretraining, then clustering)"


def test_diverged_run_is_marked(tmp_path):
  run = write_run(tmp_path, "d", "ae", {"dataset": "digits", "epochs": 9, "loss": "bce"},
                  [{"epoch": e, "train_loss": 1.0 / e, "test_loss": 1.1 / e}
                   for e in (1, 2)],
                  status={"status": "diverged", "epoch": 3, "host": "x", "pid": 1})
  fig = curves.run_figure(run)
  labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
  assert labels[-1] == "diverged (epoch 3)"
  assert fig.axes[0].get_ylabel() == "BCE (nats/pixel)"
  assert fig.texts[0].get_text().endswith("epoch 2/9, diverged")


def test_written_atomically(tmp_path, monkeypatch):
  target = tmp_path / "curves.png"
  target.write_bytes(b"old picture")
  seen = []
  real_replace = os.replace

  def spy(src, dst):
    src, dst = pathlib.Path(src), pathlib.Path(dst)
    seen.append((src.parent == dst.parent, src.read_bytes()[:8], dst.read_bytes()))
    real_replace(src, dst)

  monkeypatch.setattr(curves.os, "replace", spy)
  curves.save_run_curves(target, vae_records(3), model="vae")
  assert seen == [(True, PNG, b"old picture")]     # complete before the rename
  assert target.read_bytes().startswith(PNG)

  from matplotlib.figure import Figure

  def broken(self, *a, **k):
    pathlib.Path(a[0]).write_bytes(b"half")
    raise OSError("disk full")

  monkeypatch.setattr(Figure, "savefig", broken)
  before = target.read_bytes()
  with pytest.raises(OSError, match="disk full"):
    curves.save_run_curves(target, vae_records(3), model="vae")
  assert target.read_bytes() == before
  assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png"]


def test_run_curves_errors_name_the_argument():
  with pytest.raises(ValueError, match="^run_or_records: "):
    curves.run_figure([{"epoch": 1, "seconds": 2.0}], model="vae")
  with pytest.raises(ValueError, match="^run_or_records: "):
    curves.run_figure([], model="ae")


def test_metric_across_runs(tmp_path):
  runs = [write_run(tmp_path, f"lr{lr}", "vae", {"dataset": "digits", "epochs": n, "lr": lr},
                    vae_records(n))
          for lr, n in ((0.001, 5), (0.01, 3))]
  km = tmp_path / "km"
  km.mkdir()
  (km / "summary.json").write_text(json.dumps({"command": "kmeans", "inertia": 1.0}))
  runs.append(runlog.read_run(km))
  out = tmp_path / "across.png"
  drawn = curves.save_metric_across_runs(out, runs, "test_neg_elbo")
  assert [r.name for r in drawn] == ["lr0.001", "lr0.01"]
  assert out.read_bytes().startswith(PNG)
  fig, _ = curves.metric_figure(runs, "test_neg_elbo")
  ax = fig.axes[0]
  assert [l.get_text() for l in ax.get_legend().get_texts()] == [
      "lr=0.001  62", "lr=0.01  103.3"]
  assert [len(l.get_xdata()) for l in ax.get_lines()] == [5, 3]
  assert np.allclose(ax.get_lines()[1].get_ydata(), [310.0, 155.0, 310.0 / 3])
  with pytest.raises(ValueError, match="^metric: .*'fid'.*test_neg_elbo"):
    curves.save_metric_across_runs(out, runs, "fid")
  with pytest.raises(ValueError, match="^runs: "):
    curves.save_metric_across_runs(out, [], "test_loss")
