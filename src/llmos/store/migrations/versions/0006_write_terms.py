"""writing assistant: users' spelling dictionaries

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "write_terms",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "user_id",
            sa.Integer,
            sa.ForeignKey("users.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("term", sa.String(200), nullable=False),
        sa.Column("right", sa.String(200), nullable=True),
        sa.UniqueConstraint("user_id", "term", name="uq_write_terms_user_term"),
    )
    op.create_index("ix_write_terms_user_id", "write_terms", ["user_id"])


def downgrade() -> None:
    op.drop_index("ix_write_terms_user_id", table_name="write_terms")
    op.drop_table("write_terms")
