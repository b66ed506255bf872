"""The learned codec: prior and tables against NumPy float64, exact round
trips (in this process and another), the container's checks, the CLI, and
the rate-distortion trade-off on digits."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

from conftest import cli_env
from unsupjax import cli, training
from unsupjax.models import codec
from unsupjax.models.codec import io as codec_io
from unsupjax.models.codec import residual

SMALL = dict(hidden=(64,), latent_dim=8)


def _fit(digits, lam, epochs=60, seed=0):
  tr, te = digits
  cfg = codec.CodecConfig(lam=lam, **SMALL)
  state = codec.init_state(jax.random.PRNGKey(seed), cfg, tr.flat()[:1], tr.image_shape)
  result = training.fit(state, codec.train_step, codec.eval_step, tr.flat(),
                        key=jax.random.PRNGKey(1), epochs=epochs, batch_size=64,
                        progress=False, log=lambda s: None)
  return result.state


@pytest.fixture(scope="session")
def sweep(digits):
  """States trained on digits for three lambdas (small model)."""
  return {lam: _fit(digits, lam) for lam in (0.001, 0.01, 0.1)}


@pytest.fixture(scope="session")
def model_dir(sweep, digits, tmp_path_factory):
  """A work directory holding the lambda = 0.01 codec's bundle, with
  residual tables counted on digits' training split."""
  wd = tmp_path_factory.mktemp("codec-model")
  codec_io.Codec.from_state(sweep[0.01]).with_residual(digits[0].x).save(
      wd / codec_io.BUNDLE_FILE)
  return wd


@pytest.fixture(scope="session")
def bundle(model_dir):
  return codec_io.Codec.load(model_dir / codec_io.BUNDLE_FILE)


def _np_likelihood(prior, v):
  """p(v) in float64 from the logistic mixture's closed form."""
  p = {k: np.asarray(a, np.float64) for k, a in prior.items()}
  w = special.softmax(p["logits"], axis=-1)
  s = np.log1p(np.exp(p["raw_scales"])) + codec.MIN_SCALE
  z = v[..., None] - p["means"]
  # Above the mean, 1 - expit(t) = expit(-t) keeps the right tail exact.
  right = special.expit(-(z - 0.5) / s) - special.expit(-(z + 0.5) / s)
  left = special.expit((z + 0.5) / s) - special.expit((z - 0.5) / s)
  return np.sum(w * np.where(z > 0, right, left), axis=-1)


def test_likelihood_against_float64_and_sums_to_one():
  rng = np.random.default_rng(0)
  prior = {"logits": rng.normal(size=(4, 3)).astype(np.float32),
           "means": rng.normal(0, 3, size=(4, 3)).astype(np.float32),
           "raw_scales": rng.normal(0, 1, size=(4, 3)).astype(np.float32)}
  v = rng.normal(0, 4, size=(50, 4)).astype(np.float32)
  got = np.asarray(codec.likelihood({k: jnp.asarray(a) for k, a in prior.items()}, jnp.asarray(v)))
  np.testing.assert_allclose(got, _np_likelihood(prior, v.astype(np.float64)), rtol=2e-5, atol=1e-7)
  # Far in a tail the stable form keeps relative precision.
  far = np.full((1, 4), 40.0, np.float32)
  got_far = np.asarray(codec.likelihood(prior, jnp.asarray(far)))
  np.testing.assert_allclose(got_far, _np_likelihood(prior, far.astype(np.float64)), rtol=1e-3)
  ints = np.arange(-200, 201, dtype=np.float64)[:, None].repeat(4, 1)
  np.testing.assert_allclose(_np_likelihood(prior, ints).sum(0), 1.0, atol=1e-9)
  np.testing.assert_allclose(np.asarray(codec.rate_bits(prior, jnp.asarray(v))),
                             -np.log2(_np_likelihood(prior, v.astype(np.float64))).sum(1),
                             rtol=1e-4)


