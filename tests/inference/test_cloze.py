"""Cloze zero-shot on a random-init masked LM: the labels' probabilities against a hand
computation from the model's own MLM logits at the mask, pattern averaging and prior removal
by the same formulas, the encoding of patterns (SentencePiece's bare word-start pieces
around the mask dropped, long texts cut around the mask), and clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from inference.test_zeroshot import tiny_e5
from tokenizers import Tokenizer, models, pre_tokenizers, processors

import llmos
from llmos.checkpoint.io import save_checkpoint
from llmos.checkpoint.task import Embedding
from llmos.config.model import BertConfig
from llmos.errors import LlmosError
from llmos.inference.cloze import encode_cloze, fill, word_piece
from llmos.inference.encoder import EncoderPipeline
from llmos.inference.zeroshot import ZeroShotClassifier
from llmos.models.bert import BertForPreTraining
from llmos.text.tokenizer import load_tokenizer

TEXTS = ["今天我们学习经济", "去年老师参观城市", "the city is big", "工人保护环境"]
PATTERN = "{text}，总之很[MASK]。"
VERBALIZERS = {"pos": "学", "neg": "市"}


@pytest.fixture(scope="module")
def ckpts(tiny_tokenizer: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny E5-style encoder with an MLM head (``heads: mlm+nsp``), and one without."""
    out = tmp_path_factory.mktemp("cloze")
    found = tiny_e5(tiny_tokenizer, out)
    tok = load_tokenizer(tiny_tokenizer)
    torch.manual_seed(1)
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
    spec = Embedding(query_prefix="query: ", passage_prefix="passage: ")
    found["bare"] = save_checkpoint(out / "bare", BertForPreTraining(cfg), cfg, tok, spec)
    return found


@pytest.fixture(scope="module")
def pipe(ckpts: dict[str, Path]) -> EncoderPipeline:
    return llmos.load(ckpts["e5"])


def mask_logits(pipe: EncoderPipeline, text: str) -> torch.Tensor:
    """(V,) the MLM logits at the one [MASK] of ``text``, straight from the model."""
    ids = pipe.tokenizer.encode(text).ids
    at = ids.index(pipe.tokenizer.token_to_id("[MASK]"))
    with torch.no_grad():
        out = pipe.model(torch.tensor([ids]), mlm_positions=torch.tensor([at]))
    return out.mlm_logits[0].double()


def piece(pipe: EncoderPipeline, word: str) -> int:
    (i,) = pipe.tokenizer.encode(word, add_special_tokens=False).ids
    return i


def test_scores_are_the_softmax_of_the_verbalizers_mlm_logits_at_the_mask(pipe) -> None:
    clf = ZeroShotClassifier(pipe, VERBALIZERS, method="cloze", patterns=PATTERN)
    assert (clf.method, clf.labels, clf.temperature) == ("cloze", ("pos", "neg"), 1.0)
    got = clf.classify(TEXTS)
    ids = [piece(pipe, "学"), piece(pipe, "市")]
    for text, r in zip(TEXTS, got, strict=True):
        logits = mask_logits(pipe, PATTERN.replace("{text}", text))[ids]
        want = logits.softmax(-1).numpy()  # the vocabulary's normaliser cancels
        assert np.allclose([r["scores"]["pos"], r["scores"]["neg"]], want, atol=1e-5)
        assert r["label"] == ["pos", "neg"][int(want.argmax())]
    assert set(got[0]) == {"label", "score", "scores"}  # a trained classifier's shape


def test_several_patterns_verbalizers_and_the_prior_by_hand(pipe) -> None:
    patterns = [PATTERN, "[MASK]：{text}"]
    labels = {"pos": ["学", "经"], "neg": "市"}
    pool = ["明年公司发展技术", "we like music", "他喜欢艺术"]
    clf = llmos.zero_shot(pipe, labels, method="cloze", patterns=patterns, unlabelled=pool)
    ids = {"pos": [piece(pipe, "学"), piece(pipe, "经")], "neg": [piece(pipe, "市")]}

    def label_logp(text: str) -> np.ndarray:
        total = np.zeros(2)
        for p in patterns:
            logp = mask_logits(pipe, p.replace("{text}", text)).log_softmax(-1)
            # each label: the log of its verbalizers' mean probability; then normalised
            s = torch.stack([logp[ids[k]].exp().mean().log() for k in ("pos", "neg")])
            total += (s - s.logsumexp(-1)).numpy()
        return total / len(patterns)

    prior = np.mean([label_logp(t) for t in pool], axis=0)
    want = np.stack([label_logp(t) - prior for t in TEXTS])
    want = np.exp(want) / np.exp(want).sum(-1, keepdims=True)
    got = clf.classify(TEXTS)
    assert np.allclose([[r["scores"][k] for k in ("pos", "neg")] for r in got], want, atol=1e-5)


