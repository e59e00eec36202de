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

from newsletter.content.identity import CourseIdentity
from newsletter.db import queries
from newsletter.db.models import (
    Delivery,
    DeliveryKind,
    DeliveryStatus,
    Enrollment,
    EnrollmentStatus,
    MailEvent,
    Sequence,
    SequenceStatus,
    SequenceVersion,
    Subscriber,
    SubscriberStatus,
    subscribers_table,
    suppressions_table,
)
from newsletter.db.web_models import SignupAttempt, signup_attempts_table
from newsletter.render import clean_name, make_message_id
from newsletter.subscribers import add_tags, forget, unsubscribe

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
    #: The version of the consent sentence the form showed; "" or unknown: the course's
    #: current one. Snippets pasted on other sites keep posting the version they showed.
    consent_version: str = ""
    #: Tags from the form's hidden `tags` field (form-snippet --tag): what the visitor's
    #: browser sent, so never anything a visitor must not be able to choose.
    tags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SignupCourse:
    """A live course as its signup page shows it, from its current version."""

    sequence_id: int
    slug: str
    title: str
    description: str
    identity: CourseIdentity


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
    LEFT = "left"
    NONE = "none"


_STATES = {
    EnrollmentStatus.ACTIVE: CourseState.ACTIVE,
    EnrollmentStatus.STOPPED: CourseState.PAUSED,
    EnrollmentStatus.COMPLETED: CourseState.COMPLETED,
    EnrollmentStatus.LEFT: CourseState.LEFT,
}


@dataclass(frozen=True, slots=True)
class CourseOfSubscriber:
    """One of a subscriber's courses, for the preferences page."""

    sequence_id: int
    slug: str
    title: str
    state: CourseState


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


def consent_record(
    request: SignupRequest,
    visitor: Visitor,
    now: datetime,
    *,
    course: str,
    text: str,
    version: str,
) -> dict[str, Any]:
    """What was agreed to, word for word, for which course, when and from where."""
    return {
        "form": request.form,
        "course": course,
        "text": text,
        "version": version,
        "given_at": now.isoformat(),
        "ip": visitor.ip,
        "user_agent": clean_user_agent(visitor.user_agent),
    }


def with_course_record(
    consent: dict[str, Any] | None, course: str, record: dict[str, Any], *, latest: bool
) -> dict[str, Any]:
    """A subscriber's consent: each course's record under "courses" by slug; the record at
    the top is the latest signup's (`latest`), as it was when there was one course."""
    courses = dict((consent or {}).get("courses") or {}) | {course: record}
    top = record if latest or not consent else {k: v for k, v in consent.items() if k != "courses"}
    return top | {"courses": courses}


def clean_user_agent(text: str) -> str:
    return clean_name(text[: USER_AGENT_LENGTH * 2])[:USER_AGENT_LENGTH]


# --- signing up --------------------------------------------------------------------------


#: A course as of its current version: what its signup page and emails show.
_COURSE_NOW = select(
    Sequence.id,
    Sequence.slug,
    SequenceVersion.title,
    SequenceVersion.description,
    SequenceVersion.identity,
).join(SequenceVersion, SequenceVersion.id == Sequence.current_version_id)


def _signup_course(row: Any) -> SignupCourse:
    identity = CourseIdentity.from_json(row.identity)
    return SignupCourse(row.id, row.slug, row.title, row.description, identity)


async def live_courses(session: AsyncSession) -> list[SignupCourse]:
    """The courses open for signups, oldest first. Only a live course takes signups: a
    paused one would hold its confirmation emails."""
    rows = await session.execute(
        _COURSE_NOW.where(Sequence.status == SequenceStatus.LIVE).order_by(Sequence.id)
    )
    return [_signup_course(row) for row in rows]


async def signup_course(session: AsyncSession, sequence_id: int) -> SignupCourse | None:
    """A course by its sequence, as of its current version, live or not."""
    row = (await session.execute(_COURSE_NOW.where(Sequence.id == sequence_id))).one_or_none()
    return None if row is None else _signup_course(row)


