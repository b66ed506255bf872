"""Variational autoencoder: ELBO training, sampling, IWAE log-likelihood.

Offers the contract every trainable thing follows (`init_state`,
`train_step`, `eval_step`) for a VAE with a diagonal-Gaussian encoder
q(z | x), a standard-normal prior, and either

  * a Bernoulli decoder for [0, 1] images, trained with dynamic binarisation
    (every time an example is drawn it is re-binarised with a fresh key, the
    standard MNIST protocol), or
  * a Gaussian decoder (a learned log-scale per feature) for real values.

The per-example negative ELBO is reconstruction NLL + beta * KL, the KL in
closed form. `iwae_nll` estimates -log p(x) with k importance samples
(vmapped, accumulated by `logsumexp` in chunks so k=1000 fits in memory).
All quantities are in nats per example.

Does not offer: hierarchical latents, learned priors, or a training loop.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from typing import Any

import chex
import flax.linen as fnn
import jax
import jax.numpy as jnp
import optax

from unsupjax import losses, nn, parallel
from unsupjax.metrics import reconstruction
from unsupjax.state import TrainState

LIKELIHOODS = ("bernoulli", "gaussian")
ACTIVATIONS = {"relu": fnn.relu, "elu": fnn.elu, "gelu": fnn.gelu,
               "softplus": fnn.softplus, "tanh": fnn.tanh}


@dataclasses.dataclass(frozen=True)
class VAEConfig:
  """VAE hyper-parameters. Defaults: the MLP 784-500-20 MNIST VAE (GELU hidden
  layers; see docs/results/autoencoders.md for the measured choice).

  binarize: dynamic binarisation of [0, 1] inputs (Bernoulli decoder only).
  ema_decay: decay of the EMA of the weights that evaluation, sampling and
    encoding use (`averaging.ema_decay_at` schedule); 0: the raw weights.
  """
  arch: str = "dense"
  hidden: Sequence[int] = (500,)
  conv_features: Sequence[int] = (32, 64)
  latent_dim: int = 20
  beta: float = 1.0
  likelihood: str = "bernoulli"
  binarize: bool = True
  learning_rate: float = 1e-3
  activation: str = "gelu"
  ema_decay: float = 0.999

  def __post_init__(self):
    object.__setattr__(self, "hidden", tuple(self.hidden))
    object.__setattr__(self, "conv_features", tuple(self.conv_features))
    if self.arch not in ("dense", "conv"):
      raise ValueError(f"arch: expected 'dense' or 'conv', got {self.arch!r}")
    if int(self.latent_dim) < 1:
      raise ValueError(f"latent_dim: expected a positive integer, got {self.latent_dim}")
    if not (self.beta >= 0 and math.isfinite(self.beta)):
      raise ValueError(f"beta: expected a finite value >= 0, got {self.beta}")
    if self.likelihood not in LIKELIHOODS:
      raise ValueError(f"likelihood: expected one of {LIKELIHOODS}, got {self.likelihood!r}")
    if self.binarize and self.likelihood != "bernoulli":
      raise ValueError("binarize: only meaningful with likelihood='bernoulli'")
    if any(int(h) < 1 for h in self.hidden) or not self.hidden:
      raise ValueError(f"hidden: expected positive layer widths, got {self.hidden}")
    if any(int(f) < 1 for f in self.conv_features) or not self.conv_features:
      raise ValueError(f"conv_features: expected positive channel counts, "
                       f"got {self.conv_features}")
    if not 0.0 <= self.ema_decay < 1.0:
      raise ValueError(f"ema_decay: expected a value in [0, 1), got {self.ema_decay!r}")
    if not self.learning_rate > 0:
      raise ValueError(f"learning_rate: expected > 0, got {self.learning_rate}")
    if self.activation not in ACTIVATIONS:
      raise ValueError(f"activation: expected one of {tuple(ACTIVATIONS)}, "
                       f"got {self.activation!r}")

  def check_input_shape(self, shape: Sequence[int]) -> None:
    if self.arch == "conv":
      nn.conv_grid(shape, len(self.conv_features))


class VAEModel(fnn.Module):
  """Encoder q(z|x), decoder p(x|z); `decode` returns logits (Bernoulli) or
  means (Gaussian), and `log_scale` is the Gaussian decoder's parameter."""
  image_shape: Sequence[int]
  latent_dim: int
  hidden: Sequence[int]
  conv_features: Sequence[int] | None
  likelihood: str
  activation: str = "relu"

  def setup(self):
    act = ACTIVATIONS[self.activation]
    self.encoder = nn.GaussianEncoder(self.latent_dim, tuple(self.hidden),
                                      self.conv_features, act)
    self.decoder = nn.Decoder(tuple(self.image_shape), tuple(reversed(self.hidden)),
                              tuple(reversed(self.conv_features))
                              if self.conv_features else None, act)
    if self.likelihood == "gaussian":
      self.log_scale = self.param("log_scale", fnn.initializers.zeros,
                                  tuple(self.image_shape))

  def __call__(self, x: jax.Array, key: jax.Array):
    mean, log_var = self.encode(x)
    z = reparameterize(key, mean, log_var)
    return self.decode(z), mean, log_var

  def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    return self.encoder(x)

  def decode(self, z: jax.Array) -> jax.Array:
    return self.decoder(z)

  def scale(self) -> jax.Array:
    return self.log_scale


