"""Encoding for classification: truncation happens on a kept copy, never on the caller's
tokenizer, and gives the same ids as a fresh truncating tokenizer; texts longer than the model
reads are classified from overlapping windows (the mean of their logits), checked against each
window run alone through the model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, processors

import llmos
from llmos.checkpoint.io import save_checkpoint
from llmos.config.model import BertConfig
from llmos.errors import LlmosError
from llmos.inference.classify import (
    LONG_INPUTS,
    batched_logits,
    encode_texts,
    encode_windows,
    truncating,
)
from llmos.models.bert import BertForSequenceClassification
from llmos.text.tokenizer import load_tokenizer


def test_truncation_uses_a_kept_copy_and_leaves_the_tokenizer_alone(tiny_tokenizer: Path) -> None:
    tok = load_tokenizer(tiny_tokenizer)
    texts = ["我们今天参观城市。" * 5, "老师讨论经济"]
    ids, _, truncated = encode_texts(tok, texts, None, 12)
    fresh = Tokenizer.from_str(tok.to_str())
    fresh.enable_truncation(12, strategy="longest_first")
    assert [list(x) for x in ids] == [e.ids for e in fresh.encode_batch(texts)]
    assert truncated == 1 and len(ids[0]) == 12
    assert tok.truncation is None  # the caller's tokenizer does not truncate
    assert truncating(tok, 12) is truncating(tok, 12)  # made once, not per call
    assert truncating(tok, 16) is not truncating(tok, 12)
    assert len(encode_texts(tok, texts, None, 64)[0][0]) > 12


# --- long inputs: overlapping windows, logits averaged -------------------------------------

MAX_LENGTH = 16  # tokens per row with [CLS] and [SEP]: 14 content tokens per window
SHORT = ["我们今天参观城市。", "老师讨论经济", "学生学习历史。"]
# Far longer than MAX_LENGTH, with a [SEP] typed in the text (content, not a wrapping special).
LONG = "我们今天参观城市，老师昨天讨论经济。[SEP]学生经常学习历史，公司去年发展市场。" * 2


@pytest.fixture(scope="module")
def classifier(tiny_tokenizer: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init 2-layer BERT classifier (3 labels) that reads MAX_LENGTH tokens."""
    tok = load_tokenizer(tiny_tokenizer)
    cfg = BertConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=32,
        num_layers=2,
        num_heads=2,
        intermediate_size=64,
        max_position=64,
        dropout=0.0,
        attention_dropout=0.0,
        initializer_range=0.5,  # wide weights: windows of one text get visibly different logits
    )
    torch.manual_seed(0)
    return save_checkpoint(
        tmp_path_factory.mktemp("clf") / "clf",
        BertForSequenceClassification(cfg, 3),
        cfg,
        tok,
        {"task": "classification", "labels": ["a", "b", "c"], "max_length": MAX_LENGTH},
    )


def reference_windows(n: int, size: int) -> list[tuple[int, int]]:
    """Brute force: windows of ``size`` tokens every ``size // 2`` tokens until one reaches
    the end; the last one moved back to end at the text's last token."""
    step, spans, start = size // 2, [], 0
    while True:
        if start + size >= n:
            spans.append((max(0, n - size), n))
            return spans
        spans.append((start, start + size))
        start += step


def test_short_texts_are_bit_identical_to_the_truncating_path(classifier: Path) -> None:
    pipe = llmos.load(classifier)
    window = pipe.classify(SHORT)
    truncate = pipe.classify(SHORT, long_inputs="truncate")
    assert window == truncate  # exact floats, not approximately
    assert [r["windows"] for r in window] == [1, 1, 1]
    assert set(window[0]) == {"label", "score", "scores", "windows"}


def test_truncate_reproduces_the_old_path(classifier: Path) -> None:
    pipe = llmos.load(classifier)
    texts = [*SHORT, LONG]
    ids, types, truncated = encode_texts(pipe.tokenizer, texts, None, MAX_LENGTH)
    assert truncated == 1
    probs = batched_logits(pipe.model, ids, types, 0).softmax(-1).tolist()
    got = pipe.classify(texts, long_inputs="truncate")
    assert [list(r["scores"].values()) for r in got] == probs
    assert [r["windows"] for r in got] == [1, 1, 1, 1]


