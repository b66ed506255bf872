"""What a GAN is built from and how it is updated: `GANConfig`.

`config_for(dataset, data_shape)` gives the configuration that works
without tuning for each built-in dataset (the measurements behind each
default are in docs/results/gan.md).

Does not offer: the networks (`nets`), the losses (`losses`), the update
(`update`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from unsupjax.models.gan import nets as gan_nets

LOSSES = ("minimax", "ns", "hinge", "lsgan", "wgan")
ARCHS = ("mlp", "dcgan")
IMAGE_DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10", "stacked_mnist")


@dataclasses.dataclass(frozen=True)
class GANConfig:
  """What to build and how to update it.

  Attributes:
    data_shape: shape of one example, e.g. (2,) or (28, 28, 1).
    output: the generator's output link, which must match the data's range
      (checked by `check_data`): 'sigmoid' for data in [0, 1] (unsupjax's
      image datasets), 'tanh' for data in [-1, 1], 'linear' for unbounded
      vectors (the 2-D toys, standardised features).
    arch: 'mlp' (any shape; images are flattened) or 'dcgan' (square images).
    latent_dim: dimension of the standard-normal latent z.
    g_hidden, d_hidden: MLP widths.
    width: DCGAN base channel count.
    g_layer_norm: LayerNorm in the generator.
    loss: one of `LOSSES`.
    gp_weight: WGAN-GP weight lambda (0: off; 10 is the published value).
    r1_weight: R1 weight gamma (0: off); the penalty is gamma/2 ||grad||^2.
    n_critic: discriminator updates per generator update (>= 1). Each uses
      the step's real batch and fresh latents.
    pac: PacGAN packing degree m (>= 1): D sees m samples at once; the batch
      size must be a multiple of m.
    minibatch_std: append the minibatch standard deviation feature in D.
    spectral_norm: spectral normalisation of every D layer.
    ema_decay: decay of the generator EMA used by `sample` (0: no averaging).
      Step t uses min(ema_decay, (1 + t) / (10 + t)), so early averages are
      not dominated by the random initialisation.
    g_lr, d_lr: Adam learning rates (different values give TTUR).
    decay_steps: 0 for constant learning rates; otherwise both decay to 0
      along a cosine that ends after this many generator updates (the
      discriminator's after n_critic times as many of its own). Annealing
      at the end of a run is what makes the toys' samples land within 3
      sigma of a mode.
    hold_steps: with decay_steps > 0, the generator updates (< decay_steps)
      run at the full rates before the cosine starts; it then spans the
      remaining decay_steps - hold_steps (0: the cosine spans the whole
      run). Until the cosine starts, a run is the constant-rate run, update
      for update (tested bit for bit), so a long constant-rate run can be
      finished with an anneal from one of its checkpoints.
    b1, b2: Adam betas (b1 = 0.5 is the DCGAN choice).
  """
  data_shape: tuple[int, ...]
  output: str = "linear"
  arch: str = "mlp"
  latent_dim: int = 64
  g_hidden: tuple[int, ...] = (256, 256, 256)
  d_hidden: tuple[int, ...] = (256, 256, 256)
  width: int = 64
  g_layer_norm: bool = False
  loss: str = "ns"
  gp_weight: float = 0.0
  r1_weight: float = 0.0
  n_critic: int = 1
  pac: int = 1
  minibatch_std: bool = False
  spectral_norm: bool = False
  ema_decay: float = 0.999
  g_lr: float = 2e-4
  d_lr: float = 2e-4
  decay_steps: int = 0
  hold_steps: int = 0
  b1: float = 0.5
  b2: float = 0.999

  def __post_init__(self):
    object.__setattr__(self, "data_shape", tuple(int(s) for s in self.data_shape))
    object.__setattr__(self, "g_hidden", tuple(int(s) for s in self.g_hidden))
    object.__setattr__(self, "d_hidden", tuple(int(s) for s in self.d_hidden))
    if not self.data_shape or any(s < 1 for s in self.data_shape):
      raise ValueError(f"data_shape: expected positive sizes, got {self.data_shape}")
    if self.output not in gan_nets.GENERATOR_OUTPUTS:
      raise ValueError(f"output: expected one of {gan_nets.GENERATOR_OUTPUTS}, "
                       f"got {self.output!r}")
    if self.arch not in ARCHS:
      raise ValueError(f"arch: expected one of {ARCHS}, got {self.arch!r}")
    if self.arch == "dcgan":
      gan_nets.check_dcgan_shape(self.data_shape)
    if self.loss not in LOSSES:
      raise ValueError(f"loss: expected one of {LOSSES}, got {self.loss!r}")
    for name in ("latent_dim", "width", "n_critic", "pac"):
      v = getattr(self, name)
      if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{name}: expected an int >= 1, got {v!r}")
    for name in ("gp_weight", "r1_weight", "ema_decay", "g_lr", "d_lr", "b1", "b2"):
      v = getattr(self, name)
      if isinstance(v, bool) or not isinstance(v, (int, float, np.floating)):
        raise ValueError(f"{name}: expected a number, got {v!r}")
    for name in ("gp_weight", "r1_weight"):
      v = getattr(self, name)
      if not (math.isfinite(v) and v >= 0):
        raise ValueError(f"{name}: expected a finite number >= 0, got {v!r}")
    if not 0.0 <= self.ema_decay < 1.0:
      raise ValueError(f"ema_decay: expected a value in [0, 1), got {self.ema_decay!r}")
    for name in ("decay_steps", "hold_steps"):
      v = getattr(self, name)
      if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
        raise ValueError(f"{name}: expected an int >= 0, got {v!r}")
    if self.hold_steps and not self.hold_steps < self.decay_steps:
      raise ValueError(f"hold_steps: expected fewer steps than decay_steps "
                       f"({self.decay_steps}; 0 means no decay), got {self.hold_steps}")
    for name in ("g_lr", "d_lr"):
      v = getattr(self, name)
      if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name}: expected a positive learning rate, got {v!r}")
    for name in ("b1", "b2"):
      v = getattr(self, name)
      if not 0.0 <= v < 1.0:
        raise ValueError(f"{name}: expected a value in [0, 1), got {v!r}")


# D's learning rate over G's in a dataset's defaults (1 where not listed).
D_LR_RATIO = {"grid25": 2.0, "stacked_mnist": 2.0}


def config_for(dataset: str, data_shape: Sequence[int], **overrides: Any) -> GANConfig:
  """The default configuration for a built-in dataset, with `overrides`.

  ring8 / grid25: MLP G and D (3 x 256), latent 8, non-saturating loss,
  PacGAN packing (2 for the ring, 4 for the grid, as in the PacGAN paper),
  Adam lr 1e-3 with betas (0.5, 0.999), EMA 0.999, linear output; D
  regularised by spectral norm on the ring and by an R1 penalty (gamma 0.1)
  on the grid, where spectral norm left samples strung between modes and
  let long runs collapse; on the grid D also learns at twice G's rate
  (2e-3: fewer samples between modes, docs/results/gan.md). (The CLI adds a cosine
  decay over the run on both.)
  Images (digits, mnist, fashion_mnist, cifar10, stacked_mnist): DCGAN
  networks, sigmoid output (unsupjax's images are in [0, 1]), non-saturating
  loss, spectral norm in D, pac 2, Adam 2e-4 / (0.5, 0.999), EMA 0.999;
  on stacked_mnist D learns at twice G's rate (4e-4: lower mode KL and FID
  after 60 epochs, docs/results/gan.md).
  Anything else: the MLP with `GANConfig`'s defaults and a linear output.
  Where D learns faster than G (`D_LR_RATIO`), a `g_lr` override without a
  `d_lr` one keeps the ratio.
  """
  data_shape = tuple(int(s) for s in data_shape)
  if dataset == "ring8":
    base = dict(latent_dim=8, pac=2, spectral_norm=True, g_lr=1e-3, d_lr=1e-3)
  elif dataset == "grid25":
    base = dict(latent_dim=8, pac=4, r1_weight=0.1, g_lr=1e-3)
  elif dataset in ("digits", "mnist", "fashion_mnist", "cifar10", "stacked_mnist"):
    base = dict(arch="dcgan", output="sigmoid", latent_dim=64, pac=2,
                spectral_norm=True, g_layer_norm=True,
                width=32 if dataset == "digits" else 64)
  else:
    base = {}
  base.update(overrides)
  if dataset in D_LR_RATIO and "d_lr" not in overrides:
    base["d_lr"] = base.get("g_lr", GANConfig.g_lr) * D_LR_RATIO[dataset]
  return GANConfig(data_shape=data_shape, **base)
