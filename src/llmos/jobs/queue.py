"""The queue under llmos's background jobs: huey over the store's own database.

Why huey (3.5, ``huey.contrib.sql_huey.SqlHuey`` on peewee): it is the one maintained job
library that queues in both databases the store runs on, the embedded SQLite file and
PostgreSQL, through one storage class, with nothing else to run (no Redis, no broker).
procrastinate, pgqueuer and dramatiq-pg are PostgreSQL-only (a second design for SQLite);
rq, arq, saq and celery need Redis or a broker; persist-queue and litequeue are SQLite-only.
peewee 4 speaks psycopg 3, the driver the store already uses, so no second PostgreSQL driver
is installed.

What huey does here: hold the queue (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, ``BEGIN
IMMEDIATE`` on SQLite, so each message goes to one worker of any number, on any machine that
reaches the database), revoke a queued job's message, run the consumer loop (polling with
backoff, thread workers, signal handling). What it does not do, and ``llmos.jobs`` adds:
a job's record, progress and log for users (the ``jobs`` table), and recovery from a worker
killed mid-job (huey deletes a message when a worker takes it, so a killed worker's job would
be lost; the row's heartbeat finds it and the job is enqueued again).

huey's tables live in the store's database under a ``huey_`` prefix and are created by the
store's migration 0008, not by huey (:class:`Storage` renames them and never creates them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from huey import Huey
from huey.contrib.sql_huey import SqlStorage
from peewee import Database, PostgresqlDatabase, SqliteDatabase
from sqlalchemy import make_url

from llmos.errors import LlmosError

QUEUE = "llmos"  # huey's queue name (a column of its tables)
TASK = "llmos.job"  # the one huey task: run the job whose id it carries
TABLE_PREFIX = "huey_"


def message_id(job_id: int) -> str:
    """The huey task id of a job's message (so that a queued job can be revoked by id)."""
    return f"job-{job_id}"


class Storage(SqlStorage):
    """huey's SQL storage with its tables named ``huey_task`` etc. (see migration 0008)."""

    def create_models(self) -> tuple[Any, ...]:
        models = super().create_models()
        for model in models:
            model._meta.set_table_name(TABLE_PREFIX + model.__name__.lower())
        return models


def peewee_database(url: str) -> Database:
    """The store's SQLAlchemy URL as a peewee database (SQLite file or PostgreSQL)."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise LlmosError(
                "background jobs need a database that worker processes can open: a SQLite "
                f"file or PostgreSQL, not {url!r}"
            )
        # busy_timeout: workers and the server write the same file; wait for the lock.
        return SqliteDatabase(parsed.database, pragmas={"busy_timeout": 10_000}, timeout=10)
    if backend == "postgresql":
        return PostgresqlDatabase(
            parsed.database,
            user=parsed.username,
            password=parsed.password,
            host=parsed.host,
            port=parsed.port,
            prefer_psycopg3=True,
            **dict(parsed.query),
        )
    raise LlmosError(f"background jobs run on SQLite or PostgreSQL, not {backend} ({url!r})")


def make_huey(url: str, run: Callable[[int], None]) -> tuple[Huey, Any]:
    """A huey instance over the store at ``url`` and its one task, which calls ``run(job_id)``
    in a worker. The server enqueues with it; a worker's consumer runs it."""
    huey = Huey(
        QUEUE,
        storage_class=Storage,
        database=peewee_database(url),
        create_tables=False,
        results=False,  # a job's result is in its row
        utc=True,
    )
    task = huey.task(name=TASK)(run)
    return huey, task