class VAEState(TrainState):
  """A TrainState (EMA of the weights when config.ema_decay > 0) plus
  eval_key: the key of the single-sample test ELBO."""
  eval_key: jax.Array = None


def reparameterize(key: chex.PRNGKey, mean: jax.Array, log_var: jax.Array) -> jax.Array:
  """z = mean + exp(log_var / 2) * eps, eps ~ N(0, I) from `key`: f32[b, d]."""
  eps = jax.random.normal(key, mean.shape, mean.dtype)
  return mean + jnp.exp(0.5 * log_var) * eps


def make_model(config: VAEConfig, input_shape: Sequence[int]) -> VAEModel:
  shape = tuple(int(s) for s in input_shape)
  config.check_input_shape(shape)
  return VAEModel(image_shape=shape, latent_dim=int(config.latent_dim),
                  hidden=config.hidden,
                  conv_features=config.conv_features if config.arch == "conv" else None,
                  likelihood=config.likelihood, activation=config.activation)


def init_state(key: chex.PRNGKey, config: VAEConfig, example_batch: jax.Array) -> VAEState:
  model = make_model(config, example_batch.shape[1:])
  init_key, sample_key, eval_key = jax.random.split(key, 3)
  params = nn.init_variables(model, init_key, jnp.asarray(example_batch[:1]),
                              sample_key)["params"]
  tx = optax.adam(config.learning_rate)
  return VAEState.create(params=params, tx=tx, ema_decay=config.ema_decay,
                         eval_key=eval_key, config=config, model=model)


def init_output_bias(state: VAEState, train_x) -> VAEState:
  """Sets the Bernoulli decoder's output bias to the logits of the training
  data's mean image (a standard warm start: the decoder starts out predicting
  the mean image instead of 0.5 everywhere; see docs/results/autoencoders.md for what it is
  worth on MNIST). Dense decoders get one bias per pixel; conv decoders, whose last
  bias is per channel, the logit of the mean intensity. Also resets the
  optimizer state to match the new parameters.
  """
  import numpy as np

  if state.config.likelihood != "bernoulli":
    return state
  x = np.asarray(train_x, np.float64)
  p = np.clip(x.mean(0).reshape(-1), 1e-3, 1 - 1e-3)
  params = jax.tree.map(lambda a: a, state.params)
  if state.config.arch == "dense":
    last = params["decoder"]["mlp"][f"dense_{len(state.config.hidden)}"]
    last["bias"] = jnp.asarray(np.log(p) - np.log1p(-p), last["bias"].dtype)
  else:
    conv = params["decoder"]["conv"]
    last = conv[max((k for k in conv if k.startswith("deconv_")),
                    key=lambda k: int(k.split("_")[1]))]["conv"]
    m = float(p.mean())
    last["bias"] = jnp.full_like(last["bias"], np.log(m) - np.log1p(-m))
  return state.replace(
      params=params, opt_state=state.tx.init(params),
      ema_params=None if state.ema_params is None else jax.tree.map(jnp.copy, params))


