"""Everyday faults against the real SMTP test server and a real SQLite file: who is blamed for a
refusal, how often a failing relay is bothered, leases that hold, a busy database, and
people who leave while their message waits in a batch."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from newsletter.cli.sending import sending_blocked
from newsletter.clock import FastForwardClock, FrozenClock, SystemClock
from newsletter.config import Settings
from newsletter.db import queries
from newsletter.db.models import Delivery, DeliveryStatus, Subscriber, SubscriberStatus
from newsletter.db.session import create_engine, make_sessionmaker
from newsletter.signup import pause_course, resume_course
from newsletter.subscribers import NewSubscriber, add_subscriber, forget, unsubscribe
from tests.conftest import REPO
from tests.databases import only_sqlite
from tests.integration.harness import Stack, settings_for, shipped_course
from tests.smtpd import Received, SmtpServer

START = datetime(2026, 6, 9, 9, 0, tzinfo=UTC)  # a Tuesday morning in London


def config_for(settings: Settings, tmp_path: Path, *, busy_timeout_s: float = 10, **sending):  # type: ignore[no-untyped-def]
    local = settings_for(settings, tmp_path, **sending)
    database = local.database.model_copy(update={"busy_timeout_s": busy_timeout_s})
    return local.model_copy(update={"database": database})


async def subscribed(stack: Stack, emails: list[str]) -> dict[str, int]:
    sequence = await stack.queue(shipped_course(REPO))
    ids = {email: await stack.subscribe(email, sequence_id=sequence) for email in emails}
    await stack.worker.plan_once(stack.clock.now())
    return ids


def recipients(server: SmtpServer) -> Counter[str]:
    return Counter(rcpt for _, rcpts, _ in server.messages for rcpt in rcpts)


async def welcome(stack: Stack, subscriber_id: int) -> Delivery:
    return (await stack.deliveries(subscriber_id))[0]


def run_elsewhere(work: Callable[[], Awaitable[None]]) -> None:
    """Run `work` on an event loop of its own in another thread, and wait for it: what a
    second process (the web app, an admin's command) does while a batch is being sent."""
    failure: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(work())  # type: ignore[arg-type]
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


# --- who is blamed -----------------------------------------------------------------------


def test_a_recipients_policy_refusal_fails_only_that_delivery_and_the_course_goes_on(
    settings, tmp_path, smtp_server
):
    smtp_server.answer_rcpt("dmarc@example.com", 550, "5.7.26 Unauthenticated email", times=1)
    smtp_server.answer_data(554, "5.7.1 Message rejected", times=1, address="spam@example.com")
    others = [f"ok{n}@example.com" for n in range(10)]

    async def scenario() -> None:
        stack = await Stack.start(config_for(settings, tmp_path), smtp_server, START)
        try:
            ids = await subscribed(stack, [*others, "dmarc@example.com", "spam@example.com"])
            await stack.run()

            assert recipients(smtp_server) == Counter(others)
            for email in ("dmarc@example.com", "spam@example.com"):
                delivery = await welcome(stack, ids[email])
                assert delivery.status == DeliveryStatus.FAILED
                assert delivery.attempts == 1
                assert "5.7." in delivery.last_error
                assert (await stack.subscriber(ids[email])).status == SubscriberStatus.CONFIRMED
            async with stack.sessions() as session:
                assert await sending_blocked(session, stack.clock.now()) == ""
                assert not await queries.is_suppressed(session, "dmarc@example.com")

            # Their course goes on: the next lesson reaches them.
            await stack.run_for(timedelta(days=3))
            assert recipients(smtp_server)["dmarc@example.com"] == 1
            assert recipients(smtp_server)["spam@example.com"] == 1
        finally:
            await stack.close()

    asyncio.run(scenario())


def test_policy_refusals_beyond_their_share_pause_sending_with_the_replies(
    settings, tmp_path, smtp_server
):
    smtp_server.answer_rcpt(None, 550, "5.7.26 Unauthenticated email is not accepted")
    config = config_for(
        settings, tmp_path, connections=1, policy_refusal_window=20, policy_refusal_share=0.1
    )

    async def scenario() -> None:
        stack = await Stack.start(config, smtp_server, START)
        try:
            ids = await subscribed(stack, [f"r{n}@example.com" for n in range(30)])
            report = await stack.run()

            # More than 2 of the last 20: the third refusal pauses everything.
            assert report["failed"] == 3
            waiting = [await welcome(stack, i) for i in ids.values()]
            assert Counter(d.status for d in waiting) == {"failed": 3, "queued": 27}
            assert all(d.attempts == 0 for d in waiting if d.status == "queued")
            async with stack.sessions() as session:
                paused = await queries.flag(session, queries.SENDING_PAUSED)
                blocked = await sending_blocked(session, stack.clock.now())
            assert paused is not None
            assert paused.until is None  # until an admin resumes
            assert paused.reason == (
                "3 of the last 3 recipients were refused for policy reasons (example.com 3); "
                "replies: RCPT: 550 5.7.26 Unauthenticated email is not accepted (3x)"
            )
            assert blocked.startswith("sending is paused until resumed: 3 of the last 3")

            # Fixed (say, DKIM published) and resumed: the rest goes out.
            smtp_server.answer_rcpt(None, 250, "OK")
            stack.clock.advance(timedelta(hours=1))
            assert (await stack.run())["paused"] == 1  # still paused by the time alone
            async with stack.sessions.begin() as session:
                await queries.clear_flag(session, queries.SENDING_PAUSED)
            await stack.run()
            assert len(recipients(smtp_server)) == 27
        finally:
            await stack.close()

    asyncio.run(scenario())


# --- a relay in trouble ------------------------------------------------------------------


FAULTS = {
    "421 at the greeting": (
        lambda server: server.greet("421 4.3.2 Service not available, closing channel"),
        lambda server: server.greet_normally(),
    ),
    "garbage at the greeting": (
        lambda server: server.greet("HTTP/1.1 400 Bad Request"),
        lambda server: server.greet_normally(),
    ),
    "421 after MAIL FROM": (
        lambda server: server.answer_mail(421, "4.7.0 Too many connections, slow down"),
        lambda server: server.answer_mail(250, "OK"),
    ),
}


@pytest.mark.parametrize("fault", FAULTS)
def test_a_failing_relay_gets_a_handful_of_connections_and_nobody_is_charged(
    settings, tmp_path, smtp_server, fault
):
    break_relay, mend_relay = FAULTS[fault]
    break_relay(smtp_server)

    async def scenario() -> None:
        stack = await Stack.start(config_for(settings, tmp_path), smtp_server, START)
        try:
            ids = await subscribed(stack, [f"c{n}@example.com" for n in range(20)])
            for _ in range(120):  # two minutes, a pass every second
                await stack.run()
                stack.clock.advance(timedelta(seconds=1))

            # Three failures open the circuit (one more may be on the wire), then one probe
            # after ~10, ~20, ~40 and ~80 s: never one connection per due message.
            assert smtp_server.connections <= 8
            assert smtp_server.messages == []
            waiting = [await welcome(stack, i) for i in ids.values()]
            assert {(d.status, d.attempts) for d in waiting} == {("queued", 0)}
            async with stack.sessions() as session:
                assert "the relay is not taking mail" in await sending_blocked(
                    session, stack.clock.now()
                )

            mend_relay(smtp_server)
            stack.clock.advance(timedelta(minutes=3))  # past the longest wait so far
            await stack.run()
            assert recipients(smtp_server) == Counter({f"c{n}@example.com": 1 for n in range(20)})
            async with stack.sessions() as session:
                assert await queries.flag(session, queries.RELAY_CIRCUIT) is None
        finally:
            await stack.close()

    asyncio.run(scenario())


@pytest.mark.smtp(size_limit=4000)
def test_a_message_bigger_than_the_relay_takes_fails_loudly_without_pausing(
    settings, tmp_path, smtp_server, caplog
):
    async def scenario() -> None:
        stack = await Stack.start(config_for(settings, tmp_path), smtp_server, START)
        try:
            ids = await subscribed(stack, ["big1@example.com", "big2@example.com"])
            with caplog.at_level(logging.ERROR, logger="newsletter"):
                report = await stack.run()

            assert report["failed"] == 2
            for subscriber in ids.values():
                delivery = await welcome(stack, subscriber)
                assert delivery.status == DeliveryStatus.FAILED
                assert delivery.last_error.startswith("MAIL: 552")
                assert (await stack.subscriber(subscriber)).status == SubscriberStatus.CONFIRMED
            async with stack.sessions() as session:
                assert await sending_blocked(session, stack.clock.now()) == ""
            too_big = [r for r in caplog.records if getattr(r, "action", "") == "message_too_big"]
            assert len(too_big) == 2
            assert "lesson 1 (welcome)" in too_big[0].getMessage()
            assert "message size limit" in too_big[0].getMessage()
        finally:
            await stack.close()

    asyncio.run(scenario())


def test_one_size_refusal_fails_that_message_and_the_rest_goes_out(settings, tmp_path, smtp_server):
    smtp_server.answer_mail(552, "Message size exceeds fixed maximum message size", times=1)

    async def scenario() -> None:
        stack = await Stack.start(config_for(settings, tmp_path, connections=1), smtp_server, START)
        try:
            await subscribed(stack, [f"s{n}@example.com" for n in range(5)])
            report = await stack.run()
            assert (report["failed"], report["sent"]) == (1, 4)
            assert len(recipients(smtp_server)) == 4
        finally:
            await stack.close()

    asyncio.run(scenario())


# --- leases ------------------------------------------------------------------------------


@pytest.mark.parametrize("schedule", ["frozen", "fast-forwarded 100 times"])
def test_a_batch_that_outlasts_its_lease_is_never_taken_over(
    settings, tmp_path, smtp_server, schedule
):
    """The first worker needs ~2.4 s for its 12 messages, with a lease of 2 s; the second
    worker keeps trying to claim meanwhile. Only the heartbeat keeps the rows its own; with
    leases on the fast clock (`--speed 100`) they would run out 100 times sooner."""
    config = config_for(
        settings,
        tmp_path,
        lease_s=2,
        smtp_timeout_s=0.5,
        smtp_data_timeout_s=0.5,
        connections=1,
        batch_size=12,
    )
    smtp_server.delay_data_s = 0.2

    def schedule_clock() -> FrozenClock | FastForwardClock:
        return FrozenClock(START) if schedule == "frozen" else FastForwardClock(START, 100)

    async def scenario() -> None:
        first = await Stack.start(config, smtp_server, START)
        second = await Stack.start(config, smtp_server, START)
        try:
            await subscribed(first, [f"l{n}@example.com" for n in range(12)])
            workers = [
                stack.new_worker(stack.transport, name, clock=schedule_clock(), wall=SystemClock())
                for stack, name in ((first, "slow"), (second, "eager"))
            ]

            async def keep_claiming() -> None:
                deadline = time.monotonic() + 3.5
                while time.monotonic() < deadline:
                    await workers[1].dispatch_once(workers[1].clock.now())
                    await asyncio.sleep(0.05)

            await asyncio.gather(workers[0].dispatch_once(START), keep_claiming())
        finally:
            await first.close()
            await second.close()

    asyncio.run(scenario())
    assert recipients(smtp_server) == Counter({f"l{n}@example.com": 1 for n in range(12)})


# --- a busy database ---------------------------------------------------------------------


def hold_write_lock(database: Path, seconds: float) -> threading.Thread:
    """Another process writing for `seconds`: SQLite's one write lock is taken and kept."""
    taken = threading.Event()

    def hold() -> None:
        connection = sqlite3.connect(database, isolation_level=None)
        connection.execute("BEGIN IMMEDIATE")
        taken.set()
        time.sleep(seconds)
        connection.execute("COMMIT")
        connection.close()

    thread = threading.Thread(target=hold)
    thread.start()
    taken.wait()
    return thread


@only_sqlite  # SQLite's write lock, held by another process
def test_outcomes_wait_for_a_busy_database_and_nothing_is_sent_twice(
    settings, tmp_path, smtp_server
):
    config = config_for(settings, tmp_path, busy_timeout_s=0.2, record_every=3, connections=1)
    holders: list[threading.Thread] = []

    def on_message(received: Received) -> None:
        if len(smtp_server.messages) == 1:  # while the second message goes out
            holders.append(hold_write_lock(tmp_path / "newsletter.db", 1.5))

    async def scenario() -> None:
        stack = await Stack.start(config, smtp_server, START)
        try:
            await subscribed(stack, [f"b{n}@example.com" for n in range(10)])
            smtp_server.on_message = on_message
            report = await stack.worker.dispatch_once(stack.clock.now())

            assert report["record_retries"] >= 1  # it met the lock, kept the outcomes, waited
            assert report["sent"] == 10
            async with stack.sessions() as session:
                statuses = list(await session.scalars(select(Delivery.status)))
            assert statuses == [DeliveryStatus.SENT] * 10

            stack.clock.advance(timedelta(hours=1))  # long past every lease
            await stack.run()
        finally:
            await stack.close()

    asyncio.run(scenario())
    for holder in holders:
        holder.join()
    assert recipients(smtp_server) == Counter({f"b{n}@example.com": 1 for n in range(10)})


# --- leaving mid-batch -------------------------------------------------------------------


async def _unsubscribe(session, subscriber: Subscriber) -> None:  # type: ignore[no-untyped-def]
    await unsubscribe(session, subscriber, datetime.now(UTC))


async def _forget(session, subscriber: Subscriber) -> None:  # type: ignore[no-untyped-def]
    await forget(session, subscriber)


async def _suppress(session, subscriber: Subscriber) -> None:  # type: ignore[no-untyped-def]
    await queries.suppress(session, subscriber.email, "complained", "", datetime.now(UTC))


@pytest.mark.parametrize(
    ("leave", "outcome"),
    [(_unsubscribe, "cancelled"), (_forget, "gone"), (_suppress, "cancelled")],
    ids=["unsubscribe", "erase", "suppress"],
)
def test_nobody_gets_mail_once_their_leaving_has_committed(
    settings, tmp_path, smtp_server, leave, outcome
):
    """While the third message is being received, someone further down the batch leaves.
    With one connection, the only message on the wire at that moment is the third."""
    config = config_for(settings, tmp_path, connections=1)
    emails = [f"m{n}@example.com" for n in range(8)]
    left: list[str] = []

    def on_message(received: Received) -> None:
        if len(smtp_server.messages) != 2:
            return
        on_the_wire = {*recipients(smtp_server), *received.rcpt_tos}
        leaving = next(email for email in emails if email not in on_the_wire)

        async def commit_leaving() -> None:
            engine = create_engine(config.database.url)
            try:
                async with make_sessionmaker(engine).begin() as session:
                    subscriber = await queries.subscriber_by_email(session, leaving)
                    assert subscriber is not None
                    await leave(session, subscriber)
            finally:
                await engine.dispose()

        run_elsewhere(commit_leaving)
        left.append(leaving)

    async def scenario() -> None:
        stack = await Stack.start(config, smtp_server, START)
        try:
            await subscribed(stack, emails)
            smtp_server.on_message = on_message
            report = await stack.worker.dispatch_once(stack.clock.now())
            assert report[outcome] == 1
            assert report["sent"] == 7
        finally:
            await stack.close()

    asyncio.run(scenario())
    assert len(left) == 1
    assert recipients(smtp_server) == Counter({email: 1 for email in emails if email not in left})


# --- a signup flood ----------------------------------------------------------------------


def test_a_flood_of_confirmations_slows_lessons_down_but_never_stops_them(
    settings, tmp_path, smtp_server
):
    config = config_for(settings, tmp_path, connections=1, batch_size=8)

    async def scenario() -> None:
        stack = await Stack.start(config, smtp_server, START)
        try:
            sequence = await stack.queue(shipped_course(REPO))
            for n in range(20):
                await stack.subscribe(f"reader{n}@example.com", sequence_id=sequence)
            await stack.worker.plan_once(stack.clock.now())
            async with stack.sessions.begin() as session:
                for n in range(50):
                    new, _ = await add_subscriber(
                        session,
                        NewSubscriber.parse(f"signup{n}@example.com"),
                        status=SubscriberStatus.PENDING,
                        consent={"form": "test"},
                        now=stack.clock.now(),
                    )
                    await queries.queue_confirmation(
                        session, new.id, sequence, f"<c{n}@example.org>", stack.clock.now()
                    )
            await stack.worker.dispatch_once(stack.clock.now())
        finally:
            await stack.close()

    asyncio.run(scenario())
    order = [rcpts[0] for _, rcpts, _ in smtp_server.messages]
    assert len(order) == 70
    kinds = "".join("c" if email.startswith("signup") else "l" for email in order)
    # Confirmations first: each claim of 8 holds 6 of them and keeps 2 places for lessons
    # (a confirmation of the next claim may overtake a lesson still waiting, by design).
    assert kinds[:16].count("c") >= 10
    # Lessons slowed down, never stopped: while confirmations remain, every run of 24
    # sends carries some.
    last_confirmation = kinds.rindex("c")
    for start in range(last_confirmation - 23):
        assert kinds[start : start + 24].count("l") >= 2, kinds


# --- pauses mid-batch --------------------------------------------------------------------


def test_a_course_paused_mid_batch_gets_no_lesson_and_resumes_where_it_was(
    settings, tmp_path, smtp_server
):
    """Someone presses "pause my course" while their lesson waits in a claimed batch: the
    lesson does not go, and comes when they resume."""
    config = config_for(settings, tmp_path, connections=1)
    emails = [f"p{n}@example.com" for n in range(6)]
    paused: list[str] = []

    def on_message(received: Received) -> None:
        if len(smtp_server.messages) != 1:
            return
        on_the_wire = {*recipients(smtp_server), *received.rcpt_tos}
        pausing = next(email for email in emails if email not in on_the_wire)

        async def pause() -> None:
            engine = create_engine(config.database.url)
            try:
                async with make_sessionmaker(engine).begin() as session:
                    subscriber = await queries.subscriber_by_email(session, pausing)
                    assert subscriber is not None
                    await pause_course(session, subscriber.id)
            finally:
                await engine.dispose()

        run_elsewhere(pause)
        paused.append(pausing)

    async def scenario() -> None:
        stack = await Stack.start(config, smtp_server, START)
        try:
            ids = await subscribed(stack, emails)
            smtp_server.on_message = on_message
            report = await stack.worker.dispatch_once(stack.clock.now())
            assert report["paused_course"] == 1
            assert recipients(smtp_server)[paused[0]] == 0

            async with stack.sessions.begin() as session:
                await resume_course(session, ids[paused[0]], stack.clock.now())
            await stack.run()
        finally:
            await stack.close()

    asyncio.run(scenario())
    assert recipients(smtp_server) == Counter({email: 1 for email in emails})


def test_pausing_all_sending_stops_a_pass_already_under_way(settings, tmp_path, smtp_server):
    config = config_for(settings, tmp_path, connections=1, batch_size=4)

    def on_message(received: Received) -> None:
        if len(smtp_server.messages) == 1:

            async def pause() -> None:
                engine = create_engine(config.database.url)
                try:
                    async with make_sessionmaker(engine).begin() as session:
                        await queries.set_flag(
                            session,
                            queries.SENDING_PAUSED,
                            until=None,
                            reason="an operator paused sending",
                            now=datetime.now(UTC),
                        )
                finally:
                    await engine.dispose()

            run_elsewhere(pause)

    async def scenario() -> None:
        stack = await Stack.start(config, smtp_server, START)
        try:
            await subscribed(stack, [f"q{n}@example.com" for n in range(20)])
            smtp_server.on_message = on_message
            report = await stack.worker.dispatch_once(stack.clock.now())
            # The batch claimed before the pause goes out; nothing more is claimed.
            assert report["paused"] == 1
            assert report["sent"] <= 4
            async with stack.sessions() as session:
                statuses = Counter(await session.scalars(select(Delivery.status)))
            assert statuses[DeliveryStatus.SENDING] == 0
            assert statuses[DeliveryStatus.QUEUED] >= 16
        finally:
            await stack.close()

    asyncio.run(scenario())
