"""background jobs: the jobs table, and the queue tables of huey's SQL storage

Revision ID: 0008
Revises: 0007

The ``huey_*`` tables are huey's ``SqlStorage`` models (huey 3.5, ``huey.contrib.sql_huey``)
under prefixed names (``llmos.jobs.queue`` renames them). They are created here rather than by
huey at first use: several worker processes starting at once on a new PostgreSQL database would
race on ``CREATE TABLE IF NOT EXISTS``, while migrations run one at a time under the store's
advisory lock.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("kind", sa.String(100), nullable=False),
        sa.Column("target", sa.String(200), nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("progress", sa.Float, nullable=False),
        sa.Column("message", sa.String(500), nullable=True),
        sa.Column("log", sa.JSON, nullable=False),
        sa.Column("result", sa.JSON, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("max_attempts", sa.Integer, nullable=False),
        sa.Column("cancel_requested", sa.Boolean, nullable=False),
        sa.Column("worker", sa.String(200), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_jobs_user_id", "jobs", ["user_id"])
    op.create_index("ix_jobs_status", "jobs", ["status"])
    # huey's SqlStorage models, column for column (peewee's CharField is VARCHAR(255)).
    op.create_table(
        "huey_task",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("queue", sa.String(255), nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Column("priority", sa.Float, nullable=False),
    )
    op.create_index("ix_huey_task_priority_id", "huey_task", [sa.text("priority DESC"), "id"])
    op.create_table(
        "huey_schedule",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("queue", sa.String(255), nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Column("timestamp", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_huey_schedule_queue_timestamp", "huey_schedule", ["queue", "timestamp"])
    op.create_table(
        "huey_kv",
        sa.Column("queue", sa.String(255), primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("value", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "huey_counter",
        sa.Column("queue", sa.String(255), primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("value", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    for table in ("huey_counter", "huey_kv", "huey_schedule", "huey_task"):
        op.drop_table(table)
    op.drop_index("ix_jobs_status", table_name="jobs")
    op.drop_index("ix_jobs_user_id", table_name="jobs")
    op.drop_table("jobs")
