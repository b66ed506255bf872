"""benchmarks/accelerator.py end to end at --tiny sizes on the CPU.

The script is loaded as a module and its main(argv) called in this process
(cheaper than a subprocess: JAX is imported once). Its numbers are not
checked here, only that every part ran and reported what it should:
performance is measured by the script, not asserted by tests.
"""

import importlib.util
import json
import math
import sys

import numpy as np
import pytest

from conftest import REPO, shared_mnist_dir

PARTS = ["ae", "vae", "kmeans"]


@pytest.fixture(scope="module")
def accelerator():
  spec = importlib.util.spec_from_file_location("accelerator_script",
                                                REPO / "benchmarks" / "accelerator.py")
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module     # dataclasses look their module up
  spec.loader.exec_module(module)
  yield module
  sys.modules.pop(spec.name, None)


def test_tiny_run_reports_every_part_and_resumes(accelerator, tmp_path):
  out = tmp_path / "out"
  argv = ["--tiny", "--out", str(out), "--parts", ",".join(PARTS),
          "--data-dir", str(shared_mnist_dir())]
  assert accelerator.main(argv) == 0

  results = json.loads((out / "results.json").read_text())
  assert results["tiny"] is True
  assert set(results["parts"]) == set(PARTS)
  for name in PARTS:
    assert results["parts"][name]["status"] == "done", results["parts"][name]
  peaks = results["invocations"][0]["peaks"]
  assert {"f32", "f32_highest", "bf16"} <= set(peaks)
  for name in ("ae", "vae"):
    r = results["parts"][name]
    for key in ("compile_seconds", "first_epoch_seconds", "median_epoch_seconds",
                "flops_per_epoch", "achieved_flops", "pct_f32_peak", "pct_bf16_peak"):
      assert math.isfinite(r[key]) and r[key] > 0, (name, key, r[key])
  assert math.isfinite(results["parts"]["ae"]["test_mse"])
  assert 0 < results["parts"]["vae"]["test_neg_elbo"] < 800   # nats; 543 = 784 ln 2
  cases = results["parts"]["kmeans"]["cases"]
  assert set(cases) == {c[0] for c in accelerator.TINY.kmeans_cases}
  for c in cases.values():
    for key in ("sklearn_s_per_iter", "unsupjax_s_per_iter", "speedup", "inertia_rel_diff"):
      assert key in c
    assert 0.0 <= c["label_agreement"] <= 1.0
    assert abs(c["inertia_rel_diff"]) < 1e-3   # same init, same iterations

  table = (out / "results.md").read_text()
  for name in PARTS:
    assert sum(line.startswith(f"| {name} | done |") for line in table.splitlines()) == 1

  # A rerun into the same folder skips every finished part.
  assert accelerator.main(argv) == 0
  again = json.loads((out / "results.json").read_text())
  assert len(again["invocations"]) == 2
  for name in PARTS:
    assert again["parts"][name] == results["parts"][name]


def test_mnist_npz_feeds_the_script_and_the_library_loader(accelerator, tmp_path):
  """--mnist-npz (a machine without TFDS): the arrays are used as given, and
  unsupjax.data.load finds them in its cache under the returned directory."""
  from unsupjax import data
  rng = np.random.default_rng(0)
  npz = tmp_path / "mnist.npz"
  xtr = rng.integers(0, 256, (300, 28, 28), dtype=np.uint8)
  xte = rng.integers(0, 256, (40, 28, 28), dtype=np.uint8)
  np.savez(npz, xtr=xtr, xte=xte, ytr=np.zeros(300, np.int64), yte=np.ones(40, np.int64))

  data_dir = accelerator.seed_loader_cache(str(npz))
  test = data.load("mnist", "test", data_dir=data_dir, download=False)
  np.testing.assert_allclose(test.x[..., 0] * 255, xte, atol=1e-3)
  np.testing.assert_array_equal(test.y, np.ones(40))

  out = tmp_path / "out"
  assert accelerator.main(["--tiny", "--out", str(out), "--parts", "ae",
                           "--mnist-npz", str(npz)]) == 0
  ae = json.loads((out / "results.json").read_text())["parts"]["ae"]
  assert ae["status"] == "done"
  assert (ae["train_examples"], ae["test_examples"]) == (300, 40)


def test_mixing_tiny_and_full_runs_in_one_folder_is_refused(accelerator, tmp_path, capsys):
  (tmp_path / "results.json").write_text(json.dumps({"tiny": True, "invocations": [],
                                                     "parts": {}}))
  assert accelerator.main(["--out", str(tmp_path), "--parts", "ae"]) == 2
  assert "--out" in capsys.readouterr().err
