"""Signing up on the web: double opt-in, confirming, leaving, preferences, and the purge of
addresses that never confirmed. The web app calls these; they know nothing of HTTP."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from functools import cache
from typing import Any

from sqlalchemy import bindparam, case, delete, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.dml import Insert

from newsletter.db import queries
from newsletter.db.models import (
    Delivery,
    DeliveryKind,
    DeliveryStatus,
    Enrollment,
    EnrollmentStatus,
    Sequence,
    SequenceStatus,
    Subscriber,
    SubscriberStatus,
    subscribers_table,
    suppressions_table,
)
from newsletter.db.web_models import SignupAttempt, signup_attempts_table
from newsletter.render import clean_name, make_message_id
from newsletter.subscribers import forget, unsubscribe

#: The sentence shown next to every signup button, kept by version in each consent record:
#: a new wording gets a new version, and old versions stay here so records can be read.
CONSENT_VERSION = "2026-11-1"
CONSENT_TEXTS: dict[str, str] = {
    CONSENT_VERSION: (
        "Send me this free email course, one lesson every few days. "
        "I can stop it at any time with the link at the foot of every email."
    ),
}
CONSENT_TEXT = CONSENT_TEXTS[CONSENT_VERSION]

# Defaults of the [signup] settings in config.toml.
#: At most one confirmation email per address in this window, however often it is typed
#: in: the form cannot be used to flood someone's inbox.
CONFIRMATION_INTERVAL = timedelta(minutes=10)
#: And at most this many a day, whichever clients typed it in.
CONFIRMATIONS_PER_DAY = 3
CONFIRMATION_DAY = timedelta(days=1)
#: Accepted signups per client (IP address) per window, across every web worker.
SIGNUPS_PER_CLIENT = 20
SIGNUP_WINDOW = timedelta(hours=1)
#: Pending addresses older than this are deleted; as long as the confirmation link lives.
PENDING_MAX_AGE = timedelta(days=7)
#: Whether consent records keep the IP address the signup came from.
STORE_IP = True
USER_AGENT_LENGTH = 300


@dataclass(frozen=True, slots=True)
class SignupRequest:
    """A signup form, validated: what a person asked for."""

    email: str  #: normalised
    first_name: str = ""  #: cleaned of control characters
    timezone: str | None = None  #: a known IANA name, or None for the default
    form: str = "signup-page"  #: which form it came from, for the consent record
    consent_version: str = CONSENT_VERSION


@dataclass(frozen=True, slots=True)
class Visitor:
    """Who sent a request, as far as a consent record needs to know."""

    ip: str | None
    user_agent: str = ""


class SignupOutcome(StrEnum):
    """What a signup did. Never shown to the person: every outcome gets the same page."""

    QUEUED = "queued"  #: a confirmation email is on its way
    RECENTLY_SENT = "recently_sent"  #: one went out within CONFIRMATION_INTERVAL
    DAILY_LIMIT = "daily_limit"  #: CONFIRMATIONS_PER_DAY went out in the last 24 hours
    ALREADY_CONFIRMED = "already_confirmed"
    BLOCKED = "blocked"  #: bounced, complained or suppressed: never mailed again
    NO_COURSE = "no_course"  #: nothing to sign up for


class ConfirmOutcome(StrEnum):
    CONFIRMED = "confirmed"
    ALREADY_CONFIRMED = "already_confirmed"
    LEFT = "left"  #: unsubscribed or bounced since; they may sign up again
    UNKNOWN = "unknown"  #: purged or deleted


class CourseState(StrEnum):
    """A subscriber's course as the preferences page shows it."""

    ACTIVE = "active"
    PAUSED = "paused"
    COMPLETED = "completed"
    NONE = "none"


#: An IPv6 client is counted by its /64: one home or phone gets a whole /64 and may use
#: any address in it, so counting single addresses would let it sign up without limit.
IPV6_CLIENT_PREFIX = 64


