"""Which module implements each command; read by the CLI and `evaluate`.

Importing this module imports nothing else, so `unsupjax --help` lists the
commands without loading JAX; `load` imports one command's module.
"""

from __future__ import annotations

import importlib
from typing import Any

# Model name -> (module, attribute, one line for --help).
TRAIN_TASKS: dict[str, tuple[str, str, str]] = {
    "ae": ("unsupjax.tasks.ae", "AE", "dense autoencoder (784-128-32-128-784 on MNIST)"),
    "conv-ae": ("unsupjax.tasks.ae", "CONV_AE", "convolutional autoencoder"),
    "dae": ("unsupjax.tasks.ae", "DAE", "denoising autoencoder"),
    "vae": ("unsupjax.tasks.vae", "VAE", "variational autoencoder (ELBO, Bernoulli or "
            "Gaussian decoder)"),
    "gan": ("unsupjax.tasks.gan", "GAN", "GAN: DCGAN or MLP, six losses, EMA, FID/KID/PRDC"),
    "codec": ("unsupjax.tasks.codec", "CODEC", "learned image codec (rate-distortion "
              "autoencoder with a range coder)"),
    "audio-codec": ("unsupjax.tasks.audio_codec", "AUDIO_CODEC",
                    "learned speech codec (1-D conv, range-coded latents, STFT loss)"),
    "ae-kmeans": ("unsupjax.tasks.deep_clustering", "AE_KMEANS",
                  "k-means on a pretrained autoencoder's codes"),
    "dec": ("unsupjax.tasks.deep_clustering", "DEC", "Deep Embedded Clustering"),
    "idec": ("unsupjax.tasks.deep_clustering", "IDEC", "Improved DEC (keeps the decoder)"),
    "n2d": ("unsupjax.tasks.deep_clustering", "N2D", "UMAP + Gaussian mixture on the codes"),
}

# Command -> (module, attribute, one line for --help).
COMMANDS: dict[str, tuple[str, str, str]] = {
    "evaluate": ("unsupjax.tasks.evaluate", "COMMAND",
                 "evaluate a trained run from its work directory (writes eval.json)"),
    "runs": ("unsupjax.tasks.runs", "COMMAND", "a table of runs, and their curves"),
    "kmeans": ("unsupjax.tasks.kmeans", "COMMAND", "k-means on a dataset or a table"),
    "anomaly": ("unsupjax.tasks.anomaly", "COMMAND",
                "anomaly detection: score a table, or the one-class benchmark"),
    "compress": ("unsupjax.tasks.codec", "COMPRESS", "compress an image with a trained codec"),
    "decompress": ("unsupjax.tasks.codec", "DECOMPRESS", "decompress a .ujx file with the codec that wrote it"),
}


def load(entry: tuple[str, str, str]) -> Any:
  """The Task or Command an entry of TRAIN_TASKS or COMMANDS names."""
  module, attr, _ = entry
  return getattr(importlib.import_module(module), attr)
