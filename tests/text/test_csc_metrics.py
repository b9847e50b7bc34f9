"""Spelling-correction scores against answers counted by hand."""

from __future__ import annotations

import pytest

from llmos.text.csc_metrics import sentence_scores

# (source, target, prediction), one case per line
CASES = [
    ("我们再学校", "我们在学校", "我们在学校"),  # corrected
    ("他在家里", "他在家里", "他再家里"),  # clean, over-corrected
    ("今填天汽很好", "今天天气很好", "今天天汽很好"),  # partial: 1 of 2 errors fixed
    ("我门去", "我们去", "我闷去"),  # the right position, the wrong character
    ("你号吗", "你好吗", "您好吗"),  # fixed, plus an over-correction
    ("你好", "你好", "你好"),  # clean, left alone
    ("天汽", "天气", "天汽"),  # missed
]


def test_known_answers() -> None:
    src, tgt, pred = (list(x) for x in zip(*CASES, strict=True))
    s = sentence_scores(src, pred, tgt)
    # 5 sentences with errors (1 3 4 5 7), 5 changed (1 2 3 4 5), 2 clean (2 6), 1 of them
    # changed. Only sentence 1 equals its target: precision 1/5, recall 1/5.
    assert (s["sentences"], s["with_errors"], s["changed"]) == (7, 5, 5)
    assert s["sentence_precision"] == pytest.approx(1 / 5)
    assert s["sentence_recall"] == pytest.approx(1 / 5)
    assert s["sentence_f1"] == pytest.approx(1 / 5)
    # Detection: the changed positions are exactly the wrong ones in sentences 1 and 4.
    assert s["sentence_detect_precision"] == s["sentence_detect_recall"] == pytest.approx(2 / 5)
    # Characters: wrong positions 1+2+1+1+1 = 6, changed 1+1+1+1+2 = 6; changed and wrong:
    # 1+0+1+1+1 = 4 (detection), of which set to the target's character: 1+0+1+0+1 = 3.
    assert s["char_detect_precision"] == s["char_detect_recall"] == pytest.approx(4 / 6)
    assert s["char_precision"] == s["char_recall"] == s["char_f1"] == pytest.approx(3 / 6)
    assert s["fpr"] == pytest.approx(1 / 2)
    # pycorrector's precision counts only the changed clean sentence as a false positive: 1/2.
    assert s["pycorrector_precision"] == pytest.approx(1 / 2)
    assert s["pycorrector_f1"] == pytest.approx(2 * 0.5 * 0.2 / 0.7)


def test_perfect_and_idle_systems() -> None:
    src, tgt, _ = (list(x) for x in zip(*CASES, strict=True))
    perfect = sentence_scores(src, tgt, tgt)
    assert perfect["sentence_f1"] == perfect["char_f1"] == perfect["char_detect_f1"] == 1.0
    assert perfect["fpr"] == 0.0
    idle = sentence_scores(src, src, tgt)
    assert idle["changed"] == 0
    assert idle["sentence_precision"] == idle["sentence_recall"] == idle["sentence_f1"] == 0.0
    assert idle["fpr"] == 0.0


def test_lengths_must_match() -> None:
    with pytest.raises(ValueError, match="sentence 0"):
        sentence_scores(["天汽"], ["天气了"], ["天气"])
    with pytest.raises(ValueError, match="2 sources"):
        sentence_scores(["a", "b"], ["a"], ["a", "b"])