def client_key(secret: str, ip: str) -> str:
    """A keyed hash of a client's address (for IPv6, of its /64): counts signups without
    keeping the address."""
    return hmac.new(secret.encode(), client_network(ip).encode(), hashlib.sha256).hexdigest()[:32]


def client_network(ip: str) -> str:
    """What the per-client limit counts: the address, or for IPv6 its /64; text that is
    not an address (a test client, a Unix socket) as it is."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(address), IPV6_CLIENT_PREFIX), strict=False))
    return str(address)


def consent_record(request: SignupRequest, visitor: Visitor, now: datetime) -> dict[str, Any]:
    version = request.consent_version if request.consent_version in CONSENT_TEXTS else None
    version = version or CONSENT_VERSION
    return {
        "form": request.form,
        "text": CONSENT_TEXTS[version],
        "version": version,
        "given_at": now.isoformat(),
        "ip": visitor.ip,
        "user_agent": clean_user_agent(visitor.user_agent),
    }


def clean_user_agent(text: str) -> str:
    return clean_name(text[: USER_AGENT_LENGTH * 2])[:USER_AGENT_LENGTH]


# --- signing up --------------------------------------------------------------------------


async def course_sequence(session: AsyncSession, slug: str | None) -> Sequence | None:
    """The course the site signs people up for: the named one, else the oldest live one.
    Only a live course takes signups: a paused one would hold its confirmation emails."""
    query = (
        select(Sequence)
        .where(Sequence.status == SequenceStatus.LIVE)
        .where(Sequence.current_version_id.is_not(None))
    )
    query = query.where(Sequence.slug == slug) if slug else query.order_by(Sequence.id)
    return await session.scalar(query.limit(1))


def _take_slot_statement() -> Insert:
    attempts = signup_attempts_table.c
    recent = (
        select(func.count())
        .where(attempts.client_key == bindparam("client"))
        .where(attempts.created_at > bindparam("since", type_=attempts.created_at.type))
        .scalar_subquery()
    )
    return (
        insert(signup_attempts_table)
        .from_select(
            ["client_key", "created_at"],
            select(
                bindparam("client", type_=attempts.client_key.type),
                bindparam("now", type_=attempts.created_at.type),
            ).where(recent < bindparam("limit")),
        )
        # RETURNING rather than the row count, which psycopg does not report here.
        .returning(attempts.id)
    )


# Statements on the signup path are built once, with bound parameters, rather than on every
# request: SQLAlchemy would build and hash each one again before finding it compiled.
_TAKE_SLOT = _take_slot_statement()
_CLIENT_TURN = text("SELECT pg_advisory_xact_lock(hashtextextended(:client, 0))")


async def take_signup_slot(
    session: AsyncSession, client: str, now: datetime, limit: int = SIGNUPS_PER_CLIENT
) -> bool:
    """Count this signup against its client's limit, unless the limit is reached: then
    nothing is recorded and the answer is False. The count and the record are one
    statement; on PostgreSQL, where transactions run side by side and would each count
    without the others' new rows, signups from one client also take turns (a lock on its
    key until commit). SQLite runs one writer at a time anyway."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(_CLIENT_TURN, {"client": client})
    params = {"client": client, "now": now, "since": now - SIGNUP_WINDOW, "limit": limit}
    return await session.scalar(_TAKE_SLOT, params) is not None


async def subscribe(
    session: AsyncSession,
    request: SignupRequest,
    visitor: Visitor,
    *,
    sequence_id: int,
    sender_domain: str,
    now: datetime,
    confirmation_interval: timedelta = CONFIRMATION_INTERVAL,
    confirmations_per_day: int = CONFIRMATIONS_PER_DAY,
) -> SignupOutcome:
    """A pending subscriber and their confirmation email, or nothing if that would mail
    someone who left for good or flood an inbox. The caller shows the same page whatever
    this returns, so nobody learns who is subscribed."""
    consent = consent_record(request, visitor, now)
    subscriber_id = await _insert_newcomer(session, request, consent, now)
    if subscriber_id is None:
        outcome = await _sign_up_again(
            session, request, consent, now, confirmation_interval, confirmations_per_day
        )
        if not isinstance(outcome, int):
            return outcome
        subscriber_id = outcome
    await queries.queue_confirmation(
        session, subscriber_id, sequence_id, make_message_id(sender_domain), now
    )
    return SignupOutcome.QUEUED


