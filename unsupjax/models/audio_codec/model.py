"""The learned speech codec's training side: a 1-D convolutional
autoencoder with integer latents priced by the image codec's learned prior.

Offers, through the contract every trainable thing in unsupjax follows,

    state = init_state(key, config, example_batch)     # example_batch f32[b, t]
    state, metrics = train_step(state, batch, key, axis_name=None)
    values = eval_step(state, batch)                   # per-example f32[b] arrays

a strided 1-D conv encoder, waveform f32[b, t] -> latents f32[b, t / hop,
latent_dim] (hop = prod(strides): 320 samples, 50 frames per second at
16 kHz by default), and its mirror, a transposed-conv decoder back to the
waveform. Each encoder stage is a strided convolution (kernel 2 x stride)
followed by two residual units of dilated convolutions (ELU), in the
spirit of SoundStream / EnCodec but small enough to train on a CPU in
minutes: by default one stage, whose strided convolution frames the signal
(kernel 640, stride 320), and its residual units, all at 50 Hz.
The first convolution starts as the MDCT of its hop and the decoder's last
layer as the inverse MDCT (overlap-added by half), and every residual unit
starts as the identity, so training starts from a transform codec (only
the latent bottleneck in the way) rather than from noise.

The latents are rounded to integers and priced by the learned factorised
prior of `unsupjax.models.codec` (`likelihood`: one logistic mixture per
channel, shared by all frames), which is also what builds the range
coder's tables (`codec.entropy`). Training relaxes the rounding with
additive noise, y + u, u ~ U(-1/2, 1/2) drawn from the step's key, for the
rate and for the decoder's input, and minimises

    loss = distortion + lambda * rate (kbit/s),
    distortion = multi-resolution STFT loss (spectral convergence + L1 of
                 log magnitudes, averaged over `stft_sizes`)
               + mel_weight * L1 of log-mel energies
               + wave_weight * waveform MSE
               [+ adv_weight * (hinge generator loss + feature matching)].

The optional adversarial term trains a multi-scale waveform discriminator
(MelGAN's, small) with `unsupjax.models.gan.losses`' hinge losses, in the
same step: its parameters live beside the codec's in one `TrainState`
(params {'net', 'prior', 'disc'}) and every part gets the gradient of its
own loss. The keyed GAN update (`gan.update.d_step` / `g_step`) is not
reused: it draws the generator's input from a noise prior inside the step,
while a codec's "fake" is the reconstruction of the real batch, and the
generator's loss here also carries the rate and the distortion.

Does not offer: causal (streaming) convolutions, residual vector
quantisation, several bitrates from one model, the integer tables and the
coder (`codec.entropy`), the bundle and the file format (`audio_codec.io`),
or a training loop (`unsupjax.training.fit`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import chex
import flax.linen as linen
import jax
import jax.numpy as jnp
import numpy as np
import optax

from unsupjax import audio, nn, parallel
from unsupjax.models.codec.model import LIKELIHOOD_FLOOR, init_prior, likelihood
from unsupjax.models.gan import losses as gan_losses
from unsupjax.state import TrainState

LOG_EPS = 1e-2           # floor of magnitudes and mel energies under a log
MAG_EPS = 1e-7           # added to |STFT|^2 before the square root (finite gradients)
ADV_LOSS = "hinge"       # the discriminator's loss (gan.losses)
# Speech in [-1, 1] is typically near -20 dBFS (RMS ~0.1): the encoder sees
# it x10, so its latents start large against the quantisation noise.
INPUT_GAIN = 10.0


@dataclasses.dataclass(frozen=True)
class AudioCodecConfig:
  """Hyper-parameters of the speech codec.

  lam: price of the rate in units of distortion per kbit/s. channels /
  strides: width and downsampling of each encoder stage (the decoder
  mirrors them); the latent frame rate is sample_rate / prod(strides).
  latent_dim: latent channels per frame; mixtures: logistics per channel
  in the prior. wave_weight: of the waveform MSE (waveforms in [-1, 1]; 100
  puts an MSE at the power of speech at -20 dBFS on a par with the spectral
  terms). stft_sizes: FFT sizes of the multi-resolution STFT loss
  (hop = size / 4); mel_bins: bands of the log-mel term (on the STFT of
  the largest size).
  """
  lam: float = 0.01
  channels: Sequence[int] = (320,)
  strides: Sequence[int] = (320,)
  latent_dim: int = 64
  mixtures: int = 3
  learning_rate: float = 1e-3
  sample_rate: int = audio.SAMPLE_RATE
  stft_sizes: Sequence[int] = (256, 512, 1024)
  mel_bins: int = 64
  mel_weight: float = 1.0
  wave_weight: float = 100.0
  adv_weight: float = 0.0

  def __post_init__(self):
    for name in ("channels", "strides", "stft_sizes"):
      object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
    if not (np.isfinite(self.lam) and self.lam > 0):
      raise ValueError(f"lam: expected a positive number, got {self.lam}")
    if not self.channels or any(c < 1 for c in self.channels):
      raise ValueError(f"channels: expected positive widths, got {self.channels}")
    if len(self.strides) != len(self.channels) or any(s < 1 for s in self.strides):
      raise ValueError(f"strides: expected {len(self.channels)} positive strides (one per "
                       f"entry of channels), got {self.strides}")
    for name in ("latent_dim", "mixtures", "mel_bins", "sample_rate"):
      if int(getattr(self, name)) < 1:
        raise ValueError(f"{name}: expected a positive integer, got {getattr(self, name)}")
    if not self.stft_sizes or any(n < 16 or n % 4 for n in self.stft_sizes):
      raise ValueError(f"stft_sizes: expected FFT sizes >= 16 divisible by 4, got "
                       f"{self.stft_sizes}")
    if not self.learning_rate > 0:
      raise ValueError(f"learning_rate: expected > 0, got {self.learning_rate}")
    for name in ("mel_weight", "wave_weight", "adv_weight"):
      v = getattr(self, name)
      if not (np.isfinite(v) and v >= 0):
        raise ValueError(f"{name}: expected a number >= 0, got {v}")

  @property
  def hop(self) -> int:
    """Samples per latent frame."""
    return int(np.prod(self.strides))

  @property
  def frame_rate(self) -> float:
    return self.sample_rate / self.hop

  def check_length(self, t: int, what: str = "example_batch") -> None:
    if t < self.hop or t % self.hop:
      raise ValueError(f"{what}: expected examples of a multiple of {self.hop} samples (the "
                       f"hop, prod(strides)), got {t}")


CONFIG = AudioCodecConfig


# --------------------------------------------------------------------------
# Networks.


class ResUnit(linen.Module):
  """x + conv1(elu(conv3_dilated(elu(x)))): f32[b, t, c] -> f32[b, t, c];
  the identity at initialisation."""
  features: int
  dilation: int

  @linen.compact
  def __call__(self, x):
    h = linen.Conv(self.features, (3,), kernel_dilation=(self.dilation,), padding="SAME")(
        jax.nn.elu(x))
    # The last layer starts at zero: a fresh unit is the identity.
    return x + linen.Conv(self.features, (1,), kernel_init=linen.initializers.zeros)(
        jax.nn.elu(h))


class Up(linen.Module):
  """A transposed 1-D convolution of kernel 2s and stride s, f32[b, T, c] ->
  f32[b, T s, features], aligned as the transpose of `linen.Conv`'s (kernel
  2s, stride s, 'SAME'): each frame's 2s outputs are overlap-added with its
  neighbours' by half. Written as a dense layer and a reshape, which
  XLA:CPU differentiates several times faster than `ConvTranspose`."""
  features: int
  stride: int
  kernel_init: Callable = linen.initializers.lecun_normal()

  @linen.compact
  def __call__(self, h):
    b, t, _ = h.shape
    s, f = self.stride, self.features
    a = linen.Dense(2 * s * f, kernel_init=self.kernel_init)(h).reshape(b, t, 2, s, f)
    out = (jnp.pad(a[:, :, 0], ((0, 0), (0, 1), (0, 0), (0, 0)))
           + jnp.pad(a[:, :, 1], ((0, 0), (1, 0), (0, 0), (0, 0))))
    return out.reshape(b, (t + 1) * s, f)[:, s // 2:s // 2 + t * s]


def mdct_basis(n: int) -> np.ndarray:
  """The windowed MDCT of hop n: f64[2n, n], column k = the sine window times
  sqrt(2 / n) cos(pi / n (t + 1/2 + n/2)(k + 1/2)). Analysis by the matrix
  and synthesis by its transpose, overlap-added by half, reconstruct any
  signal exactly (time-domain aliasing cancellation)."""
  t = np.arange(2 * n)[:, None] + 0.5
  window = np.sin(np.pi * t / (2 * n))
  return window * np.sqrt(2.0 / n) * np.cos(np.pi / n * (t + n / 2) * (np.arange(n) + 0.5))


def _frontend_init(stride: int, scale: float, transpose: bool) -> Callable:
  """An initialiser whose first `stride` filters are the MDCT's (times
  `scale`), the rest lecun-normal (analysis) or zero (synthesis)."""
  def init(key, shape, dtype=jnp.float32):
    basis = mdct_basis(stride) * scale                    # [2s, s]
    if transpose:                                         # Dense kernel [c, 2s]
      k = np.zeros(shape, np.float64)
      m = min(shape[0], stride)
      k[:m] = basis.T[:m]
      return jnp.asarray(k, dtype)
    k = linen.initializers.lecun_normal()(key, shape, dtype)
    m = min(shape[2], stride)                             # Conv kernel [2s, 1, c]
    return k.at[:, 0, :m].set(jnp.asarray(basis[:, :m], dtype))
  return init


class AudioCodecNet(linen.Module):
  """encode: f32[b, t] -> f32[b, t / hop, latent_dim]; decode: the inverse
  shape map, to the waveform f32[b, t] (linear output).

  The first layer (kernel 2 strides[0], stride strides[0]) starts as the
  MDCT of that hop, the last as its inverse, and every residual unit as the
  identity, so a fresh decoder inverts a fresh encoder but for the latent
  bottleneck: training starts from a transform codec, not from noise.
  """
  channels: Sequence[int]
  strides: Sequence[int]
  latent_dim: int

  def setup(self):
    ch, st = tuple(self.channels), tuple(self.strides)
    self.enc_down = [linen.Conv(c, (2 * s,), strides=(s,), padding="SAME",
                                kernel_init=_frontend_init(s, 1.0, False) if i == 0 else
                                linen.initializers.lecun_normal())
                     for i, (c, s) in enumerate(zip(ch, st))]
    self.enc_res = [ResUnit(c, d) for c in ch for d in (1, 3)]
    self.enc_out = linen.Conv(self.latent_dim, (3,), padding="SAME")
    self.dec_in = linen.Conv(ch[-1], (3,), padding="SAME")
    self.dec_res = [ResUnit(c, d) for c in reversed(ch) for d in (1, 3)]
    last = len(ch) - 1
    self.dec_up = [Up(c, s, _frontend_init(s, 1.0 / INPUT_GAIN, True) if i == last else
                      linen.initializers.lecun_normal())
                   for i, (c, s) in enumerate(zip(reversed((1,) + ch[:-1]), reversed(st)))]

  def __call__(self, x):
    y = self.encode(x)
    return self.decode(y), y

  def encode(self, x: jax.Array) -> jax.Array:
    h = x[..., None] * INPUT_GAIN
    for i in range(len(self.channels)):
      h = self.enc_down[i](jax.nn.elu(h) if i else h)
      h = self.enc_res[2 * i + 1](self.enc_res[2 * i](h))
    return self.enc_out(jax.nn.elu(h))

  def decode(self, y: jax.Array) -> jax.Array:
    h = self.dec_in(y)
    last = len(self.channels) - 1
    for i in range(len(self.channels)):
      h = self.dec_res[2 * i + 1](self.dec_res[2 * i](h))
      h = self.dec_up[i](h if i == last else jax.nn.elu(h))   # linear synthesis
    return h[..., 0]


class WaveDiscriminator(linen.Module):
  """MelGAN's multi-scale waveform discriminator, small: `scales` strided
  1-D conv stacks on the waveform average-pooled by 1, 2, 4, ... Returns
  (per-scale logits f32[b, t_s], per-scale lists of feature maps)."""
  width: int = 16
  scales: int = 3

  @linen.compact
  def __call__(self, x):
    logits, feats = [], []
    h0 = x[..., None]
    for s in range(self.scales):
      if s:
        h0 = linen.avg_pool(h0, (4,), strides=(2,), padding="SAME")
      h, f = h0, []
      for i, (w, k, st) in enumerate(((self.width, 15, 1), (self.width * 2, 41, 4),
                                      (self.width * 4, 41, 4), (self.width * 4, 5, 1))):
        h = jax.nn.leaky_relu(linen.Conv(w, (k,), strides=(st,), padding="SAME",
                                         feature_group_count=1 if i == 0 else 4,
                                         name=f"s{s}_conv{i}")(h), 0.2)
        f.append(h)
      logits.append(linen.Conv(1, (3,), padding="SAME", name=f"s{s}_out")(h)[..., 0])
      feats.append(f)
    return logits, feats


def init_state(key: chex.PRNGKey, config: AudioCodecConfig,
               example_batch: jax.Array) -> TrainState:
  """A fresh state. example_batch: f32[b, t], t a multiple of config.hop.
  params: {'net', 'prior'} (+ 'disc' when config.adv_weight > 0)."""
  if not isinstance(config, AudioCodecConfig):
    raise ValueError(f"config: expected an AudioCodecConfig, got {type(config).__name__}")
  x = jnp.asarray(example_batch[:1], jnp.float32)
  if x.ndim != 2:
    raise ValueError(f"example_batch: expected waveforms f32[b, t], got shape {x.shape}")
  config.check_length(int(x.shape[1]))
  model = AudioCodecNet(config.channels, config.strides, int(config.latent_dim))
  k_net, k_disc = jax.random.split(key)
  params = {"net": nn.init_variables(model, k_net, x)["params"],
            "prior": init_prior(int(config.latent_dim), int(config.mixtures))}
  if config.adv_weight > 0:
    params["disc"] = nn.init_variables(WaveDiscriminator(), k_disc, x)["params"]
  tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(config.learning_rate))
  return TrainState.create(params=params, tx=tx, config=config, model=model)


# --------------------------------------------------------------------------
# Losses (per example).


def stft_magnitude(x: jax.Array, n_fft: int, hop: int | None = None) -> jax.Array:
  """|STFT| f32[b, frames, n_fft // 2 + 1] of x: f32[b, t]: periodic Hann
  window, hop n_fft / 4, x reflect-padded by n_fft / 2 on both sides
  (frames = 1 + t // hop); sqrt(|.|^2 + MAG_EPS)."""
  hop = n_fft // 4 if hop is None else hop
  x = jnp.pad(x, ((0, 0), (n_fft // 2, n_fft // 2)), mode="reflect")
  frames = 1 + (x.shape[1] - n_fft) // hop
  idx = np.arange(n_fft)[None] + hop * np.arange(frames)[:, None]
  win = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
  spec = jnp.fft.rfft(x[:, idx] * jnp.asarray(win, x.dtype), axis=-1)
  return jnp.sqrt(jnp.real(spec) ** 2 + jnp.imag(spec) ** 2 + MAG_EPS)


def stft_loss(x: jax.Array, x_hat: jax.Array, sizes: Sequence[int]) -> jax.Array:
  """Multi-resolution STFT loss f32[b]: the mean over FFT sizes of spectral
  convergence ||S - S^||_F / ||S||_F plus the mean |log S - log S^|
  (magnitudes floored at LOG_EPS)."""
  total = 0.0
  for n in sizes:
    s, s_hat = stft_magnitude(x, n), stft_magnitude(x_hat, n)
    sc = (jnp.sqrt(jnp.sum((s - s_hat) ** 2, axis=(1, 2)))
          / jnp.sqrt(jnp.sum(s**2, axis=(1, 2))))
    log_l1 = jnp.mean(jnp.abs(jnp.log(jnp.maximum(s, LOG_EPS))
                              - jnp.log(jnp.maximum(s_hat, LOG_EPS))), axis=(1, 2))
    total = total + sc + log_l1
  return total / len(sizes)


def mel_loss(x: jax.Array, x_hat: jax.Array, sample_rate: int, mel_bins: int,
             n_fft: int) -> jax.Array:
  """Mean |log mel(x) - log mel(x^)| f32[b]: mel band powers of the STFT of
  `n_fft` (`audio.mel_filterbank`), floored at LOG_EPS."""
  fb = jnp.asarray(audio.mel_filterbank(sample_rate, n_fft, mel_bins), jnp.float32)
  mel = lambda v: jnp.log(jnp.maximum(stft_magnitude(v, n_fft) ** 2 @ fb, LOG_EPS))
  return jnp.mean(jnp.abs(mel(x) - mel(x_hat)), axis=(1, 2))


def distortion(config: AudioCodecConfig, x: jax.Array, x_hat: jax.Array
               ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """(the distortion f32[b] without the adversarial term, its parts)."""
  parts = {"stft": stft_loss(x, x_hat, config.stft_sizes),
           "mel": mel_loss(x, x_hat, config.sample_rate, config.mel_bins,
                           max(config.stft_sizes)),
           "wave_mse": jnp.mean((x - x_hat) ** 2, axis=1)}
  d = parts["stft"] + config.mel_weight * parts["mel"] + config.wave_weight * parts["wave_mse"]
  return d, parts


def rate_kbps(prior: dict, y: jax.Array, seconds: float) -> jax.Array:
  """-log2 p(y) of latents f32[b, frames, d], in kbit/s of audio: f32[b]."""
  p = jnp.maximum(likelihood(prior, y), LIKELIHOOD_FLOOR)
  return -jnp.sum(jnp.log2(p), axis=(1, 2)) / seconds / 1000.0


def snr_db(x: jax.Array, x_hat: jax.Array) -> jax.Array:
  """10 log10(|x|^2 / |x - x^|^2) per example: f32[b]."""
  return 10 * jnp.log10(jnp.sum(x**2, axis=1) / jnp.maximum(jnp.sum((x - x_hat) ** 2, axis=1),
                                                            1e-12))


def adversarial_g(disc_params, x: jax.Array, x_hat: jax.Array) -> jax.Array:
  """The codec's adversarial loss f32[b]: the hinge generator loss of x_hat
  plus 10 x feature matching (mean L1 of D's feature maps, real vs
  decoded), averaged over D's scales."""
  d = WaveDiscriminator()
  _, real_feats = d.apply({"params": disc_params}, x)
  fake_logits, fake_feats = d.apply({"params": disc_params}, x_hat)
  g = sum(jnp.mean(gan_losses.g_loss(ADV_LOSS, f), axis=1) for f in fake_logits)
  fm = [jnp.mean(jnp.abs(jax.lax.stop_gradient(r) - f), axis=(1, 2))
        for rs, fs in zip(real_feats, fake_feats) for r, f in zip(rs, fs)]
  return g / len(fake_logits) + 10.0 * sum(fm) / len(fm)


def adversarial_d(disc_params, x: jax.Array, x_hat: jax.Array) -> jax.Array:
  """The discriminator's hinge loss f32[b] on real x and decoded x_hat,
  averaged over its scales."""
  d = WaveDiscriminator()
  real_logits, _ = d.apply({"params": disc_params}, x)
  fake_logits, _ = d.apply({"params": disc_params}, x_hat)
  return sum(jnp.mean(gan_losses.d_loss(ADV_LOSS, r, f), axis=1)
             for r, f in zip(real_logits, fake_logits)) / len(real_logits)


# --------------------------------------------------------------------------
# Steps.


def train_step(state: TrainState, batch: jax.Array, key: chex.PRNGKey, *,
               axis_name: str | None = None) -> tuple[TrainState, dict[str, jax.Array]]:
  """One Adam step on distortion + lambda * kbit/s (and the discriminator's
  own loss when there is one). batch: f32[b, t] waveforms. The step's noise
  comes from fold_in(key, state.step); inside pmap over `axis_name` each
  device draws its rows of the global batch's noise and gradients and
  metrics are averaged."""
  cfg = state.config
  noise_key = jax.random.fold_in(key, state.step)
  seconds = batch.shape[1] / cfg.sample_rate

  def loss_fn(params, disc):
    y = state.model.apply({"params": params["net"]}, batch, method="encode")
    u = parallel.batch_draw(jax.random.uniform, noise_key, y.shape, y.dtype, -0.5, 0.5,
                            axis_name=axis_name)
    x_hat = state.model.apply({"params": params["net"]}, y + u, method="decode")
    d, parts = distortion(cfg, batch, x_hat)
    kbps = rate_kbps(params["prior"], y + u, seconds)
    loss = d + cfg.lam * kbps
    aux = {"kbps": jnp.mean(kbps), **{k: jnp.mean(v) for k, v in parts.items()}}
    if disc is not None:
      g_adv = adversarial_g(disc, batch, x_hat)
      loss = loss + cfg.adv_weight * g_adv
      aux["adv_g"] = jnp.mean(g_adv)
    return jnp.mean(loss), (aux, x_hat)

  # The codec and the prior get the gradient of their loss (D held fixed),
  # D the gradient of its own on the step's decoded batch.
  codec_params = {k: v for k, v in state.params.items() if k != "disc"}
  disc = state.params.get("disc")
  (loss, (aux, x_hat)), grads = jax.value_and_grad(loss_fn, has_aux=True)(codec_params, disc)
  if disc is not None:
    x_hat = jax.lax.stop_gradient(x_hat)
    d_loss, g_disc = jax.value_and_grad(lambda p: jnp.mean(adversarial_d(p, batch, x_hat)))(disc)
    grads = {**grads, "disc": g_disc}
    aux["adv_d"] = d_loss
  grads, metrics = parallel.pmean((grads, {"loss": loss, **aux}), axis_name)
  return state.apply_gradients(grads), metrics


def eval_step(state: TrainState, batch: jax.Array) -> dict[str, jax.Array]:
  """Per-example metrics of the hard-rounded codec, each f32[b]: kbps (the
  prior's rate of round(y): what an ideal coder spends, no container),
  the distortion's parts, snr_db, and loss = distortion + lambda * kbps."""
  cfg = state.config
  y = jnp.round(state.model.apply({"params": state.params["net"]}, batch, method="encode"))
  x_hat = state.model.apply({"params": state.params["net"]}, y, method="decode")
  d, parts = distortion(cfg, batch, x_hat)
  kbps = rate_kbps(state.params["prior"], y, batch.shape[1] / cfg.sample_rate)
  return {"loss": d + cfg.lam * kbps, "kbps": kbps, **parts, "snr_db": snr_db(batch, x_hat)}
