"""Declaring configuration once: fields with their help, and JSON records.

Every configuration in unsupjax is a frozen dataclass. A field declared with
`option(default, "help")` carries its help text (and, when the command line
spells it differently, its flag name or choices) as dataclass metadata; the
command line generates its flags from those fields, `to_record` writes the
run record (`run.json`) and `from_record` reads it back, so a setting is
declared in exactly one place.

Metadata keys an `option` may set:
  help      one sentence; the command line appends the default.
  flag      the flag's name when it is not the field's (`lr` for
            `learning_rate`).
  choices   the allowed values.
  metavar   the placeholder in `--help`.
  positional  a positional argument instead of a flag.
  hidden    no flag: the field keeps its default (set by the command).
  scope     'run' (default: shapes the run; `--resume` must not change it),
            'grow' (may increase on resume: the epoch count), 'local' (where
            and how this process runs: paths, progress bars; not compared).
  default_help  the help's account of a default of None.

`flag_error` turns a config's "field: ..." error into "--flag: ...".

Does not offer: parsing (`unsupjax.cli.flags`), or validation (each config
checks itself in `__post_init__` with errors that name the field).
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from typing import Any

SCOPES = ("run", "grow", "local")


def option(default: Any = dataclasses.MISSING, help: str = "", *,
           default_factory: Any = dataclasses.MISSING, **meta: Any) -> Any:
  """A dataclass field with its help text and command-line metadata."""
  if meta.get("scope", "run") not in SCOPES:
    raise ValueError(f"scope: expected one of {SCOPES}, got {meta['scope']!r}")
  unknown = set(meta) - {"flag", "choices", "metavar", "positional", "hidden",
                         "scope", "default_help", "nargs", "group"}
  if unknown:
    raise ValueError(f"meta: unknown keys {sorted(unknown)}")
  return dataclasses.field(default=default, default_factory=default_factory,
                           metadata={"help": help, **meta})


def scope(field: dataclasses.Field) -> str:
  """The field's scope: 'run' (the default), 'grow' or 'local'."""
  return field.metadata.get("scope", "run")


def field_types(cls: type) -> dict[str, Any]:
  """The resolved annotations of a dataclass's fields."""
  return typing.get_type_hints(cls)


def is_config(tp: Any) -> bool:
  """Whether `tp` is a dataclass type (a nested config)."""
  return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _plain(value: Any) -> Any:
  if dataclasses.is_dataclass(value) and not isinstance(value, type):
    return to_record(value)
  if isinstance(value, (tuple, list)):
    return [_plain(v) for v in value]
  return value


def to_record(config: Any) -> dict[str, Any]:
  """A JSON-ready dict of a config (nested configs as dicts, tuples as lists)."""
  return {f.name: _plain(getattr(config, f.name)) for f in dataclasses.fields(config)}


def _strip_optional(tp: Any) -> Any:
  if typing.get_origin(tp) in (typing.Union, types.UnionType):
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if len(args) == 1:
      return args[0]
  return tp


def _from_plain(tp: Any, value: Any) -> Any:
  tp = _strip_optional(tp)
  if value is None:
    return None
  if is_config(tp):
    return from_record(tp, value)
  if typing.get_origin(tp) is tuple and isinstance(value, list):
    args = typing.get_args(tp)
    inner = args[0] if args else Any
    return tuple(_from_plain(inner, v) for v in value)
  return value


def from_record(cls: type, record: dict[str, Any]) -> Any:
  """The config of class `cls` that `to_record` wrote as `record`.

  Raises ValueError naming the keys a record holds that `cls` does not know
  (a record of another model or of another version), before constructing.
  """
  if not isinstance(record, dict):
    raise ValueError(f"record: expected a dict of {cls.__name__} fields, got "
                     f"{type(record).__name__}")
  names = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(record) - names)
  if unknown:
    raise ValueError(f"record: {cls.__name__} has no field(s) {', '.join(unknown)}")
  types_ = field_types(cls)
  return cls(**{k: _from_plain(types_[k], v) for k, v in record.items()})


def differences(old: dict[str, Any], new: dict[str, Any], cls: type,
                prefix: str = "") -> list[tuple[str, Any, Any, str]]:
  """(dotted name, old value, new value, scope) of every field of `cls` whose
  recorded values differ, nested configs included."""
  out = []
  types_ = field_types(cls)
  for f in dataclasses.fields(cls):
    a, b = old.get(f.name), new.get(f.name)
    sub = _strip_optional(types_[f.name])
    if is_config(sub) and isinstance(a, dict) and isinstance(b, dict):
      out += differences(a, b, sub, prefix + f.name + ".")
    elif a != b:
      out.append((prefix + f.name, a, b, scope(f)))
  return out


class UsageError(ValueError):
  """A command-line argument is wrong; the message names the flag."""


def flag_name(field: dataclasses.Field) -> str:
  """The command-line spelling of a field: `batch_size` -> `batch-size`."""
  return field.metadata.get("flag", field.name).replace("_", "-")


def flag_error(cls: type, err: ValueError) -> UsageError:
  """`err` ("field: ...", as configs and library functions raise it) with
  the field replaced by its flag ("--flag: ..."), for the command line."""
  msg = str(err)
  m = re.match(r"([A-Za-z_][A-Za-z0-9_.]*): ", msg)
  if m:
    name = m.group(1)
    for f in dataclasses.fields(cls):
      if f.name == name or f.metadata.get("flag") == name:
        shown = f.name if f.metadata.get("positional") else "--" + flag_name(f)
        return UsageError(shown + msg[m.end(1):])
  return UsageError(msg)