def test_user_mistakes_name_the_pattern_verbalizer_or_checkpoint(pipe, ckpts) -> None:
    def make(**kw):
        kw = {"method": "cloze", "patterns": PATTERN} | kw
        return ZeroShotClassifier(kw.pop("pipe", pipe), kw.pop("labels", VERBALIZERS), **kw)

    with pytest.raises(LlmosError, match=r"pattern '总之很\[MASK\]。': put \{text\}"):
        make(patterns="总之很[MASK]。")
    with pytest.raises(LlmosError, match=r"put the mask slot \[MASK\].*found 0"):
        make(patterns="{text}，总之很好。")
    with pytest.raises(LlmosError, match=r"found 2"):
        make(patterns="[MASK]{text}[MASK]")
    with pytest.raises(LlmosError, match=r"label 'neg': the verbalizer '学生' is not one token"):
        make(labels={"pos": "学", "neg": "学生"})
    with pytest.raises(LlmosError, match=r"'学' is given to two labels, 'pos' and 'neg'"):
        make(labels={"pos": "学", "neg": ["市", "学"]})
    with pytest.raises(LlmosError, match="method cloze needs a pattern"):
        make(patterns=None)
    with pytest.raises(LlmosError, match="method cloze needs a pattern"):
        make(patterns=[])
    with pytest.raises(LlmosError, match="patterns are for method cloze, not similarity"):
        make(method="similarity", labels={"a": "x", "b": "y"})
    with pytest.raises(LlmosError, match="examples are for method centroid or logreg"):
        ZeroShotClassifier(pipe, VERBALIZERS, {"pos": ["学习"]}, method="cloze", patterns=PATTERN)
    with pytest.raises(LlmosError, match="without a masked-LM head: method cloze needs one"):
        make(pipe=llmos.load(ckpts["bare"]))
    with pytest.raises(LlmosError, match="reads texts, not vectors"):
        make().probabilities(np.ones((1, 16)))


def test_a_long_text_is_cut_around_the_mask(pipe) -> None:
    text = "我们学习经济" * 30  # far past the tiny model's 64 positions
    mask_id = pipe.tokenizer.token_to_id("[MASK]")
    for pattern, start in ((PATTERN, False), ("[MASK]：{text}", True)):
        (ids,), (at,), cut = encode_cloze(
            pipe.tokenizer, [fill(pattern, text, "[MASK]")], mask_id, 64
        )
        assert (len(ids), cut, ids[at]) == (64, 1, mask_id)
        assert (at == 1) == start  # the mask after the text keeps the end, before it the start
        assert ids[0] == pipe.tokenizer.token_to_id("[CLS]")
        assert ids[-1] == pipe.tokenizer.token_to_id("[SEP]")
    got = ZeroShotClassifier(pipe, VERBALIZERS, method="cloze", patterns=PATTERN).classify(text)
    assert len(got) == 1


def sentencepiece_like() -> Tokenizer:
    """A tiny Unigram tokenizer with XLM-R's specials and Metaspace, as multilingual-e5's."""
    pieces = ["<s>", "<pad>", "</s>", "<unk>", "▁", "▁it", "▁was", "▁great", "很", "好", "。", "."]
    pieces += ["▁terri", "ble", "<mask>"]
    tok = Tokenizer(models.Unigram([(p, -1.0) for p in pieces], unk_id=3))
    tok.add_special_tokens(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    return tok


def test_bare_word_start_pieces_around_the_mask_are_dropped() -> None:
    tok = sentencepiece_like()
    vocab = tok.get_vocab()
    mask = vocab["<mask>"]
    texts = [fill(p, "", "<mask>") for p in ("{text}it was [MASK].", "{text}很[MASK]。")]
    assert [tok.encode(t).tokens for t in texts] == [  # what the tokenizer alone gives
        ["<s>", "▁it", "▁was", "▁", "<mask>", "▁", ".", "</s>"],
        ["<s>", "▁", "很", "<mask>", "▁", "。", "</s>"],
    ]
    inputs, positions, cut = encode_cloze(tok, texts, mask, 64)
    assert [[tok.id_to_token(i) for i in ids] for ids in inputs] == [
        ["<s>", "▁it", "▁was", "<mask>", ".", "</s>"],
        ["<s>", "▁", "很", "<mask>", "。", "</s>"],
    ]
    assert (positions, cut) == ([3, 3], 0)
    # a verbalizer is the one piece it reads as, a bare word start aside
    assert [word_piece(tok, w) for w in ("great", "好", "terrible")] == [
        vocab["▁great"],
        vocab["好"],
        None,
    ]


def test_fill_mask_reads_mask_as_the_tokenizers_own_without_bare_pieces(tmp_path) -> None:
    tok = sentencepiece_like()
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=tok.get_vocab_size(),
        max_position=16,
        hidden_size=16,
        num_layers=1,
        num_heads=2,
        intermediate_size=32,
        pad_token_id=1,
        heads="mlm",
        pooler=False,
    )
    model = BertForPreTraining(cfg)
    pipe = llmos.load(save_checkpoint(tmp_path / "sp", model, cfg, tok, Embedding()))
    got = pipe.fill_mask("很[MASK]。", top_k=2)  # [MASK] stands for this tokenizer's <mask>
    v = tok.get_vocab()
    ids = [v["<s>"], v["▁"], v["很"], v["<mask>"], v["。"], v["</s>"]]  # no ▁ after the mask
    with torch.no_grad():
        out = pipe.model(torch.tensor([ids]), mlm_positions=torch.tensor([3]))
    top = out.mlm_logits[0].softmax(-1).topk(2)
    assert [r["token_id"] for r in got] == top.indices.tolist()
    assert np.allclose([r["score"] for r in got], top.values.tolist(), atol=1e-6)