def test_train_step_loss_against_numpy(digits):
  """The step's rate and distortion, recomputed in float64 from the same noise."""
  x = digits[0].flat()[:32]
  cfg = codec.CodecConfig(lam=0.05, **SMALL)
  state = codec.init_state(jax.random.PRNGKey(3), cfg, x[:1], (8, 8, 1))
  key = jax.random.PRNGKey(4)
  new, metrics = jax.jit(codec.train_step)(state, x, key)
  assert int(new.step) == 1
  net = {"params": state.params["net"]}
  encode = jax.jit(lambda v: state.model.apply(net, v, method="encode"))
  decode = jax.jit(lambda v: state.model.apply(net, v, method="decode"))
  y = np.asarray(encode(x), np.float64)
  u = np.asarray(jax.random.uniform(jax.random.fold_in(key, 0), y.shape, jnp.float32, -0.5, 0.5))
  logits = decode(jnp.asarray(y + u, jnp.float32))
  mse = np.mean((special.expit(np.asarray(logits, np.float64)) - x) ** 2, axis=1)
  p = np.maximum(_np_likelihood(jax.device_get(state.params["prior"]), y + u),
                 codec.LIKELIHOOD_FLOOR)
  bpp = -np.log2(p).sum(1) / 64
  np.testing.assert_allclose(metrics["mse"], mse.mean(), rtol=1e-4)
  np.testing.assert_allclose(metrics["bpp"], bpp.mean(), rtol=1e-4)
  np.testing.assert_allclose(metrics["loss"], mse.mean() + 0.05 * bpp.mean(), rtol=1e-4)


def test_quantise_pmf_is_exact_and_deterministic():
  rng = np.random.default_rng(1)
  pmf = rng.dirichlet(np.full(37, 0.3))
  freq = codec.quantise_pmf(pmf)
  assert freq.dtype == np.uint32 and freq.sum() == 2**codec.FREQ_BITS and freq.min() >= 1
  np.testing.assert_array_equal(freq, codec.quantise_pmf(pmf.copy()))
  # Each frequency is within one count of its share of the free mass.
  big = int(np.argmax(pmf))
  others = np.delete(np.arange(37), big)
  ideal = 1 + pmf * (2**codec.FREQ_BITS - 37)
  assert np.all(np.abs(freq[others] - ideal[others]) < 1)


def test_tables_follow_the_prior(sweep):
  prior = jax.device_get(sweep[0.01].params["prior"])
  t = codec.build_tables(prior)
  d = prior["means"].shape[0]
  assert t.lo.shape == t.width.shape == (d,) and t.freq.shape == (d, t.width.max())
  for j in range(d):
    w = int(t.width[j])
    assert t.freq[j, :w].sum() == 2**codec.FREQ_BITS and t.freq[j, :w].min() >= 1
    assert np.all(t.freq[j, w:] == 0)
    # The support holds all but a sliver of the prior's mass.
    inside = _np_likelihood({k: v[j:j + 1] for k, v in prior.items()},
                            np.arange(t.lo[j], t.hi[j] + 1, dtype=np.float64)[:, None])[:, 0]
    assert inside.sum() > 1 - 1e-6
    # Table code lengths match -log2 p where p is not tiny (frequencies are
    # within about one count of p * 2**16).
    ok = inside > 1e-2
    table_bits = codec.FREQ_BITS - np.log2(t.freq[j, :w].astype(np.float64))
    np.testing.assert_allclose(table_bits[ok], -np.log2(inside[ok]), atol=0.01)
  # A very wide prior is cut to MAX_SUPPORT symbols around its bulk.
  wide = {k: v[:1].copy() for k, v in prior.items()}
  wide["raw_scales"][:] = 2000.0
  tw = codec.build_tables(wide)
  assert tw.width[0] == codec.MAX_SUPPORT and tw.freq[0].sum() == 2**codec.FREQ_BITS
  assert tw.lo[0] <= wide["means"][0].min() and tw.hi[0] >= wide["means"][0].max()
  # Computed twice, the same integers.
  t2 = codec.build_tables(prior)
  for a, b in zip(t, t2):
    np.testing.assert_array_equal(a, b)


def test_quantise_rounds_and_clamps(bundle):
  t = bundle.tables
  y = np.stack([t.lo - 100.7, t.hi + 55.2, t.lo + 0.49, t.hi - 0.51]).astype(np.float32)
  q = codec.quantise(y, t)
  np.testing.assert_array_equal(q, np.stack([t.lo, t.hi, t.lo, t.hi - 1]))
  with pytest.raises(ValueError, match="y: expected latents of shape"):
    codec.quantise(y[:, :3], t)


def test_entropy_coding_round_trip_covers_the_support(bundle):
  t = bundle.tables
  rng = np.random.default_rng(2)
  q = rng.integers(t.lo, t.hi + 1, size=(300, t.lo.shape[0])).astype(np.int32)
  q[0], q[1] = t.lo, t.hi              # the clamped extremes
  payload = codec_io.entropy_encode(q, t)
  np.testing.assert_array_equal(codec_io.entropy_decode(payload, 300, t), q)
  with pytest.raises(ValueError, match="outside the tables' support"):
    codec_io.entropy_encode(q + (t.width + 5), t)


