"""`unsupjax.tables`: one reader of CSV and .npy tables with one policy, and
the two commands that use it (`kmeans --csv/--npy`, `anomaly --csv`)."""

import ast
import json

import numpy as np
import pytest

from conftest import REPO
from unsupjax.tables import TableError, read_table



def _csv(tmp_path, text, name="t.csv", encoding="utf-8"):
  p = tmp_path / name
  p.write_bytes(text.encode(encoding))
  return p


def _cli(argv, capsys):
  """The CLI in-process: (exit status, stdout, stderr)."""
  from unsupjax import cli
  code = cli.main(argv)
  out = capsys.readouterr()
  return code, out.out, out.err


# --------------------------------------------------------------------------
# Reading: values, names, positions.


def test_numbers_names_rows_and_lines(tmp_path):
  p = _csv(tmp_path, "a, b ,id\n1,2,x1\n\n3.5,-4e-1,x2\n  \n1e3,7,x3\n")
  t = read_table(p, drop_columns=["id"])
  assert t.x.dtype == np.float64 and t.names == ("a", "b")
  np.testing.assert_array_equal(t.x, [[1, 2], [3.5, -0.4], [1e3, 7]])
  assert t.rows.tolist() == [0, 1, 2]          # data rows, blank lines not counted
  assert t.lines.tolist() == [2, 4, 6]         # the file's own line numbers
  assert t.y is None and not t.report and str(t.report) == ""


def test_byte_order_mark_is_not_part_of_the_first_name(tmp_path):
  p = _csv(tmp_path, "age,spend\n30,1.5\n40,2.5\n", encoding="utf-8-sig")
  assert p.read_bytes()[:3] == b"\xef\xbb\xbf"
  t = read_table(p, columns=["age"])
  assert t.names == ("age",)
  np.testing.assert_array_equal(t.x[:, 0], [30, 40])


def test_line_numbers_count_blank_lines_and_quoted_newlines(tmp_path):
  p = _csv(tmp_path, 'a,note\n1,"two\nlines"\n\n\n2,ok\n3,x\nfour,y\n')
  with pytest.raises(TableError, match=r"'a' holds text: 'four' at line 8"):
    read_table(p, columns=["a"])
  t = read_table(_csv(tmp_path, 'a,note\n1,"two\nlines"\n\n,ok\n3,x\n'), columns=["a"])
  assert t.lines.tolist() == [2, 6] and t.report.missing_rows == (5,)


def test_missing_cells_drop_their_rows_and_are_reported_by_line(tmp_path):
  p = _csv(tmp_path, "a,b\n1,2\n,3\nNA,4\n5,n/a\n6,NaN\n7, null \n8,None\n9,-nan\n10,11\n")
  t = read_table(p)
  np.testing.assert_array_equal(t.x, [[1, 2], [10, 11]])
  assert t.rows.tolist() == [0, 8] and t.lines.tolist() == [2, 10]
  assert t.report.missing_rows == (3, 4, 5, 6, 7, 8, 9)
  assert str(t.report) == "dropped 7 rows with missing values (lines 3, 4, 5, 6, 7, 8, 9)"
  many = _csv(tmp_path, "a\n" + "NA\n" * 12 + "1\n", "m.csv")
  assert str(read_table(many).report) == (
      "dropped 12 rows with missing values (lines 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, ...)")


@pytest.mark.parametrize("cell", ["inf", "-inf", "Infinity", "1e999"])
def test_infinite_values_are_refused_not_called_missing(tmp_path, cell):
  p = _csv(tmp_path, f"a,b\n1,2\n3,{cell}\n")
  with pytest.raises(TableError, match=rf"column 'b' holds '{cell}' at line 3; expected "
                                       "finite numbers") as e:
    read_table(p)
  assert e.value.argument == "path"


def test_text_columns_are_dropped_and_reported_unless_named(tmp_path):
  p = _csv(tmp_path, "name,age,city,spend,notes\nAnn,30,Oslo,1.5,\nBo,41,Rome,2.5,\n"
                     "Cy,,Oslo,3.5,\n")
  t = read_table(p)
  assert t.names == ("age", "spend")
  assert t.report.text_columns == (("name", "Ann", 2), ("city", "Oslo", 2))
  assert t.report.empty_columns == ("notes",)
  assert str(t.report) == ("dropped 2 text columns (name: 'Ann' at line 2, city: 'Oslo' at "
                           "line 2), 1 empty column (notes) and 1 row with missing values "
                           "(line 4)")
  assert t.report.as_dict() == {
      "text_columns": [["name", "Ann", 2], ["city", "Oslo", 2]], "empty_columns": ["notes"],
      "missing_rows": [4], "row_unit": "line"}
  json.dumps(t.report.as_dict())
  # A mostly numeric column with one typo is text too, and says where.
  typo = _csv(tmp_path, "a,b\n1,2\n3,4.4.4\n", "typo.csv")
  assert read_table(typo).report.text_columns == (("b", "4.4.4", 3),)
  with pytest.raises(TableError, match=r"columns: expected numeric columns, 'city' holds "
                                       r"text: 'Oslo' at line 2"):
    read_table(p, columns=["age", "city"])
  with pytest.raises(TableError, match=r"columns: column 'notes' has no values"):
    read_table(p, columns=["notes"])


