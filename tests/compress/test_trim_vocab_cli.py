"""``llmos compress trim-vocab`` end to end: corpus names resolved under $LLMOS_HOME, the
report printed, a checkpoint that loads; bad input is one line and exit status 2."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

import llmos
from llmos.checkpoint.io import save_checkpoint
from llmos.cli import main
from llmos.config.model import GPTConfig
from llmos.models.gpt import GPT
from llmos.text.tokenizer import train_bpe


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trim_corpus: Path) -> Path:
    """$LLMOS_HOME with the tiny corpus prepared as ``tiny`` (as `llmos data prepare` would)."""
    monkeypatch.setenv("LLMOS_HOME", str(tmp_path / "home"))
    shutil.copytree(trim_corpus, tmp_path / "home" / "data" / "corpus" / "tiny")
    return tmp_path / "home"


def test_trim_vocab_command(
    home: Path, unigram_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "trimmed"
    code = main(
        ["compress", "trim-vocab", str(unigram_checkpoint), "--corpus", "tiny", "--out", str(out),
         "--quiet"]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "vocabulary" in printed and "tiny/test" in printed and str(out) in printed
    m = llmos.load(out)
    assert m.embed(["我们今天学习"]).shape == (1, 32)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--corpus", "nope"], "unknown corpus 'nope'"),
        (["--corpus", "tiny", "--keep-top", "0"], "--keep-top"),
        (["--corpus", "tiny", "--splits", "train,dev"], "--splits"),
        ([], "nothing to count"),
        (["--data", "no-such-dataset"], "no-such-dataset"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    home: Path,
    unigram_checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    flags: list[str],
    message: str,
) -> None:
    argv = ["compress", "trim-vocab", str(unigram_checkpoint), "--out", str(tmp_path / "o")]
    assert main(argv + flags) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("llmos: error:") and message in err and "\n" not in err
    assert not (tmp_path / "o").exists()


def test_a_gpt_checkpoint_is_refused(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    text = tmp_path / "t.txt"
    text.write_text("hello world, a tiny corpus for a tiny decoder\n" * 20)
    tok = train_bpe([text], 300, min_frequency=1)
    torch.manual_seed(0)
    cfg = GPTConfig(
        vocab_size=tok.get_vocab_size(), hidden_size=32, num_layers=1, num_heads=2,
        intermediate_size=64, max_position=32,
    )  # fmt: skip
    ckpt = save_checkpoint(tmp_path / "gpt", GPT(cfg), cfg, tok)
    argv = ["compress", "trim-vocab", str(ckpt), "--corpus", "tiny", "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "trims encoder (BERT) checkpoints; this is a gpt checkpoint" in err
