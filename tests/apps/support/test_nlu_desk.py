"""The desk with an NLU model (a real tiny multitask checkpoint trained here) and a domain
file: forms that ask for a missing slot and carry slots over turns, defaults from the profile
and facts learned into it only with consent, hand-off intents, a few-shot intent the model
never saw, and one encoder pass per message when the NLU model is also the knowledge base's
encoder."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from llmos.apps.support.dialogue import PolicyConfig
from llmos.apps.support.domain import parse_domain
from llmos.apps.support.fewshot import FewShotConfig
from llmos.apps.support.local import PipelineEmbedder, PipelineNlu
from llmos.apps.support.service import CONSENT, SupportService
from llmos.checkpoint.io import read_checkpoint
from llmos.store.db import Store
from llmos.store.kb import FaqPair

DOMAIN = """
intents:
  参观:
    action: form
    slots:
      what:
        ask: {zh: 参观哪里？, en: "Visit what?"}
        profile: place
        remember: true
      who:
    reply: {zh: "好的，{who}参观{what}。", en: "OK, {who} visits {what}."}
  研究:
    action: handoff
  保护:
    action: answer
    examples:
      zh: [今天农民保护城市。, 昨天记者保护经济。, 现在老师保护农村。, 今天老师保护经济。]
"""


class Counting(PipelineEmbedder):
    """The knowledge base's embedder, counting the message embeddings it is asked for."""

    def __init__(self, checkpoint: Path) -> None:
        super().__init__(checkpoint)
        self.queries = 0

    def __call__(self, texts: list[str], kind: str) -> np.ndarray:
        self.queries += kind == "query" and len(texts) == 1
        return super().__call__(texts, kind)


class Desk:
    def __init__(self, root: Path, nlu: Path, encoder: Path) -> None:
        self.nlu = nlu
        self.store = Store(f"sqlite:///{root / 'llmos.db'}")
        self.shop = self.store.create_user("shop")[0].id
        self.customer = self.store.create_user("customer")[0].id
        self.embed = Counting(encoder)
        self.svc = SupportService(
            self.store,
            self.embed,
            root / "indexes",
            # Never sure of the knowledge base (so forms start), but its one entry is the
            # answer when a message goes to it.
            policy=PolicyConfig(answer_similarity=2.0, clarify_similarity=-1.0),
            nlu=PipelineNlu({"zh": nlu}),
            domain=parse_domain(DOMAIN, "test-domain.yaml"),
            # no out-of-domain gate: its thresholds are multilingual-e5's cosines
            fewshot=FewShotConfig(
                similarity=0.9, head_confidence=1.0, sure_similarity=0.99, in_domain={}
            ),
        )
        self.svc.create_kb(self.shop, "faq")
        self.svc.add(self.shop, "faq", [FaqPair("农民保护环境", "环境保护是大事。")])
        self.svc.share(self.shop, "faq", public=True)
        self.embed.queries = 0  # the entries' embeddings are not messages

    def say(self, text: str, conversation: int | None = None):
        kb = None if conversation else "shop/faq"
        return self.svc.message(self.customer, text, kb=kb, conversation=conversation)


@pytest.fixture()
def desk(tmp_path: Path, nlu_model: Path) -> Iterator[Desk]:
    d = Desk(tmp_path, nlu_model, nlu_model)
    yield d
    d.store.close()


def test_a_form_asks_for_the_missing_slot_and_carries_the_others(desk: Desk) -> None:
    r = desk.say("今天记者参观。")
    assert r.intent is not None and r.intent["label"] == "参观" and r.intent["source"] == "head"
    assert [(s["name"], s["value"]) for s in r.slots] == [("who", "记者")]
    assert (r.action, r.reply) == ("ask", "参观哪里？")
    assert r.form == {"intent": "参观", "slots": {"who": "记者"}} and r.sources == []
    # The bare answer fills the slot asked for; the subject comes from the first turn.
    done = desk.say("城市", r.conversation_id)
    assert (done.action, done.reply) == ("answer", "好的，记者参观城市。")
    assert done.form == {"intent": "参观", "slots": {"who": "记者", "what": "城市"}}
    _, turns = desk.svc.transcript(desk.customer, r.conversation_id)
    assert [t.action for t in turns] == [None, "ask", None, "answer"]
    trace = desk.svc.desk.turns(r.conversation_id)[1].trace
    assert trace["intent"]["label"] == "参观" and trace["form"]["intent"] == "参观"
    # A complete request answers at once.
    assert desk.say("现在老师参观农村。").reply == "好的，老师参观农村。"


def test_profile_defaults_and_facts_learned_only_with_consent(desk: Desk) -> None:
    r = desk.say("今天记者参观。")
    desk.say("城市", r.conversation_id)
    assert desk.store.profile(desk.customer) == {}  # no consent: nothing remembered
    desk.store.update_profile(desk.customer, {CONSENT: True})
    r = desk.say("今天记者参观。")
    desk.say("农村", r.conversation_id)
    assert desk.store.profile(desk.customer) == {CONSENT: True, "place": "农村"}
    # Next time the profile's place fills the slot: no question asked.
    r = desk.say("现在农民参观。")
    assert (r.action, r.reply) == ("answer", "好的，农民参观农村。")


