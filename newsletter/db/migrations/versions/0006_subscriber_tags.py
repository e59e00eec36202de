"""Tags on subscribers, for segments

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 15:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import newsletter.db.models

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "subscriber_tags",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=False),
        sa.Column("tag", sa.String(length=64), nullable=False),
        sa.Column("created_at", newsletter.db.models.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["subscriber_id"],
            ["subscribers.id"],
            name=op.f("fk_subscriber_tags_subscriber_id_subscribers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subscriber_tags")),
        sa.UniqueConstraint(
            "subscriber_id", "tag", name=op.f("uq_subscriber_tags_subscriber_id_tag")
        ),
    )
    op.create_index("ix_subscriber_tags_tag", "subscriber_tags", ["tag"])


def downgrade() -> None:
    op.drop_index("ix_subscriber_tags_tag", table_name="subscriber_tags")
    op.drop_table("subscriber_tags")
