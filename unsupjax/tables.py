"""Numeric tables from files: the one reader of CSV and .npy data, with one
missing-value policy (under `unsupjax kmeans --csv/--npy` and
`unsupjax anomaly --csv`).

Offers
  * `read_table(path, *, columns=None, label_column=None, drop_columns=(),
    label_values=None, kind=None) -> Table`: x f64[n, d], column names,
    where each kept row came from, integer labels, and a `TableReport` of
    everything dropped.
  * `TableReport`: what was dropped; `str(report)` is one line a CLI can
    print, `report.as_dict()` goes into a summary.
  * `TableError(ValueError)`: why a file cannot be used; `.argument` names
    the argument at fault (`path`, `columns`, `label_column`,
    `drop_columns`, `kind`) so a command can name its own flag instead.

The policy, the same for both file kinds:
  * CSV: UTF-8 (a byte-order mark is ignored), comma-separated, quoted as
    Python's `csv` reads it. The first non-blank line is the header: names
    are stripped, unique, not all numbers (a header of numbers means the
    file has none). An unnamed column is called 'Unnamed: j' (0-based, as
    pandas does); it is used only if named in `columns`.
  * Line numbers are the file's own (the header's line included, blank
    lines counted; a quoted multi-line row is numbered by its first line).
    Blank lines are skipped. A row with more or fewer fields than the
    header is an error naming its line.
  * Cells are stripped. Missing: empty, NA, N/A, NaN, null, None (any
    case). Anything else must be a number as Python's `float` reads it.
    `inf`, `-inf` (or an overflow such as 1e999) are not missing: an error
    naming the column and line.
  * Columns: `columns` named: exactly those, in that order; a named column
    holding text or no value at all is an error. Not named: every column
    but the label and `drop_columns`; a column holding any text is dropped
    (reported with its first text cell and line), and so is a column with
    no value at all. `drop_columns` are never read.
  * Rows with a missing cell in a kept column (or the label) are dropped
    and reported by line. Labels must be integers (and in `label_values`
    when given).
  * .npy: a 2-D array of integers or floats (`allow_pickle=False`); NaN is
    missing (the row is dropped and reported by its 0-based row number),
    +-inf is an error; no column names, so `columns`, `label_column` and
    `drop_columns` are refused.

Does not offer: imputation, categorical encoding, other delimiters or
encodings, or tables larger than memory.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import pathlib
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

MISSING_CELLS = frozenset({"", "na", "n/a", "nan", "null", "none"})
KINDS = ("csv", "npy")
_SHOWN = 10  # line numbers listed in a report before "..."


class TableError(ValueError):
  """A file cannot be used as a numeric table. str(): 'argument: message'."""

  def __init__(self, argument: str, message: str):
    super().__init__(f"{argument}: {message}")
    self.argument, self.message = argument, message

  def __reduce__(self):
    return type(self), (self.argument, self.message)


@dataclasses.dataclass(frozen=True)
class TableReport:
  """What `read_table` dropped. Row positions are file line numbers (CSV)
  or 0-based row numbers (.npy), as `row_unit` says."""
  text_columns: tuple[tuple[str, str, int], ...] = ()  # (name, first text cell, its line)
  empty_columns: tuple[str, ...] = ()
  missing_rows: tuple[int, ...] = ()
  row_unit: str = "line"

  def __bool__(self) -> bool:
    return bool(self.text_columns or self.empty_columns or self.missing_rows)

  def __str__(self) -> str:
    """'' when nothing was dropped, else one line: "dropped 1 text column
    (city: 'Oslo' at line 2) and 2 rows with missing values (lines 4, 9)"."""
    parts = []
    if self.text_columns:
      parts.append(_count(len(self.text_columns), "text column") + " (" + ", ".join(
          f"{name}: {cell!r} at line {line}" for name, cell, line in self.text_columns) + ")")
    if self.empty_columns:
      parts.append(_count(len(self.empty_columns), "empty column") +
                   f" ({', '.join(self.empty_columns)})")
    if self.missing_rows:
      shown = ", ".join(str(r) for r in self.missing_rows[:_SHOWN])
      more = ", ..." if len(self.missing_rows) > _SHOWN else ""
      unit = self.row_unit + ("s" if len(self.missing_rows) > 1 else "")
      parts.append(_count(len(self.missing_rows), "row") +
                   f" with missing values ({unit} {shown}{more})")
    if not parts:
      return ""
    return "dropped " + (", ".join(parts[:-1]) + " and " if len(parts) > 1 else "") + parts[-1]

  def as_dict(self) -> dict:
    """JSON-able: text_columns (name, cell, line), empty_columns,
    missing_rows and their row_unit."""
    return {"text_columns": [list(t) for t in self.text_columns],
            "empty_columns": list(self.empty_columns),
            "missing_rows": list(self.missing_rows), "row_unit": self.row_unit}


