"""`unsupjax train vae`: the variational autoencoder, end to end.

Protocol for [0, 1] images with the Bernoulli decoder: training images are
binarised dynamically (a fresh draw every step), the test split once with
`named(run_key, "test-binarize")`; test values are in nats per example on
that binarised test set (test_mse and test_psnr: the mean reconstruction of
the grey test images against them). --iwae-k K estimates -log p(x) with K
importance samples on the first --iwae-examples test images, with
`named(run_key, "iwae")`.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import numpy as np

from unsupjax import plots, training
from unsupjax.config import UsageError, option
from unsupjax.metrics import reconstruction
from unsupjax.models import vae
from unsupjax.rng import named, run_key
from unsupjax.tasks import base

N_SHOWN = 12        # examples in reconstructions.png
N_SAMPLES = 8       # samples.png is N_SAMPLES x N_SAMPLES
INTERPOLATION_PAIRS = ((0, 1), (2, 3), (4, 5), (6, 7))
INTERPOLATION_STEPS = 10
_DEFAULT = vae.VAEConfig()


@dataclasses.dataclass(frozen=True)
class VAEFlags(base.TrainConfig):
  batch_size: int = option(128, "examples per step (over all devices)",
                           group="data and training")
  arch: str = option(_DEFAULT.arch, "encoder and decoder: an MLP or strided convolutions",
                     choices=("dense", "conv"), group="model")
  latent_dim: int = option(_DEFAULT.latent_dim, "size of the latent z", group="model")
  hidden: tuple[int, ...] = option(_DEFAULT.hidden, "encoder hidden widths (dense), or the "
                                   "width after the convs (mirrored by the decoder)",
                                   group="model")
  conv_features: tuple[int, ...] = option(_DEFAULT.conv_features, "channels of the stride-2 "
                                          "convolutions (--arch conv)", group="model")
  activation: str = option(_DEFAULT.activation, "hidden-layer nonlinearity of encoder and "
                           "decoder", choices=tuple(vae.ACTIVATIONS), group="model")
  ema_decay: float = option(_DEFAULT.ema_decay, "decay of the weight average that "
                            "evaluation and sampling use (0: the last iterate)", group="model")
  beta: float = option(_DEFAULT.beta, "weight of the KL term (1 = the ELBO)", group="model")
  likelihood: str = option(_DEFAULT.likelihood, "decoder distribution",
                           choices=vae.LIKELIHOODS, group="model")
  binarize: bool = option(True, "dynamic binarisation of the Bernoulli decoder's inputs "
                          "(--no-binarize: train on grey levels; always off with "
                          "--likelihood gaussian)", group="model")
  iwae_k: int = option(0, "importance samples for the IWAE NLL estimate (0: skip)",
                       scope="local", group="evaluation")
  iwae_examples: int = option(1000, "test images the IWAE estimate runs on",
                              scope="local", group="evaluation")

  def __post_init__(self):
    super().__post_init__()
    # The effective setting is recorded: a Gaussian decoder never binarises.
    if self.likelihood != "bernoulli":
      object.__setattr__(self, "binarize", False)
    if isinstance(self.iwae_k, bool) or not isinstance(self.iwae_k, int) or self.iwae_k < 0:
      raise ValueError(f"iwae_k: expected 0 (skip) or a positive integer, got {self.iwae_k!r}")
    if self.iwae_k:
      base._positive(self.iwae_examples, "iwae_examples")
    model_config(self)          # the model's checks, named by field


def model_config(cfg: VAEFlags) -> vae.VAEConfig:
  return base.derive(vae.VAEConfig, cfg)


def _as_input(cfg: VAEFlags, ds):
  return ds.flat() if cfg.arch == "dense" else ds.x


def load(cfg: VAEFlags) -> base.Data:
  """The splits; test_x is the test split binarised once (Bernoulli
  protocol) with named(run_key(seed), "test-binarize"), else as given."""
  tr, te = base.load_splits(cfg)
  if cfg.iwae_k and cfg.iwae_examples > te.num_examples:
    raise UsageError(f"--iwae-examples: expected at most {te.num_examples} (test "
                     f"examples in {cfg.dataset}), got {cfg.iwae_examples}")
  test_grey = _as_input(cfg, te)
  test_x = (np.asarray(vae.binarize(named(run_key(cfg.seed), "test-binarize"), test_grey))
            if cfg.binarize else test_grey)
  return base.Data(tr, te, _as_input(cfg, tr), test_x)


def init(cfg: VAEFlags, data: base.Data, key) -> vae.VAEState:
  """A fresh state whose Bernoulli output bias predicts the training mean image."""
  state = vae.init_state(key, model_config(cfg), data.train_x[:1])
  return vae.init_output_bias(state, data.train_x)


def metrics_on_test(cfg: VAEFlags, state, data: base.Data) -> dict:
  """The bound's terms on the (binarised) test split, the reconstruction
  error of the grey test images, and the protocol."""
  bound = training.evaluate(state, vae.eval_step, data.test_x)
  grey = reconstruction.dataset_means(
      lambda b: reconstruction.from_reconstruction(vae.reconstruct(state, b), b),
      _as_input(cfg, data.test))
  return {"test_neg_elbo": bound["neg_elbo"], "test_nll_term": bound["nll"],
          "test_kl": bound["kl"], "test_mse": grey["mse"], "test_psnr": grey["psnr"],
          "test_protocol": "dynamically binarised training, test set binarised once"
          if cfg.binarize else "inputs as given"}


def iwae_metrics(state, data: base.Data, key, k: int, examples: int) -> dict:
  """IWAE-k NLL on the first `examples` test inputs, from named(key, "iwae")."""
  x = data.test_x[:examples]
  return {"test_iwae_nll": vae.dataset_iwae_nll(state, x, named(key, "iwae"), k),
          "iwae_k": k, "iwae_examples": len(x)}


def _iwae_settings(cfg: VAEFlags, opts) -> tuple[int, int]:
  """(k, examples): `unsupjax evaluate --iwae-k K` if given, else the run's own."""
  if opts is not None and getattr(opts, "iwae_k", 0):
    return opts.iwae_k, opts.iwae_examples
  return cfg.iwae_k, cfg.iwae_examples


