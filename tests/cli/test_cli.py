"""The CLI end to end: bad input is one clear line and exit status 2; fill-mask works."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from llmos.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def tiny_args(corpus: Path, tokenizer: Path, out: Path, *extra: str) -> list[str]:
    return [
        "pretrain",
        f"data.corpus={corpus}",
        f"data.tokenizer={tokenizer}",
        f"out_dir={out}",
        "model.hidden_size=32",
        "model.num_layers=1",
        "model.num_heads=2",
        "model.intermediate_size=64",
        "data.max_length=32",
        "train.max_steps=4",
        "train.batch_size=8",
        "train.progress=false",
        "train.precision=fp32",
        "train.eval_batches=1",
        "optim.warmup_steps=1",
        *extra,
    ]


def test_bad_config_is_one_line_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "pretrain", "--config", str(tmp_path / "nope.yaml"))
    assert code == 2 and "nope.yaml: config file not found" in err
    code, _, err = run(capsys, "pretrain", "train.lr=0.1")
    assert code == 2 and "unknown key 'train.lr'" in err and err.count("\n") == 1
    code, _, err = run(capsys, "pretrain", "train.batch_size=big")
    assert code == 2 and "train.batch_size: expected an integer, got 'big'" in err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "train.txt: corpus file not found"),
        (b"\n\n  \n", "train.txt: corpus is empty"),
        ("第一句。\n第二句。\n".encode() + b"\xff\xfe broken\n", "train.txt:3: not valid UTF-8"),
        (b"a" * (10 * 1024 * 1024) + b"\n", "train.txt:1: line of 10,485,760 characters"),
    ],
    ids=["missing", "empty", "non-utf8", "10MB-line"],
)
def test_bad_corpus_is_one_line_exit_2(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    tiny_tokenizer: Path,
    content: bytes | None,
    message: str,
) -> None:
    corpus = tmp_path / "c"
    corpus.mkdir()
    if content is not None:
        (corpus / "train.txt").write_bytes(content)
    code, _, err = run(capsys, *tiny_args(corpus, tiny_tokenizer, tmp_path / "runs"))
    assert code == 2, err
    assert message in err and err.startswith("llmos: error: ")


@pytest.fixture(scope="module")
def checkpoint(
    tiny_corpus: Path, tiny_tokenizer: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("runs")
    assert main(tiny_args(tiny_corpus, tiny_tokenizer, out)) == 0
    return out / "bert-zh" / "checkpoint"


def test_fill_mask_cli_and_api(capsys: pytest.CaptureFixture[str], checkpoint: Path) -> None:
    import llmos

    code, out, _ = run(
        capsys, "fill-mask", str(checkpoint), "今天我们[MASK]经济。", "--top-k", "3", "--json"
    )
    assert code == 0
    res = json.loads(out)
    preds = res["predictions"]
    assert len(preds) == 3 and preds[0]["score"] >= preds[1]["score"] >= preds[2]["score"]
    m = llmos.load(checkpoint)
    api = m.fill_mask("今天我们[MASK]经济。", top_k=3)
    assert [p["token_id"] for p in api] == [p["token_id"] for p in preds]
    assert api[0]["sequence"].startswith("今天我们") and "[MASK]" not in api[0]["sequence"]
    two = m.fill_mask("[MASK]天我们[MASK]经济。", top_k=2)
    assert len(two) == 2 and all(len(row) == 2 for row in two)
    with pytest.raises(llmos.LlmosError, match="no \\[MASK\\]"):
        m.fill_mask("没有掩码。")


@pytest.mark.parametrize(
    "damage", ["not-a-dir", "no-weights", "corrupt-weights", "corrupt-config", "truncated-weights"]
)
def test_broken_checkpoint_is_one_line_exit_2(
    capsys: pytest.CaptureFixture[str], checkpoint: Path, tmp_path: Path, damage: str
) -> None:
    broken = tmp_path / "ckpt"
    shutil.copytree(checkpoint, broken)
    if damage == "not-a-dir":
        broken = tmp_path / "nothing"
    elif damage == "no-weights":
        (broken / "model.safetensors").unlink()
    elif damage == "corrupt-weights":
        (broken / "model.safetensors").write_bytes(b"\x00" * 64)
    elif damage == "truncated-weights":
        data = (broken / "model.safetensors").read_bytes()
        (broken / "model.safetensors").write_bytes(data[: len(data) // 2])
    else:
        (broken / "config.json").write_text("{not json")
    code, _, err = run(capsys, "fill-mask", str(broken), "今天[MASK]。")
    assert code == 2, err
    assert err.startswith("llmos: error: ") and err.count("\n") == 1
    assert str(broken) in err


def test_subprocess_exit_code_and_no_traceback(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "llmos", "fill-mask", str(tmp_path), "x[MASK]"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "not a checkpoint" not in proc.stdout
    assert "missing config.json" in proc.stderr


def test_config_yaml_saved_with_the_run(checkpoint: Path) -> None:
    saved = yaml.safe_load((checkpoint.parent / "config.yaml").read_text())
    assert saved["train"]["max_steps"] == 4 and saved["model"]["vocab_size"] > 5