class Table(NamedTuple):
  """A numeric table.

  x: f64[n, d] the kept rows of the kept columns; names: their d names;
  rows: i64[n] each kept row's 0-based position among the file's data rows
  (blank lines not counted: pandas' default index; for .npy the array
  row); lines: i64[n] its file line number (CSV) or None (.npy); y: i64[n]
  labels or None; report: what was dropped.
  """
  x: np.ndarray
  names: tuple[str, ...]
  rows: np.ndarray
  lines: np.ndarray | None
  y: np.ndarray | None
  report: TableReport


def _count(n: int, noun: str) -> str:
  return f"{n} {noun}{'' if n == 1 else 's'}"


def read_table(path: str | os.PathLike, *, columns: Sequence[str] | None = None,
               label_column: str | None = None, drop_columns: Sequence[str] = (),
               label_values: Sequence[int] | None = None,
               kind: str | None = None) -> Table:
  """Reads a numeric table from a CSV or .npy file (see the module docstring
  for the policy).

  Args:
    path: the file.
    columns: the feature columns, in order; None: every numeric one.
    label_column: a column of integer labels returned as `y` (never a
      feature).
    drop_columns: columns never read.
    label_values: the labels allowed (e.g. (0, 1)); None: any integer.
    kind: the file format, 'csv' or 'npy'; None: 'npy' for a name ending in
      .npy, else 'csv'.

  Returns:
    A `Table`. Raises TableError naming the argument, column and line at
    fault.
  """
  path = pathlib.Path(path)
  if kind is None:
    kind = "npy" if path.suffix.lower() == ".npy" else "csv"
  if kind not in KINDS:
    raise TableError("kind", f"expected one of {KINDS} or None, got {kind!r}")
  if not path.is_file():
    raise TableError("path", f"expected an existing {kind.upper()} file, got {str(path)!r}")
  for arg, value in (("columns", columns), ("drop_columns", drop_columns)):
    if isinstance(value, str):
      raise TableError(arg, f"expected a list of column names, got the string {value!r}")
  if columns is not None:
    columns = list(columns)
    if not columns:
      raise TableError("columns", "expected at least one column name, got none")
  drop_columns = list(drop_columns)
  if kind == "npy":
    for arg, value in (("columns", columns), ("label_column", label_column),
                       ("drop_columns", drop_columns or None)):
      if value is not None:
        raise TableError(arg, f"a .npy array has no column names, got {value!r}")
    return _read_npy(path)
  return _read_csv(path, columns, label_column, drop_columns, label_values)


# --------------------------------------------------------------------------
# .npy


