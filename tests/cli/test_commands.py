"""Every command's help, today's flag spellings and defaults, and the server's environment."""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from llmos.cli import build_parser, main
from llmos.cli.compress import PRUNE_FLAGS
from llmos.cli.flags import build
from llmos.config import PruneConfig, QuantizeConfig
from llmos.inference.generate import GenerationConfig
from llmos.serve.settings import ServeSettings


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every runnable command line of ``parser`` (``("compress", "prune")``, ...)."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return [path]
    return [c for name, p in subs[0].choices.items() for c in _commands(p, (*path, name))]


COMMANDS = _commands(build_parser())


def _help(capsys: pytest.CaptureFixture[str], *command: str) -> str:
    with pytest.raises(SystemExit) as e:
        main([*command, "--help"])
    assert e.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # one line: no wrapping to match


def _parser(*command: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = build_parser()
    for name in command:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[name]
    parser.format_help()  # adds deferred arguments
    return parser


def _options(*command: str) -> set[str]:
    return {o for a in _parser(*command)._actions for o in a.option_strings}


def test_every_command_is_listed() -> None:
    assert len(COMMANDS) == 58
    assert (
        ("calibrate",) in COMMANDS
        and ("setfit",) in COMMANDS
        and ("self-train",) in COMMANDS
        and ("recommend", "retrain") in COMMANDS
    )
    assert ("compress", "prune") in COMMANDS and ("users", "revoke") in COMMANDS
    assert ("support", "kb", "search") in COMMANDS and ("support", "kb", "pairs") in COMMANDS
    assert ("recommend", "train") in COMMANDS and ("recommend", "search") in COMMANDS
    assert ("write", "correct") in COMMANDS and ("write", "suggest") in COMMANDS
    assert ("write", "materials", "build") in COMMANDS and ("write", "lm") in COMMANDS


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help(capsys: pytest.CaptureFixture[str], command: tuple[str]) -> None:
    assert _help(capsys, *command).startswith(f"usage: llmos {' '.join(command)} [-h]")


# The flags as they were spelled before they were generated from the dataclasses.
TODAY = {
    ("compress", "prune"): "--heads --ffn --recover-steps --recover-lr --out --data --label-key "
    "--importance-examples --normalize --no-normalize --batch-size --threads --bench-seconds "
    "--quiet",
    ("compress", "quantize"): "--out --method --data --label-key --smooth --keep-fp32 "
    "--calibration --limit",
    ("serve",): "--models --host --port --memory-budget --max-batch --max-wait-ms --queue-size "
    "--timeout --rate-limit --auth-cache --max-body --preload",
    ("generate",): "--prompt --input --output --max-new-tokens --strategy --temperature --top-k "
    "--top-p --repetition-penalty --no-repeat-ngram-size --seed --num-beams --length-penalty "
    "--early-stopping --num-return-sequences --stop --raw --no-stream --json --batch-size",
}


@pytest.mark.parametrize("command", TODAY, ids=" ".join)
def test_the_flags_keep_their_spellings(command: tuple[str, ...]) -> None:
    assert set(TODAY[command].split()) <= _options(*command)


def test_serve_has_a_flag_per_setting() -> None:
    dests = {a.dest for a in _parser("serve")._actions} - {"help"}
    assert dests == {f.name for f in dataclasses.fields(ServeSettings)}


def test_defaults_are_the_dataclasses_and_as_before(capsys: pytest.CaptureFixture[str]) -> None:
    # Known values: these were the hand-written argparse defaults, equal to the dataclasses'.
    cfg = build(PruneConfig, build_parser().parse_args(["compress", "prune", "ck"]), PRUNE_FLAGS)
    assert cfg == PruneConfig("ck")
    assert (cfg.heads, cfg.ffn, cfg.recover_lr, cfg.importance_examples) == (0.4, 0.0, 1e-4, 2048)
    assert (cfg.normalize, cfg.progress, cfg.num_threads, cfg.bench_seconds) == (
        True,
        True,
        None,
        5,
    )
    text = _help(capsys, "compress", "prune")
    assert "--heads HEADS fraction of all heads to remove, in [0, 1) (default: 0.4)" in text
    assert "--recover-lr RECOVER_LR peak learning rate (default: 0.0001)" in text
    assert "(Michel et al.) (default: --normalize)" in text
    assert "--quiet no progress bar" in text

    assert QuantizeConfig("c", "o").calibration == 256
    text = _help(capsys, "compress", "quantize")
    assert (
        "--method {int8-dynamic,onnx-int8} int8-dynamic: PyTorch int8 kernels; onnx-int8: "
        "ONNX Runtime (default: int8-dynamic)"
    ) in text
    assert "--keep-fp32 N keep the N most sensitive linear layers in fp32 (default: 0)" in text
    assert "--calibration CALIBRATION calibration texts (default: 256)" in text

    settings = ServeSettings()
    assert (settings.models_dir, settings.port, settings.max_body_bytes) == (
        Path("runs"),
        8000,
        1 << 20,
    )
    text = _help(capsys, "serve")
    assert "--models MODELS directory of checkpoints (default: runs)" in text
    assert "--host HOST the address to listen on (default: 127.0.0.1)" in text
    assert "--auth-cache SECONDS remember authenticated keys this long" in text
    assert "--max-body BYTES larger request bodies are refused with 413 (default: 1048576)" in text
    assert "--preload [MODEL ...] load at start" in text

    # Decoding defaults are GenerationConfig's, whatever they are.
    g = GenerationConfig()
    text = _help(capsys, "generate")
    assert f"--max-new-tokens MAX_NEW_TOKENS (default: {g.max_new_tokens})" in text
    assert f"--strategy {{greedy,sample}} (default: {g.strategy})" in text
    assert f"--repetition-penalty REPETITION_PENALTY (default: {g.repetition_penalty})" in text
    assert "--stop TEXT stop string (repeatable); cut before it" in text


def test_a_bad_environment_value_is_one_line_exit_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LLMOS_MAX_BATCH", "lots")
    assert main(["serve", "--models", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == "llmos: error: LLMOS_MAX_BATCH: expected an integer, got 'lots'\n"
    monkeypatch.setenv("LLMOS_MAX_BATCH", "0")
    assert main(["serve", "--models", str(tmp_path)]) == 2
    assert "serve setting max_batch is out of range: 0" in capsys.readouterr().err
    monkeypatch.delenv("LLMOS_MAX_BATCH")
    monkeypatch.setenv("LLMOS_MODELS", str(tmp_path / "nowhere"))
    assert main(["serve"]) == 2
    assert "nowhere does not exist" in capsys.readouterr().err


def test_parsing_imports_no_torch() -> None:
    # `llmos users list` should not wait for torch: only `generate` needs it to build its flags.
    code = (
        "import sys; from llmos.cli import build_parser; p = build_parser(); "
        "p.format_help(); p.parse_args(['compress', 'prune', 'ck']); "
        "p.parse_args(['serve']); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
