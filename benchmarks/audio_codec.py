"""The learned speech codec against Opus on the speech folder's test split.

For each lambda, `unsupjax train audio-codec --lambda L` (trained here
unless --reuse finds its bundle) codes every test utterance into its own
container; every utterance also goes through Opus (`opusenc --bitrate R
--hard-cbr`, then `opusdec --rate 16000`) at each --opus bitrate. Reported
per codec and setting, over the test split (60 utterances, 120 s, two
voices never seen in training):

  - kbit/s on disk: 8 x the files' bytes / the audio's seconds / 1000
    (the learned codec's 32-byte header; Opus's whole Ogg file, whose
    headers weigh on files this short), and in payload (the range coder's
    words; Opus's packets, Ogg pages and its two header packets left out);
  - PESQ (ITU-T P.862.2, wide band; the `pesq` package), STOI (`pystoi`),
    SNR (at the best integer lag within +-40 samples, so Opus's one-sample
    delay does not count), log-spectral distance and MFCC-based
    mel-cepstral distortion (`unsupjax.audio`), each the mean over
    utterances;
  - speed: encode and decode real-time factors (processing seconds per
    second of audio, lower is faster) on one CPU core (a subprocess pinned
    to one core, XLA single-threaded; compilation excluded); Opus's command
    line tools timed the same way, process start included.

The speech is synthesised (espeak-ng), so it is more regular than
recordings; numbers here are not numbers on real speech.

  apt-get install opus-tools && pip install pesq pystoi     # the baselines
  python benchmarks/audio_codec.py --runs runs/audio-bench --lambdas 0.003 0.01 0.05 \\
      --epochs 12 --json benchmarks/results/audio_codec.json \\
      --plot benchmarks/results/audio_codec_rd.png \\
      --spectrograms benchmarks/results/audio_codec_spectrograms.png
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import _bench  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
OPUS_KBPS = (6, 8, 12, 16, 24)


def log(msg: str) -> None:
  print(msg, file=sys.stderr, flush=True)


def best_lag_snr(ref: np.ndarray, est: np.ndarray, max_lag: int = 40) -> float:
  """SNR in dB at the integer lag (|lag| <= max_lag) that maximises it."""
  from unsupjax import audio
  n = min(len(ref), len(est))
  best = -np.inf
  for lag in range(-max_lag, max_lag + 1):
    a = ref[max(0, lag):n + min(0, lag)]
    b = est[max(0, -lag):n - max(0, lag)]
    best = max(best, audio.snr_db(a, b))
  return float(best)


def quality(ref: np.ndarray, dec: np.ndarray) -> dict:
  from pesq import pesq
  from pystoi import stoi

  from unsupjax import audio
  n = min(len(ref), len(dec))
  ref, dec = ref[:n], dec[:n]
  return {"pesq_wb": float(pesq(16000, ref, dec, "wb")), "stoi": float(stoi(ref, dec, 16000)),
          "snr_db": best_lag_snr(ref, dec), "lsd_db": audio.log_spectral_distance(ref, dec),
          "mcd_db": audio.mel_cepstral_distortion(ref, dec)}


def summarise(rows: list[dict], file_bytes: list[int], payload_bytes: list[int],
              seconds: float) -> dict:
  out = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
  out.update(kbps_file=8 * sum(file_bytes) / seconds / 1000,
             kbps_payload=8 * sum(payload_bytes) / seconds / 1000)
  return out


# --------------------------------------------------------------------------
# Opus.


def ogg_payload_bytes(data: bytes) -> int:
  """The bytes of an Ogg Opus file's audio packets (its OpusHead and
  OpusTags packets, and every page header, left out)."""
  pos, packets, cur = 0, [], 0
  while pos < len(data):
    if data[pos:pos + 4] != b"OggS":
      raise ValueError("not an Ogg stream")
    nseg = data[pos + 26]
    lacing = data[pos + 27:pos + 27 + nseg]
    for v in lacing:
      cur += v
      if v < 255:
        packets.append(cur)
        cur = 0
    pos += 27 + nseg + sum(lacing)
  return sum(packets[2:])


def run_opus(files: list[pathlib.Path], kbps: int, tmp: pathlib.Path):
  """(decoded waveforms, file bytes, payload bytes, encode s, decode s)."""
  from unsupjax import audio
  decoded, sizes, payloads, t_enc, t_dec = [], [], [], 0.0, 0.0
  for f in files:
    enc, dec = tmp / (f.stem + ".opus"), tmp / (f.stem + ".wav")
    t = time.perf_counter()
    subprocess.run(["opusenc", "--quiet", "--bitrate", str(kbps), "--hard-cbr", str(f),
                    str(enc)], check=True)
    t_enc += time.perf_counter() - t
    t = time.perf_counter()
    subprocess.run(["opusdec", "--quiet", "--rate", "16000", str(enc), str(dec)], check=True)
    t_dec += time.perf_counter() - t
    data = enc.read_bytes()
    sizes.append(len(data))
    payloads.append(ogg_payload_bytes(data))
    decoded.append(audio.read_wav(dec)[0])
  return decoded, sizes, payloads, t_enc, t_dec


# --------------------------------------------------------------------------
# The learned codec.


def train(workdir: pathlib.Path, lam: float, epochs: int, extra: list[str]) -> None:
  from unsupjax import cli
  args = ["train", "audio-codec", "--lambda", str(lam), "--epochs", str(epochs),
          "--workdir", str(workdir), "--overwrite", "--no-progress", *extra]
  log("unsupjax " + " ".join(args))
  if cli.main(args) != 0:
    raise RuntimeError(f"training lambda {lam} failed")


def run_learned(workdir: pathlib.Path, clips):
  """(decoded waveforms, file bytes, payload bytes) of the test split."""
  from unsupjax.models.audio_codec import io as audio_io
  codec = audio_io.AudioCodec.load(workdir / audio_io.BUNDLE_FILE)
  decoded, sizes, payloads = [], [], []
  for x in clips.audio:
    blob = audio_io.compress(codec, x)
    header, y = audio_io.decompress(codec, blob)
    decoded.append(y)
    sizes.append(len(blob))
    payloads.append(len(header.payload))
  return decoded, sizes, payloads


def speed_one_core(workdir: pathlib.Path, data: str) -> dict:
  """Encode / decode real-time factors of the codec in `workdir` over the
  test split, in a subprocess pinned to one core, XLA single-threaded."""
  code = f"""