async def consent_shown(
    session: AsyncSession, course: SignupCourse, version: str
) -> tuple[str, str]:
    """The consent sentence (text, version) a form showed: the course's current one, or
    an earlier version's if the form was made from one (a snippet pasted long ago), so the
    record keeps the words the person saw. An unknown version: the current sentence."""
    current = course.identity
    if not version or version == current.consent_version:
        return current.consent_text, current.consent_version
    for stored in await session.scalars(
        select(SequenceVersion.identity)
        .where(SequenceVersion.sequence_id == course.sequence_id)
        .order_by(SequenceVersion.number.desc())
    ):
        earlier = CourseIdentity.from_json(stored)
        if earlier.consent_version == version:
            return earlier.consent_text, earlier.consent_version
    return current.consent_text, current.consent_version


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
    course: SignupCourse | None = None,
) -> SignupOutcome:
    """A pending subscriber and their confirmation email for the course, or nothing if
    that would mail someone who left for good or flood an inbox. Someone confirmed on
    other courses gets a confirmation email for this one too. The caller shows the same
    page whatever this returns, so nobody learns who is subscribed.

    `course`: the sequence as the caller has it (the web keeps it); looked up if not."""
    course = course or await signup_course(session, sequence_id)
    if course is None:
        return SignupOutcome.NO_COURSE
    text, version = await consent_shown(session, course, request.consent_version)
    record = consent_record(request, visitor, now, course=course.slug, text=text, version=version)
    newcomer_consent = with_course_record(None, course.slug, record, latest=True)
    subscriber_id = await _insert_newcomer(session, request, newcomer_consent, now)
    if subscriber_id is not None:
        # A newcomer's own form; someone known is not re-tagged by whoever types their
        # address into a form.
        await add_tags(session, [(subscriber_id, tag) for tag in request.tags], now)
    else:
        outcome = await _sign_up_again(
            session,
            request,
            (course, record),
            now,
            confirmation_interval,
            confirmations_per_day,
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
    course_and_record: tuple[SignupCourse, dict[str, Any]],
    now: datetime,
    confirmation_interval: timedelta,
    confirmations_per_day: int,
) -> int | SignupOutcome:
    """A known or suppressed address: the subscriber's id if they get a new confirmation
    email, else why not."""
    course, record = course_and_record
    if await queries.is_suppressed(session, request.email):
        return SignupOutcome.BLOCKED
    # Locked (on PostgreSQL) until commit: a second signup for the address waits, then
    # sees the confirmation this one queues, and the interval and the daily cap hold.
    subscriber = await queries.subscriber_by_email(session, request.email, lock=True)
    if subscriber is None:  # deleted since _insert_newcomer looked
        return SignupOutcome.BLOCKED
    confirmed = subscriber.status == SubscriberStatus.CONFIRMED
    if confirmed and await _on_course(session, subscriber.id, course.sequence_id):
        return SignupOutcome.ALREADY_CONFIRMED
    if not confirmed and subscriber.status not in (
        SubscriberStatus.PENDING,
        SubscriberStatus.UNSUBSCRIBED,
    ):
        return SignupOutcome.BLOCKED
    last, today = await _recent_confirmations(
        session, subscriber.id, course.sequence_id, now - CONFIRMATION_DAY
    )
    if last is not None and now - last < confirmation_interval:
        return SignupOutcome.RECENTLY_SENT
    if today >= confirmations_per_day:
        return SignupOutcome.DAILY_LIMIT
    if confirmed:
        # Another course for someone already with us: their name, zone and the consent
        # records they confirmed stay as they are until they confirm this one too, since
        # anyone may type their address here.
        subscriber.consent = with_course_record(
            subscriber.consent, course.slug, record, latest=False
        )
    else:
        # Someone who left may come back, through the same double opt-in as a newcomer.
        subscriber.status = SubscriberStatus.PENDING
        subscriber.first_name = request.first_name
        subscriber.timezone = request.timezone
        subscriber.consent = with_course_record(
            subscriber.consent, course.slug, record, latest=True
        )
    subscriber.updated_at = now
    return subscriber.id


async def _on_course(session: AsyncSession, subscriber_id: int, sequence_id: int) -> bool:
    """Whether the subscriber is on the course: taking it, paused, or done with it."""
    status = await session.scalar(
        select(Enrollment.status)
        .where(Enrollment.subscriber_id == subscriber_id)
        .where(Enrollment.sequence_id == sequence_id)
    )
    return status is not None and status != EnrollmentStatus.LEFT


