"""customer-service app: the embedding model a knowledge base searches with

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("kbs") as batch:
        batch.add_column(sa.Column("encoder", sa.String(200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("kbs") as batch:
        batch.drop_column("encoder")
