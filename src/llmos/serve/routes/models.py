"""``/v1/models``: what the server can serve, and (admins) loading, unloading, rescanning."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from llmos.serve import schemas as s
from llmos.serve.deps import AdminDep, Server, ServerDep, UserDep

router = APIRouter(prefix="/v1", tags=["models"])


def model_list(srv: Server) -> dict[str, Any]:
    reg = srv.registry
    models = [
        {
            "name": e.name,
            "task": e.task,
            "model_type": e.model_type,
            "capabilities": list(e.capabilities),
            "labels": e.labels,
            "language": e.language,
            "size_bytes": e.size_bytes,
            "quantization": e.quantization,
            "max_length": e.max_length,
            "loaded": e.name in reg.loaded,
        }
        for e in sorted(reg.models.values(), key=lambda e: e.name)
        if not e.hidden
    ]
    indexes = [
        {"name": i.name, "model": i.model, "count": i.count, "dim": i.dim}
        for i in sorted(reg.indexes.values(), key=lambda i: i.name)
    ]
    return {
        "models": models,
        "indexes": indexes,
        "memory_used_bytes": reg.used_bytes,
        "memory_budget_bytes": reg.budget,
    }


@router.get("/models", response_model=s.ModelList)
async def list_models(srv: ServerDep, _: UserDep) -> Any:
    """Every model under the models directory: task, labels, size, language, loaded or not."""
    return model_list(srv)


@router.post("/models/load", response_model=s.ModelList, tags=["admin"])
async def load(body: s.ModelAction, srv: ServerDep, _: AdminDep) -> Any:
    """Load a model now (instead of on its first request)."""
    await srv.registry.get(body.model)
    return model_list(srv)


@router.post("/models/unload", response_model=s.ModelList, tags=["admin"])
async def unload(body: s.ModelAction, srv: ServerDep, _: AdminDep) -> Any:
    """Free a model's memory (its queued requests are served first)."""
    srv.registry.entry(body.model)
    await srv.registry.unload(body.model)
    return model_list(srv)


@router.post("/models/rescan", response_model=s.ModelList, tags=["admin"])
async def rescan(srv: ServerDep, _: AdminDep) -> Any:
    """Read the models directory again (new checkpoints become available)."""
    srv.registry.rescan()
    return model_list(srv)
