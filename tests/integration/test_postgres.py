"""The same delivery guarantees on the PostgreSQL server of this machine (FOR UPDATE SKIP
LOCKED claims, timestamptz columns, the migrations); skipped where none answers."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine, select, text

from newsletter import signup
from newsletter.config import Settings
from newsletter.courses import queue_course
from newsletter.db import queries
from newsletter.db.models import (
    Delivery,
    DeliveryKind,
    DeliveryStatus,
    Subscriber,
    SubscriberStatus,
)
from newsletter.db.session import create_engine as create_async_engine
from newsletter.db.session import make_sessionmaker, upgrade_database
from tests.conftest import REPO
from tests.integration.harness import Stack, settings_for, shipped_course
from tests.smtpd import SmtpServer

SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"
pytestmark = pytest.mark.postgres


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A database of this test's own, dropped afterwards."""
    name = f"newsletter_test_{secrets.token_hex(4)}"
    admin = create_engine(f"{SERVER}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # no server here: say so rather than fail
        admin.dispose()
        pytest.skip(f"no PostgreSQL server at {SERVER}: {type(exc).__name__}")
    try:
        yield f"{SERVER}/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


def on_postgres(settings: Settings, tmp_path, url: str) -> Settings:  # type: ignore[no-untyped-def]
    local = settings_for(settings, tmp_path, batch_size=10)
    return local.model_copy(update={"database": local.database.model_copy(update={"url": url})})


def test_two_dispatchers_on_postgresql_never_send_a_delivery_twice(
    settings, tmp_path, smtp_server: SmtpServer, postgres_url
):
    config = on_postgres(settings, tmp_path, postgres_url)
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


def test_signups_on_postgresql_race_limit_and_block(postgres_url):
    """The signup statements (INSERT … SELECT … ON CONFLICT, the one-statement rate limit)
    on PostgreSQL: two signups for one new address at the same moment make one pending
    subscriber and one confirmation; a suppressed address gets nothing; the limit holds."""
    now = datetime(2026, 6, 9, 9, 0, tzinfo=UTC)
    upgrade_database(postgres_url)

    async def scenario() -> None:
        engine = create_async_engine(postgres_url)
        sessions = make_sessionmaker(engine)
        try:
            async with sessions.begin() as session:
                sequence_id = (await queue_course(session, shipped_course(REPO), now)).sequence_id
                await queries.suppress(session, "gone@example.com", "bounce", "", now)

            async def sign_up(email: str) -> signup.SignupOutcome:
                async with sessions.begin() as session:
                    return await signup.subscribe(
                        session,
                        signup.SignupRequest(email=email, first_name="Ann"),
                        signup.Visitor(ip="203.0.113.5"),
                        sequence_id=sequence_id,
                        sender_domain="example.com",
                        now=now,
                    )

            outcomes = await asyncio.gather(*(sign_up("twice@example.com") for _ in range(2)))
            assert sorted(outcomes) == [
                signup.SignupOutcome.QUEUED,
                signup.SignupOutcome.RECENTLY_SENT,
            ]
            assert await sign_up("gone@example.com") == signup.SignupOutcome.BLOCKED

            async with sessions.begin() as session:
                slots = [
                    await signup.take_signup_slot(session, "client", now, limit=3) for _ in range(4)
                ]
                assert slots == [True, True, True, False]
                later = now + signup.SIGNUP_WINDOW + timedelta(seconds=1)
                assert await signup.take_signup_slot(session, "client", later, limit=3)

            async with sessions() as session:
                rows = (await session.execute(select(Subscriber.email, Subscriber.status))).all()
                assert rows == [("twice@example.com", SubscriberStatus.PENDING)]
                kinds = (await session.scalars(select(Delivery.kind))).all()
                assert kinds == [DeliveryKind.CONFIRMATION]
        finally:
            await engine.dispose()

    asyncio.run(scenario())
