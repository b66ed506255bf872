"""Mode collapse and sample quality of the library's GANs, mean ± std over seeds.

The evaluation issue's protocol, each run as the CLI runs it (a subprocess
of `unsupjax train gan`), numbers read from its summary.json:

  ring8, grid25   2,500 EMA samples; modes covered, high-quality fraction
                  (within 3 sigma of the nearest centre), reverse KL of the
                  HQ samples' mode histogram to uniform (PacGAN / VEEGAN).
  stacked_mnist   26,000 samples, 1,000 modes (each channel's digit by the
                  shipped MNIST classifier): modes covered, KL to uniform.
  mnist           FID (the shipped feature net, 10,000 samples vs the
                  10,000 test images) against the real-vs-real floor of the
                  same sizes (train[:10k] vs test), measured here too.

Configurations: `default` (the CLI's defaults for the dataset), `plain` (the
same without the mode-collapse counter-measures: `--pac 1 --no-spectral-norm
--r1 0`, and on grid25 and stacked_mnist `--d-lr` at G's rate), `short` (a quarter of
the epochs at a constant learning rate: ring8's default before it became 200
epochs with a cosine decay), `plain-short` (both), and `long` (4x the epochs,
cosine decay). The plain GAN runs beside the default so its collapse is
measured in the same table, not quoted.

    python benchmarks/gan_modes.py --datasets ring8 grid25 --seeds 0 1 2
    python benchmarks/gan_modes.py --datasets stacked_mnist mnist \\
        --data-dir ../shared/data/tfds --seeds 0

Runs that already left a summary.json in --runs-dir are not re-run, and a
run killed midway resumes from its last epoch's checkpoint (resume is exact,
so the numbers are those of an uninterrupted run). Rows can be added a seed
at a time; `--only-existing` tabulates what is there without training.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # unsupjax, imported where used (keeps --help light)
sys.path.insert(0, str(REPO / "benchmarks"))
import _bench  # noqa: E402

DATASETS = ("ring8", "grid25", "stacked_mnist", "mnist")
CONFIGS = ("default", "plain", "short", "plain-short", "long")
PLAIN_FLAGS = ["--pac", "1", "--no-spectral-norm", "--r1", "0"]
# The evaluation issue's goals for the recommended configuration.
GOALS = {"ring8": "8/8, HQ >= 0.98, rKL < 0.03",
         "grid25": "25/25 every seed, HQ >= 0.95, rKL < 0.03",
         "stacked_mnist": "1000/1000, KL < 0.05",
         "mnist": "FID <= 2 x floor"}
PUBLISHED = {  # PacGAN paper (Lin et al. 2018), 10 trials
    ("ring8", "plain"): "GAN 6.3 / 98.2% / 0.45",
    ("ring8", "default"): "PacGAN2 7.9 / 95.6% / 0.07",
    ("grid25", "plain"): "GAN 17.3 / 94.8% / 0.70",
    ("grid25", "default"): "PacGAN4 24.8 / 93.6% / 0.04",
    ("stacked_mnist", "plain"): "DCGAN 99 / KL 3.4",
    ("stacked_mnist", "default"): "PacDCGAN2 1000 / KL 0.06",
}


def cli_config(dataset: str, flags: list[str] = ()):
  """The GANFlags `unsupjax train gan --dataset DATASET FLAGS` runs with,
  its defaults resolved (epochs, workdir) as run.json records them."""
  from unsupjax import cli
  from unsupjax.cli.flags import to_config
  from unsupjax.tasks import base
  argv = ["train", "gan", "--dataset", dataset, *flags]
  parser, task = cli.build_parser(("train", "gan"))
  return base.resolve(task, to_config(task.config, parser.parse_args(argv)))


def cli_epochs(dataset: str) -> int:
  """The CLI's default epochs for a dataset."""
  return cli_config(dataset).epochs


def plain_flags(dataset: str) -> list[str]:
  """PLAIN_FLAGS, and D at G's learning rate where the dataset's default
  gives D a faster one (grid25, stacked_mnist)."""
  from unsupjax.models import gan
  if gan.D_LR_RATIO.get(dataset, 1.0) == 1.0:
    return list(PLAIN_FLAGS)
  return PLAIN_FLAGS + ["--d-lr", repr(cli_config(dataset).learning_rate)]


