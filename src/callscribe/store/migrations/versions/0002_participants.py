"""Participants: stream intervals, utterances and recordings are keyed by participant, not by role.

A call may have any number of participants (meeting attendees, one speaker of a task); `role` stays
as the participant's label. Existing rows were written when every participant was its role, so the
participant of each is its role.

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

_TABLES = ("stream_intervals", "utterances", "recordings")


def upgrade() -> None:
    for table in _TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("participant", sa.String(128), nullable=True))
        op.execute(f"UPDATE {table} SET participant = role")
        with op.batch_alter_table(table) as batch:
            batch.alter_column("participant", existing_type=sa.String(128), nullable=False)
            batch.alter_column("role", existing_type=sa.String(32), type_=sa.String(64))
    with op.batch_alter_table("stream_intervals") as batch:
        batch.add_column(sa.Column("participant_name", sa.String(255), nullable=True))
        batch.drop_constraint("uq_stream_intervals_call_stream_role", type_="unique")
        batch.create_unique_constraint("uq_stream_intervals_call_stream_participant",
                                       ["call_id", "stream_id", "participant"])
    with op.batch_alter_table("recordings") as batch:
        batch.drop_constraint("uq_recordings_call_stream_role", type_="unique")
        batch.create_unique_constraint("uq_recordings_call_stream_participant", ["call_id", "stream_id", "participant"])


def downgrade() -> None:
    with op.batch_alter_table("recordings") as batch:
        batch.drop_constraint("uq_recordings_call_stream_participant", type_="unique")
        batch.create_unique_constraint("uq_recordings_call_stream_role", ["call_id", "stream_id", "role"])
    with op.batch_alter_table("stream_intervals") as batch:
        batch.drop_constraint("uq_stream_intervals_call_stream_participant", type_="unique")
        batch.create_unique_constraint("uq_stream_intervals_call_stream_role", ["call_id", "stream_id", "role"])
        batch.drop_column("participant_name")
    for table in _TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("participant")
            batch.alter_column("role", existing_type=sa.String(64), type_=sa.String(32))
