"""The speech codec: WAV folders and TFDS speech (mocked), the model's
contract, its STFT loss against SciPy, exact range coding with the file
size the rate is reported from, and one tiny `unsupjax train audio-codec`
with `compress` / `decompress` of WAV files and their bad inputs."""

import json
import wave

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import signal

from unsupjax import audio, cli
from unsupjax.models import audio_codec
from unsupjax.models.audio_codec import io as audio_io
from unsupjax.models.audio_codec import model as audio_model
from unsupjax.models.codec import entropy

RATE = 16000
# A tiny codec: hop 32 (500 frames/s), one STFT size.
TINY = dict(channels=(32,), strides=(32,), latent_dim=4, stft_sizes=(128,), mel_bins=16)
TINY_FLAGS = ["--channels", "32", "--strides", "32", "--latent-dim", "4", "--stft-sizes", "128",
              "--mel-bins", "16", "--segment", "1024", "--batch-size", "8"]


def _voice(seed: int, seconds: float = 0.25, rate: int = RATE) -> np.ndarray:
  """A voiced-speech stand-in: a few harmonics of a gliding pitch, an
  envelope, a little noise. f32[t] in [-1, 1]."""
  rng = np.random.default_rng(seed)
  t = np.arange(int(seconds * rate)) / rate
  f0 = rng.uniform(90, 220) * (1 + 0.2 * np.sin(2 * np.pi * rng.uniform(1, 3) * t))
  phase = 2 * np.pi * np.cumsum(f0) / rate
  x = sum(np.sin(k * phase) / k for k in range(1, 6))
  env = np.sin(np.pi * t / t[-1]) ** 2
  return (0.3 * env * x / 2.3 + 0.01 * rng.normal(size=t.size)).astype(np.float32)


def _write(path, x, rate=RATE, channels=1, width=2):
  path.parent.mkdir(parents=True, exist_ok=True)
  with wave.open(str(path), "wb") as w:
    w.setnchannels(channels)
    w.setsampwidth(width)
    w.setframerate(rate)
    ints = np.clip(np.round(np.asarray(x) * 32767), -32768, 32767).astype("<i2")
    w.writeframes(np.repeat(ints, channels).tobytes() if channels > 1 else ints.tobytes())


@pytest.fixture(scope="module")
def speech_dir(tmp_path_factory):
  """A folder with train/ (8 utterances) and test/ (3)."""
  root = tmp_path_factory.mktemp("speech")
  for i in range(8):
    _write(root / "train" / f"u{i}.wav", _voice(i))
  for i in range(3):
    _write(root / "test" / f"v{i}.wav", _voice(100 + i, 0.3))
  return root


# ------------------------------------------------------------------ data


def test_read_wav_matches_the_standard_library(tmp_path):
  x = _voice(0)
  _write(tmp_path / "a.wav", x)
  got, rate = audio.read_wav(tmp_path / "a.wav")
  with wave.open(str(tmp_path / "a.wav")) as w:
    ints = np.frombuffer(w.readframes(w.getnframes()), "<i2")
  assert rate == RATE and got.dtype == np.float32
  np.testing.assert_array_equal(got, ints.astype(np.float32) / 32768)
  audio.write_wav(tmp_path / "b.wav", got)
  np.testing.assert_allclose(audio.read_wav(tmp_path / "b.wav")[0], got, atol=1 / 32767)


