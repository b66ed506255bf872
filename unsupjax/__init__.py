"""unsupjax: unsupervised deep learning in JAX/Flax.

Modules (one idea each):
  data         datasets as arrays, keyed epoch order
  nn           Flax Linen building blocks (they return logits)
  losses       per-example pure losses
  autoencoder  dense / conv / denoising autoencoders
  vae          variational autoencoder, IWAE
  gan, gan_nets, toys   keyed GAN update, its networks, 2-D toy data
  kmeans       vectorised k-means (functional fit, sklearn-style KMeans)
  codec, codec_io   learned compression: integer latents + learned prior;
               model bundle, range coding, container format
  deep_clustering  DEC / IDEC pieces and loop, N2D manifold clustering
  train        the training loop (fit, evaluate, checkpoints)
  parallel     pmap and sharded-jit training of any step; multi-host setup
  averaging    EMA of weights
  metrics      FID/KID, precision/recall/density/coverage, mode counting,
               the MNIST feature network, reconstruction and clustering scores
  plots        PNG grids
  anomaly, anomaly_detector   anomaly scores, calibrated thresholds, AUROC,
               vmapped one-class training; the PyOD-style detector, CSV tables
"""

from unsupjax import (anomaly, anomaly_detector, autoencoder, averaging, codec, codec_io, data,
                      deep_clustering, gan, gan_nets, kmeans, losses, metrics, nn, parallel,
                      plots, toys, train, vae)

__version__ = "0.1.0"

__all__ = ["__version__", "anomaly", "anomaly_detector", "autoencoder", "averaging", "codec",
           "codec_io", "data", "deep_clustering", "gan", "gan_nets", "kmeans", "losses", "metrics",
           "nn", "parallel", "plots", "toys", "train", "vae"]
