"""`unsupjax train gan`: a GAN on a 2-D toy, an image dataset or a .npy array.

Datasets: `ring8`, `grid25` (drawn from `named(run key, "dataset")`: 51,200
training and 2,560 evaluation points), `digits`, `mnist`, `fashion_mnist`,
`cifar10` (unsupjax's image loader, x in [0, 1], so the generator ends in a
sigmoid), `stacked_mnist` (Stacked MNIST, the 1,000-mode benchmark of
PacGAN / VEEGAN: 60,000 training and 10,000 evaluation images, each channel
a random MNIST digit of the train / test split, drawn from the run's key;
the summary counts modes over 26,000 samples), or a path to a `.npy` file
holding f32[n, ...] examples (linear output unless `--output` says
otherwise; the last 10%, at most 5,000, are held out for evaluation).

The GAN's settings left unset (None) take the dataset's defaults
(`models.gan.config_for`); batch size, learning rate, schedule and epochs
have per-dataset defaults too (`GANFlags`).

Leaves in --workdir, besides what every run leaves: `metrics.jsonl` (per
epoch: D/G losses, D accuracy on real/fake, gradient norms, evaluation
values; on the toys also modes_covered, hq_fraction, reverse_kl of 2,500 EMA
samples; on 28x28 images FID/KID/PRDC every --metrics-every epochs),
`samples.png` (a fixed latent grid from the EMA generator, or for vectors a
scatter of 2,500 EMA samples over the data), and with `--save-samples N`
`samples.npy`: N samples f32[N, ...] from the final EMA generator in data
space (for the toys, in the coordinates of `unsupjax.toys.*_CENTERS`).

--resume continues a run exactly; one with the cosine schedule only up to
the epochs it was planned for (the cosine spans them).

Randomness: every draw is a named key of the run key, so `unsupjax
evaluate` re-derives the summary's final samples ("view", "final-samples",
"final-kid", "stacked-modes") and finds the same numbers.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib

import jax
import numpy as np

from unsupjax import data as data_lib
from unsupjax import parallel, plots, toys, training
from unsupjax.config import UsageError, flag_error, option
from unsupjax.models import gan
from unsupjax.rng import named, run_key
from unsupjax.tasks import base

HELP = ("GAN: MLP on 2-D toys/vectors, DCGAN on images; non-saturating loss, "
        "PacGAN packing, spectral norm, R1 penalty, EMA generator (default: ring8)")
STACKED = "stacked_mnist"
IMAGE_DATASETS = gan.IMAGE_DATASETS
# The shape of one example of each named image dataset (checked before loading).
IMAGE_SHAPES = {"digits": (8, 8, 1), "mnist": (28, 28, 1), "fashion_mnist": (28, 28, 1),
                "cifar10": (32, 32, 3), STACKED: (28, 28, 3)}
LOSS_FLAGS = ("ns", "minimax", "hinge", "lsgan", "wgan", "wgan-gp")
SCHEDULES = ("constant", "cosine")
TOY_TRAIN, TOY_EVAL = 51_200, 2_560
STACKED_TRAIN, STACKED_EVAL = 60_000, 10_000
MODE_SAMPLES = 2_500          # the PacGAN / VEEGAN protocol on the toys
STACKED_MODE_SAMPLES = 26_000  # and on Stacked MNIST
GRID_SIDE = 8                 # samples.png for images: an 8 x 8 grid of fixed latents
SAMPLE_CHUNK = 1_000
METRIC_K = 5                  # the k of precision/recall/density/coverage
FINAL_METRIC_SAMPLES = 10_000
SAMPLES_PNG, SAMPLES_NPY = "samples.png", "samples.npy"
# Per-dataset defaults of the shared settings (the model's are config_for's).
BATCH_IMAGES, BATCH_OTHER = 64, 256
LR_IMAGES, LR_OTHER = 2e-4, 1e-3
COSINE_BY_DEFAULT = ("ring8", "grid25")


def _is_npy(dataset: str) -> bool:
  return dataset.endswith(".npy")


def _nonneg(value, name: str) -> None:
  if isinstance(value, bool) or not (isinstance(value, (int, float)) and math.isfinite(value)
                                     and value >= 0):
    raise ValueError(f"{name}: expected a number >= 0, got {value!r}")


def _int_at_least(value, low: int, name: str) -> None:
  if isinstance(value, bool) or not isinstance(value, int) or value < low:
    raise ValueError(f"{name}: expected an integer >= {low}, got {value!r}")


_MODEL = "GAN (left unset: the dataset's default, models.gan.config_for)"
_OUT = "outputs"


@dataclasses.dataclass(frozen=True)
class GANFlags(base.TrainConfig):
  dataset: str = option("ring8", "ring8 or grid25 (2-D toys), digits, mnist, fashion_mnist, "
                        "cifar10, stacked_mnist, or a .npy file of f32[n, ...] examples",
                        group="data and training")
  epochs: int | None = option(None, "total epochs", scope="grow",
                              default_help="ring8 200, grid25 600, digits 300, mnist and "
                              "fashion_mnist 20, cifar10 30, stacked_mnist 140, else 50",
                              group="data and training")
  batch_size: int | None = option(None, "examples per step (over all devices)",
                                  default_help=f"{BATCH_IMAGES} on images, else {BATCH_OTHER}",
                                  group="data and training")
  learning_rate: float | None = option(
      None, "Adam learning rate of G and D (D's is twice G's on grid25 and stacked_mnist)",
      flag="lr", default_help=f"{LR_IMAGES:g} on images, else {LR_OTHER:g}",
      group="data and training")
  loss: str = option("ns", "ns: non-saturating; minimax: the original saturating "
                     "objective; wgan-gp: Wasserstein + gradient penalty (--gp 10, "
                     "--n-critic 5)", choices=LOSS_FLAGS, group=_MODEL)
  gp_weight: float | None = option(None, "WGAN-GP weight", flag="gp",
                                   default_help="10 with --loss wgan-gp, else 0", group=_MODEL)
  r1_weight: float | None = option(None, "R1 penalty weight gamma", flag="r1",
                                   default_help="grid25: 0.1, else 0: off", group=_MODEL)
  spectral_norm: bool | None = option(None, "spectral normalisation in D",
                                      default_help="on for ring8 and images, else off",
                                      group=_MODEL)
  minibatch_std: bool | None = option(None, "minibatch standard-deviation feature in D",
                                      default_help="off", group=_MODEL)
  ema_decay: float | None = option(None, "EMA decay of the sampling generator", flag="ema",
                                   default_help="0.999", group=_MODEL)
  pac: int | None = option(None, "PacGAN packing degree m",
                           default_help="ring8 2, grid25 4, images 2, else 1", group=_MODEL)
  n_critic: int | None = option(None, "D updates per G update",
                                default_help="1; 5 with wgan/wgan-gp", group=_MODEL)
  latent_dim: int | None = option(None, "dimension of the latent z",
                                  default_help="8 on the toys, else 64", group=_MODEL)
  arch: str | None = option(None, "network architecture", choices=gan.ARCHS,
                            default_help="mlp for vectors, dcgan for images", group=_MODEL)
  output: str | None = option(None, "generator output link; must match the data's range",
                              choices=gan.nets.GENERATOR_OUTPUTS,
                              default_help="sigmoid on images, else linear", group=_MODEL)
  g_lr: float | None = option(None, "generator learning rate", default_help="--lr",
                              group=_MODEL)
  d_lr: float | None = option(None, "discriminator learning rate (TTUR)",
                              default_help="--lr; 2 x --lr on grid25 and stacked_mnist",
                              group=_MODEL)
  lr_schedule: str | None = option(None, "cosine: decay to 0 over the run", choices=SCHEDULES,
                                   default_help="cosine on ring8 and grid25, else constant",
                                   group=_MODEL)
  decay_epochs: int | None = option(None, "with --lr-schedule cosine: full rates until the "
                                    "last N epochs, the cosine over those", metavar="N",
                                    default_help="the cosine spans all epochs", group=_MODEL)
  # Network sizes: no flags (the datasets' defaults); a library caller may
  # set them, e.g. for small test networks.
  g_hidden: tuple[int, ...] | None = option(None, hidden=True)
  d_hidden: tuple[int, ...] | None = option(None, hidden=True)
  width: int | None = option(None, hidden=True)
  save_samples: int = option(0, "write N samples of the final EMA generator to samples.npy",
                             metavar="N", scope="local", group=_OUT)
  samples_every: int = option(10, "epochs between samples.png updates (and the last)",
                              metavar="EPOCHS", scope="local", group=_OUT)
  metrics_every: int = option(1, "28x28 images: epochs between FID/KID/PRDC (and Stacked-"
                              "MNIST mode) values in metrics.jsonl, on --metric-samples "
                              "samples (0: never; Stacked-MNIST modes are always counted "
                              f"over {STACKED_MODE_SAMPLES:,})", metavar="EPOCHS",
                              scope="local", group=_OUT)
  metric_samples: int = option(2000, "samples (and held-out images) the in-training metrics "
                               f"use; the final summary uses up to {FINAL_METRIC_SAMPLES:,}",
                               metavar="N", scope="local", group=_OUT)

  EPOCHS = {"ring8": 200, "grid25": 600, "digits": 300, "mnist": 20, "fashion_mnist": 20,
            "cifar10": 30, STACKED: 140}
  EPOCHS_OTHER = 50

  def __post_init__(self):
    # The shared settings' per-dataset defaults are filled here, so every
    # reader (the driver, run.json, --resume) sees the values the run uses.
    image = self.dataset in IMAGE_DATASETS
    fill = {"batch_size": BATCH_IMAGES if image else BATCH_OTHER,
            "learning_rate": LR_IMAGES if image else LR_OTHER,
            "lr_schedule": "cosine" if self.dataset in COSINE_BY_DEFAULT else "constant"}
    for name, value in fill.items():
      if getattr(self, name) is None:
        object.__setattr__(self, name, value)
    if self.workdir is None and _is_npy(self.dataset):
      object.__setattr__(self, "workdir",
                         os.path.join("runs", f"gan-{pathlib.Path(self.dataset).stem}"))
    if not (self.dataset in toys.TOYS or image or _is_npy(self.dataset)):
      raise ValueError(f"dataset: expected one of {', '.join((*toys.TOYS, *IMAGE_DATASETS))} "
                       f"or a .npy file, got {self.dataset!r}")
    super().__post_init__()
    for name in ("pac", "n_critic", "latent_dim", "width"):
      if getattr(self, name) is not None:
        _int_at_least(getattr(self, name), 1, name)
    for name in ("g_lr", "d_lr"):
      v = getattr(self, name)
      if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))
                            or not (math.isfinite(v) and v > 0)):
        raise ValueError(f"{name}: expected a positive number, got {v!r}")
    for name in ("gp_weight", "r1_weight"):
      if getattr(self, name) is not None:
        _nonneg(getattr(self, name), name)
    if self.ema_decay is not None and not (isinstance(self.ema_decay, (int, float))
                                           and 0.0 <= self.ema_decay < 1.0):
      raise ValueError(f"ema_decay: expected a decay in [0, 1), got {self.ema_decay!r}")
    if self.decay_epochs is not None:
      if self.lr_schedule != "cosine":
        raise ValueError(f"decay_epochs: only with the cosine learning-rate schedule, "
                         f"got {self.decay_epochs!r} with {self.lr_schedule!r}")
      epochs = self.epochs or self.default_epochs()
      if (isinstance(self.decay_epochs, bool) or not isinstance(self.decay_epochs, int)
          or not 1 <= self.decay_epochs <= epochs):
        raise ValueError(f"decay_epochs: expected N in [1, epochs = {epochs}], "
                         f"got {self.decay_epochs!r}")
    _int_at_least(self.save_samples, 0, "save_samples")
    _int_at_least(self.samples_every, 1, "samples_every")
    _int_at_least(self.metrics_every, 0, "metrics_every")
    _int_at_least(self.metric_samples, METRIC_K + 1, "metric_samples")


# ------------------------------------------------------------------ model ---


def expected_shape(cfg: GANFlags) -> tuple[int, ...]:
  """The shape of one example of cfg.dataset, known without loading it."""
  if cfg.dataset in toys.TOYS:
    return (2,)
  if cfg.dataset in IMAGE_SHAPES:
    return IMAGE_SHAPES[cfg.dataset]
  return tuple(_data_errors(data_lib.open_array, cfg.dataset).shape[1:])


def model_config(cfg: GANFlags, data_shape: tuple[int, ...] | None = None,
                 train_size: int | None = None) -> gan.GANConfig:
  """The GANConfig of cfg's settings over `config_for(dataset)`'s defaults,
  for examples of `data_shape` and `train_size` training examples (the
  cosine schedule counts its steps from them). Without them (the check
  before any data is read): the dataset's shape, one step per epoch."""
  data_shape = tuple(data_shape) if data_shape is not None else expected_shape(cfg)
  steps_per_epoch = max(1, (train_size or cfg.batch_size) // cfg.batch_size)
  epochs = cfg.epochs or cfg.default_epochs()
  name = "npy" if _is_npy(cfg.dataset) else cfg.dataset
  over: dict = {}
  loss = cfg.loss
  if loss == "wgan-gp":
    loss = "wgan"
    over["gp_weight"] = 10.0 if cfg.gp_weight is None else cfg.gp_weight
  elif cfg.gp_weight is not None:
    over["gp_weight"] = cfg.gp_weight
  over["loss"] = loss
  if loss == "wgan" and cfg.n_critic is None:
    over["n_critic"] = 5
  for field in ("r1_weight", "spectral_norm", "minibatch_std", "ema_decay", "pac", "n_critic",
                "latent_dim", "arch", "output", "g_hidden", "d_hidden", "width"):
    if getattr(cfg, field) is not None:
      over[field] = getattr(cfg, field)
  if cfg.lr_schedule == "cosine":
    over["decay_steps"] = epochs * steps_per_epoch
    if cfg.decay_epochs is not None:
      over["hold_steps"] = (epochs - cfg.decay_epochs) * steps_per_epoch
  # --lr scales the dataset's own G and D rates (D_LR_RATIO); --g-lr and
  # --d-lr set one of them outright.
  over["g_lr"] = cfg.g_lr if cfg.g_lr is not None else cfg.learning_rate
  over["d_lr"] = (cfg.d_lr if cfg.d_lr is not None
                  else cfg.learning_rate * gan.D_LR_RATIO.get(name, 1.0))
  if over.get("arch") == "dcgan" and name not in IMAGE_DATASETS and "output" not in over:
    over["output"] = "linear"
  try:
    config = gan.config_for(name, data_shape, **over)
  except ValueError as e:
    if str(e).startswith("data_shape:"):   # a DCGAN for examples it cannot make
      raise UsageError(f"--arch: {cfg.dataset} examples {data_shape}: {e}") from None
    raise flag_error(GANFlags, e) from None
  if cfg.batch_size % config.pac:
    raise UsageError(f"--pac: the batch size {cfg.batch_size} must be a multiple of "
                     f"pac={config.pac}")
  return config


def _data_errors(fn, *args, **kw):
  try:
    return fn(*args, **kw)
  except data_lib.DatasetError as e:
    msg = str(e)
    raise UsageError(msg if msg.startswith(("dataset:", "split:")) else
                     f"--dataset: {msg}") from None


def check_resume(cfg: GANFlags) -> None:
  """A cosine schedule decays over the run's epochs: resuming it for
  another number of epochs would change the rates of the epochs done, so it
  is refused (a constant-rate run may grow)."""
  if not (cfg.resume and cfg.lr_schedule == "cosine"):
    return
  record = base.read_record(pathlib.Path(cfg.workdir)) or {}
  planned = record.get("config", {}).get("epochs")
  if planned is not None and planned != cfg.epochs:
    raise UsageError(f"--epochs: the run in {cfg.workdir} decays its learning rates along "
                     f"a cosine over {planned} epochs; expected {planned}, got {cfg.epochs}")


def load(cfg: GANFlags) -> base.Data:
  """The training and evaluation examples of cfg.dataset, checked against
  the model's settings (shape, NaN, range vs --output)."""
  check_resume(cfg)   # here: the driver loads the data before it rewrites run.json
  key = named(run_key(cfg.seed), "dataset")
  name = cfg.dataset
  if name in toys.TOYS:
    sample = jax.jit(toys.TOYS[name].sample, static_argnums=1)
    tr = np.asarray(sample(named(key, "train"), TOY_TRAIN))
    te = np.asarray(sample(named(key, "test"), TOY_EVAL))
    data = base.Data(tr, te, tr, te)
  elif _is_npy(name):
    tr, te = _data_errors(data_lib.load_array, name)
    data = base.Data(tr, te, tr, te)
  elif name == STACKED:
    kw = dict(data_dir=cfg.data_dir, download=cfg.download, cache_dir=cfg.cache_dir)
    tr = _data_errors(data_lib.load_stacked, "mnist", "train", named(key, "train"),
                      STACKED_TRAIN, **kw)
    te = _data_errors(data_lib.load_stacked, "mnist", "test", named(key, "test"),
                      STACKED_EVAL, **kw)
    data = base.Data(tr, te, tr.x, te.x)
  else:
    tr, te = base.load_splits(cfg)
    data = base.Data(tr, te, tr.x, te.x)
  config = model_config(cfg, data.train_x.shape[1:], len(data.train_x))
  try:
    gan.check_data(config, data.train_x, "--dataset")
    gan.check_data(config, data.test_x, "--dataset (evaluation split)")
  except ValueError as e:
    raise UsageError(str(e)) from None
  if _scored(config) and len(data.test_x) <= METRIC_K:
    raise UsageError(f"--dataset: the held-out split has {len(data.test_x)} images; "
                     f"sample-quality metrics need more than {METRIC_K}")
  return data


def init(cfg: GANFlags, data: base.Data, key: jax.Array) -> gan.GANState:
  config = model_config(cfg, data.train_x.shape[1:], len(data.train_x))
  return gan.init_state(key, config, np.asarray(data.train_x[:1]))


# ---------------------------------------------------------------- samples ---


_sample = jax.jit(gan.sample, static_argnums=2)


def _is_image(config: gan.GANConfig) -> bool:
  return len(config.data_shape) == 3


def _scored(config: gan.GANConfig) -> bool:
  """28x28 images: the MNIST feature network can score them."""
  return config.data_shape in ((28, 28, 1), (28, 28, 3))


def sample_in_chunks(state: gan.GANState, key: jax.Array, n: int) -> np.ndarray:
  """n EMA samples, SAMPLE_CHUNK at a time (chunk i from fold_in(key, i))."""
  chunks = []
  for i, start in enumerate(range(0, n, SAMPLE_CHUNK)):
    size = min(SAMPLE_CHUNK, n - start)
    chunks.append(np.asarray(_sample(state, jax.random.fold_in(key, i), size)))
  return np.concatenate(chunks)


def view_samples(state: gan.GANState, key: jax.Array) -> np.ndarray:
  """What samples.png shows, from `named(key, "view")`: GRID_SIDE**2 images,
  or MODE_SAMPLES vectors (on the toys, the samples the modes are counted on)."""
  n = GRID_SIDE ** 2 if _is_image(state.config) else MODE_SAMPLES
  return np.asarray(_sample(state, named(key, "view"), n))


def _mode_stats(samples: np.ndarray, dataset: str) -> dict:
  """modes_covered / hq_fraction / reverse_kl (the PacGAN protocol)."""
  from unsupjax.metrics import modes
  toy = toys.TOYS[dataset]
  stats = jax.jit(modes.mode_stats, static_argnums=2)(samples, toy.centers, toy.sigma)
  return {**stats.summary(), "mode_samples": len(samples)}


def _stacked_modes(state: gan.GANState, key: jax.Array) -> dict:
  """Stacked-MNIST modes_covered / reverse_kl of STACKED_MODE_SAMPLES EMA
  samples from `named(key, "stacked-modes")`; digit_kl: the part of
  reverse_kl each channel's digit frequencies make; digit_counts: those
  frequencies, [channel][digit]."""
  from unsupjax.metrics import features, modes
  fakes = sample_in_chunks(state, named(key, "stacked-modes"), STACKED_MODE_SAMPLES)
  digits = features.predict_digits(fakes)   # in 0..9: argmaxes of 10 classes
  stats, kl, counts = jax.jit(lambda d: (modes.stacked_mnist_stats(d), modes.digit_kl(d),
                                         modes.digit_counts(d)))(digits)
  return {"modes_covered": int(stats.modes_covered),
          "reverse_kl": float(stats.reverse_kl),
          "digit_kl": [float(v) for v in kl],
          "digit_counts": np.asarray(counts).tolist(),
          "mode_samples": STACKED_MODE_SAMPLES}


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


def draw(cfg: GANFlags, data: base.Data, config: gan.GANConfig, samples: np.ndarray,
         epoch: int) -> None:
  """samples.png of `view_samples`: an image grid, or a scatter over the data."""
  path = pathlib.Path(cfg.workdir) / SAMPLES_PNG
  if _is_image(config):
    imgs = samples.reshape((GRID_SIDE, GRID_SIDE) + config.data_shape)
    if config.output == "tanh":
      imgs = (imgs + 1.0) / 2.0
    if config.output == "linear":
      imgs = np.clip(imgs, 0.0, 1.0)
    plots.save_image_grid(path, list(imgs))
    return
  flat = samples.reshape(samples.shape[0], -1)
  if flat.shape[1] >= 2:
    shown = np.asarray(data.train_x[:MODE_SAMPLES]).reshape(
        min(MODE_SAMPLES, len(data.train_x)), -1)
    centers = toys.TOYS[cfg.dataset].centers if cfg.dataset in toys.TOYS else None
    save_scatter(path, flat, shown, centers,
                 f"{cfg.dataset}: {len(flat)} EMA samples, epoch {epoch}")


# ------------------------------------------------------------------- fit ---


def fit_kwargs(cfg: GANFlags, data: base.Data, state: gan.GANState, key: jax.Array) -> dict:
  """The periodic actions: samples.png every --samples-every epochs (and
  the last); on the toys mode coverage every epoch; on 28x28 images
  FID/KID/PRDC (and Stacked-MNIST modes) every --metrics-every epochs."""
  config = state.config
  due = lambda epoch: epoch % cfg.samples_every == 0 or epoch == cfg.epochs  # noqa: E731
  actions = []
  if cfg.dataset in toys.TOYS:
    def toy_action(epoch, st):
      samples = view_samples(st, key)
      if due(epoch):
        draw(cfg, data, config, samples, epoch)
      return _mode_stats(samples, cfg.dataset)
    actions.append(training.Action(toy_action, every=1))
  else:
    actions.append(training.Action(
        lambda epoch, st: draw(cfg, data, config, view_samples(st, key), epoch),
        every=cfg.samples_every))
  if _scored(config) and cfg.metrics_every:
    from unsupjax.metrics import features
    from unsupjax.metrics import report as sample_report
    n_metric = min(cfg.metric_samples, len(data.test_x))
    real_features = features.features(data.test_x[:n_metric])

    def metrics_action(epoch, st):
      fakes = np.asarray(_sample(st, named(key, "metric-samples"), n_metric))
      out = sample_report.image_report(
          None, fakes, jax.random.fold_in(named(key, "metric-kid"), epoch),
          real_features=real_features)
      if cfg.dataset == STACKED:   # the protocol's count, not --metric-samples
        out.update(_stacked_modes(st, key))
      return out
    actions.append(training.Action(metrics_action, every=cfg.metrics_every))
  return {"actions": actions}


# -------------------------------------------------------- report, evaluate ---


def evaluate(cfg: GANFlags, state: gan.GANState, data: base.Data, key: jax.Array,
             opts=None) -> dict:
  """The final metrics of the EMA generator (G's own parameters with
  opts.raw_generator): the test split's D/G values; on the toys the mode
  coverage of `view_samples`; on 28x28 images `metrics.report.image_report`
  of opts.samples (default 10,000, at most the held-out split's size)
  samples from `named(key, "final-samples")` against the held-out split
  (KID's subsets from `named(key, "final-kid")`), and on Stacked MNIST the
  modes of 26,000 samples. With the defaults, the numbers of the run's
  summary."""
  scored = cfg.dataset not in toys.TOYS and _scored(state.config)
  n = min(getattr(opts, "samples", 0) or FINAL_METRIC_SAMPLES, len(data.test_x))
  if scored and n <= METRIC_K:
    raise UsageError(f"--samples: expected more than {METRIC_K}, got {n}")
  if getattr(opts, "raw_generator", False) and state.g.ema_params is not None:
    state = state.replace(g=state.g.replace(ema_params=state.g.params))
  out = base.evaluate_on_test(gan, state, data)
  if cfg.dataset in toys.TOYS:
    out.update(_mode_stats(view_samples(state, key), cfg.dataset))
  elif scored:
    from unsupjax.metrics import report as sample_report
    fakes = sample_in_chunks(state, named(key, "final-samples"), n)
    out.update(sample_report.image_report(data.test_x[:n], fakes, named(key, "final-kid")))
    if cfg.dataset == STACKED:
      out.update(_stacked_modes(state, key))
  return out


def _save_npy(path: pathlib.Path, x: np.ndarray) -> None:
  tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
  with open(tmp, "wb") as f:
    np.save(f, x)
  os.replace(tmp, path)


def report(run: base.Run) -> dict:
  """The final metrics (`evaluate`), samples.png of the final generator,
  samples.npy with --save-samples, and a line of what the GAN learned."""
  cfg, state, key = run.cfg, run.state, run.key
  values = evaluate(cfg, state, run.data, key)
  draw(cfg, run.data, state.config, view_samples(state, key), run.result.last_epoch)
  if cfg.save_samples:
    saved = sample_in_chunks(state, named(key, "saved-samples"), cfg.save_samples)
    parallel.lead_process_only(_save_npy)(run.workdir / SAMPLES_NPY, saved.astype(np.float32))
    values["saved_samples"] = cfg.save_samples
  line = (f"gan: {int(state.step)} G steps, D accuracy real {values['test_d_real_acc']:.3f} "
          f"/ fake {values['test_d_fake_acc']:.3f}")
  if "fid" in values:
    line += (f", FID {values['fid']:.3f}, precision {values['precision']:.3f}, "
             f"recall {values['recall']:.3f}")
  if cfg.dataset == STACKED:
    line += (f", modes {values['modes_covered']}/1000 of {values['mode_samples']} samples, "
             f"KL {values['reverse_kl']:.4f}")
  if cfg.dataset in toys.TOYS:
    line += (f", modes {values['modes_covered']}/{len(toys.TOYS[cfg.dataset].centers)}, "
             f"HQ {values['hq_fraction']:.3f}, reverse KL {values['reverse_kl']:.4f}")
  if jax.process_index() == 0:
    print(line)
  return values


GAN = base.Task(name="gan", help=HELP, config=GANFlags, model=gan, report=report,
                model_config=model_config, load=load, init=init, fit_kwargs=fit_kwargs,
                evaluate=evaluate)
