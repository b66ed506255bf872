"""`unsupjax train gan`: a GAN on a 2-D toy, an image dataset or a .npy array.

Datasets: `ring8`, `grid25` (drawn from the run's key: 51,200 training and
2,560 evaluation points), `digits`, `mnist`, `fashion_mnist`, `cifar10`
(unsupjax's image loader, x in [0, 1], so the generator ends in a
sigmoid), `stacked_mnist` (Stacked MNIST, the 1,000-mode benchmark of
PacGAN / VEEGAN: 60,000 training and 10,000 evaluation images, each channel
a random MNIST digit of the train / test split, drawn from the run's key;
the summary counts modes over 26,000 samples), or a path to a `.npy` file
holding f32[n, ...] examples (linear output unless `--output` says
otherwise; the last 10%, at most 5,000, are held out for evaluation).

Leaves in --workdir: `metrics.jsonl` (per epoch: D/G losses, D accuracy on
real/fake, gradient norms, evaluation values; on the toys also
modes_covered, hq_fraction, reverse_kl of 2,500 EMA samples), `summary.json`,
`samples.png` (a fixed latent grid from the EMA generator, or for 2-D data a
scatter of 2,500 EMA samples over the data), `checkpoints/` (exact resume
with --resume), and with `--save-samples N` `samples.npy`: N samples f32[N,
...] from the final EMA generator in data space (for the toys, in the
coordinates of `unsupjax.toys.*_CENTERS`).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import time

import jax
import numpy as np

from unsupjax import gan, gan_nets, parallel, plots, toys, train
from unsupjax.metrics import report
from unsupjax.tasks import common

HELP = ("GAN: MLP on 2-D toys/vectors, DCGAN on images; non-saturating loss, "
        "PacGAN packing, spectral norm, R1 penalty, EMA generator (default: ring8)")
MODEL = "gan"
STACKED = "stacked_mnist"
IMAGE_DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10", STACKED)
STACKED_TRAIN, STACKED_EVAL = 60_000, 10_000
STACKED_MODE_SAMPLES = 26_000  # the PacGAN / VEEGAN protocol
LOSS_FLAGS = ("ns", "minimax", "hinge", "lsgan", "wgan", "wgan-gp")
TOY_TRAIN, TOY_EVAL = 51_200, 2_560
MODE_SAMPLES = 2_500  # the PacGAN / VEEGAN protocol
GRID_SIDE = 8  # samples.png for images: an 8 x 8 grid of fixed latents
SAMPLE_CHUNK = 1_000
METRIC_K = 5  # the k of precision/recall/density/coverage
FINAL_METRIC_SAMPLES = 10_000

DEFAULTS = common.TrainDefaults(
    batch_size=256, learning_rate=1e-3, checkpoint_every=10,
    epochs_by_dataset=(("ring8", 200), ("grid25", 600), ("digits", 300),
                       ("mnist", 20), ("fashion_mnist", 20), ("cifar10", 30),
                       (STACKED, 140)),
    epochs_other=50)
# Per-dataset settings beyond gan.config_for: batch size and schedule.
BATCH_BY_DATASET = {"digits": 64, "mnist": 64, "fashion_mnist": 64,
                    "cifar10": 64, STACKED: 64}
COSINE_BY_DEFAULT = ("ring8", "grid25")


def add_arguments(parser: argparse.ArgumentParser) -> None:
  common.add_training_arguments(parser, DEFAULTS, dataset="ring8")
  # Filled per dataset in resolve(): None means "the dataset's default".
  parser.set_defaults(lr=None, batch_size=None)
  m = parser.add_argument_group(
      "GAN", "Flags left unset take the dataset's default (gan.config_for).")
  m.add_argument("--loss", default="ns", choices=LOSS_FLAGS,
                 help="ns: non-saturating (default); minimax: the original "
                      "saturating objective; wgan-gp: Wasserstein + gradient "
                      "penalty (--gp 10, --n-critic 5)")
  m.add_argument("--gp", type=float, default=None,
                 help="WGAN-GP weight (default 10 with --loss wgan-gp, else 0)")
  m.add_argument("--r1", type=float, default=None,
                 help="R1 penalty weight gamma (grid25: 0.1, else 0: off)")
  m.add_argument("--spectral-norm", action=argparse.BooleanOptionalAction,
                 default=None, help="spectral normalisation in D")
  m.add_argument("--minibatch-std", action=argparse.BooleanOptionalAction,
                 default=None, help="minibatch standard-deviation feature in D")
  m.add_argument("--ema", type=float, default=None,
                 help="EMA decay of the sampling generator (0.999)")
  m.add_argument("--pac", type=int, default=None,
                 help="PacGAN packing degree m (ring8: 2, grid25: 4, images: 2)")
  m.add_argument("--n-critic", type=int, default=None,
                 help="D updates per G update (1; 5 with wgan/wgan-gp)")
  m.add_argument("--latent-dim", type=int, default=None)
  m.add_argument("--arch", choices=gan.ARCHS, default=None,
                 help="mlp (default for vectors) or dcgan (default for images)")
  m.add_argument("--output", choices=gan_nets.GENERATOR_OUTPUTS, default=None,
                 help="generator output link; must match the data's range")
  m.add_argument("--g-lr", type=float, default=None,
                 help="generator learning rate (default: --lr)")
  m.add_argument("--d-lr", type=float, default=None,
                 help="discriminator learning rate (default: --lr; 2 x --lr on "
                      "grid25); TTUR")
  m.add_argument("--lr-schedule", choices=("constant", "cosine"), default=None,
                 help="cosine: decay to 0 over the run (default on ring8 and grid25)")
  m.add_argument("--decay-epochs", type=int, default=None, metavar="N",
                 help="with --lr-schedule cosine: full rates until the last N "
                      "epochs, the cosine over those (default: over all epochs)")
  o = parser.add_argument_group("outputs")
  o.add_argument("--save-samples", type=int, default=0, metavar="N",
                 help="write N samples of the final EMA generator to samples.npy")
  o.add_argument("--samples-every", type=int, default=10, metavar="EPOCHS",
                 help="epochs between samples.png updates (and the last)")
  o.add_argument("--metrics-every", type=int, default=1, metavar="EPOCHS",
                 help="MNIST-like images: epochs between FID/KID/PRDC (and Stacked-MNIST "
                      "mode) lines in metrics.jsonl, on --metric-samples samples (0: never; "
                      "Stacked-MNIST modes are always counted over 26,000)")
  o.add_argument("--metric-samples", type=int, default=2000, metavar="N",
                 help="samples (and held-out images) the in-training metrics use; the "
                      "final summary uses up to 10,000")


def _is_npy(dataset: str) -> bool:
  return dataset.endswith(".npy")


def _check_nonneg(value, flag: str) -> None:
  if not (isinstance(value, (int, float)) and np.isfinite(value) and value >= 0):
    raise common.UsageError(f"{flag}: expected a number >= 0, got {value!r}")


def load_data(args: argparse.Namespace, key: jax.Array
              ) -> tuple[np.ndarray, np.ndarray]:
  """(train_x, eval_x) for --dataset, as host float32 arrays."""
  name = args.dataset
  if name in toys.TOYS:
    k_train, k_eval = jax.random.split(key)
    sample = toys.TOYS[name].sample
    return (np.asarray(sample(k_train, TOY_TRAIN)),
            np.asarray(sample(k_eval, TOY_EVAL)))
  if _is_npy(name):
    try:
      x = np.load(name, allow_pickle=False)
    except (OSError, ValueError) as e:
      raise common.UsageError(f"--dataset: cannot read {name!r} ({e})") from None
    if x.ndim < 2 or x.shape[0] < 2 or not np.issubdtype(x.dtype, np.number):
      raise common.UsageError(f"--dataset: expected a numeric array of shape "
                              f"(n, ...) with n >= 2 in {name}, got {x.dtype} {x.shape}")
    x = x.astype(np.float32)
    n_eval = max(1, min(5000, x.shape[0] // 10))
    return x[:-n_eval], x[-n_eval:]
  if name not in IMAGE_DATASETS:
    raise common.UsageError(
        f"--dataset: expected one of {', '.join(tuple(toys.TOYS) + IMAGE_DATASETS)} "
        f"or a .npy file, got {name!r}")
  if name == STACKED:
    from unsupjax import data as data_lib
    tr, te = common.load_splits(argparse.Namespace(**{**vars(args), "dataset": "mnist"}))
    k_train, k_eval = jax.random.split(key)
    return (data_lib.stack_channels(k_train, tr, STACKED_TRAIN).x,
            data_lib.stack_channels(k_eval, te, STACKED_EVAL).x)
  tr, te = common.load_splits(args)
  return tr.x, te.x


def _stacked_modes(state: gan.GANState, key: jax.Array) -> dict:
  """Stacked-MNIST modes_covered / reverse_kl of 26,000 EMA samples, and
  digit_kl: the part of reverse_kl each channel's digit frequencies make;
  digit_counts: those frequencies, [channel][digit]."""
  from unsupjax.metrics import features, modes
  fakes = _sample_in_chunks(state, key, STACKED_MODE_SAMPLES)
  digits = features.predict_digits(fakes)
  stats = modes.stacked_mnist_stats(digits)
  return {"modes_covered": int(stats.modes_covered),
          "reverse_kl": float(stats.reverse_kl),
          "digit_kl": [float(v) for v in modes.digit_kl(digits)],
          "digit_counts": np.asarray(modes.digit_counts(digits)).tolist(),
          "mode_samples": STACKED_MODE_SAMPLES}


def build_config(args: argparse.Namespace, data_shape: tuple[int, ...],
                 steps_per_epoch: int) -> gan.GANConfig:
  """The GANConfig of the flags over the dataset's defaults."""
  over: dict = {}
  loss = args.loss
  if loss == "wgan-gp":
    loss = "wgan"
    over["gp_weight"] = 10.0 if args.gp is None else args.gp
  elif args.gp is not None:
    over["gp_weight"] = args.gp
  over["loss"] = loss
  if loss == "wgan" and args.n_critic is None:
    over["n_critic"] = 5
  for flag, field in (("r1", "r1_weight"), ("spectral_norm", "spectral_norm"),
                      ("minibatch_std", "minibatch_std"), ("ema", "ema_decay"),
                      ("pac", "pac"), ("n_critic", "n_critic"),
                      ("latent_dim", "latent_dim"), ("arch", "arch"),
                      ("output", "output")):
    if getattr(args, flag) is not None:
      over[field] = getattr(args, flag)
  if args.lr_schedule == "cosine":
    over["decay_steps"] = args.epochs * steps_per_epoch
    if args.decay_epochs is not None:
      over["hold_steps"] = (args.epochs - args.decay_epochs) * steps_per_epoch
  name = "npy" if _is_npy(args.dataset) else args.dataset
  # --lr scales the dataset's own G and D rates (grid25's D learns at twice
  # G's rate); --g-lr / --d-lr set one of them outright.
  d_per_g = gan.D_LR_RATIO.get(name, 1.0)
  over["g_lr"] = args.g_lr if args.g_lr is not None else args.lr
  over["d_lr"] = args.d_lr if args.d_lr is not None else args.lr * d_per_g
  if name in IMAGE_DATASETS and len(data_shape) != 3:
    raise common.UsageError(f"--dataset: expected images, got shape {data_shape}")
  if over.get("arch") == "dcgan" and name not in IMAGE_DATASETS and "output" not in over:
    over["output"] = "linear"
  try:
    return gan.config_for(name, data_shape, **over)
  except ValueError as e:
    raise common.UsageError(_flag_message(str(e))) from None