@pytest.mark.parametrize("row, got", [("1,2", 2), ("1,2,3,4", 4)])
def test_ragged_rows_are_an_error_naming_the_line(tmp_path, row, got):
  p = _csv(tmp_path, f"a,b,c\n1,2,3\n\n{row}\n4,5,6\n")
  with pytest.raises(TableError, match=rf"line 4: expected 3 fields \(as in the header\), "
                                       rf"got {got}"):
    read_table(p)


def test_a_numeric_first_row_is_not_taken_for_a_header(tmp_path):
  p = _csv(tmp_path, "1,2.5\n3,4\n")
  with pytest.raises(TableError, match=r"the first row \(line 1\) is all numbers \(1, 2.5\); "
                                       "expected a header row"):
    read_table(p)
  # A header with some numeric names (years) is a header.
  assert read_table(_csv(tmp_path, "city,2019\nOslo,1\n", "y.csv")).names == ("2019",)


def test_header_problems(tmp_path):
  with pytest.raises(TableError, match=r"duplicate column names \['a'\]"):
    read_table(_csv(tmp_path, "a,b,a\n1,2,3\n"))
  # pandas writes its index under an empty name: refused if it would be used.
  p = _csv(tmp_path, ",a,b\n0,1,2\n1,3,4\n", "idx.csv")
  with pytest.raises(TableError, match=r"column 1 has no name in the header \(line 1\); name "
                                       r"it, or select or drop it as 'Unnamed: 0'"):
    read_table(p)
  assert read_table(p, drop_columns=["Unnamed: 0"]).names == ("a", "b")
  assert read_table(p, columns=["b"]).names == ("b",)
  assert read_table(p, columns=["Unnamed: 0", "a"]).names == ("Unnamed: 0", "a")


@pytest.mark.parametrize("text, kw, argument, match", [
    ("", {}, "path", "is empty"),
    ("\n\n", {}, "path", "is empty"),
    ("a,b\n\n", {}, "path", r"has a header \(line 1\) but no data rows"),
    ("a,b\n1,2\n", {"columns": ["c"]}, "columns", r"c not in .*\['a', 'b'\]"),
    ("a,b\n1,2\n", {"columns": "a"}, "columns", "a list of column names"),
    ("a,b\n1,2\n", {"columns": []}, "columns", "at least one"),
    ("a,b\n1,2\n", {"columns": ["a", "a"]}, "columns", "more than once"),
    ("a,b\n1,2\n", {"columns": ["a"], "drop_columns": ["a"]}, "columns", "drop_columns"),
    ("a,b\n1,2\n", {"drop_columns": ["z"]}, "drop_columns", "z not in"),
    ("a,b\n1,2\n", {"label_column": "y"}, "label_column", "y not in"),
    ("a,b\n1,2\n", {"label_column": "b", "drop_columns": ["b"]}, "drop_columns",
     "is the label_column"),
    ("a,b\nx,y\n", {}, "path", r"no numeric column to use .*; text: a, b\)"),
    ("a,b\n1,\n,2\n", {}, "path", "every row has a missing value"),
    ("a,b\n1,2\n", {"kind": "xlsx"}, "kind", "expected one of"),
])
def test_errors_name_the_argument(tmp_path, text, kw, argument, match):
  with pytest.raises(TableError, match=match) as e:
    read_table(_csv(tmp_path, text), **kw)
  assert e.value.argument == argument
  assert str(e.value) == f"{argument}: {e.value.message}"
  assert "--" not in str(e.value)  # library errors name arguments, never CLI flags


def test_file_errors(tmp_path):
  with pytest.raises(TableError, match="path: expected an existing CSV file"):
    read_table(tmp_path / "missing.csv")
  p = tmp_path / "latin1.csv"
  p.write_bytes("a,b\n1,2\ncaf\xe9,3\n".encode("latin-1"))
  with pytest.raises(TableError, match=r"is not UTF-8 text \(line 3, byte 11: b.\\xe9.\)"):
    read_table(p)


