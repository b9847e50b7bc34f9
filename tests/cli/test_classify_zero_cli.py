"""``llmos classify-zero``: the same answers as the Python API, as JSON lines or a file, and a
user's mistakes as exit status 2 with a message that names the file, line, field or flag."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from inference.test_zeroshot import EN, LABELS, TEXTS, ZH, tiny_e5

import llmos
from llmos.cli import main

FLAGS = ["--labels", "zh=中文句子", "zh=我们学习", "en=the market"]


@pytest.fixture(scope="module")
def ckpts(tiny_tokenizer: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return tiny_e5(tiny_tokenizer, tmp_path_factory.mktemp("classify-zero"))


def lines(out: str) -> list[dict]:
    return [json.loads(x) for x in out.splitlines() if x.strip()]


def test_texts_and_labels_give_the_python_apis_answers(ckpts, capsys) -> None:
    e5 = str(ckpts["e5"])
    assert main(["classify-zero", e5, *TEXTS, *FLAGS, "--json"]) == 0
    want = llmos.zero_shot(e5, LABELS).classify(TEXTS)
    assert lines(capsys.readouterr().out) == [
        {"text": t, **r} for t, r in zip(TEXTS, want, strict=True)
    ]
    # without --json: one readable line per text, score and label first
    assert main(["classify-zero", e5, TEXTS[0], *FLAGS]) == 0
    assert capsys.readouterr().out == f"{want[0]['score']:.3f}  {want[0]['label']:<12} {TEXTS[0]}\n"


def test_an_unlabelled_file_removes_the_labels_priors(ckpts, tmp_path, capsys) -> None:
    e5 = str(ckpts["e5"])
    pool = tmp_path / "pool.txt"
    pool.write_text("\n".join([*ZH, *EN]) + "\n", encoding="utf-8")
    assert main(["classify-zero", e5, *TEXTS, *FLAGS, "--unlabelled", str(pool), "--json"]) == 0
    want = llmos.zero_shot(e5, LABELS, unlabelled=[*ZH, *EN]).classify(TEXTS)
    assert lines(capsys.readouterr().out) == [
        {"text": t, **r} for t, r in zip(TEXTS, want, strict=True)
    ]
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    assert main(["classify-zero", e5, *TEXTS, *FLAGS, "--unlabelled", str(empty)]) == 2
    assert f"{empty}: no texts" in capsys.readouterr().err


def test_examples_file_and_input_file_to_an_output_file(ckpts, tmp_path, capsys) -> None:
    e5 = str(ckpts["e5"])
    examples = tmp_path / "examples.jsonl"
    rows = [{"text": t, "intent": "zh"} for t in ZH] + [{"text": t, "intent": "en"} for t in EN]
    examples.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    inputs = tmp_path / "texts.txt"
    inputs.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    argv = ["--examples", str(examples), "--label-key", "intent", "--method", "logreg"]
    assert main(["classify-zero", e5, "--input", str(inputs), "--output", str(out), *argv]) == 0
    assert f"4 predictions written to {out}" in capsys.readouterr().out
    want = llmos.zero_shot(e5, {}, {"zh": ZH, "en": EN}, method="logreg").classify(TEXTS)
    assert lines(out.read_text(encoding="utf-8")) == [
        {"text": t, **r} for t, r in zip(TEXTS, want, strict=True)
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["今天", "--labels", "zh=中文", "今天"],
            "--labels '今天': expected NAME=DESCRIPTION; put ",
        ),
        (
            ["今天", "--labels", "=中文", "en=x"],
            "--labels '=中文': expected NAME=DESCRIPTION, with",
        ),
        (["今天", "--labels", "zh="], "--labels 'zh=': expected NAME=DESCRIPTION, with a name"),
        (["今天"], "no labels: give --labels NAME=DESCRIPTION"),
        (
            ["--labels", "zh=中文", "en=x"],
            "give the texts to classify as arguments or with --input",
        ),
        (["今天", "--labels", "zh=中文"], "need at least two labels, got ['zh']"),
        (["今天", "--input", "nowhere.txt", *FLAGS], "give the texts to classify as arguments"),
        (["--input", "nowhere.txt", *FLAGS], "nowhere.txt: input file not found"),
        (["今天", "--examples", "nowhere.jsonl"], "nowhere.jsonl: file not found"),
    ],
)
def test_user_mistakes_exit_2_with_a_clear_message(ckpts, capsys, argv, message) -> None:
    assert main(["classify-zero", str(ckpts["e5"]), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("llmos: error: ") and "Traceback" not in err
    assert len(err.splitlines()) == 1
    assert message in err


def test_a_bad_examples_row_names_its_file_line_and_field(ckpts, tmp_path, capsys) -> None:
    examples = tmp_path / "ex.jsonl"
    examples.write_text('{"text": "今天", "label": "zh"}\n{"text": "the city"}\n')
    argv = ["classify-zero", str(ckpts["e5"]), "今天", "--examples", str(examples)]
    assert main(argv) == 2
    assert f"{examples}:2: empty or missing 'label'" in capsys.readouterr().err
    examples.write_text('{"text": "今天", "label": "zh"}\nnot json\n')
    assert main(argv) == 2
    assert f"{examples}:2: not valid JSON" in capsys.readouterr().err
    # a label of the examples without examples of its own to go by
    examples.write_text('{"text": "今天", "label": "zh"}\n{"text": "the city", "label": "en"}\n')
    assert main([*argv, "--labels", "x=别的", "--method", "similarity"]) == 2
    assert "similarity reads only the labels' descriptions" in capsys.readouterr().err


def test_a_gpt_checkpoint_exits_2(ckpts, capsys) -> None:
    assert main(["classify-zero", str(ckpts["gpt"]), "今天", *FLAGS]) == 2
    assert "is a pretrained GPT: zero-shot classification needs an encoder" in (
        capsys.readouterr().err
    )


CLOZE = ["--method", "cloze", "--pattern", "{text}，总之很[MASK]。", "--labels", "pos=学", "neg=市"]


def test_cloze_gives_the_python_apis_answers(ckpts, tmp_path, capsys) -> None:
    e5 = str(ckpts["e5"])
    argv = [*CLOZE, "--pattern", "[MASK]：{text}", "--json"]
    assert main(["classify-zero", e5, *TEXTS, *argv]) == 0
    patterns = ["{text}，总之很[MASK]。", "[MASK]：{text}"]
    labels = {"pos": ["学"], "neg": ["市"]}
    want = llmos.zero_shot(e5, labels, method="cloze", patterns=patterns).classify(TEXTS)
    assert lines(capsys.readouterr().out) == [
        {"text": t, **r} for t, r in zip(TEXTS, want, strict=True)
    ]
    pool = tmp_path / "pool.txt"
    pool.write_text("\n".join(ZH) + "\n", encoding="utf-8")
    assert main(["classify-zero", e5, *TEXTS, *CLOZE, "--unlabelled", str(pool), "--json"]) == 0
    clf = llmos.zero_shot(e5, labels, method="cloze", patterns=patterns[:1], unlabelled=ZH)
    assert lines(capsys.readouterr().out) == [
        {"text": t, **r} for t, r in zip(TEXTS, clf.classify(TEXTS), strict=True)
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (CLOZE[:2] + CLOZE[4:], "--method cloze needs --pattern, e.g. --pattern"),
        (["--pattern", "{text}[MASK]", *FLAGS], "--pattern is for --method cloze"),
        (
            [*CLOZE[:2], "--pattern", "总之很[MASK]。", *CLOZE[4:]],
            "--pattern '总之很[MASK]。': put {text} (where the text goes) in it exactly once",
        ),
        (
            [*CLOZE[:2], "--pattern", "{text}总之很好。", *CLOZE[4:]],
            "pattern '{text}总之很好。': put the mask slot [MASK]",
        ),
        (
            [*CLOZE[:5], "pos=学生", "neg=市"],
            "label 'pos': the verbalizer '学生' is not one token of this model's vocabulary",
        ),
        ([*CLOZE, "--examples", "nowhere.jsonl"], "nowhere.jsonl: file not found"),
    ],
)
def test_cloze_mistakes_exit_2_naming_the_flag_or_value(ckpts, capsys, argv, message) -> None:
    assert main(["classify-zero", str(ckpts["e5"]), "今天", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("llmos: error: ") and "Traceback" not in err
    assert message in err


def test_cloze_on_an_encoder_without_an_mlm_head_exits_2(tiny_tokenizer, tmp_path, capsys) -> None:
    from llmos.checkpoint.io import save_checkpoint
    from llmos.checkpoint.task import Embedding
    from llmos.config.model import BertConfig
    from llmos.models.bert import BertForPreTraining
    from llmos.text.tokenizer import load_tokenizer

    tok = load_tokenizer(tiny_tokenizer)
    cfg = BertConfig(
        vocab_size=tok.get_vocab_size(),
        max_position=64,
        hidden_size=16,
        num_layers=1,
        num_heads=2,
        intermediate_size=32,
        heads="none",
        pooler=False,
    )
    bare = save_checkpoint(tmp_path / "bare", BertForPreTraining(cfg), cfg, tok, Embedding())
    assert main(["classify-zero", str(bare), "今天", *CLOZE]) == 2
    err = capsys.readouterr().err
    assert "without a masked-LM head: method cloze needs one" in err
    assert "configs/pretrain/e5-zh-mlm.yaml" in err
