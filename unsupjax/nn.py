"""Flax Linen building blocks shared by the models.

Offers `MLP` (a stack of Dense layers) and `DenseAutoencoder` (the classic
dense encoder/decoder whose decoder returns logits). Convolutional encoders,
decoders and GAN networks live here too as they are added.

Modules return logits, never probabilities: losses apply the link function
themselves in a numerically stable form (see `losses.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax

# Keras's default initialiser; the seed AE is compared against Keras, so the
# same initial distribution keeps the comparison about training, not init.
glorot_uniform = nn.initializers.glorot_uniform()


class MLP(nn.Module):
  """Dense layers `features[0] ... features[-1]`.

  The activation follows every layer except the last, unless
  `activate_final` is set.
  """
  features: Sequence[int]
  activation: Callable[[jax.Array], jax.Array] = nn.relu
  activate_final: bool = False
  kernel_init: Callable = glorot_uniform

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for i, width in enumerate(self.features):
      x = nn.Dense(width, kernel_init=self.kernel_init, name=f"dense_{i}")(x)
      if i < len(self.features) - 1 or self.activate_final:
        x = self.activation(x)
    return x


class DenseAutoencoder(nn.Module):
  """x: f32[b, *image_shape] -> (logits f32[b, *image_shape], code f32[b, latent]).

  Encoder: flatten -> hidden... -> latent (ReLU on every layer, the latent
  included, as in the classic Keras autoencoder). Decoder: the mirror image,
  ending in a linear layer whose outputs are per-pixel logits.
  """
  image_shape: Sequence[int]
  hidden: Sequence[int] = (128,)
  latent_dim: int = 32

  def setup(self):
    size = 1
    for s in self.image_shape:
      size *= int(s)
    self.encoder = MLP(tuple(self.hidden) + (self.latent_dim,),
                       activate_final=True)
    self.decoder = MLP(tuple(reversed(tuple(self.hidden))) + (size,))

  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    code = self.encode(x)
    return self.decode(code), code

  def encode(self, x: jax.Array) -> jax.Array:
    return self.encoder(x.reshape(x.shape[0], -1))

  def decode(self, code: jax.Array) -> jax.Array:
    """Logits f32[b, *image_shape]."""
    logits = self.decoder(code)
    return logits.reshape((code.shape[0],) + tuple(self.image_shape))
