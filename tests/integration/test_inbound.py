"""What comes back, delivered over SMTP to the real receiver: bounces, complaints and mailto
unsubscribes about lessons and newsletter issues that went out through the real SMTP test
server, on a real SQLite file."""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiosmtplib
from sqlalchemy import select

from newsletter import broadcasts
from newsletter.config import Settings
from newsletter.db import queries
from newsletter.db.models import (
    Broadcast,
    BroadcastStatus,
    Delivery,
    DeliveryStatus,
    Enrollment,
    EnrollmentStatus,
    MailEvent,
    Sequence,
    SequenceStatus,
    Subscriber,
    SubscriberStatus,
)
from newsletter.inbound.inbox import Inbox
from newsletter.inbound.receiver import start_receiver
from newsletter.subscribers import NewSubscriber, add_subscriber, forget
from newsletter.tokens import Purpose, Tokens
from tests.conftest import REPO
from tests.fixtures.inbound import fixture
from tests.integration.harness import SECRET, Stack, run, settings_for, shipped_course
from tests.integration.test_broadcasts import issue, send
from tests.smtpd import SmtpServer

START = datetime(2026, 6, 9, 9, 0, tzinfo=UTC)  # a Tuesday morning in London
RETURN_PATH = "bounces@example.org"


def config_for(
    settings: Settings, tmp_path: Path, *, max_per_hour: int = 0, **bounces: object
) -> Settings:
    local = settings_for(settings, tmp_path, max_per_hour=max_per_hour)
    return local.model_copy(
        update={"bounces": local.bounces.model_copy(update={"return_path": RETURN_PATH, **bounces})}
    )


class Receiver:
    """The inbound SMTP receiver of a stack, and a client that mails it."""

    def __init__(self, stack: Stack, port: int) -> None:
        self.stack = stack
        self.port = port

    async def deliver(self, raw: bytes, to: str) -> tuple[int, str]:
        """Send `raw` to `to` as a mail server would; the receiver's reply to RCPT or DATA."""
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=self.port, timeout=10)
        await client.connect()
        try:
            await client.mail("")  # bounces come from the null sender
            code, message = await client.rcpt(to)
            if code != 250:
                return code, message
            reply = await client.data(raw)
            return reply.code, reply.message
        except aiosmtplib.SMTPResponseException as refused:
            return refused.code, refused.message
        finally:
            with contextlib.suppress(aiosmtplib.SMTPException):
                await client.quit()


@contextlib.asynccontextmanager
async def running(settings: Settings, smtp_server: SmtpServer) -> AsyncIterator[Receiver]:
    stack = await Stack.start(settings, smtp_server, START)
    inbox = Inbox(
        settings,
        stack.sessions,
        tokens=Tokens(SECRET),
        return_path=stack.return_path,
        wall=stack.clock,
    )
    server = await start_receiver(inbox, "127.0.0.1", 0, settings.inbound.max_message_bytes)
    port = server.sockets[0].getsockname()[1]
    try:
        yield Receiver(stack, port)
    finally:
        server.close()
        await server.wait_closed()
        await stack.close()


async def lessons_out(stack: Stack, emails: list[str]) -> dict[str, int]:
    """Subscribe these addresses to the shipped course and send them its welcome lesson."""
    sequence = await stack.queue(shipped_course(REPO))
    ids = {email: await stack.subscribe(email, sequence_id=sequence) for email in emails}
    await stack.run()
    return ids


async def lesson_to_ann(stack: Stack) -> tuple[dict[str, int], Delivery, str]:
    """Ann's welcome lesson, sent: the subscriber ids, its delivery and its return path."""
    ids = await lessons_out(stack, ["ann@example.com"])
    delivery = await welcome(stack, ids["ann@example.com"])
    return ids, delivery, stack.server.messages[0].mail_from


async def welcome(stack: Stack, subscriber_id: int) -> Delivery:
    return (await stack.deliveries(subscriber_id))[0]


def report_about(name: str, delivery: Delivery, email: str, **values: str) -> bytes:
    return fixture(
        name,
        return_path=values.pop("return_path", ""),
        recipient=email,
        message_id=delivery.message_id,
        **values,
    )


async def events(stack: Stack) -> list[MailEvent]:
    async with stack.sessions() as session:
        return list(await session.scalars(select(MailEvent).order_by(MailEvent.id)))


# --- bounces -------------------------------------------------------------------------------


