"""The customer-service app's logic, without HTTP: knowledge bases of FAQ pairs, kept in the
store, searched through a hybrid index that follows every change.

:class:`SupportService` is built from the store, an :class:`~llmos.apps.support.index.Embedder`
(in the server the encoder model's batcher, so messages of many users share forward passes;
on the command line a loaded pipeline: :mod:`llmos.apps.support.local`) and a directory for
the indexes. Every method takes the caller's user id: a knowledge base is only ever read or
changed by its owner, a conversation is its customer's, and a ticket is seen by the knowledge
base's owner and agents (:mod:`llmos.store.desk`).

The indexes, each built with its knowledge base's own encoder or the default ``embed`` and
kept in step with the store, are :mod:`llmos.apps.support.indexes`'.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from llmos.apps.support.dialogue import (
    REPLIES,
    PolicyConfig,
    chosen_entry,
    decide,
    detect_language,
    with_ticket,
)
from llmos.apps.support.domain import Domain
from llmos.apps.support.faq import read_faq
from llmos.apps.support.fewshot import FewShotConfig, FewShotIntents, combine
from llmos.apps.support.index import Embedder, Hit
from llmos.apps.support.indexes import Encoders, KbIndexes
from llmos.errors import LlmosError
from llmos.store.db import Store
from llmos.store.desk import DeskKb, SupportDesk
from llmos.store.kb import FaqPair, KbEntry, KbInfo, KnowledgeBases
from llmos.store.models import Conversation, Ticket, Turn

log = logging.getLogger("llmos.apps.support")
MAX_K = 50
NEGATIVE_LABELS = ("neg", "negative")
NEUTRAL_LABELS = ("neu", "neutral")
# (texts, language) -> one {"label", "score", "scores"} per text, or None when no sentiment
# model reads that language.
Classifier = Callable[[list[str], str], list[dict[str, Any]] | None]
# A profile key: True when the customer lets the desk remember facts from their messages
# (the city a weather form asked for...) in their profile.
CONSENT = "remember_facts"


class Nlu(Protocol):
    """A multitask model per language (intent, slots, sentiment heads and the sentence
    vector, from one encoder pass): :class:`PipelineNlu` here, the served model's batcher in
    the server (:class:`llmos.serve.embedder.BatcherNlu`)."""

    def __call__(
        self, texts: list[str], lang: str
    ) -> tuple[list[dict[str, Any]], np.ndarray] | None:
        """Per text ``{head: result}`` and the (N, C) vectors; None when no model reads
        ``lang``."""

    def encoder(self, lang: str) -> str | None:
        """The weights digest of the model reading ``lang`` (None: none): when it is the
        knowledge base's encoder, the message's vector from the same pass is its query."""

    def intent_examples(self, lang: str) -> dict[str, list[str]]:
        """A few training utterances per intent of the model reading ``lang`` (its intent
        head's ``examples`` in task.json; empty when it has none)."""


@dataclass(frozen=True)
class Reply:
    """What the desk answers a customer's message (see ``POST /v1/apps/support/messages``)."""

    conversation_id: int
    reply: str
    action: str
    language: str
    reason: str
    sentiment: dict[str, Any] | None = None
    sources: list[dict[str, Any]] = field(default_factory=list)
    ticket_id: int | None = None
    intent: dict[str, Any] | None = None  # {"label", "score", "source": head | examples}
    slots: list[dict[str, Any]] = field(default_factory=list)  # the message's tagged slots
    form: dict[str, Any] | None = None  # {"intent", "slots"} of the form that answered


@dataclass
class Understanding:
    """What the NLU made of a message: its intent (the head's, or a few-shot intent's),
    its slots, its sentiment, and the query vectors computed on the way, by encoder name (the
    knowledge-base search reuses the one of its own encoder)."""

    intent: dict[str, Any] | None = None
    slots: list[dict[str, Any]] = field(default_factory=list)
    negative: float | None = None
    sentiment: dict[str, Any] | None = None
    neutral_class: bool = False  # the sentiment model can say "neutral"
    vectors: dict[str, np.ndarray] = field(default_factory=dict)


def sentiment_of(result: dict[str, Any]) -> tuple[float | None, dict[str, Any]]:
    """The probability that a classified text is negative, and the answer as replies show it."""
    scores = result.get("scores", {})
    negative = next((scores[k] for k in NEGATIVE_LABELS if k in scores), None)
    return negative, {"label": result["label"], "negative": negative}


def has_neutral_class(result: dict[str, Any]) -> bool:
    """Whether the sentiment model that classified a text has a neutral class (the policy's
    apology threshold depends on it: :class:`~llmos.apps.support.dialogue.PolicyConfig`)."""
    return any(k in result.get("scores", {}) for k in NEUTRAL_LABELS)


class SupportService:
    """Knowledge bases and their search, per owner (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        embed: Embedder,
        index_root: str | Path,
        classify: Classifier | None = None,
        policy: PolicyConfig | None = None,
        nlu: Nlu | None = None,
        domain: Domain | None = None,
        fewshot: FewShotConfig | None = None,
        encoders: Encoders | None = None,
    ) -> None:
        self.store = store
        self.kbs = KnowledgeBases(store)
        self.desk = SupportDesk(store)
        self.embed = embed
        self.indexes = KbIndexes(self.kbs, embed, index_root, encoders)
        self.classify = classify
        self.policy = policy or PolicyConfig()
        self.nlu = nlu
        self.domain = domain
        self.fewshot = fewshot or FewShotConfig()
        self._centroids: dict[tuple[str, str, str], FewShotIntents | None] = {}

    # --- knowledge bases -------------------------------------------------------------------

    def create_kb(self, owner: int, name: str, encoder: str | None = None) -> KbInfo:
        """A new, empty knowledge base; ``encoder`` names the served model that embeds it
        (default: the desk's encoder)."""
        self.indexes.embedder(encoder)  # an encoder not served is refused before anything is stored
        return self.kbs.create(owner, name, encoder)

    def set_encoder(self, owner: int, name: str, encoder: str | None) -> KbInfo:
        """Search the knowledge base with the served model ``encoder`` from now on (None: the
        desk's default). Its index is rebuilt at once, so the next message pays nothing."""
        self.indexes.embedder(encoder)
        info = self.kbs.set_encoder(owner, name, encoder)
        self.indexes.synced(owner, name)
        return info

    def list_kbs(self, owner: int) -> list[KbInfo]:
        return self.kbs.list(owner)

    def kb(self, owner: int, name: str) -> KbInfo:
        return self.kbs.info(owner, name)

    def delete_kb(self, owner: int, name: str) -> None:
        info = self.kbs.info(owner, name)
        self.kbs.delete(owner, name)
        self.indexes.drop(info.id)

    def add(self, owner: int, name: str, pairs: list[FaqPair]) -> list[int]:
        """Store ``pairs`` (all or none) and index them; their new entry ids."""
        if not pairs:
            raise LlmosError("no FAQ pairs to add")
        self.indexes.embedder_of(owner, name)
        ids = self.kbs.add(owner, name, pairs)
        self.indexes.synced(owner, name)
        return ids

    def add_file(self, owner: int, name: str, path: str | Path) -> list[int]:
        """Add every pair of an FAQ file (JSONL, CSV or TSV: :mod:`llmos.apps.support.faq`);
        a malformed row stops the upload with its file and line, and nothing is stored."""
        return self.add(owner, name, read_faq(path))

    def remove(self, owner: int, name: str, entry_ids: list[int]) -> int:
        """Delete entries by id; how many of them were in the knowledge base."""
        self.indexes.embedder_of(owner, name)
        n = self.kbs.remove(owner, name, entry_ids)
        self.indexes.synced(owner, name)
        return n

    def entries(self, owner: int, name: str) -> list[KbEntry]:
        return self.kbs.snapshot(owner, name).entries

    # --- search ----------------------------------------------------------------------------

    def search(
        self, owner: int, name: str, query: str, k: int = 5, vector: np.ndarray | None = None
    ) -> list[Hit]:
        """The ``k`` entries that best answer ``query``, best first. ``vector`` is the query's
        embedding (kind "query") when the caller has it already."""
        if not 1 <= k <= MAX_K:
            raise LlmosError(f"k must be 1-{MAX_K}, got {k}")
        if not query.strip():
            raise LlmosError("the query is empty")
        index, embed = self.indexes.synced(owner, name)
        if vector is None:
            vector = embed([query], "query")[0]
        return index.search(query, vector, k)

    # --- sharing -----------------------------------------------------------------------------

    def share(
        self, owner: int, name: str, public: bool | None = None, agents: list[str] | None = None
    ) -> tuple[KbInfo, list[str]]:
        """Let other users ask the knowledge base (``public``), and name the users who serve
        its human queue (``agents``, by user name; the owner always does)."""
        info = self.kbs.info(owner, name)
        if public is not None:
            info = self.kbs.set_public(owner, name, public)
        if agents is not None:
            ids = []
            for agent in agents:
                user = self.store.user(agent)
                if user is None:
                    raise LlmosError(f"no user named {agent!r} to be an agent")
                ids.append(user.id)
            self.desk.set_agents(owner, info.id, ids)
        return info, self.desk.agents(info.id)

    # --- conversations -----------------------------------------------------------------------

    def message(
        self, customer: int, text: str, kb: str | None = None, conversation: int | None = None
    ) -> Reply:
        """Answer a customer's message: in a new conversation with the knowledge base ``kb``
        (``owner/name``), or in the customer's ``conversation``. Both turns are stored."""
        if not text.strip():
            raise LlmosError("the message is empty")
        lang = detect_language(text)
        if conversation is not None:
            conv = self.desk.conversation(customer, conversation)
            desk_kb = self.desk.kb_of(conv.kb_id)
            self.desk.askable(customer, desk_kb.handle)  # still allowed to ask it
            status, state = conv.status, dict(conv.state)
            self.desk.add_turn(conv.id, "customer", text, trace={"language": lang})
        elif kb is not None:
            desk_kb = self.desk.askable(customer, kb)
            conv = self.desk.start(customer, desk_kb.id, text, {"language": lang})
            status, state = "bot", {}
        else:
            raise LlmosError("give the knowledge base (kb: OWNER/NAME) or a conversation_id")
        if status == "human":  # escalated: the agents answer, the bot only says so
            ticket = self.desk.open_ticket(conv.id, desk_kb.id, "the customer wrote again")
            waiting = REPLIES[lang]["waiting"].format(ticket=ticket.id)
            reply = Reply(
                conv.id, waiting, "escalate", lang, "waiting for an agent", None, [], ticket.id
            )
            return self._record(conv.id, "human", state, reply)
        nlu = self.understand(text, lang)
        index, embed = self.indexes.synced(desk_kb.owner_id, desk_kb.name)
        vector = nlu.vectors.get(embed.name)
        if vector is None:
            vector = embed([text], "query")[0]
        hits = index.search(text, vector, k=max(5, self.policy.candidates))
        picked = chosen_entry(text, state)
        chosen = index.hit(picked) if picked is not None else None
        profile = self.store.profile(customer) if self.domain is not None else {}
        policy = self.policy
        if not nlu.neutral_class:  # a two-class model: only its surest negatives are complaints
            policy = replace(policy, negative=policy.negative_two_class)
        d = decide(
            text,
            lang,
            nlu.negative,
            hits,
            state,
            policy,
            chosen,
            intent=nlu.intent,
            slots=nlu.slots,
            domain=self.domain,
            profile=profile,
        )
        if d.learned and profile.get(CONSENT) is True:
            self.store.update_profile(customer, d.learned)
        ticket_id = None
        status = "bot"
        if d.action == "escalate":
            ticket_id = self.desk.open_ticket(conv.id, desk_kb.id, d.reason).id
            d = with_ticket(d, ticket_id, lang)
            status = "human"
        shown = [d.entry] if d.entry is not None else list(d.candidates) or hits[:3]
        sources = [
            {"id": h.entry, "question": h.question, "similarity": h.similarity, "score": h.score}
            for h in shown
        ]
        if d.form is not None:
            sources = []  # the reply is the form's, not an entry's
        form = {"intent": d.form, "slots": d.slots} if d.form is not None else None
        reply = Reply(
            conv.id,
            d.reply,
            d.action,
            lang,
            d.reason,
            nlu.sentiment,
            sources,
            ticket_id,
            nlu.intent,
            nlu.slots,
            form,
        )
        return self._record(conv.id, status, d.state, reply)

    def understand(self, text: str, lang: str) -> Understanding:
        """The message's intent, slots, sentiment (and vector) from the NLU model of its
        language, in one pass; without one, its sentiment from the sentiment classifier."""
        out = self.nlu([text], lang) if self.nlu is not None else None
        if out is None:
            u = Understanding()
            self._sentiment(u, self._classified(text, lang))
            return u
        (result,), vectors = out
        u = Understanding()
        name = self.nlu.encoder(lang)
        if name is not None:  # the pass's sentence vector: a query for a base of that encoder
            u.vectors[name] = vectors[0]
        self._sentiment(u, result.get("sentiment") or self._classified(text, lang))
        u.slots = [
            {"name": x["label"], "value": x["text"], "start": x["start"], "end": x["end"]}
            for x in result.get("slots", [])
        ]
        few = self._few_shot(lang)
        vector = vectors[0]
        if few is not None and self.fewshot.vectors == "encoder":
            if self.embed.name not in u.vectors:  # embedded once: the search reuses it
                u.vectors[self.embed.name] = self.embed([text], "query")[0]
            vector = u.vectors[self.embed.name]
        best = few.best(vector, self.fewshot.reference_margin) if few is not None else None
        u.intent = combine(result.get("intent"), best, self.fewshot)
        # Out of the domain (FewShotConfig.in_domain): the head's intent is not the message's
        # (a few-shot intent has passed its own similarity threshold).
        gate = self.fewshot.in_domain.get(lang) if self.fewshot.vectors == "encoder" else None
        head = u.intent is not None and u.intent["source"] == "head"
        if head and few is not None and gate is not None and few.nearest(vector) < gate:
            u.intent = None
        return u

    def _few_shot(self, lang: str) -> FewShotIntents | None:
        """The domain's few-shot intents, with the NLU head's own intents as references
        (:class:`FewShotIntents`), their centroids from the vectors ``FewShotConfig.vectors``
        names (computed once per model)."""
        if self.domain is None or self.nlu is None:
            return None
        name = self.nlu.encoder(lang)
        if name is None:
            return None
        by_encoder = self.fewshot.vectors == "encoder"
        # the NLU model gives the references, the encoder (if so set) the vectors
        key = (lang, name, self.embed.name if by_encoder else "")
        if key not in self._centroids:
            # The message's language's examples; an intent given only in the other language
            # keeps those (the encoder is multilingual).
            examples = self.domain.few_shot_examples() | self.domain.few_shot_examples(lang)
            # The head's own intents, from a few of its training utterances: a message
            # nearer one of them than any few-shot intent is the head's to decide.
            refs = {n: ts for n, ts in self.nlu.intent_examples(lang).items() if n not in examples}
            texts = [t for ts in (examples | refs).values() for t in ts] if examples else []
            if not texts:
                vecs = None
            elif by_encoder:
                vecs = self.embed(texts, "query")
            else:
                out = self.nlu(texts, lang)
                vecs = out[1] if out is not None else None
            self._centroids[key] = (
                FewShotIntents(examples | refs, vecs, reference=refs) if vecs is not None else None
            )
        return self._centroids[key]

    def _record(self, conversation: int, status: str, state: dict[str, Any], r: Reply) -> Reply:
        trace = {
            "language": r.language,
            "reason": r.reason,
            "sentiment": r.sentiment,
            "intent": r.intent,
            "slots": r.slots,
            "form": r.form,
            "sources": r.sources,
            "ticket_id": r.ticket_id,
        }
        self.desk.add_turn(conversation, "bot", r.reply, r.action, trace, status, state)
        return r

    def _classified(self, text: str, lang: str) -> dict[str, Any] | None:
        """The sentiment classifier's answer for ``text``, or None without one."""
        if self.classify is None:
            return None
        result = self.classify([text], lang)
        return result[0] if result else None

    @staticmethod
    def _sentiment(u: Understanding, result: dict[str, Any] | None) -> None:
        """Fill ``u``'s sentiment from a sentiment answer (an NLU head's or a classifier's)."""
        if result is not None:
            u.negative, u.sentiment = sentiment_of(result)
            u.neutral_class = has_neutral_class(result)

    def conversations(self, customer: int) -> list[Conversation]:
        return self.desk.conversations(customer)

    def transcript(self, customer: int, conversation: int) -> tuple[Conversation, list[Turn]]:
        """The customer's own conversation and its turns."""
        conv = self.desk.conversation(customer, conversation)
        return conv, self.desk.turns(conv.id)

    # --- the human queue ---------------------------------------------------------------------

    def tickets(self, agent: int, status: str | None = "open") -> list[Ticket]:
        return self.desk.tickets(agent, status)

    def ticket(self, agent: int, ticket: int) -> tuple[Ticket, DeskKb, list[Turn]]:
        """A ticket of the agent's queue, its knowledge base and its conversation's turns."""
        t = self.desk.ticket(agent, ticket)
        return t, self.desk.kb_of(t.kb_id), self.desk.turns(t.conversation_id)

    def agent_reply(self, agent: int, ticket: int, text: str, name: str) -> Turn:
        """An agent's message in the ticket's conversation (the customer sees it there)."""
        if not text.strip():
            raise LlmosError("the reply is empty")
        t = self.desk.ticket(agent, ticket)
        return self.desk.add_turn(t.conversation_id, "agent", text, trace={"agent": name})

    def close(self, agent: int, ticket: int) -> Ticket:
        """Close a ticket; the bot answers the conversation again."""
        return self.desk.close_ticket(agent, ticket)