_NEWCOMER_COLUMNS = ("email", "first_name", "timezone", "status", "consent")


@cache
def _insert_newcomer_statement(dialect: str) -> Insert:
    subscribers = subscribers_table.c
    suppressed = select(suppressions_table.c.id).where(
        suppressions_table.c.email == bindparam("email")
    )
    now = bindparam("now", type_=subscribers.created_at.type)
    newcomer = select(
        *(bindparam(name, type_=subscribers[name].type) for name in _NEWCOMER_COLUMNS),
        now,
        now,
    ).where(~suppressed.exists())
    statement: Insert = (
        queries.insert_ignoring_duplicates(dialect, subscribers_table)
        .from_select([*_NEWCOMER_COLUMNS, "created_at", "updated_at"], newcomer)
        .returning(subscribers.id)
    )
    return statement


async def _insert_newcomer(
    session: AsyncSession, request: SignupRequest, consent: dict[str, Any], now: datetime
) -> int | None:
    """The common case in one statement: a new, unsuppressed address becomes a pending
    subscriber. None if the address is known or suppressed; nothing is written then.
    On PostgreSQL a simultaneous signup for the same address waits for the other one and
    then finds its row, instead of failing on the unique email."""
    statement = _insert_newcomer_statement(session.get_bind().dialect.name)
    params = {
        "email": request.email,
        "first_name": request.first_name,
        "timezone": request.timezone,
        "status": SubscriberStatus.PENDING,
        "consent": consent,
        "now": now,
    }
    subscriber_id: int | None = await session.scalar(statement, params)
    return subscriber_id


async def _sign_up_again(
    session: AsyncSession,
    request: SignupRequest,
    consent: dict[str, Any],
    now: datetime,
    confirmation_interval: timedelta,
    confirmations_per_day: int,
) -> int | SignupOutcome:
    """A known or suppressed address: the subscriber's id if they get a new confirmation
    email, else why not."""
    if await queries.is_suppressed(session, request.email):
        return SignupOutcome.BLOCKED
    # Locked (on PostgreSQL) until commit: a second signup for the address waits, then
    # sees the confirmation this one queues, and the interval and the daily cap hold.
    subscriber = await queries.subscriber_by_email(session, request.email, lock=True)
    if subscriber is None:  # deleted since _insert_newcomer looked
        return SignupOutcome.BLOCKED
    if subscriber.status == SubscriberStatus.CONFIRMED:
        return SignupOutcome.ALREADY_CONFIRMED
    if subscriber.status not in (SubscriberStatus.PENDING, SubscriberStatus.UNSUBSCRIBED):
        return SignupOutcome.BLOCKED
    last, today = await _recent_confirmations(session, subscriber.id, now - CONFIRMATION_DAY)
    if last is not None and now - last < confirmation_interval:
        return SignupOutcome.RECENTLY_SENT
    if today >= confirmations_per_day:
        return SignupOutcome.DAILY_LIMIT
    # Someone who left may come back, through the same double opt-in as a newcomer.
    subscriber.status = SubscriberStatus.PENDING
    subscriber.first_name = request.first_name
    subscriber.timezone = request.timezone
    subscriber.consent = consent
    subscriber.updated_at = now
    return subscriber.id


async def _recent_confirmations(
    session: AsyncSession, subscriber_id: int, since: datetime
) -> tuple[datetime | None, int]:
    """When the subscriber's last confirmation email was queued, and how many were since
    `since`: one look at their confirmation deliveries."""
    since_param = bindparam("since", since, type_=Delivery.created_at.type)
    row = (
        await session.execute(
            select(
                func.max(Delivery.created_at),
                func.count(case((Delivery.created_at > since_param, 1))),
            )
            .where(Delivery.subscriber_id == subscriber_id)
            .where(Delivery.kind == DeliveryKind.CONFIRMATION)
        )
    ).one()
    return row[0], int(row[1])


