"""The support desk's dialogue policy: from a customer's message, its language, its sentiment,
its intent and slots, and the knowledge base's hits, decide what to do and say.

    ask        the message's intent (or the form in progress) is a form of the domain file
               (:mod:`llmos.apps.support.domain`): the policy asks for a missing slot, or
               asks to confirm (:mod:`llmos.apps.support.forms`); when the form is complete
               the reply is its template, with action ``answer``
    answer     the best entry is close enough to the message, and clearly ahead of the next
               (negative messages get an apology before the answer)
    clarify    a few entries are plausible but none is sure: the reply offers them by number;
               the customer's next message may be that number (or the question's text)
    fallback   nothing in the knowledge base is near: say so, offer a person
    escalate   the customer asks for a person, or is strongly negative, or the bot failed
               (fell back) ``failed_turns`` times in a row, or the intent's action is
               ``handoff``: a ticket goes to the human queue, and the bot stays out of the
               conversation until an agent closes the ticket

Requests for a person and strong negativity come first (a form would take "转人工" as a
slot's value), then a pick from a clarification, then forms and hand-offs (only for an intent
the NLU is sure of: ``intent_confidence``, and not for a message the knowledge base answers
surely, since the intent head has no class for "none of these"), then the knowledge base.

:func:`decide` is pure (no store, no model): what it needs comes in as arguments, and what it
must remember for the next turn comes back as the conversation's new ``state``. The
thresholds are cosine similarities of the encoder (multilingual-e5 puts most pairs of short
texts above 0.8, so they are high). The defaults were chosen with ``bench/support_eval.py
--calibrate`` on scripted dialogues over the intents' validation utterances and off-topic
messages (docs/BENCHMARKS.md, "Scripted dialogues"): the best task success among the
thresholds that ask back on at most 45 % of the answerable questions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

from llmos.apps.support.domain import Domain
from llmos.apps.support.forms import step_form
from llmos.apps.support.index import Hit
from llmos.text.cjk import is_cjk


@dataclass(frozen=True)
class PolicyConfig:
    """The policy's thresholds.

    Attributes:
        answer_similarity: answer with the best entry when its cosine similarity to the
            message is at least this...
        answer_margin: ...and it is ahead of the second entry by at least this much.
        clarify_similarity: below an answer, offer the plausible entries (those within
            ``answer_margin`` of the best, at most ``candidates``) when the best reaches this.
        negative: a message this likely negative (the sentiment model's probability) gets an
            apology before the answer. 0.5: the make-run desks' sentiment heads have a neutral
            class (``tasks/desk-sentiment-*``), and at 0.5 they apologise to 0.6 % (zh) and
            0.1 % (en) of neutral test messages and to 85.7 % / 82.4 % of negative reviews
            (``bench/support_eval.py --apology``: the smallest threshold that keeps neutral
            messages under 5 % on valid, averaged over zh and en).
        negative_two_class: the same for a sentiment model with no neutral class (trained
            on reviews alone: ``sentiment-zh``, the server's fallback without an NLU model).
            Such a model puts neutral messages anywhere between its two classes: at 0.5 the
            review-only desks apologised to two thirds of neutral messages, at 0.9 to 1.3 %
            (zh) and 5.4 % (en) of them, and to 30.7 % / 47.9 % of negative reviews.
        strongly_negative: this likely negative escalates to a person at once.
        negative_unanswered: a message that gets the apology (``negative``) but no sure
            answer, no form and no hand-off goes to a person instead of a clarification or a
            fallback (sentiment-based routing): without it, the demo desk offered "你生气了" /
            "你是一个坏父母" from its small talk to "你们这破东西用了两天就坏了". Measured by
            ``bench/support_complaints.py`` (docs/BENCHMARKS.md, "Unanswered complaints go
            to a person").
        failed_turns: fallbacks in a row that escalate.
        candidates: the most entries a clarification offers.
        intent_confidence: an intent this likely (the NLU head's probability, or the
            few-shot cosine) may start or switch a form, or hand off; a less sure one leaves
            the message to the form in progress and the knowledge base. 0.4 was the best of
            0.1-0.8 on the scripted form dialogues of the intents' validation split
            (``bench/support_nlu.py``). A head trained briefly is timid (its top intent
            under 0.4 even when right): ``llmos calibrate`` fits its temperature so that the
            threshold means the same for it (the quick ``make run`` support-zh does this).
    """

    answer_similarity: float = 0.92
    answer_margin: float = 0.01
    clarify_similarity: float = 0.88
    negative: float = 0.5
    negative_two_class: float = 0.9
    strongly_negative: float = 0.95
    negative_unanswered: bool = True
    failed_turns: int = 2
    candidates: int = 3
    intent_confidence: float = 0.4


@dataclass(frozen=True)
class Decision:
    action: str  # answer | ask | clarify | fallback | escalate
    reply: str
    entry: Hit | None = None  # the entry answered with
    candidates: tuple[Hit, ...] = ()  # the entries a clarification offers
    reason: str = ""  # why, in words (for the trace, and a ticket's reason)
    state: dict[str, Any] = field(default_factory=dict)
    form: str | None = None  # the form's intent, when a form answered
    slots: dict[str, str] = field(default_factory=dict)  # the form's slots so far
    learned: dict[str, str] = field(default_factory=dict)  # profile facts the form learned


# An explicit request for a person. Chinese: 转人工, 人工客服/服务, 找/要人工, a bare 人工, 真人,
# 客服人员, 找/叫 (你们的) 经理/负责人; 人工 alone is no request (人工智能, 人工费).
HUMAN_ZH = re.compile(
    r"转人工|人工(客服|服务|坐席|座席)|(找|要|叫|接)人工|^\W*人工\W*$|真人|活人|客服人员"
    r"|(找|叫|要)(你们)?(的)?(经理|负责人|主管)"
)
HUMAN_EN = re.compile(
    r"\b(human|real person|live agent|an agent|representative|operator|"
    r"(talk|speak) to (a |an |some)?(one|body|person|manager|agent)|manager)\b",
    re.IGNORECASE,
)

LATIN_WORD = re.compile(r"[A-Za-z]+")
REPLIES = {
    "zh": {
        "sorry": "非常抱歉给您带来不便。",
        "clarify": "您是想问以下哪个问题？请回复序号：",
        "fallback": "抱歉，我没有找到相关的答案。您可以换个说法，或者回复“人工”转人工客服。",
        "escalate": "已为您转接人工客服（工单 #{ticket}），客服人员会在这里回复您，请稍候。",
        "waiting": "您的问题已在人工客服队列中（工单 #{ticket}），请稍候。",
    },
    "en": {
        "sorry": "I'm sorry about the trouble.",
        "clarify": "Which of these do you mean? Reply with its number:",
        "fallback": (
            "Sorry, I couldn't find an answer to that. Try asking another way, or say "
            '"human" to talk to a person.'
        ),
        "escalate": (
            "I've passed your conversation to a person (ticket #{ticket}); they will reply here."
        ),
        "waiting": "A person will reply here soon (ticket #{ticket}).",
    },
}


def detect_language(text: str) -> str:
    """``zh`` when the message has at least as many CJK characters as Latin words (a
    Chinese character is about a word's worth of text), else ``en``."""
    cjk = sum(is_cjk(c) and c.isalpha() for c in text)
    return "zh" if cjk and cjk >= len(LATIN_WORD.findall(text)) else "en"


def wants_human(text: str, lang: str) -> bool:
    """Whether the message asks for a person."""
    return bool((HUMAN_ZH if lang == "zh" else HUMAN_EN).search(text)) or bool(
        HUMAN_ZH.search(text)
    )


def chosen_entry(text: str, state: dict[str, Any]) -> int | None:
    """The entry a reply to a clarification picks: its number, or its question's text."""
    pending = state.get("candidates") or []
    t = text.strip().rstrip("。.!！ ").strip()
    m = re.fullmatch(r"(?:第)?\s*(\d+)\s*(?:个|号)?", t)
    if m and 1 <= int(m.group(1)) <= len(pending):
        return pending[int(m.group(1)) - 1]["entry"]
    for c in pending:
        if t and t == c["question"]:
            return c["entry"]
    return None


def decide(
    text: str,
    lang: str,
    negative: float | None,
    hits: list[Hit],
    state: dict[str, Any],
    config: PolicyConfig = PolicyConfig(),
    chosen: Hit | None = None,
    *,
    intent: dict[str, Any] | None = None,
    slots: list[dict[str, Any]] | None = None,
    domain: Domain | None = None,
    profile: dict[str, Any] | None = None,
) -> Decision:
    """What to do with one message (see the module docstring).

    Args:
        text: the customer's message.
        lang: ``zh`` or ``en`` (:func:`detect_language`).
        negative: the probability that the message is negative, or None without a
            sentiment model for ``lang``.
        hits: the knowledge base's best entries for the message, best first.
        state: the conversation's state after the last turn.
        config: the thresholds.
        chosen: the entry the customer picked from a clarification (:func:`chosen_entry`).
        intent: the message's intent, ``{"label", "score"}``, or None without an NLU model.
        slots: the message's tagged slots, ``{"name", "value"}`` in text order.
        domain: what each intent does (forms, hand-offs); None: the knowledge base only.
        profile: the customer's profile, for the forms' defaults.

    Returns:
        The decision, with the conversation's new state.
    """
    words = REPLIES[lang]
    failed = int(state.get("failed", 0))
    sorry = words["sorry"] if negative is not None and negative >= config.negative else ""
    if wants_human(text, lang):
        return Decision("escalate", words["escalate"], reason="the customer asked for a person")
    if negative is not None and negative >= config.strongly_negative:
        return Decision("escalate", words["escalate"], reason=f"strongly negative ({negative:.2f})")
    if chosen is not None:
        return Decision(
            "answer", sorry + chosen.answer, entry=chosen, reason="picked from the clarification"
        )
    sure = intent["label"] if intent and intent["score"] >= config.intent_confidence else None
    best = hits[0] if hits else None
    second = hits[1].similarity if len(hits) > 1 else -1.0
    lead = best.similarity - second if best is not None else 0.0
    kb_sure = (
        best is not None
        and best.similarity >= config.answer_similarity
        and lead >= config.answer_margin
    )
    # The intent head has no "none of these": a question the knowledge base answers surely
    # is not taken for the start of a form or a hand-off (a form in progress goes on).
    if domain is not None and (state.get("form") or not kb_sure):
        step = step_form(
            domain, lang, text, sure, slots or [], state.get("form") or {}, profile or {}
        )
        if step is not None:
            return Decision(
                "ask" if step.action in ("ask", "confirm") else "answer",
                sorry + step.reply,
                reason=f"form {step.intent}: {step.reason}",
                state={"form": step.state} if step.state else {},
                form=step.intent,
                slots=step.slots,
                learned=step.learned,
            )
        if sure is not None and domain.action(sure) == "handoff":
            return Decision("escalate", words["escalate"], reason=f"intent {sure} goes to a person")
    if kb_sure:
        assert best is not None
        why = f"cosine {best.similarity:.3f}, " + (
            f"ahead of the next by {lead:.3f}" if len(hits) > 1 else "the only entry"
        )
        return Decision("answer", sorry + best.answer, entry=best, reason=why)
    if sorry and config.negative_unanswered:
        assert negative is not None
        return Decision(
            "escalate", words["escalate"], reason=f"negative ({negative:.2f}), no sure answer"
        )
    if best is not None and best.similarity >= config.clarify_similarity:
        near = [h for h in hits if best.similarity - h.similarity < config.answer_margin]
        near = (near if len(near) > 1 else hits[:2])[: config.candidates]
        if len(near) > 1:
            options = "\n".join(f"{i}. {h.question}" for i, h in enumerate(near, 1))
            pending = [{"entry": h.entry, "question": h.question} for h in near]
            return Decision(
                "clarify",
                f"{sorry}{words['clarify']}\n{options}",
                candidates=tuple(near),
                reason=f"best cosine {best.similarity:.3f}, the next within "
                f"{best.similarity - near[-1].similarity:.3f}",
                state={"candidates": pending},
            )
        return Decision(
            "answer", sorry + best.answer, entry=best, reason="the only plausible entry"
        )
    failed += 1
    if failed >= config.failed_turns:
        return Decision("escalate", words["escalate"], reason=f"{failed} failed turns in a row")
    top = (
        f"best cosine {best.similarity:.3f}" if best is not None else "the knowledge base is empty"
    )
    return Decision("fallback", sorry + words["fallback"], reason=top, state={"failed": failed})


def with_ticket(decision: Decision, ticket: int, lang: str) -> Decision:
    """The escalation's reply with its ticket number filled in."""
    return replace(decision, reply=REPLIES[lang]["escalate"].format(ticket=ticket))
