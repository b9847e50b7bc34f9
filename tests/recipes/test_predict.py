"""``llmos predict`` on a classifier: long texts read in windows by default, truncated on
request, each line the same answer as ``classify()``; a bad ``--long-inputs`` is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import llmos
from llmos.checkpoint.io import save_checkpoint
from llmos.cli import main
from llmos.config.model import BertConfig
from llmos.errors import LlmosError
from llmos.models.bert import BertForSequenceClassification
from llmos.recipes.predict import predict_file
from llmos.text.tokenizer import load_tokenizer

TEXTS = ["我们今天参观城市。", "老师昨天讨论经济，学生经常学习历史，公司去年发展市场。" * 3]


@pytest.fixture(scope="module")
def classifier(tiny_tokenizer: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init BERT classifier that reads 16 tokens: TEXTS[1] is several windows."""
    tok = load_tokenizer(tiny_tokenizer)
    cfg = BertConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=32,
        num_layers=2,
        num_heads=2,
        intermediate_size=64,
        max_position=64,
        initializer_range=0.5,
    )
    torch.manual_seed(0)
    return save_checkpoint(
        tmp_path_factory.mktemp("clf") / "clf",
        BertForSequenceClassification(cfg, 2),
        cfg,
        tok,
        {"task": "classification", "labels": ["neg", "pos"], "max_length": 16},
    )


def rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def test_predict_windows_by_default_and_truncates_on_request(
    classifier: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inp = tmp_path / "in.txt"
    inp.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    pipe = llmos.load(classifier)
    for option, flags in [("window", []), ("window", ["--long-inputs", "window"])]:
        out = tmp_path / "window.jsonl"
        argv = ["predict", str(classifier), "--input", str(inp), "--output", str(out), *flags]
        assert main(argv) == 0
        want = pipe.classify(TEXTS, long_inputs=option)
        assert want[0]["windows"] == 1 and want[1]["windows"] > 1
        got = rows(out)
        assert [r["text"] for r in got] == TEXTS
        assert [{k: v for k, v in r.items() if k != "text"} for r in got] == want
    out = tmp_path / "truncate.jsonl"
    argv = ["predict", str(classifier), "--input", str(inp), "--output", str(out)]
    assert main([*argv, "--long-inputs", "truncate"]) == 0
    got = rows(out)
    assert [r["windows"] for r in got] == [1, 1]
    assert got[1]["scores"] != rows(tmp_path / "window.jsonl")[1]["scores"]
    want = pipe.classify(TEXTS, long_inputs="truncate")
    assert got == [{"text": t, **r} for t, r in zip(TEXTS, want, strict=True)]
    assert predict_file(classifier, str(inp), str(out), long_inputs="truncate") == 2
    capsys.readouterr()


def test_a_bad_long_inputs_value_is_refused(
    classifier: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inp = tmp_path / "in.txt"
    inp.write_text(TEXTS[0] + "\n", encoding="utf-8")
    with pytest.raises(SystemExit) as exit_:
        main(["predict", str(classifier), "--input", str(inp), "--long-inputs", "all"])
    assert exit_.value.code == 2
    assert "argument --long-inputs: invalid choice: 'all'" in capsys.readouterr().err
    with pytest.raises(LlmosError, match="long_inputs must be one of window, truncate"):
        predict_file(classifier, str(inp), str(tmp_path / "out.jsonl"), long_inputs="all")
