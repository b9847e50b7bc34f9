"""``/v1/apps/support``: the customer-service app over HTTP.

Knowledge bases belong to the caller: the ``/kbs`` routes read and write the caller's own only
(another user's of the same name is a different one, and is never seen). ``/messages`` talks
to any knowledge base the caller may ask (public, own, or served) and keeps the conversation
the caller's own; ``/tickets`` is the human queue of the knowledge bases the caller owns or
serves as an agent, and nothing else."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from starlette.concurrency import run_in_threadpool

from llmos.apps.support import schemas as s
from llmos.apps.support.faq import parse_faq
from llmos.apps.support.indexes import UnknownEncoder
from llmos.apps.support.service import SupportService
from llmos.errors import LlmosError
from llmos.serve.deps import ApiError, ServerDep, UserDep, check_texts
from llmos.store.desk import UnknownConversation
from llmos.store.kb import FaqPair, UnknownKnowledgeBase

router = APIRouter(prefix="/v1/apps/support", tags=["support"])


def service(srv: Any, embeds: bool = True) -> SupportService:
    """The server's support service (503 while the server starts, or, for the routes that
    embed, without its encoder)."""
    support = getattr(srv, "support", None)
    if support is None:
        raise ApiError(503, "not_ready", "the customer-service app is not running")
    encoder = srv.settings.support_encoder
    if embeds and encoder not in srv.registry.models:
        raise ApiError(
            503,
            "no_encoder",
            f"the customer-service app searches with the embedding model {encoder!r}, which is "
            "not in the models directory: build it with `llmos setup`, or name another with "
            "--support-encoder",
        )
    return support


async def call(fn: Any, *args: Any) -> Any:
    """Run a service method in a worker thread; an unknown knowledge base is a 404."""
    try:
        return await run_in_threadpool(fn, *args)
    except (UnknownKnowledgeBase, UnknownConversation) as e:
        raise ApiError(404, "not_found", str(e)) from None
    except UnknownEncoder as e:  # the knowledge base's own encoder is no longer served
        raise ApiError(503, "no_encoder", str(e)) from None


def _info(kb: Any) -> dict[str, Any]:
    return {
        "name": kb.name,
        "revision": kb.revision,
        "entries": kb.entries,
        "public": kb.public,
        "encoder": kb.encoder,
    }


@router.post("/kbs", response_model=s.KbInfo, status_code=201)
async def create_kb(body: s.KbCreate, srv: ServerDep, user: UserDep) -> Any:
    """Create an empty knowledge base (searched with ``encoder`` if given)."""
    try:
        kb = await run_in_threadpool(
            service(srv, embeds=False).create_kb, user.id, body.name, body.encoder
        )
    except UnknownEncoder as e:
        raise ApiError(422, "invalid_request", str(e)) from None
    except LlmosError as e:
        raise ApiError(409, "conflict", str(e)) from None
    return _info(kb)


@router.put("/kbs/{name}/encoder", response_model=s.KbInfo)
async def set_encoder(name: s.KbName, body: s.KbEncoder, srv: ServerDep, user: UserDep) -> Any:
    """Search the knowledge base with another served embedding model (null: the desk's
    default), e.g. an encoder fine-tuned on its own wordings (`llmos support kb pairs`, then
    `llmos finetune --config configs/finetune/embed-kb.yaml`). The index is rebuilt before
    the answer."""
    try:
        support = service(srv, embeds=body.encoder is None)  # the default must be served
        kb = await run_in_threadpool(support.set_encoder, user.id, name, body.encoder)
    except UnknownKnowledgeBase as e:
        raise ApiError(404, "not_found", str(e)) from None
    except UnknownEncoder as e:
        raise ApiError(422, "invalid_request", str(e)) from None
    return _info(kb)


@router.get("/kbs", response_model=s.KbList)
async def list_kbs(srv: ServerDep, user: UserDep) -> Any:
    """The caller's knowledge bases."""
    return {"kbs": [_info(kb) for kb in await call(service(srv, embeds=False).list_kbs, user.id)]}


