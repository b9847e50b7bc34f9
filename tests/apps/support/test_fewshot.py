"""Few-shot intents on hand-made vectors whose nearest centroid is known, and the rules that
merge them with the trained head's intent, at their boundaries."""

from __future__ import annotations

import numpy as np
import pytest

from llmos.apps.support.domain import demo_domain
from llmos.apps.support.fewshot import FewShotConfig, FewShotIntents, combine

# order: two examples, centroid (0.9, 0.3, 0) / |.| = (0.9487, 0.3162, 0)
# refund: two examples, centroid (0, 0.3, 0.9) / |.| = (0, 0.3162, 0.9487)
EXAMPLES = {"order": ["where is my order", "track it"], "refund": ["refund", "money back"]}
VECTORS = np.array([[1, 0, 0], [0.8, 0.6, 0], [0, 0, 1], [0, 0.6, 0.8]], dtype=np.float32)
C = 0.9 / np.sqrt(0.9)  # 0.9487: the cosine of (1, 0, 0) with the order centroid
S = 0.3 / np.sqrt(0.9)  # 0.3162: the centroids' middle coordinate


def test_centroids_are_normalised_means() -> None:
    few = FewShotIntents(EXAMPLES, VECTORS)
    assert few.labels == ("order", "refund")
    s = np.sqrt(0.9)
    expected = np.array([[0.9 / s, 0.3 / s, 0], [0, 0.3 / s, 0.9 / s]], dtype=np.float32)
    np.testing.assert_allclose(few.centroids, expected, rtol=1e-6)


def test_a_message_nearest_a_reference_intent_is_the_heads() -> None:
    # "refund" is an intent the head knows: its examples only stake out its region
    few = FewShotIntents(EXAMPLES, VECTORS, reference=["refund"])
    assert few.best(np.array([1, 0, 0])) == ("order", pytest.approx(C, rel=1e-5))
    assert few.best(np.array([0, 0.6, 0.8])) is None  # nearer refund than order
    # the head keeps its answer however sure the thresholds would make the few-shot one
    head = {"label": "refund", "score": 0.1}
    assert combine(head, few.best(np.array([0, 0.6, 0.8])), FewShotConfig(-1, 1.0, -1)) == {
        "label": "refund",
        "score": 0.1,
        "source": "head",
    }
    with pytest.raises(ValueError, match=r"reference intents without examples: \['billing'\]"):
        FewShotIntents(EXAMPLES, VECTORS, reference=["billing"])


def test_a_reference_must_be_nearer_by_the_margin() -> None:
    few = FewShotIntents(EXAMPLES, VECTORS, reference=["refund"])
    # (0, 0.6, 0.8): order 0.6 S = 0.190, refund 0.6 S + 0.8 C = 0.949: refund nearer by 0.759
    v = np.array([0, 0.6, 0.8])
    gap = 0.8 * C
    assert few.best(v, margin=gap - 1e-3) is None
    assert few.best(v, margin=gap + 1e-3) == ("order", pytest.approx(0.6 * S, rel=1e-5))
    # a few-shot intent that is the nearest stays whatever the margin
    assert few.best(np.array([1, 0, 0]), margin=0.0) == ("order", pytest.approx(C, rel=1e-5))
    # only references: no few-shot intent to give
    assert FewShotIntents(EXAMPLES, VECTORS, reference=["order", "refund"]).best(v) is None
    with pytest.raises(ValueError, match="reference_margin is a cosine difference"):
        FewShotConfig(reference_margin=-0.1)


def test_scores_and_the_best_intent() -> None:
    few = FewShotIntents(EXAMPLES, VECTORS)
    queries = np.array([[1, 0, 0], [0, 0.6, 0.8], [0, 1, 0]], dtype=np.float32)
    scores = few.scores(queries)
    assert scores.shape == (3, 2)
    np.testing.assert_allclose(scores, [[C, 0], [0.6 * S, 0.6 * S + 0.8 * C], [S, S]], rtol=1e-5)
    assert few.best(queries[1]) == ("refund", pytest.approx(0.6 * S + 0.8 * C, rel=1e-5))
    assert few.best(queries[0]) == ("order", pytest.approx(C, rel=1e-5))
    assert few.best(queries[2]) == ("order", pytest.approx(S, rel=1e-5))  # a tie: the first
    # a message's vector of any length: the score is a cosine
    np.testing.assert_allclose(few.scores(queries * 7), scores, rtol=1e-5)
    assert few.scores(np.zeros((1, 3))).tolist() == [[0.0, 0.0]]


def test_the_nearest_centroid_is_not_the_nearest_example() -> None:
    # a: (1, 0) and (0, 1) -> centroid (0.707, 0.707); b: (0.8, 0.6) twice. The message (1, 0)
    # equals one of a's examples, yet b's centroid is nearer (0.8 > 0.707).
    few = FewShotIntents(
        {"a": ["x", "y"], "b": ["z", "w"]},
        np.array([[1, 0], [0, 1], [0.8, 0.6], [0.8, 0.6]], dtype=np.float32),
    )
    assert few.best(np.array([1, 0])) == ("b", pytest.approx(0.8))


def test_built_from_an_embedder() -> None:
    table = dict(zip([t for ts in EXAMPLES.values() for t in ts], VECTORS, strict=True))
    seen: list[list[str]] = []

    def embed(texts: list[str]) -> np.ndarray:
        seen.append(texts)
        return np.stack([table[t] for t in texts])

    few = FewShotIntents.from_embedder(EXAMPLES, embed)
    assert seen == [["where is my order", "track it", "refund", "money back"]]  # one batch
    np.testing.assert_array_equal(few.centroids, FewShotIntents(EXAMPLES, VECTORS).centroids)
    empty = FewShotIntents.from_embedder({}, embed)
    assert len(seen) == 1  # nothing to embed
    assert empty.best(np.ones(3)) is None
    assert empty.scores(np.ones((2, 3))).shape == (2, 0)


