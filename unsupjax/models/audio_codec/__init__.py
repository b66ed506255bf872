"""Learned speech compression: a 1-D conv codec with range-coded latents.

  model   AudioCodecConfig, AudioCodecNet, init_state, train_step,
          eval_step, the STFT / mel losses (the rate-distortion training)
  io      AudioCodec (a trained codec on the host, saved as one .npz
          bundle), the container (compress / decompress), WAV input

Built on the image codec's machinery (`unsupjax.models.codec`): its learned
factorised prior prices the latents, its integer tables and range coder
code them, its bundle helpers save the model.

Does not offer: a training loop (`unsupjax.training.fit`), or the command
line (`unsupjax.tasks.audio_codec`).
"""

from unsupjax.models.audio_codec import io, model
from unsupjax.models.audio_codec.io import BUNDLE_FILE, AudioCodec, compress, decompress
from unsupjax.models.audio_codec.model import (CONFIG, AudioCodecConfig, AudioCodecNet,
                                               eval_step, init_state, mel_loss, stft_loss,
                                               stft_magnitude, train_step)

__all__ = ["io", "model", "BUNDLE_FILE", "AudioCodec", "compress", "decompress", "CONFIG",
           "AudioCodecConfig", "AudioCodecNet", "eval_step", "init_state", "mel_loss",
           "stft_loss", "stft_magnitude", "train_step"]