def test_round_trip_exact_and_size_near_the_ideal(bundle, digits):
  x = digits[1].x
  q = bundle.quantise(x)
  blob = codec_io.compress(bundle, x)
  header, q_back = codec_io.decode_latents(bundle, blob)
  np.testing.assert_array_equal(q_back, q)
  assert q_back.dtype == np.int32
  assert (header.n, header.shape, header.kind) == (x.shape[0], (8, 8, 1), codec_io.KIND_STACK)
  ideal = bundle.tables.bits(q).sum()
  payload_bits = 8 * (len(blob) - codec_io.HEADER.size)
  assert ideal - 32 <= payload_bits <= ideal + 0.01 * ideal + 96
  # The decoded images are the decoder's output on exactly those integers.
  _, images = codec_io.decompress(bundle, blob)
  state_recon = bundle.reconstruct(q)
  np.testing.assert_array_equal(images, state_recon)


def test_another_process_decodes_what_this_one_coded(model_dir, bundle, digits, tmp_path,
                                                    capsys):
  """Compress here (the CLI, in this process): a stack, latents only, and a
  PNG with --residual-step 1. A fresh process decodes the stack's latents
  and decompresses the PNG (the CLI): the same integers, bit for bit, as
  this process's, and the original PNG back."""
  from PIL import Image
  wd = str(model_dir)
  x = digits[1].x[:50]
  src = tmp_path / "in.npy"
  np.save(src, (x[..., 0] * 255).round().astype(np.uint8))
  assert cli.main(["compress", "--model", wd, str(src), str(tmp_path / "c.ujx")]) == 0
  img = (digits[1].x[7, ..., 0] * 255).round().astype(np.uint8)
  Image.fromarray(img).save(tmp_path / "d.png")
  assert cli.main(["compress", "--model", wd, "--residual-step", "1", str(tmp_path / "d.png"),
                   str(tmp_path / "d.ujx")]) == 0
  assert "residual step 1" in capsys.readouterr().out
  code = ("import sys, numpy as np; from unsupjax import cli; "
          "from unsupjax.models.codec import io; "
          "c = io.Codec.load(sys.argv[1] + '/' + io.BUNDLE_FILE); "
          "h, q = io.decode_latents(c, open(sys.argv[2], 'rb').read()); np.save(sys.argv[3], q); "
          "sys.exit(cli.main(['decompress', '--model', sys.argv[1], sys.argv[4], sys.argv[5]]))")
  dec = subprocess.run([sys.executable, "-c", code, wd, "c.ujx", "q.npy", "d.ujx", "o.png"],
                       cwd=tmp_path, env=cli_env(tmp_path), capture_output=True, text=True,
                       timeout=300)
  assert dec.returncode == 0, dec.stderr
  x_u8 = np.load(src).astype(np.float32)[..., None] / np.float32(255.0)
  np.testing.assert_array_equal(np.load(tmp_path / "q.npy"), bundle.quantise(x_u8))
  assert (tmp_path / "c.ujx").read_bytes() == codec_io.compress(bundle, x_u8)
  np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "o.png")), img)


