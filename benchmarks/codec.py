"""Rate-distortion of the learned codec against JPEG and PNG on MNIST's test split.

For each lambda, the codec trained by `unsupjax train codec --dataset mnist
--lambda L` (the default model, and a wide one with `--latent-dim 64 --hidden
1024 512`; trained here when its work directory has no bundle yet) codes all
10,000 test images, and every image also goes through Pillow's JPEG at
several qualities and Pillow's PNG (lossless). Reported per method:

  - PSNR in dB: the mean over images of 10 log10(255^2 / MSE) between the
    8-bit original and the 8-bit decoded image (the codec's output is rounded
    to 8 bits, as `unsupjax decompress` writes it);
  - file bytes per image: one file per image, headers included (codec: its
    32-byte container header plus the range-coded payload; JPEG: the whole
    JFIF file, Huffman tables optimised; PNG: the whole file, optimised);
  - payload bytes per image, with per-file headers excluded: the codec's
    stream-level size (all images in one container, header amortised);
    JPEG's entropy-coded segment alone (after the SOS header; an optimistic
    lower bound: a real JPEG decoder needs the tables it leaves out).

The codecs named by --residual-of are also run with each residual step
(`unsupjax compress --residual-step S`: the 8-bit residual against the
decoder's picture, quantised with step S and coded with per-position tables
counted on the training split; S = 1 is lossless), which continues their
curves from the decoder's PSNR up to lossless.

The equal-PSNR table interpolates JPEG's curve (log bytes, linear in PSNR)
at each codec point and reports JPEG bytes / codec bytes, for whole files
and for payloads; a second table takes each JPEG quality and the smallest
codec file with at least its PSNR; the lossless rows are compared with PNG. Also checks that
every decoded latent (and residual symbol) equals the encoder's.

  python benchmarks/codec.py --data-dir ../shared/data/tfds --runs runs/codec \
      --lambdas 0.3 0.1 0.03 0.01 0.003 0.001 0.0001 --wide-lambdas 0.0003 0.0001 \
      --epochs 20 --residual-of base:0.01 wide:0.0001 \
      --json benchmarks/results/codec.json --plot docs/rd.png
"""

from __future__ import annotations

import argparse
import io
import os
import pathlib
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import _bench  # noqa: E402

QUALITIES = (1, 3, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 97, 99, 100)