def _recon_nll(state: VAEState, params, out: jax.Array, x: jax.Array) -> jax.Array:
  if state.config.likelihood == "bernoulli":
    return losses.bernoulli_nll_with_logits(out, x)
  log_scale = state.model.apply({"params": params}, method="scale")
  return losses.gaussian_nll(x, out, log_scale)


def elbo_terms(state: VAEState, params, x: jax.Array, key: chex.PRNGKey,
               axis_name: str | None = None) -> dict[str, jax.Array]:
  """Single-sample per-example terms, each f32[b]: nll = -log p(x|z),
  kl = KL(q(z|x) || p(z)), neg_elbo = nll + kl (beta = 1, the bound).
  Inside pmap over `axis_name`, z's noise is this device's rows of the
  global batch's (`parallel.batch_draw`)."""
  if axis_name is None:
    out, mean, log_var = state.model.apply({"params": params}, x, key)
  else:
    mean, log_var = state.model.apply({"params": params}, x, method="encode")
    eps = parallel.batch_draw(jax.random.normal, key, mean.shape, mean.dtype,
                              axis_name=axis_name)
    out = state.model.apply({"params": params},
                            mean + jnp.exp(0.5 * log_var) * eps, method="decode")
  nll = _recon_nll(state, params, out, x)
  kl = losses.gaussian_kl(mean, log_var)
  return {"nll": nll, "kl": kl, "neg_elbo": nll + kl}


def binarize(key: chex.PRNGKey, x: jax.Array,
             axis_name: str | None = None) -> jax.Array:
  """A Bernoulli draw per pixel with probability x: f32 of 0s and 1s
  (`jax.random.bernoulli(key, x)`: uniform(key) < x). Inside pmap over
  `axis_name`, x is this device's rows and gets their rows of the global
  batch's uniforms."""
  u = parallel.batch_draw(jax.random.uniform, key, x.shape, x.dtype,
                          axis_name=axis_name)
  return (u < x).astype(x.dtype)


def train_step(state: VAEState, batch: jax.Array, key: chex.PRNGKey, *,
               axis_name: str | None = None
               ) -> tuple[VAEState, dict[str, jax.Array]]:
  """One Adam step on mean(nll + beta * kl).

  Per-step keys: fold_in(key, state.step) split into the binarisation key
  and the reparameterisation key. axis_name: inside pmap, the device axis:
  gradients and metrics are averaged over it and the noise is the global
  batch's (`parallel`).
  """
  cfg = state.config
  k_bin, k_z = jax.random.split(jax.random.fold_in(key, state.step))
  x = binarize(k_bin, batch, axis_name) if cfg.binarize else batch

  def loss_fn(params):
    t = elbo_terms(state, params, x, k_z, axis_name)
    return jnp.mean(t["nll"] + cfg.beta * t["kl"]), t

  (loss, t), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  metrics = {"loss": loss, "nll": jnp.mean(t["nll"]), "kl": jnp.mean(t["kl"]),
             "neg_elbo": jnp.mean(t["neg_elbo"])}
  grads, metrics = parallel.pmean((grads, metrics), axis_name)
  return state.apply_gradients(grads), metrics


def eval_params(state: VAEState) -> Any:
  """The weights evaluation, sampling and encoding use: the EMA when
  `config.ema_decay > 0`, else the raw weights."""
  return state.eval_params


@jax.jit
def reconstruct(state: VAEState, x: jax.Array) -> jax.Array:
  """The decoder's mean at z = E[z | x]: f32[b, ...] (probabilities for Bernoulli)."""
  mean, _ = state.model.apply({"params": eval_params(state)}, x, method="encode")
  return decode_mean(state, mean)


def decode_mean(state: VAEState, z: jax.Array) -> jax.Array:
  out = state.model.apply({"params": eval_params(state)}, z, method="decode")
  return jax.nn.sigmoid(out) if state.config.likelihood == "bernoulli" else out


@jax.jit
def encode(state: VAEState, x: jax.Array) -> jax.Array:
  """The posterior means E[z | x]: f32[b, latent_dim]."""
  return state.model.apply({"params": eval_params(state)}, x, method="encode")[0]


@functools.partial(jax.jit, static_argnames="n")
def sample(state: VAEState, key: chex.PRNGKey, n: int) -> jax.Array:
  """n decoder means at z ~ N(0, I): f32[n, ...]."""
  z = jax.random.normal(key, (n, state.model.latent_dim))
  return decode_mean(state, z)


