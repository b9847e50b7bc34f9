"""``llmos write adapter`` and ``llmos write continue``: an adapter trained from text files
continues text as the Python API does with it; mistakes exit 2 naming the file, never a
traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

import llmos
from llmos.cli import main
from llmos.models import lora


@pytest.fixture()
def gpt(tiny_gpt: Path) -> Path:
    return tiny_gpt


def test_adapter_then_continue(
    gpt: Path, tiny_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (tiny_corpus / "train.txt").read_text(encoding="utf-8")
    files = []
    for i, part in enumerate(text.split("\n\n")[:60:20]):
        files.append(tmp_path / f"doc{i}.txt")
        files[-1].write_text(part * 3, encoding="utf-8")
    out = tmp_path / "style"
    args = ["write", "adapter", "--base", str(gpt), "--out", str(out), "--steps", "6"]
    assert main([*args, "--rank", "4", *map(str, files)]) == 0
    report = capsys.readouterr().out
    assert f"adapter: {out / 'checkpoint'}" in report and "held-out perplexity" in report
    assert lora.read_adapter(out / "checkpoint")[0].rank == 4

    assert (
        main(
            [
                "write",
                "continue",
                "--model",
                str(gpt),
                "--adapter",
                str(out / "checkpoint"),
                "--max-new-tokens",
                "8",
                "我们",
            ]
        )
        == 0
    )
    pipe = llmos.load(gpt)
    pipe.add_adapter("s", out / "checkpoint")
    assert (
        capsys.readouterr().out
        == "我们" + pipe.generate("我们", raw=True, adapter="s", max_new_tokens=8) + "\n"
    )


def test_mistakes_are_named(gpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9".encode("latin-1"))
    assert (
        main(["write", "adapter", "--base", str(gpt), "--out", str(tmp_path / "o"), str(bad)]) == 2
    )
    assert f"{bad}: cannot read it as UTF-8" in capsys.readouterr().err
    assert main(["write", "continue", "--model", str(gpt), "--adapter", str(tmp_path), "x"]) == 2
    assert "not an adapter" in capsys.readouterr().err
