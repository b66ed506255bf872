"""Generative adversarial networks: the keyed, pure D/G update.

  config    GANConfig, config_for (the tested default of each dataset)
  losses    d_loss_real/d_loss_fake/d_loss/g_loss for 'minimax', 'ns',
            'hinge', 'lsgan', 'wgan'; gradient_penalty, r1_penalty
  nets      MLP and DCGAN generators and discriminators, packing,
            minibatch std, spectral norm
  update    GANState, init_state, d_step, g_step, train_step, eval_step,
            sample, check_data

Train with `unsupjax.training.fit(init_state(...), train_step, eval_step,
train_x, ...)`.

Does not offer: conditional GANs, progressive growing, data augmentation.
"""

from unsupjax.models.gan import nets
from unsupjax.models.gan.config import (ARCHS, D_LR_RATIO, IMAGE_DATASETS, LOSSES, GANConfig,
                                        config_for)
from unsupjax.models.gan.losses import (DECISION_THRESHOLD, d_loss, d_loss_fake, d_loss_real,
                                        g_loss, gradient_penalty, r1_penalty)
from unsupjax.models.gan.update import (EVAL_STREAM, GANState, check_data, d_step,
                                        eval_step, g_step, init_state, learning_rates,
                                        make_networks, make_optimizers, sample, train_step)

__all__ = ["ARCHS", "D_LR_RATIO", "DECISION_THRESHOLD", "EVAL_STREAM", "GANConfig", "GANState",
           "IMAGE_DATASETS", "LOSSES", "check_data", "config_for", "d_loss", "d_loss_fake",
           "d_loss_real", "d_step", "eval_step", "g_loss", "g_step", "gradient_penalty",
           "init_state", "learning_rates", "make_networks", "make_optimizers", "nets",
           "r1_penalty", "sample", "train_step"]
