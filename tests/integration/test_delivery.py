"""Drip delivery end to end: real SQLite file, real SMTP server, a clock the test moves."""

from __future__ import annotations

import asyncio
import re
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import select

from newsletter.content.course import load_course
from newsletter.courses import set_sequence_status
from newsletter.db import queries
from newsletter.db.models import (
    DeliveryStatus,
    Enrollment,
    EnrollmentStatus,
    Sequence,
    SequenceStatus,
    Subscriber,
    SubscriberStatus,
)
from newsletter.delivery.transport import Envelope, SendReport, SmtpTransport
from newsletter.subscribers import NewSubscriber, add_subscriber, unsubscribe
from newsletter.tokens import Purpose, Tokens
from tests.conftest import COURSE_DIR, REPO
from tests.integration.harness import Stack, settings_for, shipped_course

# A Tuesday morning in London, in summer time.
START = datetime(2026, 6, 9, 9, 0, tzinfo=UTC)
LONDON = ZoneInfo("Europe/London")


def run(coroutine):  # type: ignore[no-untyped-def]
    return asyncio.run(coroutine)


async def with_stack(settings, tmp_path, smtp_server, scenario, **sending):  # type: ignore[no-untyped-def]
    stack = await Stack.start(settings_for(settings, tmp_path, **sending), smtp_server, START)
    try:
        return await scenario(stack)
    finally:
        await stack.close()


def test_every_lesson_arrives_once_in_order_on_the_right_day_and_hour(
    settings, tmp_path, smtp_server
):
    course = shipped_course(REPO)

    async def scenario(stack: Stack) -> None:
        sequence = await stack.queue(course)
        ana = await stack.subscribe("ana@example.com", name="Ana", sequence_id=sequence)
        await stack.run_through(timedelta(days=30))

        received = stack.received("ana@example.com")
        assert [m["Subject"] for m in received] == [lesson.subject for lesson in course.lessons]
        deliveries = await stack.deliveries(ana)
        assert [d.status for d in deliveries] == [DeliveryStatus.SENT] * len(course.lessons)
        sent = [d.sent_at for d in deliveries]
        assert sent[0] == START  # the welcome goes out at once
        for previous, current, lesson in zip(sent, sent[1:], course.lessons[1:], strict=False):
            assert previous is not None
            assert current is not None
            # Sent as it falls due, its delay after the previous send (all in the daytime).
            assert current - previous == lesson.delay
            local = current.astimezone(LONDON).time()
            assert settings.schedule.send_window_start <= local < settings.schedule.send_window_end
        assert len({m["Message-ID"] for m in received}) == len(received)

        async with stack.sessions() as session:
            enrollment = await session.scalar(select(Enrollment))
            assert enrollment is not None
            assert enrollment.status == EnrollmentStatus.COMPLETED

    run(with_stack(settings, tmp_path, smtp_server, scenario))


def test_lessons_follow_the_subscribers_time_zone_across_a_dst_change(
    settings, tmp_path, smtp_server
):
    course_dir = Path(shutil.copytree(COURSE_DIR, tmp_path / "timed"))
    for lesson in course_dir.glob("0[2-6]-*.md"):
        text = lesson.read_text()
        lesson.write_text(
            re.sub(r"^(delay: .*)$", r'\1\nsend_at: "07:30"', text, count=1, flags=re.M)
        )
    course = load_course(course_dir)
    new_york = ZoneInfo("America/New_York")

    async def scenario(stack: Stack) -> None:
        # US clocks go back on 2026-11-01: the course runs across it.
        stack.clock.set(datetime(2026, 10, 27, 16, 0, tzinfo=UTC))
        sequence = await stack.queue(course)
        bo = await stack.subscribe(
            "bo@example.com", timezone="America/New_York", sequence_id=sequence
        )
        await stack.run_through(timedelta(days=20))

        timed = [d for d in await stack.deliveries(bo) if d.lesson_key != "welcome"]
        assert [d.status for d in timed] == [DeliveryStatus.SENT] * 5
        local_times = {d.sent_at.astimezone(new_york).strftime("%H:%M") for d in timed if d.sent_at}
        assert local_times == {"07:30"}
        offsets = {d.sent_at.astimezone(new_york).utcoffset() for d in timed if d.sent_at}
        assert offsets == {timedelta(hours=-4), timedelta(hours=-5)}  # both sides of the change

    run(with_stack(settings, tmp_path, smtp_server, scenario))