def test_lessons_leave_with_a_signed_return_path_naming_their_delivery(
    settings, tmp_path, smtp_server
):
    async def scenario() -> None:
        async with running(config_for(settings, tmp_path), smtp_server) as receiver:
            stack = receiver.stack
            ids = await lessons_out(stack, ["ann@example.com"])
            delivery = await welcome(stack, ids["ann@example.com"])
            mail_from = smtp_server.messages[0].mail_from
            assert mail_from.startswith("bounces+")
            assert mail_from.endswith("@example.org")
            assert stack.return_path is not None
            assert stack.return_path.delivery_of(mail_from) == delivery.id

    run(scenario())


def test_a_hard_bounce_suppresses_the_address_and_nothing_more_is_sent(
    settings, tmp_path, smtp_server
):
    async def scenario() -> None:
        async with running(config_for(settings, tmp_path), smtp_server) as receiver:
            stack = receiver.stack
            ids = await lessons_out(stack, ["ann@example.com", "bob@example.com"])
            delivery = await welcome(stack, ids["ann@example.com"])
            [verp] = [m.mail_from for m in smtp_server.messages if "ann@example.com" in m.rcpt_tos]

            code, _ = await receiver.deliver(
                report_about("postfix-user-unknown", delivery, "ann@example.com", return_path=verp),
                verp,
            )

            assert code == 250
            async with stack.sessions() as session:
                assert await queries.is_suppressed(session, "ann@example.com")
                ann = await session.get(Subscriber, ids["ann@example.com"])
                assert ann is not None
                assert ann.status == SubscriberStatus.BOUNCED
                enrollment = await session.scalar(
                    select(Enrollment).where(Enrollment.subscriber_id == ann.id)
                )
                assert enrollment is not None
                assert enrollment.status == EnrollmentStatus.STOPPED
            [event] = await events(stack)
            assert (event.kind, event.status, event.delivery_id) == (
                "hard_bounce",
                "5.1.1",
                delivery.id,
            )
            assert "suppressed" in event.outcome

            # Weeks later, only Bob still gets lessons.
            smtp_server.messages.clear()
            await stack.run_through(timedelta(days=21))
            assert {rcpt for _, rcpts, _ in smtp_server.messages for rcpt in rcpts} == {
                "bob@example.com"
            }

    run(scenario())


def test_the_same_bounce_twice_counts_once(settings, tmp_path, smtp_server):
    async def scenario() -> None:
        config = config_for(settings, tmp_path, soft_limit=2)
        async with running(config, smtp_server) as receiver:
            stack = receiver.stack
            _ids, delivery, verp = await lesson_to_ann(stack)
            bounce = report_about("mailbox-full", delivery, "ann@example.com", return_path=verp)

            assert (await receiver.deliver(bounce, verp))[0] == 250
            # The same report again, as a server retrying it would send it.
            assert (await receiver.deliver(b"Received: from elsewhere\r\n" + bounce, verp))[
                0
            ] == 250

            [event] = await events(stack)
            assert event.kind == "soft_bounce"
            async with stack.sessions() as session:
                assert not await queries.is_suppressed(session, "ann@example.com")

    run(scenario())


def test_soft_bounces_suppress_at_the_limit_within_the_window(settings, tmp_path, smtp_server):
    async def scenario() -> None:
        config = config_for(settings, tmp_path, soft_limit=2, soft_window_days=14)
        async with running(config, smtp_server) as receiver:
            stack = receiver.stack
            ids = await lessons_out(stack, ["ann@example.com"])
            first = await welcome(stack, ids["ann@example.com"])
            verp = smtp_server.messages[0].mail_from
            await receiver.deliver(
                report_about("mailbox-full", first, "ann@example.com", return_path=verp), verp
            )
            async with stack.sessions() as session:
                assert not await queries.is_suppressed(session, "ann@example.com")

            # Her next lesson bounces too, a few days later: the second within 14 days.
            stack.clock.advance(timedelta(days=4))
            smtp_server.messages.clear()
            await stack.run_for(timedelta(days=3))
            second = (await stack.deliveries(ids["ann@example.com"]))[1]
            assert second.status == DeliveryStatus.SENT
            verp = smtp_server.messages[0].mail_from
            await receiver.deliver(
                report_about("mailbox-full", second, "ann@example.com", return_path=verp), verp
            )

            async with stack.sessions() as session:
                assert await queries.is_suppressed(session, "ann@example.com")
            assert [e.outcome.split(" (")[0] for e in await events(stack)] == [
                "counted",
                "address suppressed, its queued mail cancelled",
            ]

    run(scenario())


