"""Audio as arrays: WAV files, speech datasets, training windows, and
spectral measures.

Offers
  - `read_wav` / `write_wav`: mono PCM WAV files <-> f32[t] in [-1, 1]
    (the standard library's `wave`; 8/16/24/32-bit integer PCM). A file
    at another rate is resampled (`resample=True`, polyphase filter) or
    refused with an error naming the argument; stereo and non-WAV files
    are refused.
  - `load(name, split)` -> `Clips`: every utterance of a split as one
    f32 array. `name` is `wav:DIR` (a folder of WAV files: its `train/`
    and `test/` subfolders when it has both, otherwise every WAV under
    DIR with a fixed held-out fraction as the test split), or a TFDS
    speech dataset read with `tfds.data_source` (`spoken_digit`, whose
    one split is held out the same way; `speech_commands`, whose splits
    are TFDS's).
  - `windows(clips, length, hop)`: utterances cut into fixed-length
    training examples f32[n, length].
  - `mel_filterbank`, and measures of a decoded signal against its
    original (NumPy float64): `snr_db`, `log_spectral_distance`,
    `mel_cepstral_distortion`.

Does not offer: stereo, compressed formats (FLAC, MP3: convert them
first), float WAV files, streaming from disk (a split is read into host
memory), or caching of decoded TFDS audio.
"""

from __future__ import annotations

import math
import os
import pathlib
import wave
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

SAMPLE_RATE = 16000
WAV_PREFIX = "wav:"
TFDS_SPEECH = ("spoken_digit", "speech_commands")
# The held-out split of a flat WAV folder (or of spoken_digit, which TFDS
# ships as one split): HOLDOUT of the utterances, at least one, drawn once
# from this seed. Like digits' split, part of the dataset's definition.
HOLDOUT = 0.1
SPLIT_SEED = 0
_PCM_DTYPES = {1: np.uint8, 2: np.int16, 4: np.int32}


class DatasetError(ValueError):
  """An audio dataset cannot be served: unknown, empty, or malformed."""


class Clips(NamedTuple):
  """A split of utterances in host memory.

  audio: one f32[t_i] array in [-1, 1] per utterance (lengths differ);
  sample_rate: Hz; name: the dataset's name; ids: one name per utterance
  (a path relative to the folder, or the TFDS index); labels: i32[n] or
  None (for reporting only).
  """
  audio: tuple[np.ndarray, ...]
  sample_rate: int
  name: str
  ids: tuple[str, ...]
  labels: np.ndarray | None = None

  @property
  def num_examples(self) -> int:
    return len(self.audio)

  @property
  def seconds(self) -> float:
    return sum(a.shape[0] for a in self.audio) / self.sample_rate


# --------------------------------------------------------------------------
# WAV files.


