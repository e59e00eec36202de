"""Newsletter issues sent to a segment through the real dispatcher, SMTP test server and
SQLite file: once per subscriber, however often the send is run; nobody who joined after
it started; nothing to anyone who left."""

from __future__ import annotations

import dataclasses
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from newsletter import broadcasts
from newsletter.content.newsletters import Newsletter, read_newsletter
from newsletter.db import queries
from newsletter.db.models import (
    BroadcastStatus,
    Delivery,
    DeliveryKind,
    DeliveryStatus,
    Subscriber,
)
from newsletter.errors import NewsletterError
from newsletter.subscribers import add_tags, unsubscribe
from tests.conftest import REPO
from tests.integration.harness import Stack, run, settings_for, shipped_course, started

START = datetime(2026, 6, 9, 9, 0, tzinfo=UTC)


def issue(
    tmp_path: Path, to: str = "all", send_at: str = "", more_front_matter: str = ""
) -> Newsletter:
    path = tmp_path / "2026-06.md"
    when = f"send_at: {send_at}\n" if send_at else ""
    path.write_text(
        f"---\nsubject: June news\npreheader: What is new this month\nto: {to}\n{when}"
        f"{more_front_matter}---\n\n"
        "Hello {{ first_name }},\n\nTwo new lessons are out.\n",
        encoding="utf-8",
    )
    return read_newsletter(path)


async def send(
    stack: Stack, newsletter: Newsletter, *, batches: int | None = None
) -> tuple[int, bool]:
    """What `newsletter broadcast send` does: start (or resume), queue in batches, finish.
    With `batches`, it is cut off after queueing that many, as by a crash."""
    async with stack.sessions.begin() as session:
        broadcast, resumed = await broadcasts.start(
            session,
            newsletter,
            newsletter.segment,
            newsletter.send_at or stack.clock.now(),
            stack.clock.now(),
        )
        broadcast_id = broadcast.id
        if broadcast.enqueued_at is not None:
            return 0, resumed  # all queued before: the command stops here too
    queued, after, done = 0, 0, 0
    while True:
        if done == batches:
            return queued, resumed  # cut off: a rerun queues the rest
        done += 1
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


def test_an_issue_with_a_cap_of_its_own_goes_the_same_morning(settings, tmp_path, smtp_server):
    async def scenario() -> None:
        capped = settings_for(settings, tmp_path, max_per_subscriber_per_day=1)
        async with started(capped, smtp_server, START) as stack:
            course = await stack.queue(shipped_course(REPO))
            await stack.subscribe(
                "ann@example.com", timezone="America/New_York", sequence_id=course
            )
            await stack.run()  # the welcome lesson: one today
            urgent = issue(tmp_path, more_front_matter="max_per_subscriber_per_day: 2\n")
            await send(stack, urgent)
            await stack.run()

            # The issue's own cap of 2 lets it through where config's 1 would have held it
            # to her next morning (the test above).
            assert len(stack.received("ann@example.com")) == 2

    run(scenario())


def test_a_course_with_a_cap_of_its_own_is_held_to_it_and_others_to_configs(
    settings, tmp_path, smtp_server
):
    async def scenario() -> None:
        capped = settings_for(settings, tmp_path, max_per_subscriber_per_day=1)
        shipped = shipped_course(REPO)
        intensive = dataclasses.replace(
            shipped,
            slug="intensive",
            identity=dataclasses.replace(shipped.identity, max_per_subscriber_per_day=2),
        )
        async with started(capped, smtp_server, START) as stack:
            first = await stack.queue(shipped)
            ann = await stack.subscribe(
                "ann@example.com", timezone="America/New_York", sequence_id=first
            )
            await stack.run()  # the welcome of the first course: one today
            second = await stack.queue(dataclasses.replace(shipped, slug="second"))
            third = await stack.queue(intensive)
            async with stack.sessions.begin() as session:
                await queries.enroll(session, ann, second, stack.clock.now())
                await queries.enroll(session, ann, third, stack.clock.now())
            await stack.run()

            # Today: the first course's welcome and the intensive one's (its own cap is 2);
            # the second course's welcome waits for her next morning (config's cap of 1).
            assert len(stack.received("ann@example.com")) == 2
            async with stack.sessions() as session:
                waiting = list(
                    await session.scalars(
                        select(Delivery.sequence_id).where(Delivery.status == DeliveryStatus.QUEUED)
                    )
                )
            assert waiting == [second]


#: 09:00 on 10 June: 00:00 UTC in Tokyo (JST), 08:00 UTC in London (BST, the default zone),
#: 13:00 UTC in New York (EDT).
TOKYO_NINE = datetime(2026, 6, 10, 0, 0, tzinfo=UTC)
LONDON_NINE = datetime(2026, 6, 10, 8, 0, tzinfo=UTC)
NEW_YORK_NINE = datetime(2026, 6, 10, 13, 0, tzinfo=UTC)
SECOND = timedelta(seconds=1)


async def due_times(stack: Stack) -> dict[str, datetime]:
    """When each person's copy of the issue is due, as queued (a send sets it to its time)."""
    async with stack.sessions() as session:
        rows = await session.execute(
            select(Subscriber.email, Delivery.due_at)
            .join(Delivery, Delivery.subscriber_id == Subscriber.id)
            .where(Delivery.kind == DeliveryKind.BROADCAST)
        )
        return {email: due_at for email, due_at in rows}