def test_soft_bounces_naming_no_message_of_ours_count_nothing(settings, tmp_path, smtp_server):
    async def scenario() -> None:
        config = config_for(settings, tmp_path, soft_limit=2)
        async with running(config, smtp_server) as receiver:
            stack = receiver.stack
            _, delivery, verp = await lesson_to_ann(stack)
            for n in range(3):  # forged "mailbox full" reports to the bare return path
                forged = fixture(
                    "mailbox-full",
                    recipient="ann@example.com",
                    return_path=RETURN_PATH,
                    message_id=f"<forged-{n}@elsewhere.example>",
                )
                await receiver.deliver(forged, RETURN_PATH)
            genuine = report_about("mailbox-full", delivery, "ann@example.com", return_path=verp)

            assert (await receiver.deliver(genuine, verp))[0] == 250

            async with stack.sessions() as session:
                assert not await queries.is_suppressed(session, "ann@example.com")
            assert (await events(stack))[-1].outcome.startswith("counted (1 of 2")

    run(scenario())


def test_a_late_bounce_for_an_erased_subscriber_never_reaches_someone_else(
    settings, tmp_path, smtp_server
):
    async def scenario() -> None:
        async with running(config_for(settings, tmp_path), smtp_server) as receiver:
            stack = receiver.stack
            ids, delivery, verp = await lesson_to_ann(stack)
            async with stack.sessions.begin() as session:
                ann = await session.get(Subscriber, ids["ann@example.com"])
                assert ann is not None
                await forget(session, ann)
            assert delivery.sequence_id is not None
            bob = await stack.subscribe("bob@example.com", sequence_id=delivery.sequence_id)
            await stack.run()
            [bobs] = await stack.deliveries(bob)
            assert bobs.id != delivery.id  # ids are never given again, on SQLite too

            bounce = report_about(
                "postfix-user-unknown", delivery, "ann@example.com", return_path=verp
            )
            assert (await receiver.deliver(bounce, verp))[0] == 250

            async with stack.sessions() as session:
                assert not await queries.is_suppressed(session, "bob@example.com")
            [event] = await events(stack)
            assert event.outcome == "not acted on: it names no message we sent"

    run(scenario())


def test_a_policy_bounce_never_counts_against_the_subscriber(settings, tmp_path, smtp_server):
    async def scenario() -> None:
        config = config_for(settings, tmp_path, soft_limit=1)
        async with running(config, smtp_server) as receiver:
            stack = receiver.stack
            ids, delivery, verp = await lesson_to_ann(stack)

            await receiver.deliver(
                report_about("dmarc-reject", delivery, "ann@example.com", return_path=verp), verp
            )

            [event] = await events(stack)
            assert event.kind == "policy_bounce"
            assert event.status.startswith("5.7.")
            async with stack.sessions() as session:
                assert not await queries.is_suppressed(session, "ann@example.com")
                ann = await session.get(Subscriber, ids["ann@example.com"])
                assert ann is not None
                assert ann.status == SubscriberStatus.CONFIRMED

    run(scenario())


def test_a_forged_return_path_is_refused_and_a_bounce_naming_no_message_changes_nothing(
    settings, tmp_path, smtp_server
):
    async def scenario() -> None:
        async with running(config_for(settings, tmp_path), smtp_server) as receiver:
            stack = receiver.stack
            ids = await lessons_out(stack, ["ann@example.com"])
            delivery = await welcome(stack, ids["ann@example.com"])
            forged = f"bounces+{delivery.id}-aaaaaaaaaa@example.org"
            bounce = report_about(
                "postfix-user-unknown", delivery, "ann@example.com", return_path=forged
            )

            code, _ = await receiver.deliver(bounce, forged)
            assert code == 550

            # To the plain return path, quoting no Message-ID of ours: recorded, not acted on.
            anonymous = fixture(
                "postfix-user-unknown",
                recipient="ann@example.com",
                return_path=RETURN_PATH,
                message_id="<made-up@elsewhere.example>",
            )
            assert (await receiver.deliver(anonymous, RETURN_PATH))[0] == 250

            [event] = await events(stack)
            assert event.outcome == "not acted on: it names no message we sent"
            async with stack.sessions() as session:
                assert not await queries.is_suppressed(session, "ann@example.com")

    run(scenario())