@router.get("/kbs/{name}", response_model=s.KbInfo)
async def get_kb(name: s.KbName, srv: ServerDep, user: UserDep) -> Any:
    return _info(await call(service(srv, embeds=False).kb, user.id, name))


@router.delete("/kbs/{name}", status_code=204)
async def delete_kb(name: s.KbName, srv: ServerDep, user: UserDep) -> Response:
    """Delete a knowledge base with all its entries."""
    await call(service(srv, embeds=False).delete_kb, user.id, name)
    return Response(status_code=204)


@router.post("/kbs/{name}/entries", response_model=s.EntryIds, status_code=201)
async def add_entries(name: s.KbName, body: s.EntriesIn, srv: ServerDep, user: UserDep) -> Any:
    """Add FAQ pairs (all or none) and index them; answers their new ids."""
    pairs = [
        FaqPair(e.question, e.answer, tuple(e.alternatives), tuple(e.tags)) for e in body.entries
    ]
    return {"ids": await call(service(srv).add, user.id, name, pairs)}


@router.post("/kbs/{name}/files", response_model=s.EntryIds, status_code=201)
async def add_file(name: s.KbName, body: s.FileIn, srv: ServerDep, user: UserDep) -> Any:
    """Add every pair of an FAQ file's content (JSONL, CSV or TSV). A malformed row is a 422
    naming its line, and nothing of the file is stored."""
    pairs = parse_faq(body.content, body.format, "the file")
    return {"ids": await call(service(srv).add, user.id, name, pairs)}