import json, time, numpy as np
from unsupjax import audio
from unsupjax.models.audio_codec import io as audio_io
c = audio_io.AudioCodec.load({str(workdir / 'audio_codec.npz')!r})
clips = audio.load({data!r}, 'test')
blobs = [audio_io.compress(c, x) for x in clips.audio]          # compiles every bucket
[audio_io.decompress(c, b) for b in blobs]
t = time.perf_counter(); blobs = [audio_io.compress(c, x) for x in clips.audio]
enc = time.perf_counter() - t
t = time.perf_counter(); [audio_io.decompress(c, b) for b in blobs]
dec = time.perf_counter() - t
print(json.dumps({{"encode_rtf": enc / clips.seconds, "decode_rtf": dec / clips.seconds}}))
"""
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
             PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
  r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                     preexec_fn=lambda: os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}))
  if r.returncode:
    raise RuntimeError(r.stderr[-2000:])
  return json.loads(r.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------
# Pictures.


def plot_rd(path: str, learned: list[dict], opus: list[dict]) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, 3, figsize=(14, 4))
  for ax, key, label in zip(axes, ("pesq_wb", "stoi", "mcd_db"),
                            ("PESQ-WB (higher is better)", "STOI (higher is better)",
                             "mel-cepstral distortion, dB (lower is better)")):
    for rows, name, style in ((learned, "learned codec (unsupjax)", "o-"),
                              (opus, "Opus (opusenc --hard-cbr)", "s--")):
      rows = sorted(rows, key=lambda r: r["kbps_file"])
      ax.plot([r["kbps_file"] for r in rows], [r[key] for r in rows], style, label=name)
      # The learned points sit close together: their labels are stacked
      # above them, joined by a thin line, so that none covers another.
      stacked = style == "o-" and len(rows) > 1
      for i, r in enumerate(rows):
        ax.annotate(r["setting"], (r["kbps_file"], r[key]), fontsize=7,
                    textcoords="offset points",
                    xytext=(-10 + 14 * i, 14 + 11 * i) if stacked else (3, 3),
                    arrowprops=dict(arrowstyle="-", lw=0.5, color="0.4") if stacked else None)
    ax.set_xlabel("kbit/s on disk (container included)")
    ax.set_title(label, fontsize=10)
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=8)
  fig.suptitle("Speech folder test split (2 unseen voices, 120 s; synthesised by espeak-ng)",
               fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def plot_spectrograms(path: str, ref: np.ndarray, panels: list[tuple[str, np.ndarray]]) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  from unsupjax import audio
  allp = [("original", ref)] + panels
  fig, axes = plt.subplots(len(allp), 1, figsize=(9, 0.6 + 1.9 * len(allp)), sharex=True,
                           constrained_layout=True)
  specs = [10 * np.log10(audio.power_spectrogram(v, 512, 128) + 1e-10) for _, v in allp]
  top = max(s.max() for s in specs)
  for ax, (title, v), s in zip(axes, allp, specs):
    im = ax.imshow(s.T, origin="lower", aspect="auto", cmap="magma", vmin=top - 80, vmax=top,
                   extent=(0, len(v) / 16000, 0, 8))
    ax.set_title(title, fontsize=9)
    ax.set_ylabel("kHz")
  axes[-1].set_xlabel("seconds")
  fig.colorbar(im, ax=axes, shrink=0.6, label="dB")
  fig.savefig(path, dpi=110)
  plt.close(fig)


# --------------------------------------------------------------------------


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--data", default="wav:../shared/data/speech")
  p.add_argument("--runs", default="runs/audio-bench", help="work directories of the codecs")
  p.add_argument("--lambdas", type=float, nargs="+", default=[0.003, 0.01, 0.05])
  p.add_argument("--epochs", type=int, default=12)
  p.add_argument("--train-flags", nargs=argparse.REMAINDER, default=[],
                 help="more `train audio-codec` flags (last on the line)")
  p.add_argument("--reuse", action="store_true", help="keep codecs already trained in --runs")
  p.add_argument("--opus", type=int, nargs="+", default=list(OPUS_KBPS))
  p.add_argument("--json")
  p.add_argument("--plot")
  p.add_argument("--spectrograms")
  args = p.parse_args()
  if not shutil.which("opusenc") or not shutil.which("opusdec"):
    sys.exit("opusenc/opusdec not found: apt-get install opus-tools")

  from unsupjax import audio
  clips = audio.load(args.data, "test")
  root = pathlib.Path(args.data[len("wav:"):]) / "test"
  files = [root / i for i in clips.ids]
  info = _bench.machine()
  log(f"machine: {info}")
  results = {"machine": info, "test_seconds": clips.seconds, "utterances": clips.num_examples,
             "learned": [], "opus": []}
  shown = int(np.argsort([len(a) for a in clips.audio])[len(clips.audio) // 2])
  pictures = {}

  for lam in args.lambdas:
    wd = pathlib.Path(args.runs) / f"lambda-{lam:g}"
    if not (args.reuse and (wd / "audio_codec.npz").exists()):
      t = time.perf_counter()
      train(wd, lam, args.epochs, args.train_flags)
      log(f"trained lambda {lam:g} in {time.perf_counter() - t:.0f} s")
    decoded, sizes, payloads = run_learned(wd, clips)
    row = summarise([quality(x, y) for x, y in zip(clips.audio, decoded)], sizes, payloads,
                    clips.seconds)
    row.update(speed_one_core(wd, args.data), setting=f"λ={lam:g}", lam=lam,
               train_seconds=json.loads((wd / "summary.json").read_text())["wall_seconds"])
    results["learned"].append(row)
    pictures[row["setting"]] = (row, decoded[shown])
    log(f"learned {row['setting']}: {row}")

  with tempfile.TemporaryDirectory() as tmp:
    for kbps in args.opus:
      decoded, sizes, payloads, t_enc, t_dec = run_opus(files, kbps, pathlib.Path(tmp))
      row = summarise([quality(x, y) for x, y in zip(clips.audio, decoded)], sizes, payloads,
                      clips.seconds)
      row.update(setting=f"{kbps} kbps", bitrate=kbps, encode_rtf=t_enc / clips.seconds,
                 decode_rtf=t_dec / clips.seconds)
      results["opus"].append(row)
      pictures[f"Opus {kbps} kbps"] = (row, decoded[shown])
      log(f"opus {kbps}: {row}")

  headers = ["codec", "setting", "kbit/s on disk", "kbit/s payload", "PESQ-WB", "STOI",
             "SNR dB", "LSD dB", "MCD dB", "encode RTF", "decode RTF"]
  table = [[name, r["setting"], r["kbps_file"], r["kbps_payload"], r["pesq_wb"], r["stoi"],
            r["snr_db"], r["lsd_db"], r["mcd_db"], r["encode_rtf"], r["decode_rtf"]]
           for name, rows in (("learned", results["learned"]), ("Opus", results["opus"]))
           for r in sorted(rows, key=lambda r: r["kbps_file"])]
  print(_bench.markdown_table(headers, table))
  # The goal: the learned codec at half Opus's bitrate (on disk) vs Opus.
  learned = sorted(results["learned"], key=lambda r: r["kbps_file"])
  goal = []
  for r in results["opus"]:
    half = r["kbps_file"] / 2
    xs = [v["kbps_file"] for v in learned]
    if len(xs) >= 2 and xs[0] <= half <= xs[-1]:
      ours = float(np.interp(half, xs, [v["pesq_wb"] for v in learned]))
      goal.append({"opus": r["setting"], "opus_kbps_file": r["kbps_file"],
                   "opus_pesq_wb": r["pesq_wb"], "learned_at_half_kbps": half,
                   "learned_pesq_wb": ours})
  results["half_rate"] = goal
  if goal:
    print("\nLearned codec at half Opus's on-disk rate (PESQ-WB interpolated along its curve):")
    print(_bench.markdown_table(
        ["Opus", "Opus kbit/s on disk", "Opus PESQ-WB", "learned at kbit/s", "learned PESQ-WB"],
        [[g["opus"], g["opus_kbps_file"], g["opus_pesq_wb"], g["learned_at_half_kbps"],
          g["learned_pesq_wb"]] for g in goal]))
  print(f"\nmachine: {info['cpu']}, {info['cores']} cores, JAX {info['jax']} "
        f"({info['backend']}); speed on one core. Speech synthesised by espeak-ng.")
  _bench.write_json(args.json, results)
  if args.plot:
    plot_rd(args.plot, results["learned"], results["opus"])
  if args.spectrograms:
    wanted = [k for k in pictures if not k.startswith("Opus")][:1] + \
        [k for k in pictures if not k.startswith("Opus")][-1:] + \
        [k for k in ("Opus 8 kbps", "Opus 16 kbps") if k in pictures]
    panels = [(f"{'learned ' if not k.startswith('Opus') else ''}{k}: "
               f"{pictures[k][0]['kbps_file']:.1f} kbit/s on disk, PESQ-WB "
               f"{pictures[k][0]['pesq_wb']:.2f} (split mean)", pictures[k][1])
              for k in dict.fromkeys(wanted)]
    plot_spectrograms(args.spectrograms, clips.audio[shown], panels)


if __name__ == "__main__":
  main()