@functools.partial(jax.jit, static_argnames="steps")
def interpolate(state: VAEState, x_a: jax.Array, x_b: jax.Array,
                steps: int) -> jax.Array:
  """Decoder means along the straight line between E[z|x_a] and E[z|x_b].

  x_a, x_b: f32[...] single examples -> f32[steps, ...].
  """
  z = encode(state, jnp.stack([x_a, x_b]))
  t = jnp.linspace(0.0, 1.0, steps)[:, None]
  return decode_mean(state, (1.0 - t) * z[0] + t * z[1])


def eval_step(state: VAEState, batch: jax.Array) -> dict[str, jax.Array]:
  """Per-example test values, f32[b]: loss (= neg_elbo), neg_elbo, nll, kl
  (single sample with state.eval_key; inputs are used as given, so binarise
  the test set once beforehand for the Bernoulli protocol), and mse of the
  mean reconstruction against the input."""
  t = elbo_terms(state, eval_params(state), batch, state.eval_key)
  mse = reconstruction.from_reconstruction(reconstruct(state, batch), batch)["mse"]
  return {"loss": t["neg_elbo"], "neg_elbo": t["neg_elbo"], "nll": t["nll"],
          "kl": t["kl"], "mse": mse}


def iwae_log_weights(state: VAEState, x: jax.Array, key: chex.PRNGKey,
                     k: int) -> jax.Array:
  """log p(x, z_i) - log q(z_i | x) for k samples z_i ~ q: f32[k, b]."""
  params = eval_params(state)
  mean, log_var = state.model.apply({"params": params}, x, method="encode")

  def one(sample_key):
    z = reparameterize(sample_key, mean, log_var)
    out = state.model.apply({"params": params}, z, method="decode")
    log_px = -_recon_nll(state, params, out, x)
    log_pz = losses.diag_gaussian_log_prob(z, jnp.zeros_like(z), jnp.zeros_like(z))
    log_qz = losses.diag_gaussian_log_prob(z, mean, log_var)
    return log_px + log_pz - log_qz

  return jax.vmap(one)(jax.random.split(key, k))


def iwae_nll(state: VAEState, x: jax.Array, key: chex.PRNGKey, k: int,
             chunk: int = 100) -> jax.Array:
  """The IWAE estimate of -log p(x) with k samples, per example: f32[b].

  -(logsumexp_i log w_i - log k), an upper bound on the NLL that tightens as
  k grows (k=1 is a single-sample ELBO). Samples are drawn `chunk` at a time
  and combined by a running logsumexp, so memory is O(chunk * b).
  """
  if k < 1 or chunk < 1:
    raise ValueError(f"k, chunk: expected positive integers, got {k}, {chunk}")
  chunk = min(chunk, k)
  n_chunks, rest = divmod(k, chunk)
  keys = jax.random.split(key, n_chunks + 1)

  def body(acc, chunk_key):
    lw = iwae_log_weights(state, x, chunk_key, chunk)
    return jnp.logaddexp(acc, jax.nn.logsumexp(lw, axis=0)), None

  acc = jnp.full((x.shape[0],), -jnp.inf)
  acc, _ = jax.lax.scan(body, acc, keys[:n_chunks])
  if rest:
    acc = jnp.logaddexp(acc, jax.nn.logsumexp(
        iwae_log_weights(state, x, keys[-1], rest), axis=0))
  return -(acc - jnp.log(float(k)))


# One jitted function for every call: datasets evaluated with the same k,
# chunk and batch shape share its compiled program.
_iwae_nll_jit = jax.jit(iwae_nll, static_argnames=("k", "chunk"))


def dataset_iwae_nll(state: VAEState, x, key: chex.PRNGKey, k: int,
                     batch_size: int = 100, chunk: int = 100) -> float:
  """Mean IWAE-k NLL (nats) over all of x, one compiled call per batch.

  Batch i draws its samples from fold_in(key, i * batch_size).
  """
  import numpy as np

  values = [np.asarray(_iwae_nll_jit(state, x[i:i + batch_size], jax.random.fold_in(key, i),
                                     k=k, chunk=chunk))
            for i in range(0, len(x), batch_size)]
  return float(np.mean(np.concatenate(values)))