@router.get("/kbs/{name}/entries", response_model=s.EntryList)
async def list_entries(
    name: s.KbName,
    srv: ServerDep,
    user: UserDep,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Any:
    """The knowledge base's entries in id order, a page at a time."""
    snapshot = await call(service(srv, embeds=False).kbs.snapshot, user.id, name)
    page = snapshot.entries[offset : offset + limit]
    return {
        "revision": snapshot.revision,
        "total": len(snapshot.entries),
        "entries": [
            {
                "id": e.id,
                "question": e.question,
                "answer": e.answer,
                "alternatives": list(e.alternatives),
                "tags": list(e.tags),
            }
            for e in page
        ],
    }


@router.delete("/kbs/{name}/entries/{entry_id}", status_code=204)
async def delete_entry(
    name: s.KbName, entry_id: s.RowId, srv: ServerDep, user: UserDep
) -> Response:
    """Delete one entry (404 when the knowledge base has no such entry)."""
    if not await call(service(srv).remove, user.id, name, [entry_id]):
        raise ApiError(404, "not_found", f"knowledge base {name!r} has no entry {entry_id}")
    return Response(status_code=204)


@router.post("/kbs/{name}/search", response_model=s.SearchOut)
async def search(name: s.KbName, body: s.SearchIn, srv: ServerDep, user: UserDep) -> Any:
    """The entries that best answer a query: BM25 and dense search fused by reciprocal rank,
    each hit with the evidence of both."""
    check_texts(srv, [body.query], "query")
    hits = await call(service(srv).search, user.id, name, body.query, body.k)
    return {
        "kb": name,
        "hits": [
            {
                "id": h.entry,
                "question": h.question,
                "answer": h.answer,
                "tags": list(h.tags),
                "score": h.score,
                "similarity": h.similarity,
                "bm25": h.bm25,
                "matched": h.matched,
            }
            for h in hits
        ],
    }


def _iso(t: Any) -> str:
    return t.isoformat()


def _turns(turns: list[Any], traced: bool) -> list[dict[str, Any]]:
    return [
        {
            "role": t.role,
            "text": t.text,
            "action": t.action,
            "created_at": _iso(t.created_at),
            **({"trace": t.trace} if traced else {}),
        }
        for t in turns
    ]


@router.patch("/kbs/{name}", response_model=s.KbShared)
async def share_kb(name: s.KbName, body: s.KbShare, srv: ServerDep, user: UserDep) -> Any:
    """Let other users ask the knowledge base (``public``), and name its agents: the users
    who, with the owner, see and answer its human queue."""
    info, agents = await call(
        service(srv, embeds=False).share, user.id, name, body.public, body.agents
    )
    return {**_info(info), "public": info.public, "agents": agents}


@router.post("/messages", response_model=s.MessageOut)
async def message(body: s.MessageIn, srv: ServerDep, user: UserDep) -> Any:
    """A customer's message and the desk's reply: answer from the knowledge base (or with a
    completed form's reply), ask for a form's missing slot or its confirmation (ask), ask
    which entry was meant (clarify), say it does not know (fallback), or hand the conversation
    to a person (escalate, with the ticket's id)."""
    check_texts(srv, [body.text], "text")
    r = await call(service(srv).message, user.id, body.text, body.kb, body.conversation_id)
    return dataclasses.asdict(r)


@router.get("/conversations", response_model=s.ConversationList)
async def list_conversations(srv: ServerDep, user: UserDep) -> Any:
    """The caller's own conversations, the most recently active first."""
    svc = service(srv, embeds=False)
    convs = await call(svc.conversations, user.id)
    kbs = await call(svc.desk.handles, {c.kb_id for c in convs})
    return {
        "conversations": [
            {"id": c.id, "kb": kbs[c.kb_id], "status": c.status, "updated_at": _iso(c.updated_at)}
            for c in convs
        ]
    }


@router.get("/conversations/{conversation_id}", response_model=s.ConversationOut)
async def get_conversation(conversation_id: s.RowId, srv: ServerDep, user: UserDep) -> Any:
    """One of the caller's conversations with its turns (the bot's, the agents' and theirs)."""
    svc = service(srv, embeds=False)
    conv, turns = await call(svc.transcript, user.id, conversation_id)
    kb = await call(svc.desk.kb_of, conv.kb_id)
    return {"id": conv.id, "kb": kb.handle, "status": conv.status, "turns": _turns(turns, False)}


def _ticket(t: Any, kb: str) -> dict[str, Any]:
    return {
        "id": t.id,
        "kb": kb,
        "conversation_id": t.conversation_id,
        "reason": t.reason,
        "status": t.status,
        "created_at": _iso(t.created_at),
    }


@router.get("/tickets", response_model=s.TicketList)
async def list_tickets(
    srv: ServerDep,
    user: UserDep,
    status: Annotated[str, Query(pattern="^(open|closed|all)$")] = "open",
) -> Any:
    """The human queue of the knowledge bases the caller owns or serves, oldest first."""
    svc = service(srv, embeds=False)
    tickets = await call(svc.tickets, user.id, None if status == "all" else status)
    kbs = await call(svc.desk.handles, {t.kb_id for t in tickets})
    return {"tickets": [_ticket(t, kbs[t.kb_id]) for t in tickets]}


@router.get("/tickets/{ticket_id}", response_model=s.TicketOut)
async def get_ticket(ticket_id: s.RowId, srv: ServerDep, user: UserDep) -> Any:
    """A ticket of the caller's queue with its conversation and the policy's trace per turn."""
    t, kb, turns = await call(service(srv, embeds=False).ticket, user.id, ticket_id)
    return {**_ticket(t, kb.handle), "transcript": _turns(turns, True)}


@router.post("/tickets/{ticket_id}/reply", response_model=s.TurnOut, status_code=201)
async def reply_ticket(
    ticket_id: s.RowId, body: s.AgentReply, srv: ServerDep, user: UserDep
) -> Any:
    """An agent's reply: it appears in the customer's conversation."""
    turn = await call(
        service(srv, embeds=False).agent_reply, user.id, ticket_id, body.text, user.name
    )
    return _turns([turn], False)[0]


@router.post("/tickets/{ticket_id}/close", response_model=s.TicketInfo)
async def close_ticket(ticket_id: s.RowId, srv: ServerDep, user: UserDep) -> Any:
    """Close a ticket: the bot answers its conversation again."""
    svc = service(srv, embeds=False)
    t = await call(svc.close, user.id, ticket_id)
    return _ticket(t, (await call(svc.desk.kb_of, t.kb_id)).handle)
