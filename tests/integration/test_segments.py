"""Segments matched by the database: tags, courses in each state, signup dates and time
zones, on a real SQLite file."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update

from newsletter.db.models import Enrollment, EnrollmentStatus, Subscriber
from newsletter.segments import parse, where_clause
from newsletter.subscribers import add_tags, forget
from tests.conftest import REPO
from tests.integration.harness import Stack, run, settings_for, shipped_course, started

START = datetime(2026, 6, 9, 9, 0, tzinfo=UTC)
COURSE = "leg-weakness-after-microdiscectomy"


async def people(stack: Stack) -> dict[str, int]:
    """Ann: baker, on the course. Ben: baker, finished it. Cy: left it, in New York. Di: no
    course, no tag, signed up a month later."""
    sequence = await stack.queue(shipped_course(REPO))
    ids = {
        "ann": await stack.subscribe("ann@example.com", sequence_id=sequence),
        "ben": await stack.subscribe("ben@example.com", sequence_id=sequence),
        "cy": await stack.subscribe(
            "cy@example.com", timezone="America/New_York", sequence_id=sequence
        ),
    }
    stack.clock.advance(timedelta(days=30))
    async with stack.sessions.begin() as session:
        await add_tags(session, [(ids["ann"], "baker"), (ids["ben"], "baker")], START)
        for name, status in (("ben", EnrollmentStatus.COMPLETED), ("cy", EnrollmentStatus.LEFT)):
            await session.execute(
                update(Enrollment)
                .where(Enrollment.subscriber_id == ids[name])
                .values(status=status)
            )
    async with stack.sessions.begin() as session:
        di = Subscriber(
            email="di@example.com",
            status="confirmed",
            consent={},
            created_at=stack.clock.now(),
            updated_at=stack.clock.now(),
        )
        session.add(di)
    async with stack.sessions() as session:
        ids["di"] = await session.scalar(
            select(Subscriber.id).where(Subscriber.email == "di@example.com")
        )
    return ids


async def matching(stack: Stack, text: str) -> set[str]:
    async with stack.sessions() as session:
        emails = await session.scalars(
            select(Subscriber.email).where(where_clause(parse(text), "Europe/London"))
        )
        return {email.partition("@")[0] for email in emails}


def test_each_kind_of_term_matches_who_it_says(settings, tmp_path, smtp_server):
    async def scenario() -> None:
        async with started(settings_for(settings, tmp_path), smtp_server, START) as stack:
            await people(stack)
            assert await matching(stack, "all") == {"ann", "ben", "cy", "di"}
            assert await matching(stack, "tag:baker") == {"ann", "ben"}
            assert await matching(stack, f"course:{COURSE}") == {"ann", "ben", "cy"}
            assert await matching(stack, f"course:{COURSE}:active") == {"ann"}
            assert await matching(stack, f"course:{COURSE}:finished") == {"ben"}
            assert await matching(stack, f"course:{COURSE}:left") == {"cy"}
            assert await matching(stack, "tz:America/New_York") == {"cy"}
            # Those without a zone of their own are in the configured one.
            assert await matching(stack, "tz:Europe/London") == {"ann", "ben", "di"}
            assert await matching(stack, "signup:after:2026-07-01") == {"di"}
            assert await matching(stack, "signup:before:2026-07-01") == {"ann", "ben", "cy"}
            assert await matching(stack, f"tag:baker and not course:{COURSE}:active") == {"ben"}
            assert await matching(stack, f"not course:{COURSE} or tag:nobody") == {"di"}

    run(scenario())


def test_erasing_someone_takes_their_tags_with_them(settings, tmp_path, smtp_server):
    async def scenario() -> None:
        async with started(settings_for(settings, tmp_path), smtp_server, START) as stack:
            ids = await people(stack)
            async with stack.sessions.begin() as session:
                ann = await session.get(Subscriber, ids["ann"])
                assert ann is not None
                await forget(session, ann)
            assert await matching(stack, "tag:baker") == {"ben"}

    run(scenario())
