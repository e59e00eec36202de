"""Newsletter issues (broadcasts), at most one delivery each per subscriber

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 15:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import newsletter.db.models

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "broadcasts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("preheader", sa.String(length=300), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("body_line", sa.Integer(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("segment", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("due_at", newsletter.db.models.UtcDateTime(timezone=True), nullable=False),
        sa.Column("started_at", newsletter.db.models.UtcDateTime(timezone=True), nullable=False),
        sa.Column("enqueued_at", newsletter.db.models.UtcDateTime(timezone=True), nullable=True),
        sa.Column("audience", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_broadcasts")),
        sa.UniqueConstraint("key", name=op.f("uq_broadcasts_key")),
    )
    with op.batch_alter_table(
        "deliveries", schema=None, table_kwargs={"sqlite_autoincrement": True}
    ) as batch_op:
        batch_op.add_column(sa.Column("broadcast_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_deliveries_broadcast_id_broadcasts"),
            "broadcasts",
            ["broadcast_id"],
            ["id"],
        )
        batch_op.create_unique_constraint(
            batch_op.f("uq_deliveries_broadcast_id_subscriber_id"),
            ["broadcast_id", "subscriber_id"],
        )


def downgrade() -> None:
    with op.batch_alter_table(
        "deliveries", schema=None, table_kwargs={"sqlite_autoincrement": True}
    ) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("uq_deliveries_broadcast_id_subscriber_id"), type_="unique"
        )
        batch_op.drop_constraint(
            batch_op.f("fk_deliveries_broadcast_id_broadcasts"), type_="foreignkey"
        )
        batch_op.drop_column("broadcast_id")
    op.drop_table("broadcasts")