async def confirm(
    session: AsyncSession,
    subscriber_id: int,
    visitor: Visitor,
    *,
    fallback_sequence_id: int | None,
    now: datetime,
) -> ConfirmOutcome:
    """Pending -> confirmed, with the confirmation added to the consent record, and
    enrolled in the course they signed up for; lesson 1 then follows by the schedule."""
    subscriber = await session.get(Subscriber, subscriber_id)
    if subscriber is None:
        return ConfirmOutcome.UNKNOWN
    if subscriber.status == SubscriberStatus.CONFIRMED:
        return ConfirmOutcome.ALREADY_CONFIRMED
    if subscriber.status != SubscriberStatus.PENDING:
        return ConfirmOutcome.LEFT
    subscriber.status = SubscriberStatus.CONFIRMED
    subscriber.confirmed_at = now
    subscriber.updated_at = now
    subscriber.consent = subscriber.consent | {
        "confirmed_at": now.isoformat(),
        "confirmed_ip": visitor.ip,
        "confirmed_user_agent": clean_user_agent(visitor.user_agent),
    }
    sequence_id = await session.scalar(
        select(Delivery.sequence_id)
        .where(Delivery.subscriber_id == subscriber_id)
        .where(Delivery.kind == DeliveryKind.CONFIRMATION)
        .order_by(Delivery.id.desc())
        .limit(1)
    )
    sequence_id = sequence_id or fallback_sequence_id
    if sequence_id is not None:
        await start_course(session, subscriber_id, sequence_id, now)
    return ConfirmOutcome.CONFIRMED


async def start_course(
    session: AsyncSession, subscriber_id: int, sequence_id: int, now: datetime
) -> None:
    """Enroll, or restart a stopped enrollment where it left off (someone who paused, or
    left and came back): the planner sends the next lesson they have not had."""
    restarted = await session.execute(
        update(Enrollment)
        .where(Enrollment.subscriber_id == subscriber_id)
        .where(Enrollment.sequence_id == sequence_id)
        .where(Enrollment.status == EnrollmentStatus.STOPPED)
        .values(status=EnrollmentStatus.ACTIVE, next_check_at=now)
    )
    if not restarted.rowcount:  # type: ignore[attr-defined]
        await queries.enroll(session, subscriber_id, sequence_id, now)


# --- leaving and preferences ------------------------------------------------------------


async def leave(session: AsyncSession, subscriber_id: int, now: datetime) -> None:
    """Unsubscribe at once; a second time, or for someone already deleted, does nothing.
    Mail already queued is cancelled by the dispatcher, which checks status at send time."""
    subscriber = await session.get(Subscriber, subscriber_id)
    if subscriber is not None:
        await unsubscribe(session, subscriber, now)


async def course_state(session: AsyncSession, subscriber_id: int) -> CourseState:
    statuses = set(
        await session.scalars(
            select(Enrollment.status).where(Enrollment.subscriber_id == subscriber_id)
        )
    )
    if EnrollmentStatus.ACTIVE in statuses:
        return CourseState.ACTIVE
    if EnrollmentStatus.STOPPED in statuses:
        return CourseState.PAUSED
    if EnrollmentStatus.COMPLETED in statuses:
        return CourseState.COMPLETED
    return CourseState.NONE


async def pause_course(session: AsyncSession, subscriber_id: int) -> None:
    """No more lessons until resumed, including one queued but not yet sent: its row goes,
    so that on resume the planner queues it afresh (a delivery is unique per lesson)."""
    await queries.stop_enrollments(session, [subscriber_id])
    await session.execute(
        delete(Delivery)
        .where(Delivery.subscriber_id == subscriber_id)
        .where(Delivery.kind == DeliveryKind.LESSON)
        .where(Delivery.status == DeliveryStatus.QUEUED)
    )


