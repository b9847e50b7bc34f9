"""Zero- and few-shot classification over a random-init encoder's vectors: each method's scores
against a hand computation from ``pipe.embed`` (cosines of E5-style query and passage vectors,
class centroids, scikit-learn's logistic regression fitted by hand), and clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

import llmos
from llmos.checkpoint.io import save_checkpoint
from llmos.checkpoint.task import Embedding
from llmos.config.model import BertConfig, GPTConfig
from llmos.inference.encoder import EncoderPipeline
from llmos.inference.zeroshot import TEMPERATURE, ZeroShotClassifier
from llmos.models.bert import BertForPreTraining
from llmos.models.gpt import GPT
from llmos.text.tokenizer import load_tokenizer

# Examples of two labels, and texts to classify (the random encoder's tokenizer knows them).
ZH = ["今天我们学习经济。", "去年老师参观城市。", "现在学生研究历史。", "公司一直发展技术。"]
EN = ["the market grew", "students read books", "the city is big", "we like music"]
TEXTS = ["昨天工人保护环境。", "the city is big", "我们喜欢音乐", "students"]
LABELS = {"zh": ["中文句子", "我们学习"], "en": "the market"}


def tiny_e5(tokenizer: Path, out: Path) -> dict[str, Path]:
    """A random-init 1-layer encoder with E5's prefixes in its task.json, and a GPT."""
    tok = load_tokenizer(tokenizer)
    torch.manual_seed(0)
    sizes = {"hidden_size": 16, "num_layers": 1, "num_heads": 2, "intermediate_size": 32}
    bert = BertConfig(vocab_size=tok.get_vocab_size(), max_position=64, **sizes)
    gpt = GPTConfig(vocab_size=tok.get_vocab_size(), max_position=64, **sizes)
    spec = Embedding(query_prefix="query: ", passage_prefix="passage: ")
    return {
        "e5": save_checkpoint(out / "e5", BertForPreTraining(bert), bert, tok, spec),
        "gpt": save_checkpoint(out / "gpt", GPT(gpt), gpt, tok),
    }