def test_a_handoff_intent_goes_to_the_human_queue(desk: Desk) -> None:
    r = desk.say("昨天老师研究经济。")
    assert r.action == "escalate" and r.ticket_id is not None
    assert r.reason == "intent 研究 goes to a person"
    assert [t.id for t in desk.svc.tickets(desk.shop)] == [r.ticket_id]


def test_a_few_shot_intent_the_model_never_saw(desk: Desk) -> None:
    r = desk.say("现在农民保护城市。")
    assert r.intent is not None and r.intent["label"] == "保护", r.intent
    assert r.intent["source"] == "examples"
    assert r.action == "answer" and r.form is None  # 保护 answers from the knowledge base
    assert r.reply == "环境保护是大事。"
    # The head's own intents, from the eight training utterances its task.json keeps, stake
    # out their regions: a message nearest one of them is the head's, however low the bar.
    few = desk.svc._few_shot("zh")
    assert few.reference == {"参观", "研究"} and set(few.labels) == {"保护", "参观", "研究"}
    kept = read_checkpoint(desk.nlu).task.heads["intent"].extra["examples"]
    assert sorted(kept) == ["参观", "研究"] and all(len(v) == 8 for v in kept.values())
    assert few.best(few.centroids[few.labels.index("研究")]) is None


def test_one_encoder_pass_when_the_nlu_model_is_the_encoder(
    desk: Desk, tmp_path: Path, nlu_model: Path, tiny_encoder: Path
) -> None:
    desk.say("今天记者参观城市。")
    desk.say("今天农民保护环境。")
    assert desk.embed.queries == 0  # the NLU pass gave the query vector
    other = Desk(tmp_path / "other", nlu_model, tiny_encoder)
    try:
        other.say("今天记者参观城市。")
        assert other.embed.queries == 1  # another encoder: a second pass for retrieval
        # ...whose vector also places the message among the few-shot centroids, which come
        # from the same encoder (FewShotConfig.vectors "encoder")
        few = other.svc._few_shot("zh")
        shots = other.svc.domain.few_shot_examples("zh")["保护"]
        mean = other.embed(shots, "query").mean(axis=0)
        np.testing.assert_allclose(
            few.centroids[few.labels.index("保护")], mean / np.linalg.norm(mean), atol=1e-5
        )
    finally:
        other.store.close()


def test_a_question_the_knowledge_base_answers_surely_starts_no_form(desk: Desk) -> None:
    """The intent head has no "none of these": when the knowledge base is sure, its answer
    wins over a new form (a form in progress goes on)."""
    desk.svc.policy = PolicyConfig(answer_similarity=-1.0, answer_margin=-1.0)  # always sure
    r = desk.say("今天记者参观。")
    assert r.intent is not None and r.intent["label"] == "参观"
    assert (r.action, r.form, r.reply) == ("answer", None, "环境保护是大事。")
    desk.svc.policy = PolicyConfig(answer_similarity=2.0, clarify_similarity=-1.0)
    asked = desk.say("今天记者参观。")
    assert asked.action == "ask"
    desk.svc.policy = PolicyConfig(answer_similarity=-1.0, answer_margin=-1.0)
    done = desk.say("城市", asked.conversation_id)  # the form in progress goes on
    assert (done.action, done.reply) == ("answer", "好的，记者参观城市。")


def test_a_message_far_from_every_intent_has_none_and_starts_no_form(desk: Desk) -> None:
    text = "今天记者参观。"
    assert desk.say(text).action == "ask"  # no gate: the head's 参观 starts its form
    (_,), vectors = desk.svc.nlu([text], "zh")
    few = desk.svc._few_shot("zh")
    near = few.nearest(vectors[0])
    want = float((few.scores(vectors[:1])).max())  # the nearest of all centroids
    assert near == pytest.approx(want) and near > 0.5
    base = desk.svc.fewshot
    desk.svc.fewshot = replace(base, in_domain={"zh": near + 1e-3})  # just out of the domain
    out = desk.say(text)
    assert out.intent is None and out.form is None and out.action != "ask"
    assert out.slots  # the slots are still read
    desk.svc.fewshot = replace(base, in_domain={"zh": near - 1e-3})  # just inside
    assert desk.say(text).action == "ask"
    for other in ({"en": 1.0}, {}):  # no gate for the message's language
        desk.svc.fewshot = replace(base, in_domain=other)
        assert desk.say(text).action == "ask"
    # the gate is in the encoder's cosines: with the NLU model's own vectors there is none
    desk.svc.fewshot = replace(base, in_domain={"zh": 1.0}, vectors="nlu")
    assert desk.say(text).action == "ask"
    # a few-shot intent passed its own threshold: the gate is for the head's
    desk.svc.fewshot = replace(base, in_domain={"zh": 1.0})
    few_shot = desk.say("现在农民保护城市。")
    assert few_shot.intent is not None and few_shot.intent["source"] == "examples"


def test_the_nlu_model_must_be_a_multitask_checkpoint(tiny_encoder: Path) -> None:
    from llmos.errors import LlmosError

    with pytest.raises(LlmosError, match="the NLU model must be a multitask checkpoint"):
        PipelineNlu({"zh": tiny_encoder})
