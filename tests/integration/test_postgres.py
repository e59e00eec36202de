"""The same delivery guarantees on the PostgreSQL server of this machine (FOR UPDATE SKIP
LOCKED claims, timestamptz columns, the migrations); skipped where none answers."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine, text

from newsletter.config import Settings
from newsletter.db.models import DeliveryStatus
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
