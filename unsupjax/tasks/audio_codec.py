"""`unsupjax train audio-codec`: the learned speech codec, trained for one
--lambda; and the WAV side of `unsupjax compress` / `decompress`.

`train audio-codec` trains `models.audio_codec` (a 1-D conv autoencoder
whose integer latents are priced by the image codec's learned prior) on
half-overlapping windows of --segment samples cut from the training
utterances of --dataset (`unsupjax.audio.load`: `wav:DIR`, spoken_digit,
speech_commands), on a multi-resolution STFT + log-mel + waveform loss +
lambda * kbit/s, through `base.train`. Its report writes the codec bundle
(`audio_codec.npz`, what `compress` reads), then compresses every test
utterance into a real file (`test_coded/NAME.ujxa`, the container of
`models.audio_codec.io`), decodes each file back (`test_coded/NAME.wav`),
and reports the bitrate from the files' sizes (container included, and
payload only), SNR, log-spectral distance, mel-cepstral distortion, and
PESQ (wide band) and STOI when the `pesq` / `pystoi` packages are
installed; `spectrograms.png` shows two test utterances before and after.
`unsupjax evaluate` codes the test split again, in memory.

`compress --model WORKDIR IN.wav OUT` and `decompress --model WORKDIR IN
OUT.wav` (routed here by `tasks.codec` for .wav files and audio
containers) refuse a stereo file, a file at another rate than the
model's, a non-WAV file, a truncated, corrupt or foreign container, with
one line naming the problem, and never replace a file unasked.
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np

from unsupjax import audio
from unsupjax.config import UsageError, flag_error, option
from unsupjax.models.audio_codec import io as audio_io
from unsupjax.models.audio_codec import model as audio_model
from unsupjax.models.codec.entropy import CodecFormatError
from unsupjax.parallel import lead_process_only
from unsupjax.tasks import base

_DEFAULT = audio_model.AudioCodecConfig()
CODED_DIR = "test_coded"
CODED_SUFFIX = ".ujxa"
SPECTROGRAM_FILE = "spectrograms.png"


@dataclasses.dataclass(frozen=True)
class AudioCodecFlags(base.TrainConfig):
  dataset: str = option("wav:../shared/data/speech",
                        "'wav:DIR' (a folder of mono WAV files: DIR/train and DIR/test when "
                        "both exist, else a fixed 10%% held out) or a TFDS speech dataset: "
                        "spoken_digit, speech_commands", group="data and training")
  epochs: int | None = option(None, "total epochs", scope="grow",
                              default_help="12: about 1,000 steps on the speech folder",
                              group="data and training")
  batch_size: int = option(16, "examples (windows of --segment samples) per step",
                           group="data and training")
  segment: int = option(10240, "samples per training example (half-overlapping windows of "
                        "the training utterances); a multiple of the hop, prod(--strides)",
                        group="data and training")
  sample_rate: int = option(_DEFAULT.sample_rate, "the codec's sample rate in Hz",
                            group="data and training")
  resample: bool = option(False, "resample audio at another rate to --sample-rate (else "
                          "it is refused)", group="data and training")
  lam: float = option(_DEFAULT.lam, "price of the rate (kbit/s) in units of distortion; "
                      "the loss is distortion + lambda * kbit/s: larger, fewer bits and "
                      "lower quality", flag="lambda", group="model")
  channels: tuple[int, ...] = option(_DEFAULT.channels, "channels of each encoder stage "
                                     "(the decoder mirrors them)", group="model")
  strides: tuple[int, ...] = option(_DEFAULT.strides, "downsampling of each encoder stage; "
                                    "the latent frame rate is sample_rate / prod(strides)",
                                    group="model")
  latent_dim: int = option(_DEFAULT.latent_dim, "latent channels per frame: the integers "
                           "sent", group="model")
  mixtures: int = option(_DEFAULT.mixtures, "logistic components per latent channel in "
                         "the prior", group="model")
  stft_sizes: tuple[int, ...] = option(_DEFAULT.stft_sizes, "FFT sizes of the "
                                       "multi-resolution STFT loss", group="model")
  mel_bins: int = option(_DEFAULT.mel_bins, "mel bands of the log-mel term (on the STFT of "
                         "the largest size)", group="model")
  mel_weight: float = option(_DEFAULT.mel_weight, "weight of the log-mel L1 term",
                             group="model")
  wave_weight: float = option(_DEFAULT.wave_weight, "weight of the waveform MSE term",
                              group="model")
  adv_weight: float = option(_DEFAULT.adv_weight, "weight of the adversarial term (hinge "
                             "loss + feature matching of a multi-scale waveform "
                             "discriminator); 0: none", group="model")

  EPOCHS = {}
  EPOCHS_OTHER = 12

  def __post_init__(self):
    for name in ("channels", "strides", "stft_sizes"):
      object.__setattr__(self, name, tuple(getattr(self, name)))
    super().__post_init__()
    if self.workdir is None and self.dataset.startswith(audio.WAV_PREFIX):
      # runs/audio-codec-NAME, NAME the folder's (not a path with slashes).
      name = pathlib.Path(self.dataset[len(audio.WAV_PREFIX):]).expanduser().resolve().name
      object.__setattr__(self, "workdir", str(pathlib.Path("runs") / f"audio-codec-{name}"))
    model_cfg = base.derive(audio_model.AudioCodecConfig, self)   # the model's own checks
    model_cfg.check_length(self.segment, "segment")


# --------------------------------------------------------------------------
# Data.


def _dataset_error(e: ValueError) -> UsageError:
  return UsageError(str(flag_error(AudioCodecFlags, e)).replace("resample=True",
                                                                "--resample"))


def load(cfg: AudioCodecFlags) -> base.Data:
  """The train and test utterances, and the windows the model sees:
  train_x f32[n, segment] (hop segment / 2), test_x f32[m, segment]."""
  kw = dict(sample_rate=cfg.sample_rate, resample=cfg.resample, data_dir=cfg.data_dir,
            download=cfg.download)
  try:
    tr = audio.load(cfg.dataset, "train", **kw)
    te = audio.load(cfg.dataset, "test", **kw)
  except audio.DatasetError as e:
    raise _dataset_error(e) from None
  return base.Data(tr, te, audio.windows(tr.audio, cfg.segment, cfg.segment // 2),
                   audio.windows(te.audio, cfg.segment))


# --------------------------------------------------------------------------
# Coding the test split.


def quality(ref: np.ndarray, dec: np.ndarray, sample_rate: int) -> dict[str, float]:
  """snr_db, lsd_db, mcd_db of one decoded utterance; pesq_wb and stoi
  when the `pesq` / `pystoi` packages are installed (and the utterance
  suits them)."""
  out = {"snr_db": audio.snr_db(ref, dec), "lsd_db": audio.log_spectral_distance(ref, dec),
         "mcd_db": audio.mel_cepstral_distortion(ref, dec, sample_rate)}
  try:
    from pesq import pesq
    out["pesq_wb"] = float(pesq(sample_rate, ref, dec, "wb"))
  except ImportError:
    pass
  except Exception:   # pesq's NoUtterancesError & co: this utterance has no score
    pass
  try:
    from pystoi import stoi
    out["stoi"] = float(stoi(ref, dec, sample_rate, extended=False))
  except ImportError:
    pass
  return out


def coded_metrics(codec: audio_io.AudioCodec, clips: audio.Clips,
                  out_dir: pathlib.Path | None = None) -> tuple[dict, list[np.ndarray]]:
  """The test split coded one utterance per container.

  With out_dir, each container is written to out_dir/NAME.ujxa, read back
  from the disk, decoded, and the decoded audio written to NAME.wav, so
  the sizes are the files'. Returns (metrics, decoded waveforms):
  kbps_file (8 x all containers' bytes / all utterances' seconds / 1000),
  kbps_payload (without the 32-byte headers), kbps_ideal (the tables'
  code length), bytes_mean, and the mean over utterances of `quality`'s
  measures (pesq_utterances: how many PESQ scored). Checks that every
  file decodes to the encoder's latents.
  """
  sizes, payloads, ideal, rows, decoded = [], [], [], [], []
  if out_dir is not None:
    out_dir.mkdir(parents=True, exist_ok=True)
  for name, x in zip(clips.ids, clips.audio):
    q = codec.quantise(x)
    blob = audio_io.compress(codec, x)
    if out_dir is not None:
      stem = name.rsplit(".", 1)[0].replace("/", "__").replace("\\", "__")
      path = out_dir / (stem + CODED_SUFFIX)
      audio_io.atomic_write(path, lambda f, b=blob: f.write(b))
      blob = path.read_bytes()
    header, q_back = audio_io.decode_latents(codec, blob)
    if not np.array_equal(q, q_back):
      raise RuntimeError("decoded latents differ from the encoder's (a codec bug)")
    y = codec.reconstruct(q_back, header.samples)
    if out_dir is not None:
      audio.write_wav(out_dir / (stem + ".wav"), y, codec.sample_rate)
    sizes.append(len(blob))
    payloads.append(len(header.payload))
    ideal.append(float(codec.tables.bits(q[None])[0]))
    rows.append(quality(x, y, codec.sample_rate))
    decoded.append(y)
  seconds = clips.seconds
  out = {"kbps_file": 8 * sum(sizes) / seconds / 1000,
         "kbps_payload": 8 * sum(payloads) / seconds / 1000,
         "kbps_ideal": sum(ideal) / seconds / 1000,
         "bytes_mean": float(np.mean(sizes)), "utterances": len(sizes), "seconds": seconds}
  for k in rows[0]:
    vals = [r[k] for r in rows if k in r]
    out[k] = float(np.mean(vals))
  if "pesq_wb" in out:
    out["pesq_utterances"] = sum("pesq_wb" in r for r in rows)
  return out, decoded


@lead_process_only
def save_spectrograms(path: pathlib.Path, rows: list[tuple[str, np.ndarray, np.ndarray]],
                      sample_rate: int, caption: str) -> None:
  """A PNG with one row per utterance: (title, original, decoded) log-power
  spectrograms (FFT 512, hop 128) side by side, on one colour scale."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(len(rows), 2, figsize=(11, 1.0 + 2.6 * len(rows)), squeeze=False,
                           constrained_layout=True)
  for r, (title, ref, dec) in enumerate(rows):
    specs = [10 * np.log10(audio.power_spectrogram(v, 512, 128) + 1e-10) for v in (ref, dec)]
    top = max(s.max() for s in specs)
    for c, (s, what) in enumerate(zip(specs, ("original", "decoded"))):
      ax = axes[r, c]
      im = ax.imshow(s.T, origin="lower", aspect="auto", cmap="magma", vmin=top - 80, vmax=top,
                     extent=(0, len(ref) / sample_rate, 0, sample_rate / 2000))
      ax.set_title(f"{title}: {what}", fontsize=9)
      ax.set_ylabel("kHz")
      if r == len(rows) - 1:
        ax.set_xlabel("seconds")
  fig.colorbar(im, ax=axes, shrink=0.8, label="dB")
  fig.suptitle(caption, fontsize=10)
  fig.savefig(path, dpi=110)
  plt.close(fig)