def test_wav_dir_layouts_and_errors(speech_dir, tmp_path):
  tr, te = audio.load(f"wav:{speech_dir}", "train"), audio.load(f"wav:{speech_dir}", "test")
  assert (tr.num_examples, te.num_examples) == (8, 3)
  assert te.ids == ("v0.wav", "v1.wav", "v2.wav") and te.sample_rate == RATE
  assert te.seconds == pytest.approx(0.9)
  # A flat folder: a fixed 10% (at least one) held out, the rest trained on.
  flat = tmp_path / "flat"
  for i in range(12):
    _write(flat / f"f{i:02d}.wav", _voice(i, 0.1))
  a, b = audio.load(f"wav:{flat}", "train"), audio.load(f"wav:{flat}", "test")
  assert (a.num_examples, b.num_examples) == (11, 1) and not set(a.ids) & set(b.ids)
  assert audio.load(f"wav:{flat}", "test").ids == b.ids          # the same every time
  # Another rate: refused, naming the argument, or resampled.
  _write(flat / "g.wav", _voice(0, 0.1, 8000), rate=8000)
  with pytest.raises(audio.DatasetError, match="dataset: expected 16000 Hz audio, got 8000 Hz"
                     ".*resample=True"):
    audio.load(f"wav:{flat}", "all")
  x = audio.load(f"wav:{flat}", "all", resample=True)
  assert x.audio[x.ids.index("g.wav")].shape == (1600,)
  _write(tmp_path / "st" / "s.wav", np.zeros(100), channels=2)
  (tmp_path / "bad").mkdir()
  (tmp_path / "bad" / "b.wav").write_bytes(b"not a wav file at all")
  for name, message in [(f"wav:{tmp_path / 'none'}", "is not a directory"),
                        (f"wav:{tmp_path / 'st'}", "expected mono audio, got 2 channels"),
                        (f"wav:{tmp_path / 'bad'}", "is not a PCM WAV file"),
                        ("librispeech", "expected 'wav:DIR'")]:
    with pytest.raises(audio.DatasetError, match=message):
      audio.load(name, "all")
  with pytest.raises(audio.DatasetError, match="split: expected"):
    audio.load(f"wav:{speech_dir}", "validation")


def test_windows_cover_every_sample():
  w = audio.windows([np.arange(10, dtype=np.float32), np.arange(3, dtype=np.float32)], 4, 3)
  np.testing.assert_array_equal(w[:, 0], [0, 3, 6, 0])
  np.testing.assert_array_equal(w[2], [6, 7, 8, 9])     # the last window ends at the end
  np.testing.assert_array_equal(w[3], [0, 1, 2, 0])     # a short utterance is padded


def test_tfds_spoken_digit_mocked(tmp_path):
  """spoken_digit and speech_commands through tfds.data_source (mock
  data): spoken_digit's 8 kHz refused unless resampled, its one split held
  out like a flat WAV folder."""
  pytest.importorskip("tensorflow", reason="TFDS's Audio feature needs TensorFlow "
                      "(pip install 'unsupjax[tf]')")
  import tensorflow_datasets as tfds
  with tfds.testing.mock_data(num_examples=20):
    with pytest.raises(audio.DatasetError, match="8000 Hz audio, expected 16000 Hz"):
      audio.load("spoken_digit", "train")
    tr = audio.load("spoken_digit", "train", resample=True)
    te = audio.load("spoken_digit", "test", resample=True)
    sc = audio.load("speech_commands", "test")            # 16 kHz: TFDS's own splits
  assert sc.num_examples == 20 and sc.sample_rate == RATE
  assert (tr.num_examples, te.num_examples) == (18, 2) and not set(tr.ids) & set(te.ids)
  assert tr.labels.shape == (18,) and all(a.dtype == np.float32 for a in tr.audio)


