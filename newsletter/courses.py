"""Courses in the database: a queued course becomes a versioned snapshot of its files, and a
snapshot becomes a Course again for rendering, so what was queued is what is sent."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from newsletter.content.course import Course, content_fingerprint
from newsletter.content.identity import CourseIdentity
from newsletter.content.lessons import Lesson
from newsletter.db import queries
from newsletter.db.models import (
    Delivery,
    DeliveryStatus,
    EnrollmentStatus,
    LessonSnapshot,
    Sequence,
    SequenceStatus,
    SequenceVersion,
    enrollments_table,
)
from newsletter.errors import NewsletterError


@dataclass(frozen=True, slots=True)
class Queued:
    sequence_id: int
    version: int
    created: bool  #: a new sequence, rather than a new version of one
    skipped: int  #: lessons inserted behind subscribers and skipped for them
    #: The live version already holds this very content: no version was added.
    unchanged: bool = False


async def queue_course(
    session: AsyncSession, course: Course, now: datetime, *, skip_inserted: bool = False
) -> Queued:
    """Store the course as the sequence's next version and make that version current.

    Subscribers part-way through continue on the new version: lessons they had are never
    sent again (deliveries are unique per lesson key); a lesson inserted before their
    furthest lesson is still sent to them, unless `skip_inserted`.

    A course whose content is that of the current version adds nothing: a version that
    differs in nothing would only make the history harder to read."""
    sequence = await queries.sequence_by_slug(session, course.slug)
    created = sequence is None
    if sequence is None:
        sequence = Sequence(slug=course.slug, status=SequenceStatus.LIVE, created_at=now)
        session.add(sequence)
        await session.flush()
    elif sequence.status == SequenceStatus.ARCHIVED:
        raise NewsletterError(f"sequence '{course.slug}' is archived; it cannot be queued again")
    elif current := await queries.current_version(session, sequence.id):
        live = await load_snapshot(session, current.id, course.slug)
        if content_fingerprint(live) == content_fingerprint(course):
            return Queued(sequence.id, current.number, created=False, skipped=0, unchanged=True)
    latest = await session.scalar(
        select(SequenceVersion.number)
        .where(SequenceVersion.sequence_id == sequence.id)
        .order_by(SequenceVersion.number.desc())
        .limit(1)
    )
    version = SequenceVersion(
        sequence_id=sequence.id,
        number=(latest or 0) + 1,
        title=course.title,
        description=course.description,
        source=str(course.path),
        identity=course.identity.to_json(),
        templates=dict(course.templates),
        created_at=now,
    )
    session.add(version)
    await session.flush()
    session.add_all(
        LessonSnapshot(
            version_id=version.id,
            position=position,
            key=lesson.key,
            file_name=lesson.path.name,
            subject=lesson.subject,
            preheader=lesson.preheader,
            delay_s=int(lesson.delay.total_seconds()),
            send_at=lesson.send_at,
            body=lesson.body,
            body_line=lesson.body_line,
        )
        for position, lesson in enumerate(course.lessons, start=1)
    )
    sequence.current_version_id = version.id
    await session.flush()
    skipped = (
        await _skip_inserted_lessons(session, sequence.id, version.id, now) if skip_inserted else 0
    )
    await _reopen_completed(session, sequence.id, now)
    await queries.look_after_sends_in_flight(session, sequence.id)
    return Queued(sequence.id, version.number, created, skipped)


async def _skip_inserted_lessons(
    session: AsyncSession, sequence_id: int, version_id: int, now: datetime
) -> int:
    """For each enrolled subscriber, mark lessons that sit before their furthest received
    lesson and that they never had as handled (cancelled), so they are not sent."""
    lessons = await queries.version_lessons(session, version_id)
    position = {lesson.key: lesson.position for lesson in lessons}
    rows = await session.execute(
        select(Delivery.subscriber_id, Delivery.lesson_key).where(
            Delivery.sequence_id == sequence_id
        )
    )
    had: dict[int, set[str]] = {}
    for subscriber_id, key in rows:
        if key is not None:
            had.setdefault(subscriber_id, set()).add(key)
    skips = []
    for subscriber_id, keys in had.items():
        furthest = max((position[k] for k in keys if k in position), default=0)
        skips += [
            {
                "subscriber_id": subscriber_id,
                "sequence_id": sequence_id,
                "lesson_id": lesson.id,
                "lesson_key": lesson.key,
                "status": DeliveryStatus.CANCELLED,
                "last_error": "skipped: inserted behind this subscriber when queued",
                "due_at": now,
                "message_id": "",
                "created_at": now,
            }
            for lesson in lessons
            if lesson.position < furthest and lesson.key not in keys
        ]
    await queries.create_lesson_deliveries(session, skips)
    return len(skips)


async def _reopen_completed(session: AsyncSession, sequence_id: int, now: datetime) -> None:
    """Subscribers who had finished get the lessons a new version adds at its end."""
    table = enrollments_table
    await session.execute(
        table.update()
        .where(table.c.sequence_id == sequence_id)
        .where(table.c.status == EnrollmentStatus.COMPLETED)
        .values(status=EnrollmentStatus.ACTIVE, next_check_at=now)
    )


async def load_snapshot(session: AsyncSession, version_id: int, slug: str) -> Course:
    version = await session.get(SequenceVersion, version_id)
    if version is None:
        raise NewsletterError(f"sequence version {version_id} does not exist")
    folder = Path(f"{slug}@v{version.number}")
    lessons = tuple(
        Lesson(
            path=folder / row.file_name,
            key=row.key,
            subject=row.subject,
            preheader=row.preheader,
            delay=timedelta(seconds=row.delay_s),
            send_at=row.send_at,
            body=row.body,
            body_line=row.body_line,
        )
        for row in await queries.version_lessons(session, version_id)
    )
    return Course(
        slug,
        folder,
        version.title,
        version.description,
        lessons,
        CourseIdentity.from_json(version.identity),
        {str(name): str(text) for name, text in (version.templates or {}).items()},
    )


async def set_sequence_status(
    session: AsyncSession, sequence: Sequence, status: SequenceStatus, now: datetime
) -> None:
    """Pause, resume or archive a sequence.

    Catch-up rule on resume: every waiting step of the sequence moves later by the length
    of the pause, so resuming sends nothing in a burst that would not have gone out anyway
    (docs/delivery.md)."""
    held = await queries.flag(session, queries.course_held(sequence.id))
    if held is not None and held.until is None and status != SequenceStatus.PAUSED:
        # Its bounces and complaints so far were dealt with: count afresh from now.
        await queries.set_flag(session, held.name, until=now, reason=held.reason, now=now)
    if status == SequenceStatus.PAUSED:
        sequence.paused_at = sequence.paused_at or now  # pausing twice keeps the first start
    elif sequence.paused_at is not None:
        if status == SequenceStatus.LIVE:
            await queries.shift_pending_work(session, sequence.id, now - sequence.paused_at)
        sequence.paused_at = None
    sequence.status = status
