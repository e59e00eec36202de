"""Newsletter issues (broadcasts): start a send, which fixes its audience; queue it in
batches that a crash or a rerun repeats safely; pause, resume, cancel; how far it got.

Once queued, an issue's deliveries go through the dispatcher like lessons: the same rate
limits, retries, check before each send and crash bound (docs/newsletters.md). The database
holds at most one delivery per issue and subscriber, so nobody gets an issue twice however
often its send is run.

An issue sent at a local time (a WallTime) is due for each subscriber when their own clock
shows it, or at once if that had passed when its send started: local_due_at, which depends
only on what the issue's row holds and the subscriber's zone, so a rerun times everyone as
the first run would have."""

from __future__ import annotations

import hashlib
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from newsletter.config import SenderSettings
from newsletter.content.course import Course
from newsletter.content.identity import CourseIdentity
from newsletter.content.lessons import Lesson
from newsletter.content.newsletters import Newsletter, WallTime
from newsletter.db import queries
from newsletter.db.models import (
    Broadcast,
    BroadcastStatus,
    Delivery,
    DeliveryKind,
    DeliveryStatus,
    Priority,
    Subscriber,
    SubscriberStatus,
    Suppression,
)
from newsletter.errors import NewsletterError
from newsletter.render import make_message_id
from newsletter.scheduling.wallclock import instant, zone_named
from newsletter.segments import parse, where_clause

#: Subscribers queued per transaction: short ones, so the web's writes never wait long.
ENQUEUE_BATCH = 1000
#: No time zone is further ahead of UTC (Kiribati's Line Islands, UTC+14): a wall time comes
#: nowhere earlier than this long before it comes in UTC.
AHEAD_OF_UTC_MAX = timedelta(hours=14)


def fingerprint(issue: Newsletter) -> str:
    parts = [issue.subject, issue.preheader, issue.segment, issue.body, str(issue.send_at)]
    if issue.max_per_subscriber_per_day is not None:
        # Only when set: an issue started before caps of their own still resumes.
        parts.append(f"cap {issue.max_per_subscriber_per_day}")
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


def as_course(sender: SenderSettings, broadcast: Broadcast) -> tuple[Course, Lesson]:
    """The issue as the renderer takes a course of one lesson: from config's sender, listed
    as "<sender name> newsletter" (List-Id newsletter.<sender domain>)."""
    lesson = Lesson(
        Path(broadcast.source), broadcast.key, broadcast.subject, broadcast.preheader,
        timedelta(0), None, broadcast.body, broadcast.body_line,
    )  # fmt: skip
    identity = CourseIdentity(
        list_name=f"{sender.name} newsletter",
        list_id=f"newsletter.{sender.domain}",
        max_per_subscriber_per_day=broadcast.max_per_day,
    )
    course = Course("newsletter", lesson.path.parent, sender.name, "", (lesson,), identity)
    return course, lesson


def new_broadcast(
    issue: Newsletter, segment: str, when: datetime | WallTime, started_at: datetime
) -> Broadcast:
    """The row of an issue whose send starts now (not yet in any session), due `when`: one
    instant, or a wall time in each subscriber's zone (then due_at is first_due_at)."""
    if isinstance(when, WallTime):
        local, due_at = when.at, first_due_at(when.at, started_at)
    else:
        local, due_at = None, when
    return Broadcast(
        key=issue.key,
        fingerprint=fingerprint(issue),
        subject=issue.subject,
        preheader=issue.preheader,
        body=issue.body,
        body_line=issue.body_line,
        source=str(issue.path),
        segment=segment,
        status=BroadcastStatus.ENQUEUEING,
        due_at=due_at.astimezone(UTC),
        local_send_at=local,
        started_at=started_at,
        max_per_day=issue.max_per_subscriber_per_day,
    )


def first_due_at(wall: datetime, started_at: datetime) -> datetime:
    """The earliest that a copy of an issue due at wall time `wall` can be due: when that
    time first comes anywhere (UTC+14), or the send's start if that is later. No copy is due
    before it, so ordering and listing by due_at hold for issues sent at a local time too."""
    return max(wall.replace(tzinfo=UTC) - AHEAD_OF_UTC_MAX, started_at)


def local_due_at(wall: datetime, zone: ZoneInfo, started_at: datetime) -> datetime:
    """When the copy of someone in `zone` is due: at `wall` on their clock (a time skipped by
    a spring-forward change resolves as lessons' send times do), or at the send's start, at
    once, if that time had already passed there when the send started."""
    return max(instant(wall.date(), wall.time(), zone), started_at)


def due_for(broadcast: Broadcast, zone: ZoneInfo) -> datetime:
    """When the copy of someone in `zone` is due."""
    if broadcast.local_send_at is None:
        return broadcast.due_at
    return local_due_at(broadcast.local_send_at, zone, broadcast.started_at)


async def start(
    session: AsyncSession, issue: Newsletter, segment: str, when: datetime | WallTime, now: datetime
) -> tuple[Broadcast, bool]:
    """The issue's send, and whether it was started before (then this resumes it). Another
    file of the same name, or the same file to other people, is refused."""
    broadcast = await session.scalar(select(Broadcast).where(Broadcast.key == issue.key))
    if broadcast is not None:
        if broadcast.fingerprint != fingerprint(issue) or broadcast.segment != segment:
            raise NewsletterError(
                f"an issue called {issue.key} was sent on {broadcast.started_at:%Y-%m-%d} with "
                "other words or to other people; rename the file to send it as a new issue"
            )
        return broadcast, True
    broadcast = new_broadcast(issue, segment, when, now)
    session.add(broadcast)
    await session.flush()
    return broadcast, False