def test_an_issue_sent_at_a_local_time_reaches_each_subscriber_at_nine_on_their_clock(
    settings, tmp_path, smtp_server
):
    async def scenario() -> None:
        async with started(settings_for(settings, tmp_path), smtp_server, START) as stack:
            course = await stack.queue(shipped_course(REPO))
            await stack.subscribe("ann@example.com", timezone="Asia/Tokyo", sequence_id=course)
            await stack.subscribe("ben@example.com", sequence_id=course)  # the default zone
            await send(stack, issue(tmp_path, send_at="2026-06-10T09:00"))
            await stack.run()
            assert newsletter_recipients(stack) == Counter()

            stack.clock.set(TOKYO_NINE - SECOND)
            await stack.run()
            assert newsletter_recipients(stack) == Counter()
            stack.clock.set(TOKYO_NINE)
            await stack.run()
            assert newsletter_recipients(stack) == Counter({"ann@example.com": 1})

            stack.clock.set(LONDON_NINE - SECOND)
            await stack.run()
            assert newsletter_recipients(stack) == Counter({"ann@example.com": 1})
            stack.clock.set(LONDON_NINE)
            await stack.run()
            assert newsletter_recipients(stack) == Counter(
                {"ann@example.com": 1, "ben@example.com": 1}
            )

    run(scenario())


def test_whoever_is_past_the_local_time_when_the_send_starts_gets_the_issue_at_once(
    settings, tmp_path, smtp_server
):
    async def scenario() -> None:
        noon_in_tokyo = datetime(2026, 6, 10, 3, 0, tzinfo=UTC)  # 04:00 in London
        async with started(settings_for(settings, tmp_path), smtp_server, noon_in_tokyo) as stack:
            course = await stack.queue(shipped_course(REPO))
            await stack.subscribe("ann@example.com", timezone="Asia/Tokyo", sequence_id=course)
            await stack.subscribe("ben@example.com", sequence_id=course)
            await send(stack, issue(tmp_path, send_at="2026-06-10T09:00"))
            queued_as = await due_times(stack)
            await stack.run()

            assert queued_as == {
                "ann@example.com": noon_in_tokyo,  # the send's start: at once
                "ben@example.com": LONDON_NINE,
            }
            assert newsletter_recipients(stack) == Counter({"ann@example.com": 1})

    run(scenario())


def test_a_local_time_send_cut_off_and_run_again_later_times_everyone_as_one_run_would(
    settings, tmp_path, smtp_server, monkeypatch
):
    async def scenario() -> None:
        monkeypatch.setattr(broadcasts, "ENQUEUE_BATCH", 1)
        async with started(settings_for(settings, tmp_path), smtp_server, START) as stack:
            course = await stack.queue(shipped_course(REPO))
            await stack.subscribe("ben@example.com", sequence_id=course)
            await stack.subscribe("ann@example.com", timezone="Asia/Tokyo", sequence_id=course)
            await stack.subscribe("cy@example.com", timezone="America/New_York", sequence_id=course)
            june = issue(tmp_path, send_at="2026-06-10T09:00")
            await send(stack, june, batches=1)  # Ben queued, then the command died

            stack.clock.set(TOKYO_NINE + timedelta(hours=5))  # past Ann's 09:00, before Ben's
            _, resumed = await send(stack, june)
            queued_as = await due_times(stack)
            await stack.run()

            assert resumed
            assert queued_as == {
                "ben@example.com": LONDON_NINE,
                "ann@example.com": TOKYO_NINE,  # her 09:00, not the rerun's time
                "cy@example.com": NEW_YORK_NINE,
            }
            assert newsletter_recipients(stack) == Counter({"ann@example.com": 1})  # overdue

    run(scenario())


def test_an_issue_changed_from_one_instant_to_the_same_local_time_is_refused(
    settings, tmp_path, smtp_server
):
    async def scenario() -> None:
        async with started(settings_for(settings, tmp_path), smtp_server, START) as stack:
            await send(stack, issue(tmp_path, send_at="2026-06-10T09:00+00:00"))

            with pytest.raises(NewsletterError, match="rename the file to send it as a new"):
                await send(stack, issue(tmp_path, send_at="2026-06-10T09:00"))

    run(scenario())


def test_a_lesson_of_no_cap_still_counts_towards_an_issues_cap(settings, tmp_path, smtp_server):
    async def scenario() -> None:
        capped = settings_for(settings, tmp_path, max_per_subscriber_per_day=1)
        shipped = shipped_course(REPO)
        uncapped = dataclasses.replace(
            shipped, identity=dataclasses.replace(shipped.identity, max_per_subscriber_per_day=0)
        )
        async with started(capped, smtp_server, START) as stack:
            course = await stack.queue(uncapped)
            await stack.subscribe("ann@example.com", timezone="Europe/London", sequence_id=course)
            await send(stack, issue(tmp_path, send_at="2026-06-09T09:00:01+00:00"))
            stack.clock.advance(timedelta(seconds=1))
            # One pass: the welcome (due first) goes, then the issue is checked before the
            # welcome's outcome is recorded.
            await stack.run()

            [received] = stack.received("ann@example.com")
            assert received["Subject"] != "June news"  # the lesson went; the issue waits
            async with stack.sessions() as session:
                waiting = list(
                    await session.scalars(
                        select(Delivery.kind).where(Delivery.status == DeliveryStatus.QUEUED)
                    )
                )
            assert waiting == [DeliveryKind.BROADCAST]

    run(scenario())
