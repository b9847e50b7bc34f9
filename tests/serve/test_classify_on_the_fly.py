"""``POST /v1/classify`` with an encoder plus labels and/or examples, on a real server: the
answers equal :class:`~llmos.inference.zeroshot.ZeroShotClassifier` over the same checkpoint,
a repeated request reuses the built classifier, a changed one builds another, and mistakes are
4xx with the field named."""

from __future__ import annotations

from pathlib import Path

import pytest

import llmos
from llmos.inference.zeroshot import ZeroShotClassifier
from serve.conftest import Live

TEXTS = ["我们今天参观城市。", "老师讨论经济", "学生学习历史和艺术，记者介绍文化。"]
LABELS = {"city": "城市", "study": ["学习", "学生研究历史"]}
EXAMPLES = {"city": ["去年老师参观城市。", "公司一直发展城市"], "study": ["今天我们学习经济。"]}


def scores_equal(got: list[dict], want: list[dict]) -> None:
    assert [g["label"] for g in got] == [w["label"] for w in want]
    for g, w in zip(got, want, strict=True):
        assert g["scores"] == pytest.approx(w["scores"], abs=1e-5)
        assert g["windows"] == 1


@pytest.mark.parametrize(
    ("labels", "examples", "method"),
    [
        (LABELS, None, None),  # zero-shot: similarity to the descriptions
        (None, EXAMPLES, None),  # few-shot: centroid by default
        (None, EXAMPLES, "logreg"),
        ({"city": "城市"}, {"study": ["今天我们学习经济。"]}, "centroid"),  # one of each
    ],
)
def test_on_the_fly_equals_the_python_api(
    live: Live, models_dir: Path, labels: dict | None, examples: dict | None, method: str | None
) -> None:
    want = ZeroShotClassifier(llmos.load(models_dir / "emb"), labels or {}, examples, method=method)
    body = {"model": "emb", "texts": TEXTS, "labels": labels, "examples": examples}
    body |= {"method": method} if method else {}
    with live.client(live.alice) as c:
        first = c.post("/v1/classify", json=body)
        assert first.status_code == 200, first.text
        again = c.post("/v1/classify", json=body)
    scores_equal(first.json()["results"], want.classify(TEXTS))
    assert first.json()["method"] == want.method
    assert again.json()["results"] == first.json()["results"]
    assert again.json()["cached"] is True


def test_a_changed_example_builds_another_classifier(live: Live) -> None:
    body = {"model": "emb", "texts": TEXTS, "examples": EXAMPLES, "method": "logreg"}
    changed = {**EXAMPLES, "study": [*EXAMPLES["study"], "学生学习历史"]}
    with live.client(live.bob) as c:
        c.post("/v1/classify", json=body)
        r = c.post("/v1/classify", json={**body, "examples": changed})
        assert r.json()["cached"] is False
        assert c.post("/v1/classify", json=body).json()["cached"] is True


def test_label_texts_are_read_stripped(live: Live, models_dir: Path) -> None:
    """Examples and descriptions with surrounding spaces (or only spaces) are read as
    ZeroShotClassifier reads them: stripped (found by the schema fuzzing: a 500 before)."""
    examples = {"city": ["  去年老师参观城市。\u2028"], "study": ["今天我们学习经济。 "]}
    want = ZeroShotClassifier(llmos.load(models_dir / "emb"), {}, examples, method="logreg")
    body = {"model": "emb", "texts": TEXTS, "examples": examples, "method": "logreg"}
    with live.client(live.alice) as c:
        r = c.post("/v1/classify", json=body)
        assert r.status_code == 200, r.text
        scores_equal(r.json()["results"], want.classify(TEXTS))
        blank = {**body, "examples": {"city": ["  "], "study": ["学习"]}}
        r = c.post("/v1/classify", json=blank)
        assert r.status_code == 422 and "empty text" in r.text


def test_a_trained_classifier_answers_as_before(live: Live) -> None:
    with live.client(live.alice) as c:
        r = c.post("/v1/classify", json={"model": "cls", "texts": TEXTS})
    assert r.status_code == 200 and r.json()["method"] is None and r.json()["cached"] is None


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"model": "emb", "labels": {"only": "一个"}}, 422, "at least two labels"),
        (
            {
                "model": "emb",
                "labels": {"a": "甲"},
                "examples": {"b": ["乙"]},
                "method": "similarity",
            },
            422,
            "similarity",
        ),
        ({"model": "emb", "labels": LABELS, "texts_b": ["x"] * 3}, 422, "texts_b"),
        ({"model": "cls", "method": "logreg"}, 422, "method is for"),
        ({"model": "emb", "labels": LABELS, "method": "cloze"}, 422, "method"),
        ({"model": "gpt", "labels": LABELS}, 400, "/v1/embed"),
        ({"model": "nope", "labels": LABELS}, 404, "nope"),
        ({"model": "emb", "examples": {"a": [], "b": ["乙"]}}, 422, "label 'a'"),
    ],
)
def test_mistakes_are_named(live: Live, body: dict, status: int, needle: str) -> None:
    with live.client(live.alice) as c:
        r = c.post("/v1/classify", json={"texts": TEXTS, **body})
    assert r.status_code == status, r.text
    assert needle in r.text


def test_needs_a_key(live: Live) -> None:
    with live.client() as c:
        r = c.post("/v1/classify", json={"model": "emb", "texts": TEXTS, "labels": LABELS})
    assert r.status_code == 401
