"""A course's [on_finish]: finishing it tags the subscriber and starts the next course the
given number of days later, once; through the real SMTP test server and SQLite."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from newsletter.content.course import load_course
from newsletter.db import queries
from newsletter.db.models import Enrollment, EnrollmentStatus, Sequence
from newsletter.signup import leave_course
from newsletter.subscribers import tags_of
from tests.conftest import COURSE_DIR, REPO
from tests.integration.harness import Stack, run, settings_for, started

START = datetime(2026, 6, 9, 9, 0, tzinfo=UTC)
SOURDOUGH = REPO / "tests" / "fixtures" / "courses" / "sourdough"


def courses(tmp_path: Path):  # type: ignore[no-untyped-def]
    first = Path(shutil.copytree(COURSE_DIR, tmp_path / "lessons" / "back-course"))
    manifest = first / "course.toml"
    manifest.write_text(
        manifest.read_text(encoding="utf-8")
        + '\n[on_finish]\ntag = "finished-back"\nstart = "sourdough"\nstart_after_days = 3\n'
    )
    second = Path(shutil.copytree(SOURDOUGH, tmp_path / "lessons" / "sourdough"))
    return load_course(first), load_course(second)


async def enrollment(stack: Stack, subscriber_id: int, slug: str) -> Enrollment | None:
    async with stack.sessions() as session:
        return await session.scalar(
            select(Enrollment)
            .join(Sequence, Sequence.id == Enrollment.sequence_id)
            .where(Enrollment.subscriber_id == subscriber_id, Sequence.slug == slug)
        )


def test_finishing_a_course_tags_and_starts_the_next_days_later(settings, tmp_path, smtp_server):
    async def scenario() -> None:
        async with started(settings_for(settings, tmp_path), smtp_server, START) as stack:
            back, bread = courses(tmp_path)
            first = await stack.queue(back)
            await stack.queue(bread)
            ann = await stack.subscribe("ann@example.com", sequence_id=first)

            # Until the last lesson of the first course, nothing follows.
            for _ in range(4 * 90):  # six-hour steps; the course takes weeks, not months
                done = await enrollment(stack, ann, "back-course")
                assert done is not None
                if done.status == EnrollmentStatus.COMPLETED:
                    break
                assert await enrollment(stack, ann, "sourdough") is None
                await stack.run()
                stack.clock.advance(timedelta(hours=6))
            else:
                raise AssertionError("the first course never finished")
            finished_at = stack.clock.now()

            async with stack.sessions() as session:
                assert await tags_of(session, ann) == ["finished-back"]
            following = await enrollment(stack, ann, "sourdough")
            assert following is not None
            assert following.status == EnrollmentStatus.ACTIVE
            assert finished_at - timedelta(hours=6) + timedelta(days=3) <= following.enrolled_at
            assert following.enrolled_at <= finished_at + timedelta(days=3)

            sent_before = len(stack.received("ann@example.com"))
            await stack.run_for(timedelta(days=2, hours=12), step=timedelta(hours=6))
            assert len(stack.received("ann@example.com")) == sent_before  # not yet
            await stack.run_for(timedelta(days=10), step=timedelta(hours=6))
            subjects = [str(m["Subject"]) for m in stack.received("ann@example.com")]
            assert len(subjects) == sent_before + len(bread.lessons)
            assert subjects[-len(bread.lessons) :] == [lesson.subject for lesson in bread.lessons]

    run(scenario())


def test_someone_who_left_the_next_course_is_not_started_on_it_again(
    settings, tmp_path, smtp_server
):
    async def scenario() -> None:
        async with started(settings_for(settings, tmp_path), smtp_server, START) as stack:
            back, bread = courses(tmp_path)
            first = await stack.queue(back)
            second = await stack.queue(bread)
            ann = await stack.subscribe("ann@example.com", sequence_id=first)
            async with stack.sessions.begin() as session:
                await queries.enroll(session, ann, second, START)
                await leave_course(session, ann, second)

            await stack.run_for(timedelta(days=60), step=timedelta(hours=12))

            following = await enrollment(stack, ann, "sourdough")
            assert following is not None
            assert following.status == EnrollmentStatus.LEFT
            done = await enrollment(stack, ann, "back-course")
            assert done is not None
            assert done.status == EnrollmentStatus.COMPLETED

    run(scenario())
