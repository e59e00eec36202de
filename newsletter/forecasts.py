"""`newsletter forecast` from the database: who will get which lesson or issue when. Reads
subscribers in batches (memory stays flat on a large list) and replays each with the
worker's own rules (scheduling/forecast.py). Reads only; nothing is queued or sent."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from newsletter.config import Settings
from newsletter.content.identity import CourseIdentity
from newsletter.db import queries
from newsletter.db.models import (
    Broadcast,
    BroadcastStatus,
    Delivery,
    DeliveryKind,
    Enrollment,
    EnrollmentStatus,
    LessonSnapshot,
    SequenceStatus,
    SequenceVersion,
    Subscriber,
    SubscriberStatus,
    Suppression,
)
from newsletter.db.models import Sequence as SequenceRow
from newsletter.scheduling import planner
from newsletter.scheduling.forecast import (
    CoursePlan,
    Enrolled,
    Person,
    Planned,
    Queued,
    Rules,
    forecast,
)
from newsletter.scheduling.planner import SendWindow
from newsletter.scheduling.wallclock import zone_named

#: Subscribers read and replayed at a time.
BATCH = 500
#: Sends this far back count towards today's cap in every time zone.
CAP_LOOKBACK = timedelta(days=2)


@dataclass(frozen=True, slots=True)
class Courses:
    """Every live course as the planner sees it now, and each version's own cap (a queued
    lesson is held to the cap of the version it was planned from)."""

    by_id: dict[int, CoursePlan]
    by_slug: dict[str, CoursePlan]
    cap_of_version: dict[int, int | None]


def rules_of(settings: Settings) -> Rules:
    return Rules(
        window=SendWindow(settings.schedule.send_window_start, settings.schedule.send_window_end),
        welcome_at_once=settings.schedule.welcome_at_once,
        max_per_subscriber_per_day=settings.sending.max_per_subscriber_per_day,
    )


async def live_courses(session: AsyncSession) -> Courses:
    by_id: dict[int, CoursePlan] = {}
    rows = await session.execute(
        select(SequenceRow.id, SequenceRow.slug, SequenceVersion.id, SequenceVersion.identity)
        .join(SequenceVersion, SequenceVersion.id == SequenceRow.current_version_id)
        .where(SequenceRow.status == SequenceStatus.LIVE)
    )
    for sequence_id, slug, version_id, identity_json in rows:
        identity = CourseIdentity.from_json(identity_json)
        lessons = await queries.version_lessons(session, version_id)
        by_id[sequence_id] = CoursePlan(
            sequence_id=sequence_id,
            slug=slug,
            lessons=tuple(planner.planned(row) for row in lessons),
            subjects={row.id: row.subject for row in lessons},
            own_cap=identity.max_per_subscriber_per_day,
            next_course=identity.next_course,
            next_after_days=identity.next_after_days,
        )
    versions = await session.execute(select(SequenceVersion.id, SequenceVersion.identity))
    caps = {
        version_id: CourseIdentity.from_json(identity).max_per_subscriber_per_day
        for version_id, identity in versions
    }
    return Courses(by_id, {plan.slug: plan for plan in by_id.values()}, caps)


async def forecast_list(
    session: AsyncSession,
    settings: Settings,
    *,
    start: datetime,
    days: int,
    email: str | None = None,
    course: str | None = None,
) -> AsyncIterator[list[Planned]]:
    """Each subscriber's forecast, one list per person (empty ones left out), in order of
    their id; only `email`, or only `course`'s lessons (to those on it now, or on a course
    that leads to it), when given."""
    courses = await live_courses(session)
    rules = rules_of(settings)
    end = start + timedelta(days=days)
    on_the_way = _leading_to(course, courses.by_slug) if course is not None else None
    after = 0
    while True:
        people = await _subscribers(session, after, email, on_the_way)
        if not people:
            return
        after = people[-1][0]
        for person in await _people(session, people, courses, settings, start):
            planned = forecast(
                person, start=start, end=end, rules=rules, courses_by_slug=courses.by_slug
            )
            if course is not None:
                planned = [item for item in planned if item.course_slug == course]
            if planned:
                yield planned


def _leading_to(slug: str, by_slug: dict[str, CoursePlan]) -> set[str]:
    """The course and those whose [on_finish] starts it, or starts one that does."""
    leading = {slug}
    while more := {
        plan.slug
        for plan in by_slug.values()
        if plan.next_course in leading and plan.slug not in leading
    }:
        leading |= more
    return leading


async def _subscribers(
    session: AsyncSession, after: int, email: str | None, courses: set[str] | None
) -> list[tuple[int, str, str | None]]:
    """The next batch of confirmed, unsuppressed subscribers: (id, email, time zone); with
    `courses`, only those on one of them now."""
    query = (
        select(Subscriber.id, Subscriber.email, Subscriber.timezone)
        .where(Subscriber.status == SubscriberStatus.CONFIRMED)
        .where(~select(Suppression.id).where(Suppression.email == Subscriber.email).exists())
        .where(Subscriber.id > after)
        .order_by(Subscriber.id)
        .limit(BATCH)
    )
    if email is not None:
        query = query.where(Subscriber.email == email)
    if courses is not None:
        query = query.where(
            select(Enrollment.id)
            .join(SequenceRow, SequenceRow.id == Enrollment.sequence_id)
            .where(Enrollment.subscriber_id == Subscriber.id)
            .where(SequenceRow.slug.in_(courses))
            .where(Enrollment.status == EnrollmentStatus.ACTIVE)
            .exists()
        )
    return [(id_, address, zone) for id_, address, zone in await session.execute(query)]


async def _people(
    session: AsyncSession,
    subscribers: list[tuple[int, str, str | None]],
    courses: Courses,
    settings: Settings,
    start: datetime,
) -> list[Person]:
    ids = [subscriber_id for subscriber_id, _, _ in subscribers]
    enrolled: dict[int, list[Enrolled]] = {}
    ever_on: dict[int, set[str]] = {}
    handled = await _handled_keys(session, ids)
    enrollments = await session.execute(
        select(
            Enrollment.subscriber_id,
            Enrollment.sequence_id,
            Enrollment.status,
            Enrollment.last_sent_at,
            SequenceRow.slug,
        )
        .join(SequenceRow, SequenceRow.id == Enrollment.sequence_id)
        .where(Enrollment.subscriber_id.in_(ids))
    )
    for subscriber_id, sequence_id, status, last_sent_at, slug in enrollments:
        ever_on.setdefault(subscriber_id, set()).add(slug)
        plan = courses.by_id.get(sequence_id)  # None: the course is paused
        if status == EnrollmentStatus.ACTIVE and plan is not None:
            keys = frozenset(handled.get((subscriber_id, sequence_id), ()))
            enrolled.setdefault(subscriber_id, []).append(Enrolled(plan, keys, last_sent_at))
    queued = await _queued(session, ids, courses)
    for subscriber_id, items in queued.items():
        # A lesson of a course someone left or finished is cancelled at its check.
        active = {plan.course.sequence_id for plan in enrolled.get(subscriber_id, ())}
        items[:] = [item for item in items if item.sequence_id in (None, *active)]
    sent = await queries.counted_sends(session, ids, start - CAP_LOOKBACK)
    default_zone = settings.schedule.zone
    return [
        Person(
            email=address,
            zone=zone_named(zone, default_zone),
            courses=tuple(enrolled.get(subscriber_id, ())),
            queued=tuple(queued.get(subscriber_id, ())),
            sent_lately=tuple(sent_at for _, sent_at in sent.get(subscriber_id, ())),
            ever_on=frozenset(ever_on.get(subscriber_id, ())),
        )
        for subscriber_id, address, zone in subscribers
    ]


async def _handled_keys(
    session: AsyncSession, ids: Iterable[int]
) -> dict[tuple[int, int], set[str]]:
    """(subscriber, course) -> the lesson keys they have a delivery for, in any state."""
    rows = await session.execute(
        select(Delivery.subscriber_id, Delivery.sequence_id, Delivery.lesson_key)
        .where(Delivery.subscriber_id.in_(list(ids)))
        .where(Delivery.lesson_key.is_not(None))
    )
    handled: dict[tuple[int, int], set[str]] = {}
    for subscriber_id, sequence_id, key in rows:
        if sequence_id is not None and key is not None:  # as asked; for the type checker
            handled.setdefault((subscriber_id, sequence_id), set()).add(key)
    return handled


async def _queued(
    session: AsyncSession, ids: list[int], courses: Courses
) -> dict[int, list[Queued]]:
    """Lessons and issues in the queue that a worker will send: not those of a paused
    course (planned afresh when it resumes) nor of a paused or cancelled issue."""
    rows = await session.execute(
        select(
            Delivery.id,
            Delivery.subscriber_id,
            Delivery.due_at,
            Delivery.kind,
            Delivery.sequence_id,
            Delivery.lesson_key,
            LessonSnapshot.version_id,
            LessonSnapshot.position,
            LessonSnapshot.subject,
            Broadcast.key,
            Broadcast.subject,
            Broadcast.status,
            Broadcast.max_per_day,
        )
        .outerjoin(LessonSnapshot, LessonSnapshot.id == Delivery.lesson_id)
        .outerjoin(Broadcast, Broadcast.id == Delivery.broadcast_id)
        .where(Delivery.subscriber_id.in_(ids))
        .where(Delivery.status.in_(queries.IN_FLIGHT))
        .where(Delivery.kind != DeliveryKind.CONFIRMATION)
    )
    queued: dict[int, list[Queued]] = {}
    for row in rows:
        delivery_id, subscriber_id, due_at, kind, sequence_id, lesson_key = row[:6]
        version_id, position, lesson_subject = row[6:9]
        key, issue_subject, issue_status, issue_cap = row[9:]
        if kind == DeliveryKind.BROADCAST:
            if issue_status not in (BroadcastStatus.SENDING, BroadcastStatus.ENQUEUEING):
                continue
            item = Queued(delivery_id, due_at, f"issue {key}: {issue_subject}", issue_cap)
        else:
            plan = courses.by_id.get(sequence_id or 0)
            if plan is None:
                continue
            item = Queued(
                delivery_id,
                due_at,
                f"lesson {position} of {plan.slug}: {lesson_subject}",
                courses.cap_of_version.get(version_id),
                sequence_id=sequence_id,
                lesson_key=lesson_key,
                course_slug=plan.slug,
            )
        queued.setdefault(subscriber_id, []).append(item)
    return queued
