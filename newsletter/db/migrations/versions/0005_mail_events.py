"""Bounces, complaints and mailto unsubscribes as they come back; deliveries findable by
their Message-ID, and their ids never reused on SQLite

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 14:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import newsletter.db.models

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mail_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("subscriber_id", sa.Integer(), nullable=True),
        sa.Column("delivery_id", sa.Integer(), nullable=True),
        sa.Column("sequence_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.Column("received_at", newsletter.db.models.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mail_events")),
        sa.UniqueConstraint("fingerprint", name=op.f("uq_mail_events_fingerprint")),
    )
    op.create_index("ix_mail_events_email_kind", "mail_events", ["email", "kind", "received_at"])
    op.create_index(
        "ix_mail_events_sequence_kind", "mail_events", ["sequence_id", "kind", "received_at"]
    )
    op.create_index(op.f("ix_mail_events_subscriber_id"), "mail_events", ["subscriber_id"])
    # On SQLite the table is rebuilt with AUTOINCREMENT, so that the id of a deleted
    # delivery is never given to another: a late bounce names its delivery by id (VERP).
    with op.batch_alter_table(
        "deliveries",
        schema=None,
        recreate="always" if op.get_bind().dialect.name == "sqlite" else "auto",
        table_kwargs={"sqlite_autoincrement": True},
    ) as batch_op:
        batch_op.create_index("ix_deliveries_message_id", ["message_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_deliveries_message_id")
    op.drop_index(op.f("ix_mail_events_subscriber_id"), table_name="mail_events")
    op.drop_index("ix_mail_events_sequence_kind", table_name="mail_events")
    op.drop_index("ix_mail_events_email_kind", table_name="mail_events")
    op.drop_table("mail_events")
