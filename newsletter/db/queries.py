"""Every database query the application makes, as a named async function.

No query here assumes one process or SQLite: claims are single atomic statements that
PostgreSQL runs with SKIP LOCKED, and uniqueness is left to the constraints."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    Table,
    and_,
    bindparam,
    case,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from newsletter.db.models import (
    Broadcast,
    BroadcastStatus,
    Delivery,
    DeliveryKind,
    DeliveryStatus,
    Enrollment,
    EnrollmentStatus,
    LessonSnapshot,
    Priority,
    SequenceStatus,
    SequenceVersion,
    Subscriber,
    SubscriberStatus,
    Suppression,
    SystemFlag,
    deliveries_table,
    enrollments_table,
)
from newsletter.db.models import (
    Sequence as SequenceRow,
)

#: Shared switches (system_flags rows): sending paused for every worker, and the relay's
#: circuit open (no connection until `until`).
SENDING_PAUSED = "sending_paused"
RELAY_CIRCUIT = "relay_circuit"
#: Broadcasts whose mail may go out.
BROADCAST_SENDING = (BroadcastStatus.ENQUEUEING, BroadcastStatus.SENDING)
#: + a sequence's id: the course paused for its bounce or complaint rate. `until` is None
#: while it is held; once resumed, the instant its rates start counting afresh.
COURSE_HELD = "course_held:"


#: + a broadcast's id: the newsletter issue paused for its bounce or complaint rate, as
#: COURSE_HELD is for a course (the issue's pause_reason says why while it is paused).
ISSUE_HELD = "issue_held:"


def course_held(sequence_id: int) -> str:
    return f"{COURSE_HELD}{sequence_id}"


def issue_held(broadcast_id: int) -> str:
    return f"{ISSUE_HELD}{broadcast_id}"


def insert_ignoring_duplicates(session: AsyncSession | str, model: Any) -> Any:
    """INSERT … ON CONFLICT DO NOTHING in the dialect of the session (or the one named)."""
    dialect = session if isinstance(session, str) else session.get_bind().dialect.name
    module = postgresql if dialect == "postgresql" else sqlite
    return module.insert(model).on_conflict_do_nothing()


# --- subscribers -------------------------------------------------------------------------


async def subscriber_by_email(
    session: AsyncSession, email: str, *, lock: bool = False
) -> Subscriber | None:
    """`lock`: hold the row until commit (PostgreSQL; SQLite has one writer anyway)."""
    query = select(Subscriber).where(Subscriber.email == email)
    return await session.scalar(query.with_for_update() if lock else query)


async def is_suppressed(session: AsyncSession, email: str) -> bool:
    return (
        await session.scalar(select(Suppression.id).where(Suppression.email == email)) is not None
    )


async def suppress(
    session: AsyncSession, email: str, reason: str, detail: str, now: datetime
) -> None:
    await session.execute(
        insert_ignoring_duplicates(session, Suppression).values(
            email=email, reason=reason, detail=detail, created_at=now
        )
    )


async def stop_enrollments(session: AsyncSession, subscriber_ids: Iterable[int]) -> None:
    await session.execute(
        update(Enrollment)
        .where(Enrollment.subscriber_id.in_(list(subscriber_ids)))
        .where(Enrollment.status == EnrollmentStatus.ACTIVE)
        .values(status=EnrollmentStatus.STOPPED, next_check_at=None)
    )


# --- sequences ---------------------------------------------------------------------------


async def sequence_by_slug(session: AsyncSession, slug: str) -> SequenceRow | None:
    return await session.scalar(select(SequenceRow).where(SequenceRow.slug == slug))


async def version_lessons(session: AsyncSession, version_id: int) -> list[LessonSnapshot]:
    rows = await session.scalars(
        select(LessonSnapshot)
        .where(LessonSnapshot.version_id == version_id)
        .order_by(LessonSnapshot.position)
    )
    return list(rows)


async def enroll(
    session: AsyncSession, subscriber_id: int, sequence_id: int, now: datetime
) -> bool:
    """Start a subscriber on a sequence; False when they were on it already."""
    result = await session.execute(
        insert_ignoring_duplicates(session, Enrollment).values(
            subscriber_id=subscriber_id,
            sequence_id=sequence_id,
            status=EnrollmentStatus.ACTIVE,
            last_sent_at=now,
            next_check_at=now,
            enrolled_at=now,
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def enroll_many(
    session: AsyncSession, subscriber_ids: list[int], sequence_id: int, now: datetime
) -> None:
    if subscriber_ids:
        await session.execute(
            insert_ignoring_duplicates(session, Enrollment),
            [
                {
                    "subscriber_id": subscriber_id,
                    "sequence_id": sequence_id,
                    "status": EnrollmentStatus.ACTIVE,
                    "last_sent_at": now,
                    "next_check_at": now,
                    "enrolled_at": now,
                }
                for subscriber_id in subscriber_ids
            ],
        )


#: Built once, as the other statements of a signup (see newsletter/signup.py).
_QUEUE_CONFIRMATION = insert(deliveries_table).values(
    kind=DeliveryKind.CONFIRMATION, priority=Priority.TRANSACTIONAL
)


async def queue_confirmation(
    session: AsyncSession, subscriber_id: int, sequence_id: int, message_id: str, now: datetime
) -> None:
    """The opt-in email for a pending subscriber, due at once and ahead of bulk mail."""
    await session.execute(
        _QUEUE_CONFIRMATION,
        {
            "subscriber_id": subscriber_id,
            "sequence_id": sequence_id,
            "due_at": now,
            "message_id": message_id,
            "created_at": now,
        },
    )


async def shift_pending_work(session: AsyncSession, sequence_id: int, by: timedelta) -> None:
    """Move every waiting step of a sequence later by the length of its pause.

    Done row by row in Python: date arithmetic in SQL differs between SQLite (text) and
    PostgreSQL, and a resume is rare and touches one sequence."""
    # The previous send moves too: the planner times the next lesson from it, so the
    # subscriber's rhythm resumes as if the pause had not happened.
    waiting = await session.execute(
        select(Enrollment.id, Enrollment.next_check_at, Enrollment.last_sent_at)
        .where(Enrollment.sequence_id == sequence_id)
        .where(Enrollment.next_check_at.is_not(None))
    )
    await _bulk_update(
        session,
        enrollments_table,
        [
            {"id": i, "next_check_at": check + by, "last_sent_at": sent + by}
            for i, check, sent in waiting
            if check is not None
        ],
    )
    pending = await session.execute(
        select(Delivery.id, Delivery.due_at)
        .where(Delivery.sequence_id == sequence_id)
        .where(Delivery.status == DeliveryStatus.QUEUED)
    )
    await _bulk_update(session, deliveries_table, [{"id": i, "due_at": t + by} for i, t in pending])


# --- planning ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DueEnrollment:
    id: int
    subscriber_id: int
    sequence_id: int
    version_id: int
    last_sent_at: datetime
    timezone: str | None


async def due_enrollments(session: AsyncSession, now: datetime, limit: int) -> list[DueEnrollment]:
    rows = await session.execute(
        select(
            Enrollment.id,
            Enrollment.subscriber_id,
            Enrollment.sequence_id,
            SequenceRow.current_version_id,
            Enrollment.last_sent_at,
            Subscriber.timezone,
        )
        .join(SequenceRow, SequenceRow.id == Enrollment.sequence_id)
        .join(Subscriber, Subscriber.id == Enrollment.subscriber_id)
        # A suppressed address is never planned for, whatever its subscriber row says.
        .outerjoin(Suppression, Suppression.email == Subscriber.email)
        .where(Suppression.id.is_(None))
        .where(Enrollment.status == EnrollmentStatus.ACTIVE)
        .where(Enrollment.next_check_at <= now)
        .where(SequenceRow.status == SequenceStatus.LIVE)
        .where(Subscriber.status == SubscriberStatus.CONFIRMED)
        .order_by(Enrollment.next_check_at)
        .limit(limit)
        .with_for_update(skip_locked=True, of=Enrollment)
    )
    return [DueEnrollment(*cast(tuple[Any, ...], row)) for row in rows]


@dataclass(slots=True)
class Handled:
    """What one subscriber has had of one sequence."""

    #: Lessons with a delivery row, in any state: never planned again.
    keys: set[str] = field(default_factory=set)
    #: One of them is still queued (a first try or a retry) or being sent.
    in_flight: bool = False


#: Delivery states of a lesson not yet sent nor given up.
IN_FLIGHT = (DeliveryStatus.QUEUED, DeliveryStatus.SENDING)


async def handled_lessons(
    session: AsyncSession, enrollments: Sequence[DueEnrollment]
) -> dict[tuple[int, int], Handled]:
    """(subscriber, sequence) -> the lessons they have a delivery for, and whether one of
    them is in flight."""
    wanted = {(e.subscriber_id, e.sequence_id) for e in enrollments}
    handled: dict[tuple[int, int], Handled] = {pair: Handled() for pair in wanted}
    if not wanted:
        return handled
    rows = await session.execute(
        select(Delivery.subscriber_id, Delivery.sequence_id, Delivery.lesson_key, Delivery.status)
        .where(Delivery.subscriber_id.in_({s for s, _ in wanted}))
        .where(Delivery.sequence_id.in_({q for _, q in wanted}))
    )
    for subscriber_id, sequence_id, key, status in rows:
        if sequence_id is None or key is None:  # a confirmation carries no lesson
            continue
        found = handled.get((subscriber_id, sequence_id))
        if found is not None:
            found.keys.add(key)
            found.in_flight = found.in_flight or status in IN_FLIGHT
    return handled


async def look_after_sends_in_flight(session: AsyncSession, sequence_id: int) -> None:
    """A new version of the sequence: subscribers with a lesson of it still in flight had
    their next look timed by the lesson that followed in the old version (when it was
    queued); they now look once that send is done, under the new version."""
    enrollment, delivery = enrollments_table, deliveries_table
    in_flight = (
        select(delivery.c.id)
        .where(delivery.c.subscriber_id == enrollment.c.subscriber_id)
        .where(delivery.c.sequence_id == enrollment.c.sequence_id)
        .where(delivery.c.lesson_key.is_not(None))
        .where(delivery.c.status.in_(IN_FLIGHT))
        .exists()
    )
    await session.execute(
        enrollment.update()
        .where(enrollment.c.sequence_id == sequence_id)
        .where(enrollment.c.status == EnrollmentStatus.ACTIVE)
        .where(enrollment.c.next_check_at.is_not(None))
        .where(in_flight)
        .values(next_check_at=None)
    )


async def create_lesson_deliveries(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    if rows:
        await session.execute(insert_ignoring_duplicates(session, Delivery), rows)


async def set_next_checks(session: AsyncSession, changes: list[dict[str, Any]]) -> None:
    """Bulk update of enrollments by id: keys id, next_check_at, status."""
    if not changes:
        return
    table = enrollments_table
    await session.execute(
        table.update()
        .where(table.c.id == bindparam("enrollment_id"))
        .values(next_check_at=bindparam("next_check"), status=bindparam("new_status")),
        changes,
    )


# --- dispatching -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    id: int
    kind: str
    sequence_id: int | None
    lesson_id: int | None
    message_id: str
    attempts: int  #: this attempt included
    first_attempt_at: datetime
    subscriber_id: int
    email: str
    first_name: str
    broadcast_id: int | None = None


#: Of each claim, confirmations may take this share while lessons are due too, so that a
#: flood of signups slows lessons down but never stops them; unused shares go to the other.
TRANSACTIONAL_SHARE = 0.75


async def claim_due_deliveries(
    session: AsyncSession,
    *,
    now: datetime,
    wall_now: datetime,
    limit: int,
    lease_until: datetime,
    token: str,
) -> list[ClaimedDelivery]:
    """Take up to `limit` due deliveries under the claim `token`.

    `now` is the schedule's instant (what is due); `wall_now` the real one (whose lease ran
    out). Each row is taken by one atomic UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP
    LOCKED), so two dispatchers can never both take it. First rows whose lease expired (a
    worker died mid-batch), then queued rows: confirmations up to TRANSACTIONAL_SHARE of
    the claim, lessons, then confirmations again if room is left. Each SELECT is an
    equality on (status, priority) and a range on due_at, so it walks ix_deliveries_claim
    in order and stops at the limit, whatever the backlog."""

    def queued(priority: int) -> Any:
        return (
            select(Delivery.id)
            .where(
                Delivery.status == DeliveryStatus.QUEUED,
                Delivery.priority == priority,
                Delivery.due_at <= now,
            )
            .order_by(Delivery.due_at)
        )

    expired = (
        select(Delivery.id)
        .where(Delivery.status == DeliveryStatus.SENDING, Delivery.lease_until < wall_now)
        .order_by(Delivery.lease_until)
    )
    share = max(1, math.ceil(limit * TRANSACTIONAL_SHARE))
    rounds = [
        (expired, limit),
        (queued(Priority.TRANSACTIONAL), share),
        (queued(Priority.BULK), limit),
        (queued(Priority.TRANSACTIONAL), limit),
    ]
    live = and_(
        or_(Delivery.sequence_id.is_(None), SequenceRow.status == SequenceStatus.LIVE),
        # A cancelled issue's rows are claimed too: the check before sending cancels them.
        or_(Delivery.broadcast_id.is_(None), Broadcast.status != BroadcastStatus.PAUSED),
    )
    ids: list[int] = []
    for candidates, cap in rounds:
        room = min(cap, limit - len(ids))
        if room <= 0:
            continue
        query = (
            candidates.outerjoin(SequenceRow, SequenceRow.id == Delivery.sequence_id)
            .outerjoin(Broadcast, Broadcast.id == Delivery.broadcast_id)
            .where(live)
            .limit(room)
            .with_for_update(skip_locked=True, of=Delivery)
        )
        ids += await _take(session, query, wall_now=wall_now, lease_until=lease_until, token=token)
    if not ids:
        return []
    rows = await session.execute(
        select(
            Delivery.id,
            Delivery.kind,
            Delivery.sequence_id,
            Delivery.lesson_id,
            Delivery.message_id,
            Delivery.attempts,
            Delivery.first_attempt_at,
            Subscriber.id,
            Subscriber.email,
            Subscriber.first_name,
            Delivery.broadcast_id,
        )
        .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
        .where(Delivery.id.in_(ids))
        .order_by(Delivery.priority, Delivery.due_at)
    )
    return [ClaimedDelivery(*cast(tuple[Any, ...], row)) for row in rows]


async def _take(
    session: AsyncSession, candidates: Any, *, wall_now: datetime, lease_until: datetime, token: str
) -> list[int]:
    table = deliveries_table
    claimed = await session.execute(
        table.update()
        .where(table.c.id.in_(candidates.scalar_subquery()))
        .values(
            status=DeliveryStatus.SENDING,
            lease_until=lease_until,
            claimed_by=token,
            attempts=table.c.attempts + 1,
            first_attempt_at=func.coalesce(table.c.first_attempt_at, wall_now),
        )
        .returning(table.c.id)
    )
    return [row[0] for row in claimed]


@dataclass(frozen=True, slots=True)
class HeldDelivery:
    """A claimed delivery as the database sees it just before it is sent."""

    id: int
    status: str
    claimed_by: str | None
    lease_until: datetime | None
    subscriber_status: str
    suppressed: bool
    #: The sequence's status (None for mail of no sequence) and, for a lesson, the
    #: subscriber's enrollment in it (None when there is none).
    sequence_status: str | None
    enrollment_status: str | None
    broadcast_status: str | None = None  #: for an issue of the newsletter
    subscriber_id: int = 0
    subscriber_timezone: str | None = None


#: Built once: the check runs before every few messages, and building the statement costs
#: more than SQLite takes to answer it.
_HELD_DELIVERIES = (
    select(
        Delivery.id,
        Delivery.status,
        Delivery.claimed_by,
        Delivery.lease_until,
        Subscriber.status,
        Suppression.id.is_not(None),
        SequenceRow.status,
        Enrollment.status,
        Broadcast.status,
        Subscriber.id,
        Subscriber.timezone,
    )
    .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
    .outerjoin(Suppression, Suppression.email == Subscriber.email)
    .outerjoin(SequenceRow, SequenceRow.id == Delivery.sequence_id)
    .outerjoin(Broadcast, Broadcast.id == Delivery.broadcast_id)
    .outerjoin(
        Enrollment,
        (Enrollment.subscriber_id == Delivery.subscriber_id)
        & (Enrollment.sequence_id == Delivery.sequence_id),
    )
    .where(Delivery.id.in_(bindparam("ids", expanding=True)))
)


async def held_deliveries(
    connection: AsyncConnection | AsyncSession, ids: Iterable[int]
) -> dict[int, HeldDelivery]:
    """The rows behind these claims with their recipients' standing, read in one indexed
    query right before sending. A row that is missing was deleted (the person was erased)."""
    rows = await connection.execute(_HELD_DELIVERIES, {"ids": list(ids)})
    return {row[0]: HeldDelivery(*cast(tuple[Any, ...], row)) for row in rows}


async def counted_sends(
    connection: AsyncConnection | AsyncSession, subscriber_ids: Iterable[int], since: datetime
) -> dict[int, list[tuple[int, datetime]]]:
    """By subscriber, their lessons and newsletter issues sent since then: (id, sent at)."""
    rows = await connection.execute(
        select(Delivery.subscriber_id, Delivery.id, Delivery.sent_at)
        .where(Delivery.subscriber_id.in_(list(subscriber_ids)))
        .where(Delivery.sent_at >= since)
        .where(Delivery.kind != DeliveryKind.CONFIRMATION)
    )
    sends: dict[int, list[tuple[int, datetime]]] = {}
    for subscriber_id, delivery_id, sent_at in rows:
        if sent_at is not None:  # as the query asked; said again for the type checker
            sends.setdefault(subscriber_id, []).append((delivery_id, sent_at))
    return sends


def _held_by(token: str) -> Any:
    table = deliveries_table
    return (table.c.status == DeliveryStatus.SENDING) & (table.c.claimed_by == token)


async def renew_leases(
    session: AsyncSession, ids: Iterable[int], *, token: str, lease_until: datetime
) -> None:
    """Extend the lease of what this claim still holds (the heartbeat of a long batch)."""
    table = deliveries_table
    await session.execute(
        table.update()
        .where(table.c.id.in_(list(ids)), _held_by(token))
        .values(lease_until=lease_until)
    )


async def release_claims(
    session: AsyncSession,
    ids: Iterable[int],
    *,
    token: str,
    reason: str | None = None,
    due_at: datetime | None = None,
) -> None:
    """Put claimed deliveries that were not attempted back in the queue, as they were: the
    attempt the claim counted is taken back. `reason` (e.g. the relay's reply) replaces
    last_error, and `due_at` the time they are due, when given."""
    table = deliveries_table
    values: dict[str, Any] = {
        "status": DeliveryStatus.QUEUED,
        "lease_until": None,
        "claimed_by": None,
        "attempts": table.c.attempts - 1,
        "first_attempt_at": case((table.c.attempts <= 1, None), else_=table.c.first_attempt_at),
    }
    if reason is not None:
        values["last_error"] = reason
    if due_at is not None:
        values["due_at"] = due_at
    await session.execute(
        table.update().where(table.c.id.in_(list(ids)), _held_by(token)).values(values)
    )


async def drop_claims(session: AsyncSession, ids: Iterable[int], *, token: str) -> None:
    """Delete claimed lessons that must not go now and are planned afresh later (a course
    the subscriber paused): a delivery row would mark the lesson as handled for good."""
    table = deliveries_table
    await session.execute(table.delete().where(table.c.id.in_(list(ids)), _held_by(token)))


async def record_outcomes(
    session: AsyncSession, changes: list[dict[str, Any]], *, token: str
) -> None:
    """Write send outcomes by delivery id, but only over rows this claim still holds (the
    fence): if its lease ran out and another worker took a row over, that worker's outcome
    stands."""
    await _bulk_update(session, deliveries_table, changes, _held_by(token))


async def _bulk_update(
    session: AsyncSession, table: Table, changes: list[dict[str, Any]], *conditions: Any
) -> None:
    """One executemany UPDATE … WHERE id = ? [AND conditions]; every dict has the same keys,
    "id" among them."""
    if not changes:
        return
    columns = [key for key in changes[0] if key != "id"]
    await session.execute(
        table.update()
        .where(table.c.id == bindparam("row_id"), *conditions)
        .values({column: bindparam(f"new_{column}") for column in columns}),
        [{"row_id": change["id"]} | {f"new_{c}": change[c] for c in columns} for change in changes],
    )


async def lessons_sent(session: AsyncSession, pairs: list[tuple[int, int]], now: datetime) -> None:
    """The enrollments of these (subscriber, sequence) pairs move on: the next lesson is
    timed from this send. The planner looks at them now, unless it already means to later
    (when queueing the lesson it set the earliest instant the next one may be due)."""
    if not pairs:
        return
    table = enrollments_table
    moved_at = literal(now, table.c.next_check_at.type)
    await session.execute(
        table.update()
        .where(table.c.subscriber_id == bindparam("subscriber"))
        .where(table.c.sequence_id == bindparam("sequence"))
        .where(table.c.status == EnrollmentStatus.ACTIVE)
        .values(
            last_sent_at=now,
            next_check_at=case(
                (table.c.next_check_at > moved_at, table.c.next_check_at), else_=moved_at
            ),
        ),
        [{"subscriber": s, "sequence": q} for s, q in pairs],
    )


async def mark_bounced(session: AsyncSession, subscriber_ids: list[int], now: datetime) -> None:
    if not subscriber_ids:
        return
    await session.execute(
        update(Subscriber)
        .where(Subscriber.id.in_(subscriber_ids))
        .values(status=SubscriberStatus.BOUNCED, updated_at=now)
    )
    await stop_enrollments(session, subscriber_ids)


async def sent_since(session: AsyncSession, since: datetime) -> int:
    """Messages sent since then, counting those other workers are sending right now, so
    that several workers together stay under an hourly or daily cap."""
    count = await session.scalar(
        select(func.count())
        .select_from(Delivery)
        .where(or_(Delivery.sent_at >= since, Delivery.status == DeliveryStatus.SENDING))
    )
    return int(count or 0)


# --- system flags ------------------------------------------------------------------------


async def flag(session: AsyncSession, name: str) -> SystemFlag | None:
    return await session.get(SystemFlag, name)


async def flags(session: AsyncSession) -> dict[str, SystemFlag]:
    return {row.name: row for row in await session.scalars(select(SystemFlag))}


async def set_flag(
    session: AsyncSession, name: str, *, until: datetime | None, reason: str, now: datetime
) -> None:
    """Set (or replace) a switch. One upsert: two workers setting it at once both succeed."""
    dialect = session.get_bind().dialect.name
    module = postgresql if dialect == "postgresql" else sqlite
    values = {"until": until, "reason": reason, "set_at": now}
    await session.execute(
        module.insert(SystemFlag)
        .values(name=name, **values)
        .on_conflict_do_update(index_elements=[SystemFlag.name], set_=values)
    )


async def clear_flag(session: AsyncSession, name: str) -> bool:
    result = await session.execute(delete(SystemFlag).where(SystemFlag.name == name))
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def current_version(session: AsyncSession, sequence_id: int) -> SequenceVersion | None:
    sequence = await session.get(SequenceRow, sequence_id)
    if sequence is None or sequence.current_version_id is None:
        return None
    return await session.get(SequenceVersion, sequence.current_version_id)


# --- reporting ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendingCounts:
    queued: int  #: waiting, due or not
    due: int  #: waiting and due now
    sending: int  #: claimed by a worker right now
    sent_last_hour: int
    retried_last_hour: int  #: tried in the last hour and waiting to be tried again
    failed_last_hour: int


async def sending_counts(session: AsyncSession, now: datetime) -> SendingCounts:
    """What is due by `now`, and what happened in the hour before it."""
    hour_ago = now - timedelta(hours=1)
    tried_lately = Delivery.last_attempt_at >= hour_ago
    status = Delivery.status
    row = (
        await session.execute(
            select(
                func.count().filter(status == DeliveryStatus.QUEUED),
                func.count().filter(status == DeliveryStatus.QUEUED, Delivery.due_at <= now),
                func.count().filter(status == DeliveryStatus.SENDING),
                func.count().filter(status == DeliveryStatus.SENT, Delivery.sent_at >= hour_ago),
                func.count().filter(
                    status == DeliveryStatus.QUEUED, Delivery.attempts > 0, tried_lately
                ),
                func.count().filter(status == DeliveryStatus.FAILED, tried_lately),
            ).select_from(Delivery)
        )
    ).one()
    return SendingCounts(*(int(value) for value in row))


async def recent_refusals(
    session: AsyncSession, wall_now: datetime, limit: int = 1000
) -> list[tuple[str, str]]:
    """(recipient address, last error) of deliveries refused in the last hour: failed, or
    waiting for another try."""
    rows = await session.execute(
        select(Subscriber.email, Delivery.last_error)
        .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
        .where(Delivery.last_attempt_at >= wall_now - timedelta(hours=1))
        .where(Delivery.status.in_([DeliveryStatus.FAILED, DeliveryStatus.QUEUED]))
        .where(Delivery.last_error != "")
        .order_by(Delivery.last_attempt_at.desc())
        .limit(limit)
    )
    return [(email, error) for email, error in rows]
