"""Imports only point down: the layers of docs/architecture.md, read with ast.

Each module of the package belongs to a layer; a module may import modules
of its own layer or lower ones, never higher. A new module must be given a
layer here (the test fails for an unknown one), so the map stays complete.
"""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "unsupjax"

# Module prefix -> layer (the longest matching prefix wins).
LAYERS = {
    "unsupjax": 0,                      # __init__ (lazy aliases only, checked apart)
    "unsupjax.__main__": 7,
    "unsupjax.rng": 0, "unsupjax.config": 0, "unsupjax.batched": 0,
    "unsupjax.distances": 0, "unsupjax.averaging": 0, "unsupjax.losses": 0,
    "unsupjax.nn": 0, "unsupjax.parallel": 0, "unsupjax.state": 0, "unsupjax.assets": 0,
    "unsupjax.data": 1, "unsupjax.tables": 1, "unsupjax.toys": 1, "unsupjax.audio": 1,
    "unsupjax.metrics": 2, "unsupjax.kmeans": 2, "unsupjax.plots": 2,
    "unsupjax.runlog": 2, "unsupjax.tensorboard": 2, "unsupjax.curves": 3,
    "unsupjax.models": 3,
    "unsupjax.training": 4,
    "unsupjax.anomaly": 5, "unsupjax.deep_clustering": 5,
    "unsupjax.tasks": 6,
    "unsupjax.cli": 7,
}


def layer(module: str) -> int:
  best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
  if best == "unsupjax" and module != "unsupjax":
    raise KeyError(module)
  return LAYERS[best]


def module_name(path: pathlib.Path) -> str:
  rel = path.relative_to(PACKAGE.parent).with_suffix("")
  parts = list(rel.parts)
  if parts[-1] == "__init__":
    parts.pop()
  return ".".join(parts)


def imported(path: pathlib.Path, name: str) -> set[str]:
  tree = ast.parse(path.read_text())
  out = set()
  package = name if path.name == "__init__.py" else name.rpartition(".")[0]
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      out |= {a.name for a in node.names}
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
        base = ".".join(anchor + ([base] if base else []))
      out.add(base)
      out |= {f"{base}.{a.name}" for a in node.names}
  return {m for m in out if m == "unsupjax" or m.startswith("unsupjax.")}


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_imports_point_down(path):
  name = module_name(path)
  if name == "unsupjax":
    return
  mine = layer(name)
  upward = []
  for target in sorted(imported(path, name)):
    try:
      theirs = layer(target)
    except KeyError:
      continue                  # a name imported from a package, e.g. unsupjax.x.CONST
    if theirs > mine:
      upward.append(f"{target} (layer {theirs})")
  assert not upward, f"{name} (layer {mine}) imports upward: {', '.join(upward)}"


def test_every_module_has_a_layer():
  unknown = []
  for path in MODULES:
    try:
      layer(module_name(path))
    except KeyError:
      unknown.append(module_name(path))
  assert not unknown, f"give these modules a layer in LAYERS: {unknown}"


def test_library_errors_name_no_flags():
  """Below tasks/, an error names an argument, never a command-line flag."""
  offenders = []
  for path in MODULES:
    name = module_name(path)
    if name == "unsupjax" or layer(name) >= 6:
      continue
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.Raise) and node.exc is not None:
        text = ast.unparse(node.exc)
        if "'--" in text or '"--' in text or " --" in text:
          offenders.append(f"{name}:{node.lineno}")
  assert not offenders, offenders