def test_outputs_never_replace_a_file_unless_asked(model_dir, digits, tmp_path, capsys):
  """`compress a.png a.png` (or through a link) and an existing OUT are
  refused with one line and exit 2, leaving every file as it was;
  --overwrite replaces OUT, atomically (no temporary file is left)."""
  from PIL import Image
  wd = str(model_dir)
  a = tmp_path / "a.png"
  Image.fromarray((digits[1].x[0, ..., 0] * 255).round().astype(np.uint8)).save(a)
  before = a.read_bytes()
  os.symlink(a, tmp_path / "link.png")
  for out in (a, tmp_path / "link.png"):
    assert cli.main(["compress", "--model", wd, str(a), str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "OUT: " in err, err
    assert "is the input file IN" in err and "--overwrite" in err, err
    assert a.read_bytes() == before
  c, o = tmp_path / "c.ujx", tmp_path / "o.png"
  c.write_bytes(b"precious")
  o.write_bytes(b"precious too")
  assert cli.main(["compress", "--model", wd, str(a), str(c)]) == 2
  assert "exists; choose another path, or pass --overwrite" in capsys.readouterr().err
  assert c.read_bytes() == b"precious"
  assert cli.main(["compress", "--model", wd, "--overwrite", str(a), str(c)]) == 0
  assert codec_io.parse(c.read_bytes()).kind == codec_io.KIND_IMAGE
  assert cli.main(["decompress", "--model", wd, str(c), str(o)]) == 2
  assert "exists" in capsys.readouterr().err and o.read_bytes() == b"precious too"
  assert cli.main(["decompress", "--model", wd, "--overwrite", str(c), str(o)]) == 0
  assert np.asarray(Image.open(o)).shape == (8, 8)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "c.ujx", "link.png", "o.png"]
  assert a.read_bytes() == before
  assert cli.main(["compress", str(a), str(tmp_path / "x.ujx")]) == 2
  assert "--model: expected a directory written by" in capsys.readouterr().err


def test_cli_png_round_trip_and_stack_to_npy(model_dir, bundle, digits, tmp_path, capsys):
  from PIL import Image
  img = (digits[1].x[3, ..., 0] * 255).round().astype(np.uint8)
  Image.fromarray(img).save(tmp_path / "d.png")
  wd = str(model_dir)

  def run(cmd, src, dst):
    return cli.main([cmd, "--model", wd, str(tmp_path / src), str(tmp_path / dst)])

  assert run("compress", "d.png", "d.ujx") == 0
  blob = (tmp_path / "d.ujx").read_bytes()
  assert codec_io.parse(blob).kind == codec_io.KIND_IMAGE
  assert run("decompress", "d.ujx", "o.png") == 0
  got = np.asarray(Image.open(tmp_path / "o.png"))
  x = img.astype(np.float32)[None, ..., None] / np.float32(255.0)
  want = codec_io.to_uint8(bundle.reconstruct(bundle.quantise(x))[0, ..., 0])
  np.testing.assert_array_equal(got, want)
  # A stack goes to .npy, not to .png.
  np.save(tmp_path / "s.npy", digits[1].x[:5])
  assert run("compress", "s.npy", "s.ujx") == 0
  assert run("decompress", "s.ujx", "s.png") == 2
  assert "decodes to .npy" in capsys.readouterr().err
  assert not (tmp_path / "s.png").exists()
  assert run("decompress", "s.ujx", "s.npy") == 2      # the stack it came from
  assert "OUT: " in capsys.readouterr().err
  np.testing.assert_array_equal(np.load(tmp_path / "s.npy"), digits[1].x[:5])
  assert run("decompress", "s.ujx", "t.npy") == 0
  stack = np.load(tmp_path / "t.npy")
  assert stack.shape == (5, 8, 8, 1) and stack.dtype == np.float32


def _reseal(blob: bytes, **fields) -> bytes:
  """blob with header fields replaced and a valid CRC (so a later check fires)."""
  import struct
  import zlib
  vals = list(codec_io.HEADER.unpack_from(blob))
  names = ["magic", "version", "kind", "model_id", "n", "h", "w", "c", "step", "size", "crc"]
  for k, v in fields.items():
    vals[names.index(k)] = v
  head = codec_io.HEADER.pack(*vals)[:28]
  payload = blob[codec_io.HEADER.size:]
  return head + struct.pack("<I", zlib.crc32(payload, zlib.crc32(head))) + payload


@pytest.fixture(scope="session")
def stack_blob(bundle, digits):
  return codec_io.compress(bundle, digits[1].x[:20])


@pytest.mark.parametrize("mutate, message", [
    (lambda b: b"GIF89a" + b[6:], "not an unsupjax codec file"),
    (lambda b: b"", "not an unsupjax codec file"),
    (lambda b: b[:20], "truncated: 20 bytes, shorter than the 32-byte header"),
    (lambda b: _reseal(b, version=3), "format version 3 is not supported"),
    (lambda b: _reseal(b, version=2), "corrupt header (version 2, residual step 0)"),
    (lambda b: _reseal(b, step=5), "corrupt header (version 1, residual step 5)"),
    (lambda b: _reseal(b, version=2, step=7), "coded with residual step 7, which"),
    (lambda b: _reseal(b, model_id=b"\x01" * 8), "compressed by model 0101010101010101"),
    (lambda b: b[:-3], "truncated: the header announces"),
    (lambda b: b + b"\x00", "unexpected bytes after"),
    (lambda b: b[:40] + bytes([b[40] ^ 0x10]) + b[41:], "corrupt: CRC-32 mismatch"),
    (lambda b: b[:14] + b"\x15" + b[15:], "corrupt: CRC-32 mismatch"),     # n changed
    (lambda b: _reseal(b, h=9), "holds (9, 8, 1) images"),
    (lambda b: _reseal(b, kind=7), "corrupt header"),
])
def test_bad_containers_are_refused(bundle, stack_blob, mutate, message):
  with pytest.raises(codec_io.CodecFormatError, match="input: .*" + _re(message)):
    codec_io.decode_latents(bundle, mutate(stack_blob))


def _re(s):
  import re
  return re.escape(s)


@pytest.mark.parametrize("mutate, message", [
    (lambda b: b[:-4], "IN: truncated"),
    (lambda b: b[:33] + bytes([b[33] ^ 1]) + b[34:], "IN: corrupt"),
    (lambda b: b"\x89PNG" + b[4:], "IN: not an unsupjax codec file"),
    (lambda b: _reseal(b, version=9), "IN: format version 9"),
    (lambda b: _reseal(b, model_id=b"\xab" * 8), "IN: compressed by model abababababababab"),
])
def test_cli_bad_input_leaves_no_output(model_dir, stack_blob, tmp_path, capsys, mutate, message):
  src, out = tmp_path / "bad.ujx", tmp_path / "out.npy"
  src.write_bytes(mutate(stack_blob))
  assert cli.main(["decompress", "--model", str(model_dir), str(src), str(out)]) == 2
  err = capsys.readouterr().err.strip()
  assert message in err and len(err.splitlines()) == 1
  assert list(tmp_path.iterdir()) == [src]


def test_foreign_model_and_bad_bundle(sweep, bundle, stack_blob, tmp_path, capsys):
  other = codec_io.Codec.from_state(sweep[0.1])
  assert other.model_id != bundle.model_id
  with pytest.raises(codec_io.CodecFormatError, match="compressed by model"):
    codec_io.decode_latents(other, stack_blob)
  # A bundle whose arrays were altered no longer matches its recorded id.
  path = tmp_path / codec_io.BUNDLE_FILE
  bundle.save(path)
  with np.load(path) as z:
    arrays = {k: z[k] for k in z.files}
  arrays["freq"] = arrays["freq"].copy()
  arrays["freq"][0, 0] += 1
  np.savez(path, **arrays)
  with pytest.raises(codec_io.CodecFormatError, match="do not match its model id"):
    codec_io.Codec.load(path)
  path.write_bytes(path.read_bytes()[:100])
  with pytest.raises(codec_io.CodecFormatError, match="not a codec bundle"):
    codec_io.Codec.load(path)
  assert cli.main(["compress", "--model", str(tmp_path / "nowhere"), "a.png", "b"]) == 2
  err = capsys.readouterr().err
  assert "--model: expected a directory written by `unsupjax train codec`" in err


def test_bad_images_are_refused_before_writing(model_dir, tmp_path, capsys):
  from PIL import Image
  Image.fromarray(np.zeros((9, 8), np.uint8)).save(tmp_path / "big.png")
  Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "rgb.png")
  np.save(tmp_path / "neg.npy", -np.ones((2, 8, 8), np.float32))
  (tmp_path / "junk.png").write_bytes(b"not a png")
  for name, message in [("big.png", "expected a 8x8 image"), ("rgb.png", "got mode RGB"),
                        ("neg.npy", "values in [0, 1]"), ("junk.png", "not a readable image"),
                        ("missing.png", "no such file")]:
    assert cli.main(["compress", "--model", str(model_dir), str(tmp_path / name),
                     str(tmp_path / "o.ujx")]) == 2
    assert "IN: " in (err := capsys.readouterr().err) and message in err, err
    assert not (tmp_path / "o.ujx").exists()