def _shown(clips: audio.Clips) -> list[int]:
  """Two test utterances to draw: the shortest (a digit, in the speech
  folder) and the median-length one (a sentence)."""
  lengths = np.array([a.shape[0] for a in clips.audio])
  order = np.argsort(lengths, kind="stable")
  return sorted({int(order[0]), int(order[len(order) // 2])})


def _metrics(state, data: base.Data, codec: audio_io.AudioCodec,
             out_dir: pathlib.Path | None, picture: pathlib.Path | None,
             evaluator=None) -> dict:
  if evaluator is not None:     # the training loop's, already compiled
    values = {f"test_{k}": v for k, v in evaluator(state, data.test_x).items()}
  else:
    values = base.evaluate_on_test(audio_model, state, data)
  coded, decoded = coded_metrics(codec, data.test, out_dir)
  if picture is not None:
    rows = [(data.test.ids[i], data.test.audio[i], decoded[i]) for i in _shown(data.test)]
    caption = (f"model {codec.model_id.hex()}: {coded['kbps_file']:.2f} kbit/s on disk, "
               f"SNR {coded['snr_db']:.1f} dB"
               + (f", PESQ-WB {coded['pesq_wb']:.2f}" if "pesq_wb" in coded else "")
               + " (test split; synthesised speech)")
    save_spectrograms(picture, rows, codec.sample_rate, caption)
  return {"model_id": codec.model_id.hex(), **values,
          **{f"test_coded_{k}": v for k, v in coded.items()}}


def evaluate(cfg, state, data: base.Data, key, opts=None) -> dict:
  """The test split by the prior (test_kbps, test_stft, ...: eval_step on
  windows) and coded utterance by utterance in memory (test_coded_*);
  draws eval-spectrograms.png (the training run's own picture is kept).
  Deterministic: no key is drawn."""
  return _metrics(state, data, audio_io.AudioCodec.from_state(state), None,
                  pathlib.Path(cfg.workdir) / f"eval-{SPECTROGRAM_FILE}")


def report(run: base.Run) -> dict:
  """audio_codec.npz, the test split coded into files (test_coded/),
  spectrograms.png and the final test metrics."""
  import jax
  codec = audio_io.AudioCodec.from_state(run.state)
  lead_process_only(codec.save)(run.workdir / audio_io.BUNDLE_FILE)
  out_dir = run.workdir / CODED_DIR if jax.process_index() == 0 else None
  values = _metrics(run.state, run.data, codec, out_dir, run.workdir / SPECTROGRAM_FILE,
                    getattr(run.result, "evaluator", None))
  extra = "".join(f", {label} {values[k]:.3g}" for k, label in
                  (("test_coded_pesq_wb", "PESQ-WB"), ("test_coded_stoi", "STOI"))
                  if k in values)
  print(f"audio-codec, lambda {run.cfg.lam:g}: test {values['test_coded_kbps_file']:.2f} "
        f"kbit/s on disk ({values['test_coded_kbps_payload']:.2f} payload, "
        f"{values['test_kbps']:.2f} by the prior), SNR {values['test_coded_snr_db']:.2f} dB, "
        f"LSD {values['test_coded_lsd_db']:.2f} dB, MCD {values['test_coded_mcd_db']:.2f} dB"
        f"{extra}; files in {run.workdir / CODED_DIR}; model {codec.model_id.hex()}")
  return values


def fit_kwargs(cfg, data: base.Data, state, key) -> dict:
  return {"progress_keys": ["train_loss", "train_kbps", "test_kbps", "test_snr_db"]}


AUDIO_CODEC = base.Task(
    name="audio-codec",
    help="learned speech codec: 1-D conv autoencoder, integer latents range-coded with a "
         "learned prior, trained on multi-resolution STFT + mel loss + lambda * kbit/s; "
         "writes audio_codec.npz for `unsupjax compress`",
    config=AudioCodecFlags, model=audio_model, load=load, report=report,
    evaluate=evaluate, fit_kwargs=fit_kwargs)


# --------------------------------------------------------------------------
# unsupjax compress / decompress of WAV files (routed here by tasks.codec).

_MODEL_HELP = "a directory written by `unsupjax train audio-codec`"


def load_codec(workdir: str) -> audio_io.AudioCodec:
  """The bundle in `workdir`; UsageError naming --model if there is none."""
  return base.load_bundle(workdir, audio_io.BUNDLE_FILE, audio_io.AudioCodec.load,
                          _MODEL_HELP, CodecFormatError)


def compress_wav(cfg) -> dict:
  """`unsupjax compress --model WORKDIR IN.wav OUT` (cfg: tasks.codec.CompressConfig)."""
  if cfg.residual_step:
    raise UsageError(f"--residual-step: the audio codec has no residual layer; expected 0, "
                     f"got {cfg.residual_step}")
  c = load_codec(cfg.model)
  out = base.check_output(cfg.output, cfg.input, cfg.overwrite)
  try:
    x = audio_io.read_input(c, cfg.input, "IN")
  except ValueError as e:
    raise UsageError(str(e)) from None
  blob = audio_io.compress(c, x)
  audio_io.atomic_write(out, lambda f: f.write(blob))
  seconds = x.shape[0] / c.sample_rate
  kbps = 8 * len(blob) / seconds / 1000
  print(f"{cfg.input}: {seconds:.2f} s -> {out} ({len(blob)} bytes, {kbps:.2f} kbit/s, "
        f"model {c.model_id.hex()})")
  return {"bytes": len(blob), "kbps": kbps, "seconds": seconds}


def decompress_wav(cfg) -> dict:
  """`unsupjax decompress --model WORKDIR IN OUT.wav` (cfg: tasks.codec.DecompressConfig)."""
  c = load_codec(cfg.model)
  out = base.check_output(cfg.output, cfg.input, cfg.overwrite)
  if out.suffix.lower() != ".wav":
    raise UsageError(f"OUT: expected a .wav path for an audio codec file, got {cfg.output!r}")
  src = pathlib.Path(cfg.input)
  if not src.is_file():
    raise UsageError(f"IN: no such file: {cfg.input!r}")
  try:
    header, x = audio_io.decompress(c, src.read_bytes(), "IN")
  except CodecFormatError as e:
    raise UsageError(str(e)) from None
  audio.write_wav(out, x, header.sample_rate)
  print(f"{cfg.input}: {header.samples / header.sample_rate:.2f} s -> {out}")
  return {"samples": header.samples, "sample_rate": header.sample_rate}
