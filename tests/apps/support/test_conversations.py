"""Conversations through the support service on a real store and a real (tiny) encoder: the
policy's actions with their state kept across turns, escalation to the human queue, agents'
replies and closing, and who may ask and see what."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from llmos.apps.support.dialogue import PolicyConfig
from llmos.apps.support.local import PipelineEmbedder
from llmos.apps.support.service import SupportService
from llmos.errors import LlmosError
from llmos.store.db import Store
from llmos.store.desk import UnknownConversation
from llmos.store.kb import FaqPair, UnknownKnowledgeBase

PAIRS = [
    FaqPair("农民一直保护环境", "环境保护是大事。"),
    FaqPair("记者现在介绍艺术", "艺术介绍在晚上。"),
    FaqPair("老师今天讨论经济", "经济讨论在周一。"),
]
ALWAYS_ANSWER = PolicyConfig(answer_similarity=-1.0, answer_margin=-1.0)
ALWAYS_CLARIFY = PolicyConfig(answer_similarity=2.0, clarify_similarity=-1.0, answer_margin=9.0)
NEVER_SURE = PolicyConfig(answer_similarity=2.0, clarify_similarity=2.0)


class Desk:
    def __init__(self, root: Path, encoder: Path) -> None:
        self.store = Store(f"sqlite:///{root / 'llmos.db'}")
        self.shop = self.store.create_user("shop")[0].id
        self.customer = self.store.create_user("customer")[0].id
        self.carol = self.store.create_user("carol")[0].id
        self.svc = SupportService(self.store, PipelineEmbedder(encoder), root / "indexes")
        self.svc.create_kb(self.shop, "faq")
        self.ids = self.svc.add(self.shop, "faq", PAIRS)

    def with_policy(self, policy: PolicyConfig) -> SupportService:
        self.svc.policy = policy
        return self.svc


@pytest.fixture()
def desk(tmp_path: Path, tiny_encoder: Path) -> Iterator[Desk]:
    d = Desk(tmp_path, tiny_encoder)
    yield d
    d.store.close()


def test_only_public_or_own_knowledge_bases_can_be_asked(desk: Desk) -> None:
    svc = desk.with_policy(ALWAYS_ANSWER)
    with pytest.raises(UnknownKnowledgeBase, match="no knowledge base 'shop/faq' that you may ask"):
        svc.message(desk.customer, "环境", kb="shop/faq")
    assert svc.message(desk.shop, "环境", kb="shop/faq").action == "answer"  # the owner tests it
    info, agents = svc.share(desk.shop, "faq", public=True)
    assert info.public and agents == []
    assert svc.message(desk.customer, "环境", kb="shop/faq").action == "answer"
    with pytest.raises(UnknownKnowledgeBase):
        svc.message(desk.customer, "环境", kb="shop/nothing")
    with pytest.raises(LlmosError, match="OWNER/NAME"):
        svc.message(desk.customer, "环境", kb="faq")
    with pytest.raises(LlmosError, match="give the knowledge base"):
        svc.message(desk.customer, "环境")


def test_an_answer_names_its_source_and_both_turns_are_kept(desk: Desk) -> None:
    svc = desk.with_policy(ALWAYS_ANSWER)
    svc.share(desk.shop, "faq", public=True)
    r = svc.message(desk.customer, "农民一直保护环境", kb="shop/faq")
    assert r.action == "answer" and r.language == "zh" and r.ticket_id is None
    [source] = r.sources
    assert r.reply == PAIRS[desk.ids.index(source["id"])].answer
    conv, turns = svc.transcript(desk.customer, r.conversation_id)
    assert [(t.role, t.text, t.action) for t in turns] == [
        ("customer", "农民一直保护环境", None),
        ("bot", r.reply, "answer"),
    ]
    assert turns[1].trace["sources"] == r.sources and conv.status == "bot"
    with pytest.raises(UnknownConversation):
        svc.transcript(desk.carol, r.conversation_id)  # another user's conversation
    with pytest.raises(UnknownConversation):
        svc.message(desk.carol, "你好", conversation=r.conversation_id)
    for impossible in (2**40, 0, -3):  # ids no INTEGER column holds (PostgreSQL: 32 bits)
        with pytest.raises(UnknownConversation):
            svc.transcript(desk.customer, impossible)
        with pytest.raises(UnknownConversation):
            svc.ticket(desk.shop, impossible)


def test_a_clarification_is_answered_by_number_in_the_next_turn(desk: Desk) -> None:
    svc = desk.with_policy(ALWAYS_CLARIFY)
    first = svc.message(desk.shop, "讨论", kb="shop/faq")
    assert first.action == "clarify" and len(first.sources) == 3
    second = svc.message(desk.shop, "2", conversation=first.conversation_id)
    picked = first.sources[1]["id"]
    assert (second.action, second.reply) == ("answer", PAIRS[desk.ids.index(picked)].answer)
    assert second.reason == "picked from the clarification"


def test_failing_twice_escalates_and_the_agent_takes_over(desk: Desk) -> None:
    svc = desk.with_policy(NEVER_SURE)
    svc.share(desk.shop, "faq", public=True, agents=["carol"])
    first = svc.message(desk.customer, "天气怎么样", kb="shop/faq")
    assert first.action == "fallback"
    conv = first.conversation_id
    second = svc.message(desk.customer, "明天下雨吗", conversation=conv)
    assert second.action == "escalate" and second.ticket_id is not None
    assert f"#{second.ticket_id}" in second.reply
    # escalated: the bot stays out, the same ticket waits
    third = svc.message(desk.customer, "还在吗", conversation=conv)
    assert (third.action, third.ticket_id) == ("escalate", second.ticket_id)
    assert "请稍候" in third.reply

    for agent in (desk.shop, desk.carol):  # the owner and the agent see it
        [ticket] = svc.tickets(agent)
        assert ticket.id == second.ticket_id and ticket.reason == "2 failed turns in a row"
    assert svc.tickets(desk.customer) == []  # not an agent of this knowledge base
    with pytest.raises(UnknownConversation):
        svc.ticket(desk.customer, second.ticket_id)
    ticket, kb, turns = svc.ticket(desk.carol, second.ticket_id)
    assert kb.handle == "shop/faq" and len(turns) == 6
    assert turns[3].trace["reason"] == "2 failed turns in a row"  # the NLU trace for agents

    svc.agent_reply(desk.carol, ticket.id, "明天有小雨。", "carol")
    _, turns = svc.transcript(desk.customer, conv)
    assert (turns[-1].role, turns[-1].text) == ("agent", "明天有小雨。")
    svc.close(desk.carol, ticket.id)
    assert svc.tickets(desk.carol) == [] and len(svc.tickets(desk.carol, None)) == 1
    after = desk.with_policy(ALWAYS_ANSWER).message(desk.customer, "环境", conversation=conv)
    assert after.action == "answer"  # the bot answers again


def test_asking_for_a_person_escalates_at_once(desk: Desk) -> None:
    svc = desk.with_policy(ALWAYS_ANSWER)
    r = svc.message(desk.shop, "转人工", kb="shop/faq")
    assert r.action == "escalate" and r.reason == "the customer asked for a person"
    assert [t.id for t in svc.tickets(desk.shop)] == [r.ticket_id]
    english = svc.message(desk.shop, "Can I talk to a human?", kb="shop/faq")
    assert english.language == "en" and english.reply.startswith("I've passed your conversation")


def test_sentiment_comes_from_the_classifier_for_the_messages_language(desk: Desk) -> None:
    seen = []

    def classify(texts: list[str], lang: str) -> list[dict] | None:
        seen.append((texts, lang))
        if lang != "zh":
            return None  # no English sentiment model
        return [{"label": "neg", "score": 0.97, "scores": {"neg": 0.97, "pos": 0.03}}]

    desk.svc.classify = classify
    svc = desk.with_policy(ALWAYS_ANSWER)
    r = svc.message(desk.shop, "太差了，环境", kb="shop/faq")
    assert r.action == "escalate" and r.reason == "strongly negative (0.97)"
    assert r.sentiment == {"label": "neg", "negative": 0.97}
    calm = svc.message(desk.shop, "environment please", kb="shop/faq")
    assert calm.action == "answer" and calm.sentiment is None
    assert seen == [(["太差了，环境"], "zh"), (["environment please"], "en")]


def test_the_apology_threshold_depends_on_whether_the_sentiment_model_knows_neutral(
    desk: Desk,
) -> None:
    """0.7 negative is an apology from a model with a neutral class (>= ``negative``, 0.5),
    not from a two-class one (>= ``negative_two_class``, 0.9), whose neutral messages sit
    anywhere between its classes."""
    scores: dict[str, float] = {}

    def classify(texts: list[str], lang: str) -> list[dict]:
        label = max(scores, key=lambda k: scores[k])
        return [{"label": label, "score": scores[label], "scores": dict(scores)}]

    desk.svc.classify = classify
    svc = desk.with_policy(ALWAYS_ANSWER)
    assert (svc.policy.negative, svc.policy.negative_two_class) == (0.5, 0.9)
    sorry = "非常抱歉给您带来不便。"
    replies = {}
    for name, s in {
        "three classes, 0.7": {"neg": 0.7, "neu": 0.2, "pos": 0.1},
        "three classes, 0.45": {"neg": 0.45, "neu": 0.5, "pos": 0.05},
        "two classes, 0.7": {"neg": 0.7, "pos": 0.3},
        "two classes, 0.92": {"neg": 0.92, "pos": 0.08},
    }.items():
        scores.clear()
        scores.update(s)
        r = svc.message(desk.shop, "环境", kb="shop/faq")
        assert r.action == "answer" and r.sentiment["negative"] == s["neg"], name
        replies[name] = r.reply.startswith(sorry)
    assert replies == {
        "three classes, 0.7": True,
        "three classes, 0.45": False,
        "two classes, 0.7": False,
        "two classes, 0.92": True,
    }