def test_rate_falls_and_distortion_rises_as_lambda_grows(sweep, digits):
  """Prior rate, real coded bytes and PSNR on digits' test split, per lambda."""
  x = digits[1].x
  rows = []
  for lam in sorted(sweep):
    ev = training.evaluate(sweep[lam], codec.eval_step, digits[1].flat())
    c = codec_io.Codec.from_state(sweep[lam])
    rows.append((lam, ev["bpp"], len(codec_io.compress(c, x)), ev["psnr"]))
  bpp, size, psnr = (np.array([r[i] for r in rows]) for i in (1, 2, 3))
  assert np.all(np.diff(bpp) < 0) and np.all(np.diff(size) < 0), rows
  # Quality falls with the rate (the two smaller lambdas are within a few
  # hundredths of a dB on this small model, so allow 0.1 dB between neighbours).
  assert np.all(np.diff(psnr) < 0.1) and psnr[0] > psnr[-1] + 1.0, rows
  assert bpp[0] > 1.5 * bpp[-1], rows
  # The codec learns something: better than coding the mean image.
  mean_psnr = 10 * np.log10(1 / np.mean((x - digits[0].x.mean(0)) ** 2))
  assert psnr[-1] > mean_psnr + 2, (rows, mean_psnr)


def test_train_cli_leaves_a_bundle_and_summary(tmp_path, capsys):
  wd = tmp_path / "run"
  args = ["train", "codec", "--epochs", "3", "--hidden", "32", "--latent-dim", "4",
          "--lambda", "0.02", "--no-progress", "--no-compile-cache"]
  assert cli.main([*args, "--workdir", str(wd)]) == 0
  summary = json.loads((wd / "summary.json").read_text())
  c = codec_io.Codec.load(wd / codec_io.BUNDLE_FILE)
  assert summary["model_id"] == c.model_id.hex()
  assert summary["config"]["lam"] == 0.02 and c.config.lam == 0.02
  assert summary["steps"] == 3 * (1437 // 256)
  for key in ("test_bpp", "test_psnr", "test_coded_stream_bpp", "test_coded_file_bytes",
              "test_coded_psnr"):
    assert np.isfinite(summary[key]), key
  assert summary["test_coded_stream_bytes"] == pytest.approx(
      summary["test_coded_stream_bpp"] * 360 * 64 / 8)
  # The coder spends about what the prior prices (header and flush aside).
  assert summary["test_coded_ideal_bpp"] == pytest.approx(summary["test_bpp"], rel=1e-3)
  # The residual tables were counted, and the summary prices every step.
  assert sorted(c.residual) == list(codec.RESIDUAL_STEPS)
  res = summary["test_coded_residual"]
  assert sorted(int(k) for k in res) == list(codec.RESIDUAL_STEPS)
  assert res["1"]["lossless_fraction"] == 1.0 and res["1"]["max_abs_error"] == 0
  assert all(res[str(s)]["max_abs_error"] <= (s - 1) // 2 for s in codec.RESIDUAL_STEPS)
  bpp = [res[str(s)]["stream_bpp"] for s in codec.RESIDUAL_STEPS]
  assert np.all(np.diff(bpp) < 0) and bpp[-1] > summary["test_coded_stream_bpp"]
  assert (wd / "reconstructions.png").exists()
  # `unsupjax evaluate` re-opens the run from its files: the checkpoint's
  # bundle is the saved one, byte for byte.
  assert cli.main(["evaluate", str(wd)]) == 0
  ev = json.loads((wd / "eval.json").read_text())
  assert ev["model_id"] == summary["model_id"]
  assert ev["test_bpp"] == pytest.approx(summary["test_bpp"], rel=1e-6)
  assert ev["test_coded_stream_bytes"] == summary["test_coded_stream_bytes"]
  # --parallel pmap on one device: accepted, and the same run.
  assert cli.main([*args, "--workdir", str(tmp_path / "pmap"), "--parallel", "pmap"]) == 0
  pm = json.loads((tmp_path / "pmap" / "summary.json").read_text())
  assert pm["steps"] == summary["steps"]
  for key in ("train_loss", "test_bpp", "test_mse"):
    assert pm[key] == pytest.approx(summary[key], rel=1e-5), key
  capsys.readouterr()
  # Bad flags: one line, exit 2, before anything is trained.
  for bad, message in [
      (["--lambda", "-1", "--workdir", str(wd)], "--lambda: expected a positive number, got -1.0"),
      (["--parallel", "pmap", "--model-axis", "2", "--workdir", str(tmp_path / "x")],
       "--model-axis: expected 1"),
      (["--workdir", str(wd)], "already holds a run of codec")]:
    assert cli.main([*args, *bad]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
  assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------ residual


def test_residual_quantiser_is_the_nearest_level():
  """For every 8-bit value and base and every step: r rounds (x - b) / step
  to the nearest integer (float reference; no ties, the step is odd) and
  lies in its base's support, the decoded pixel clip(b + step r) is within
  (step - 1) / 2 of x, and step 1 is exact."""
  x, b = (a.ravel() for a in np.meshgrid(np.arange(256), np.arange(256)))
  for step in codec.RESIDUAL_STEPS:
    r = codec.residual_symbols(x, b, step)
    np.testing.assert_array_equal(r, np.round((x - b) / step))
    lo, width = codec.residual_support(step)
    assert np.all(r >= lo[b]) and np.all(r < lo[b] + width[b]) and width.min() >= 2
    for v in range(256):   # the support is exactly the r that some x reaches
      assert set(r[b == v]) == set(range(lo[v], lo[v] + width[v]))
    got = codec.residual_pixels(b, r, step).astype(int)
    np.testing.assert_array_equal(got, np.clip(b + step * np.round((x - b) / step), 0, 255))
    assert np.abs(got - x).max() <= (step - 1) // 2
  np.testing.assert_array_equal(codec.residual_pixels(b, codec.residual_symbols(x, b, 1), 1), x)
  for bad in (0, 2, 256, -1, 1.0, True):
    with pytest.raises(ValueError, match="step: expected an odd integer in"):
      codec.residual_symbols(x, b, bad)


def test_residual_tables_follow_the_counts():
  rng = np.random.default_rng(0)
  step, n = 5, 6000
  lo, width = codec.residual_support(step)
  # Base 0: residual always 0; base 100: spread over -2..2; base 255: mostly
  # 0, else the lowest symbol (-51).
  base = np.repeat(np.array([0, 100, 255]), n).astype(np.uint8)
  r = np.concatenate([np.zeros(n, int), rng.integers(-2, 3, n),
                      np.where(rng.uniform(size=n) < 0.9, 0, -51)])
  t = codec.build_residual_tables(r, base, step)
  np.testing.assert_array_equal(t.lo, lo)
  np.testing.assert_array_equal(t.width, width)
  assert t.freq.shape == (256, width.max())
  for b in range(256):
    f = t.freq[b, :width[b]]
    assert f.sum() == 2**codec.FREQ_BITS and f.min() >= 1 and not t.freq[b, width[b]:].any()
  # Each context's probabilities are its counts + 1/2, to within the quantisation.
  for b in (0, 100, 255):
    counts = np.bincount(r[base == b] - lo[b], minlength=width[b]) + 0.5
    np.testing.assert_allclose(t.freq[b, :width[b]] / 2**codec.FREQ_BITS,
                               counts / counts.sum(),
                               atol=(width[b] + 1) / 2**codec.FREQ_BITS)
  # Coding the training symbols costs their cross-entropy under counts + 1/2.
  xent = 0.0
  for b in (0, 100, 255):
    c = np.bincount(r[base == b] - lo[b], minlength=width[b])
    xent += -np.sum(c * np.log2((c + 0.5) / (n + 0.5 * width[b])))
  assert codec.residual_bits(t, r, base) == pytest.approx(xent, rel=1e-3)
  with pytest.raises(ValueError, match="outside the support"):
    codec.build_residual_tables(r + 60, base, step)


def test_logit_thresholds_are_unambiguous_and_round_the_sigmoid():
  """2^F logit((k - 1/2) / 255) is never within 1e-6 of an integer (so the
  ceilings do not depend on the last bits of log), and thresholding a
  fixed-point logit equals round(255 sigmoid) computed in float64."""
  k = np.arange(1, 256, dtype=np.float64)
  v = np.log((2 * k - 1) / (511 - 2 * k)) * 2.0**codec.FIXED_POINT_BITS
  assert v[127] == 0.0                      # log(1), exact in IEEE arithmetic
  assert np.min(np.abs(np.delete(v, 127) - np.round(np.delete(v, 127)))) > 1e-6
  z = np.random.default_rng(0).integers(-12 * 2**16, 12 * 2**16, 200000).astype(np.float64)
  got = np.searchsorted(codec.logit_thresholds(), z, side="right")
  want = np.floor(255 * special.expit(z / 2.0**codec.FIXED_POINT_BITS) + 0.5)
  np.testing.assert_array_equal(got, want)


def test_integer_base_is_exact_and_close_to_the_float_decoder(bundle, digits):
  """The fixed-point decoder equals a pure int64 evaluation of the same
  arithmetic, and the float decoder's picture rounded to 8 bits almost
  everywhere (never more than one level apart)."""
  q = bundle.quantise(digits[1].x)
  layers = codec.integer_decoder(bundle.params["net"])
  base = codec.integer_base(layers, q)
  a = q.astype(np.int64)
  for i, (w, b) in enumerate(layers):
    z = a @ w.astype(np.int64)
    z = (z if i == 0 else z >> codec.FIXED_POINT_BITS) + b.astype(np.int64)
    a = np.maximum(z, 0) if i < len(layers) - 1 else z
  np.testing.assert_array_equal(base, np.searchsorted(codec.logit_thresholds(), a, side="right"))
  np.testing.assert_array_equal(bundle.base_pixels(q), base)
  ref = codec_io.to_uint8(bundle.reconstruct(q)).reshape(base.shape).astype(int)
  assert np.abs(base - ref).max() <= 1 and np.mean(base != ref) < 5e-3
  # Past 2^52 the products go through int64, still exactly.
  big = np.array([[2.0**40, 3.0]]), np.array([[2.0**13 + 1], [5.0]])
  assert residual._exact_matmul(*big)[0, 0] == 2**40 * (2**13 + 1) + 15


def test_residual_round_trip_bounds_and_rates(bundle, digits):
  """Every step: the residual symbols decode exactly, every pixel is within
  (step - 1) / 2 of the 8-bit original (exact at step 1), and the coded
  size falls as the step grows; latents-only files keep the version-1
  layout."""
  x = digits[1].x
  x_u8 = codec_io.to_uint8(x)
  assert sorted(bundle.residual) == list(codec.RESIDUAL_STEPS)
  lossy = codec_io.compress(bundle, x)
  assert lossy[4] == 1 and lossy[23] == 0
  sizes = []
  for step in codec.RESIDUAL_STEPS:
    blob = codec_io.compress(bundle, x, residual_step=step)
    assert blob[4] == 2 and blob[23] == step
    header, q, r = codec_io.decode_symbols(bundle, blob)
    np.testing.assert_array_equal(q, bundle.quantise(x))
    base = bundle.base_pixels(q)
    np.testing.assert_array_equal(r, codec.residual_symbols(x_u8.reshape(len(x), -1), base, step))
    header, images = codec_io.decompress(bundle, blob)
    assert header.residual_step == step
    err = np.abs(codec_io.to_uint8(images).astype(int) - x_u8)
    assert err.max() <= (step - 1) // 2
    np.testing.assert_array_equal(images, codec_io.to_uint8(images) / np.float32(255))
    sizes.append(len(blob))
  assert err.max() > 0 and np.all(np.diff(sizes) < 0) and sizes[-1] > len(lossy), sizes
  # The residual's coded size is close to its ideal code length.
  base = bundle.base_pixels(bundle.quantise(x))
  r1 = codec.residual_symbols(x_u8.reshape(len(x), -1), base, 1)
  ideal = (bundle.tables.bits(bundle.quantise(x)).sum() +
           codec.residual_bits(bundle.residual[1], r1, base))
  assert ideal - 32 <= 8 * (sizes[0] - 32) <= 1.01 * ideal + 96


def test_residual_steps_are_checked_before_work(sweep, bundle, model_dir, digits, tmp_path,
                                                capsys):
  x = digits[1].x[:3]
  with pytest.raises(ValueError, match=r"residual_step: expected 0 \(none\) or one of"):
    codec_io.compress(bundle, x, residual_step=7)
  plain = codec_io.Codec.from_state(sweep[0.01])
  with pytest.raises(ValueError, match="residual_step: this model has no residual tables"):
    codec_io.compress(plain, x, residual_step=1)
  # A file with a residual cannot be decoded by a model without its tables.
  blob = codec_io.compress(bundle, x, residual_step=3)
  stripped = codec_io.Codec(config=bundle.config, image_shape=bundle.image_shape,
                            params=bundle.params, tables=bundle.tables,
                            residual={1: bundle.residual[1]})
  with pytest.raises(codec_io.CodecFormatError, match="compressed by model"):
    codec_io.decode_symbols(stripped, blob)
  # Bundles without residual tables still save and load (format 1).
  path = tmp_path / codec_io.BUNDLE_FILE
  plain.save(path)
  back = codec_io.Codec.load(path)
  assert back.residual == {} and back.model_id == plain.model_id
  np.save(tmp_path / "s.npy", x)
  assert cli.main(["compress", "--model", str(tmp_path), "--residual-step", "1",
                   str(tmp_path / "s.npy"), str(tmp_path / "s.ujx")]) == 2
  assert "--residual-step: this model has no residual tables" in capsys.readouterr().err
  assert not (tmp_path / "s.ujx").exists()
  assert cli.main(["compress", "--model", str(model_dir), "--residual-step", "2",
                   str(tmp_path / "s.npy"), str(tmp_path / "s.ujx")]) == 2
  assert "--residual-step: expected 0 (none) or one of" in capsys.readouterr().err
  assert not (tmp_path / "s.ujx").exists()
