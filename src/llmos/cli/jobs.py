"""``llmos worker``: run background jobs (training a user's adapter, ...) queued by the server.

Its flags are :class:`~llmos.jobs.worker.WorkerSettings`' fields, each also read from an
environment variable named after the flag (``--stale-after`` -> ``LLMOS_STALE_AFTER``)."""

from __future__ import annotations

import argparse

from llmos.cli.flags import Flag, Subcommands, add_flags, build

ENV_PREFIX = "LLMOS_"
WORKER_FLAGS = {
    "heartbeat_s": Flag("--heartbeat", metavar="SECONDS"),
    "stale_after_s": Flag("--stale-after", metavar="SECONDS"),
    "poll_s": Flag("--poll", metavar="SECONDS"),
}


def add_worker(sub: Subcommands) -> None:
    """``llmos worker``."""
    from llmos.jobs.worker import WorkerSettings

    wk = sub.add_parser(
        "worker",
        help="run background jobs queued in the store (start any number, on any machine "
        "that reaches the database)",
        description="A worker takes the jobs the server queues (GET /v1/jobs lists them) "
        "and runs them one at a time per process. SIGTERM puts a running job back in the "
        "queue; Ctrl-C lets it finish first. A job whose worker was killed is queued again "
        "(attempt 2, ...) once its heartbeat is older than --stale-after.",
    )
    add_flags(wk, WorkerSettings, WORKER_FLAGS)
    wk.set_defaults(func=_worker)


def _worker(args: argparse.Namespace) -> int:
    from llmos.jobs.worker import WorkerSettings, run_worker

    run_worker(build(WorkerSettings, args, WORKER_FLAGS, env_prefix=ENV_PREFIX))
    return 0