def test_temporary_failures_are_retried_then_given_up_and_the_course_goes_on(
    settings, tmp_path, smtp_server
):
    smtp_server.answer_rcpt("cy@example.com", 451, "4.3.0 Try again later")

    async def scenario(stack: Stack) -> None:
        sequence = await stack.queue(shipped_course(REPO))
        cy = await stack.subscribe("cy@example.com", sequence_id=sequence)
        await stack.run_for(timedelta(hours=2), step=timedelta(minutes=5))
        [welcome] = await stack.deliveries(cy)
        assert welcome.status == DeliveryStatus.QUEUED  # waiting for its next try
        assert 2 <= welcome.attempts <= 5  # first retry after ~5 min, then doubling
        assert "451" in welcome.last_error

        # Given up after 4 days; the next lesson is due 2 days after that.
        await stack.run_for(timedelta(days=7), step=timedelta(hours=1))
        deliveries = await stack.deliveries(cy)
        assert deliveries[0].status == DeliveryStatus.FAILED
        assert "gave up" in deliveries[0].last_error
        assert len({d.message_id for d in deliveries}) == len(deliveries)
        assert len(deliveries) > 1  # the next lesson was queued after giving up
        assert (await stack.subscriber(cy)).status == SubscriberStatus.CONFIRMED
        assert stack.received("cy@example.com") == []

    run(with_stack(settings, tmp_path, smtp_server, scenario))


async def enrollment_of(stack: Stack, subscriber_id: int) -> Enrollment:
    async with stack.sessions() as session:
        enrollment = await session.scalar(
            select(Enrollment).where(Enrollment.subscriber_id == subscriber_id)
        )
    assert enrollment is not None
    return enrollment


def test_a_sent_lesson_costs_the_planner_no_look_until_the_next_may_be_due(
    settings, tmp_path, smtp_server
):
    async def scenario(stack: Stack) -> None:
        sequence = await stack.queue(shipped_course(REPO))
        ana = await stack.subscribe("ana@example.com", sequence_id=sequence)
        # The next lesson is 2 calendar days after the welcome's send, which is no earlier
        # than the welcome's due time; calendar days can be 2 hours short (planner.py).
        look = START + timedelta(days=2) - timedelta(hours=2)

        assert (await stack.worker.plan_once(START))["queued"] == 1
        assert (await enrollment_of(stack, ana)).next_check_at == look
        stack.clock.advance(timedelta(seconds=3))
        assert (await stack.worker.dispatch_once(stack.clock.now()))["sent"] == 1
        sent_at = START + timedelta(seconds=3)
        enrollment = await enrollment_of(stack, ana)
        assert enrollment.last_sent_at == sent_at
        assert enrollment.next_check_at == look  # the send asked for no look of its own
        assert (await stack.worker.plan_once(sent_at)).counts == {}

        assert (await stack.worker.plan_once(look)).counts == {"waiting": 1}
        assert (await enrollment_of(stack, ana)).next_check_at == sent_at + timedelta(days=2)
        stack.clock.set(sent_at + timedelta(days=2))
        assert (await stack.run())["sent"] == 1
        assert [d.sent_at for d in await stack.deliveries(ana)] == [
            sent_at,
            sent_at + timedelta(days=2),
        ]

    run(with_stack(settings, tmp_path, smtp_server, scenario))