def test_labels(tmp_path):
  p = _csv(tmp_path, "a,label,b\n1,0,2\n3,1.0,4\n5,,6\n7,1,8\n")
  t = read_table(p, label_column="label", label_values=(0, 1))
  assert t.names == ("a", "b") and t.y.dtype == np.int64
  assert t.y.tolist() == [0, 1, 1] and t.report.missing_rows == (4,)
  for bad, match in [("2", r"expected labels in \[0, 1\], got '2' at line 3"),
                     ("yes", "expected integer labels, got 'yes' at line 3"),
                     ("0.5", "expected integer labels, got '0.5' at line 3")]:
    q = _csv(tmp_path, f"a,label\n1,0\n2,{bad}\n", "bad.csv")
    with pytest.raises(TableError, match=match) as e:
      read_table(q, label_column="label", label_values=(0, 1))
    assert e.value.argument == "label_column"
  # drop_columns are never read: text and missing cells in them are fine.
  q = _csv(tmp_path, "id,a\nx,1\n,2\n", "ids.csv")
  t = read_table(q, drop_columns=["id"])
  assert t.names == ("a",) and not t.report


# --------------------------------------------------------------------------
# .npy: the same function and the same missing-value policy.


def test_npy_same_policy(tmp_path):
  x = np.arange(12, dtype=np.float32).reshape(4, 3)
  x[1, 2] = np.nan
  np.save(tmp_path / "e.npy", x)
  t = read_table(tmp_path / "e.npy")
  assert t.x.dtype == np.float64 and t.names == ("0", "1", "2") and t.lines is None
  np.testing.assert_array_equal(t.x, x[[0, 2, 3]])
  assert t.rows.tolist() == [0, 2, 3]
  assert str(t.report) == "dropped 1 row with missing values (row 1)"
  np.save(tmp_path / "i.npy", np.arange(6).reshape(3, 2))
  np.testing.assert_array_equal(read_table(tmp_path / "i.npy").x, np.arange(6).reshape(3, 2))
  x[2, 0] = -np.inf
  np.save(tmp_path / "inf.npy", x)
  with pytest.raises(TableError, match=r"infinite value -inf at row 2, column 0"):
    read_table(tmp_path / "inf.npy")


@pytest.mark.parametrize("array, match", [
    (np.zeros(3), r"expected a 2-D array of numbers, got float64\[3\]"),
    (np.zeros((2, 2), bool), "expected a 2-D array of numbers, got bool"),
    (np.zeros((2, 2), complex), "got complex128"),
    (np.array([["a"]]), "got <U1"),
    (np.zeros((0, 3)), r"at least one row and one column, got shape \(0, 3\)"),
    (np.full((2, 1), np.nan), "every row has a missing"),
])
def test_npy_errors(tmp_path, array, match):
  np.save(tmp_path / "a.npy", array)
  with pytest.raises(TableError, match=match) as e:
    read_table(tmp_path / "a.npy")
  assert e.value.argument == "path"


def test_npy_refuses_column_arguments_and_unreadable_files(tmp_path):
  np.save(tmp_path / "a.npy", np.zeros((2, 2)))
  for kw in ({"columns": ["0"]}, {"label_column": "0"}, {"drop_columns": ["0"]}):
    with pytest.raises(TableError, match="a .npy array has no column names") as e:
      read_table(tmp_path / "a.npy", **kw)
    assert e.value.argument == next(iter(kw))
  np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
  with pytest.raises(TableError, match="cannot read .* as a .npy array"):
    read_table(tmp_path / "o.npy")
  (tmp_path / "t.csv").write_text("a\n1\n")
  with pytest.raises(TableError, match="cannot read .* as a .npy array"):
    read_table(tmp_path / "t.csv", kind="npy")


def test_table_error_pickles():
  import pickle
  e = pickle.loads(pickle.dumps(TableError("columns", "x not in t.csv")))
  assert (e.argument, e.message, str(e)) == ("columns", "x not in t.csv",
                                              "columns: x not in t.csv")


# --------------------------------------------------------------------------
# Layers: the reader is a library module.