def test_mail_for_anyone_else_is_refused(settings, tmp_path, smtp_server):
    async def scenario() -> None:
        async with running(config_for(settings, tmp_path), smtp_server) as receiver:
            code, _ = await receiver.deliver(b"Subject: hi\r\n\r\nhello\r\n", "ann@example.org")
            assert code == 550

    run(scenario())


def test_an_out_of_office_reply_changes_nothing(settings, tmp_path, smtp_server):
    async def scenario() -> None:
        async with running(config_for(settings, tmp_path), smtp_server) as receiver:
            stack = receiver.stack
            _ids, delivery, verp = await lesson_to_ann(stack)
            reply = report_about(
                "vacation-auto-reply", delivery, "ann@example.com", return_path=verp
            )

            assert (await receiver.deliver(reply, verp))[0] == 250
            assert await events(stack) == []

    run(scenario())


# --- complaints ----------------------------------------------------------------------------


def test_a_complaint_suppresses_the_address_it_quotes(settings, tmp_path, smtp_server):
    async def scenario() -> None:
        async with running(config_for(settings, tmp_path), smtp_server) as receiver:
            stack = receiver.stack
            ids = await lessons_out(stack, ["ann@example.com", "bob@example.com"])
            delivery = await welcome(stack, ids["ann@example.com"])
            verp = next(
                m.mail_from for m in smtp_server.messages if "ann@example.com" in m.rcpt_tos
            )
            complaint = report_about("arf-yahoo-aol", delivery, "ann@example.com", return_path=verp)

            assert (await receiver.deliver(complaint, RETURN_PATH))[0] == 250

            async with stack.sessions() as session:
                assert await queries.is_suppressed(session, "ann@example.com")
                assert not await queries.is_suppressed(session, "bob@example.com")
                ann = await session.get(Subscriber, ids["ann@example.com"])
                assert ann is not None
                assert ann.status == SubscriberStatus.COMPLAINED
            [event] = await events(stack)
            assert (event.kind, event.email) == ("complaint", "ann@example.com")

    run(scenario())


def test_a_course_pauses_when_its_complaints_pass_the_threshold(settings, tmp_path, smtp_server):
    async def scenario() -> None:
        config = config_for(settings, tmp_path, rate_min_sent=4, max_complaint_rate=0.3)
        async with running(config, smtp_server) as receiver:
            stack = receiver.stack
            emails = [f"reader{n}@example.com" for n in range(4)]
            ids = await lessons_out(stack, emails)
            for email in emails[:2]:  # one in four is within 30 %, two are not
                delivery = await welcome(stack, ids[email])
                complaint = report_about("arf-yahoo-aol", delivery, email)
                assert (await receiver.deliver(complaint, RETURN_PATH))[0] == 250

            async with stack.sessions() as session:
                sequence = await session.scalar(select(Sequence))
                assert sequence is not None
                assert sequence.status == SequenceStatus.PAUSED
                held = await queries.flag(session, queries.course_held(sequence.id))
                assert held is not None
                assert "reported as spam" in held.reason

    run(scenario())


def test_two_reports_about_one_message_count_once_towards_the_course_rate(
    settings, tmp_path, smtp_server
):
    async def scenario() -> None:
        config = config_for(settings, tmp_path, rate_min_sent=4, max_complaint_rate=0.3)
        async with running(config, smtp_server) as receiver:
            stack = receiver.stack
            emails = [f"reader{n}@example.com" for n in range(4)]
            ids = await lessons_out(stack, emails)
            delivery = await welcome(stack, ids[emails[0]])
            for source in ("arf-yahoo-aol", "arf-jmrp"):  # two loops, one message
                complaint = report_about(source, delivery, emails[0])
                assert (await receiver.deliver(complaint, RETURN_PATH))[0] == 250

            assert len(await events(stack)) == 2
            async with stack.sessions() as session:
                sequence = await session.scalar(select(Sequence))
                assert sequence is not None
                assert sequence.status == SequenceStatus.LIVE  # 1 of 4, within 30 %

    run(scenario())


# --- unsubscribes by mail ------------------------------------------------------------------