def test_the_next_lesson_waits_for_one_still_being_retried_and_counts_from_its_send(
    settings, tmp_path, smtp_server
):
    smtp_server.answer_rcpt("cy@example.com", 451, "4.3.0 Try again later")

    async def scenario(stack: Stack) -> None:
        sequence = await stack.queue(shipped_course(REPO))
        cy = await stack.subscribe("cy@example.com", sequence_id=sequence)
        # Past the planner's look for the next lesson (2 days less 2 hours after the
        # welcome's due time): the welcome is still retrying, so the next one waits.
        report = await stack.run_for(timedelta(days=3), step=timedelta(hours=1))
        assert report["in_flight"] == 1
        [welcome] = await stack.deliveries(cy)
        assert welcome.status == DeliveryStatus.QUEUED
        assert welcome.attempts > 1
        assert (await enrollment_of(stack, cy)).next_check_at is None  # its send asks

        smtp_server.answer_rcpt("cy@example.com", 250, "2.1.5 OK")  # the mailbox is back
        await stack.run_for(timedelta(hours=5), step=timedelta(minutes=10))
        [welcome] = await stack.deliveries(cy)
        assert welcome.status == DeliveryStatus.SENT
        assert welcome.sent_at is not None
        await stack.run_for(timedelta(days=2, hours=1))
        deliveries = await stack.deliveries(cy)
        assert [d.lesson_key for d in deliveries] == ["welcome", "the-cause"]
        assert deliveries[1].sent_at is not None
        gap = deliveries[1].sent_at - welcome.sent_at
        assert timedelta(days=2) <= gap < timedelta(days=2, hours=1)

    run(with_stack(settings, tmp_path, smtp_server, scenario))


def test_a_lesson_inserted_while_the_previous_is_in_flight_is_timed_from_its_send(
    settings, tmp_path, smtp_server
):
    course_dir = Path(shutil.copytree(COURSE_DIR, tmp_path / "course"))

    async def scenario(stack: Stack) -> None:
        sequence = await stack.queue(load_course(course_dir))
        joy = await stack.subscribe("joy@example.com", sequence_id=sequence)
        assert (await stack.worker.plan_once(START))["queued"] == 1  # not sent yet
        # A lesson one day after the welcome, queued before the welcome goes out: the look
        # set for "the-cause" (2 days) must not hold it back.
        (course_dir / "015-questions.md").write_text(
            "---\nsubject: Questions for your doctor\npreheader: A short list to take along\n"
            "delay: 1 day\n---\nHi,\n\nA short list.\n"
        )
        await stack.queue(load_course(course_dir))
        await stack.run_for(timedelta(days=1, hours=1))
        deliveries = await stack.deliveries(joy)
        assert [d.lesson_key for d in deliveries] == ["welcome", "questions"]
        assert deliveries[1].sent_at == START + timedelta(days=1)

    run(with_stack(settings, tmp_path, smtp_server, scenario))


def test_a_retried_message_keeps_its_message_id(settings, tmp_path, smtp_server):
    smtp_server.answer_rcpt("di@example.com", 451, "4.2.0 Mailbox busy, try later", times=1)

    async def scenario(stack: Stack) -> None:
        sequence = await stack.queue(shipped_course(REPO))
        di = await stack.subscribe("di@example.com", sequence_id=sequence)
        await stack.run()
        [first] = await stack.deliveries(di)
        assert first.status == DeliveryStatus.QUEUED
        assert first.attempts == 1
        await stack.run_for(timedelta(minutes=30), step=timedelta(minutes=5))
        [delivery] = await stack.deliveries(di)
        assert delivery.status == DeliveryStatus.SENT
        [message] = stack.received("di@example.com")
        assert message["Message-ID"] == first.message_id == delivery.message_id

    run(with_stack(settings, tmp_path, smtp_server, scenario))


