"""Every Colab notebook runs end to end, shrunk (UNSUPJAX_SMOKE=1), on CPU.

Also checks that notebooks are stored without outputs, so their diffs stay
readable.
"""

import os

import pytest

from conftest import REPO, shared_mnist_dir

NOTEBOOKS = sorted((REPO / "colab").glob("*.ipynb"))


def test_there_is_a_notebook_per_capability():
  names = {p.stem for p in NOTEBOOKS}
  assert {"autoencoders", "vae", "gan", "kmeans", "anomaly", "compression",
          "deep_clustering"} <= names, names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_without_outputs(path):
  import nbformat
  nb = nbformat.read(path, as_version=4)
  nbformat.validate(nb)
  for cell in nb.cells:
    if cell.cell_type == "code":
      assert cell.outputs == [] and cell.execution_count is None, (
          f"{path.name}: strip outputs before committing (cell: {cell.source[:60]!r})")


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_end_to_end(path, tmp_path, monkeypatch):
  import nbformat
  from nbclient import NotebookClient

  monkeypatch.setenv("UNSUPJAX_SMOKE", "1")
  monkeypatch.setenv("UNSUPJAX_DATA_DIR", str(shared_mnist_dir()))
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  monkeypatch.setenv("MPLBACKEND", "agg")
  # The kernel imports this checkout, as the first cell's import would on a
  # machine where it is installed.
  monkeypatch.setenv("PYTHONPATH", str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
  nb = nbformat.read(path, as_version=4)
  client = NotebookClient(nb, timeout=300, kernel_name="python3",
                          resources={"metadata": {"path": str(tmp_path)}})
  client.execute()  # raises CellExecutionError naming the failing cell
  errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
  assert not errors