async def _recent_confirmations(
    session: AsyncSession, subscriber_id: int, sequence_id: int, since: datetime
) -> tuple[datetime | None, int]:
    """When the subscriber's last confirmation email for this course was queued, and how
    many (for any course) were since `since`: one look at their confirmation deliveries."""
    since_param = bindparam("since", since, type_=Delivery.created_at.type)
    this_course = Delivery.sequence_id == bindparam("sequence", sequence_id)
    row = (
        await session.execute(
            select(
                func.max(case((this_course, Delivery.created_at))),
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
    sequence_id: int | None = None,
    fallback_sequence_id: int | None,
    now: datetime,
) -> ConfirmOutcome:
    """Pending -> confirmed, with the confirmation added to the consent record, and
    enrolled in the course of the link (`sequence_id`; older links name none: the course
    of their latest confirmation email); lesson 1 then follows by the schedule. Someone
    confirmed already is enrolled in a further course they signed up for."""
    subscriber = await session.get(Subscriber, subscriber_id)
    if subscriber is None:
        return ConfirmOutcome.UNKNOWN
    sequence_id = sequence_id or await _last_confirmation_course(session, subscriber_id)
    sequence_id = sequence_id or fallback_sequence_id
    slug = (
        await session.scalar(select(Sequence.slug).where(Sequence.id == sequence_id))
        if sequence_id is not None
        else None
    )
    if subscriber.status == SubscriberStatus.CONFIRMED:
        if sequence_id is None or slug is None:
            return ConfirmOutcome.ALREADY_CONFIRMED
        if await _on_course(session, subscriber_id, sequence_id):
            return ConfirmOutcome.ALREADY_CONFIRMED
        record = (subscriber.consent or {}).get("courses", {}).get(slug)
        if record is None or "confirmed_at" in record:
            # Not signed up for it, or left it after confirming: an old link does not
            # bring them back; signing up again does.
            return ConfirmOutcome.LEFT
    elif subscriber.status != SubscriberStatus.PENDING:
        return ConfirmOutcome.LEFT
    else:
        subscriber.status = SubscriberStatus.CONFIRMED
        subscriber.confirmed_at = now
    subscriber.updated_at = now
    confirmation = {
        "confirmed_at": now.isoformat(),
        "confirmed_ip": visitor.ip,
        "confirmed_user_agent": clean_user_agent(visitor.user_agent),
    }
    consent = dict(subscriber.consent or {})
    if slug is not None:
        courses = dict(consent.get("courses") or {})
        courses[slug] = dict(courses.get(slug) or {"course": slug}) | confirmation
        consent["courses"] = courses
    if consent.get("course", slug) == slug and "confirmed_at" not in consent:
        consent |= confirmation
    subscriber.consent = consent
    if sequence_id is not None:
        await start_course(session, subscriber_id, sequence_id, now)
    return ConfirmOutcome.CONFIRMED


async def _last_confirmation_course(session: AsyncSession, subscriber_id: int) -> int | None:
    sequence_id: int | None = await session.scalar(
        select(Delivery.sequence_id)
        .where(Delivery.subscriber_id == subscriber_id)
        .where(Delivery.kind == DeliveryKind.CONFIRMATION)
        .order_by(Delivery.id.desc())
        .limit(1)
    )
    return sequence_id


async def start_course(
    session: AsyncSession, subscriber_id: int, sequence_id: int, now: datetime
) -> None:
    """Enroll, or restart a stopped enrollment where it left off (someone who paused, left
    the course, or left everything and came back): the planner sends the next lesson they
    have not had."""
    restarted = await session.execute(
        update(Enrollment)
        .where(Enrollment.subscriber_id == subscriber_id)
        .where(Enrollment.sequence_id == sequence_id)
        .where(Enrollment.status.in_([EnrollmentStatus.STOPPED, EnrollmentStatus.LEFT]))
        .values(status=EnrollmentStatus.ACTIVE, next_check_at=now)
    )
    if not restarted.rowcount:  # type: ignore[attr-defined]
        await queries.enroll(session, subscriber_id, sequence_id, now)


# --- leaving and preferences ------------------------------------------------------------


async def leave(session: AsyncSession, subscriber_id: int, now: datetime) -> None:
    """Unsubscribe from everything at once; a second time, or for someone already deleted,
    does nothing. Mail already queued is cancelled by the dispatcher, which checks status
    at send time."""
    subscriber = await session.get(Subscriber, subscriber_id)
    if subscriber is not None:
        await unsubscribe(session, subscriber, now)


async def leave_course(session: AsyncSession, subscriber_id: int, sequence_id: int) -> None:
    """Leave one course, staying on the others. A lesson of it queued but not yet sent
    goes; one already claimed is dropped by the check before each send (the enrollment is
    no longer active)."""
    await session.execute(
        update(Enrollment)
        .where(Enrollment.subscriber_id == subscriber_id)
        .where(Enrollment.sequence_id == sequence_id)
        .values(status=EnrollmentStatus.LEFT, next_check_at=None)
    )
    await _drop_queued_lessons(session, subscriber_id, sequence_id)


async def courses_of(session: AsyncSession, subscriber_id: int) -> list[CourseOfSubscriber]:
    """The subscriber's courses, in the order they joined them, titled as they are now."""
    rows = await session.execute(
        select(Enrollment.sequence_id, Enrollment.status, Sequence.slug, SequenceVersion.title)
        .join(Sequence, Sequence.id == Enrollment.sequence_id)
        .join(SequenceVersion, SequenceVersion.id == Sequence.current_version_id, isouter=True)
        .where(Enrollment.subscriber_id == subscriber_id)
        .order_by(Enrollment.id)
    )
    return [
        CourseOfSubscriber(
            row.sequence_id,
            row.slug,
            row.title or row.slug,
            _STATES.get(EnrollmentStatus(row.status), CourseState.NONE),
        )
        for row in rows
    ]


async def course_state(session: AsyncSession, subscriber_id: int) -> CourseState:
    """All of a subscriber's courses in one word: active if any runs."""
    states = {course.state for course in await courses_of(session, subscriber_id)}
    for state in (CourseState.ACTIVE, CourseState.PAUSED, CourseState.COMPLETED):
        if state in states:
            return state
    return CourseState.NONE


async def pause_course(
    session: AsyncSession, subscriber_id: int, sequence_id: int | None = None
) -> None:
    """No more lessons of the course (None: of every course) until resumed, including one
    queued but not yet sent: its row goes, so that on resume the planner queues it afresh
    (a delivery is unique per lesson)."""
    statement = (
        update(Enrollment)
        .where(Enrollment.subscriber_id == subscriber_id)
        .where(Enrollment.status == EnrollmentStatus.ACTIVE)
        .values(status=EnrollmentStatus.STOPPED, next_check_at=None)
    )
    if sequence_id is not None:
        statement = statement.where(Enrollment.sequence_id == sequence_id)
    await session.execute(statement)
    await _drop_queued_lessons(session, subscriber_id, sequence_id)


async def _drop_queued_lessons(
    session: AsyncSession, subscriber_id: int, sequence_id: int | None
) -> None:
    statement = (
        delete(Delivery)
        .where(Delivery.subscriber_id == subscriber_id)
        .where(Delivery.kind == DeliveryKind.LESSON)
        .where(Delivery.status == DeliveryStatus.QUEUED)
    )
    if sequence_id is not None:
        statement = statement.where(Delivery.sequence_id == sequence_id)
    await session.execute(statement)


async def resume_course(
    session: AsyncSession, subscriber_id: int, now: datetime, sequence_id: int | None = None
) -> None:
    """Only a confirmed subscriber's paused courses restart (the one named, or all); the
    next lesson is due at once if its delay has passed during the pause, then the rest
    follow their delays. A course they left stays left."""
    subscriber = await session.get(Subscriber, subscriber_id)
    if subscriber is None or subscriber.status != SubscriberStatus.CONFIRMED:
        return
    query = (
        select(Enrollment.sequence_id)
        .where(Enrollment.subscriber_id == subscriber_id)
        .where(Enrollment.status == EnrollmentStatus.STOPPED)
    )
    if sequence_id is not None:
        query = query.where(Enrollment.sequence_id == sequence_id)
    for stopped in list(await session.scalars(query)):
        await start_course(session, subscriber_id, stopped, now)


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
    came_back = await session.scalars(
        select(MailEvent).where(MailEvent.subscriber_id == subscriber_id).order_by(MailEvent.id)
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
        # Bounces, complaints and unsubscribes by mail, with the remote servers' words.
        "came_back": [
            {
                "kind": row.kind,
                "received_at": _iso(row.received_at),
                "status": row.status,
                "reason": row.reason,
                "outcome": row.outcome,
            }
            for row in came_back
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
