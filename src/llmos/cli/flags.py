"""Command-line flags generated from config dataclasses, and subcommands that add their flags on
first use.

The config dataclass is the single source of truth, as in litgpt: :func:`add_flags` turns each
field into a flag ``--field-name`` whose type comes from the annotation and whose default is the
field's, and :func:`build` turns the parsed flags back into the dataclass, so a field added to
the dataclass is a flag at once. A :class:`Flag` only changes how a field is presented (another
spelling, a help text, a metavar), never its value.

The rules, by annotation: ``int``, ``float``, ``str``, ``Path`` (and ``X | None``) take one value;
``bool`` is ``--x/--no-x``; a ``Literal`` (also ``bool | Literal[...]``) is a choice;
``tuple[X, ...]`` takes several values (or, with ``Flag(append=True)``, repeats). A field
without a default is a positional argument (a required option when its Flag names it). Help
comes from the Flag, else from the field's entry under ``Attributes:`` in the dataclass
docstring, and ends with the default.

Every generated flag parses to None when it is not given, so :func:`given` tells the values the
user set from the defaults; with ``env_prefix`` it also reads a variable named after each flag
(``--max-batch`` -> ``LLMOS_MAX_BATCH``): flag > environment > dataclass default.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import os
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias, TypeVar

from llmos.errors import ConfigError

T = TypeVar("T")

# Annotation -> (argparse ``type``, how an error names it). The builtins themselves are the
# converters so that a bad flag value reads as before ("argument --port: invalid int value").
SCALARS: dict[Any, tuple[Callable[[str], Any], str]] = {
    int: (int, "an integer"),
    float: (float, "a number"),
    str: (str, "a string"),
    Path: (Path, "a path"),
}
TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")


@dataclass(frozen=True)
class Flag:
    """How one dataclass field appears on the command line; every attribute is optional.

    Attributes:
        name: the option string (default: ``--`` + the field name with dashes).
        help: help text (default: the field's entry in the dataclass docstring).
        metavar: the value's placeholder in help (default: the name in capitals).
        negate: a bool field shown as one switch that sets it to False (``--quiet`` for
            ``progress``) instead of ``--x/--no-x``.
        append: a tuple field as a repeatable flag (``--stop A --stop B``) instead of one flag
            followed by its values.
    """

    name: str | None = None
    help: str | None = None
    metavar: str | None = None
    negate: bool = False
    append: bool = False


Flags = Mapping[str, Flag]
# What ``add_subparsers`` returns, the argument every ``add_<command>`` function takes.
Subcommands: TypeAlias = "argparse._SubParsersAction[CommandParser]"


class CommandParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that can add arguments on first use (:meth:`defer`).

    ``llmos``'s parser is built on every run; a command whose flags need a heavy import (the
    decoding defaults of ``generate`` live next to torch) defers them, so that ``llmos users
    list`` does not pay for importing torch.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deferred: list[Callable[[CommandParser], None]] = []

    def defer(self, add_arguments: Callable[[CommandParser], None]) -> None:
        """Call ``add_arguments(self)`` before this parser first parses or prints help."""
        self._deferred.append(add_arguments)

    def _add_deferred(self) -> None:
        while self._deferred:
            self._deferred.pop(0)(self)

    def parse_known_args(  # type: ignore[override]
        self, args: Any = None, namespace: Any = None
    ) -> tuple[argparse.Namespace, list[str]]:
        self._add_deferred()
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        self._add_deferred()
        return super().format_help()

    def format_usage(self) -> str:
        self._add_deferred()
        return super().format_usage()


def add_flags(parser: argparse.ArgumentParser, cls: type, flags: Flags | None = None) -> None:
    """Add one argument per field of dataclass ``cls`` to ``parser``, in field order.

    Raises:
        TypeError: a field whose annotation has no command-line form (a programming error).
    """
    flags = flags or {}
    unknown = set(flags) - {f.name for f in _fields(cls)}
    assert not unknown, f"Flag for no field of {cls.__name__}: {sorted(unknown)}"
    hints = typing.get_type_hints(cls)
    docs = attribute_docs(cls)
    for field in _fields(cls):
        spec = flags.get(field.name, Flag())
        where = f"{cls.__name__}.{field.name}"
        names, kwargs = _argument(field, hints[field.name], spec, docs.get(field.name), where)
        parser.add_argument(*names, **kwargs)


def given(
    cls: type,
    args: argparse.Namespace,
    flags: Flags | None = None,
    *,
    env_prefix: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The field values of ``cls`` that the command line set (or, with ``env_prefix``, the
    environment: a variable per flag, ``--max-batch`` -> ``LLMOS_MAX_BATCH``; empty = unset).

    Raises:
        ConfigError: an environment variable whose value is not of the field's type.
    """
    flags = flags or {}
    environ = os.environ if environ is None else environ
    hints = typing.get_type_hints(cls)
    found: dict[str, Any] = {}
    for field in _fields(cls):
        tp = _without_none(hints[field.name])
        spec = flags.get(field.name, Flag())
        value = getattr(args, field.name, None)
        if value is not None:
            choices = _choices(tp)
            if choices is not None:
                value = choices[value]
            elif typing.get_origin(tp) is tuple:
                value = tuple(value)
            found[field.name] = value
            continue
        if env_prefix is None or (spec.name is None and _default(field) is dataclasses.MISSING):
            continue
        var = env_name(env_prefix, field.name, spec)
        text = environ.get(var, "").strip()
        if text:
            value = _from_text(tp, text, var)
            found[field.name] = (not value) if spec.negate else value
    return found


def build(
    cls: type[T],
    args: argparse.Namespace,
    flags: Flags | None = None,
    *,
    env_prefix: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> T:
    """``cls`` from the parsed flags (and the environment, with ``env_prefix``); the fields
    neither sets keep the dataclass defaults. See :func:`given`."""
    return cls(**given(cls, args, flags, env_prefix=env_prefix, environ=environ))


def values(cls: type, args: argparse.Namespace, flags: Flags | None = None) -> dict[str, Any]:
    """Every field of ``cls``: the parsed flag where given, else the dataclass default (for
    functions that take the fields as keyword arguments rather than the dataclass)."""
    defaults = {f.name: _default(f) for f in _fields(cls)}
    return {**defaults, **given(cls, args, flags)}


def env_name(prefix: str, field: str, spec: Flag | None = None) -> str:
    """The environment variable of a field's flag: ``prefix`` + the flag name in capitals,
    ``_`` for ``-`` (``--auth-cache`` -> ``LLMOS_AUTH_CACHE``)."""
    name = (spec.name if spec and spec.name else None) or field
    return prefix + name.lstrip("-").upper().replace("-", "_")


def attribute_docs(cls: type) -> dict[str, str]:
    """``{field: text}`` from the ``Attributes:`` section of a Google-style class docstring."""
    lines = (inspect.getdoc(cls) or "").splitlines()
    if "Attributes:" not in lines:
        return {}
    docs: dict[str, str] = {}
    name = None
    for line in lines[lines.index("Attributes:") + 1 :]:
        if line and not line.startswith(" "):
            break  # the next section
        match = re.match(r" {4}(\w+): (.*)", line)
        if match:
            name = match[1]
            docs[name] = match[2]
        elif name and line.strip():
            docs[name] += " " + line.strip()
    # Help reads like the rest of argparse's: no reST quotes, no closing full stop.
    return {k: v.replace("``", "").removesuffix(".") for k, v in docs.items()}


def _fields(cls: type) -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(cls) if f.init]


def _default(field: dataclasses.Field[Any]) -> Any:
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def _without_none(tp: Any) -> Any:
    """``X`` for ``X | None``; other annotations as they are."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
        assert len(args) == len(typing.get_args(tp)), f"{tp}: a union with None takes one type"
    return tp


def _choices(tp: Any) -> dict[str, Any] | None:
    """``{text: value}`` for a ``Literal`` or a union of ``bool`` and ``Literal``s, else None."""
    parts = (
        typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
    )
    choices: dict[str, Any] = {}
    for part in parts:
        if part is bool:
            choices |= {"true": True, "false": False}
        elif typing.get_origin(part) is typing.Literal:
            choices |= {str(v): v for v in typing.get_args(part)}
        else:
            return None
    return choices if typing.get_origin(tp) is not None else None


def _argument(
    field: dataclasses.Field[Any], annotation: Any, spec: Flag, doc: str | None, where: str
) -> tuple[list[str], dict[str, Any]]:
    """``add_argument``'s arguments for one field (see the module docstring for the rules)."""
    tp = _without_none(annotation)
    default = _default(field)
    kwargs: dict[str, Any] = {"help": spec.help if spec.help is not None else doc}
    choices = _choices(tp)
    if choices is not None:
        kwargs["choices"] = list(choices)
    elif typing.get_origin(tp) in (tuple, list):
        (item, *_) = typing.get_args(tp) or (str,)
        kwargs["type"] = _scalar(where, item)
        if spec.append:
            kwargs["action"] = "append"
        else:
            kwargs["nargs"] = "*"
    elif tp is not bool:
        kwargs["type"] = _scalar(where, tp)
    if default is dataclasses.MISSING and spec.name is None:
        return [field.name], kwargs  # a positional argument
    name = spec.name or "--" + field.name.replace("_", "-")
    kwargs |= {"dest": field.name, "default": None}  # None: not given (see given())
    if tp is bool and spec.negate:
        kwargs |= {"action": "store_const", "const": False}
    elif tp is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
    elif choices is None:
        kwargs["metavar"] = spec.metavar or name.lstrip("-").upper().replace("-", "_")
    if default is dataclasses.MISSING:
        kwargs["required"] = True
    else:
        kwargs["help"] = _with_default(kwargs["help"], _show_default(tp, default, name, spec))
    return [name], kwargs


def _scalar(where: str, tp: Any) -> Callable[[str], Any]:
    if tp not in SCALARS:
        raise TypeError(f"{where}: no command-line form for {tp!r}")
    return SCALARS[tp][0]


def _show_default(tp: Any, default: Any, name: str, spec: Flag) -> str | None:
    """The default as help shows it, or None where there is nothing to show."""
    if default is None or spec.negate or default == ():
        return None
    choices = _choices(tp)
    if choices is not None:
        return next(text for text, value in choices.items() if value == default)
    if tp is bool:
        return name if default else "--no-" + name.removeprefix("--")
    if isinstance(default, tuple | list):
        return " ".join(map(str, default))
    return str(default)


def _with_default(help_text: str | None, shown: str | None) -> str | None:
    """Help text ending with ``(default: ...)``, unless it already speaks of its default."""
    if shown is None or (help_text and "default" in help_text):
        return help_text
    suffix = f"(default: {shown.replace('%', '%%')})"
    return f"{help_text} {suffix}" if help_text else suffix


def _from_text(tp: Any, text: str, var: str) -> Any:
    """An environment variable's text as a value of annotation ``tp``."""
    choices = _choices(tp)
    if choices is not None:
        if text.lower() in choices:
            return choices[text.lower()]
        raise ConfigError(f"{var}: expected one of {list(choices)}, got {text!r}")
    if tp is bool:
        if text.lower() in TRUE + FALSE:
            return text.lower() in TRUE
        raise ConfigError(f"{var}: expected true or false, got {text!r}")
    if typing.get_origin(tp) in (tuple, list):
        (item, *_) = typing.get_args(tp) or (str,)
        # Commas or spaces separate the items: LLMOS_PRELOAD="sentiment-zh,ner-zh".
        items = [_from_text(item, part, var) for part in re.split(r"[,\s]+", text) if part]
        return tuple(items) if typing.get_origin(tp) is tuple else items
    convert, what = SCALARS[tp]
    try:
        return convert(text)
    except ValueError:
        raise ConfigError(f"{var}: expected {what}, got {text!r}") from None
