"""The dialogue policy on hand-made hits: each action at its thresholds, clarification picks,
failed turns, sentiment, requests for a person, and the language of a message."""

from __future__ import annotations

from dataclasses import replace

import pytest

from llmos.apps.support.dialogue import (
    PolicyConfig,
    chosen_entry,
    decide,
    detect_language,
    wants_human,
    with_ticket,
)
from llmos.apps.support.index import Hit

CONFIG = PolicyConfig(answer_similarity=0.9, answer_margin=0.02, clarify_similarity=0.8)


def hit(entry: int, similarity: float) -> Hit:
    return Hit(entry, f"问题{entry}", f"答案{entry}", (), 0.0, similarity, 0.0, "", 1, None)


@pytest.mark.parametrize(
    ("text", "lang"),
    [
        ("怎么退货", "zh"),
        ("我的iPhone屏幕碎了怎么办", "zh"),
        ("How do I return it?", "en"),
        ("iPhone 15 Pro 退货", "zh"),  # 2 characters, 2 words
        ("Can I return my 手机?", "en"),  # 2 characters, 4 words
        ("12345", "en"),
    ],
)
def test_language_is_read_from_the_letters(text: str, lang: str) -> None:
    assert detect_language(text) == lang


@pytest.mark.parametrize(
    ("text", "lang", "human"),
    [
        ("转人工", "zh", True),
        ("我要找你们经理", "zh", True),
        ("有没有真人客服", "zh", True),
        ("人工", "zh", True),
        ("请帮我转人工客服", "zh", True),
        ("人工智能是什么", "zh", False),
        ("人工费怎么算", "zh", False),
        ("怎么退货", "zh", False),
        ("Can I talk to a human?", "en", True),
        ("I want to speak to someone", "en", True),
        ("Let me talk to the manager", "en", True),
        ("How do I reset my password?", "en", False),
        ("What is humanity?", "en", False),
    ],
)
def test_requests_for_a_person(text: str, lang: str, human: bool) -> None:
    assert wants_human(text, lang) is human


def test_a_close_and_clear_best_entry_is_answered() -> None:
    d = decide("q", "zh", None, [hit(1, 0.95), hit(2, 0.90)], {}, CONFIG)
    assert (d.action, d.reply, d.entry.entry, d.state) == ("answer", "答案1", 1, {})
    assert d.reason == "cosine 0.950, ahead of the next by 0.050"
    assert decide("q", "zh", None, [hit(1, 0.95)], {}, CONFIG).reason == (
        "cosine 0.950, the only entry"
    )


def test_close_but_tied_entries_are_offered_by_number() -> None:
    hits = [hit(1, 0.95), hit(2, 0.94), hit(3, 0.935), hit(4, 0.90)]
    d = decide("q", "zh", None, hits, {}, CONFIG)
    assert d.action == "clarify"
    assert [h.entry for h in d.candidates] == [1, 2, 3]  # within the margin of the best
    assert d.reply.endswith("1. 问题1\n2. 问题2\n3. 问题3")
    assert d.state == {"candidates": [{"entry": e, "question": f"问题{e}"} for e in (1, 2, 3)]}
    for reply, entry in (("2", 2), ("第3个", 3), (" 1。", 1), ("问题2", 2), ("4", None)):
        assert chosen_entry(reply, d.state) == entry, reply
    picked = decide("2", "zh", None, [hit(9, 0.5)], d.state, CONFIG, chosen=hit(2, -1))
    assert (picked.action, picked.reply, picked.state) == ("answer", "答案2", {})


def test_a_plausible_but_unsure_best_entry_is_clarified_with_the_next() -> None:
    d = decide("q", "en", None, [hit(1, 0.85), hit(2, 0.70)], {}, CONFIG)
    assert d.action == "clarify" and [h.entry for h in d.candidates] == [1, 2]
    assert d.reply.startswith("Which of these do you mean?")
    only = decide("q", "en", None, [hit(1, 0.85)], {}, CONFIG)
    assert only.action == "answer"  # nothing to choose between


def test_two_fallbacks_in_a_row_escalate() -> None:
    first = decide("q", "zh", None, [hit(1, 0.5)], {}, CONFIG)
    assert (first.action, first.state) == ("fallback", {"failed": 1})
    assert "转人工" in first.reply
    second = decide("q", "zh", None, [hit(1, 0.5)], first.state, CONFIG)
    assert (second.action, second.reason) == ("escalate", "2 failed turns in a row")
    # an answer in between starts the count again
    answered = decide("q", "zh", None, [hit(1, 0.99)], first.state, CONFIG)
    assert answered.state == {}
    assert decide("q", "zh", None, [], {}, CONFIG).reason == "the knowledge base is empty"


def test_sentiment_apologises_or_escalates() -> None:
    hits = [hit(1, 0.95), hit(2, 0.5)]
    calm = decide("q", "zh", 0.2, hits, {}, CONFIG)
    unsure = decide("q", "zh", CONFIG.negative - 0.01, hits, {}, CONFIG)
    upset = decide("q", "zh", CONFIG.negative, hits, {}, CONFIG)
    furious = decide("q", "zh", 0.97, hits, {}, CONFIG)
    assert calm.reply == unsure.reply == "答案1"
    assert CONFIG.negative == 0.5 and CONFIG.strongly_negative == 0.95
    assert upset.reply == "非常抱歉给您带来不便。答案1" and upset.action == "answer"
    assert furious.action == "escalate" and furious.reason == "strongly negative (0.97)"
    unknown = decide("q", "zh", None, hits, {}, CONFIG)  # no sentiment model: no apology
    assert unknown.reply == "答案1"


def test_a_negative_message_without_a_sure_answer_goes_to_a_person() -> None:
    unsure = [hit(1, 0.85), hit(2, 0.84)]  # would be a clarification
    for hits, before in ((unsure, "clarify"), ([hit(1, 0.5)], "fallback")):
        calm = decide("q", "zh", CONFIG.negative - 0.01, hits, {}, CONFIG)
        upset = decide("q", "zh", CONFIG.negative, hits, {}, CONFIG)
        assert calm.action == before
        assert upset.action == "escalate" and upset.reason == "negative (0.50), no sure answer"
        assert upset.reply.startswith("已为您转接人工客服")
        off = replace(CONFIG, negative_unanswered=False)
        kept = decide("q", "zh", CONFIG.negative, hits, {}, off)
        assert kept.action == before and kept.reply.startswith("非常抱歉给您带来不便。")
        assert decide("q", "zh", None, hits, {}, CONFIG).action == before  # no sentiment model
    # a sure answer is still given, with the apology
    sure = decide("q", "zh", 0.9, [hit(1, 0.95), hit(2, 0.5)], {}, CONFIG)
    assert (sure.action, sure.reply) == ("answer", "非常抱歉给您带来不便。答案1")


def test_asking_for_a_person_escalates_before_anything_else() -> None:
    d = decide("转人工", "zh", 0.0, [hit(1, 0.99)], {}, CONFIG)
    assert d.action == "escalate" and d.reason == "the customer asked for a person"
    assert with_ticket(d, 42, "zh").reply == (
        "已为您转接人工客服（工单 #42），客服人员会在这里回复您，请稍候。"
    )
    assert "ticket #7" in with_ticket(d, 7, "en").reply