def test_a_hard_bounce_suppresses_the_address_and_stops_its_courses(
    settings, tmp_path, smtp_server
):
    smtp_server.answer_rcpt("gone@example.com", 550, "5.1.1 No such user")

    async def scenario(stack: Stack) -> None:
        sequence = await stack.queue(shipped_course(REPO))
        gone = await stack.subscribe("gone@example.com", sequence_id=sequence)
        ok = await stack.subscribe("ok@example.com", sequence_id=sequence)
        await stack.run_through(timedelta(days=30))

        assert [d.status for d in await stack.deliveries(gone)] == [DeliveryStatus.FAILED]
        assert (await stack.subscriber(gone)).status == SubscriberStatus.BOUNCED
        async with stack.sessions() as session:
            assert await queries.is_suppressed(session, "gone@example.com")
            statuses = dict(
                (await session.execute(select(Enrollment.subscriber_id, Enrollment.status))).all()
            )
        assert statuses[gone] == EnrollmentStatus.STOPPED
        assert statuses[ok] == EnrollmentStatus.COMPLETED
        assert len(stack.received("ok@example.com")) == 6

    run(with_stack(settings, tmp_path, smtp_server, scenario))


def test_unsubscribing_mid_course_stops_even_mail_already_queued(settings, tmp_path, smtp_server):
    async def scenario(stack: Stack) -> None:
        sequence = await stack.queue(shipped_course(REPO))
        eve = await stack.subscribe("eve@example.com", sequence_id=sequence)
        await stack.run_for(timedelta(days=2, hours=1))
        assert len(stack.received("eve@example.com")) == 2

        # Lesson 3 is planned (queued) but not yet sent when she leaves.
        stack.clock.advance(timedelta(days=2))
        await stack.worker.plan_once(stack.clock.now())
        assert (await stack.deliveries(eve))[-1].status == DeliveryStatus.QUEUED
        async with stack.sessions.begin() as session:
            await unsubscribe(session, await session.get_one(Subscriber, eve), stack.clock.now())
        await stack.run_through(timedelta(days=20))

        assert len(stack.received("eve@example.com")) == 2
        assert (await stack.deliveries(eve))[-1].status == DeliveryStatus.CANCELLED

    run(with_stack(settings, tmp_path, smtp_server, scenario))


def test_a_paused_sequence_sends_nothing_and_resumes_without_a_burst(
    settings, tmp_path, smtp_server
):
    async def scenario(stack: Stack) -> None:
        sequence = await stack.queue(shipped_course(REPO))
        fay = await stack.subscribe("fay@example.com", sequence_id=sequence)
        await stack.run()
        assert len(stack.received()) == 1
        paused_at = stack.clock.now()
        async with stack.sessions.begin() as session:
            row = await session.get_one(Sequence, sequence)
            await set_sequence_status(session, row, SequenceStatus.PAUSED, paused_at)

        await stack.run_for(timedelta(days=10))
        assert len(stack.received()) == 1

        async with stack.sessions.begin() as session:
            row = await session.get_one(Sequence, sequence)
            await set_sequence_status(session, row, SequenceStatus.LIVE, stack.clock.now())
        resumed_at = stack.clock.now()
        await stack.run()
        assert len(stack.received()) == 1  # the lesson due during the pause is not rushed out

        await stack.run_for(timedelta(days=2, hours=1))
        deliveries = await stack.deliveries(fay)
        assert [d.lesson_key for d in deliveries] == ["welcome", "the-cause"]
        assert deliveries[1].sent_at is not None
        # Two days after the welcome, counting only time the sequence was live.
        assert deliveries[1].sent_at - resumed_at == timedelta(days=2) - (
            paused_at - deliveries[0].sent_at  # type: ignore[operator]
        )

    run(with_stack(settings, tmp_path, smtp_server, scenario))


