"""The tables. Constraints hold the invariants (one delivery per subscriber and lesson),
so they stay true whatever process, host or crash is involved."""

from __future__ import annotations

from datetime import UTC, datetime, time
from enum import StrEnum
from typing import Any, ClassVar, cast

from sqlalchemy import (
    JSON,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    Time,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on SQLite (which keeps no zone) too."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UtcDateTime(),
        dict[str, Any]: JSON(),
    }


class SubscriberStatus(StrEnum):
    PENDING = "pending"
    CONFIRMED = "confirmed"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"
    COMPLAINED = "complained"


class SequenceStatus(StrEnum):
    LIVE = "live"
    PAUSED = "paused"
    ARCHIVED = "archived"


class EnrollmentStatus(StrEnum):
    ACTIVE = "active"
    COMPLETED = "completed"
    STOPPED = "stopped"  #: paused, unsubscribed, bounced, or removed from the sequence
    LEFT = "left"  #: the subscriber left this course (and may stay on others)


class DeliveryStatus(StrEnum):
    #: Waiting for due_at: a first try, or a retry (attempts > 0, last_error says why).
    QUEUED = "queued"
    SENDING = "sending"  #: claimed by a worker until lease_until
    SENT = "sent"
    FAILED = "failed"
    CANCELLED = "cancelled"  #: the recipient left before it went out


class DeliveryKind(StrEnum):
    LESSON = "lesson"
    #: The double opt-in email: transactional, sent while the subscriber is still pending.
    CONFIRMATION = "confirmation"
    BROADCAST = "broadcast"  #: an issue of the newsletter (a broadcast)


class BroadcastStatus(StrEnum):
    ENQUEUEING = "enqueueing"  #: its audience is being queued (a crash here: send it again)
    SENDING = "sending"
    PAUSED = "paused"
    CANCELLED = "cancelled"  #: what was not sent yet never will be


class Priority:
    TRANSACTIONAL = 0  #: opt-in confirmations go out ahead of bulk mail
    BULK = 10
    #: The order in which the dispatcher takes them.
    ORDER = (TRANSACTIONAL, BULK)


class Subscriber(Base):
    __tablename__ = "subscribers"

    id: Mapped[int] = mapped_column(primary_key=True)
    #: Normalised (lower-cased domain, trimmed); unique.
    email: Mapped[str] = mapped_column(String(320), unique=True)
    first_name: Mapped[str] = mapped_column(String(100), default="")
    status: Mapped[str] = mapped_column(String(16), default=SubscriberStatus.PENDING)
    #: IANA zone; None: the configured default.
    timezone: Mapped[str | None] = mapped_column(String(64))
    #: How and when consent was given: form, text and its version, time, IP, user agent.
    consent: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime]
    confirmed_at: Mapped[datetime | None]
    unsubscribed_at: Mapped[datetime | None]
    updated_at: Mapped[datetime]


class SubscriberTag(Base):
    """A label on a subscriber (newsletter.segments): set by an admin, an import or a
    course's signup form, and read by segments."""

    __tablename__ = "subscriber_tags"
    __table_args__ = (
        UniqueConstraint("subscriber_id", "tag"),
        Index("ix_subscriber_tags_tag", "tag"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"))
    tag: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]


class Suppression(Base):
    """Addresses never to be mailed again, whatever else the database says."""

    __tablename__ = "suppressions"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    reason: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime]


class Sequence(Base):
    __tablename__ = "sequences"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(100), unique=True)
    status: Mapped[str] = mapped_column(String(16), default=SequenceStatus.LIVE)
    current_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("sequence_versions.id", use_alter=True)
    )
    #: Sends of a paused sequence wait; on resume they continue from here (see docs).
    paused_at: Mapped[datetime | None]
    created_at: Mapped[datetime]

    current_version: Mapped[SequenceVersion | None] = relationship(
        foreign_keys=[current_version_id], lazy="raise"
    )