def audience(broadcast: Broadcast, default_timezone: str) -> object:
    """Who the issue goes to: subscribers its segment matches who had confirmed when its
    send started, and whose address is not suppressed. (A send cut off half-way and run
    again matches the rest as they are then: a tag added since counts.)"""
    return (
        where_clause(parse(broadcast.segment), default_timezone)
        & (Subscriber.status == SubscriberStatus.CONFIRMED)
        & (Subscriber.confirmed_at <= broadcast.started_at)
        & ~select(Suppression.id).where(Suppression.email == Subscriber.email).exists()
    )


async def enqueue_batch(
    session: AsyncSession,
    broadcast: Broadcast,
    *,
    default_timezone: str,
    message_domain: str,
    after: int,
    now: datetime,
) -> list[int]:
    """Queue the next ENQUEUE_BATCH of the audience by subscriber id after `after`; the
    ids taken (none: the audience is all queued). Someone queued already is skipped. Each
    copy is due as due_for says in the subscriber's zone (or `default_timezone`)."""
    rows = (
        await session.execute(
            select(Subscriber.id, Subscriber.timezone)
            .where(audience(broadcast, default_timezone))  # type: ignore[arg-type]
            .where(Subscriber.id > after)
            .order_by(Subscriber.id)
            .limit(ENQUEUE_BATCH)
        )
    ).all()
    ids = [subscriber_id for subscriber_id, _ in rows]
    if ids:
        await session.execute(
            queries.insert_ignoring_duplicates(session, Delivery),
            [
                {
                    "subscriber_id": subscriber_id,
                    "broadcast_id": broadcast.id,
                    "kind": DeliveryKind.BROADCAST,
                    "priority": Priority.BULK,
                    "status": DeliveryStatus.QUEUED,
                    "due_at": due_for(broadcast, zone_named(timezone, ZoneInfo(default_timezone))),
                    "attempts": 0,
                    "last_error": "",
                    "message_id": make_message_id(message_domain),
                    "created_at": now,
                }
                for subscriber_id, timezone in rows
            ],
        )
    return ids


async def finish_enqueueing(session: AsyncSession, broadcast: Broadcast, now: datetime) -> int:
    """The whole audience is queued: how many it holds. A paused or cancelled issue stays so."""
    queued = await session.scalar(
        select(func.count()).select_from(Delivery).where(Delivery.broadcast_id == broadcast.id)
    )
    broadcast.audience = int(queued or 0)
    broadcast.enqueued_at = now
    if broadcast.status == BroadcastStatus.ENQUEUEING:
        broadcast.status = BroadcastStatus.SENDING
    return broadcast.audience


async def set_status(
    session: AsyncSession, key: str, status: BroadcastStatus, *, now: datetime, reason: str = ""
) -> Broadcast:
    """Pause, resume (SENDING) or cancel; a cancelled issue's mail not yet sent is cancelled
    too (what is already being sent finishes). Resuming returns a paused issue to where it
    was: sending, or queueing its audience if that was cut off.

    `reason`: why it pauses when no admin paused it (its bounce or complaint rate), kept in
    pause_reason until it resumes or is cancelled; pausing it again keeps the first reason.
    Once it resumes, its rates count afresh from `now`, as a course's do (the ISSUE_HELD
    flag keeps that instant)."""
    broadcast = await by_key(session, key)
    if broadcast.status == BroadcastStatus.CANCELLED:
        raise NewsletterError(f"{key} was cancelled; it cannot be paused or resumed")
    if status == BroadcastStatus.SENDING:
        if broadcast.status != BroadcastStatus.PAUSED:
            raise NewsletterError(f"{key} is not paused")
        if broadcast.enqueued_at is None:
            status = BroadcastStatus.ENQUEUEING
    held = queries.issue_held(broadcast.id)
    if status == BroadcastStatus.PAUSED:
        if broadcast.status != BroadcastStatus.PAUSED:
            broadcast.pause_reason = reason
            if reason:
                await queries.set_flag(session, held, until=None, reason=reason, now=now)
    else:
        broadcast.pause_reason = ""
        flag = await queries.flag(session, held)
        if flag is not None and flag.until is None:
            # Its bounces and complaints so far were dealt with: count afresh from now.
            await queries.set_flag(session, held, until=now, reason=flag.reason, now=now)
    broadcast.status = status
    if status == BroadcastStatus.CANCELLED:
        await session.execute(
            update(Delivery)
            .where(Delivery.broadcast_id == broadcast.id)
            .where(Delivery.status == DeliveryStatus.QUEUED)
            .values(status=DeliveryStatus.CANCELLED, last_error="not sent: the issue was cancelled")
        )
    return broadcast


async def by_key(session: AsyncSession, key: str) -> Broadcast:
    broadcast = await session.scalar(select(Broadcast).where(Broadcast.key == key))
    if broadcast is None:
        raise NewsletterError(f"no issue called {key} was sent (see `newsletter broadcast list`)")
    return broadcast


async def progress(session: AsyncSession, broadcast_id: int) -> Counter[str]:
    """Its deliveries by status (queued, sending, sent, failed, cancelled)."""
    rows = await session.execute(
        select(Delivery.status, func.count())
        .where(Delivery.broadcast_id == broadcast_id)
        .group_by(Delivery.status)
    )
    return Counter({status: count for status, count in rows})
