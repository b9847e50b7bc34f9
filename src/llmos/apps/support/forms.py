"""Filling a form across turns (Rasa's forms, short): the support desk asks for the slots an
intent needs until it has them, then confirms when the domain says so, and replies.

    start      an intent whose action is ``form``: the message's tagged slots, then the
               profile's values for the missing ones (``profile: KEY``)
    ask        the first required slot still missing, with its ``ask`` text; the next
               message's tags fill slots (new values override), and when it tags none of the
               form's slots it is itself the value of the slot asked for (Rasa's
               ``from_text``): "北京" answers "您想查哪个城市的天气？"
    confirm    all required slots filled and the intent has ``confirm``: a yes/no question;
               yes -> done, no -> cancelled, anything else -> asked once more, then cancelled
    done       the intent's ``reply`` with the slots filled in
    cancelled  the whole message is 算了/取消/cancel/never mind... (or a bare no while a slot
               is asked for), or the NLU said HassNevermind

A message whose intent is another form's drops the active form and starts that one, unless
the form has just asked for a slot and the message is only tagged values (fillers aside): then
it answers the question ("bedside lamp" after "Which device?" reads as a turn-on request on its
own; Rasa's forms, too, fill the requested slot before they look at the intent).

:func:`step_form` is pure, like :func:`llmos.apps.support.dialogue.decide`: what the form has
gathered travels to the next turn in the returned ``state`` (JSON-serialisable), and facts to
learn come back in ``learned`` for the caller to save when the customer consented. The caller
handles requests for a person before the form: a form would take "转人工" as a slot's value.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from llmos.apps.support.domain import LANGUAGES, Domain, IntentSpec, render

ACTIONS = ("ask", "confirm", "done", "cancelled")
NEVERMIND = "HassNevermind"  # the Home Assistant intent for "never mind"
# Whole messages only (after trimming punctuation and case): "取消定时器" and "stop the
# vacuum" are commands of their own, not a cancel.
CANCEL = re.compile(
    r"(算了|取消|不用了|不要了|不用|不要|不想要了|不查了|退出)(吧|啦|了|吧谢谢)?"
    r"|(cancel|never ?mind|stop|forget (about )?it|quit)( it| that| please| thanks| thank you)?"
)
YES = re.compile(
    r"(是|是的|好|好的|对|对的|确认|确定|可以|行|嗯|没问题)(的|啊|吧|呀)?"
    r"|(yes|yeah|yep|yup|ok|okay|sure|confirm|correct|right|y)( please| thanks)?"
)
# What may surround a bare answer to a question ("it's the bedside lamp", "就是床头灯吧").
FILLER = re.compile(
    r"\b(it's|its|it|is|the|an|a|my|our|your|that|this|one|please|just|oh|um|uh|okay|ok|"
    r"thank you|thanks)\b|就是|那个|这个|谢谢|[的吧呢啊呀嗯哦是请]"
)
NO = re.compile(r"(不|不是|不对|否|别|不行)(的|啊|吧|呀)?|(no|nope|nah|n|not really)( thanks)?")
REPLIES = {
    "zh": {"cancelled": "好的，已取消。", "yes_or_no": "请回复“是”或“否”。"},
    "en": {"cancelled": "OK, cancelled.", "yes_or_no": "Please answer yes or no."},
}


@dataclass(frozen=True)
class FormStep:
    """What a form does with one message.

    Attributes:
        action: ``ask``, ``confirm``, ``done`` or ``cancelled``.
        reply: the text to send, in the message's language.
        intent: the form's intent (the message's own may be None in the middle of a form).
        slots: the form's slots filled so far, by name.
        state: the form's state for the next turn; empty when the form is done or cancelled.
        learned: profile key -> value for ``remember`` slots the customer gave, when the
            form is done; the caller saves them only if the customer consented.
        reason: why, in words (for the trace).
    """

    action: str
    reply: str
    intent: str
    slots: dict[str, str] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    learned: dict[str, str] = field(default_factory=dict)
    reason: str = ""


def _bare(text: str) -> str:
    """The text without surrounding whitespace and punctuation."""
    start, end = 0, len(text)
    while start < end and _trimmed(text[start]):
        start += 1
    while end > start and _trimmed(text[end - 1]):
        end -= 1
    return text[start:end]


def _only_values(text: str, slots: Sequence[Mapping[str, Any]]) -> bool:
    """Whether the message is tagged values and nothing else: with every tagged value taken
    out, only punctuation and filler words (:data:`FILLER`) are left. "the bedside lamp"
    is; "turn on the bedside lamp" and "打开床头灯" are not (a verb is left)."""
    values = sorted((str(x.get("value") or "") for x in slots), key=len, reverse=True)
    rest = text
    for value in values:
        if value:
            rest = rest.replace(value, " ", 1)
    if rest == text:
        return False  # no tagged value in it
    return not re.search(r"\w", FILLER.sub(" ", rest.lower()))


def _trimmed(c: str) -> bool:
    return c.isspace() or unicodedata.category(c).startswith("P")


def _says(pattern: re.Pattern[str], text: str) -> bool:
    return bool(pattern.fullmatch(re.sub(r"\s+", " ", _bare(text)).lower()))


def _answer(text: str) -> str | None:
    """``yes``, ``no`` or None (unclear) for a reply to a yes/no question. A question back
    ("嗯？", "ok?") is no answer."""
    if text.strip().endswith(("?", "？")):
        return None
    return "yes" if _says(YES, text) else "no" if _says(NO, text) else None


def _missing(spec: IntentSpec, slots: Mapping[str, str]) -> str | None:
    """The first required slot that neither it nor one of its alternatives fills."""
    for s in spec.slots:
        if s.required and not any(slots.get(n) for n in (s.name, *s.alternatives)):
            return s.name
    return None


@dataclass
class _Form:
    """The form in progress: the JSON state, as an object while one step works on it."""

    spec: IntentSpec
    slots: dict[str, str] = field(default_factory=dict)
    from_profile: set[str] = field(default_factory=set)
    requested: str | None = None
    confirmations: int = 0  # how many times the confirmation was asked
    reasons: list[str] = field(default_factory=list)
    profile: Mapping[str, Any] = field(default_factory=dict)  # this turn's, not kept

    @classmethod
    def resume(
        cls, domain: Domain, state: Mapping[str, Any], profile: Mapping[str, Any]
    ) -> _Form | None:
        """The form of the last turn's state; None when there is none, or when the domain
        no longer has it as a form (it was edited between the turns)."""
        spec = domain.form(state.get("form"))
        if spec is None:
            return None
        names = {s.name for s in spec.slots}
        slots = {k: v for k, v in dict(state.get("slots") or {}).items() if k in names}
        return cls(
            spec,
            slots,
            {n for n in state.get("from_profile") or () if n in slots},
            state.get("requested") if state.get("requested") in names else None,
            int(state.get("confirmations") or 0),
            profile=profile,
        )

    def state(self) -> dict[str, Any]:
        return {
            "form": self.spec.name,
            "slots": dict(self.slots),
            "from_profile": sorted(self.from_profile),
            "requested": self.requested,
            "confirmations": self.confirmations,
        }

    def take(self, tagged: Sequence[Mapping[str, Any]]) -> bool:
        """Merge the message's tagged slots (the first value of each name wins within a
        message; new values override old ones); whether any was the form's."""
        seen: dict[str, str] = {}
        for slot in tagged:
            name, value = slot.get("name"), str(slot.get("value") or "").strip()
            if value and name not in seen:
                seen[name] = value
        taken = [n for n in seen if self.spec.slot(n) is not None]
        ignored = [n for n in seen if n not in taken]
        for name in taken:
            self.slots[name] = seen[name]
            self.from_profile.discard(name)
        if taken:
            self.reasons.append(f"tagged {', '.join(taken)}")
        if ignored:
            self.reasons.append(f"ignored {', '.join(ignored)} (not slots of {self.spec.name})")
        return bool(taken)

    def known(self, key: str | None) -> str:
        """The profile's value for ``key`` as text; empty when it has none."""
        value = self.profile.get(key) if key else None
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            return ""
        return str(value).strip()

    def defaults(self) -> None:
        """Fill missing slots that have a profile key from the profile."""
        for s in self.spec.slots:
            if not self.slots.get(s.name) and self.known(s.profile):
                self.slots[s.name] = self.known(s.profile)
                self.from_profile.add(s.name)
                self.reasons.append(f"{s.name} from the profile")

    def step(self, action: str, reply: str, keep: bool) -> FormStep:
        learned = {}
        if action == "done":
            for s in self.spec.slots:
                given = self.slots.get(s.name)
                new = given and s.name not in self.from_profile and given != self.known(s.profile)
                if s.remember and s.profile and new:
                    learned[s.profile] = given
        return FormStep(
            action,
            reply,
            self.spec.name,
            dict(self.slots),
            self.state() if keep else {},
            learned,
            "; ".join(self.reasons),
        )

    def next(self, lang: str) -> FormStep:
        """Ask for the first missing slot, or confirm, or finish."""
        missing = _missing(self.spec, self.slots)
        if missing is not None:
            self.requested, self.confirmations = missing, 0
            self.reasons.append(f"slot {missing} missing: asked")
            spec = self.spec.slot(missing)
            assert spec is not None and spec.ask is not None  # a required slot has its ask
            return self.step("ask", render(spec.ask.get(lang), self.slots), keep=True)
        self.requested = None
        if self.spec.confirm is not None:
            self.confirmations += 1
            self.reasons.append("all required slots filled: confirm")
            return self.step("confirm", render(self.spec.confirm.get(lang), self.slots), True)
        return self.done(lang, "all required slots filled: done")

    def done(self, lang: str, why: str) -> FormStep:
        self.reasons.append(why)
        assert self.spec.reply is not None  # a form has one (checked by the parser)
        return self.step("done", render(self.spec.reply.get(lang), self.slots), keep=False)

    def cancel(self, lang: str, why: str) -> FormStep:
        self.reasons.append(why)
        return self.step("cancelled", REPLIES[lang]["cancelled"], keep=False)


