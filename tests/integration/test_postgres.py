"""The same delivery guarantees on the PostgreSQL server of this machine (FOR UPDATE SKIP
LOCKED claims, timestamptz columns, the migrations); skipped where none answers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from newsletter import signup
from newsletter.courses import queue_course
from newsletter.db import queries
from newsletter.db.models import (
    Delivery,
    DeliveryKind,
    DeliveryStatus,
    Subscriber,
)
from newsletter.db.session import create_engine as create_async_engine
from newsletter.db.session import make_sessionmaker, upgrade_database
from tests.conftest import REPO
from tests.databases import only_postgres
from tests.integration.harness import Stack, settings_for, shipped_course
from tests.smtpd import SmtpServer

Sessions = async_sessionmaker[AsyncSession]
T = TypeVar("T")
pytestmark = pytest.mark.postgres


@only_postgres
def test_two_dispatchers_on_postgresql_never_send_a_delivery_twice(
    settings, tmp_path, smtp_server: SmtpServer
):
    config = settings_for(settings, tmp_path, batch_size=10)
    start = datetime(2026, 6, 9, 9, 0, tzinfo=UTC)

    async def scenario() -> None:
        first, second = await Stack.start(config, smtp_server, start), None
        try:
            second = await Stack.start(config, smtp_server, start)
            sequence = await first.queue(shipped_course(REPO))
            ids = [
                await first.subscribe(f"pg{n}@example.com", sequence_id=sequence) for n in range(60)
            ]
            await first.worker.plan_once(start)
            other = second.new_worker(second.transport, name="worker-2")
            while True:
                reports = await asyncio.gather(
                    first.worker.dispatch_once(start), other.dispatch_once(start)
                )
                if not any(sum(report.counts.values()) for report in reports):
                    break
            recipients = [rcpt for _, rcpts, _ in smtp_server.messages for rcpt in rcpts]
            assert sorted(recipients) == sorted(f"pg{n}@example.com" for n in range(60))

            await first.run_for(timedelta(days=14), step=timedelta(hours=6))
            assert len(smtp_server.messages) == 60 * 6
            for subscriber in ids[:3]:
                statuses = [d.status for d in await first.deliveries(subscriber)]
                assert statuses == [DeliveryStatus.SENT] * 6
        finally:
            await first.close()
            if second is not None:
                await second.close()

    asyncio.run(scenario())


# --- signups at the same moment -----------------------------------------------------------
# Each of these holds one transaction open until the other is seen waiting for it in
# pg_stat_activity, so that the two really overlap; on SQLite writers never do.

SIGNUP_AT = datetime(2026, 6, 9, 9, 0, tzinfo=UTC)


def run_on_postgres(url: str, scenario: Callable[[Sessions, int], Awaitable[None]]) -> None:
    """The scenario gets sessions on a migrated database with the course queued (its id)
    and gone@example.com suppressed."""
    upgrade_database(url)

    async def main() -> None:
        engine = create_async_engine(url)
        sessions = make_sessionmaker(engine)
        try:
            async with sessions.begin() as session:
                sequence = await queue_course(session, shipped_course(REPO), SIGNUP_AT)
                await queries.suppress(session, "gone@example.com", "bounce", "", SIGNUP_AT)
            await scenario(sessions, sequence.sequence_id)
        finally:
            await engine.dispose()

    asyncio.run(main())


async def sign_up(
    session: AsyncSession, email: str, sequence_id: int, now: datetime = SIGNUP_AT
) -> signup.SignupOutcome:
    return await signup.subscribe(
        session,
        signup.SignupRequest(email=email, first_name="Ann"),
        signup.Visitor(ip="203.0.113.5"),
        sequence_id=sequence_id,
        sender_domain="example.com",
        now=now,
    )


async def sign_up_alone(sessions: Sessions, email: str, sequence_id: int) -> signup.SignupOutcome:
    async with sessions.begin() as session:
        return await sign_up(session, email, sequence_id)


async def overlapping(
    sessions: Sessions, step: Callable[[AsyncSession], Awaitable[T]]
) -> tuple[T, T]:
    """`step` in two transactions: the first stays open until the second waits for one of
    its locks, then commits; returns both results."""
    async with sessions() as first:
        first_result = await step(first)

        async def second() -> T:
            async with sessions.begin() as session:
                return await step(session)

        waiting = asyncio.create_task(second())
        async with sessions() as observer:
            for _ in range(500):
                if waiting.done() or await observer.scalar(WAITING_FOR_A_LOCK):
                    break
                await asyncio.sleep(0.01)
        assert not waiting.done(), "the second transaction did not wait for the first"
        await first.commit()
        return first_result, await asyncio.wait_for(waiting, timeout=10)


WAITING_FOR_A_LOCK = text(
    "SELECT count(*) > 0 FROM pg_stat_activity "
    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
)


async def confirmations_of(sessions: Sessions, email: str) -> int:
    async with sessions() as session:
        count = await session.scalar(
            select(func.count())
            .select_from(Delivery)
            .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
            .where(Subscriber.email == email, Delivery.kind == DeliveryKind.CONFIRMATION)
        )
        return int(count or 0)


def test_two_signups_for_one_new_address_at_once_make_one_subscriber_and_one_email(
    postgres_url,
):
    async def scenario(sessions: Sessions, sequence_id: int) -> None:
        outcomes = await overlapping(
            sessions, lambda session: sign_up(session, "twice@example.com", sequence_id)
        )
        assert outcomes == (signup.SignupOutcome.QUEUED, signup.SignupOutcome.RECENTLY_SENT)
        assert await confirmations_of(sessions, "twice@example.com") == 1
        assert await sign_up_alone(sessions, "gone@example.com", sequence_id) == (
            signup.SignupOutcome.BLOCKED
        )

    run_on_postgres(postgres_url, scenario)


def test_two_signups_for_a_returning_address_at_once_queue_one_email(postgres_url):
    async def scenario(sessions: Sessions, sequence_id: int) -> None:
        await sign_up_alone(sessions, "back@example.com", sequence_id)
        later = SIGNUP_AT + timedelta(hours=1)  # past the confirmation interval
        outcomes = await overlapping(
            sessions, lambda session: sign_up(session, "back@example.com", sequence_id, later)
        )
        assert outcomes == (signup.SignupOutcome.QUEUED, signup.SignupOutcome.RECENTLY_SENT)
        assert await confirmations_of(sessions, "back@example.com") == 2

    run_on_postgres(postgres_url, scenario)


def test_signups_from_one_client_at_once_cannot_pass_its_limit(postgres_url):
    async def scenario(sessions: Sessions, sequence_id: int) -> None:
        def take(session: AsyncSession) -> Awaitable[bool]:
            return signup.take_signup_slot(session, "client", SIGNUP_AT, limit=1)

        assert await overlapping(sessions, take) == (True, False)
        async with sessions.begin() as session:
            later = SIGNUP_AT + signup.SIGNUP_WINDOW + timedelta(seconds=1)
            assert await signup.take_signup_slot(session, "client", later, limit=1)

    run_on_postgres(postgres_url, scenario)