def test_a_requeued_edited_course_continues_without_repeats_and_sends_an_inserted_lesson(
    settings, tmp_path, smtp_server
):
    course_dir = Path(shutil.copytree(COURSE_DIR, tmp_path / "course"))

    async def scenario(stack: Stack) -> None:
        sequence = await stack.queue(load_course(course_dir))
        gil = await stack.subscribe("gil@example.com", sequence_id=sequence)
        await stack.run_for(timedelta(days=4, hours=1))
        assert len(stack.received("gil@example.com")) == 3

        # The writer rewords lesson 4 and inserts a lesson after the welcome.
        nerve = course_dir / "04-nerve-damage.md"
        nerve.write_text(
            nerve.read_text().replace(
                "subject: Why pain can ease but weakness may stay",
                "subject: When pain eases but weakness stays",
            )
        )
        (course_dir / "015-questions.md").write_text(
            "---\nsubject: Questions for your doctor\npreheader: A short list to take along\n"
            "delay: 1 day\n---\nHi {{ first_name }},\n\nA short list to take along.\n"
        )
        await stack.queue(load_course(course_dir))
        await stack.run_through(timedelta(days=20))

        subjects = [m["Subject"] for m in stack.received("gil@example.com")]
        assert len(subjects) == len(set(subjects)) == 7
        assert subjects[3] == "Questions for your doctor"
        assert "When pain eases but weakness stays" in subjects
        keys = [d.lesson_key for d in await stack.deliveries(gil)]
        assert len(keys) == len(set(keys))

    run(with_stack(settings, tmp_path, smtp_server, scenario))


def test_an_inserted_lesson_can_be_skipped_for_those_past_it(settings, tmp_path, smtp_server):
    course_dir = Path(shutil.copytree(COURSE_DIR, tmp_path / "course"))

    async def scenario(stack: Stack) -> None:
        sequence = await stack.queue(load_course(course_dir))
        hal = await stack.subscribe("hal@example.com", sequence_id=sequence)
        await stack.run_for(timedelta(days=2, hours=1))
        (course_dir / "015-questions.md").write_text(
            "---\nsubject: Questions for your doctor\npreheader: A short list to take along\n"
            "delay: 1 day\n---\nHi,\n\nA short list.\n"
        )
        await stack.queue(load_course(course_dir), skip_inserted=True)
        await stack.run_through(timedelta(days=20))
        subjects = [m["Subject"] for m in stack.received("hal@example.com")]
        assert "Questions for your doctor" not in subjects
        assert len(subjects) == 6
        skipped = [d for d in await stack.deliveries(hal) if d.lesson_key == "questions"]
        assert [d.status for d in skipped] == [DeliveryStatus.CANCELLED]

    run(with_stack(settings, tmp_path, smtp_server, scenario))


def test_a_relay_refusing_our_login_pauses_sending_and_marks_nobody(
    settings, tmp_path, smtp_server
):
    smtp_server.answer_mail(550, "5.7.1 Sender address rejected: not owned by user", times=1)

    async def scenario(stack: Stack) -> None:
        sequence = await stack.queue(shipped_course(REPO))
        ivy = await stack.subscribe("ivy@example.com", sequence_id=sequence)
        report = await stack.run()
        assert report["sender_blocked"] == 1
        assert (await stack.subscriber(ivy)).status == SubscriberStatus.CONFIRMED
        [delivery] = await stack.deliveries(ivy)
        assert delivery.status == DeliveryStatus.QUEUED
        assert delivery.attempts == 0
        async with stack.sessions() as session:
            paused = await queries.flag(session, queries.SENDING_PAUSED)
        assert paused is not None
        assert "5.7.1" in paused.reason
        assert (await stack.worker.dispatch_once(stack.clock.now()))["paused"] == 1

        async with stack.sessions.begin() as session:
            await queries.clear_flag(session, queries.SENDING_PAUSED)
        await stack.run_for(timedelta(minutes=10), step=timedelta(minutes=5))
        assert len(stack.received("ivy@example.com")) == 1

    run(with_stack(settings, tmp_path, smtp_server, scenario))


def test_nothing_is_lost_while_the_smtp_server_is_down(settings, tmp_path, smtp_server):
    async def scenario(stack: Stack) -> None:
        sequence = await stack.queue(shipped_course(REPO))
        ids = [await stack.subscribe(f"r{n}@example.com", sequence_id=sequence) for n in range(5)]
        smtp_server.down()
        await stack.run_for(timedelta(hours=1), step=timedelta(minutes=10))
        assert stack.received() == []
        smtp_server.up()
        await stack.run_for(timedelta(hours=3), step=timedelta(minutes=10))
        for subscriber in ids:
            assert [d.status for d in await stack.deliveries(subscriber)] == [DeliveryStatus.SENT]
        assert len(stack.received()) == 5

    run(with_stack(settings, tmp_path, smtp_server, scenario))


