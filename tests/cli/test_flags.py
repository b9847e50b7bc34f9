"""Flags generated from config dataclasses: types, help, defaults, the round trip back to the
dataclass, and environment variables (flag > environment > default)."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest

from llmos.cli import build_parser
from llmos.cli.compress import PRUNE_FLAGS, QUANTIZE_FLAGS, TRIM_VOCAB_FLAGS
from llmos.cli.flags import CommandParser, Flag, Flags, add_flags, build, env_name, given, values
from llmos.cli.infer import GENERATION_FLAGS
from llmos.cli.serve import ENV_PREFIX, SERVE_FLAGS
from llmos.config import PruneConfig, QuantizeConfig
from llmos.config.trim_vocab import TrimVocabConfig
from llmos.errors import ConfigError
from llmos.inference.generate import GenerationConfig
from llmos.serve.settings import ServeSettings


@dataclass
class Toy:
    """A config with one field of each kind.

    Attributes:
        path: where it goes.
        count: how many, said over
            two lines.
    """

    path: str
    count: int = 3
    rate: float | None = None
    mode: Literal["fast", "slow"] = "fast"
    stopping: bool | Literal["never"] = False
    fancy: bool = True
    verbose: bool = True
    tags: tuple[str, ...] = ()
    where: Path = Path("runs")
    items: list[str] = field(default_factory=lambda: ["a"])


TOY_FLAGS = {"verbose": Flag("--quiet", help="say less", negate=True), "rate": Flag("--lr")}


def toy_parser() -> CommandParser:
    parser = CommandParser(prog="toy")
    add_flags(parser, Toy, TOY_FLAGS)
    return parser


def test_each_annotation_has_its_flag() -> None:
    args = toy_parser().parse_args(
        shlex.split(
            "p --count 4 --lr 0.5 --mode slow --stopping never --no-fancy --quiet --tags a b "
            "--where w --items x y"
        )
    )
    assert build(Toy, args, TOY_FLAGS) == Toy(
        "p", 4, 0.5, "slow", "never", False, False, ("a", "b"), Path("w"), ["x", "y"]
    )
    assert build(Toy, toy_parser().parse_args(["p"]), TOY_FLAGS) == Toy("p")
    assert given(Toy, toy_parser().parse_args(["p", "--stopping", "true"])) == {
        "path": "p",
        "stopping": True,
    }


def test_help_comes_from_the_flag_or_the_docstring_and_ends_with_the_default() -> None:
    text = " ".join(toy_parser().format_help().split())
    assert "path where it goes" in text
    assert "--count COUNT how many, said over two lines (default: 3)" in text
    assert "--lr LR" in text and "(default: None)" not in text
    assert "--mode {fast,slow} (default: fast)" in text
    assert "--stopping {true,false,never} (default: false)" in text
    assert "--fancy, --no-fancy (default: --fancy)" in text
    assert "--quiet say less --tags" in text  # a switch shows no default
    assert "--where WHERE (default: runs)" in text


def test_a_type_without_a_flag_form_is_refused() -> None:
    @dataclass
    class Bad:
        table: dict[str, int] = field(default_factory=dict)

    with pytest.raises(TypeError, match=r"Bad\.table"):
        add_flags(argparse.ArgumentParser(), Bad)


def test_environment_below_flags_above_defaults() -> None:
    env = {"TOY_COUNT": "7", "TOY_LR": "0.25", "TOY_TAGS": "a, b c", "TOY_QUIET": "yes"}
    env |= {"TOY_MODE": "", "TOY_STOPPING": "Never", "TOY_FANCY": "off"}
    args = toy_parser().parse_args(["p", "--count", "5"])
    cfg = build(Toy, args, TOY_FLAGS, env_prefix="TOY_", environ=env)
    assert cfg == Toy("p", 5, 0.25, "fast", "never", False, False, ("a", "b", "c"))
    assert env_name("TOY_", "rate", TOY_FLAGS["rate"]) == "TOY_LR"


@pytest.mark.parametrize(
    ("var", "text", "message"),
    [
        ("TOY_COUNT", "many", "TOY_COUNT: expected an integer, got 'many'"),
        ("TOY_LR", "fast", "TOY_LR: expected a number, got 'fast'"),
        ("TOY_MODE", "medium", "TOY_MODE: expected one of ['fast', 'slow'], got 'medium'"),
        ("TOY_FANCY", "maybe", "TOY_FANCY: expected true or false, got 'maybe'"),
    ],
)
def test_a_bad_environment_value_names_the_variable_and_the_type(
    var: str, text: str, message: str
) -> None:
    args = toy_parser().parse_args(["p"])
    with pytest.raises(ConfigError) as e:
        build(Toy, args, TOY_FLAGS, env_prefix="TOY_", environ={var: text})
    assert str(e.value) == message


# Every config dataclass with a CLI: its command line (before the flags) and its Flags.
COMMANDS: list[tuple[type, list[str], Flags]] = [
    (PruneConfig, ["compress", "prune"], PRUNE_FLAGS),
    (QuantizeConfig, ["compress", "quantize"], QUANTIZE_FLAGS),
    (TrimVocabConfig, ["compress", "trim-vocab"], TRIM_VOCAB_FLAGS),
    (ServeSettings, ["serve"], SERVE_FLAGS),
    (GenerationConfig, ["generate", "ckpt", "--prompt", "p"], GENERATION_FLAGS),
]


def _other_value(tp: Any, default: Any) -> Any:
    """A value of annotation ``tp`` that is not ``default``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        options = [v for a in args for v in _options(a)]
        if options:
            return next(v for v in options if v != default)
        return _other_value(args[0], default)
    if origin is typing.Literal or tp is bool:
        return next(v for v in _options(tp) if v != default)
    if origin is tuple:
        return ("a", "b c")
    number = default if isinstance(default, int | float) else 0
    if tp is int:
        return number + 3
    if tp is float:
        return number + 0.25
    return {str: "x y", Path: Path("d")}[tp]