@torch.inference_mode()
def test_a_long_text_is_the_mean_of_its_windows_logits(classifier: Path) -> None:
    pipe = llmos.load(classifier)
    tok = load_tokenizer(classifier)  # no truncation: the whole text
    content = tok.encode(LONG, add_special_tokens=False).ids
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    assert sep in content  # the typed [SEP] stays content
    size = MAX_LENGTH - 2
    spans = reference_windows(len(content), size)
    assert len(spans) >= 4 and spans[-1][1] == len(content)
    # Each window alone through the model: no batching, no padding.
    rows = [pipe.model(torch.tensor([[cls, *content[a:b], sep]]))[0] for a, b in spans]
    want = torch.stack(rows).mean(0).softmax(-1)

    got = pipe.classify([SHORT[0], LONG, SHORT[1]])
    assert [r["windows"] for r in got] == [1, len(spans), 1]
    assert list(got[1]["scores"].values()) == pytest.approx(want.tolist(), abs=1e-5)
    assert got[1]["label"] == "abc"[int(want.argmax())]
    alone = pipe.classify(SHORT[:2], long_inputs="truncate")
    for g, w in zip([got[0], got[2]], alone, strict=True):  # batched with windows: same answer
        assert list(g["scores"].values()) == pytest.approx(list(w["scores"].values()), abs=1e-5)
    # Truncation reads only the first window: a different answer from the windows' mean.
    first = pipe.model(torch.tensor([[cls, *content[:size], sep]]))[0].softmax(-1)
    truncated = pipe.classify([LONG], long_inputs="truncate")[0]
    assert list(truncated["scores"].values()) == pytest.approx(first.tolist(), abs=1e-5)
    assert (first - want).abs().max() > 0.01


def test_windows_take_the_tokenizers_own_wrapping(tiny_tokenizer: Path) -> None:
    tok = load_tokenizer(tiny_tokenizer)
    content = tok.encode(LONG, add_special_tokens=False).ids
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    specials = [("[CLS]", cls), ("[SEP]", sep)]
    for post, head, tail in [
        (
            processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=specials),
            [cls],
            [sep],
        ),
        (processors.TemplateProcessing(single="[CLS] $A", special_tokens=specials), [cls], []),
        (
            processors.TemplateProcessing(
                single="[SEP] [CLS] $A [SEP] [SEP]", special_tokens=specials
            ),
            [sep, cls],
            [sep, sep],
        ),
        (processors.RobertaProcessing(("[SEP]", sep), ("[CLS]", cls)), [cls], [sep]),  # XLM-R's
        (None, [], []),  # no post-processor: bare windows of max_length tokens
    ]:
        wrapped = load_tokenizer(tiny_tokenizer)
        wrapped.post_processor = post
        got = encode_windows(wrapped, [LONG], MAX_LENGTH)
        size = MAX_LENGTH - len(head) - len(tail)
        spans = reference_windows(len(content), size)
        assert got.windows == [len(spans)] and got.fallback == 0, post
        assert [x.tolist() for x in got.ids] == [head + content[a:b] + tail for a, b in spans]
        assert all(len(t) == MAX_LENGTH and not t.any() for t in got.types)


def test_pairs_are_truncated_and_a_bad_option_is_named(classifier: Path) -> None:
    pipe = llmos.load(classifier)
    firsts, seconds = [LONG, SHORT[0]], [SHORT[1], LONG]
    window = pipe.classify(firsts, seconds)
    assert window == pipe.classify(firsts, seconds, long_inputs="truncate")
    assert [r["windows"] for r in window] == [1, 1]
    with pytest.raises(LlmosError, match="long_inputs must be one of window, truncate, got 'x'"):
        pipe.classify(SHORT, long_inputs="x")


