"""GAN losses and penalties, per example, from D's outputs.

`d_loss_real(kind, logits)`, `d_loss_fake(kind, logits)`, `d_loss(kind,
real, fake)` and `g_loss(kind, fake)` for `kind` in `LOSSES`:
  - 'minimax': the original saturating objective of Goodfellow et al.
    (2014). D minimises -log D(x) - log(1 - D(G(z))); G minimises
    log(1 - D(G(z))), whose gradient vanishes when D confidently rejects the
    fakes, which is why it is not the default.
  - 'ns': non-saturating (the default). Same D loss; G minimises -log D(G(z)).
  - 'hinge': D minimises relu(1 - d_real) + relu(1 + d_fake); G minimises -d_fake.
  - 'lsgan': least squares with targets a=0, b=1, c=1 (Mao et al. 2017):
    D minimises ((d_real - 1)^2 + d_fake^2) / 2; G minimises (d_fake - 1)^2 / 2.
  - 'wgan': Wasserstein critic: D minimises d_fake - d_real, G minimises
    -d_fake. Use with a gradient penalty or spectral normalisation.
Sigmoid-based losses use `jax.nn.log_sigmoid` / softplus, never
probabilities. Penalties: `gradient_penalty` (WGAN-GP) and `r1_penalty`.

Does not offer: weighting (the update multiplies by the configured weights).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from unsupjax import parallel
from unsupjax.models.gan.config import LOSSES

# Where D's output counts as "says real": 0 for logit losses, hinge and
# Wasserstein; 0.5 (halfway between the targets) for LSGAN.
DECISION_THRESHOLD = {"minimax": 0.0, "ns": 0.0, "hinge": 0.0, "lsgan": 0.5, "wgan": 0.0}


def _check_kind(kind: str) -> None:
  if kind not in LOSSES:
    raise ValueError(f"loss: expected one of {LOSSES}, got {kind!r}")


def d_loss_real(kind: str, logits: jax.Array) -> jax.Array:
  """The discriminator's loss on real inputs: f32[b] -> f32[b]."""
  _check_kind(kind)
  if kind in ("minimax", "ns"):
    return -jax.nn.log_sigmoid(logits)
  if kind == "hinge":
    return jax.nn.relu(1.0 - logits)
  if kind == "lsgan":
    return 0.5 * jnp.square(logits - 1.0)
  return -logits  # wgan


def d_loss_fake(kind: str, logits: jax.Array) -> jax.Array:
  """The discriminator's loss on generated inputs: f32[b] -> f32[b]."""
  _check_kind(kind)
  if kind in ("minimax", "ns"):
    return -jax.nn.log_sigmoid(-logits)  # -log(1 - sigmoid(l))
  if kind == "hinge":
    return jax.nn.relu(1.0 + logits)
  if kind == "lsgan":
    return 0.5 * jnp.square(logits)
  return logits  # wgan


def d_loss(kind: str, real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
  """Discriminator loss per (real, fake) pair: f32[b], f32[b] -> f32[b]."""
  return d_loss_real(kind, real_logits) + d_loss_fake(kind, fake_logits)


def g_loss(kind: str, fake_logits: jax.Array) -> jax.Array:
  """Generator loss per generated input: f32[b] -> f32[b].

  'minimax' is the saturating log(1 - D(G(z))) (= -softplus(l)); its
  gradient with respect to the logit is -sigmoid(l), near 0 exactly when D
  rejects the fakes. 'ns' is -log D(G(z)) (= softplus(-l)).
  """
  _check_kind(kind)
  if kind == "minimax":
    return jax.nn.log_sigmoid(-fake_logits)
  if kind == "ns":
    return -jax.nn.log_sigmoid(fake_logits)
  if kind == "lsgan":
    return 0.5 * jnp.square(fake_logits - 1.0)
  return -fake_logits  # hinge, wgan


def _per_example_sq_norm(g: jax.Array) -> jax.Array:
  return jnp.sum(jnp.square(g.reshape(g.shape[0], -1)), axis=1)


def _input_grad(d_fn: Callable[[jax.Array], jax.Array], x: jax.Array) -> jax.Array:
  # d sum_i D(x_i) / d x_j = d D(x_j) / d x_j when D treats rows
  # independently. With minibatch std the cross terms are kept, as in
  # StyleGAN's R1.
  return jax.grad(lambda v: jnp.sum(d_fn(v)))(x)


def gradient_penalty(d_fn: Callable[[jax.Array], jax.Array], real: jax.Array,
                     fake: jax.Array, key: jax.Array,
                     axis_name: str | None = None) -> jax.Array:
  """WGAN-GP penalty per example (Gulrajani et al. 2017): f32[b].

  x_hat = eps * real + (1 - eps) * fake with eps ~ U[0, 1] drawn per example
  from `key`; the penalty is (||grad_x D(x_hat)||_2 - 1)^2. `d_fn` maps
  f32[b, ...] -> f32[b]. Multiply by the weight (10 in the paper) yourself.
  Inside pmap over `axis_name`, eps is this device's rows of the global
  batch's draw (`parallel.batch_draw`).
  """
  eps = parallel.batch_draw(jax.random.uniform, key,
                            (real.shape[0],) + (1,) * (real.ndim - 1),
                            real.dtype, axis_name=axis_name)
  x_hat = eps * real + (1.0 - eps) * fake
  norm = jnp.sqrt(_per_example_sq_norm(_input_grad(d_fn, x_hat)) + 1e-12)
  return jnp.square(norm - 1.0)


def r1_penalty(d_fn: Callable[[jax.Array], jax.Array], real: jax.Array) -> jax.Array:
  """R1 penalty per example (Mescheder et al. 2018): ||grad_x D(x)||^2 / 2.

  real: f32[b, ...] -> f32[b]. Multiply by gamma yourself.
  """
  return 0.5 * _per_example_sq_norm(_input_grad(d_fn, real))