def _options(tp: Any) -> list[Any]:
    if tp is bool:
        return [True, False]
    return list(typing.get_args(tp)) if typing.get_origin(tp) is typing.Literal else []


def _argv(cls: type, chosen: dict[str, Any], flags: Flags) -> list[str]:
    """The command line that sets each field to ``chosen``'s value, as a user would type it."""
    hints = typing.get_type_hints(cls)
    argv: list[str] = []
    for f in dataclasses.fields(cls):
        if chosen.get(f.name) is None:
            continue  # not given
        spec, value = flags.get(f.name, Flag()), chosen[f.name]
        if f.default is dataclasses.MISSING and spec.name is None:
            argv.append(str(value))
            continue
        name = spec.name or "--" + f.name.replace("_", "-")
        if hints[f.name] is bool:
            argv += [name] if spec.negate or value else ["--no-" + name[2:]]
        elif isinstance(value, tuple):
            argv += [x for v in value for x in (name, v)] if spec.append else [name, *value]
        else:
            argv += [name, str(value).lower() if isinstance(value, bool) else str(value)]
    return argv


@pytest.mark.parametrize(
    ("cls", "command", "flags"), COMMANDS, ids=[c[0].__name__ for c in COMMANDS]
)
def test_every_field_round_trips_through_its_flag(
    cls: type, command: list[str], flags: Flags
) -> None:
    # Every field, set to a value other than its default: a field added later is covered too.
    hints = typing.get_type_hints(cls)
    chosen = {
        f.name: _other_value(hints[f.name], f.default) for f in dataclasses.fields(cls) if f.init
    }
    args = build_parser().parse_args([*command, *_argv(cls, chosen, flags)])
    assert given(cls, args, flags) == chosen
    # Only the required fields given: the rest keep the dataclass defaults.
    required = {
        f.name: chosen[f.name]
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    args = build_parser().parse_args([*command, *_argv(cls, required, flags)])
    assert given(cls, args, flags) == required


@pytest.mark.parametrize(
    ("cfg", "command", "flags"),
    [
        (
            PruneConfig("ck", heads=0.25, ffn=0.5, out_dir="o", progress=False, num_threads=2),
            ["compress", "prune"],
            PRUNE_FLAGS,
        ),
        (
            QuantizeConfig("ck", "q", method="onnx-int8", smooth=0.8, keep_fp32=2),
            ["compress", "quantize"],
            QUANTIZE_FLAGS,
        ),
        (
            TrimVocabConfig(
                "ck",
                "o",
                "zh,en",
                ("intent-zh", "pku"),
                keep_top=9,
                cjk_characters=False,
                progress=False,
            ),
            ["compress", "trim-vocab"],
            TRIM_VOCAB_FLAGS,
        ),
        (
            ServeSettings(Path("m"), port=9000, preload=("a", "b"), auth_cache_s=0.0),
            ["serve"],
            SERVE_FLAGS,
        ),
    ],
    ids=["prune", "quantize", "trim-vocab", "serve"],
)
def test_a_config_round_trips_dataclass_flags_dataclass(
    cfg: Any, command: list[str], flags: Flags
) -> None:
    chosen = dataclasses.asdict(cfg)
    args = build_parser().parse_args([*command, *_argv(type(cfg), chosen, flags)])
    assert build(type(cfg), args, flags) == cfg


def test_generation_options_are_every_field_given_or_default() -> None:
    args = build_parser().parse_args(
        shlex.split("generate ck --prompt p --num-beams 3 --early-stopping never --stop a --stop b")
    )
    options = values(GenerationConfig, args, GENERATION_FLAGS)
    expected = GenerationConfig(num_beams=3, early_stopping="never", stop=("a", "b"))
    assert options == dataclasses.asdict(expected)
    assert GenerationConfig(**options) == expected


def test_serve_reads_llmos_variables_named_after_its_flags() -> None:
    env = {
        "LLMOS_MODELS": "/srv/models",
        "LLMOS_PORT": "9001",
        "LLMOS_AUTH_CACHE": "0",
        "LLMOS_PRELOAD": "sentiment-zh,ner-zh",
        "LLMOS_DATABASE_URL": "sqlite:///x.db",
        "LLMOS_HOME": "/not/a/setting",
    }
    args = build_parser().parse_args(["serve", "--port", "9002"])
    settings = build(ServeSettings, args, SERVE_FLAGS, env_prefix=ENV_PREFIX, environ=env)
    assert settings == ServeSettings(
        models_dir=Path("/srv/models"),
        port=9002,  # the flag wins
        auth_cache_s=0.0,
        preload=("sentiment-zh", "ner-zh"),
        database_url="sqlite:///x.db",
    )
    empty = build(ServeSettings, args, SERVE_FLAGS, env_prefix=ENV_PREFIX, environ={})
    assert empty == ServeSettings(port=9002)