def psnr_u8(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Per-image PSNR in dB of uint8 images [n, ...]; identical images: inf."""
  n = a.shape[0]
  mse = np.mean((a.reshape(n, -1).astype(np.float64) - b.reshape(n, -1)) ** 2, axis=1)
  with np.errstate(divide="ignore"):
    return 10 * np.log10(255.0**2 / mse)


def jpeg_scan_bytes(blob: bytes) -> int:
  """Bytes after the (first) SOS segment header: the entropy-coded data + EOI."""
  i = 2
  while i < len(blob):
    if blob[i] != 0xFF:
      raise ValueError("malformed JPEG")
    marker = blob[i + 1]
    seg = int.from_bytes(blob[i + 2:i + 4], "big")
    if marker == 0xDA:
      return len(blob) - (i + 2 + seg)
    i += 2 + seg
  raise ValueError("no SOS marker")


def bench_jpeg(x_u8: np.ndarray, quality: int) -> dict:
  from PIL import Image
  sizes, scans, decoded = [], [], []
  for img in x_u8:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality, optimize=True)
    blob = buf.getvalue()
    sizes.append(len(blob))
    scans.append(jpeg_scan_bytes(blob))
    decoded.append(np.asarray(Image.open(io.BytesIO(blob)).convert("L")))
  return {"file_bytes": float(np.mean(sizes)), "payload_bytes": float(np.mean(scans)),
          "psnr": float(np.mean(psnr_u8(x_u8, np.stack(decoded))))}


def bench_png(x_u8: np.ndarray) -> dict:
  from PIL import Image
  sizes = []
  for img in x_u8:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", optimize=True)
    sizes.append(len(buf.getvalue()))
  return {"file_bytes": float(np.mean(sizes)), "psnr": float("inf")}


def bench_codec(workdir: pathlib.Path, x_u8: np.ndarray) -> dict:
  import json

  from unsupjax.models.codec import io as codec_io
  c = codec_io.Codec.load(workdir / codec_io.BUNDLE_FILE)
  x = x_u8[..., None].astype(np.float32) / np.float32(255.0)
  q = c.quantise(x)
  blob = codec_io.compress(c, x)
  _, q_back = codec_io.decode_latents(c, blob)
  exact = bool(np.array_equal(q, q_back))
  models = codec_io.coding_models(c.tables)
  per_image = [codec_io.HEADER.size + len(codec_io.entropy_encode(q[i:i + 1], c.tables, models))
               for i in range(q.shape[0])]
  recon = codec_io.to_uint8(c.reconstruct(q_back))[..., 0]
  summary = json.loads((workdir / "summary.json").read_text())
  n = x.shape[0]
  return {"lambda": summary["config"].get("lam", summary["config"].get("lambda")), "epochs": summary["epochs"],
          "model_id": c.model_id.hex(), "round_trip_exact": exact,
          "file_bytes": float(np.mean(per_image)), "payload_bytes": len(blob) / n,
          "stream_bytes": len(blob), "ideal_bytes": float(c.tables.bits(q).sum() / 8 / n),
          "psnr": float(np.mean(psnr_u8(x_u8, recon))),
          "used_channels": int(np.sum(c.tables.width > 1))}


def bench_residual(workdir: pathlib.Path, x_u8: np.ndarray, train_x: np.ndarray) -> list[dict]:
  """One row per residual step of the codec in workdir (its tables counted
  on train_x first if the bundle has none)."""
  import json

  from unsupjax.models import codec as codec_lib
  from unsupjax.models.codec import io as codec_io
  c = codec_io.Codec.load(workdir / codec_io.BUNDLE_FILE)
  fitted_here = not c.residual
  if fitted_here:
    c = c.with_residual(train_x)
  record = json.loads((workdir / "summary.json").read_text())["config"]
  lam = record.get("lam", record.get("lambda"))
  n = x_u8.shape[0]
  x = x_u8[..., None].astype(np.float32) / np.float32(255.0)
  q = c.quantise(x)
  base = c.base_pixels(q)
  rows = []
  for step in sorted(c.residual):
    r = codec_lib.residual_symbols(x_u8.reshape(n, -1), base, step)
    blob = codec_io.compress(c, x, residual_step=step)
    _, q_back, r_back = codec_io.decode_symbols(c, blob)
    _, images = codec_io.decompress(c, blob)
    recon = codec_io.to_uint8(images)[..., 0]
    per_image = [codec_io.HEADER.size + len(codec_io.encode_symbols(c, q[i:i + 1], r[i:i + 1],
                                                                     step))
                 for i in range(n)]
    psnr = psnr_u8(x_u8, recon)
    rows.append({"lambda": lam, "step": step, "tables_counted_here": fitted_here,
                 "round_trip_exact": bool(np.array_equal(q, q_back) and
                                          np.array_equal(r, r_back)),
                 "file_bytes": float(np.mean(per_image)), "payload_bytes": len(blob) / n,
                 "stream_bytes": len(blob), "psnr": float(np.mean(psnr)),
                 "lossless_fraction": float(np.mean(np.isinf(psnr))),
                 "max_abs_error": int(np.abs(recon.astype(int) - x_u8).max())})
  return rows


def interp_bytes(curve: list[dict], key: str, psnr: float) -> float | None:
  """JPEG's bytes (key) at `psnr`, log-linear between qualities; None outside."""
  pts = sorted((r["psnr"], np.log(r[key])) for r in curve)
  ps, lb = np.array([p for p, _ in pts]), np.array([b for _, b in pts])
  if not ps[0] <= psnr <= ps[-1]:
    return None
  return float(np.exp(np.interp(psnr, ps, lb)))


# Model families: name -> (work directory prefix, extra `train codec` flags).
FAMILIES = {
    "base": ("mnist-lam", []),   # the defaults: 784-512-256-32, 3 logistics
    "wide": ("mnist-wide-lam", ["--latent-dim", "64", "--hidden", "1024", "512"]),
}


def train_missing(args, lam: float, workdir: pathlib.Path, family: str) -> None:
  from unsupjax.models.codec import io as codec_io
  if (workdir / codec_io.BUNDLE_FILE).exists():
    return
  cmd = [sys.executable, "-m", "unsupjax", "train", "codec", "--dataset", "mnist",
         "--lambda", repr(lam), "--epochs", str(args.epochs), "--workdir", str(workdir),
         "--no-progress", *FAMILIES[family][1]]
  if args.data_dir:
    cmd += ["--data-dir", args.data_dir, "--no-download"]
  print("training:", " ".join(cmd), file=sys.stderr)
  subprocess.run(cmd, check=True)


def plot(path: str, codec_rows, jpeg_rows, png, n: int, residual_rows=()) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  import matplotlib.ticker  # noqa: F401
  bpp = lambda b: 8 * b / 784  # noqa: E731
  fig, ax = plt.subplots(figsize=(6.4, 4.4))
  for family, color, marker in (("base", "C0", "o"), ("wide", "C3", "^")):
    rows = [r for r in codec_rows if r["family"] == family]
    if not rows:
      continue
    ax.plot([bpp(r["file_bytes"]) for r in rows], [r["psnr"] for r in rows],
            marker + "-", color=color, label=f"learned codec ({family}), one file per image")
    ax.plot([bpp(r["payload_bytes"]) for r in rows], [r["psnr"] for r in rows],
            marker + "--", color=color, alpha=0.6,
            label=f"learned codec ({family}), one stream of all images")
  for family, color, marker in (("base", "C4", "D"), ("wide", "C5", "v")):
    rows = [r for r in residual_rows if r["family"] == family and np.isfinite(r["psnr"])]
    if rows:
      lam = rows[0]["lambda"]
      ax.plot([bpp(r["file_bytes"]) for r in rows], [r["psnr"] for r in rows],
              marker + "-", color=color,
              label=f"codec {family} {lam:g} + residual, one file per image")
    lossless = [r for r in residual_rows if r["family"] == family and r["step"] == 1]
    if lossless:
      ax.axvline(bpp(lossless[0]["file_bytes"]), color=color, ls=":",
                 label=f"codec {family} + residual step 1 (lossless) file")
  ax.plot([bpp(r["file_bytes"]) for r in jpeg_rows], [r["psnr"] for r in jpeg_rows],
          "s-", color="C1", label="JPEG file (Pillow, optimised)")
  ax.plot([bpp(r["payload_bytes"]) for r in jpeg_rows], [r["psnr"] for r in jpeg_rows],
          "s--", color="C1", alpha=0.6, label="JPEG entropy-coded data only")
  ax.axvline(bpp(png["file_bytes"]), color="C2", ls=":", label="PNG (lossless) file")
  ax.set_xscale("log")
  ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
  ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
  ax.set_xlabel("bits per pixel (log scale)")
  ax.set_ylabel("PSNR (dB), mean over images")
  ax.set_title(f"MNIST test split ({n:,} images, 28x28)")
  ax.grid(True, which="both", alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--data-dir", default=None)
  p.add_argument("--runs", default="runs/codec", help="root of the mnist-lamL work directories")
  p.add_argument("--lambdas", type=float, nargs="+",
                 default=[0.3, 0.1, 0.03, 0.01, 0.003, 0.001, 0.0001],
                 help="lambdas of the default model (work directories mnist-lamL)")
  p.add_argument("--wide-lambdas", type=float, nargs="*", default=[0.0003, 0.0001],
                 help="lambdas of the wide model: --latent-dim 64 --hidden 1024 512 "
                      "(work directories mnist-wide-lamL)")
  p.add_argument("--epochs", type=int, default=20, help="epochs for codecs trained here")
  p.add_argument("--residual-of", nargs="*", default=["base:0.01", "wide:0.0001"],
                 metavar="FAMILY:LAMBDA",
                 help="codecs also run with every residual step (their tables are "
                      "counted on the training split here if the bundle has none)")
  p.add_argument("--qualities", type=int, nargs="+", default=list(QUALITIES))
  p.add_argument("--limit", type=int, default=None, help="first N test images only")
  p.add_argument("--json", default=None)
  p.add_argument("--plot", default=None)
  args = p.parse_args()

  from unsupjax import data
  test = data.load("mnist", "test", data_dir=args.data_dir, download=False)
  x_u8 = np.round(test.x[..., 0] * 255).astype(np.uint8)[:args.limit]
  codec_rows = []
  for family, lams in (("base", args.lambdas), ("wide", args.wide_lambdas)):
    for lam in sorted(lams, reverse=True):
      wd = pathlib.Path(args.runs) / f"{FAMILIES[family][0]}{lam:g}"
      train_missing(args, lam, wd, family)
      codec_rows.append({"family": family, **bench_codec(wd, x_u8)})
  residual_rows = []
  if args.residual_of:
    train_x = data.load("mnist", "train", data_dir=args.data_dir, download=False).x
    for spec in args.residual_of:
      family, lam = spec.split(":")
      wd = pathlib.Path(args.runs) / f"{FAMILIES[family][0]}{float(lam):g}"
      train_missing(args, float(lam), wd, family)
      residual_rows += [{"family": family, **r} for r in bench_residual(wd, x_u8, train_x)]
  jpeg_rows = [{"quality": q, **bench_jpeg(x_u8, q)} for q in args.qualities]
  png = bench_png(x_u8)

  bpp = lambda b: 8 * b / 784  # noqa: E731
  rows = []
  for r in codec_rows:
    rows.append([f"codec {r['family']} lambda={r['lambda']:g}", f"{r['psnr']:.2f}",
                 f"{r['file_bytes']:.1f}",
                 f"{bpp(r['file_bytes']):.4f}", f"{r['payload_bytes']:.2f}",
                 f"{bpp(r['payload_bytes']):.4f}"])
  for r in residual_rows:
    rows.append([f"codec {r['family']} lambda={r['lambda']:g} + residual step {r['step']}",
                 "inf (lossless)" if r["step"] == 1 else f"{r['psnr']:.2f}",
                 f"{r['file_bytes']:.1f}", f"{bpp(r['file_bytes']):.4f}",
                 f"{r['payload_bytes']:.2f}", f"{bpp(r['payload_bytes']):.4f}"])
  for r in jpeg_rows:
    rows.append([f"JPEG q={r['quality']}", f"{r['psnr']:.2f}", f"{r['file_bytes']:.1f}",
                 f"{bpp(r['file_bytes']):.4f}", f"{r['payload_bytes']:.1f}",
                 f"{bpp(r['payload_bytes']):.4f}"])
  rows.append(["PNG (lossless)", "inf", f"{png['file_bytes']:.1f}",
               f"{bpp(png['file_bytes']):.4f}", "", ""])
  print(f"MNIST test split, {x_u8.shape[0]} images\n")
  print(_bench.markdown_table(
      ["method", "PSNR dB", "file bytes/image", "file bpp", "payload bytes/image",
       "payload bpp"], rows))

  eq_rows, equal = [], []
  for r in codec_rows + [r for r in residual_rows if r["step"] != 1]:
    f = interp_bytes(jpeg_rows, "file_bytes", r["psnr"])
    s = interp_bytes(jpeg_rows, "payload_bytes", r["psnr"])
    name = f"{r['family']} {r['lambda']:g}" + (f" + step {r['step']}" if "step" in r else "")
    equal.append({"family": r["family"], "lambda": r["lambda"], "step": r.get("step", 0),
                  "psnr": r["psnr"],
                  "jpeg_file_bytes": f,
                  "jpeg_payload_bytes": s,
                  "file_ratio": f / r["file_bytes"] if f else None,
                  "payload_ratio": s / r["payload_bytes"] if s else None})
    fmt = lambda v: "outside JPEG's range" if v is None else f"{v:.1f}"  # noqa: E731
    eq_rows.append([name, f"{r['psnr']:.2f}",
                    f"{r['file_bytes']:.1f}", fmt(f),
                    fmt(f / r["file_bytes"] if f else None), f"{r['payload_bytes']:.2f}", fmt(s),
                    fmt(s / r["payload_bytes"] if s else None)])
  print("\nAt equal PSNR (JPEG interpolated between qualities):\n")
  print(_bench.markdown_table(
      ["codec", "PSNR dB", "codec file B", "JPEG file B", "JPEG/codec (files)",
       "codec stream B/img", "JPEG scan B", "JPEG/codec (payloads)"], eq_rows))
  # Each JPEG quality against the smallest codec file of at least its PSNR
  # (lossless counts as infinite PSNR).
  dom_rows, dominance = [], []
  points = [(r["psnr"] if r.get("step") != 1 else float("inf"), r["file_bytes"],
             r["payload_bytes"],
             f"{r['family']} {r['lambda']:g}" + (f" + step {r['step']}" if "step" in r else ""))
            for r in codec_rows + residual_rows]
  for j in jpeg_rows:
    better = [pt for pt in points if pt[0] >= j["psnr"]]
    if not better:
      continue
    psnr, fb, pb, name = min(better, key=lambda pt: pt[1])
    dominance.append({"quality": j["quality"], "jpeg_psnr": j["psnr"], "codec": name,
                      "codec_psnr": psnr, "file_ratio": j["file_bytes"] / fb,
                      "payload_ratio": j["payload_bytes"] / pb})
    dom_rows.append([str(j["quality"]), f"{j['psnr']:.2f}", f"{j['file_bytes']:.1f}", name,
                     "inf (lossless)" if psnr == float("inf") else f"{psnr:.2f}",
                     f"{fb:.1f}", f"{j['file_bytes'] / fb:.1f}",
                     f"{j['payload_bytes'] / pb:.1f}"])
  print("\nEvery JPEG quality against the smallest codec file with at least its PSNR:\n")
  print(_bench.markdown_table(
      ["JPEG q", "JPEG PSNR dB", "JPEG file B", "codec", "codec PSNR dB", "codec file B",
       "JPEG/codec (files)", "JPEG/codec (payloads)"], dom_rows))
  lossless = [r for r in residual_rows if r["step"] == 1]
  if lossless:
    print("\nLossless (residual step 1) against PNG, file bytes per image:\n")
    print(_bench.markdown_table(
        ["codec", "images decoded exactly", "codec file B", "PNG file B", "PNG/codec",
         "codec stream B/img"],
        [[f"{r['family']} {r['lambda']:g}", f"{r['lossless_fraction']:.4f}",
          f"{r['file_bytes']:.1f}", f"{png['file_bytes']:.1f}",
          f"{png['file_bytes'] / r['file_bytes']:.2f}", f"{r['payload_bytes']:.2f}"]
         for r in lossless]))
  exact = all(r["round_trip_exact"] for r in codec_rows + residual_rows)
  print(f"\nround trip exact for every test image, lambda and residual step: {exact}")
  m = _bench.machine()
  print(f"machine: {m['cores']} cores, {m['cpu']}, JAX {m['jax']} {m['backend']}")
  if args.plot:
    plot(args.plot, codec_rows, jpeg_rows, png, int(x_u8.shape[0]), residual_rows)
  _bench.write_json(args.json, {"machine": m, "images": int(x_u8.shape[0]),
                                "codec": codec_rows, "residual": residual_rows,
                                "jpeg": jpeg_rows, "png": png,
                                "equal_psnr": equal, "jpeg_dominated": dominance,
                                "round_trip_exact": exact})


if __name__ == "__main__":
  main()
