"""writing assistant: users' documents and continuation adapters

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def _user() -> sa.Column:
    return sa.Column(
        "user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    )


def upgrade() -> None:
    op.create_table(
        "write_documents",
        sa.Column("id", sa.Integer, primary_key=True),
        _user(),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_write_documents_user_id", "write_documents", ["user_id"])
    op.create_table(
        "write_adapters",
        sa.Column("id", sa.Integer, primary_key=True),
        _user(),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("base", sa.String(200), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("path", sa.String(500), nullable=False),
        sa.Column("info", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("user_id", "name", name="uq_write_adapters_user_name"),
    )
    op.create_index("ix_write_adapters_user_id", "write_adapters", ["user_id"])


def downgrade() -> None:
    op.drop_index("ix_write_adapters_user_id", table_name="write_adapters")
    op.drop_table("write_adapters")
    op.drop_index("ix_write_documents_user_id", table_name="write_documents")
    op.drop_table("write_documents")
