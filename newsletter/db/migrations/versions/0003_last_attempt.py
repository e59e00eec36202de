"""When each delivery was last tried, for `newsletter sending status`

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import newsletter.db.models

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "last_attempt_at",
                newsletter.db.models.UtcDateTime(timezone=True),
                nullable=True,
            )
        )
        batch_op.create_index("ix_deliveries_last_attempt_at", ["last_attempt_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_deliveries_last_attempt_at")
        batch_op.drop_column("last_attempt_at")
