"""Sphinx configuration: the user guide, the results and the API reference.

Build (warnings are errors):

    pip install -e '.[docs]'
    sphinx-build -W --keep-going -b html docs docs/_build

The API pages (`docs/api/`) are generated from the docstrings by autodoc;
napoleon reads their Google-style sections (Args, Returns, Raises).
Markdown pages are read by myst-parser. A public function or class of a
documented module without a docstring is a warning, so it fails the build.

unsupjax's docstrings are plain text (STYLE.md), not reStructuredText:
`code` in single backticks, shapes such as `f32[n, *shape]`, names such as
threshold_, and tables or listings laid out with indentation.
`plain_text_docstring` below reads them that way before napoleon does:
`*`, `|` and a trailing `_` are literal characters, an indented block under
a line is preformatted text (a bullet list stays a list), and single
backticks are code (`default_role`). What it cannot mend (an unclosed
backtick, a bad Google section) still fails the build.
"""

from __future__ import annotations

import os
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# Importing the library must not grab an accelerator or print device
# warnings while the docs build.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import unsupjax  # noqa: E402

project = "unsupjax"
author = "the unsupjax authors"
copyright = "the unsupjax authors"  # noqa: A001
release = version = unsupjax.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "myst_parser",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", ".gitignore"]

# Markdown: headings get anchors so that `page.md#a-heading` links resolve.
myst_heading_anchors = 4
myst_enable_extensions = ["colon_fence"]

# Google-style docstrings (STYLE.md): Args / Returns / Raises sections.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
# "Attributes:" as a field list: the fields themselves are documented by
# autodoc (undoc-members), so napoleon must not declare them again.
napoleon_use_ivar = True

# `x` in a docstring is code (and a link when it names a documented object).
default_role = "py:obj"

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True, "undoc-members": True}
# Heavy optional dependencies are imported inside functions; nothing to mock.
autodoc_mock_imports: list[str] = []

html_theme = "alabaster"
html_title = f"unsupjax {release}"
html_static_path: list[str] = []


# Public names that have no docstring yet. They are listed in the reference
# (bare); each module's owner removes its entries when writing the
# docstring. Any other public function, class or method without one fails
# the build.
UNDOCUMENTED = frozenset({
    "unsupjax.audio.hz_to_mel",
    "unsupjax.data.tfds_default_data_dir",
    "unsupjax.kmeans.checks.check_block_size",
    "unsupjax.kmeans.checks.check_centroids",
    "unsupjax.kmeans.checks.check_k",
    "unsupjax.kmeans.checks.check_metric",
    "unsupjax.kmeans.checks.check_weight",
    "unsupjax.kmeans.checks.is_concrete",
    "unsupjax.kmeans.lloyd.normalize_rows",
    "unsupjax.kmeans.estimator.KMeans.predict",
    "unsupjax.models.audio_codec.io.pack",
    "unsupjax.models.audio_codec.io.AudioCodec.save",
    "unsupjax.models.audio_codec.model.AudioCodecConfig.check_length",
    "unsupjax.models.audio_codec.model.AudioCodecNet.decode",
    "unsupjax.models.audio_codec.model.AudioCodecNet.encode",
    "unsupjax.models.codec.io.pack",
    "unsupjax.models.codec.residual.check_step",
    "unsupjax.models.codec.bundle.Codec.from_state",
    "unsupjax.models.codec.bundle.Codec.save",
    "unsupjax.models.codec.model.CodecNet.decode",
    "unsupjax.models.codec.model.CodecNet.encode",
    "unsupjax.models.vae.decode_mean",
    "unsupjax.models.vae.init_state",
    "unsupjax.models.vae.make_model",
    "unsupjax.models.vae.VAEConfig.check_input_shape",
    "unsupjax.models.vae.VAEModel.decode",
    "unsupjax.models.vae.VAEModel.encode",
    "unsupjax.models.vae.VAEModel.scale",
    "unsupjax.nn.glorot_uniform",
    "unsupjax.nn.ConvAutoencoder.decode",
    "unsupjax.nn.ConvAutoencoder.encode",
    "unsupjax.nn.DenseAutoencoder.encode",
    "unsupjax.nn.MLP.kernel_init",
    "unsupjax.parallel.num_rows",
    "unsupjax.parallel.replicated",
    # Classes whose generated docstring (a NamedTuple's or dataclass's
    # field list) autodoc drops.
    "unsupjax.toys.Toy",
    "unsupjax.models.codec.io.Header",
    "unsupjax.models.audio_codec.io.Header",
})


def _missing_docstring(app, what, name, obj, options, lines):
  """A public function, class or method documented without a docstring
  fails the build (under -W), so the reference never lists a bare name."""
  if what not in ("function", "class", "method"):
    return
  if name.rsplit(".", 1)[-1].startswith("_") or name in UNDOCUMENTED:
    return
  if not any(line.strip() for line in lines):
    from sphinx.util import logging
    logging.getLogger("unsupjax.docs").warning(
        "%s %s has no docstring", what, name, type="unsupjax", subtype="docstring")


