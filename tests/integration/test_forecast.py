"""The forecast against what the worker then sends: the same lessons and issues, to the same
people, in the same order, at the same instants; daily cap, send window,
send times, daylight-saving change and a course that follows another included."""

from __future__ import annotations

import dataclasses
from collections import Counter
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import select

from newsletter.content.course import Course, load_course
from newsletter.db.models import (
    Broadcast,
    Delivery,
    DeliveryStatus,
    LessonSnapshot,
    Subscriber,
)
from newsletter.forecasts import forecast_list
from newsletter.scheduling.forecast import HeldBy, Planned
from tests.conftest import REPO
from tests.integration.harness import Stack, run, settings_for, shipped_course, started
from tests.integration.test_broadcasts import issue, send

# A Wednesday; Europe leaves winter time on Sunday the 29th.
START = datetime(2026, 3, 25, 9, 0, tzinfo=UTC)
DAYS = 16
PEOPLE = {
    "ann@example.com": "America/New_York",  # 05:00 at the start: before her send window
    "bo@example.com": "Asia/Tokyo",
    "cy@example.com": "Europe/London",
    "di@example.com": "Asia/Kolkata",  # half an hour off UTC
    "ed@example.com": "America/Los_Angeles",  # 02:00 at the start; not sent the issue
}


def courses() -> list[Course]:
    """The shipped course, then the sourdough course a day after it, whose second lesson
    has a send time of its own."""
    sourdough = load_course(REPO / "tests" / "fixtures" / "courses" / "sourdough")
    feeding = dataclasses.replace(sourdough.lessons[1], send_at=time(9, 30))
    sourdough = dataclasses.replace(
        sourdough, lessons=(sourdough.lessons[0], feeding, *sourdough.lessons[2:])
    )
    shipped = shipped_course(REPO)
    identity = dataclasses.replace(shipped.identity, next_course=sourdough.slug, next_after_days=1)
    return [dataclasses.replace(shipped, identity=identity), sourdough]


async def actual_sends(stack: Stack) -> list[tuple[str, str, datetime]]:
    """(email, subject, sent at) of every lesson and issue the worker sent."""
    async with stack.sessions() as session:
        rows = await session.execute(
            select(Subscriber.email, LessonSnapshot.subject, Broadcast.subject, Delivery.sent_at)
            .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
            .outerjoin(LessonSnapshot, LessonSnapshot.id == Delivery.lesson_id)
            .outerjoin(Broadcast, Broadcast.id == Delivery.broadcast_id)
            .where(Delivery.status == DeliveryStatus.SENT)
            .order_by(Delivery.sent_at, Delivery.id)
        )
        return [(email, lesson or news, sent_at) for email, lesson, news, sent_at in rows]


def test_the_forecast_is_what_the_worker_then_sends(settings, tmp_path: Path, smtp_server):
    async def scenario() -> None:
        capped = settings_for(settings, tmp_path, max_per_subscriber_per_day=1)
        async with started(capped, smtp_server, START) as stack:
            first, _ = [await stack.queue(course) for course in courses()]
            for email, zone in PEOPLE.items():
                await stack.subscribe(email, timezone=zone, sequence_id=first)
            await send(
                stack,
                issue(tmp_path, "not tz:America/Los_Angeles", "2026-03-27T09:30+00:00"),
            )

            async with stack.sessions() as session:
                said: list[Planned] = [
                    item
                    async for planned in forecast_list(session, capped, start=START, days=DAYS)
                    for item in planned
                ]
                # Nobody is on the sourdough course yet: its lessons come to those on the
                # course that leads to it.
                sourdough_only = [
                    item
                    async for planned in forecast_list(
                        session, capped, start=START, days=DAYS, course="sourdough"
                    )
                    for item in planned
                ]
            await stack.run_through(timedelta(days=DAYS))  # the clock is at START
            done = await actual_sends(stack)

        assert sourdough_only == [item for item in said if item.course_slug == "sourdough"] != []
        assert len(done) == len(said) > 5 * 8  # 6 + 3 lessons each (most of them), an issue
        for email in PEOPLE:
            forecast_for = [item for item in said if item.email == email]
            sent_to = [(subject, at) for address, subject, at in done if address == email]
            assert [item.what.rsplit(": ", 1)[-1] for item in forecast_for] == [
                subject for subject, _ in sent_to
            ], email
            for item, (_, at) in zip(forecast_for, sent_to, strict=True):
                assert at == item.at, (email, item.what)
        # The cap and the window held mail back, as the forecast said, and nobody got more
        # than the cap on a day of their own.
        assert any(item.held_by is HeldBy.DAILY_CAP for item in said)
        assert any(item.held_by is HeldBy.SEND_WINDOW for item in said)
        per_day = Counter(
            (email, at.astimezone(ZoneInfo(PEOPLE[email])).date()) for email, _, at in done
        )
        assert max(per_day.values()) == 1

    run(scenario())