def test_the_mailto_unsubscribe_of_a_lesson_leaves_its_course(settings, tmp_path, smtp_server):
    async def scenario() -> None:
        async with running(config_for(settings, tmp_path), smtp_server) as receiver:
            stack = receiver.stack
            ids = await lessons_out(stack, ["ann@example.com"])
            [lesson] = stack.received("ann@example.com")
            mailto = str(lesson["List-Unsubscribe"]).split("<mailto:")[1].split(">")[0]
            address, _, query = mailto.partition("?subject=")
            token = query.removeprefix("unsubscribe%20")
            assert Tokens(SECRET).read_target(Purpose.UNSUBSCRIBE, token, START).sequence_id

            request = fixture("unsubscribe-gmail", recipient="ann@example.com", token=token)
            assert (await receiver.deliver(request, address))[0] == 250

            async with stack.sessions() as session:
                enrollment = await session.scalar(
                    select(Enrollment).where(Enrollment.subscriber_id == ids["ann@example.com"])
                )
                assert enrollment is not None
                assert enrollment.status == EnrollmentStatus.LEFT
            smtp_server.messages.clear()
            await stack.run_through(timedelta(days=21))
            assert smtp_server.messages == []  # and nobody was written back to either

    run(scenario())


#: What the receiving server (ours) adds on top of a message whose From passed DMARC.
VOUCHED = b"Authentication-Results: mx.example.org; dmarc=pass header.from=example.com\r\n"


def test_unsubscribe_written_by_hand_leaves_everything_once_the_sender_is_vouched_for(
    settings, tmp_path, smtp_server
):
    async def scenario() -> None:
        async with running(config_for(settings, tmp_path), smtp_server) as receiver:
            stack = receiver.stack
            ids = await lessons_out(stack, ["ann@example.com"])
            request = VOUCHED + fixture("unsubscribe-by-hand", recipient="ann@example.com")
            address = settings.sender.unsubscribe_address

            assert (await receiver.deliver(request, address))[0] == 250
            assert (await receiver.deliver(request, address))[0] == 250

            ann = await stack.subscriber(ids["ann@example.com"])
            assert ann.status == SubscriberStatus.UNSUBSCRIBED
            [event] = await events(stack)
            assert event.outcome == "unsubscribed from everything"

    run(scenario())


def test_a_tokenless_unsubscribe_from_an_unproven_sender_changes_nothing(
    settings, tmp_path, smtp_server
):
    async def scenario() -> None:
        async with running(config_for(settings, tmp_path), smtp_server) as receiver:
            stack = receiver.stack
            ids = await lessons_out(stack, ["ann@example.com"])
            # Anyone can write From: ann@...; a header below the receiving server's own
            # came with the message and proves nothing.
            forged = (
                b"Authentication-Results: mx.example.org; dmarc=fail header.from=example.com\r\n"
                + VOUCHED
                + fixture("unsubscribe-by-hand", recipient="ann@example.com")
            )

            code, _ = await receiver.deliver(forged, settings.sender.unsubscribe_address)

            assert code == 250
            ann = await stack.subscriber(ids["ann@example.com"])
            assert ann.status == SubscriberStatus.CONFIRMED
            [event] = await events(stack)
            assert event.outcome.startswith("not acted on: no token")

    run(scenario())


def test_an_unsubscribe_address_naming_a_course_leaves_only_that_course(
    settings, tmp_path, smtp_server
):
    async def scenario() -> None:
        async with running(config_for(settings, tmp_path), smtp_server) as receiver:
            stack = receiver.stack
            ids = await lessons_out(stack, ["ann@example.com"])
            local, _, domain = settings.sender.unsubscribe_address.partition("@")
            slug = shipped_course(REPO).slug
            request = VOUCHED + fixture("unsubscribe-by-hand", recipient="ann@example.com")

            assert (await receiver.deliver(request, f"{local}+{slug}@{domain}"))[0] == 250

            ann = await stack.subscriber(ids["ann@example.com"])
            assert ann.status == SubscriberStatus.CONFIRMED
            async with stack.sessions() as session:
                enrollment = await session.scalar(
                    select(Enrollment).where(Enrollment.subscriber_id == ann.id)
                )
            assert enrollment is not None
            assert enrollment.status == EnrollmentStatus.LEFT

    run(scenario())