def _read_npy(path: pathlib.Path) -> Table:
  try:
    a = np.load(path, allow_pickle=False)
  except (ValueError, OSError, EOFError) as e:
    raise TableError("path", f"cannot read {path} as a .npy array ({e})") from None
  if not isinstance(a, np.ndarray) or a.ndim != 2 or a.dtype.kind not in "fiu":
    raise TableError("path", f"{path}: expected a 2-D array of numbers, got "
                             f"{getattr(a, 'dtype', type(a).__name__)}"
                             f"{list(getattr(a, 'shape', ()))}")
  if a.shape[0] == 0 or a.shape[1] == 0:
    raise TableError("path", f"{path}: expected at least one row and one column, got "
                             f"shape {a.shape}")
  x = a.astype(np.float64)
  inf = np.argwhere(np.isinf(x))
  if inf.size:
    r, c = inf[0]
    raise TableError("path", f"{path}: infinite value {x[r, c]} at row {r}, column {c} "
                             f"({len(inf)} in all); expected finite numbers (NaN marks "
                             "a missing value)")
  ok = ~np.isnan(x).any(axis=1)
  if not ok.any():
    raise TableError("path", f"{path}: every row has a missing (NaN) value")
  rows = np.nonzero(ok)[0].astype(np.int64)
  report = TableReport(missing_rows=tuple(np.nonzero(~ok)[0].tolist()), row_unit="row")
  return Table(x[ok], tuple(str(j) for j in range(x.shape[1])), rows, None, None, report)


# --------------------------------------------------------------------------
# CSV


def _records(path: pathlib.Path) -> tuple[int, list[str], list[int], list[list[str]]]:
  """(header line, header cells, data lines, data records) of a CSV file;
  blank lines skipped, line numbers counted as the file has them."""
  lines, records = [], []
  header, header_line = None, 0
  try:
    with open(path, newline="", encoding="utf-8-sig") as f:
      reader = csv.reader(f)
      end = 0  # the last physical line read so far
      for record in reader:
        start, end = end + 1, reader.line_num
        if all(not cell.strip() for cell in record) and len(record) <= 1:
          continue
        if header is None:
          header, header_line = record, start
        else:
          lines.append(start)
          records.append(record)
  except UnicodeDecodeError:
    raw = path.read_bytes()
    try:
      raw.decode("utf-8")
    except UnicodeDecodeError as e:  # offsets of the whole file, not of a chunk
      line = raw[:e.start].count(b"\n") + 1
      raise TableError("path", f"{path} is not UTF-8 text (line {line}, byte {e.start}: "
                               f"{raw[e.start:e.end]!r})") from None
    raise
  except csv.Error as e:
    raise TableError("path", f"{path}: unreadable CSV ({e})") from None
  if header is None:
    raise TableError("path", f"{path} is empty (expected a header row)")
  if not records:
    raise TableError("path", f"{path} has a header (line {header_line}) but no data rows")
  return header_line, header, lines, records


def _parse(cells: list[str]) -> tuple[np.ndarray, int | None]:
  """(f64[n] with NaN for missing cells, index of the first cell that is not
  a number or None)."""
  out = np.full(len(cells), np.nan)
  for i, cell in enumerate(cells):
    cell = cell.strip()
    if cell.lower() in MISSING_CELLS:
      continue
    try:
      out[i] = float(cell)
    except ValueError:
      return out, i
  return out, None


def _is_number(cell: str) -> bool:
  try:
    float(cell)
  except ValueError:
    return False
  return True


