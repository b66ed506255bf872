"""Flags from a config: one frozen dataclass per command becomes its parser.

A field `learning_rate: float = option(1e-3, "Adam learning rate", flag="lr")`
becomes `--lr LR` with that help and "(default: 0.001)"; `bool` fields
become `--name/--no-name`; `tuple[int, ...]` fields take one or more values;
`X | None` fields accept the value or keep None. Parsing yields the config
itself (`to_config`), built through its `__post_init__`, so the checks live
in the config and the ValueError it raises ("field: expected ...") is
translated to the flag the user typed (`flag_error`).

Does not offer: subcommands (`unsupjax.cli`), or any task logic.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any

from unsupjax import config as config_lib
from unsupjax.config import flag_error, flag_name


def _base_type(tp: Any) -> tuple[Any, bool]:
  """(the type without Optional, whether None is allowed)."""
  stripped = config_lib._strip_optional(tp)
  return stripped, stripped is not tp


def _describe_default(field: dataclasses.Field, value: Any) -> str:
  if "default_help" in field.metadata:
    return field.metadata["default_help"]
  if isinstance(value, bool):
    return "on" if value else "off"
  if isinstance(value, (tuple, list)):
    return " ".join(str(v) for v in value)
  return "none" if value is None else str(value)


def _parse_optional(inner):
  def parse(text: str):
    return None if text.lower() == "none" else inner(text)
  parse.__name__ = getattr(inner, "__name__", "value")
  return parse


def add_config_flags(parser: argparse.ArgumentParser, cls: type) -> None:
  """Adds one flag (or positional) per visible field of config class `cls`."""
  types = config_lib.field_types(cls)
  groups: dict[str, argparse._ArgumentGroup] = {}
  for f in dataclasses.fields(cls):
    meta = f.metadata
    if meta.get("hidden"):
      continue
    tp, optional = _base_type(types[f.name])
    required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    default = (None if required else f.default if f.default is not dataclasses.MISSING
               else f.default_factory())
    help_ = meta.get("help", "")
    if not meta.get("positional"):
      help_ = f"{help_} (default: {_describe_default(f, default)})".strip()
    kw: dict[str, Any] = {"help": help_, "dest": f.name}
    if "choices" in meta:
      kw["choices"] = meta["choices"]
    if "metavar" in meta:
      kw["metavar"] = meta["metavar"]
    elif "choices" not in meta and tp is not bool:
      kw["metavar"] = flag_name(f).replace("-", "_").upper()
    if tp is bool:
      kw["action"] = argparse.BooleanOptionalAction if default is not False else "store_true"
      if default is False:
        kw["help"] = meta.get("help", "")
    elif typing.get_origin(tp) in (tuple, list) or tp in (tuple, list):
      args = [a for a in typing.get_args(tp) if a is not Ellipsis]
      kw["type"] = args[0] if args else str
      kw["nargs"] = meta.get("nargs", "+")
    else:
      kw["type"] = _parse_optional(tp) if optional and "choices" not in meta else tp
      if "nargs" in meta:
        kw["nargs"] = meta["nargs"]
    group_name = meta.get("group")
    target = parser
    if meta.get("positional"):
      kw.pop("dest")
      if not required:
        kw.setdefault("nargs", "?")
        kw["default"] = default
      parser.add_argument(f.name, **kw)
      continue
    if group_name is not None:
      if group_name not in groups:
        groups[group_name] = parser.add_argument_group(group_name)
      target = groups[group_name]
    target.add_argument("--" + flag_name(f), default=argparse.SUPPRESS, **kw)


def to_config(cls: type, namespace: argparse.Namespace, **overrides: Any) -> Any:
  """The config of class `cls` from parsed flags (fields not given keep
  their defaults); a bad value raises UsageError naming its flag."""
  values = {f.name: getattr(namespace, f.name) for f in dataclasses.fields(cls)
            if hasattr(namespace, f.name)}
  values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
  values.update(overrides)
  try:
    return cls(**values)
  except ValueError as e:
    raise flag_error(cls, e) from None