def test_an_onnx_export_windows_the_same_way(classifier: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from llmos.inference.onnx_export import export_onnx

    onnx = llmos.load(export_onnx(classifier, tmp_path / "onnx"))
    got = onnx.classify([LONG, SHORT[0]])
    want = llmos.load(classifier).classify([LONG, SHORT[0]])
    assert [r["windows"] for r in got] == [r["windows"] for r in want]
    for g, w in zip(got, want, strict=True):
        assert list(g["scores"].values()) == pytest.approx(list(w["scores"].values()), abs=1e-4)


# --- text_prefix: a classifier fine-tuned on prefix + text reads every input that way -------

PREFIX = "the market: "  # words the tiny tokenizer knows, and a ':' it may not


@pytest.fixture(scope="module")
def prefixed(classifier: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The classifier above, its task.json saying ``text_prefix: PREFIX``."""
    ckpt = llmos.load(classifier)
    return save_checkpoint(
        tmp_path_factory.mktemp("prefixed") / "clf",
        ckpt.model,
        ckpt.config,
        ckpt.tokenizer,
        {
            "task": "classification",
            "labels": ["a", "b", "c"],
            "max_length": MAX_LENGTH,
            "text_prefix": PREFIX,
        },
    )


@torch.inference_mode()
def test_a_short_text_is_read_after_the_prefix(classifier: Path, prefixed: Path) -> None:
    pipe = llmos.load(prefixed)
    assert pipe.spec.text_prefix == PREFIX
    tok = load_tokenizer(prefixed)  # by hand: the checkpoint's tokenizer, the model alone
    for text in ["x", SHORT[0]]:
        ids = tok.encode(PREFIX + text).ids
        assert len(ids) <= MAX_LENGTH
        want = pipe.model(torch.tensor([ids]))[0].softmax(-1)
        for long_inputs in LONG_INPUTS:
            got = pipe.classify([text], long_inputs=long_inputs)[0]
            assert list(got["scores"].values()) == pytest.approx(want.tolist(), abs=1e-6)
    # The same weights without the task.json prefix answer otherwise: the prefix is read.
    bare = llmos.load(classifier).classify(["x"])[0]["scores"]
    assert bare != pytest.approx(pipe.classify(["x"])[0]["scores"], abs=1e-3)


@torch.inference_mode()
def test_truncation_counts_the_prefix_and_pairs_prefix_the_first_text(prefixed: Path) -> None:
    pipe = llmos.load(prefixed)
    tok = load_tokenizer(prefixed)
    tok.enable_truncation(MAX_LENGTH, strategy="longest_first")
    ids = tok.encode(PREFIX + LONG).ids
    assert len(ids) == MAX_LENGTH
    want = pipe.model(torch.tensor([ids]))[0].softmax(-1)
    got = pipe.classify([LONG], long_inputs="truncate")[0]
    assert list(got["scores"].values()) == pytest.approx(want.tolist(), abs=1e-6)
    pair = tok.encode(PREFIX + SHORT[0], SHORT[1])
    want = pipe.model(torch.tensor([pair.ids]), torch.tensor([pair.type_ids]))[0].softmax(-1)
    got = pipe.classify([SHORT[0]], [SHORT[1]])[0]
    assert list(got["scores"].values()) == pytest.approx(want.tolist(), abs=1e-6)


def test_every_window_begins_with_the_prefix(prefixed: Path) -> None:
    pipe = llmos.load(prefixed)
    tok = load_tokenizer(prefixed)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    lead = tok.encode(PREFIX, add_special_tokens=False).ids
    content = tok.encode(LONG, add_special_tokens=False).ids
    assert lead and tok.encode(PREFIX + LONG, add_special_tokens=False).ids == lead + content
    size = MAX_LENGTH - 2 - len(lead)
    spans = reference_windows(len(content), size)
    assert len(spans) >= 4
    # What the model saw: every row of every forward call, padding cut by the attention mask.
    seen: list[list[int]] = []

    def capture(_: torch.nn.Module, args: tuple) -> None:
        ids, _types, mask = args  # batched_logits calls the model with INPUTS, in order
        mask = torch.ones_like(ids) if mask is None else mask  # None: a batch without padding
        for row, m in zip(ids.tolist(), mask.tolist(), strict=True):
            seen.append([t for t, k in zip(row, m, strict=True) if k])

    hook = pipe.model.register_forward_pre_hook(capture)
    try:
        got = pipe.classify([LONG])[0]
    finally:
        hook.remove()
    want_rows = [[cls, *lead, *content[a:b], sep] for a, b in spans]
    assert sorted(seen) == sorted(want_rows)  # batches are length-sorted: compare as sets
    assert all(r[: 1 + len(lead)] == [cls, *lead] and len(r) == MAX_LENGTH for r in seen)
    assert got["windows"] == len(spans)
    with torch.inference_mode():
        mean = torch.stack([pipe.model(torch.tensor([r]))[0] for r in want_rows]).mean(0)
    assert list(got["scores"].values()) == pytest.approx(mean.softmax(-1).tolist(), abs=1e-5)


def test_a_prefix_that_fills_max_length_falls_back_to_truncation(tiny_tokenizer: Path) -> None:
    tok = load_tokenizer(tiny_tokenizer)
    prefix = "the market grew " * 8  # more than MAX_LENGTH tokens by itself
    got = encode_windows(tok, [LONG, "x"], MAX_LENGTH, prefix)
    assert got.windows == [1, 1] and got.fallback == 2  # "x" too: the prefix overflows
    want, _, _ = encode_texts(tok, [LONG, "x"], None, MAX_LENGTH, prefix)
    assert [x.tolist() for x in got.ids] == [x.tolist() for x in want]