def _read_csv(path: pathlib.Path, columns: list[str] | None, label_column: str | None,
              drop_columns: list[str], label_values: Sequence[int] | None) -> Table:
  header_line, header, lines, records = _records(path)
  names = [h.strip() or f"Unnamed: {j}" for j, h in enumerate(header)]
  if all(_is_number(h) for h in header):
    raise TableError("path", f"{path}: the first row (line {header_line}) is all numbers "
                             f"({', '.join(h.strip() for h in header[:5])}"
                             f"{', ...' if len(header) > 5 else ''}); expected a header "
                             "row naming the columns")
  dup = sorted({n for n in names if names.count(n) > 1})
  if dup:
    raise TableError("path", f"{path}: duplicate column names {dup} in the header "
                             f"(line {header_line})")
  for line, record in zip(lines, records):
    if len(record) != len(header):
      raise TableError("path", f"{path}, line {line}: expected {len(header)} fields (as in "
                               f"the header), got {len(record)}")
  index = {n: j for j, n in enumerate(names)}
  listing = f"the columns are {names}"
  for arg, wanted in (("drop_columns", drop_columns), ("columns", columns or []),
                      ("label_column", [label_column] if label_column is not None else [])):
    unknown = [c for c in wanted if c not in index]
    if unknown:
      raise TableError(arg, f"{', '.join(map(str, unknown))} not in {path} ({listing})")
  if label_column is not None and label_column in drop_columns:
    raise TableError("drop_columns", f"{label_column!r} is the label_column")
  if columns is not None:
    twice = sorted({c for c in columns if columns.count(c) > 1})
    clash = [c for c in columns if c in drop_columns or c == label_column]
    if twice:
      raise TableError("columns", f"{twice} named more than once")
    if clash:
      raise TableError("columns", f"{clash} also given as label_column or drop_columns")

  def cells(j):
    return [r[j] for r in records]

  def check_finite(name, values):
    if np.isinf(values).any():
      i = int(np.argmax(np.isinf(values)))
      raise TableError("path", f"{path}: column {name!r} holds {records[i][index[name]].strip()!r}"
                               f" at line {lines[i]}; expected finite numbers (a missing value "
                               "is empty or NA)")

  kept, text, empty = [], [], []
  for name in (columns if columns is not None else names):
    if columns is None and (name == label_column or name in drop_columns):
      continue
    values, bad = _parse(cells(index[name]))
    if bad is not None:
      cell = records[bad][index[name]].strip()
      if columns is not None:
        raise TableError("columns", f"expected numeric columns, {name!r} holds text: "
                                    f"{cell!r} at line {lines[bad]}")
      text.append((name, cell, lines[bad]))
      continue
    if np.isnan(values).all():
      if columns is not None:
        raise TableError("columns", f"column {name!r} has no values (every cell is missing)")
      empty.append(name)
      continue
    check_finite(name, values)
    if columns is None and not header[index[name]].strip():
      raise TableError("path", f"{path}: column {index[name] + 1} has no name in the header "
                               f"(line {header_line}); name it, or select or drop it as {name!r}")
    kept.append((name, values))
  if not kept:
    raise TableError("path", f"{path}: no numeric column to use ({listing}"
                             f"{'; text: ' + ', '.join(t[0] for t in text) if text else ''})")
  x = np.stack([v for _, v in kept], axis=1)
  ok = ~np.isnan(x).any(axis=1)
  y = None
  if label_column is not None:
    raw = cells(index[label_column])
    y_float, bad = _parse(raw)
    integral = np.isnan(y_float) | (np.isfinite(y_float) & (y_float == np.round(y_float)))
    if bad is None and not integral.all():
      bad = int(np.argmax(~integral))
    if bad is not None:
      raise TableError("label_column", f"{label_column!r}: expected integer labels, got "
                                       f"{raw[bad].strip()!r} at line {lines[bad]}")
    if label_values is not None:
      allowed = np.isin(y_float, np.asarray(list(label_values), np.float64)) | np.isnan(y_float)
      if not allowed.all():
        i = int(np.argmax(~allowed))
        raise TableError("label_column", f"{label_column!r}: expected labels in "
                                         f"{sorted(label_values)}, got {raw[i].strip()!r} at "
                                         f"line {lines[i]}")
    ok &= ~np.isnan(y_float)
    y = y_float[ok].astype(np.int64)
  if not ok.any():
    raise TableError("path", f"{path}: every row has a missing value in the columns used "
                             f"({', '.join(n for n, _ in kept)})")
  line_arr = np.asarray(lines, np.int64)
  report = TableReport(text_columns=tuple(text), empty_columns=tuple(empty),
                       missing_rows=tuple(line_arr[~ok].tolist()), row_unit="line")
  return Table(x[ok], tuple(n for n, _ in kept), np.nonzero(ok)[0].astype(np.int64),
               line_arr[ok], y, report)
