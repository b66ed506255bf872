"""unsupjax: unsupervised deep learning in JAX/Flax.

Layers, each importing only the ones above it in this list:

  rng, config, batched, distances, averaging, state, nn, losses, parallel
                  keys by name, configs, padded batching, one TrainState,
                  Flax blocks, per-example losses, devices
  data, tables, toys
                  datasets (TFDS, digits, tables from CSV/NPY, toy data)
  metrics, kmeans, plots, runlog, tensorboard (then curves)
                  pure functions on arrays: FID/KID/PRDC, modes, ACC/NMI,
                  k-means; figures; reading work directories
  models          autoencoder, vae, gan, codec, dec: each `init_state`,
                  `train_step`, `eval_step`, all pure
  training        the loop (`fit`), evaluation, verified checkpoints
  anomaly, deep_clustering
                  what trains models for a purpose: anomaly detectors,
                  DEC/IDEC/N2D pipelines
  tasks, cli      the `unsupjax` command: one config per command

`tests/test_layers.py` keeps it so.

The submodules users import most are available here by their short names
(`from unsupjax import autoencoder, kmeans, training`), imported on first
use so that `import unsupjax` stays cheap.
"""

from __future__ import annotations

import importlib

__version__ = "0.2.0"

# Short name -> module, imported on first attribute access.
_MODULES = {
    "anomaly": "unsupjax.anomaly",
    "autoencoder": "unsupjax.models.autoencoder",
    "averaging": "unsupjax.averaging",
    "batched": "unsupjax.batched",
    "codec": "unsupjax.models.codec",
    "config": "unsupjax.config",
    "curves": "unsupjax.curves",
    "data": "unsupjax.data",
    "dec": "unsupjax.models.dec",
    "distances": "unsupjax.distances",
    "deep_clustering": "unsupjax.deep_clustering",
    "gan": "unsupjax.models.gan",
    "kmeans": "unsupjax.kmeans",
    "losses": "unsupjax.losses",
    "metrics": "unsupjax.metrics",
    "models": "unsupjax.models",
    "nn": "unsupjax.nn",
    "parallel": "unsupjax.parallel",
    "plots": "unsupjax.plots",
    "rng": "unsupjax.rng",
    "runlog": "unsupjax.runlog",
    "state": "unsupjax.state",
    "tables": "unsupjax.tables",
    "tensorboard": "unsupjax.tensorboard",
    "toys": "unsupjax.toys",
    "training": "unsupjax.training",
    "vae": "unsupjax.models.vae",
}

__all__ = ["__version__", *sorted(_MODULES)]


def __getattr__(name: str):
  if name in _MODULES:
    module = importlib.import_module(_MODULES[name])
    globals()[name] = module
    return module
  raise AttributeError(f"module 'unsupjax' has no attribute {name!r}")


def __dir__():
  return sorted(set(globals()) | set(_MODULES))
