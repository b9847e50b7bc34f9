"""knowledge bases and their FAQ entries (customer-service app)

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "kbs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "owner_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("owner_id", "name", name="uq_kbs_owner_name"),
    )
    op.create_index("ix_kbs_owner_id", "kbs", ["owner_id"])
    op.create_table(
        "kb_entries",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("kb_id", sa.Integer, sa.ForeignKey("kbs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("question", sa.Text, nullable=False),
        sa.Column("answer", sa.Text, nullable=False),
        sa.Column("alternatives", sa.JSON, nullable=False),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_kb_entries_kb_id", "kb_entries", ["kb_id"])


def downgrade() -> None:
    op.drop_table("kb_entries")
    op.drop_table("kbs")