_FIELD_FLAGS = {"n_critic": "--n-critic", "pac": "--pac", "latent_dim": "--latent-dim",
                "ema_decay": "--ema", "gp_weight": "--gp", "r1_weight": "--r1",
                "g_lr": "--g-lr", "d_lr": "--d-lr", "data_shape": "--arch",
                "output": "--output", "loss": "--loss"}


def _flag_message(msg: str) -> str:
  field, _, rest = msg.partition(":")
  return f"{_FIELD_FLAGS.get(field, field)}:{rest}" if rest else msg


def resolve(args: argparse.Namespace) -> None:
  """Fills the per-dataset defaults and checks the flags (no data read)."""
  if args.lr is None:
    args.lr = 2e-4 if args.dataset in IMAGE_DATASETS else DEFAULTS.learning_rate
  if args.batch_size is None:
    args.batch_size = BATCH_BY_DATASET.get(args.dataset, DEFAULTS.batch_size)
  if args.lr_schedule is None:
    args.lr_schedule = "cosine" if args.dataset in COSINE_BY_DEFAULT else "constant"
  common.resolve_common(args, MODEL, DEFAULTS)
  if args.decay_epochs is not None:
    if args.lr_schedule != "cosine":
      raise common.UsageError("--decay-epochs: only with --lr-schedule cosine")
    if not (isinstance(args.decay_epochs, int) and 1 <= args.decay_epochs <= args.epochs):
      raise common.UsageError(f"--decay-epochs: expected N in [1, --epochs = "
                              f"{args.epochs}], got {args.decay_epochs!r}")
  if _is_npy(args.dataset) and args.workdir == os.path.join("runs", f"{MODEL}-{args.dataset}"):
    args.workdir = os.path.join("runs", f"{MODEL}-{pathlib.Path(args.dataset).stem}")
  for flag in ("pac", "n_critic", "latent_dim"):
    if getattr(args, flag) is not None:
      common.check_positive(getattr(args, flag), "--" + flag.replace("_", "-"))
  for flag in ("g_lr", "d_lr"):
    if getattr(args, flag) is not None:
      common.check_positive(getattr(args, flag), "--" + flag.replace("_", "-"), float)
  common.check_positive(args.samples_every, "--samples-every")
  if not isinstance(args.metrics_every, int) or args.metrics_every < 0:
    raise common.UsageError(f"--metrics-every: expected EPOCHS >= 0, got {args.metrics_every!r}")
  if not isinstance(args.metric_samples, int) or args.metric_samples <= METRIC_K:
    raise common.UsageError(f"--metric-samples: expected an integer > {METRIC_K}, "
                            f"got {args.metric_samples!r}")
  if args.r1 is not None:
    _check_nonneg(args.r1, "--r1")
  if args.gp is not None:
    _check_nonneg(args.gp, "--gp")
  if args.ema is not None and not 0.0 <= args.ema < 1.0:
    raise common.UsageError(f"--ema: expected a decay in [0, 1), got {args.ema!r}")
  if not isinstance(args.save_samples, int) or args.save_samples < 0:
    raise common.UsageError(f"--save-samples: expected N >= 0, got {args.save_samples!r}")