def test_erasing_someone_erases_what_came_back_about_them_but_keeps_the_suppression(
    settings, tmp_path, smtp_server
):
    async def scenario() -> None:
        async with running(config_for(settings, tmp_path), smtp_server) as receiver:
            stack = receiver.stack
            ids, delivery, verp = await lesson_to_ann(stack)
            bounce = report_about(
                "postfix-user-unknown", delivery, "ann@example.com", return_path=verp
            )
            await receiver.deliver(bounce, verp)
            assert len(await events(stack)) == 1

            async with stack.sessions.begin() as session:
                ann = await session.get(Subscriber, ids["ann@example.com"])
                assert ann is not None
                await forget(session, ann)

            assert await events(stack) == []
            async with stack.sessions() as session:
                assert await queries.is_suppressed(session, "ann@example.com")

    run(scenario())


# --- newsletter issues ---------------------------------------------------------------------

#: The key of the issue tests.integration.test_broadcasts.issue writes.
JUNE = "2026-06"


async def readers(stack: Stack, count: int) -> None:
    """`count` confirmed subscribers on no course: readers of the newsletter alone."""
    async with stack.sessions.begin() as session:
        for n in range(count):
            await add_subscriber(
                session,
                NewSubscriber.parse(f"reader{n:03}@example.com", "", None),
                status=SubscriberStatus.CONFIRMED,
                consent={"form": "test"},
                now=stack.clock.now(),
            )


async def issue_sent(stack: Stack) -> dict[str, tuple[Delivery, str]]:
    """The issue's copies sent so far, by address: the delivery and the envelope sender (the
    VERP return path) it left with."""
    envelope = {rcpt: m.mail_from for m in stack.server.messages for rcpt in m.rcpt_tos}
    async with stack.sessions() as session:
        rows = await session.execute(
            select(Delivery, Subscriber.email)
            .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
            .where(Delivery.broadcast_id.is_not(None))
            .where(Delivery.status == DeliveryStatus.SENT)
        )
        return {email: (delivery, envelope[email]) for delivery, email in rows}


async def june(stack: Stack) -> tuple[Broadcast, Counter[str]]:
    """The issue's row, and its deliveries by status."""
    async with stack.sessions() as session:
        row = await broadcasts.by_key(session, JUNE)
        return row, await broadcasts.progress(session, row.id)


async def hard_bounce(receiver: Receiver, sent: tuple[Delivery, str], email: str) -> None:
    delivery, verp = sent
    bounce = report_about("postfix-user-unknown", delivery, email, return_path=verp)
    assert (await receiver.deliver(bounce, verp))[0] == 250


async def complaint(receiver: Receiver, sent: tuple[Delivery, str], email: str) -> None:
    report = report_about("arf-yahoo-aol", sent[0], email)  # quoting its Message-ID
    assert (await receiver.deliver(report, RETURN_PATH))[0] == 250


async def resume(stack: Stack) -> None:
    """What `newsletter broadcast resume 2026-06` does."""
    async with stack.sessions.begin() as session:
        await broadcasts.set_status(session, JUNE, BroadcastStatus.SENDING, now=stack.clock.now())


#: Past the hourly cap's window: the next hour's share may go.
NEXT_HOUR = timedelta(minutes=61)