class SequenceVersion(Base):
    """A snapshot of the course files as queued: what was queued is what is sent."""

    __tablename__ = "sequence_versions"
    __table_args__ = (UniqueConstraint("sequence_id", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    sequence_id: Mapped[int] = mapped_column(ForeignKey("sequences.id"))
    number: Mapped[int]
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(Text)  #: the folder it was read from
    #: Who the course speaks as (content.identity.CourseIdentity.to_json()): sender,
    #: footer note, consent sentence and its version, list name and id, language.
    identity: Mapped[dict[str, Any]] = mapped_column(default=dict)
    #: The course's own email templates, by name (its templates/ folder); {} for none.
    templates: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime]

    lessons: Mapped[list[LessonSnapshot]] = relationship(
        order_by="LessonSnapshot.position", lazy="raise"
    )


class LessonSnapshot(Base):
    __tablename__ = "lessons"
    __table_args__ = (
        UniqueConstraint("version_id", "position"),
        UniqueConstraint("version_id", "key"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("sequence_versions.id"))
    position: Mapped[int]  #: 1-based
    #: Identity across versions (the file name without its number).
    key: Mapped[str] = mapped_column(String(100))
    file_name: Mapped[str] = mapped_column(String(200))
    subject: Mapped[str] = mapped_column(String(200))
    preheader: Mapped[str] = mapped_column(String(300))
    delay_s: Mapped[int]
    send_at: Mapped[time | None] = mapped_column(Time)
    body: Mapped[str] = mapped_column(Text)
    body_line: Mapped[int]


class Enrollment(Base):
    """A subscriber's progress through one sequence.

    The planner only looks at rows with next_check_at <= now: its cost follows the number
    of subscribers due, not the number enrolled."""

    __tablename__ = "enrollments"
    __table_args__ = (
        UniqueConstraint("subscriber_id", "sequence_id"),
        Index("ix_enrollments_due", "status", "next_check_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id"))
    sequence_id: Mapped[int] = mapped_column(ForeignKey("sequences.id"))
    status: Mapped[str] = mapped_column(String(16), default=EnrollmentStatus.ACTIVE)
    #: When the previous lesson went out (for the first lesson: when they enrolled).
    last_sent_at: Mapped[datetime]
    #: When the planner should look at this row next; None while a lesson is in flight.
    next_check_at: Mapped[datetime | None]
    enrolled_at: Mapped[datetime]


class Delivery(Base):
    """The outbox: one row per email. Unique per (subscriber, sequence, lesson key), which
    makes "never the same lesson twice" a database guarantee rather than a hope."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("subscriber_id", "sequence_id", "lesson_key"),
        #: One delivery per broadcast and subscriber, whatever is run again or crashes.
        UniqueConstraint("broadcast_id", "subscriber_id"),
        Index("ix_deliveries_claim", "status", "priority", "due_at"),
        Index("ix_deliveries_sent_at", "sent_at"),
        Index("ix_deliveries_last_attempt_at", "last_attempt_at"),
        #: A complaint names the message it is about by its Message-ID.
        Index("ix_deliveries_message_id", "message_id"),
        # Ids are never reused, also on SQLite once the newest rows were deleted (an erased
        # subscriber): a late bounce names its delivery by id (VERP).
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id"))
    sequence_id: Mapped[int | None] = mapped_column(ForeignKey("sequences.id"))
    lesson_id: Mapped[int | None] = mapped_column(ForeignKey("lessons.id"))
    broadcast_id: Mapped[int | None] = mapped_column(ForeignKey("broadcasts.id"))
    lesson_key: Mapped[str | None] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(16), default=DeliveryKind.LESSON)
    priority: Mapped[int] = mapped_column(Integer, default=Priority.BULK)
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.QUEUED)
    due_at: Mapped[datetime]
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str] = mapped_column(Text, default="")
    #: Chosen when the row is created and kept across retries.
    message_id: Mapped[str] = mapped_column(String(200))
    lease_until: Mapped[datetime | None]
    claimed_by: Mapped[str | None] = mapped_column(String(100))
    #: Wall-clock times: when the first try began (retries give up counting from it), when
    #: the latest try ended, when the relay accepted the message.
    first_attempt_at: Mapped[datetime | None]
    last_attempt_at: Mapped[datetime | None]
    sent_at: Mapped[datetime | None]
    created_at: Mapped[datetime]


class Broadcast(Base):
    """One newsletter issue and who it goes to. Its audience is fixed when the send starts:
    subscribers who joined later never get it (started_at is the cut)."""

    __tablename__ = "broadcasts"

    id: Mapped[int] = mapped_column(primary_key=True)
    #: The file name without ".md": sending that file again resumes this send.
    key: Mapped[str] = mapped_column(String(200), unique=True)
    #: Of the file as sent: a different file of the same name is refused.
    fingerprint: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(200))
    preheader: Mapped[str] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text)
    body_line: Mapped[int]
    source: Mapped[str] = mapped_column(Text)
    segment: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default=BroadcastStatus.ENQUEUEING)
    #: When its copies are due; with local_send_at, the earliest any can be
    #: (broadcasts.first_due_at).
    due_at: Mapped[datetime]
    started_at: Mapped[datetime]
    #: When its whole audience was queued; None while that is under way (or was cut off).
    enqueued_at: Mapped[datetime | None]
    audience: Mapped[int] = mapped_column(default=0)  #: how many were queued, in the end
    #: Its own daily cap per person, over `[sending] max_per_subscriber_per_day`; None: that.
    max_per_day: Mapped[int | None]
    #: A wall time (no zone) at which each subscriber's copy is due in their own time zone;
    #: None: everyone's at due_at.
    local_send_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=False))
    #: Why it is paused ("" when an admin paused it, or it is not paused).
    pause_reason: Mapped[str] = mapped_column(Text, default="")


class SystemFlag(Base):
    """Shared switches every worker reads: sending paused after the relay refused us, the
    relay's circuit open. `until` is wall-clock time; None: until someone clears it."""

    __tablename__ = "system_flags"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    until: Mapped[datetime | None]
    reason: Mapped[str] = mapped_column(Text, default="")
    set_at: Mapped[datetime]


class MailEventKind(StrEnum):
    """What came back about the mail we sent (newsletter.inbound.reports)."""

    HARD_BOUNCE = "hard_bounce"
    SOFT_BOUNCE = "soft_bounce"
    POLICY_BOUNCE = "policy_bounce"  #: about us (5.7.x), never held against the subscriber
    DELAYED = "delayed"
    COMPLAINT = "complaint"
    UNSUBSCRIBE = "unsubscribe"


class MailEvent(Base):
    """One bounce, complaint or mailto unsubscribe, as received, and what it led to.
    Unique by fingerprint: the same report received twice counts once."""

    __tablename__ = "mail_events"
    __table_args__ = (
        Index("ix_mail_events_email_kind", "email", "kind", "received_at"),
        Index("ix_mail_events_sequence_kind", "sequence_id", "kind", "received_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    #: How it arrived: smtp (the receiver), file (`inbound read`), or a webhook's name.
    source: Mapped[str] = mapped_column(String(16))
    #: The address it is about, as the delivery named it (VERP) or the report said.
    email: Mapped[str | None] = mapped_column(String(320))
    #: Plain integers, not foreign keys: the record outlives an erased subscriber.
    subscriber_id: Mapped[int | None] = mapped_column(Integer, index=True)
    delivery_id: Mapped[int | None] = mapped_column(Integer)
    sequence_id: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="")  #: RFC 3463, e.g. 5.1.1
    reason: Mapped[str] = mapped_column(Text, default="")  #: the remote server's words
    #: What it led to, in words: "suppressed", "counted (2 of 3)", "not ours", ...
    outcome: Mapped[str] = mapped_column(Text, default="")
    received_at: Mapped[datetime]


# The Core tables behind the models, for bulk statements (executemany) and statements on
# hot paths, which bypass the ORM.
deliveries_table = cast(Table, Delivery.__table__)
enrollments_table = cast(Table, Enrollment.__table__)
subscribers_table = cast(Table, Subscriber.__table__)
suppressions_table = cast(Table, Suppression.__table__)
