"""The support desk in the store: customers' conversations with a knowledge base, their turns,
and the tickets of the human queue.

Who sees what (every method takes the caller's user id and filters on it):

- a **customer** sees only their own conversations, and may ask a knowledge base that is
  public (``kbs.public``) or that they own or serve;
- an **agent** of a knowledge base (its owner, or a user the owner added to ``kb_agents``)
  sees that knowledge base's tickets, with their conversations, and nothing of the others.

A knowledge base another user may not ask is answered exactly like one that does not exist, so
its existence is not revealed either.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from llmos.errors import LlmosError
from llmos.store.db import Store, check_text, valid_id
from llmos.store.kb import UnknownKnowledgeBase
from llmos.store.models import (
    Conversation,
    KbAgent,
    KnowledgeBase,
    Ticket,
    Turn,
    User,
    now,
)


class UnknownConversation(LlmosError):
    """No conversation (or ticket) of that id that the caller may see."""


@dataclass(frozen=True)
class DeskKb:
    """A knowledge base as the desk addresses it: ``owner/name``."""

    id: int
    owner_id: int
    owner: str
    name: str

    @property
    def handle(self) -> str:
        return f"{self.owner}/{self.name}"


class SupportDesk:
    """Conversations, turns and tickets in a :class:`~llmos.store.db.Store`'s database."""

    def __init__(self, store: Store) -> None:
        self.session = store.session

    # --- knowledge bases as customers and agents reach them ------------------------------

    def askable(self, caller: int, handle: str) -> DeskKb:
        """The knowledge base ``owner/name`` if ``caller`` may ask it (public, or theirs, or
        served by them)."""
        owner, sep, name = handle.partition("/")
        if not sep or not owner or not name:
            raise LlmosError(f"a knowledge base is named OWNER/NAME, got {handle!r}")
        with self.session() as s:
            row = s.execute(
                select(KnowledgeBase, User.name)
                .join(User, KnowledgeBase.owner_id == User.id)
                .where(User.name == owner, KnowledgeBase.name == name)
            ).first()
            if row is not None:
                kb, owner_name = row
                if kb.public or kb.owner_id == caller or self._serves(s, caller, kb.id):
                    return DeskKb(kb.id, kb.owner_id, owner_name, kb.name)
        raise UnknownKnowledgeBase(f"no knowledge base {handle!r} that you may ask")

    def kb_of(self, kb_id: int) -> DeskKb:
        with self.session() as s:
            kb, owner = s.execute(
                select(KnowledgeBase, User.name)
                .join(User, KnowledgeBase.owner_id == User.id)
                .where(KnowledgeBase.id == kb_id)
            ).one()
            return DeskKb(kb.id, kb.owner_id, owner, kb.name)

    def handles(self, kb_ids: set[int]) -> dict[int, str]:
        """``owner/name`` of each knowledge base of ``kb_ids``, in one query."""
        with self.session() as s:
            rows = s.execute(
                select(KnowledgeBase.id, User.name, KnowledgeBase.name)
                .join(User, KnowledgeBase.owner_id == User.id)
                .where(KnowledgeBase.id.in_(kb_ids))
            )
            return {kb_id: f"{owner}/{name}" for kb_id, owner, name in rows}

    @staticmethod
    def _serves(s: Session, user: int, kb_id: int) -> bool:
        return s.get(KbAgent, (kb_id, user)) is not None

    def served(self, user: int) -> list[int]:
        """The ids of the knowledge bases whose queue ``user`` serves (owned or as agent)."""
        with self.session() as s:
            q = (
                select(KnowledgeBase.id)
                .outerjoin(KbAgent, (KbAgent.kb_id == KnowledgeBase.id) & (KbAgent.user_id == user))
                .where(or_(KnowledgeBase.owner_id == user, KbAgent.user_id == user))
            )
            return sorted(set(s.scalars(q)))

    def set_agents(self, owner: int, kb_id: int, agents: list[int]) -> None:
        """Replace the agents of the owner's knowledge base ``kb_id``."""
        with self.session.begin() as s:
            kb = s.get(KnowledgeBase, kb_id)
            if kb is None or kb.owner_id != owner:
                raise UnknownKnowledgeBase(f"no knowledge base with id {kb_id}")
            for row in s.scalars(select(KbAgent).where(KbAgent.kb_id == kb_id)):
                s.delete(row)
            s.flush()
            s.add_all(KbAgent(kb_id=kb_id, user_id=u) for u in sorted(set(agents)))

    def agents(self, kb_id: int) -> list[str]:
        with self.session() as s:
            q = (
                select(User.name)
                .join(KbAgent, KbAgent.user_id == User.id)
                .where(KbAgent.kb_id == kb_id)
                .order_by(User.name)
            )
            return list(s.scalars(q))

    # --- conversations (the customer's own) ----------------------------------------------

    def start(
        self,
        customer: int,
        kb_id: int,
        text: str | None = None,
        trace: dict[str, Any] | None = None,
    ) -> Conversation:
        """A new conversation of ``customer`` with the knowledge base, and its first customer
        turn ``text`` (with ``trace``) when given, in one transaction."""
        if text is not None:
            check_text(Turn.text.expression, text)
        with self.session.begin() as s:
            conv = Conversation(customer_id=customer, kb_id=kb_id, status="bot", state={})
            s.add(conv)
            s.flush()
            if text is not None:
                s.add(Turn(conversation_id=conv.id, role="customer", text=text, trace=trace or {}))
            return conv

    def conversation(self, customer: int, conversation_id: int) -> Conversation:
        """The customer's own conversation (an error for anyone else's)."""
        with self.session() as s:
            conv = s.get(Conversation, conversation_id) if valid_id(conversation_id) else None
            if conv is None or conv.customer_id != customer:
                raise UnknownConversation(f"no conversation {conversation_id} of yours")
            return conv

    def conversations(self, customer: int, limit: int = 50) -> list[Conversation]:
        """The customer's conversations, the most recently active first."""
        q = (
            select(Conversation)
            .where(Conversation.customer_id == customer)
            .order_by(Conversation.updated_at.desc(), Conversation.id.desc())
            .limit(limit)
        )
        with self.session() as s:
            return list(s.scalars(q))

    def save(self, conversation_id: int, status: str, state: dict[str, Any]) -> None:
        with self.session.begin() as s:
            conv = s.get(Conversation, conversation_id)
            assert conv is not None
            conv.status, conv.state, conv.updated_at = status, dict(state), now()

    def add_turn(
        self,
        conversation_id: int,
        role: str,
        text: str,
        action: str | None = None,
        trace: dict[str, Any] | None = None,
        status: str | None = None,
        state: dict[str, Any] | None = None,
    ) -> Turn:
        """Add a turn to the conversation; ``status`` and ``state``, when given, become the
        conversation's in the same transaction (the bot's reply and the policy's state)."""
        check_text(Turn.text.expression, text)
        with self.session.begin() as s:
            turn = Turn(
                conversation_id=conversation_id,
                role=role,
                text=text,
                action=action,
                trace=trace or {},
            )
            s.add(turn)
            conv = s.get(Conversation, conversation_id)
            assert conv is not None
            conv.updated_at = now()
            if status is not None:
                conv.status = status
            if state is not None:
                conv.state = dict(state)
            s.flush()
            return turn

    def turns(self, conversation_id: int, limit: int = 200) -> list[Turn]:
        """The conversation's last ``limit`` turns, oldest first."""
        q = (
            select(Turn)
            .where(Turn.conversation_id == conversation_id)
            .order_by(Turn.id.desc())
            .limit(limit)
        )
        with self.session() as s:
            return list(reversed(list(s.scalars(q))))

    # --- tickets (the human queue) -------------------------------------------------------

    def open_ticket(self, conversation_id: int, kb_id: int, reason: str) -> Ticket:
        """The conversation's open ticket: a new one, or the one already waiting."""
        with self.session.begin() as s:
            ticket = s.scalar(
                select(Ticket).where(
                    Ticket.conversation_id == conversation_id, Ticket.status == "open"
                )
            )
            if ticket is None:
                ticket = Ticket(
                    conversation_id=conversation_id, kb_id=kb_id, reason=reason, status="open"
                )
                s.add(ticket)
                s.flush()
            return ticket

    def tickets(self, agent: int, status: str | None = "open", limit: int = 100) -> list[Ticket]:
        """The tickets of the knowledge bases ``agent`` serves, oldest first (the queue)."""
        kbs = self.served(agent)
        q = select(Ticket).where(Ticket.kb_id.in_(kbs))
        if status is not None:
            q = q.where(Ticket.status == status)
        with self.session() as s:
            return list(s.scalars(q.order_by(Ticket.id).limit(limit)))

    def ticket(self, agent: int, ticket_id: int) -> Ticket:
        """A ticket of a knowledge base ``agent`` serves (an error for any other)."""
        with self.session() as s:
            ticket = s.get(Ticket, ticket_id) if valid_id(ticket_id) else None
            if ticket is None or ticket.kb_id not in self.served(agent):
                raise UnknownConversation(f"no ticket {ticket_id} in your queue")
            return ticket

    def close_ticket(self, agent: int, ticket_id: int) -> Ticket:
        """Close a ticket; its conversation goes back to the bot."""
        ticket = self.ticket(agent, ticket_id)
        with self.session.begin() as s:
            row = s.get(Ticket, ticket.id)
            assert row is not None
            if row.status == "open":
                row.status, row.closed_at = "closed", now()
                conv = s.get(Conversation, row.conversation_id)
                assert conv is not None
                conv.status, conv.state, conv.updated_at = "bot", {}, now()
            return row