def config_flags(name: str, dataset: str, epochs: int | None) -> list[str]:
  """The CLI flags of a configuration name (parts joined by '-')."""
  parts = name.split("-")
  flags = plain_flags(dataset) if "plain" in parts else []
  epochs = epochs or cli_epochs(dataset)
  if "long" in parts:
    return flags + ["--epochs", str(4 * epochs), "--lr-schedule", "cosine"]
  if "short" in parts:
    return flags + ["--epochs", str(max(1, epochs // 4)), "--lr-schedule", "constant"]
  return flags + ["--epochs", str(epochs)]


def differences(run_config: dict, dataset: str, args: list[str]) -> list[str]:
  """The settings in which a saved run (its run.json "config") differs from
  what `unsupjax train gan --dataset DATASET ARGS` would run today (every
  field but the local ones: work directory, progress, output files)."""
  from unsupjax import config as config_lib
  from unsupjax.tasks import gan as gan_task
  want = config_lib.to_record(cli_config(dataset, args))
  return [f"{name}={a!r} (now {b!r})" for name, a, b, scope
          in config_lib.differences(run_config, want, gan_task.GANFlags) if scope != "local"]


def real_data_rows(datasets, data_dir: str | None) -> tuple[list[list], float | None]:
  """What real data scores under the same protocol (the reachable floor):
  2,500 true toy samples; 26,000 Stacked-MNIST images stacked from the test
  split; MNIST train[:10k] vs test FID. Returns (table rows, FID floor)."""
  import jax
  import numpy as np

  from unsupjax import data, toys
  from unsupjax.metrics import features, fid, modes
  from unsupjax.tasks import gan as gan_task  # the sample counts the runs use
  rows, floor = [], None
  for name in datasets:
    if name in toys.TOYS:
      toy = toys.TOYS[name]
      x = np.asarray(toy.sample(jax.random.PRNGKey(0), gan_task.MODE_SAMPLES))
      st = modes.mode_stats(x, toy.centers, toy.sigma).summary()
      rows.append([name, "real data", "", "", f"{st['modes_covered']} / {len(toy.centers)}",
                   f"{st['hq_fraction']:.3f}", f"{st['reverse_kl']:.4f}", "", "", "", ""])
    elif name == "stacked_mnist":
      test = data.load("mnist", "test", data_dir=data_dir, download=False)
      x = data.stack_channels(jax.random.PRNGKey(0), test, gan_task.STACKED_MODE_SAMPLES).x
      st = modes.stacked_mnist_stats(features.predict_digits(x))
      rows.append([name, "real data (test digits)", "", "",
                   f"{int(st.modes_covered)} / {modes.STACKED_MNIST_MODES}",
                   "", f"{float(st.reverse_kl):.4f}", "", "", "", ""])
    elif name == "mnist":
      kw = dict(data_dir=data_dir, download=False)
      train = data.load("mnist", "train", **kw).x[:10_000]
      test = data.load("mnist", "test", **kw).x
      floor = float(np.asarray(fid.fid(features.features(train), features.features(test))))
      rows.append([name, "real data (train[:10k] vs test)", "", "", "", "", "",
                   f"{floor:.4f} (floor)", "", "", ""])
  return rows, floor


def summarise(dataset: str, config: str, runs: list[dict], floor: float | None) -> list:
  def col(key, fmt=".3f"):
    vals = [r[key] for r in runs if key in r]
    return _bench.mean_std(vals, fmt) if vals else ""

  n_modes = {"ring8": 8, "grid25": 25, "stacked_mnist": 1000}.get(dataset)
  per_seed = ", ".join(str(r["modes_covered"]) for r in runs) if n_modes else ""
  mean_modes = (f"{statistics.mean(r['modes_covered'] for r in runs):.1f} / {n_modes}"
                if n_modes else "")
  fid_col = ""
  if "fid" in runs[0]:
    fid_col = col("fid", ".4f")
    if floor is not None and dataset == "mnist":
      fid_col += f" ({statistics.mean(r['fid'] for r in runs) / floor:.1f}x floor)"
  return [dataset, config, len(runs), per_seed, mean_modes,
          col("hq_fraction") if dataset in ("ring8", "grid25") else "",
          col("reverse_kl", ".4f") if n_modes else "", fid_col,
          col("wall_seconds", ".0f"), PUBLISHED.get((dataset, config), ""),
          GOALS[dataset] if config == "default" else ""]


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--datasets", nargs="+", default=["ring8", "grid25"], choices=DATASETS)
  p.add_argument("--configs", nargs="+", default=["default", "plain"], choices=tuple(CONFIGS))
  p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  p.add_argument("--epochs", type=int, default=None,
                 help="override the CLI's epochs (a quick look; such runs are kept apart)")
  p.add_argument("--data-dir", default=None, help="TFDS data directory (image datasets)")
  p.add_argument("--runs-dir", default=str(REPO / "runs" / "bench-gan-modes"))
  p.add_argument("--json", default=str(REPO / "benchmarks" / "results" / "gan_modes.json"))
  p.add_argument("--only-existing", action="store_true",
                 help="train nothing: tabulate the runs already in --runs-dir")
  a = p.parse_args()
  log = lambda s: print(f"[{time.strftime('%H:%M:%S')}] {s}", file=sys.stderr, flush=True)
  tag = "cli-epochs" if a.epochs is None else f"epochs{a.epochs}"
  runs_dir = pathlib.Path(a.runs_dir) / tag

  results: dict[str, list[dict]] = {}
  for dataset in a.datasets:
    for config in a.configs:
      if dataset == "mnist" and config != "default":
        continue  # MNIST is here for its FID; mode coverage is Stacked MNIST's job
      for seed in a.seeds:
        wd = runs_dir / f"{dataset}-{config}-s{seed}"
        summary_file = wd / "summary.json"
        flags = config_flags(config, dataset, a.epochs)
        args = ["train", "gan", "--dataset", dataset, "--seed", str(seed),
                "--workdir", str(wd), "--no-progress", "--no-download",
                "--checkpoint-every", "1", *flags]
        if a.data_dir and dataset in ("stacked_mnist", "mnist"):
          args += ["--data-dir", a.data_dir]
        saved = json.loads((wd / "run.json").read_text())["config"] if (
            wd / "run.json").exists() else None
        stale = saved is not None and differences(saved, dataset, args[4:])
        if stale:
          log(f"{wd}: trained with other settings than {flags} ({', '.join(stale)}); "
              + ("skipped" if a.only_existing else "re-running"))
        if stale or not summary_file.exists():
          if a.only_existing:
            continue
          if stale:
            args.append("--overwrite")
          elif saved is not None:
            # A killed run continues from its last epoch's checkpoint; one
            # killed before its first checkpoint starts over.
            ckpt = wd / "checkpoints"
            args.append("--resume" if ckpt.is_dir() and any(ckpt.iterdir()) else "--overwrite")
          _bench.run_cli(args, log, REPO)
        s = json.loads(summary_file.read_text())
        keep = ("modes_covered", "hq_fraction", "reverse_kl", "digit_kl", "fid", "kid",
                "precision", "recall", "mode_samples", "wall_seconds", "steps")
        results.setdefault(f"{dataset}/{config}", []).append(
            {"seed": seed, **{k: s[k] for k in keep if k in s}})

  real_rows, floor = real_data_rows(a.datasets, a.data_dir)
  rows = [summarise(*name.split("/"), rs, floor) for name, rs in results.items()]
  rows += real_rows
  table = _bench.markdown_table(
      ["dataset", "config", "seeds", "modes (per seed)", "mean modes", "HQ fraction",
       "reverse KL", "FID", "wall s", "published (PacGAN paper)", "goal"], rows)
  print(f"GAN mode coverage and sample quality ({tag}; seeds {a.seeds})")
  print(table)
  _bench.write_json(a.json, {"seeds": a.seeds, "epochs": a.epochs, "fid_floor": floor,
                             "machine": _bench.machine(), "results": results,
                             "table": table})


if __name__ == "__main__":
  main()
