"""The checkpoint directory: save -> read round trip, atomic replacement, corrupt files named
in the error, and task.json read into a typed TaskSpec and written back unchanged."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from tokenizers import Tokenizer

from llmos.checkpoint.io import (
    CONFIG_FILE,
    TASK_FILE,
    WEIGHTS_FILE,
    Checkpoint,
    read_checkpoint,
    read_weights,
    save_checkpoint,
)
from llmos.checkpoint.task import (
    Classification,
    Embedding,
    Generation,
    Instruct,
    MaskedLM,
    Tagging,
    parse_task,
)
from llmos.config.model import BertConfig, GPTConfig
from llmos.data.clm import PROMPT_TEMPLATE, PROMPT_TEMPLATE_INPUT
from llmos.errors import CheckpointError
from llmos.models.bert import BertForPreTraining, BertForSequenceClassification
from llmos.models.gpt import GPT
from llmos.text.tokenizer import load_tokenizer

# One task.json per kind, as the writers of each write them (recipes/finetune.py, tagging.py,
# instruct.py, convert.py, prune.py, distill.py, compress.py), extra keys included.
TASK_FILES: list[dict[str, Any]] = [
    {
        "task": "classification",
        "labels": ["neg", "pos"],
        "max_length": 64,
        "label_key": "label",
        "init": "runs/bert/checkpoint",
        "dataset": "chnsenticorp",
    },
    {"task": "classification", "labels": ["a", "b", "c"], "max_length": 512},  # convert
    {
        "task": "classification",
        "labels": ["neg", "pos"],
        "max_length": 64,
        "label_key": "label",
        "distilled_from": "runs/teacher/checkpoint",
        "quantized_from": "runs/student/checkpoint",
        "pruned_heads": [1, 0],
    },
    {
        "task": "tagging",
        "labels": ["O", "B-PER", "I-PER"],
        "scheme": "bio",
        "max_length": 128,
        "view": "ner",
        "spans_key": "entities",
    },
    {"task": "tagging", "labels": ["B", "M", "E", "S"], "scheme": "bmes", "max_length": 64},
    {"task": "embedding", "pooling": "cls", "normalize": False, "max_length": 256},
    {"task": "embedding", "pooling": "mean", "normalize": True},
    {
        "task": "instruct",
        "template": PROMPT_TEMPLATE,
        "template_with_input": PROMPT_TEMPLATE_INPUT,
        "max_length": 128,
    },
    {"task": "mlm", "note": "kept"},
    {"task": "generation"},
    {"task": "tagging", "labels": ["B", "E", "S"], "scheme": "bmes", "crf": True, "init": "x"},
    {"task": "classification", "labels": ["a", "b"], "pooling": "mean"},
    {
        "task": "classification",
        "labels": ["a", "b"],
        "max_length": 128,
        "pooling": "mean",
        "text_prefix": "query: ",
        "init": "x",
    },
    {
        "task": "embedding",
        "pooling": "mean",
        "normalize": True,
        "max_length": 512,
        "query_prefix": "query: ",
        "passage_prefix": "passage: ",
    },
]
KIND_OF = {
    "classification": Classification,
    "tagging": Tagging,
    "embedding": Embedding,
    "instruct": Instruct,
    "mlm": MaskedLM,
    "generation": Generation,
}


@pytest.mark.parametrize("d", TASK_FILES, ids=lambda d: d["task"])
def test_every_task_kind_round_trips_to_the_same_task_json(d: dict[str, Any]) -> None:
    spec = parse_task(d)
    assert isinstance(spec, KIND_OF[d["task"]])
    assert spec.to_json() == d
    assert list(spec.to_json()) == list(d)  # the same key order too: files diff cleanly
    assert parse_task(json.loads(json.dumps(spec.to_json()))) == spec


def test_typed_fields() -> None:
    spec = parse_task(TASK_FILES[3])
    assert isinstance(spec, Tagging)
    assert spec.labels == ("O", "B-PER", "I-PER") and spec.scheme == "bio"
    assert spec.max_length == 128 and spec.view == "ner" and spec.spans_key == "entities"
    assert not spec.crf and "crf" not in spec.to_json()  # absent: false, and never written
    assert parse_task(TASK_FILES[-4]).crf
    assert parse_task(TASK_FILES[0]).pooling == "cls" and "pooling" not in TASK_FILES[0]
    assert parse_task(TASK_FILES[-3]).pooling == "mean"
    # text_prefix: absent in older files is None, and None is never written.
    assert parse_task(TASK_FILES[0]).text_prefix is None
    assert "text_prefix" not in parse_task(TASK_FILES[0]).to_json()
    assert parse_task(TASK_FILES[-2]).text_prefix == "query: "
    clf = parse_task(TASK_FILES[0])
    assert isinstance(clf, Classification)
    assert dict(clf.extra) == {"init": "runs/bert/checkpoint", "dataset": "chnsenticorp"}
    match parse_task(TASK_FILES[5]):
        case Embedding(pooling="cls", normalize=False, max_length=256):
            pass
        case other:
            pytest.fail(f"not matched: {other}")


@pytest.mark.parametrize(
    ("d", "message"),
    [
        ({"task": "classify"}, "field 'task' must be one of 'classification'"),
        ({"labels": ["a"]}, "field 'task' must be one of"),
        ({"task": "classification"}, "field 'labels' must be a non-empty list of strings"),
        ({"task": "classification", "labels": []}, "field 'labels' must be a non-empty list"),
        ({"task": "classification", "labels": ["a", 1]}, "field 'labels' must be"),
        (
            {"task": "tagging", "labels": ["O"], "scheme": "iob"},
            "field 'scheme' must be 'bio' or 'bmes', got 'iob'",
        ),
        (
            {"task": "classification", "labels": ["a"], "max_length": 0},
            "field 'max_length' must be a positive integer, got 0",
        ),
        (
            {"task": "classification", "labels": ["a"], "max_length": True},
            "field 'max_length' must be a positive integer, got True",
        ),
        ({"task": "embedding", "pooling": "sum"}, "field 'pooling' must be one of mean, cls, max"),
        ({"task": "embedding", "normalize": "yes"}, "field 'normalize' must be true or false"),
        ({"task": "instruct", "template": "Q: A:"}, "field 'template' must be a string with"),
        ({"task": "tagging", "labels": ["O"], "scheme": "bio", "view": 3}, "field 'view'"),
        (
            {"task": "tagging", "labels": ["O"], "scheme": "bio", "crf": "yes"},
            "field 'crf' must be true or false, got 'yes'",
        ),
        (
            {"task": "classification", "labels": ["a"], "pooling": "max"},
            "field 'pooling' must be 'cls' or 'mean', got 'max'",
        ),
        (
            {"task": "classification", "labels": ["a"], "text_prefix": 1},
            "field 'text_prefix' must be a string, got 1",
        ),
    ],
)
def test_validation_names_the_file_and_the_field(d: dict[str, Any], message: str) -> None:
    with pytest.raises(CheckpointError, match="^runs/x/task.json: .*" + re.escape(message)):
        parse_task(d, "runs/x/task.json")


def test_a_task_json_that_is_not_an_object() -> None:
    with pytest.raises(CheckpointError, match=r"runs/x/task\.json: expected a JSON object"):
        parse_task(["classification"], "runs/x/task.json")


# --- directories ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer(tiny_tokenizer: Path) -> Tokenizer:
    return load_tokenizer(tiny_tokenizer)


def bert_config(tokenizer: Tokenizer) -> BertConfig:
    return BertConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=16,
        num_layers=1,
        num_heads=2,
        intermediate_size=32,
        max_position=32,
    )


def test_save_read_round_trip(tmp_path: Path, tokenizer: Tokenizer) -> None:
    cfg = bert_config(tokenizer)
    torch.manual_seed(0)
    model = BertForSequenceClassification(cfg, 2)
    task = parse_task(TASK_FILES[0])
    out = save_checkpoint(tmp_path / "clf", model, cfg, tokenizer, task)
    ckpt = read_checkpoint(out)
    assert isinstance(ckpt, Checkpoint)
    assert ckpt.path == out and ckpt.config == cfg and ckpt.task == task
    assert json.loads((out / TASK_FILE).read_text(encoding="utf-8")) == TASK_FILES[0]
    assert ckpt.task_json == TASK_FILES[0]
    assert ckpt.tokenizer.get_vocab() == tokenizer.get_vocab()
    assert ckpt.tokenizer is ckpt.tokenizer  # loaded once
    assert ckpt.max_length == 64 and not ckpt.is_decoder and ckpt.onnx is None
    weights = ckpt.weights()
    for key, value in model.state_dict().items():
        assert torch.equal(weights[key], value), key


def test_an_older_classifier_saves_byte_for_byte(tmp_path: Path, tokenizer: Tokenizer) -> None:
    # A task.json written before text_prefix (and pooling) existed: read and saved again, the
    # file is the same bytes, and the spec has no prefix.
    cfg = bert_config(tokenizer)
    model = BertForSequenceClassification(cfg, 2)
    first = save_checkpoint(tmp_path / "a", model, cfg, tokenizer, dict(TASK_FILES[0]))
    ckpt = read_checkpoint(first)
    assert isinstance(ckpt.task, Classification) and ckpt.task.text_prefix is None
    again = save_checkpoint(tmp_path / "b", model, cfg, tokenizer, ckpt.task)
    assert (again / TASK_FILE).read_bytes() == (first / TASK_FILE).read_bytes()


def test_a_pretrained_checkpoint_has_no_task_json(tmp_path: Path, tokenizer: Tokenizer) -> None:
    cfg = bert_config(tokenizer)
    out = save_checkpoint(tmp_path / "mlm", BertForPreTraining(cfg), cfg, tokenizer, MaskedLM())
    assert not (out / TASK_FILE).exists()
    ckpt = read_checkpoint(out)
    assert ckpt.task == MaskedLM() and ckpt.task_json is None
    assert ckpt.max_length == cfg.max_position
    gcfg = GPTConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=16,
        num_layers=1,
        num_heads=2,
        intermediate_size=32,
    )
    gpt = read_checkpoint(save_checkpoint(tmp_path / "gpt", GPT(gcfg), gcfg, tokenizer))
    assert gpt.task == Generation() and gpt.is_decoder


def test_a_task_the_model_cannot_do_is_refused(tmp_path: Path, tokenizer: Tokenizer) -> None:
    gcfg = GPTConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=16,
        num_layers=1,
        num_heads=2,
        intermediate_size=32,
    )
    out = save_checkpoint(tmp_path / "gpt", GPT(gcfg), gcfg, tokenizer, TASK_FILES[0])
    with pytest.raises(CheckpointError, match=r"task\.json: field 'task' is 'classification'"):
        read_checkpoint(out)
    cfg = bert_config(tokenizer)
    out = save_checkpoint(tmp_path / "bert", BertForPreTraining(cfg), cfg, None, TASK_FILES[7])
    with pytest.raises(CheckpointError, match="'instruct', which a bert model cannot do"):
        read_checkpoint(out)


def test_replacing_a_checkpoint_is_atomic_and_leaves_no_temp_dirs(
    tmp_path: Path, tokenizer: Tokenizer
) -> None:
    cfg = bert_config(tokenizer)
    first = BertForPreTraining(cfg)
    save_checkpoint(tmp_path / "ckpt", first, cfg, tokenizer)
    second = BertForPreTraining(cfg)
    torch.nn.init.constant_(second.bert.embeddings.tok.weight, 0.5)
    save_checkpoint(tmp_path / "ckpt", second, cfg, tokenizer, {"task": "embedding"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    got = read_weights(tmp_path / "ckpt")["bert.embeddings.tok.weight"]
    assert torch.all(got == 0.5)
    assert read_checkpoint(tmp_path / "ckpt").task == Embedding()

    def fail(_tmp: Path) -> None:
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint(tmp_path / "ckpt", first, cfg, tokenizer, extra=fail)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # the old one, untouched
    assert torch.all(read_weights(tmp_path / "ckpt")["bert.embeddings.tok.weight"] == 0.5)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (CONFIG_FILE, b"{not json", "corrupt JSON"),
        (CONFIG_FILE, b'{"model_type": "t5"}', "unsupported model_type 't5'"),
        (CONFIG_FILE, b"[1, 2]", "expected a JSON object"),
        (TASK_FILE, b"\xff\xfe", "corrupt JSON"),
        (TASK_FILE, b'{"task": "tagging", "labels": ["O"]}', "field 'scheme'"),
        (WEIGHTS_FILE, b"\x00" * 64, "corrupt safetensors file"),
    ],
)
def test_a_corrupt_file_is_named_in_the_error(
    tmp_path: Path, tokenizer: Tokenizer, name: str, content: bytes, message: str
) -> None:
    cfg = bert_config(tokenizer)
    out = save_checkpoint(tmp_path / "c", BertForPreTraining(cfg), cfg, tokenizer)
    (out / name).write_bytes(content)
    with pytest.raises(CheckpointError, match=re.escape(f"{out / name}") + ".*" + message):
        read_checkpoint(out).weights()


def test_missing_files_are_named(tmp_path: Path, tokenizer: Tokenizer) -> None:
    with pytest.raises(CheckpointError, match="not a checkpoint directory"):
        read_checkpoint(tmp_path / "nope")
    cfg = bert_config(tokenizer)
    out = save_checkpoint(tmp_path / "c", BertForPreTraining(cfg), cfg)  # no tokenizer
    with pytest.raises(CheckpointError, match=re.escape(str(out / "tokenizer.json"))):
        _ = read_checkpoint(out).tokenizer
    (out / WEIGHTS_FILE).unlink()
    with pytest.raises(CheckpointError, match=f"missing {WEIGHTS_FILE}"):
        read_checkpoint(out).weights()


def test_tied_weights_are_stored_once(tmp_path: Path, tokenizer: Tokenizer) -> None:
    gcfg = GPTConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=16,
        num_layers=1,
        num_heads=2,
        intermediate_size=32,
    )
    model = GPT(gcfg)
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()
    out = save_checkpoint(tmp_path / "gpt", model, gcfg, tokenizer)
    weights = read_weights(out)
    assert "lm_head.weight" not in weights and "transformer.wte.weight" in weights
    from llmos.inference.load import load_model

    loaded = load_model(read_checkpoint(out))
    assert loaded.lm_head.weight.data_ptr() == loaded.transformer.wte.weight.data_ptr()
    assert torch.equal(loaded.lm_head.weight, model.transformer.wte.weight)
