"""Every Colab notebook runs end to end, shrunk (UNSUPJAX_SMOKE=1), on CPU.

Also checks that notebooks are stored without outputs, so their diffs stay
readable.
"""

import os

import pytest

from conftest import REPO, shared_mnist_dir

NOTEBOOKS = sorted((REPO / "colab").glob("*.ipynb"))
# The one notebook run in a real Jupyter kernel (the cheapest); the others
# run cell by cell in this process.
IN_KERNEL = REPO / "colab" / "kmeans.ipynb"


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


def _smoke_env(monkeypatch):
  monkeypatch.setenv("UNSUPJAX_SMOKE", "1")
  monkeypatch.setenv("UNSUPJAX_DATA_DIR", str(shared_mnist_dir()))
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  monkeypatch.setenv("MPLBACKEND", "agg")


@pytest.mark.slow
@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if p != IN_KERNEL], ids=lambda p: p.stem)
def test_notebook_runs_end_to_end(path, tmp_path, monkeypatch):
  """Every code cell, in order, in one fresh namespace of this process (the
  notebooks use no shell escapes or magics; a kernel per notebook would
  cost more than the notebook itself). The kernel path is checked once,
  below."""
  import nbformat
  _smoke_env(monkeypatch)
  import matplotlib
  matplotlib.use("agg")
  import matplotlib.pyplot as plt
  monkeypatch.chdir(tmp_path)
  monkeypatch.setattr(plt, "show", lambda *a, **k: None)
  nb = nbformat.read(path, as_version=4)
  namespace = {"__name__": "__main__"}
  for i, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):
    source = cell.source
    assert not any(l.lstrip().startswith(("!", "%")) for l in source.splitlines()), (
        f"{path.name} cell {i}: shell escapes and magics do not run here")
    exec(compile(source, f"{path.name}[cell {i}]", "exec"), namespace)
  plt.close("all")


@pytest.mark.slow
def test_a_notebook_runs_in_a_jupyter_kernel(tmp_path, monkeypatch):
  """The cheapest notebook through nbclient and a real kernel, as Colab runs it."""
  import nbformat
  from nbclient import NotebookClient

  _smoke_env(monkeypatch)
  # The kernel imports this checkout, as the first cell's import would on a
  # machine where it is installed.
  monkeypatch.setenv("PYTHONPATH", str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
  nb = nbformat.read(IN_KERNEL, as_version=4)
  client = NotebookClient(nb, timeout=300, kernel_name="python3",
                          resources={"metadata": {"path": str(tmp_path)}})
  client.execute()  # raises CellExecutionError naming the failing cell
  errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
  assert not errors
