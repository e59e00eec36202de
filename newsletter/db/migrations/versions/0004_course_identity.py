"""Each queued course version keeps who it speaks as (sender, footer note, consent
sentence, list name, language) and its own email templates

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

#: What every course said before course.toml could say it: the versions queued until now
#: were sent with this footer and signed up with this consent sentence (version 2026-11-1),
#: from config.toml's [sender].
LEGACY_IDENTITY = {
    "footer_note": (
        "This course shares general information, not medical advice. Please talk to your "
        "own doctor before making decisions about treatment."
    ),
    "consent_text": (
        "Send me this free email course, one lesson every few days. "
        "I can stop it at any time with the link at the foot of every email."
    ),
    "consent_version": "2026-11-1",
}


def upgrade() -> None:
    with op.batch_alter_table("sequence_versions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("identity", sa.JSON(), nullable=False, server_default=sa.text("'{}'"))
        )
        batch_op.add_column(
            sa.Column("templates", sa.JSON(), nullable=False, server_default=sa.text("'{}'"))
        )
    versions = sa.table("sequence_versions", sa.column("identity", sa.JSON()))
    op.execute(versions.update().values(identity=LEGACY_IDENTITY))


def downgrade() -> None:
    with op.batch_alter_table("sequence_versions", schema=None) as batch_op:
        batch_op.drop_column("templates")
        batch_op.drop_column("identity")
