"""support desk: public knowledge bases, their agents, conversations, turns, tickets

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("kbs") as batch:
        batch.add_column(sa.Column("public", sa.Boolean, nullable=False, server_default=sa.false()))
    op.create_table(
        "kb_agents",
        sa.Column(
            "kb_id", sa.Integer, sa.ForeignKey("kbs.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column(
            "user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
        ),
    )
    op.create_table(
        "support_conversations",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "customer_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("kb_id", sa.Integer, sa.ForeignKey("kbs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("state", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_support_conversations_customer_id", "support_conversations", ["customer_id"]
    )
    op.create_index("ix_support_conversations_kb_id", "support_conversations", ["kb_id"])
    op.create_table(
        "support_turns",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "conversation_id",
            sa.Integer,
            sa.ForeignKey("support_conversations.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("action", sa.String(20), nullable=True),
        sa.Column("trace", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_support_turns_conversation_id", "support_turns", ["conversation_id"])
    op.create_table(
        "support_tickets",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "conversation_id",
            sa.Integer,
            sa.ForeignKey("support_conversations.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("kb_id", sa.Integer, sa.ForeignKey("kbs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_support_tickets_conversation_id", "support_tickets", ["conversation_id"])
    op.create_index("ix_support_tickets_kb_id", "support_tickets", ["kb_id"])


def downgrade() -> None:
    for table in ("support_tickets", "support_turns", "support_conversations", "kb_agents"):
        op.drop_table(table)
    with op.batch_alter_table("kbs") as batch:
        batch.drop_column("public")
