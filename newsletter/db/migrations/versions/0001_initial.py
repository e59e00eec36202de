"""Subscribers, sequences, enrollments, deliveries

Revision ID: 0001
Revises:
Create Date: 2026-11-25 13:06:32.798077
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import newsletter.db.models

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sequences",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("slug", sa.String(length=100), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("current_version_id", sa.Integer(), nullable=True),
        sa.Column("paused_at", newsletter.db.models.UtcDateTime(timezone=True), nullable=True),
        sa.Column("created_at", newsletter.db.models.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sequences")),
        sa.UniqueConstraint("slug", name=op.f("uq_sequences_slug")),
    )
    op.create_table(
        "subscribers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("first_name", sa.String(length=100), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=True),
        sa.Column("consent", sa.JSON(), nullable=False),
        sa.Column("created_at", newsletter.db.models.UtcDateTime(timezone=True), nullable=False),
        sa.Column("confirmed_at", newsletter.db.models.UtcDateTime(timezone=True), nullable=True),
        sa.Column(
            "unsubscribed_at", newsletter.db.models.UtcDateTime(timezone=True), nullable=True
        ),
        sa.Column("updated_at", newsletter.db.models.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subscribers")),
        sa.UniqueConstraint("email", name=op.f("uq_subscribers_email")),
    )
    op.create_table(
        "suppressions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("created_at", newsletter.db.models.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_suppressions")),
        sa.UniqueConstraint("email", name=op.f("uq_suppressions_email")),
    )
    op.create_table(
        "system_flags",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("until", newsletter.db.models.UtcDateTime(timezone=True), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("set_at", newsletter.db.models.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_system_flags")),
    )
    op.create_table(
        "enrollments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=False),
        sa.Column("sequence_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("last_sent_at", newsletter.db.models.UtcDateTime(timezone=True), nullable=False),
        sa.Column("next_check_at", newsletter.db.models.UtcDateTime(timezone=True), nullable=True),
        sa.Column("enrolled_at", newsletter.db.models.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["sequence_id"], ["sequences.id"], name=op.f("fk_enrollments_sequence_id_sequences")
        ),
        sa.ForeignKeyConstraint(
            ["subscriber_id"],
            ["subscribers.id"],
            name=op.f("fk_enrollments_subscriber_id_subscribers"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_enrollments")),
        sa.UniqueConstraint(
            "subscriber_id", "sequence_id", name=op.f("uq_enrollments_subscriber_id_sequence_id")
        ),
    )
    with op.batch_alter_table("enrollments", schema=None) as batch_op:
        batch_op.create_index("ix_enrollments_due", ["status", "next_check_at"], unique=False)

    op.create_table(
        "sequence_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sequence_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("created_at", newsletter.db.models.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["sequence_id"],
            ["sequences.id"],
            name=op.f("fk_sequence_versions_sequence_id_sequences"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sequence_versions")),
        sa.UniqueConstraint(
            "sequence_id", "number", name=op.f("uq_sequence_versions_sequence_id_number")
        ),
    )
    # sequences and sequence_versions point at each other: the second link comes last.
    with op.batch_alter_table("sequences") as batch_op:
        batch_op.create_foreign_key(
            op.f("fk_sequences_current_version_id_sequence_versions"),
            "sequence_versions",
            ["current_version_id"],
            ["id"],
        )
    op.create_table(
        "lessons",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=100), nullable=False),
        sa.Column("file_name", sa.String(length=200), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("preheader", sa.String(length=300), nullable=False),
        sa.Column("delay_s", sa.Integer(), nullable=False),
        sa.Column("send_at", sa.Time(), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("body_line", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["sequence_versions.id"],
            name=op.f("fk_lessons_version_id_sequence_versions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lessons")),
        sa.UniqueConstraint("version_id", "key", name=op.f("uq_lessons_version_id_key")),
        sa.UniqueConstraint("version_id", "position", name=op.f("uq_lessons_version_id_position")),
    )
    op.create_table(
        "deliveries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=False),
        sa.Column("sequence_id", sa.Integer(), nullable=True),
        sa.Column("lesson_id", sa.Integer(), nullable=True),
        sa.Column("lesson_key", sa.String(length=100), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("due_at", newsletter.db.models.UtcDateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.Column("message_id", sa.String(length=200), nullable=False),
        sa.Column("lease_until", newsletter.db.models.UtcDateTime(timezone=True), nullable=True),
        sa.Column("claimed_by", sa.String(length=100), nullable=True),
        sa.Column(
            "first_attempt_at", newsletter.db.models.UtcDateTime(timezone=True), nullable=True
        ),
        sa.Column("sent_at", newsletter.db.models.UtcDateTime(timezone=True), nullable=True),
        sa.Column("created_at", newsletter.db.models.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["lesson_id"], ["lessons.id"], name=op.f("fk_deliveries_lesson_id_lessons")
        ),
        sa.ForeignKeyConstraint(
            ["sequence_id"], ["sequences.id"], name=op.f("fk_deliveries_sequence_id_sequences")
        ),
        sa.ForeignKeyConstraint(
            ["subscriber_id"],
            ["subscribers.id"],
            name=op.f("fk_deliveries_subscriber_id_subscribers"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deliveries")),
        sa.UniqueConstraint(
            "subscriber_id",
            "sequence_id",
            "lesson_key",
            name=op.f("uq_deliveries_subscriber_id_sequence_id_lesson_key"),
        ),
    )
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.create_index("ix_deliveries_claim", ["status", "priority", "due_at"], unique=False)
        batch_op.create_index("ix_deliveries_sent_at", ["sent_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("sequences") as batch_op:
        batch_op.drop_constraint(
            op.f("fk_sequences_current_version_id_sequence_versions"), type_="foreignkey"
        )
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_deliveries_sent_at")
        batch_op.drop_index("ix_deliveries_claim")

    op.drop_table("deliveries")
    op.drop_table("lessons")
    op.drop_table("sequence_versions")
    with op.batch_alter_table("enrollments", schema=None) as batch_op:
        batch_op.drop_index("ix_enrollments_due")

    op.drop_table("enrollments")
    op.drop_table("system_flags")
    op.drop_table("suppressions")
    op.drop_table("subscribers")
    op.drop_table("sequences")