def test_two_dispatchers_on_one_database_never_send_the_same_delivery_twice(
    settings, tmp_path, smtp_server
):
    async def scenario(stack: Stack) -> None:
        sequence = await stack.queue(shipped_course(REPO))
        for n in range(120):
            await stack.subscribe(f"p{n}@example.com", sequence_id=sequence)
        await stack.worker.plan_once(stack.clock.now())

        # A second worker with its own engine, as a second process would have.
        other = await Stack.start(stack.settings, smtp_server, START)
        try:
            second = other.new_worker(other.transport, name="worker-2")
            first = stack.worker
            now = stack.clock.now()
            while True:
                reports = await asyncio.gather(first.dispatch_once(now), second.dispatch_once(now))
                if not any(sum(r.counts.values()) for r in reports):
                    break
        finally:
            await other.close()
        recipients = [rcpt for _, rcpts, _ in smtp_server.messages for rcpt in rcpts]
        assert len(recipients) == 120
        assert len(set(recipients)) == 120

    run(with_stack(settings, tmp_path, smtp_server, scenario, batch_size=10))


def test_hourly_and_daily_caps_hold_back_sending_until_the_window_moves(
    settings, tmp_path, smtp_server
):
    async def scenario(stack: Stack) -> None:
        sequence = await stack.queue(shipped_course(REPO))
        for n in range(5):
            await stack.subscribe(f"cap{n}@example.com", sequence_id=sequence)
        await stack.run()
        assert len(stack.received()) == 3
        stack.clock.advance(timedelta(minutes=59))
        await stack.run()
        assert len(stack.received()) == 3
        stack.clock.advance(timedelta(minutes=2))
        await stack.run()
        assert len(stack.received()) == 5

    run(with_stack(settings, tmp_path, smtp_server, scenario, max_per_hour=3))


def test_the_opt_in_email_goes_out_ahead_of_bulk_mail_to_a_pending_subscriber(
    settings, tmp_path, smtp_server
):
    async def scenario(stack: Stack) -> None:
        sequence = await stack.queue(shipped_course(REPO))
        for n in range(4):
            await stack.subscribe(f"bulk{n}@example.com", sequence_id=sequence)
        await stack.worker.plan_once(stack.clock.now())
        async with stack.sessions.begin() as session:
            pending, _ = await add_subscriber(
                session,
                NewSubscriber.parse("new@example.com", "Should Not Appear"),
                status=SubscriberStatus.PENDING,
                consent={"form": "test"},
                now=stack.clock.now(),
            )
            await queries.queue_confirmation(
                session, pending.id, sequence, "<confirm-1@example.org>", stack.clock.now()
            )

        await stack.worker.dispatch_once(stack.clock.now())  # one connection
        confirmation = stack.received()[0]
        assert confirmation["To"] == "new@example.com"
        assert confirmation["From"].addresses[0].addr_spec == "hello@example.org"
        assert confirmation["List-Unsubscribe"] is None
        text = confirmation.get_body(("plain",)).get_content()
        assert "Should Not Appear" not in text
        link = re.search(r"/confirm/(\S+)", text)
        assert link is not None
        tokens = Tokens("integration-test-secret")
        assert tokens.read(Purpose.CONFIRM, link.group(1), stack.clock.now()) == pending.id
        # The bulk mail follows; the pending subscriber gets nothing more.
        await stack.run()
        assert len(stack.received()) == 5
        assert len(stack.received("new@example.com")) == 1

    sender = settings.sender.model_copy(update={"transactional_address": "hello@example.org"})
    run(
        with_stack(
            settings.model_copy(update={"sender": sender}),
            tmp_path,
            smtp_server,
            scenario,
            connections=1,
        )
    )


