"""``/v1/me``: the caller's own profile, events and conversation memory; ``/v1/users``: user
management for admins. No route takes another user's id: every read and write is filtered on
the authenticated caller."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from llmos.errors import LlmosError
from llmos.serve import schemas as s
from llmos.serve.deps import AdminDep, ApiError, ServerDep, UserDep, bearer_key
from llmos.store.db import hash_key

router = APIRouter(prefix="/v1", tags=["users"])


@router.get("/me", response_model=s.UserInfo)
async def me(user: UserDep) -> Any:
    return {"id": user.id, "name": user.name, "is_admin": user.is_admin}


@router.post("/me/keys", response_model=s.NewKey, status_code=201)
async def new_key(srv: ServerDep, user: UserDep) -> Any:
    """Issue the caller another API key (shown this once), e.g. to rotate keys: create the
    new one, switch to it, then revoke the old one with ``DELETE /v1/me/key``."""
    return {"api_key": await run_in_threadpool(srv.store.create_key, user.id)}


@router.delete("/me/key", status_code=204)
async def revoke_key(request: Request, srv: ServerDep, _: UserDep) -> Response:
    """Revoke the API key this request is made with; this server refuses it from now on."""
    key = bearer_key(request)
    await run_in_threadpool(srv.store.revoke_key, key)
    srv.keys.forget(hash_key(key))
    return Response(status_code=204)


@router.get("/me/profile", response_model=s.Profile)
async def get_profile(srv: ServerDep, user: UserDep) -> Any:
    return {"profile": await run_in_threadpool(srv.store.profile, user.id)}


@router.patch("/me/profile", response_model=s.Profile)
async def patch_profile(body: s.ProfilePatch, srv: ServerDep, user: UserDep) -> Any:
    """Merge keys into the profile (a null value removes the key)."""
    return {"profile": await run_in_threadpool(srv.store.update_profile, user.id, body.changes)}


@router.post("/me/events", response_model=s.Created, status_code=201)
async def add_event(body: s.EventIn, srv: ServerDep, user: UserDep) -> Any:
    """Record an interaction (a click, a rating, a purchase, a text written)."""
    event_id = await run_in_threadpool(
        srv.store.add_event, user.id, body.kind, body.item, body.text, body.value
    )
    return {"id": event_id}


@router.get("/me/events", response_model=s.EventList)
async def list_events(
    srv: ServerDep,
    user: UserDep,
    kind: Annotated[str | None, Query(max_length=50)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Any:
    """The caller's newest events first."""
    rows = await run_in_threadpool(srv.store.events, user.id, kind, limit)
    return {
        "events": [
            {
                "id": e.id,
                "kind": e.kind,
                "item": e.item,
                "text": e.text,
                "value": e.value,
                "created_at": e.created_at.isoformat(),
            }
            for e in rows
        ]
    }


@router.post("/me/memory", response_model=s.Created, status_code=201)
async def remember(body: s.MemoryIn, srv: ServerDep, user: UserDep) -> Any:
    """Append a message to the caller's conversation memory."""
    await run_in_threadpool(srv.store.remember, user.id, body.role, body.content)
    return {}


@router.get("/me/memory", response_model=s.MemoryList)
async def memory(
    srv: ServerDep, user: UserDep, limit: Annotated[int, Query(ge=1, le=1000)] = 20
) -> Any:
    """The caller's last messages, oldest first."""
    rows = await run_in_threadpool(srv.store.memory, user.id, limit)
    return {
        "memory": [
            {"role": m.role, "content": m.content, "created_at": m.created_at.isoformat()}
            for m in rows
        ]
    }


@router.get("/users", response_model=list[s.UserInfo], tags=["admin"])
async def list_users(srv: ServerDep, _: AdminDep) -> Any:
    users = await run_in_threadpool(srv.store.users)
    return [{"id": u.id, "name": u.name, "is_admin": u.is_admin} for u in users]


@router.post("/users", response_model=s.UserCreated, status_code=201, tags=["admin"])
async def create_user(body: s.UserCreate, srv: ServerDep, _: AdminDep) -> Any:
    """Create a user; the answer holds their API key, shown this once."""
    if not body.name.strip():
        raise ApiError(422, "invalid_request", "name is blank: give the user a name")
    try:
        user, key = await run_in_threadpool(srv.store.create_user, body.name, body.admin)
    except LlmosError as e:
        raise ApiError(409, "conflict", str(e)) from None
    return {"id": user.id, "name": user.name, "is_admin": user.is_admin, "api_key": key}
