"""Learned compression: integer latents, a learned prior, real files.

  model     CodecConfig, CodecState, init_state, train_step, eval_step (the
            rate-distortion training) and the prior's likelihood
  entropy   the prior's integer tables (build_tables, quantise) and the
            range coder (entropy_encode / entropy_decode)
  residual  the residual layer: 8-bit residuals against an exact
            fixed-point copy of the decoder, up to lossless
  bundle    Codec: a trained codec on the host, saved as one .npz bundle
  io        the container format (compress / decompress) and image files

Imports point down that list's reverse: io -> bundle -> residual ->
entropy -> model. The names below are re-exported for convenience.

Does not offer: training loops (`unsupjax.training.fit` trains the state),
or the command line (`unsupjax.tasks.codec`).
"""

from unsupjax.models.codec import bundle, entropy, io, model, residual
from unsupjax.models.codec.bundle import BUNDLE_FILE, Codec
from unsupjax.models.codec.entropy import (FREQ_BITS, MAX_SUPPORT, TAIL_MASS, CodecFormatError,
                                           Tables, build_tables, prior_cdf_np, quantise,
                                           quantise_pmf)
from unsupjax.models.codec.model import (CONFIG, LIKELIHOOD_FLOOR, MIN_SCALE, CodecConfig,
                                         CodecNet, CodecState, eval_step, init_prior,
                                         init_state, likelihood, rate_bits, train_step)
from unsupjax.models.codec.residual import (FIXED_POINT_BITS, RESIDUAL_STEPS,
                                            build_residual_tables, integer_base,
                                            integer_decoder, logit_thresholds, residual_bits,
                                            residual_pixels, residual_support,
                                            residual_symbols, to_uint8)

__all__ = [
    "bundle", "entropy", "io", "model", "residual",
    "BUNDLE_FILE", "Codec", "CodecFormatError",
    "FREQ_BITS", "MAX_SUPPORT", "TAIL_MASS", "Tables", "build_tables", "prior_cdf_np",
    "quantise", "quantise_pmf",
    "CONFIG", "LIKELIHOOD_FLOOR", "MIN_SCALE", "CodecConfig", "CodecNet", "CodecState",
    "eval_step", "init_prior", "init_state", "likelihood", "rate_bits", "train_step",
    "FIXED_POINT_BITS", "RESIDUAL_STEPS", "build_residual_tables", "integer_base",
    "integer_decoder", "logit_thresholds", "residual_bits", "residual_pixels",
    "residual_support", "residual_symbols", "to_uint8",
]
