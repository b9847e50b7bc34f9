"""``llmos serve``: its flags are :class:`~llmos.serve.settings.ServeSettings`'s fields, each
also read from an environment variable named after the flag (``--max-batch`` ->
``LLMOS_MAX_BATCH``); a flag wins over the variable, the variable over the default."""

from __future__ import annotations

import argparse

from llmos.cli.flags import Flag, Subcommands, add_flags, build

ENV_PREFIX = "LLMOS_"
# Today's spellings and short help; the other fields read as --field-name with the help of
# ServeSettings' docstring.
SERVE_FLAGS = {
    "models_dir": Flag("--models", help="directory of checkpoints"),
    "memory_budget_mb": Flag("--memory-budget", metavar="MIB"),
    "max_batch": Flag(help="texts per batch (1 = no batching)"),
    "max_wait_ms": Flag(help="wait for a batch to fill"),
    "queue_size": Flag(help="waiting requests per model"),
    "request_timeout_s": Flag("--timeout", help="seconds a request may queue"),
    "rate_limit": Flag(help="requests a second per key (0 = off)"),
    "auth_cache_s": Flag(
        "--auth-cache",
        metavar="SECONDS",
        help="remember authenticated keys this long (0 = ask the store every request)",
    ),
    "max_body_bytes": Flag("--max-body", metavar="BYTES"),
    "preload": Flag(help="load at start", metavar="MODEL"),
}


def add_serve(sub: Subcommands) -> None:
    """``llmos serve``."""
    from llmos.serve.settings import ServeSettings

    sv = sub.add_parser(
        "serve",
        help="serve every checkpoint under a directory over HTTP (/v1, /docs, /metrics) "
        "and the web console (/)",
        description="The llmos HTTP server (FastAPI + uvicorn): models load on first use "
        "within a memory budget, requests to one model are micro-batched, every /v1 route "
        "needs 'Authorization: Bearer KEY' (llmos users create NAME). Every option can also "
        f"be set with an environment variable named after it (--max-batch: {ENV_PREFIX}"
        "MAX_BATCH); the option wins over the variable.",
    )
    add_flags(sv, ServeSettings, SERVE_FLAGS)
    sv.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    from llmos.serve.app import serve
    from llmos.serve.settings import ServeSettings

    settings = build(ServeSettings, args, SERVE_FLAGS, env_prefix=ENV_PREFIX)
    serve(settings, host=settings.host, port=settings.port)
    return 0
