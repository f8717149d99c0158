"""Webhook dead letters: when an outbox row died, and its call (for listing per tenant).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from callscribe.store.models import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("webhook_outbox") as batch:
        batch.add_column(sa.Column("dead_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("call_id", sa.String(64), nullable=True))
    op.create_index("ix_outbox_dead", "webhook_outbox", ["call_id", "dead_at"],
                    sqlite_where=sa.text("dead_at IS NOT NULL"), postgresql_where=sa.text("dead_at IS NOT NULL"))


def downgrade() -> None:
    op.drop_index("ix_outbox_dead", table_name="webhook_outbox")
    with op.batch_alter_table("webhook_outbox") as batch:
        batch.drop_column("call_id")
        batch.drop_column("dead_at")