def step_form(
    domain: Domain,
    lang: str,
    text: str,
    intent: str | None,
    slots: Sequence[Mapping[str, Any]],
    state: Mapping[str, Any],
    profile: Mapping[str, Any],
) -> FormStep | None:
    """One turn of a form (see the module docstring).

    Args:
        domain: the intents' specs.
        lang: ``zh`` or ``en``, the language of the reply.
        text: the customer's message.
        intent: the NLU's intent label for the message, or None when it is unsure (an unsure
            label that happens to be another form's would drop the form in progress).
        slots: the message's tagged slots, ``{"name", "value", ...}`` in text order.
        state: the form's state from the last turn (``FormStep.state``), possibly empty.
        profile: the customer's profile (``city``, ``area``, ...), for slots' defaults.

    Returns:
        The form's step, or None when no form is active and ``intent`` is not a form's.
    """
    if lang not in LANGUAGES:
        raise ValueError(f"the language must be one of {', '.join(LANGUAGES)}; got {lang!r}")
    form = _Form.resume(domain, state, profile) if state else None
    started = domain.form(intent)
    if form is None and started is None:
        return None
    if form is not None and (intent == NEVERMIND or _says(CANCEL, text)):
        return form.cancel(lang, "cancelled by the customer")
    if form is not None and not form.confirmations and _answer(text) == "no":
        return form.cancel(lang, "the customer said no to the question: cancelled")
    if form is not None and form.confirmations:
        if _answer(text) == "yes":
            return form.done(lang, "confirmed")
        if _answer(text) == "no":
            return form.cancel(lang, "not confirmed: cancelled")
    if (
        started is not None
        and form is not None
        and started.name != form.spec.name
        and form.requested
        and _only_values(text, slots)
    ):
        # "bedside lamp" after "Which device?" reads as a turn-on request of its own; it is
        # the answer to the question asked (below), not a new request
        form.reasons.append(
            f"kept {form.spec.name}: the message is only a value, the answer to "
            f"{form.requested} (its intent alone read {started.name})"
        )
        started = None
    if started is not None and (form is None or started.name != form.spec.name):
        switched = f"dropped {form.spec.name} for {started.name}" if form is not None else None
        why = switched or f"form {started.name} started"
        form = _Form(started, reasons=[why], profile=profile)
        form.take(slots)
        form.defaults()
        return form.next(lang)
    assert form is not None
    if form.confirmations:
        # a correction ("不，改成25度") changes the slots and is confirmed afresh; anything
        # else is asked once more, then taken as a no
        if form.take(slots):
            form.confirmations = 0
            return form.next(lang)
        if form.confirmations >= 2:
            return form.cancel(lang, "no clear answer to the confirmation twice: cancelled")
        form.reasons.append("no clear answer to the confirmation: asked again")
        form.confirmations += 1
        assert form.spec.confirm is not None  # it was asked
        question = render(form.spec.confirm.get(lang), form.slots)
        gap = "" if lang == "zh" else " "
        return form.step("confirm", f"{REPLIES[lang]['yes_or_no']}{gap}{question}", True)
    if not form.take(slots) and form.requested and not form.slots.get(form.requested):
        value = _bare(text)
        if value:
            form.slots[form.requested] = value
            form.from_profile.discard(form.requested)
            form.reasons.append(f"{form.requested} from the message's text")
    form.defaults()
    return form.next(lang)