# Google-style section headers: napoleon reads their indented bodies.
_SECTION = re.compile(
    r"^(Args|Arguments|Parameters|Returns|Return|Raises|Yields|Yield|Attributes|"
    r"Keyword Args|Keyword Arguments|Other Parameters|Example|Examples|Note|Notes|"
    r"Warning|Warnings|Warns|See Also|References|Todo|Methods):\s*$")
_BULLET = re.compile(r"^\s*([*+-]|\d+[.)])\s+\S")
_BULLET_MARK = re.compile(r"^\s*[*+-]\s+")
# Code spans (``x`` or `x`) are left as they are; outside them these
# characters are literal: `*` and `**` (f32[n, *shape], 2**k), `|` (|x|),
# and `_` ending a word (threshold_, which reST reads as a link).
_SPAN = re.compile(r"(``.+?``|`[^`]+`)")
_LITERAL_CHARS = re.compile(r"(\*|\||(?<=\w)_(?=\W|$))")


def _escape(text: str) -> str:
  lead = _BULLET_MARK.match(text)
  if lead:  # a list item's own marker stays one
    return lead.group(0) + _escape(text[lead.end():])
  parts = _SPAN.split(text)
  for i in range(0, len(parts), 2):
    parts[i] = _LITERAL_CHARS.sub(r"\\\1", parts[i])
  for i in range(1, len(parts), 2):
    # `ValueError`s: reST needs a break between a span and a letter.
    if i + 1 < len(parts) and parts[i + 1][:1].isalnum():
      parts[i + 1] = "\\ " + parts[i + 1]
    if parts[i - 1][-1:].isalnum():
      parts[i - 1] += "\\ "
  return "".join(parts)


def _indent(line: str) -> int:
  return len(line) - len(line.lstrip(" "))


def _simple_list(run: list[str]) -> bool:
  """Whether an indented run is a bullet list whose items continue at
  their text's column (anything deeper is preformatted)."""
  if not run or not _BULLET.match(run[0]):
    return False
  item = _indent(run[0])
  text_col = None
  for r in run:
    if not r.strip():
      continue
    m = _BULLET_MARK.match(r)
    if m and _indent(r) == item:
      text_col = m.end()
    elif _indent(r) != text_col:
      return False
  return True


def plain_text_docstring(app, what, name, obj, options, lines):
  """Reads a plain-text docstring as reST (see the module docstring).

  Runs before napoleon. The bodies of Google sections (Args:, Returns:, ...)
  keep their layout for napoleon; elsewhere an indented run of lines that
  is not a bullet list, or that follows a line without a blank line, is
  turned into a literal block (`::`), and the line after it gets a blank.
  """
  out: list[str] = []
  i, n = 0, len(lines)
  in_section = False
  in_bullet = False
  while i < n:
    line = lines[i]
    stripped = line.strip()
    if not stripped:
      out.append(line)
      i += 1
      continue
    ind = _indent(line)
    if ind == 0:
      in_section = bool(_SECTION.match(stripped))
      in_bullet = bool(_BULLET.match(line))
      out.append(line if in_section else _escape(line))
      i += 1
      continue
    if in_section:
      # A section body; a name like *args stays as napoleon expects it.
      m = re.match(r"^(\s*\*{0,2}\w+(?: \(.*?\))?:)(.*)$", line)
      out.append(m.group(1) + _escape(m.group(2)) if m else _escape(line))
      i += 1
      continue
    # An indented run at the top level: collect it (blank lines inside
    # included when the run continues after them).
    j = i
    run: list[str] = []
    while j < n and (not lines[j].strip() or _indent(lines[j]) > 0):
      if not lines[j].strip():
        k = j
        while k < n and not lines[k].strip():
          k += 1
        if k >= n or _indent(lines[k]) == 0:
          break
      run.append(lines[j])
      j += 1
    if in_bullet and out and out[-1].strip():
      # Continuation lines of a list item.
      out.extend(_escape(r) for r in run)
    elif _simple_list(run):
      # A bullet list: a blank line before it, read as reST.
      if out and out[-1].strip():
        out.append("")
      out.extend(_escape(r) for r in run)
    else:
      # Preformatted text.
      prev = out[-1] if out else ""
      if prev.strip() and prev.rstrip().endswith(":") and not prev.rstrip().endswith("::"):
        out[-1] = prev.rstrip() + ":"
        out.append("")
      else:
        if prev.strip():
          out.append("")
        out.extend(["::", ""])
      out.extend(run)
    if j < n and lines[j].strip():
      out.append("")
    i = j
  lines[:] = out


def _skip_foreign(app, what, name, obj, skip, options):
  """Names a module imported from elsewhere (`Callable`, a NumPy function)
  and scikit-learn's generated `set_*_request` methods are not unsupjax's
  API; a module's own names and re-exports of unsupjax's are."""
  if re.fullmatch(r"set_\w+_request", name):
    return True
  module = getattr(obj, "__module__", None)
  if (isinstance(obj, type) or callable(obj)) and isinstance(module, str) \
      and not module.startswith("unsupjax"):
    return True
  return None


def setup(app):
  app.connect("autodoc-process-docstring", plain_text_docstring, priority=400)
  app.connect("autodoc-process-docstring", _missing_docstring, priority=600)
  app.connect("autodoc-skip-member", _skip_foreign)
