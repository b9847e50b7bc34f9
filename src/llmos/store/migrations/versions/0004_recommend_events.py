"""recommendation app: the catalog an event's item belongs to

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("catalog", sa.String(100), nullable=True))
    op.create_index("ix_events_user_catalog", "events", ["user_id", "catalog"])


def downgrade() -> None:
    op.drop_index("ix_events_user_catalog", table_name="events")
    with op.batch_alter_table("events") as batch:
        batch.drop_column("catalog")