@pytest.fixture(scope="module")
def ckpts(tiny_tokenizer: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return tiny_e5(tiny_tokenizer, tmp_path_factory.mktemp("zeroshot"))


@pytest.fixture(scope="module")
def pipe(ckpts: dict[str, Path]) -> EncoderPipeline:
    return llmos.load(ckpts["e5"])


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def scores(results: list[dict], labels: list[str]) -> np.ndarray:
    return np.array([[r["scores"][k] for k in labels] for r in results])


def test_similarity_is_the_softmax_of_query_passage_cosines_over_the_temperature(pipe) -> None:
    clf = ZeroShotClassifier(pipe, LABELS)
    assert (clf.method, clf.labels, TEMPERATURE) == ("similarity", ("zh", "en"), 0.05)
    # by hand: descriptions as passages, each label the renormalised mean of their unit vectors
    zh = unit(unit(pipe.embed(LABELS["zh"], kind="passage")).mean(0))
    en = unit(pipe.embed([LABELS["en"]], kind="passage")[0])
    queries = unit(pipe.embed(TEXTS, kind="query"))
    want = softmax(queries @ np.stack([zh, en]).T / 0.05)
    got = clf.classify(TEXTS)
    assert np.allclose(scores(got, ["zh", "en"]), want, atol=1e-5)
    assert [r["label"] for r in got] == [["zh", "en"][i] for i in want.argmax(1)]
    assert all(r["score"] == max(r["scores"].values()) for r in got)
    assert all(set(r) == {"label", "score", "scores"} for r in got)  # classify()'s shape
    # the prefixes matter: the same texts without them give other scores
    plain = softmax(unit(pipe.embed(TEXTS)) @ np.stack([zh, en]).T / 0.05)
    assert not np.allclose(plain, want, atol=1e-3)
    # the temperature sets how sure the scores are, not the label
    warm = ZeroShotClassifier(pipe, LABELS, temperature=1.0).classify(TEXTS)
    assert [r["label"] for r in warm] == [r["label"] for r in got]
    assert max(r["score"] for r in warm) < max(r["score"] for r in got)
    # one text or a list: the same answer
    assert clf.classify(TEXTS[0]) == clf.classify(TEXTS[:1])
    assert clf.classify([]) == []


class Lookup:
    """An embedder with hand-made vectors: two clusters, around e0 and e1, with noise that
    leaves them apart, so which label each text belongs to is known."""

    def __init__(self, texts: dict[str, int], seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.vectors = {t: np.eye(8)[c] + 0.3 * rng.standard_normal(8) for t, c in texts.items()}
        self.calls: list[tuple[list[str], str | None]] = []

    def embed(self, texts: list[str], *, kind: str | None = None, batch_size: int = 32):
        self.calls.append((list(texts), kind))
        return np.stack([self.vectors[t] for t in texts]).astype(np.float32)


def test_centroid_puts_each_example_with_its_own_label_when_the_classes_are_apart() -> None:
    texts = {t: 0 for t in ZH} | {t: 1 for t in EN} | {"新句子": 0, "a new one": 1}
    embedder = Lookup(texts)
    clf = ZeroShotClassifier(embedder, {}, {"zh": ZH, "en": EN})  # examples only: labels from them
    assert (clf.method, clf.labels) == ("centroid", ("zh", "en"))
    assert embedder.calls == [(ZH + EN, "query")]  # examples embedded once, as queries
    got = clf.classify([*ZH, *EN, "新句子", "a new one"])
    assert [r["label"] for r in got] == ["zh"] * 4 + ["en"] * 4 + ["zh", "en"]


def test_centroid_scores_are_the_softmax_of_cosines_to_the_hand_centroids(pipe) -> None:
    examples = {"zh": ZH, "en": EN}
    clf = ZeroShotClassifier(pipe, {}, examples)
    centroids = np.stack([unit(unit(pipe.embed(v, kind="query")).mean(0)) for v in (ZH, EN)])
    want = softmax(unit(pipe.embed(TEXTS, kind="query")) @ centroids.T / TEMPERATURE)
    assert np.allclose(scores(clf.classify(TEXTS), ["zh", "en"]), want, atol=1e-5)
    # a label without examples goes by its descriptions (as passages); the others by examples
    mixed = ZeroShotClassifier(pipe, {"zh": "中文", "other": "别的"}, examples, method="centroid")
    assert mixed.labels == ("zh", "other", "en")
    other = unit(pipe.embed(["别的"], kind="passage")[0])
    protos = np.stack([centroids[0], other, centroids[1]])
    want = softmax(unit(pipe.embed(TEXTS, kind="query")) @ protos.T / TEMPERATURE)
    assert np.allclose(scores(mixed.classify(TEXTS), ["zh", "other", "en"]), want, atol=1e-5)


def test_unlabelled_texts_remove_each_labels_mean_cosine_before_the_softmax(pipe) -> None:
    pool = [*ZH, *EN]
    clf = ZeroShotClassifier(pipe, LABELS, unlabelled=pool)
    zh = unit(unit(pipe.embed(LABELS["zh"], kind="passage")).mean(0))
    en = unit(pipe.embed([LABELS["en"]], kind="passage")[0])
    protos = np.stack([zh, en])
    prior = (unit(pipe.embed(pool, kind="query")) @ protos.T).mean(0)
    assert np.allclose(clf.prior, prior, atol=1e-6)
    cosines = unit(pipe.embed(TEXTS, kind="query")) @ protos.T
    want = softmax((cosines - prior) / TEMPERATURE)
    assert np.allclose(scores(clf.classify(TEXTS), ["zh", "en"]), want, atol=1e-5)
    # the prior moves the scores: a label the encoder leans toward loses its head start
    plain = scores(ZeroShotClassifier(pipe, LABELS).classify(TEXTS), ["zh", "en"])
    assert not np.allclose(plain, want, atol=1e-3)
    with pytest.raises(llmos.LlmosError, match="not logreg"):
        ZeroShotClassifier(pipe, {}, {"zh": ZH, "en": EN}, method="logreg", unlabelled=pool)
    with pytest.raises(llmos.LlmosError, match="unlabelled texts: none given"):
        ZeroShotClassifier(pipe, LABELS, unlabelled=[])


def test_logreg_equals_scikit_learn_fitted_by_hand(pipe) -> None:
    examples = {"zh": ZH, "en": EN}
    clf = ZeroShotClassifier(pipe, {"x": "别的句子"}, examples, method="logreg", C=3.0)
    assert clf.labels == ("x", "zh", "en")
    # by hand: the examples as queries, the description-only label's description as a passage
    x = np.concatenate(
        [
            unit(pipe.embed(["别的句子"], kind="passage")),
            unit(pipe.embed(ZH, kind="query")),
            unit(pipe.embed(EN, kind="query")),
        ]
    )
    y = [0] + [1] * len(ZH) + [2] * len(EN)
    lr = LogisticRegression(C=3.0, max_iter=1000).fit(x, y)
    want = lr.predict_proba(unit(pipe.embed(TEXTS, kind="query")))
    got = clf.classify(TEXTS)
    assert np.allclose(scores(got, ["x", "zh", "en"]), want, atol=1e-5)
    assert [r["label"] for r in got] == [clf.labels[i] for i in want.argmax(1)]
    assert all(sum(r["scores"].values()) == pytest.approx(1.0) for r in got)


def test_zero_shot_facade_loads_a_path_or_takes_a_pipeline(ckpts, pipe) -> None:
    by_path = llmos.zero_shot(ckpts["e5"], LABELS).classify(TEXTS)
    assert by_path == llmos.zero_shot(pipe, LABELS).classify(TEXTS)
    assert by_path == ZeroShotClassifier(pipe, LABELS).classify(TEXTS)
    few = llmos.zero_shot(str(ckpts["e5"]), {}, {"zh": ZH, "en": EN}, method="logreg")
    assert few.method == "logreg"


@pytest.mark.parametrize(
    ("labels", "examples", "options", "message"),
    [
        ({}, None, {}, "need at least two labels, got none"),
        ({"pos": "good"}, None, {}, r"need at least two labels, got \['pos'\]"),
        ({"pos": "good", "neg": []}, None, {}, "label 'neg' has no description"),
        ({"pos": "good", "neg": []}, {"x": ["a"]}, {"method": "centroid"}, "'neg' has neither"),
        (LABELS, {"zh": ZH}, {"method": "similarity"}, "similarity reads only the labels'"),
        (LABELS, None, {"method": "knn"}, "method must be one of similarity, centroid, logreg"),
        (LABELS, None, {"temperature": 0}, "temperature must be > 0"),
        ({"pos": "good", "neg": ["bad", " "]}, None, {}, "label 'neg''s descriptions: an empty"),
        ({"pos": "good", "neg": [3]}, None, {}, "expected a string or a list of strings"),
        (["pos", "neg"], None, {}, "labels \\(and examples\\) map each label to its texts"),
        (LABELS, {"zh": ZH}, {"method": "logreg", "C": 0}, "C must be > 0"),
    ],
)
def test_bad_input_is_a_clear_error(pipe, labels, examples, options, message) -> None:
    with pytest.raises(llmos.LlmosError, match=message):
        ZeroShotClassifier(pipe, labels, examples, **options)


def test_a_checkpoint_that_cannot_embed_is_a_clear_error(ckpts) -> None:
    with pytest.raises(llmos.LlmosError, match="is a pretrained GPT: zero-shot classification"):
        llmos.zero_shot(ckpts["gpt"], LABELS)
