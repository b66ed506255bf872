"""Evaluation metrics: pure functions on arrays, batched and jit-able.

  fid       Fréchet distance (FID) and kernel inception distance (KID)
  prdc      precision / recall / density / coverage from k-NN manifolds
  modes     mode collapse on the 2-D toys and Stacked MNIST
  features  the shipped MNIST feature network (checksum-verified)
  reconstruction  MSE / PSNR / BCE of autoencoders, per example and per dataset
  clustering      accuracy (Hungarian matching), NMI, ARI
  report    every image metric above in one dict (MNIST-like images)
"""

from unsupjax.metrics import (clustering, features, fid, modes, prdc, reconstruction,
                              report)

__all__ = ["clustering", "features", "fid", "modes", "prdc", "reconstruction", "report"]