def to_rate(x: np.ndarray, rate: int, target: int) -> np.ndarray:
  """x: f[t] at `rate` Hz -> f32 at `target` Hz (scipy's polyphase filter)."""
  if rate == target:
    return np.asarray(x, np.float32)
  from scipy import signal
  g = math.gcd(int(rate), int(target))
  return signal.resample_poly(np.asarray(x, np.float64), target // g, rate // g).astype(np.float32)


def read_wav(path: str | os.PathLike, sample_rate: int | None = SAMPLE_RATE, *,
             resample: bool = False, what: str = "path") -> tuple[np.ndarray, int]:
  """(f32[t] in [-1, 1], rate) of a mono integer-PCM WAV file.

  sample_rate: the rate expected (None: any); a file at another rate is
  resampled to it when `resample`, else refused. Errors are ValueErrors
  that start with `what` (the argument that named the file).
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise ValueError(f"{what}: no such file: {str(path)!r}")
  try:
    with wave.open(str(path), "rb") as w:
      channels, width, rate, n = (w.getnchannels(), w.getsampwidth(), w.getframerate(),
                                  w.getnframes())
      raw = w.readframes(n)
  except (wave.Error, EOFError) as e:
    raise ValueError(f"{what}: {str(path)!r} is not a PCM WAV file ({e})") from None
  if channels != 1:
    raise ValueError(f"{what}: expected mono audio, got {channels} channels in {str(path)!r} "
                     f"(mix it down first, e.g. sox IN -c 1 OUT)")
  if width == 3:  # 24-bit: widen to 32-bit by hand
    b = np.frombuffer(raw, np.uint8).reshape(-1, 3)
    x = (np.pad(b, ((0, 0), (1, 0))).view("<i4")[:, 0].astype(np.float64)) / 2.0**31
  elif width in _PCM_DTYPES:
    ints = np.frombuffer(raw, np.dtype(_PCM_DTYPES[width]).newbyteorder("<"))
    x = ((ints.astype(np.float64) - 128.0) / 128.0 if width == 1
         else ints.astype(np.float64) / 2.0**(8 * width - 1))
  else:
    raise ValueError(f"{what}: unsupported sample width of {width} bytes in {str(path)!r}")
  x = x.astype(np.float32)
  if sample_rate is not None and rate != sample_rate:
    if not resample:
      raise ValueError(f"{what}: expected {sample_rate} Hz audio, got {rate} Hz in "
                       f"{str(path)!r} (resample it, e.g. sox IN -r {sample_rate} OUT)")
    x, rate = to_rate(x, rate, sample_rate), sample_rate
  return x, rate


def to_pcm16(x: np.ndarray) -> np.ndarray:
  """f[t] in [-1, 1] -> i16[t]: round(32767 x), clipped."""
  return np.clip(np.round(np.asarray(x, np.float64) * 32767.0), -32768, 32767).astype(np.int16)


def write_wav(path: str | os.PathLike, x: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
  """Writes f[t] in [-1, 1] as a mono 16-bit WAV, atomically (under a
  temporary name, renamed into place)."""
  path = pathlib.Path(path)
  tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
  try:
    with wave.open(str(tmp), "wb") as w:
      w.setnchannels(1)
      w.setsampwidth(2)
      w.setframerate(int(sample_rate))
      w.writeframes(to_pcm16(x).astype("<i2").tobytes())
    os.replace(tmp, path)
  except BaseException:
    tmp.unlink(missing_ok=True)
    raise


# --------------------------------------------------------------------------
# Datasets.


def holdout_split(n: int, split: str, fraction: float = HOLDOUT) -> np.ndarray:
  """The sorted indices of `split` ('train', 'test' or 'all') among n
  utterances, the test split being `fraction` of them (at least one),
  drawn with the fixed SPLIT_SEED."""
  if split == "all":
    return np.arange(n)
  if split not in ("train", "test"):
    raise DatasetError(f"split: expected 'train', 'test' or 'all', got {split!r}")
  if n < 2:
    raise DatasetError(f"dataset: expected at least 2 utterances to hold some out, got {n}")
  import jax
  from unsupjax.rng import named
  perm = np.asarray(jax.random.permutation(named(jax.random.PRNGKey(SPLIT_SEED), "holdout"), n))
  n_test = min(n - 1, max(1, int(round(n * fraction))))
  return np.sort(perm[:n_test] if split == "test" else perm[n_test:])


def _wav_files(folder: pathlib.Path) -> list[pathlib.Path]:
  return sorted(p for p in folder.rglob("*") if p.suffix.lower() == ".wav" and p.is_file())


def _load_wav_dir(spec: str, split: str, sample_rate: int, resample: bool) -> Clips:
  root = pathlib.Path(spec[len(WAV_PREFIX):]).expanduser()
  if not root.is_dir():
    raise DatasetError(f"dataset: {spec!r}: expected wav:DIR with DIR a folder of WAV files, "
                       f"but {str(root)!r} is not a directory")
  base = root
  if (root / "train").is_dir() and (root / "test").is_dir():
    if split == "all":
      files = _wav_files(root / "train") + _wav_files(root / "test")
    elif split in ("train", "test"):
      base = root / split
      files = _wav_files(base)
    else:
      raise DatasetError(f"split: expected 'train', 'test' or 'all', got {split!r}")
  else:
    files = _wav_files(root)
    files = [files[i] for i in holdout_split(len(files), split)] if files else files
  if not files:
    raise DatasetError(f"dataset: no .wav files for split {split!r} in {str(root)!r}")
  audio = []
  for f in files:
    try:
      audio.append(read_wav(f, sample_rate, resample=resample, what="dataset")[0])
    except ValueError as e:
      raise DatasetError(str(e) + ("" if resample else "; or pass resample=True to resample "
                                   "on reading")) from None
  ids = tuple(str(f.relative_to(base)) for f in files)
  return Clips(tuple(audio), sample_rate, spec, ids)


def _load_tfds(name: str, split: str, data_dir: str | None, download: bool,
               sample_rate: int, resample: bool) -> Clips:
  import tensorflow_datasets as tfds
  source_split = "train" if name == "spoken_digit" else split
  try:
    source = tfds.data_source(name, split=source_split, data_dir=data_dir)
  except ImportError as e:  # TFDS's Audio feature is built on TensorFlow
    raise DatasetError(f"dataset: TFDS's {name} needs TensorFlow to be read ({e}); "
                       f"pip install 'unsupjax[tf]'") from None
  except Exception as first:
    if not download:
      raise DatasetError(f"dataset: {name!r} is not prepared in "
                         f"{data_dir or 'the TFDS data directory'} ({first})") from first
    try:
      tfds.builder(name, data_dir=data_dir, file_format="array_record").download_and_prepare()
      source = tfds.data_source(name, split=source_split, data_dir=data_dir)
    except Exception as second:
      raise DatasetError(f"dataset: {name!r} is not prepared and could not be downloaded "
                         f"({type(second).__name__}: {second})") from second
  rate = int(source.dataset_info.features["audio"].sample_rate)
  if rate != sample_rate and not resample:
    raise DatasetError(f"dataset: {name} is {rate} Hz audio, expected {sample_rate} Hz; pass "
                       f"resample=True to resample it on reading")
  idx = (holdout_split(len(source), split) if name == "spoken_digit"
         else np.arange(len(source)))
  audio, labels = [], []
  for i in idx:
    rec = source[int(i)]
    x = np.asarray(rec["audio"]).astype(np.float64).reshape(-1) / 32768.0
    audio.append(to_rate(x, rate, sample_rate))
    labels.append(int(rec["label"]) if "label" in rec else -1)
  if not audio:
    raise DatasetError(f"dataset: {name} split {split!r} is empty")
  return Clips(tuple(audio), sample_rate, name, tuple(str(int(i)) for i in idx),
               np.asarray(labels, np.int32))


def load(name: str, split: str = "train", *, sample_rate: int = SAMPLE_RATE,
         resample: bool = False, data_dir: str | None = None,
         download: bool = True) -> Clips:
  """The utterances of one split (see the module docstring for `name`).

  Args:
    name: 'wav:DIR', 'spoken_digit' or 'speech_commands'.
    split: 'train', 'test' or 'all' (TFDS split syntax such as
      'train[:10%]' for speech_commands).
    sample_rate: the rate every utterance is returned at.
    resample: resample audio at another rate (else it is refused).
    data_dir, download: TFDS's data directory, and whether to try TFDS's
      download when the dataset is not prepared there.

  Raises:
    DatasetError: whose message starts with the argument at fault.
  """
  if not isinstance(name, str) or not name:
    raise DatasetError(f"dataset: expected 'wav:DIR' or one of {TFDS_SPEECH}, got {name!r}")
  if name.startswith(WAV_PREFIX):
    return _load_wav_dir(name, split, sample_rate, resample)
  if name not in TFDS_SPEECH:
    raise DatasetError(f"dataset: expected 'wav:DIR' (a folder of WAV files) or a TFDS "
                       f"speech dataset {TFDS_SPEECH}, got {name!r}")
  return _load_tfds(name, split, data_dir, download, sample_rate, resample)


def windows(audio: Sequence[np.ndarray], length: int, hop: int | None = None) -> np.ndarray:
  """Fixed-length examples f32[n, length] cut from utterances.

  Windows start every `hop` samples (default `length`: no overlap); each
  utterance also gets a last window ending at its end, so no sample is
  left out, and one shorter than `length` is zero-padded to one window.
  """
  hop = length if hop is None else hop
  for name, v in (("length", length), ("hop", hop)):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
      raise ValueError(f"{name}: expected a positive integer, got {v!r}")
  out = []
  for a in audio:
    a = np.asarray(a, np.float32)
    if a.shape[0] <= length:
      out.append(np.pad(a, (0, length - a.shape[0]))[None])
      continue
    starts = list(range(0, a.shape[0] - length + 1, hop))
    if starts[-1] != a.shape[0] - length:
      starts.append(a.shape[0] - length)
    out.append(np.stack([a[s:s + length] for s in starts]))
  if not out:
    raise ValueError("audio: expected at least one utterance")
  return np.concatenate(out)


# --------------------------------------------------------------------------
# Spectral measures (NumPy, float64).


def hz_to_mel(f):
  return 2595.0 * np.log10(1.0 + np.asarray(f, np.float64) / 700.0)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0,
                   fmax: float | None = None) -> np.ndarray:
  """Triangular filters f64[n_fft // 2 + 1, n_mels] on the HTK mel scale,
  each peaking at 1 (a bin's power times the matrix gives mel band power)."""
  fmax = sample_rate / 2 if fmax is None else fmax
  freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
  edges = 700.0 * (10 ** (np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2) / 2595.0)
                   - 1.0)
  lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
  up = (freqs - lo) / np.maximum(mid - lo, 1e-9)
  down = (hi - freqs) / np.maximum(hi - mid, 1e-9)
  return np.maximum(0.0, np.minimum(up, down)).T


def power_spectrogram(x: np.ndarray, n_fft: int = 512, hop: int = 128) -> np.ndarray:
  """|STFT|^2 f64[frames, n_fft // 2 + 1] with a periodic Hann window, no padding."""
  x = np.asarray(x, np.float64)
  if x.shape[0] < n_fft:
    x = np.pad(x, (0, n_fft - x.shape[0]))
  frames = 1 + (x.shape[0] - n_fft) // hop
  idx = np.arange(n_fft)[None] + hop * np.arange(frames)[:, None]
  win = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
  return np.abs(np.fft.rfft(x[idx] * win, axis=-1)) ** 2


def _active(power: np.ndarray, floor_db: float) -> np.ndarray:
  e = power.sum(axis=1)
  return e >= e.max() * 10 ** (-floor_db / 10) if e.max() > 0 else np.ones_like(e, bool)


def snr_db(ref: np.ndarray, est: np.ndarray) -> float:
  """10 log10(sum ref^2 / sum (ref - est)^2) over the whole signal."""
  ref, est = np.asarray(ref, np.float64), np.asarray(est, np.float64)
  noise = np.sum((ref - est) ** 2)
  return float(10 * np.log10(np.sum(ref**2) / max(noise, 1e-20)))


def _floor(power: np.ndarray, floor_db: float) -> float:
  """A power `floor_db` below `power`'s largest value: silence in either
  signal counts as that level, not as log(0)."""
  return max(float(power.max()), 1e-30) * 10 ** (-floor_db / 10)


def log_spectral_distance(ref: np.ndarray, est: np.ndarray, n_fft: int = 512,
                          hop: int = 128, floor_db: float = 50.0,
                          range_db: float = 80.0) -> float:
  """The mean over active frames (ref's energy within `floor_db` of its
  loudest frame) of the RMS difference of the log power spectra, in dB;
  bins more than `range_db` below ref's loudest bin count as that level
  (so a band one codec drops costs range_db at most, not log(0))."""
  p, q = power_spectrogram(ref, n_fft, hop), power_spectrogram(est, n_fft, hop)
  m = _active(p, floor_db)
  lo = _floor(p, range_db)
  d = 10 * np.log10(np.maximum(p[m], lo)) - 10 * np.log10(np.maximum(q[m], lo))
  return float(np.mean(np.sqrt(np.mean(d**2, axis=1))))


def mel_cepstral_distortion(ref: np.ndarray, est: np.ndarray, sample_rate: int = SAMPLE_RATE,
                            n_fft: int = 512, hop: int = 128, n_mels: int = 40,
                            n_ceps: int = 13, floor_db: float = 50.0,
                            range_db: float = 80.0) -> float:
  """Mel-cepstral distortion in dB, (10 / ln 10) sqrt(2 sum_k (c_k - c'_k)^2)
  over cepstra c_1..c_{n_ceps-1}: the DCT-II (orthonormal) of the natural
  log mel band *amplitudes* (half the log power, as the formula assumes;
  c_0, the level, left out), averaged over ref's active frames. Band powers
  more than `range_db` below ref's loudest band count as that level.
  An MFCC-based MCD: comparable between codecs here, not to numbers made
  with SPTK's mel-generalised cepstra."""
  from scipy.fft import dct
  fb = mel_filterbank(sample_rate, n_fft, n_mels)
  p, q = power_spectrogram(ref, n_fft, hop) @ fb, power_spectrogram(est, n_fft, hop) @ fb
  m = _active(p, floor_db)
  lo = _floor(p, range_db)
  c = dct(0.5 * np.log(np.maximum(p[m], lo)), type=2, norm="ortho", axis=1)[:, 1:n_ceps]
  d = dct(0.5 * np.log(np.maximum(q[m], lo)), type=2, norm="ortho", axis=1)[:, 1:n_ceps]
  return float(np.mean(10 / np.log(10) * np.sqrt(2 * np.sum((c - d) ** 2, axis=1))))