def test_an_opt_in_email_is_not_sent_once_the_address_left(settings, tmp_path, smtp_server):
    async def scenario(stack: Stack) -> None:
        sequence = await stack.queue(shipped_course(REPO))
        async with stack.sessions.begin() as session:
            gone, _ = await add_subscriber(
                session,
                NewSubscriber.parse("gone@example.com"),
                status=SubscriberStatus.PENDING,
                consent={"form": "test"},
                now=stack.clock.now(),
            )
            await queries.queue_confirmation(session, gone.id, sequence, "<c@x>", stack.clock.now())
            await queries.suppress(session, "gone@example.com", "complained", "", stack.clock.now())
        report = await stack.run()
        assert report["cancelled"] == 1
        assert stack.received() == []

    run(with_stack(settings, tmp_path, smtp_server, scenario))


class CountingTransport:
    """The real SMTP transport, counting what went through it."""

    def __init__(self, inner: SmtpTransport) -> None:
        self.inner = inner
        self.sends = 0

    async def send(self, envelope: Envelope) -> SendReport:
        self.sends += 1
        return await self.inner.send(envelope)

    async def close(self) -> None:
        await self.inner.close()


def test_a_relay_refusing_us_stops_the_rest_of_the_batch(settings, tmp_path, smtp_server):
    smtp_server.answer_mail(550, "5.7.1 Sender address rejected")

    async def scenario(stack: Stack) -> None:
        sequence = await stack.queue(shipped_course(REPO))
        ids = [await stack.subscribe(f"s{n}@example.com", sequence_id=sequence) for n in range(30)]
        await stack.worker.plan_once(stack.clock.now())
        counting = CountingTransport(stack.transport)  # type: ignore[arg-type]
        worker = stack.new_worker(counting, name="counted")
        report = await worker.dispatch_once(stack.clock.now())

        # Only what was already on the wire when the first refusal came back was tried.
        assert counting.sends <= stack.settings.sending.connections + 1
        assert 1 <= report["sender_blocked"] <= counting.sends
        assert report["sender_blocked"] + report["released"] == 30
        for subscriber in ids:
            [delivery] = await stack.deliveries(subscriber)
            assert delivery.status == DeliveryStatus.QUEUED
            assert delivery.attempts == 0

    run(with_stack(settings, tmp_path, smtp_server, scenario, connections=2))


def test_sends_never_run_further_ahead_of_recording_than_the_stated_bound(
    settings, tmp_path, smtp_server, monkeypatch
):
    """docs/delivery.md: a crash re-sends at most record_every + connections messages, so
    no more than that may be sent and not yet recorded at any moment, even when writing
    to the database is slow."""
    record_every, connections = 5, 2
    recorded = 0
    ahead: list[int] = []
    real_record = queries.record_outcomes

    async def slow_record(session, changes, *, token):  # type: ignore[no-untyped-def]
        nonlocal recorded
        await asyncio.sleep(0.05)  # a slow disk: sends must wait for it, not run ahead
        await real_record(session, changes, token=token)
        recorded += len(changes)

    monkeypatch.setattr(queries, "record_outcomes", slow_record)

    async def scenario(stack: Stack) -> None:
        sequence = await stack.queue(shipped_course(REPO))
        for n in range(40):
            await stack.subscribe(f"b{n}@example.com", sequence_id=sequence)
        await stack.worker.plan_once(stack.clock.now())
        counting = CountingTransport(stack.transport)  # type: ignore[arg-type]
        real_send = counting.send

        async def send(envelope: Envelope) -> SendReport:
            ahead.append(counting.sends + 1 - recorded)
            return await real_send(envelope)

        counting.send = send  # type: ignore[method-assign]
        worker = stack.new_worker(counting, name="bounded")
        report = await worker.dispatch_once(stack.clock.now())
        assert report["sent"] == 40

    run(
        with_stack(
            settings,
            tmp_path,
            smtp_server,
            scenario,
            batch_size=40,
            record_every=record_every,
            connections=connections,
        )
    )
    assert max(ahead) <= record_every + connections