async def resume_course(session: AsyncSession, subscriber_id: int, now: datetime) -> None:
    """Only a confirmed subscriber's stopped courses restart; the next lesson is due at
    once if its delay has passed during the pause, then the rest follow their delays."""
    subscriber = await session.get(Subscriber, subscriber_id)
    if subscriber is None or subscriber.status != SubscriberStatus.CONFIRMED:
        return
    stopped = await session.scalars(
        select(Enrollment.sequence_id)
        .where(Enrollment.subscriber_id == subscriber_id)
        .where(Enrollment.status == EnrollmentStatus.STOPPED)
    )
    for sequence_id in list(stopped):
        await start_course(session, subscriber_id, sequence_id, now)


async def set_timezone(
    session: AsyncSession, subscriber_id: int, timezone: str | None, now: datetime
) -> None:
    subscriber = await session.get(Subscriber, subscriber_id)
    if subscriber is not None:
        subscriber.timezone = timezone
        subscriber.updated_at = now


async def delete_subscriber(session: AsyncSession, subscriber_id: int) -> None:
    subscriber = await session.get(Subscriber, subscriber_id)
    if subscriber is not None:
        await forget(session, subscriber)


async def export_data(
    session: AsyncSession, subscriber_id: int, now: datetime
) -> dict[str, Any] | None:
    """Everything held about one subscriber, as JSON-ready values (GDPR art. 15 and 20)."""
    subscriber = await session.get(Subscriber, subscriber_id)
    if subscriber is None:
        return None
    slugs: dict[int, str] = {
        row.id: row.slug for row in await session.execute(select(Sequence.id, Sequence.slug))
    }
    enrollments = await session.scalars(
        select(Enrollment).where(Enrollment.subscriber_id == subscriber_id).order_by(Enrollment.id)
    )
    deliveries = await session.scalars(
        select(Delivery).where(Delivery.subscriber_id == subscriber_id).order_by(Delivery.id)
    )
    return {
        "exported_at": now.isoformat(),
        "subscriber": {
            "email": subscriber.email,
            "first_name": subscriber.first_name,
            "timezone": subscriber.timezone,
            "status": subscriber.status,
            "created_at": _iso(subscriber.created_at),
            "confirmed_at": _iso(subscriber.confirmed_at),
            "unsubscribed_at": _iso(subscriber.unsubscribed_at),
            "updated_at": _iso(subscriber.updated_at),
        },
        "consent": subscriber.consent,
        "courses": [
            {
                "course": slugs.get(row.sequence_id),
                "status": row.status,
                "enrolled_at": _iso(row.enrolled_at),
                "last_sent_at": _iso(row.last_sent_at),
            }
            for row in enrollments
        ],
        "emails": [
            {
                "kind": row.kind,
                "course": slugs.get(row.sequence_id) if row.sequence_id else None,
                "lesson": row.lesson_key,
                "status": row.status,
                "message_id": row.message_id,
                "due_at": _iso(row.due_at),
                "sent_at": _iso(row.sent_at),
                "attempts": row.attempts,
                "last_error": row.last_error,
            }
            for row in deliveries
        ],
    }


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


# --- housekeeping ------------------------------------------------------------------------


async def purge_stale_signups(
    session: AsyncSession, now: datetime, max_age: timedelta = PENDING_MAX_AGE
) -> int:
    """Delete pending subscribers whose last signup is older than `max_age` (their link has
    expired), with their confirmation emails, and signup attempts the rate limit no longer
    counts. Returns how many subscribers went. For the scheduler to call now and then."""
    is_stale = (
        Subscriber.status == SubscriberStatus.PENDING,
        Subscriber.updated_at < now - max_age,
    )
    stale = select(Subscriber.id).where(*is_stale)
    await session.execute(delete(Delivery).where(Delivery.subscriber_id.in_(stale)))
    await session.execute(delete(Enrollment).where(Enrollment.subscriber_id.in_(stale)))
    purged = await session.execute(delete(Subscriber).where(*is_stale))
    await session.execute(
        delete(SignupAttempt).where(SignupAttempt.created_at <= now - SIGNUP_WINDOW)
    )
    return int(purged.rowcount)  # type: ignore[attr-defined]
