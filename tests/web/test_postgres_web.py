"""The signup limits on PostgreSQL, where transactions run side by side: the daily cap of
confirmation emails holds for signups at the same moment, and a signup that waits for a
lock longer than [web] database_wait_s gets the 503 page. Skipped where no server answers."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from newsletter import signup
from newsletter.db.models import Subscriber
from newsletter.db.session import create_engine
from newsletter.tokens import LinkMaker, Tokens
from newsletter.web.app import create_app
from newsletter.web.routes import RETRY_BUSY_S
from tests.conftest import REPO
from tests.databases import only_postgres
from tests.integration.harness import Stack, settings_for, shipped_course
from tests.integration.test_postgres import (
    SIGNUP_AT,
    Sessions,
    confirmations_of,
    overlapping,
    run_on_postgres,
)
from tests.web.site import CLIENT_IP, LINK_SECRET, START

pytestmark = pytest.mark.postgres
SECRET = "web-test-secret-0123456789"


async def sign_up(
    session: AsyncSession, email: str, sequence_id: int, now: timedelta
) -> signup.SignupOutcome:
    return await signup.subscribe(
        session,
        signup.SignupRequest(email=email),
        signup.Visitor(ip="203.0.113.5"),
        sequence_id=sequence_id,
        sender_domain="example.com",
        now=SIGNUP_AT + now,
        confirmation_interval=timedelta(0),  # only the daily cap stands in the way
        confirmations_per_day=2,
    )


def test_two_signups_at_once_for_an_address_one_short_of_its_daily_cap_queue_one_email(
    postgres_url,
):
    async def scenario(sessions: Sessions, sequence_id: int) -> None:
        async with sessions.begin() as session:
            await sign_up(session, "ana@example.com", sequence_id, timedelta(0))
        later = timedelta(hours=1)
        outcomes = await overlapping(
            sessions, lambda session: sign_up(session, "ana@example.com", sequence_id, later)
        )
        assert outcomes == (signup.SignupOutcome.QUEUED, signup.SignupOutcome.DAILY_LIMIT)
        assert await confirmations_of(sessions, "ana@example.com") == 2

    run_on_postgres(postgres_url, scenario)


@only_postgres
def test_a_signup_waiting_for_a_lock_past_the_database_wait_gets_a_503(
    settings, tmp_path, smtp_server
):
    config = settings_for(settings, tmp_path, batch_size=10)
    config = config.model_copy(
        update={"web": config.web.model_copy(update={"database_wait_s": 0.3})}
    )

    async def scenario() -> None:
        stack = await Stack.start(config, smtp_server, START)
        await stack.queue(shipped_course(REPO))
        links = LinkMaker(Tokens(LINK_SECRET), config.site.base, "u@example.org")
        app = create_app(config, stack.sessions, stack.clock, links, secret=SECRET)
        transport = httpx.ASGITransport(app=app, client=(CLIENT_IP, 5000))
        client = httpx.AsyncClient(transport=transport, base_url=config.site.base)
        # Another signup from the same client, holding its turn (the advisory lock).
        holder = create_engine(config.database.url)
        try:
            async with holder.connect() as connection:
                key = signup.client_key(SECRET, CLIENT_IP)
                await connection.execute(
                    text("SELECT pg_advisory_lock(hashtextextended(:key, 0))"), {"key": key}
                )
                started = time.monotonic()
                answer = await client.post("/subscribe", data={"email": "ana@example.com"})
                took = time.monotonic() - started
                await connection.execute(text("SELECT pg_advisory_unlock_all()"))
            assert answer.status_code == 503
            assert answer.headers["retry-after"] == str(RETRY_BUSY_S)
            assert "We are busy for a moment" in answer.text
            assert took < 5
            async with stack.sessions() as session:
                assert await session.scalar(select(func.count()).select_from(Subscriber)) == 0
            again = await client.post("/subscribe", data={"email": "ana@example.com"})
            assert again.status_code == 303
        finally:
            await client.aclose()
            await holder.dispose()
            await stack.close()

    asyncio.run(scenario())
