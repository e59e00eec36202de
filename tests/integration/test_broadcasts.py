"""Newsletter issues sent to a segment through the real dispatcher, SMTP test server and
SQLite file: once per subscriber, however often the send is run; nobody who joined after
it started; nothing to anyone who left."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select, update

from newsletter import broadcasts
from newsletter.content.newsletters import Newsletter, read_newsletter
from newsletter.db.models import (
    BroadcastStatus,
    Delivery,
    DeliveryKind,
    DeliveryStatus,
    Subscriber,
)
from newsletter.subscribers import add_tags, unsubscribe
from tests.conftest import REPO
from tests.integration.harness import Stack, run, settings_for, shipped_course, started

START = datetime(2026, 6, 9, 9, 0, tzinfo=UTC)


def issue(tmp_path: Path, to: str = "all") -> Newsletter:
    path = tmp_path / "2026-06.md"
    path.write_text(
        f"---\nsubject: June news\npreheader: What is new this month\nto: {to}\n---\n\n"
        "Hello {{ first_name }},\n\nTwo new lessons are out.\n",
        encoding="utf-8",
    )
    return read_newsletter(path)


async def send(stack: Stack, newsletter: Newsletter) -> tuple[int, bool]:
    """What `newsletter broadcast send` does: start (or resume), queue in batches, finish."""
    async with stack.sessions.begin() as session:
        broadcast, resumed = await broadcasts.start(
            session, newsletter, newsletter.segment, stack.clock.now(), stack.clock.now()
        )
        broadcast_id = broadcast.id
        if broadcast.enqueued_at is not None:
            return 0, resumed  # all queued before: the command stops here too
    queued, after = 0, 0
    while True:
        async with stack.sessions.begin() as session:
            row = await session.get_one(broadcasts.Broadcast, broadcast_id)
            taken = await broadcasts.enqueue_batch(
                session,
                row,
                default_timezone="Europe/London",
                message_domain="example.org",
                after=after,
                now=stack.clock.now(),
            )
        if not taken:
            break
        queued, after = queued + len(taken), taken[-1]
    async with stack.sessions.begin() as session:
        row = await session.get_one(broadcasts.Broadcast, broadcast_id)
        if row.enqueued_at is None:
            await broadcasts.finish_enqueueing(session, row, stack.clock.now())
    return queued, resumed


def newsletter_recipients(stack: Stack) -> Counter[str]:
    return Counter(
        rcpt
        for _, rcpts, data in stack.server.messages
        if b"\r\nSubject: June news\r\n" in data
        for rcpt in rcpts
    )


def test_an_issue_reaches_its_segment_once_and_a_rerun_sends_nothing(
    settings, tmp_path, smtp_server
):
    async def scenario() -> None:
        async with started(settings_for(settings, tmp_path), smtp_server, START) as stack:
            course = await stack.queue(shipped_course(REPO))
            ids = {
                name: await stack.subscribe(f"{name}@example.com", sequence_id=course)
                for name in ("ann", "ben", "cy")
            }
            async with stack.sessions.begin() as session:
                await add_tags(session, [(ids["ann"], "news"), (ids["ben"], "news")], START)
            june = issue(tmp_path, to="tag:news")

            queued, resumed = await send(stack, june)
            await stack.run()
            again, resumed_again = await send(stack, june)
            await stack.run()

            assert (queued, resumed) == (2, False)
            assert (again, resumed_again) == (0, True)  # all queued before: nobody more
            assert newsletter_recipients(stack) == Counter(
                {"ann@example.com": 1, "ben@example.com": 1}
            )
            [message] = [
                m for m in stack.received("ann@example.com") if m["Subject"] == "June news"
            ]
            text = message.get_body(("plain",)).get_content()
            assert "Two new lessons are out." in text
            assert "Unsubscribe: " in text
            assert str(message["List-Id"]).endswith("<newsletter.example.org>")

    run(scenario())


def test_the_audience_is_fixed_when_the_send_starts(settings, tmp_path, smtp_server):
    async def scenario() -> None:
        async with started(settings_for(settings, tmp_path), smtp_server, START) as stack:
            course = await stack.queue(shipped_course(REPO))
            ann = await stack.subscribe("ann@example.com", sequence_id=course)
            await stack.subscribe("ben@example.com", sequence_id=course)
            june = issue(tmp_path)
            await send(stack, june)  # queued for Ann and Ben, not sent yet

            stack.clock.advance(timedelta(minutes=5))
            await stack.subscribe("cy@example.com", sequence_id=course)  # joined later
            async with stack.sessions.begin() as session:
                person = await session.get_one(Subscriber, ann)
                await unsubscribe(session, person, stack.clock.now())  # left meanwhile
            await send(stack, june)  # a rerun adds nobody who joined since
            await stack.run()

            assert newsletter_recipients(stack) == Counter({"ben@example.com": 1})

    run(scenario())


def test_a_paused_issue_waits_and_a_cancelled_one_never_goes(settings, tmp_path, smtp_server):
    async def scenario() -> None:
        async with started(settings_for(settings, tmp_path), smtp_server, START) as stack:
            course = await stack.queue(shipped_course(REPO))
            await stack.subscribe("ann@example.com", sequence_id=course)
            june = issue(tmp_path)
            await send(stack, june)
            async with stack.sessions.begin() as session:
                await broadcasts.set_status(
                    session, june.key, BroadcastStatus.PAUSED, now=stack.clock.now()
                )
            await stack.run()
            assert newsletter_recipients(stack) == Counter()
            async with stack.sessions() as session:
                paused = await broadcasts.by_key(session, june.key)
            assert (paused.status, paused.pause_reason) == (BroadcastStatus.PAUSED, "")  # by hand

            async with stack.sessions.begin() as session:
                await broadcasts.set_status(
                    session, june.key, BroadcastStatus.CANCELLED, now=stack.clock.now()
                )
            await stack.run()
            async with stack.sessions() as session:
                broadcast = await broadcasts.by_key(session, june.key)
                counts = await broadcasts.progress(session, broadcast.id)
            assert newsletter_recipients(stack) == Counter()
            assert counts == Counter({DeliveryStatus.CANCELLED: 1})

    run(scenario())


def test_a_rerun_after_the_audience_was_queued_adds_nobody_tagged_since(
    settings, tmp_path, smtp_server
):
    async def scenario() -> None:
        async with started(settings_for(settings, tmp_path), smtp_server, START) as stack:
            course = await stack.queue(shipped_course(REPO))
            ann = await stack.subscribe("ann@example.com", sequence_id=course)
            ben = await stack.subscribe("ben@example.com", sequence_id=course)
            async with stack.sessions.begin() as session:
                await add_tags(session, [(ann, "news")], START)
            june = issue(tmp_path, to="tag:news")
            await send(stack, june)
            async with stack.sessions.begin() as session:
                await add_tags(session, [(ben, "news")], START)  # tagged after the start

            await send(stack, june)
            await stack.run()

            assert newsletter_recipients(stack) == Counter({"ann@example.com": 1})

    run(scenario())


def test_mail_a_worker_held_when_its_issue_was_cancelled_is_cancelled_not_stuck(
    settings, tmp_path, smtp_server
):
    async def scenario() -> None:
        async with started(settings_for(settings, tmp_path), smtp_server, START) as stack:
            course = await stack.queue(shipped_course(REPO))
            await stack.subscribe("ann@example.com", sequence_id=course)
            june = issue(tmp_path)
            await send(stack, june)
            async with stack.sessions.begin() as session:
                await broadcasts.set_status(
                    session, june.key, BroadcastStatus.CANCELLED, now=stack.clock.now()
                )
                # A worker held it meanwhile, and its outcome (a retry) put it back in the
                # queue after the cancel had cancelled everything queued.
                await session.execute(
                    update(Delivery)
                    .where(Delivery.kind == DeliveryKind.BROADCAST)
                    .values(status=DeliveryStatus.QUEUED)
                )
            await stack.run()

            async with stack.sessions() as session:
                broadcast = await broadcasts.by_key(session, june.key)
                counts = await broadcasts.progress(session, broadcast.id)
            assert counts == Counter({DeliveryStatus.CANCELLED: 1})
            assert newsletter_recipients(stack) == Counter()

    run(scenario())


def test_the_daily_cap_holds_an_issue_back_to_the_persons_next_morning(
    settings, tmp_path, smtp_server
):
    async def scenario() -> None:
        capped = settings_for(settings, tmp_path, max_per_subscriber_per_day=1)
        async with started(capped, smtp_server, START) as stack:
            course = await stack.queue(shipped_course(REPO))
            # 05:00 in New York: the welcome lesson goes at once, and the issue is due too.
            await stack.subscribe(
                "ann@example.com", timezone="America/New_York", sequence_id=course
            )
            await send(stack, issue(tmp_path))
            await stack.run()

            assert len(stack.received("ann@example.com")) == 1
            async with stack.sessions() as session:
                rows = await session.scalars(
                    select(Delivery).where(Delivery.status == DeliveryStatus.QUEUED)
                )
                waiting = list(rows)
            # Held, not dropped: due at the send window's start on her next day (08:00 EDT).
            assert [row.due_at for row in waiting] == [datetime(2026, 6, 10, 12, 0, tzinfo=UTC)]

            stack.clock.advance(timedelta(hours=26, minutes=59))  # 07:59 her next day
            await stack.run()
            assert len(stack.received("ann@example.com")) == 1
            stack.clock.advance(timedelta(minutes=1))
            await stack.run()
            assert len(stack.received("ann@example.com")) == 2

    run(scenario())