def _mode_stats(samples: np.ndarray, dataset: str) -> dict:
  """modes_covered / hq_fraction / reverse_kl (the PacGAN protocol)."""
  from unsupjax.metrics import modes
  toy = toys.TOYS[dataset]
  return modes.mode_stats(samples, toy.centers, toy.sigma).summary()


@parallel.lead_process_only
def save_scatter(path: pathlib.Path, samples: np.ndarray, data: np.ndarray,
                 centers: np.ndarray | None, title: str) -> None:
  """A scatter of generated samples over the real data (first two dims)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(5, 5), dpi=120)
  ax.scatter(data[:, 0], data[:, 1], s=2, c="0.75", label="data", linewidths=0)
  ax.scatter(samples[:, 0], samples[:, 1], s=2, c="tab:blue", alpha=0.6,
             label="EMA generator", linewidths=0)
  if centers is not None:
    ax.scatter(centers[:, 0], centers[:, 1], s=30, marker="x", c="tab:red",
               label="mode centres")
  ax.set_aspect("equal")
  ax.set_title(title, fontsize=9)
  legend = ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.06), ncol=3,
                     fontsize=7, frameon=False)
  handles = getattr(legend, "legend_handles", None) or legend.legendHandles
  for h in handles[:2]:  # the 2-pixel dots, enlarged in the legend only
    h.set_sizes([15])
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def _sample_in_chunks(state: gan.GANState, key: jax.Array, n: int) -> np.ndarray:
  sample_fn = jax.jit(gan.sample, static_argnums=2)
  chunks = []
  for i, start in enumerate(range(0, n, SAMPLE_CHUNK)):
    size = min(SAMPLE_CHUNK, n - start)
    chunks.append(np.asarray(sample_fn(state, jax.random.fold_in(key, i), size)))
  return np.concatenate(chunks)


def evaluate(workdir, record: dict, args: argparse.Namespace) -> dict:
  """`unsupjax evaluate` for a GAN run: a checkpoint's EMA generator (the
  latest, or `--epoch`'s; the generator's own parameters with `--raw-generator`).

  2-D toys: modes_covered / hq_fraction / reverse_kl of the same 2,500
  samples the run's summary used. 28x28x1 / 28x28x3 images: `report.image_report`
  (FID, KID, precision/recall/density/coverage, Inception-style score or
  Stacked-MNIST modes) of `--samples` samples (default 10,000, at most the
  held-out split's size) against the held-out split; Stacked MNIST also
  counts modes over 26,000 samples, as the run's summary does.
  """
  from unsupjax import train

  cfg = record["config"]
  fields = {f.name for f in dataclasses.fields(gan.GANConfig)}
  config = gan.GANConfig(**{k: (tuple(v) if isinstance(v, list) else v)
                            for k, v in cfg.items() if k in fields})
  _, _, view_key, _ = jax.random.split(jax.random.PRNGKey(cfg["seed"]), 4)
  like = gan.init_state(jax.random.PRNGKey(0), config,
                        np.zeros((1,) + tuple(config.data_shape), np.float32))
  state = train.restore_state(workdir, like, args.epoch)
  if args.raw_generator:   # everything below samples the EMA parameters
    state = state.replace(ema_params=state.g_params)
  out: dict = {"step": int(state.step)}
  if cfg["dataset"] in toys.TOYS:
    samples = np.asarray(jax.jit(lambda st: gan.sample(st, view_key, MODE_SAMPLES))(state))
    out.update(_mode_stats(samples, cfg["dataset"]))
    out["mode_samples"] = MODE_SAMPLES
  elif report.supports(config.data_shape):
    _, eval_x = load_data(_data_args(cfg, args), jax.random.split(
        jax.random.PRNGKey(cfg["seed"]), 4)[0])
    n = min(args.samples or FINAL_METRIC_SAMPLES, len(eval_x))
    if n <= METRIC_K:
      raise common.UsageError(f"--samples: expected more than {METRIC_K}, got {n}")
    fakes = _sample_in_chunks(state, jax.random.fold_in(view_key, 1), n)
    out.update(report.image_report(eval_x[:n], fakes, jax.random.PRNGKey(0)))
    if cfg["dataset"] == STACKED:
      out.update(_stacked_modes(state, jax.random.fold_in(view_key, 3)))
  else:
    raise common.UsageError(f"workdir: no evaluation is defined for GANs on "
                            f"{cfg['dataset']!r} with examples of shape "
                            f"{tuple(config.data_shape)} (the 2-D toys and 28x28x1/3 "
                            f"MNIST-like images are)")
  return out


def _data_args(cfg: dict, args: argparse.Namespace) -> argparse.Namespace:
  """The flags `load_data` needs to reload a saved run's data."""
  from unsupjax import data as data_lib
  return argparse.Namespace(
      dataset=cfg["dataset"], data_dir=args.data_dir, no_download=args.no_download,
      cache_dir=args.cache_dir or str(data_lib.default_cache_dir()),
      batch_size=cfg["batch_size"])


def run(args: argparse.Namespace) -> dict:
  t_start = time.perf_counter()
  resolve(args)
  key = jax.random.PRNGKey(args.seed)
  data_key, fit_key, view_key, save_key = jax.random.split(key, 4)
  train_x, eval_x = load_data(args, data_key)
  if args.batch_size > train_x.shape[0]:
    raise common.UsageError(f"--batch-size: expected at most {train_x.shape[0]} "
                            f"(training examples), got {args.batch_size}")
  steps_per_epoch = train_x.shape[0] // args.batch_size
  config = build_config(args, tuple(train_x.shape[1:]), steps_per_epoch)
  if args.batch_size % config.pac:
    raise common.UsageError(f"--pac: the batch size {args.batch_size} must be a "
                            f"multiple of pac={config.pac}")
  try:
    gan.check_data(config, train_x, "--dataset")
    gan.check_data(config, eval_x, "--dataset (evaluation split)")
  except ValueError as e:
    raise common.UsageError(str(e)) from None
  run_config = {"dataset": args.dataset, "epochs": args.epochs,
                "batch_size": args.batch_size, "seed": args.seed,
                "lr_schedule": args.lr_schedule,
                **{k: (list(v) if isinstance(v, tuple) else v)
                   for k, v in dataclasses.asdict(config).items()}}
  workdir = common.prepare_workdir(args, MODEL, run_config)
  common.setup_compile_cache(args)

  is_toy = args.dataset in toys.TOYS
  is_image = len(config.data_shape) == 3
  centers = toys.TOYS[args.dataset].centers if is_toy else None
  view = jax.jit(lambda s: gan.sample(s, view_key, GRID_SIDE ** 2 if is_image
                                      else MODE_SAMPLES))
  shown_data = train_x[:MODE_SAMPLES].reshape(min(MODE_SAMPLES, len(train_x)), -1)

  def draw(epoch: int, samples: np.ndarray) -> None:
    path = workdir / "samples.png"
    if is_image:
      imgs = samples.reshape((GRID_SIDE, GRID_SIDE) + config.data_shape)
      if config.output == "tanh":
        imgs = (imgs + 1.0) / 2.0
      if config.output == "linear":
        imgs = np.clip(imgs, 0.0, 1.0)
      plots.save_image_grid(path, list(imgs))
    else:
      flat = samples.reshape(samples.shape[0], -1)
      if flat.shape[1] >= 2:
        save_scatter(path, flat, shown_data, centers,
                     f"{args.dataset}: {len(flat)} EMA samples, epoch {epoch}")

  scored = is_image and report.supports(config.data_shape)
  if scored:
    n_metric = min(args.metric_samples, len(eval_x))
    if n_metric <= METRIC_K:
      raise common.UsageError(f"--dataset: the held-out split has {len(eval_x)} images; "
                              f"sample-quality metrics need more than {METRIC_K}")
    from unsupjax.metrics import features
    real_features = features.features(eval_x[:n_metric])
    metric_view = jax.jit(lambda s: gan.sample(s, jax.random.fold_in(view_key, 2), n_metric))

  def epoch_callback(epoch: int, state) -> dict:
    extra = {}
    if scored and args.metrics_every and (epoch % args.metrics_every == 0
                                          or epoch == args.epochs):
      extra.update(report.image_report(None, np.asarray(metric_view(state)),
                                       jax.random.fold_in(view_key, epoch),
                                       real_features=real_features))
      if args.dataset == STACKED:  # the protocol's count, not --metric-samples
        extra.update(_stacked_modes(state, jax.random.fold_in(view_key, 3)))
    due = epoch % args.samples_every == 0 or epoch == args.epochs
    if is_toy or due:
      samples = np.asarray(view(state))
      if is_toy:
        extra.update(_mode_stats(samples, args.dataset))
      if due:
        draw(epoch, samples)
    return extra

  result = gan.fit(
      fit_key, config, common.process_rows(train_x), eval_x, epochs=args.epochs,
      batch_size=args.batch_size, workdir=workdir,
      checkpoint_every=args.checkpoint_every, resume=args.resume,
      progress=not args.no_progress, desc=f"{MODEL} {args.dataset}",
      epoch_callback=epoch_callback, **common.fit_parallel(args))
  state = result.state

  final = train.evaluate(state, gan.eval_step, eval_x)
  samples = np.asarray(view(state))
  draw(args.epochs, samples)
  summary = common.fit_summary(MODEL, args, run_config, result, t_start)
  summary.update({f"test_{k}": v for k, v in final.items()})
  if is_toy:
    summary.update(_mode_stats(samples, args.dataset))
    summary["mode_samples"] = MODE_SAMPLES
  if scored:
    n = min(FINAL_METRIC_SAMPLES, len(eval_x))
    fakes = _sample_in_chunks(state, jax.random.fold_in(view_key, 1), n)
    summary.update(report.image_report(eval_x[:n], fakes, jax.random.PRNGKey(0)))
    if args.dataset == STACKED:
      summary.update(_stacked_modes(state, jax.random.fold_in(view_key, 3)))
  if args.save_samples:
    saved = _sample_in_chunks(state, save_key, args.save_samples)
    np.save(workdir / "samples.npy", saved.astype(np.float32))
    summary["saved_samples"] = args.save_samples
  summary["wall_seconds"] = time.perf_counter() - t_start
  common.write_summary(workdir, summary)
  line = (f"{MODEL} on {args.dataset}: {int(state.step)} G steps, D accuracy "
          f"real {final['d_real_acc']:.3f} / fake {final['d_fake_acc']:.3f}")
  if scored:
    line += (f", FID {summary['fid']:.3f}, precision {summary['precision']:.3f}, "
             f"recall {summary['recall']:.3f}")
  if args.dataset == STACKED:
    line += (f", modes {summary['modes_covered']}/1000 of {STACKED_MODE_SAMPLES} "
             f"samples, KL {summary['reverse_kl']:.4f}")
  if is_toy:
    line += (f", modes {summary['modes_covered']}/{len(centers)}, HQ "
             f"{summary['hq_fraction']:.3f}, reverse KL {summary['reverse_kl']:.4f}")
  print(f"{line} ({summary['wall_seconds']:.1f} s; compile "
        f"{result.compile_seconds:.2f} s) -> {workdir}")
  return summary