def raised_text(tree: ast.AST) -> list[str]:
  """The string pieces of every `raise` statement's expression."""
  return [n.value for r in ast.walk(tree) if isinstance(r, ast.Raise) and r.exc
          for n in ast.walk(r.exc) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def test_tables_imports_no_higher_layer_and_names_no_flag():
  tree = ast.parse((REPO / "unsupjax" / "tables.py").read_text())
  imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
  imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
  assert not {m for m in imported if m and m.startswith("unsupjax")}, imported
  text = raised_text(tree)
  assert len(text) > 20 and not [s for s in text if "--" in s]


# --------------------------------------------------------------------------
# The commands: both use the reader, both print its report line.


def test_kmeans_csv_reports_what_it_dropped(tmp_path, capsys):
  rng = np.random.default_rng(0)
  lines = ["customer,age,spend,city"]
  truth = []
  for i in range(30):
    g = i % 2
    lines.append(f"c{i},{25 + 30 * g + rng.normal(0, 2):.1f},"
                 f"{100 + 900 * g + rng.normal(0, 20):.1f},{'AB'[g]}")
    truth.append(g)
  lines[3] = "c2,,130.0,A"   # line 4: missing value
  lines.insert(6, "")        # a blank line: later rows keep their real numbers
  p = _csv(tmp_path, "\ufeff" + "\n".join(lines) + "\n", encoding="utf-8")
  code, out, err = _cli(["kmeans", "--csv", str(p), "--k", "2",
                         "--workdir", str(tmp_path / "run")], capsys)
  assert code == 0, err
  assert ("dropped 2 text columns (customer: 'c0' at line 2, city: 'A' at line 2) and 1 row "
          "with missing values (line 4)") in out
  s = json.loads((tmp_path / "run" / "summary.json").read_text())
  assert s["columns"] == ["age", "spend"] and s["dropped"]["missing_rows"] == [4]
  rows = np.loadtxt(tmp_path / "run" / "assignments.csv", delimiter=",", skiprows=1, dtype=int)
  assert rows.shape == (29, 2) and 2 not in rows[:, 0]
  from unsupjax.metrics import clustering
  assert clustering.clustering_accuracy(np.array(truth)[rows[:, 0]], rows[:, 1]) == 1.0


@pytest.mark.parametrize("text, args, msg", [
    ("a,b\n1,2\n3\n", [], "--csv: {p}, line 3: expected 2 fields (as in the header), got 1"),
    ("1,2\n3,4\n", [], "--csv: {p}: the first row (line 1) is all numbers"),
    ("a,b\n1,2\n3,inf\n", [], "--csv: {p}: column 'b' holds 'inf' at line 3"),
    ("a,b\n1,2\n3,x\n", ["--columns", "a", "b"],
     "--columns: expected numeric columns, 'b' holds text: 'x' at line 3"),
])
def test_kmeans_csv_errors_name_the_flag(tmp_path, capsys, text, args, msg):
  p = _csv(tmp_path, text)
  code, _, err = _cli(["kmeans", "--csv", str(p), "--k", "1", *args,
                       "--workdir", str(tmp_path / "run")], capsys)
  assert code == 2 and msg.format(p=p) in err, err


def test_kmeans_npy_drops_missing_rows_and_refuses_inf(tmp_path, capsys):
  x = np.repeat(np.eye(3, dtype=np.float32), 5, axis=0)
  x[4, 1] = np.nan
  np.save(tmp_path / "e.npy", x)
  code, out, err = _cli(["kmeans", "--npy", str(tmp_path / "e.npy"), "--k", "3",
                         "--workdir", str(tmp_path / "run")], capsys)
  assert code == 0, err
  assert "dropped 1 row with missing values (row 4)" in out
  rows = np.loadtxt(tmp_path / "run" / "assignments.csv", delimiter=",", skiprows=1, dtype=int)
  assert rows[:, 0].tolist() == [i for i in range(15) if i != 4]
  x[4, 1] = np.inf
  np.save(tmp_path / "e.npy", x)
  code, _, err = _cli(["kmeans", "--npy", str(tmp_path / "e.npy"), "--k", "3",
                       "--workdir", str(tmp_path / "run2")], capsys)
  assert code == 2 and "--npy: " in err and "infinite value inf at row 4, column 1" in err


@pytest.mark.parametrize("text, args, msg", [
    ("a,b\n1,2\n3,4,5\n", [], "--csv: {p}, line 3: expected 2 fields"),
    ("a,b\n1,2\n3,4\n", ["--label-column", "y"], "--label-column: y not in {p}"),
    ("a,y\n1,0\n3,2\n", ["--label-column", "y"],
     "--label-column: 'y': expected labels in [0, 1], got '2' at line 3"),
    ("a,b\n1,2\n3,4\n", ["--drop-columns", "z"], "--drop-columns: z not in {p}"),
    ("a,b\n1,-inf\n3,4\n", [], "--csv: {p}: column 'b' holds '-inf' at line 2"),
])
def test_anomaly_csv_errors_name_the_flag(tmp_path, capsys, text, args, msg):
  p = _csv(tmp_path, text)
  code, _, err = _cli(["anomaly", "--csv", str(p), *args, "--no-progress",
                       "--workdir", str(tmp_path / "run")], capsys)
  assert code == 2 and msg.format(p=p) in err, err