def evaluate(cfg: VAEFlags, state, data: base.Data, key, opts=None) -> dict:
  """The test metrics the training report gives (the same binarised test
  set and keys, re-derived by name from the run key), and the IWAE bound
  when the run or `opts.iwae_k` asks for it."""
  values = metrics_on_test(cfg, state, data)
  k, examples = _iwae_settings(cfg, opts)
  if k:
    values.update(iwae_metrics(state, data, key, k, examples))
  return values


def _save_latent_plot(path, state, test_x, labels, image_shape) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  z = np.asarray(vae.encode(state, test_x))
  n = 15
  grid = np.linspace(-2.5, 2.5, n)
  zz = np.stack(np.meshgrid(grid, -grid), -1).reshape(-1, 2).astype(np.float32)
  images = np.asarray(vae.decode_mean(state, zz)).reshape((n * n,) + tuple(image_shape))
  fig, (a, b) = plt.subplots(1, 2, figsize=(12, 5.6))
  sc = a.scatter(z[:, 0], z[:, 1], c=labels, cmap="tab10", s=3)
  a.set_title("test set, posterior means")
  a.set_xlabel("z[0]")
  a.set_ylabel("z[1]")
  if labels is not None:
    fig.colorbar(sc, ax=a, ticks=range(10))
  manifold = plots.to_uint8_grid([images[r * n:(r + 1) * n] for r in range(n)], pad=0)
  b.imshow(manifold.squeeze(-1) if manifold.shape[-1] == 1 else manifold,
           cmap="gray", extent=(-2.5, 2.5, -2.5, 2.5))
  b.set_title("decoded means over a grid of z")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def _save_pictures(run: base.Run) -> None:
  """reconstructions.png (grey, model input, reconstruction), samples.png
  (from named(key, "samples")), interpolation.png, and latent.png for a 2-d z."""
  cfg, state, data, workdir = run.cfg, run.state, run.data, run.workdir
  image_shape = tuple(data.test.image_shape)
  test_grey = _as_input(cfg, data.test)
  shown = data.test.x[:N_SHOWN]
  plots.save_image_grid(workdir / "reconstructions.png", [
      shown, np.asarray(data.test_x[:N_SHOWN]).reshape(shown.shape),
      np.asarray(vae.reconstruct(state, data.test_x[:N_SHOWN])).reshape(shown.shape)],
      labels=["original", "model input", "reconstruction"])
  n = N_SAMPLES * N_SAMPLES
  samples = np.asarray(vae.sample(state, named(run.key, "samples"), n)).reshape(
      (n,) + image_shape)
  plots.save_image_grid(workdir / "samples.png",
                        [samples[r * N_SAMPLES:(r + 1) * N_SAMPLES] for r in range(N_SAMPLES)],
                        target_width=480)
  rows = [np.asarray(vae.interpolate(state, test_grey[a], test_grey[b], INTERPOLATION_STEPS))
          .reshape((INTERPOLATION_STEPS,) + image_shape) for a, b in INTERPOLATION_PAIRS]
  plots.save_image_grid(workdir / "interpolation.png", rows)
  if cfg.latent_dim == 2:
    _save_latent_plot(workdir / "latent.png", state, test_grey, data.test.y, image_shape)


def report(run: base.Run) -> dict:
  """The pictures and the final test metrics (as `evaluate` gives them),
  with the IWAE bound's time."""
  cfg, state, data = run.cfg, run.state, run.data
  values = metrics_on_test(cfg, state, data)
  if cfg.iwae_k:
    t = time.perf_counter()
    values.update(iwae_metrics(state, data, run.key, cfg.iwae_k, cfg.iwae_examples))
    values["iwae_seconds"] = time.perf_counter() - t
  if jax.process_index() == 0:
    _save_pictures(run)
  return values


VAE = base.Task(
    name="vae",
    help="variational autoencoder (Gaussian encoder, Bernoulli or Gaussian decoder, "
         "ELBO with beta, IWAE log-likelihood)",
    config=VAEFlags, model=vae, model_config=model_config, load=load, init=init,
    report=report, evaluate=evaluate)
