"""`unsupjax train ae | conv-ae | dae`: the deterministic autoencoders.

Three tasks over one model module (`models.autoencoder`); they differ only
in which settings are flags and in their defaults.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from unsupjax import plots, training
from unsupjax.config import option
from unsupjax.models import autoencoder
from unsupjax.rng import named
from unsupjax.tasks import base

N_SHOWN = 12  # examples in reconstructions.png


@dataclasses.dataclass(frozen=True)
class AEFlags(base.TrainConfig):
  arch: str = option("dense", hidden=True)
  hidden: tuple[int, ...] = option((128,), "hidden layer widths of the encoder (mirrored "
                                   "by the decoder)", group="model")
  conv_features: tuple[int, ...] = option((32, 64), hidden=True)
  latent_dim: int = option(32, "size of the code", group="model")
  loss: str = option("bce", "reconstruction loss: per-pixel binary cross-entropy or "
                     "squared error", choices=autoencoder.LOSSES, group="model")
  corruption: str | None = option(None, hidden=True)
  noise_level: float = option(0.0, hidden=True)


@dataclasses.dataclass(frozen=True)
class ConvAEFlags(AEFlags):
  arch: str = option("conv", hidden=True)
  hidden: tuple[int, ...] = option((128,), hidden=True)
  conv_features: tuple[int, ...] = option((32, 64), "channels of the stride-2 convolutions "
                                          "(each halves height and width)", group="model")


@dataclasses.dataclass(frozen=True)
class DAEFlags(AEFlags):
  corruption: str | None = option(
      "gaussian", "corruption of the input: " + "; ".join(
          f"{k}: level = {v[1]}" for k, v in autoencoder.CORRUPTIONS.items()),
      flag="noise", choices=tuple(autoencoder.CORRUPTIONS), group="model")
  noise_level: float = option(0.3, "strength of the corruption (see --noise)", group="model")


def report(run: base.Run) -> dict:
  """reconstructions.png and the final test metrics (clean and, for a
  denoising model, from corrupted inputs)."""
  state, data = run.state, run.data
  values = evaluate(run.cfg, state, data, run.key)
  shown = data.test.x[:N_SHOWN]
  x = data.test_x[:N_SHOWN]
  rows, labels = [shown], ["original"]
  if state.config.corruption is not None:
    x = autoencoder.corrupt(named(run.key, "eval-noise"), x, state.config.corruption,
                            state.config.noise_level)
    rows.append(np.asarray(x).reshape(shown.shape))
    labels.append("corrupted input")
  rows.append(np.asarray(autoencoder.reconstruct(state, x)).reshape(shown.shape))
  labels.append("reconstruction")
  plots.save_image_grid(run.workdir / "reconstructions.png", rows, labels=labels)
  return values


def evaluate(cfg, state, data: base.Data, key, opts=None) -> dict:
  """Test metrics; the corruption of a denoising model is drawn from
  `named(key, "eval-noise")`, as in training's report."""
  values = base.evaluate_on_test(autoencoder, state, data)
  if state.config.corruption is not None:
    noise_key = named(key, "eval-noise")
    denoised = training.evaluate(
        state, lambda s, b: autoencoder.denoising_eval_step(s, b, noise_key), data.test_x)
    values.update({f"test_denoised_{k}": v for k, v in denoised.items()})
  return values


def _task(name: str, help_: str, config: type, flat: bool) -> base.Task:
  return base.Task(name=name, help=help_, config=config, model=autoencoder,
                   load=base.default_load(flat=flat), report=report, evaluate=evaluate)


TASKS = (
    _task("ae", "dense autoencoder (784-128-32-128-784 on MNIST: ReLU, sigmoid output, "
          "binary cross-entropy, Adam)", AEFlags, flat=True),
    _task("conv-ae", "convolutional autoencoder (stride-2 conv encoder, transposed-conv "
          "decoder)", ConvAEFlags, flat=False),
    _task("dae", "denoising autoencoder (dense; the input is corrupted, the target is clean)",
          DAEFlags, flat=True),
)
AE, CONV_AE, DAE = TASKS
