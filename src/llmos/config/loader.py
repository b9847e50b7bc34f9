"""Typed dataclass configs from YAML values and dotted ``key=value`` overrides.

The dataclass is the single source of truth; YAML only sets values. Every key is checked against
the dataclass fields, every value against the field's type, and a mistake is one line naming the
key (and the file) with what was expected. No torch here.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from llmos.errors import ConfigError

T = TypeVar("T")


def load_config(
    cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None
) -> T:
    """Build ``cls`` from a YAML file and ``key=value`` overrides (later wins).

    Args:
        cls: a dataclass type whose fields may be nested dataclasses.
        path: YAML file with a mapping of values; ``None`` uses the defaults.
        overrides: strings like ``train.lr=3e-4`` or ``model.num_layers=2``.

    Raises:
        ConfigError: unreadable YAML, unknown key, wrong type, or a failed validation.
    """
    values: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: config file not found")
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise ConfigError(f"{p}: not valid YAML: {str(e).splitlines()[0]}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: expected a mapping of config keys at the top level")
        values = loaded
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected key=value, e.g. train.lr=3e-4")
        _set_dotted(values, key.strip(), yaml.safe_load(raw) if raw.strip() else "")
    return from_dict(cls, values, source=source)


def from_dict(cls: type[T], values: dict[str, Any], source: str = "config", prefix: str = "") -> T:
    """Instantiate dataclass ``cls`` from a nested mapping, checking keys and types."""
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: {prefix.rstrip('.') or 'config'}: expected a mapping")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"{source}: unknown key {name!r} (known keys here: {known})")
        kwargs[key] = _coerce(hints[key], value, name, source)
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{source}: {prefix.rstrip('.') or 'config'}: {e}") from None


def to_dict(obj: Any) -> dict[str, Any]:
    """A plain nested dict of a config dataclass (for saving next to a run)."""
    return dataclasses.asdict(obj)


def _set_dotted(values: dict[str, Any], key: str, value: Any) -> None:
    """Set ``a.b.c`` in nested mappings; a number indexes a list (``heads.0.weight``)."""
    parts = key.split(".")
    node: Any = values
    for part in parts[:-1]:
        if isinstance(node, list):
            child = node[_list_index(node, part, key)]
        else:
            child = node.setdefault(part, {})
        if not isinstance(child, dict | list):
            raise ConfigError(f"override {key}: {part!r} is a value, not a section")
        node = child
    if isinstance(node, list):
        node[_list_index(node, parts[-1], key)] = value
    else:
        node[parts[-1]] = value


def _list_index(items: list[Any], part: str, key: str) -> int:
    if not part.isdigit() or int(part) >= len(items):
        raise ConfigError(
            f"override {key}: {part!r} must be an index of the list (0-{len(items) - 1})"
        )
    return int(part)


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _discriminate(args: tuple[Any, ...], value: Any, name: str, source: str) -> Any:
    """For a union of config dataclasses told apart by a ``model_type`` literal (BERT | GPT),
    the one that ``value["model_type"]`` names (the first when the key is absent)."""
    kinds: dict[Any, Any] = {}
    for arg in args:
        if arg is type(None):
            continue
        if not (dataclasses.is_dataclass(arg) and isinstance(arg, type)):
            return None
        field = typing.get_type_hints(arg).get("model_type")
        if field is None or typing.get_origin(field) is not typing.Literal:
            return None
        for kind in typing.get_args(field):
            kinds.setdefault(kind, arg)
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: {name}: expected a mapping of keys, got {value!r}")
    kind = value.get("model_type", next(iter(kinds)))
    if kind not in kinds:
        raise ConfigError(
            f"{source}: {name}.model_type: expected one of {list(kinds)}, got {kind!r}"
        )
    return kinds[kind]


def _coerce(tp: Any, value: Any, name: str, source: str) -> Any:
    """Check ``value`` against annotation ``tp``; convert the few safe cases (int -> float)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        chosen = _discriminate(args, value, name, source)
        if chosen is not None:
            return _coerce(chosen, value, name, source)
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, name, source)
            except ConfigError as e:
                errors.append(e)
        literals = [a for a in args if typing.get_origin(a) is typing.Literal]
        if literals and len(literals) + (type(None) in args) == len(args):
            choices = [c for a in literals for c in typing.get_args(a)]
            null = " or null" if type(None) in args else ""
            raise ConfigError(f"{source}: {name}: expected one of {choices}{null}, got {value!r}")
        raise ConfigError(f"{source}: {name}: expected {_type_name(tp)}, got {value!r}")
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{source}: {name}: expected one of {list(choices)}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{source}: {name}: expected a list, got {value!r}")
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        items = [_coerce(item_tp, v, f"{name}[{i}]", source) for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {name}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {name}: expected a mapping of keys, got {value!r}")
        return from_dict(tp, value, source=source, prefix=f"{name}.")
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{source}: {name}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{source}: {name}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML reads "3e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{source}: {name}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{source}: {name}: expected a string, got {value!r}")
    raise ConfigError(f"{source}: {name}: unsupported config type {_type_name(tp)}")