def test_an_issue_whose_hard_bounces_pass_5_percent_of_its_sends_pauses_until_resumed(
    settings, tmp_path, smtp_server, caplog
):
    async def scenario() -> None:
        # A stale list of 240, sent 120 an hour, with the shipped thresholds (5 %, >= 100).
        config = config_for(settings, tmp_path, max_per_hour=120)
        async with running(config, smtp_server) as receiver:
            stack = receiver.stack
            await readers(stack, 240)
            await send(stack, issue(tmp_path))
            await stack.run()
            sent = await issue_sent(stack)
            assert len(sent) == 120
            bouncing = sorted(sent)[:7]

            for email in bouncing[:6]:
                await hard_bounce(receiver, sent[email], email)
            row, _ = await june(stack)
            assert (row.status, row.pause_reason) == (BroadcastStatus.SENDING, "")  # 5.0 %
            with caplog.at_level(logging.WARNING, logger="newsletter.inbound"):
                await hard_bounce(receiver, sent[bouncing[6]], bouncing[6])

            row, counts = await june(stack)
            assert row.status == BroadcastStatus.PAUSED
            assert row.pause_reason.startswith(
                "paused by the bounce rate: 7 of 120 sent (5.8%) bounced hard"
            )
            [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
            assert warning.getMessage().startswith(f"Newsletter issue {JUNE} paused by the bounce")
            assert counts == Counter({DeliveryStatus.SENT: 120, DeliveryStatus.QUEUED: 120})

            # Hours pass: the rest of the issue waits.
            smtp_server.messages.clear()
            await stack.run_for(timedelta(days=1))
            assert smtp_server.messages == []

            await resume(stack)
            await stack.run()
            row, counts = await june(stack)
            assert (row.status, row.pause_reason) == (BroadcastStatus.SENDING, "")
            assert counts == Counter({DeliveryStatus.SENT: 240})
            assert len(smtp_server.messages) == 120

    run(scenario())


def test_an_issue_sent_to_everyone_is_not_paused_by_late_bounces(settings, tmp_path, smtp_server):
    async def scenario() -> None:
        async with running(config_for(settings, tmp_path), smtp_server) as receiver:
            stack = receiver.stack
            await readers(stack, 120)
            await send(stack, issue(tmp_path))
            await stack.run()
            sent = await issue_sent(stack)
            assert len(sent) == 120

            for email in sorted(sent)[:10]:  # 8 %, but nothing is left to hold back
                await hard_bounce(receiver, sent[email], email)

            row, _ = await june(stack)
            assert (row.status, row.pause_reason) == (BroadcastStatus.SENDING, "")

    run(scenario())


def test_an_issue_pauses_past_one_complaint_in_a_thousand_once_it_has_sent_100(
    settings, tmp_path, smtp_server
):
    async def scenario() -> None:
        config = config_for(settings, tmp_path, max_per_hour=60)
        async with running(config, smtp_server) as receiver:
            stack = receiver.stack
            await readers(stack, 150)
            await send(stack, issue(tmp_path))
            await stack.run()
            first = await issue_sent(stack)
            email = min(first)
            await complaint(receiver, first[email], email)
            row, _ = await june(stack)
            assert (row.status, row.pause_reason) == (BroadcastStatus.SENDING, "")  # 60 sent

            stack.clock.advance(NEXT_HOUR)
            await stack.run()
            second = {e: d for e, d in (await issue_sent(stack)).items() if e not in first}
            email = min(second)
            await complaint(receiver, second[email], email)

            row, counts = await june(stack)
            assert row.status == BroadcastStatus.PAUSED
            assert row.pause_reason.startswith(
                "paused by the complaint rate: 2 of 120 sent (1.67%) were reported as spam"
            )
            stack.clock.advance(NEXT_HOUR)
            await stack.run()
            assert counts == (await june(stack))[1]
            assert counts == Counter({DeliveryStatus.SENT: 120, DeliveryStatus.QUEUED: 30})

    run(scenario())


def test_a_resumed_issue_counts_afresh_and_old_bounces_pause_it_no_more(
    settings, tmp_path, smtp_server
):
    async def scenario() -> None:
        config = config_for(settings, tmp_path, max_per_hour=120)
        async with running(config, smtp_server) as receiver:
            stack = receiver.stack
            await readers(stack, 360)  # three hours' worth: some is left after the resume
            await send(stack, issue(tmp_path))
            await stack.run()
            before = await issue_sent(stack)
            stack.clock.advance(timedelta(minutes=10))  # the bounces come back
            for email in sorted(before)[:7]:
                await hard_bounce(receiver, before[email], email)
            assert (await june(stack))[0].status == BroadcastStatus.PAUSED

            stack.clock.advance(timedelta(minutes=20))  # the admin looks into it
            await resume(stack)
            stack.clock.advance(NEXT_HOUR)
            await stack.run()
            after = {e: d for e, d in (await issue_sent(stack)).items() if e not in before}
            assert len(after) == 120
            # 6 of the 120 sent since the resume (5.0 %), and a late bounce of a copy sent
            # before the pause: counting from the start it would be 14 of 240 (5.8 %).
            late = sorted(before)[7]
            await hard_bounce(receiver, before[late], late)
            bouncing = sorted(after)[:7]
            for email in bouncing[:6]:
                await hard_bounce(receiver, after[email], email)
            row, _ = await june(stack)
            assert (row.status, row.pause_reason) == (BroadcastStatus.SENDING, "")

            # One more of its own since the resume passes 5 % again.
            await hard_bounce(receiver, after[bouncing[6]], bouncing[6])
            row, _ = await june(stack)
            assert row.status == BroadcastStatus.PAUSED
            assert row.pause_reason.startswith("paused by the bounce rate: 7 of 120 sent")

    run(scenario())