def test_quality_measures_have_their_known_values():
  """SNR, LSD and MCD on cases whose answer is known without the code: a
  gain g shifts every log power bin by 20 log10 g dB (LSD = that, SNR =
  -20 log10 |1 - g|) and every log mel amplitude by log g, which the
  orthonormal DCT puts in c_0 alone (MCD = 0); dropping half the bands
  costs them, up to the floor."""
  rng = np.random.default_rng(0)
  x = rng.normal(0, 0.1, 16000)
  g = 0.5
  assert audio.snr_db(x, g * x) == pytest.approx(-20 * np.log10(1 - g))
  assert audio.log_spectral_distance(x, x) == 0.0
  assert audio.log_spectral_distance(x, g * x) == pytest.approx(-20 * np.log10(g), rel=1e-9)
  assert audio.mel_cepstral_distortion(x, x) == 0.0
  assert audio.mel_cepstral_distortion(x, g * x) == pytest.approx(0.0, abs=1e-9)
  # Low-passed at 4 kHz (white noise: its upper half is gone): a large but
  # bounded distance, 80 dB of floor at most per bin.
  spec = np.fft.rfft(x)
  spec[len(spec) // 2:] = 0
  low = np.fft.irfft(spec, len(x))
  lsd, mcd = audio.log_spectral_distance(x, low), audio.mel_cepstral_distortion(x, low)
  assert 30 < lsd < 80 and 60 < mcd < 200, (lsd, mcd)


# ------------------------------------------------------------------ model


def test_stft_loss_against_scipy():
  rng = np.random.default_rng(0)
  x = rng.normal(0, 0.1, (2, 2048)).astype(np.float32)
  x_hat = (x + rng.normal(0, 0.03, x.shape)).astype(np.float32)
  sizes = (128, 256)
  got = np.asarray(jax.jit(audio_codec.stft_loss, static_argnums=2)(x, x_hat, sizes))
  want = np.zeros(2)
  for n in sizes:
    # SciPy's STFT, periodic Hann, even (reflect) extension by n/2, scaled
    # back from its 1/sum(window) normalisation.
    mag = lambda v, n=n: np.sqrt(np.abs(signal.stft(
        v.astype(np.float64), window="hann", nperseg=n, noverlap=n - n // 4, boundary="even",
        padded=False, axis=-1)[2] * (n / 2)) ** 2 + audio_model.MAG_EPS)
    s, s_hat = mag(x), mag(x_hat)
    sc = np.linalg.norm(s - s_hat, axis=(1, 2)) / np.linalg.norm(s, axis=(1, 2))
    floor = audio_model.LOG_EPS
    log_l1 = np.mean(np.abs(np.log(np.maximum(s, floor)) - np.log(np.maximum(s_hat, floor))),
                     axis=(1, 2))
    want += (sc + log_l1) / len(sizes)
  np.testing.assert_allclose(got, want, rtol=2e-4)


@pytest.fixture(scope="module")
def run(speech_dir, tmp_path_factory):
  """One tiny `unsupjax train audio-codec` run (1 epoch) in process: its
  work directory."""
  wd = tmp_path_factory.mktemp("audio-run") / "run"
  args = ["train", "audio-codec", "--dataset", f"wav:{speech_dir}", "--epochs", "1",
          *TINY_FLAGS, "--no-progress", "--no-compile-cache", "--workdir", str(wd)]
  assert cli.main(args) == 0
  return wd


def test_contract_shapes_and_one_trace():
  cfg = audio_codec.AudioCodecConfig(lam=0.05, **TINY)
  x = jnp.asarray(np.stack([_voice(i, 0.064) for i in range(8)]))     # 1024 samples each
  state = audio_codec.init_state(jax.random.PRNGKey(0), cfg, x[:1])
  y = state.model.apply({"params": state.params["net"]}, x, method="encode")
  assert y.shape == (8, 1024 // cfg.hop, 4) and cfg.hop == 32
  step = jax.jit(chex.assert_max_traces(lambda s, b, k: audio_codec.train_step(s, b, k), n=1))
  key = jax.random.PRNGKey(1)
  s, first = step(state, x, key)
  for _ in range(4):
    s, metrics = step(s, x, key)
  assert int(s.step) == 5
  assert set(first) == {"loss", "kbps", "stft", "mel", "wave_mse"}
  assert float(metrics["loss"]) < float(first["loss"])
  values = jax.jit(audio_codec.eval_step)(s, x)
  assert {k: v.shape for k, v in values.items()} == {
      k: (8,) for k in ("loss", "kbps", "stft", "mel", "wave_mse", "snr_db")}
  with pytest.raises(ValueError, match="example_batch: expected examples of a multiple of 32"):
    audio_codec.init_state(key, cfg, x[:1, :1000])
  with pytest.raises(ValueError, match="strides: expected 2 positive strides"):
    audio_codec.AudioCodecConfig(channels=(8, 8), strides=(4,))


def test_the_rate_falls_as_lambda_rises():
  """The same start and batches, two lambdas 300x apart: after 30 steps the
  larger one has the lower rate (the trade-off --lambda sets)."""
  x = jnp.asarray(np.stack([_voice(i, 0.064) for i in range(8)]))
  key = jax.random.PRNGKey(1)
  rates = []
  for lam in (0.01, 3.0):
    cfg = audio_codec.AudioCodecConfig(lam=lam, **TINY)
    state = audio_codec.init_state(jax.random.PRNGKey(0), cfg, x[:1])
    step = jax.jit(audio_codec.train_step)
    for _ in range(30):
      state, _ = step(state, x, key)
    rates.append(float(jax.jit(audio_codec.eval_step)(state, x)["kbps"].mean()))
  assert rates[0] > rates[1], rates


def test_mdct_frontend_reconstructs():
  """The analysis and synthesis the first and last layers start from are
  inverses (away from the signal's ends)."""
  b = audio_codec.model.mdct_basis(8)
  x = np.random.default_rng(0).normal(size=80)
  frames = np.pad(x, (4, 4)).reshape(-1, 8)
  coef = np.concatenate([frames[:-1], frames[1:]], axis=1) @ b          # [10, 8]
  halves = (coef @ b.T).reshape(10, 2, 8)
  y = (np.pad(halves[:, 0], ((0, 1), (0, 0))) + np.pad(halves[:, 1], ((1, 0), (0, 0))))
  np.testing.assert_allclose(y.ravel()[4:84][8:-8], x[8:-8], atol=1e-12)


def test_range_coding_is_exact_and_the_file_is_the_rate(run, tmp_path):
  codec = audio_io.AudioCodec.load(run / audio_io.BUNDLE_FILE)
  x = _voice(7, 0.3)                        # 4800 samples: 150 frames, not a bucket multiple
  q = codec.quantise(x)
  assert q.shape == (150, 4) and q.dtype == np.int32
  blob = audio_io.compress(codec, x)
  header, back = audio_io.decode_latents(codec, blob)
  np.testing.assert_array_equal(back, q)
  assert header.samples == 4800 and len(blob) == audio_io.HEADER.size + len(header.payload)
  # The coder spends the tables' code length, to a 32-bit word or two.
  ideal = codec.tables.bits(q[None])[0] / 8
  assert ideal <= len(header.payload) <= ideal + 8
  y = audio_io.decompress(codec, blob)[1]
  np.testing.assert_array_equal(y, codec.reconstruct(q, 4800))
  # A bundle saved again keeps the model id, and the file decodes with it.
  codec.save(tmp_path / audio_io.BUNDLE_FILE)
  again = audio_io.AudioCodec.load(tmp_path / audio_io.BUNDLE_FILE)
  assert again.model_id == codec.model_id
  np.testing.assert_array_equal(audio_io.decode_latents(again, blob)[1], q)
  # Entropy coding of [frames, d] latents is the image codec's, row by row.
  np.testing.assert_array_equal(
      entropy.entropy_decode(header.payload, 150, codec.tables), q)
  with pytest.raises(entropy.CodecFormatError, match="not an audio codec bundle"):
    (tmp_path / "x.npz").write_bytes(b"junk")
    audio_io.AudioCodec.load(tmp_path / "x.npz")


# ------------------------------------------------------------------ CLI


def test_train_cli_writes_files_and_reports_their_size(run):
  summary = json.loads((run / "summary.json").read_text())
  coded = sorted((run / "test_coded").iterdir())
  assert [p.name for p in coded] == [f"v{i}.{e}" for i in range(3) for e in ("ujxa", "wav")]
  # The reported rate is the files' size.
  size = sum(p.stat().st_size for p in coded if p.suffix == ".ujxa")
  assert summary["test_coded_kbps_file"] == pytest.approx(8 * size / 0.9 / 1000)
  assert summary["test_coded_kbps_payload"] == pytest.approx(8 * (size - 3 * 32) / 0.9 / 1000)
  for k in ("test_kbps", "test_stft", "test_coded_snr_db", "test_coded_lsd_db",
            "test_coded_mcd_db"):
    assert np.isfinite(summary[k]), k
  assert summary["model_id"] == audio_io.AudioCodec.load(run / audio_io.BUNDLE_FILE).model_id.hex()
  assert (run / "spectrograms.png").stat().st_size > 10_000


def test_another_process_decodes_what_this_one_coded(run, tmp_path, capsys):
  """Compressed here (the CLI, in this process); a fresh process decodes the
  file (the CLI) and its latents: the same integers as this process's, and
  the same waveform, sample for sample."""
  import subprocess
  import sys

  from conftest import cli_env
  wd = str(run)
  _write(tmp_path / "in.wav", _voice(5, 0.4))
  assert cli.main(["compress", "--model", wd, str(tmp_path / "in.wav"),
                   str(tmp_path / "c.ujxa")]) == 0
  assert cli.main(["decompress", "--model", wd, str(tmp_path / "c.ujxa"),
                   str(tmp_path / "here.wav")]) == 0
  code = ("import sys, numpy as np; from unsupjax import cli; "
          "from unsupjax.models.audio_codec import io; "
          "c = io.AudioCodec.load(sys.argv[1] + '/' + io.BUNDLE_FILE); "
          "np.save('q.npy', io.decode_latents(c, open('c.ujxa', 'rb').read())[1]); "
          "sys.exit(cli.main(['decompress', '--model', sys.argv[1], 'c.ujxa', 'there.wav']))")
  out = subprocess.run([sys.executable, "-c", code, wd], cwd=tmp_path, env=cli_env(tmp_path),
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  codec = audio_io.AudioCodec.load(run / audio_io.BUNDLE_FILE)
  np.testing.assert_array_equal(np.load(tmp_path / "q.npy"),
                                codec.quantise(audio.read_wav(tmp_path / "in.wav")[0]))
  np.testing.assert_array_equal(audio.read_wav(tmp_path / "there.wav")[0],
                                audio.read_wav(tmp_path / "here.wav")[0])


def test_compress_decompress_wav_and_bad_input(run, tmp_path, capsys):
  wd = str(run)
  src, c, out = tmp_path / "in.wav", tmp_path / "c.ujxa", tmp_path / "out.wav"
  _write(src, _voice(42, 0.3))
  capsys.readouterr()
  assert cli.main(["compress", "--model", wd, str(src), str(c)]) == 0
  line = capsys.readouterr().out
  kbps = 8 * c.stat().st_size / 0.3 / 1000
  assert f"{c.stat().st_size} bytes, {kbps:.2f} kbit/s" in line
  assert cli.main(["decompress", "--model", wd, str(c), str(out)]) == 0
  y, rate = audio.read_wav(out)
  assert rate == RATE and y.shape == (4800,)
  codec = audio_io.AudioCodec.load(run / audio_io.BUNDLE_FILE)
  np.testing.assert_array_equal(
      audio_io.decode_latents(codec, c.read_bytes())[1], codec.quantise(audio.read_wav(src)[0]))
  c_bytes = c.read_bytes()
  (tmp_path / "trunc.ujxa").write_bytes(c_bytes[:-5])
  (tmp_path / "flip.ujxa").write_bytes(c_bytes[:40] + bytes([c_bytes[40] ^ 1]) + c_bytes[41:])
  _write(tmp_path / "stereo.wav", np.zeros(320), channels=2)
  _write(tmp_path / "r8k.wav", np.zeros(320), rate=8000)
  (tmp_path / "text.wav").write_text("hello")
  capsys.readouterr()
  for argv, message in [
      (["compress", str(tmp_path / "stereo.wav"), str(tmp_path / "o1")],
       "IN: expected mono audio, got 2 channels"),
      (["compress", str(tmp_path / "r8k.wav"), str(tmp_path / "o2")],
       "IN: expected 16000 Hz audio, got 8000 Hz"),
      (["compress", str(tmp_path / "text.wav"), str(tmp_path / "o3")], "is not a PCM WAV file"),
      (["compress", str(src), str(c)], "OUT: "),
      (["decompress", str(tmp_path / "trunc.ujxa"), str(tmp_path / "o4.wav")],
       "IN: truncated"),
      (["decompress", str(tmp_path / "flip.ujxa"), str(tmp_path / "o5.wav")],
       "IN: corrupt: CRC-32 mismatch"),
      (["decompress", str(src), str(tmp_path / "o6.wav")], "IN: not an unsupjax audio codec")]:
    assert cli.main([argv[0], "--model", wd, *argv[1:]]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
  assert not any((tmp_path / f"o{i}{s}").exists() for i in range(1, 7) for s in ("", ".wav"))