def test_the_demo_domain_gives_the_examples() -> None:
    examples = demo_domain().few_shot_examples()
    rng = np.random.default_rng(0)
    few = FewShotIntents(examples, rng.normal(size=(sum(map(len, examples.values())), 8)))
    assert few.labels == (
        "HassVacuumStart",
        "HassVacuumReturnToBase",
        "HassLawnMowerDock",
        "HassLawnMowerStartMowing",
        "order_status",
        "complaint_refund",
        "change_order",
    )
    assert all(len(texts) == 16 for texts in examples.values())  # 8 zh + 8 en


@pytest.mark.parametrize(
    ("examples", "vectors", "says"),
    [
        (EXAMPLES, VECTORS[:3], r"expected \(4, d\) vectors for 4 examples; got \(3, 3\)"),
        (EXAMPLES, VECTORS[:, 0], r"expected \(4, d\) vectors"),
        ({"a": []}, np.zeros((0, 3)), "'a' has no examples"),
        ({"a": ["x", "y"]}, np.array([[1, 0], [-1, 0]]), "cancel out"),
    ],
)
def test_bad_examples(examples: dict[str, list[str]], vectors: np.ndarray, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        FewShotIntents(examples, vectors)


def test_vectors_of_another_size_are_refused() -> None:
    with pytest.raises(ValueError, match="same encoder"):
        FewShotIntents(EXAMPLES, VECTORS).scores(np.ones((1, 4)))


CONFIG = FewShotConfig(similarity=0.85, head_confidence=0.9, sure_similarity=0.93)


def head(score: float) -> dict[str, object]:
    return {"label": "HassTurnOn", "score": score, "scores": {"HassTurnOn": score}}


@pytest.mark.parametrize(
    ("head_score", "cosine", "source"),
    [
        (0.89, 0.85, "examples"),  # similar enough, the head unsure
        (0.89, 0.8499, "head"),  # not similar enough
        (0.9, 0.85, "head"),  # the head is sure: at its confidence is not below it
        (0.9, 0.9299, "head"),
        (0.99, 0.93, "examples"),  # sure similarity wins over any head
        (1.0, 0.95, "examples"),
        (None, 0.85, "examples"),  # no head at all
    ],
)
def test_combine_at_the_boundaries(head_score: float | None, cosine: float, source: str) -> None:
    h = head(head_score) if head_score is not None else None
    got = combine(h, ("order_status", cosine), CONFIG)
    assert got is not None and got["source"] == source
    if source == "examples":
        assert got == {"label": "order_status", "score": cosine, "source": "examples"}
    else:
        assert got == {"label": "HassTurnOn", "score": head_score, "source": "head"}


def test_combine_without_one_side() -> None:
    assert combine(head(0.3), None, CONFIG) == {
        "label": "HassTurnOn",
        "score": 0.3,
        "source": "head",
    }
    assert combine(None, ("order_status", 0.84), CONFIG) is None
    assert combine(None, None, CONFIG) is None
    # The default thresholds: 0.90 over a head below 0.5, 0.92 over any head.
    assert combine(head(0.49), ("order_status", 0.91)) == {
        "label": "order_status",
        "score": 0.91,
        "source": "examples",
    }
    assert combine(head(0.5), ("order_status", 0.91))["source"] == "head"
    assert combine(head(0.99), ("order_status", 0.92))["source"] == "examples"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"similarity": 0.95, "sure_similarity": 0.9},
        {"sure_similarity": 1.5},
        {"head_confidence": 1.2},
        {"head_confidence": -0.1},
    ],
)
def test_config_is_checked(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="FewShotConfig"):
        FewShotConfig(**kwargs)


def test_the_nearest_centroid_of_all_counts_references_too() -> None:
    few = FewShotIntents(EXAMPLES, VECTORS, reference=["refund"])
    c = few.centroids  # order ~ (0.949, 0.316, 0), refund ~ (0, 0.316, 0.949)
    assert few.nearest(np.array([0.0, 0.0, 2.0])) == pytest.approx(float(c[1, 2]), rel=1e-6)
    assert few.nearest(np.array([1.0, 0.0, 0.0])) == pytest.approx(float(c[0, 0]), rel=1e-6)
    assert few.nearest(np.array([0.0, -1.0, 0.0])) == pytest.approx(-float(c[0, 1]), rel=1e-6)
    empty = FewShotIntents({}, np.zeros((0, 3)))
    assert empty.nearest(np.array([1.0, 0.0, 0.0])) == -1.0


def test_the_out_of_domain_gate_is_per_language_and_checked() -> None:
    assert FewShotConfig().in_domain == {"zh": 0.91, "en": 0.87}
    assert FewShotConfig(in_domain={}).in_domain == {}
    with pytest.raises(ValueError, match=r"in_domain\['zh'\] is a cosine; got 1.5"):
        FewShotConfig(in_domain={"zh": 1.5})


def test_the_vectors_setting_is_checked() -> None:
    assert FewShotConfig().vectors == "encoder" and FewShotConfig(vectors="nlu").vectors == "nlu"
    with pytest.raises(ValueError, match="vectors is 'encoder' or 'nlu'; got 'e5'"):
        FewShotConfig(vectors="e5")
