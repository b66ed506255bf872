"""The documentation: every Python block of the README and the guide runs,
every relative link points at a file, no page names one machine's paths,
and every public module is in the API reference.

The Sphinx build itself (`sphinx-build -W`, warnings are errors) runs in
`.ci/run` after the test suite: it takes longer than a test should.

A page's ```python blocks run in order in one namespace (as a reader would
paste them), in-process, with a temporary directory as the working
directory. A block whose fence reads ```python no-run is shown, not run.
"""

from __future__ import annotations

import ast
import pathlib
import re

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
README_MAX_LINES = 200

FENCE = re.compile(r"^```(\S*)([^\n]*)\n(.*?)^```\s*$", re.M | re.S)
# [text](target) and ![alt](target); not inside code.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
MACHINE_PATHS = re.compile(r"(/work/|/home/|/root/|/Users/|/tmp/)")


def pages() -> list[pathlib.Path]:
  """README.md and every Markdown page under docs/ (not the build)."""
  found = [REPO / "README.md"]
  found += sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.parts)
  return found


def snippet_pages() -> list[pathlib.Path]:
  return [REPO / "README.md"] + sorted((DOCS / "guide").glob("*.md"))


def python_blocks(text: str) -> list[str]:
  """The runnable ```python blocks of a Markdown text, in order."""
  return [body for lang, rest, body in FENCE.findall(text)
          if lang == "python" and "no-run" not in rest]


def without_code(text: str) -> str:
  """The text with fenced blocks and inline code removed (links only)."""
  text = FENCE.sub("", text)
  return re.sub(r"`[^`\n]*`", "", text)


def test_fences_are_recognised():
  text = "a\n```python\nx = 1\n```\n```python no-run\ny = 2\n```\n```bash\nls\n```\n"
  assert python_blocks(text) == ["x = 1\n"]


@pytest.mark.parametrize("page", [p for p in snippet_pages() if python_blocks(p.read_text())],
                         ids=lambda p: str(p.relative_to(REPO)))
def test_python_blocks_run(page, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  monkeypatch.setenv("MPLBACKEND", "Agg")
  namespace = {"__name__": "__docs__"}
  for i, block in enumerate(python_blocks(page.read_text())):
    code = compile(block, f"{page.relative_to(REPO)}[python block {i + 1}]", "exec")
    exec(code, namespace)  # noqa: S102 - the documentation's own examples


def test_readme_is_short():
  lines = (REPO / "README.md").read_text().count("\n")
  assert lines <= README_MAX_LINES, f"README.md has {lines} lines (at most {README_MAX_LINES})"


def anchors(page: pathlib.Path) -> set[str]:
  """The anchors GitHub (and myst's heading anchors) give a page's headings:
  lowercased, punctuation dropped, spaces to hyphens."""
  slugs = set()
  for line in FENCE.sub("", page.read_text()).splitlines():
    m = re.match(r"^#{1,6} (.*)$", line)
    if m:
      text = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower())
      slugs.add(text.replace(" ", "-"))
  return slugs


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(page):
  missing = []
  for target in LINK.findall(without_code(page.read_text())):
    if re.match(r"^[a-z]+:", target):
      continue
    path, _, anchor = target.partition("#")
    file = page.parent / path if path else page
    if not file.exists():
      missing.append(target)
    elif anchor and file.suffix == ".md" and anchor not in anchors(file):
      missing.append(target)
  assert not missing, f"{page.relative_to(REPO)} links to missing files or headings: {missing}"


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(REPO)))
def test_no_page_names_one_machines_paths(page):
  hits = [line.strip() for line in page.read_text().splitlines() if MACHINE_PATHS.search(line)]
  assert not hits, f"{page.relative_to(REPO)} names a path of one machine: {hits[:3]}"


def test_every_public_module_is_in_the_api_reference():
  documented = set()
  for rst in (DOCS / "api").glob("*.rst"):
    documented |= set(re.findall(r"^\.\. automodule:: (\S+)", rst.read_text(), re.M))
  modules = set()
  for path in (REPO / "unsupjax").rglob("*.py"):
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
      parts = parts[:-1]
    if any(p.startswith("_") for p in parts) or parts[1:2] in (["cli"], ["tasks"]):
      continue
    if len(parts) == 1:
      continue
    modules.add(".".join(parts))
  assert not modules - documented, f"not in docs/api: {sorted(modules - documented)}"
  assert not documented - modules, f"docs/api names missing modules: {sorted(documented - modules)}"


def test_conf_lists_only_existing_undocumented_names():
  """docs/conf.py's UNDOCUMENTED names exist (an entry for a renamed or
  deleted function would silently allow nothing)."""
  import importlib
  tree = ast.parse((DOCS / "conf.py").read_text())
  names = next(ast.literal_eval(node.value.args[0]) for node in ast.walk(tree)
               if isinstance(node, ast.Assign)
               and getattr(node.targets[0], "id", None) == "UNDOCUMENTED")
  missing = []
  for name in names:
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
      try:
        obj = importlib.import_module(".".join(parts[:cut]))
      except ImportError:
        continue
      try:
        for attr in parts[cut:]:
          obj = getattr(obj, attr)
      except AttributeError:
        missing.append(name)
      break
    else:
      missing.append(name)
  assert not missing, f"docs/conf.py UNDOCUMENTED names that do not exist: {missing}"
