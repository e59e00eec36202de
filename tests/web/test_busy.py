"""A database that cannot be had in time: a page answers 503 "busy, try again" with
Retry-After within [web] database_wait_s, never a 500, and writes nothing."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import func, select

from newsletter.config import Settings
from newsletter.db.models import Subscriber
from newsletter.db.session import create_engine, make_sessionmaker
from newsletter.db.web_models import SignupAttempt
from newsletter.web.app import create_app
from newsletter.web.routes import RETRY_BUSY_S
from tests.databases import only_sqlite
from tests.web.site import Site, csrf_of, with_site

WAIT_S = 0.5


def waiting(settings: Settings, wait_s: float = WAIT_S) -> Settings:
    web = settings.web.model_copy(update={"database_wait_s": wait_s})
    return settings.model_copy(update={"web": web})


@pytest.fixture
def lock_holder(tmp_path) -> Iterator[sqlite3.Connection]:  # type: ignore[no-untyped-def]
    """Another process's writer, as the worker is: its own connection to the site's file."""
    connection = sqlite3.connect(tmp_path / "newsletter.db", isolation_level=None)
    yield connection
    connection.close()


async def rows(site: Site) -> tuple[int, int]:
    async with site.stack.sessions() as session:
        subscribers = await session.scalar(select(func.count()).select_from(Subscriber))
        attempts = await session.scalar(select(func.count()).select_from(SignupAttempt))
        return int(subscribers or 0), int(attempts or 0)


def assert_busy(answer: httpx.Response) -> None:
    assert answer.status_code == 503
    assert answer.headers["retry-after"] == str(RETRY_BUSY_S)
    assert "We are busy for a moment" in answer.text
    assert "Nothing was changed" in answer.text
    assert answer.headers["x-content-type-options"] == "nosniff"


@only_sqlite  # SQLite's write lock (PostgreSQL: tests/web/test_postgres_web.py)
def test_a_signup_while_another_process_holds_the_write_lock_gets_a_503_and_writes_nothing(
    settings, tmp_path, smtp_server, lock_holder, caplog
):
    async def scenario(site: Site) -> None:
        before = await rows(site)
        lock_holder.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        answer = await site.signup("ana@example.com", first_name="Ana")
        took = time.monotonic() - started
        lock_holder.execute("COMMIT")

        assert_busy(answer)
        assert WAIT_S * 0.9 <= took < WAIT_S + 2
        assert await rows(site) == before
        [logged] = [r.getMessage() for r in caplog.records if "Database busy" in r.getMessage()]
        assert logged.endswith("/subscribe: database is locked")  # the driver's words only
        # Once the lock is free, the same signup goes through.
        assert (await site.signup("ana@example.com", first_name="Ana")).status_code == 303

    with_site(waiting(settings), tmp_path, smtp_server, scenario)


@only_sqlite  # SQLite's write lock (PostgreSQL: tests/web/test_postgres_web.py)
def test_signups_queued_behind_a_held_lock_share_one_wait_not_one_each(
    settings, tmp_path, smtp_server, lock_holder
):
    async def scenario(site: Site) -> None:
        lock_holder.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        answers = await asyncio.gather(*(site.signup(f"n{n}@example.com") for n in range(6)))
        took = time.monotonic() - started
        lock_holder.execute("COMMIT")
        for answer in answers:
            assert_busy(answer)
        # Each in turn, waiting its own WAIT_S after the one before, would take 3 s.
        assert took < WAIT_S * 3
        assert await rows(site) == (0, 0)

    with_site(waiting(settings), tmp_path, smtp_server, scenario)


@only_sqlite  # SQLite's write lock (PostgreSQL: tests/web/test_postgres_web.py)
def test_confirming_and_leaving_while_the_lock_is_held_get_a_503_and_change_nothing(
    settings, tmp_path, smtp_server, lock_holder
):
    async def scenario(site: Site) -> None:
        await site.signup("ben@example.com")
        await site.stack.run()
        link = site.confirm_link("ben@example.com")
        page = await site.client.get(link)
        ana = await site.stack.subscribe("ana@example.com", sequence_id=site.sequence_id)
        unsubscribe, preferences = site.personal_paths(ana)
        settings_page = await site.client.get(preferences)

        lock_holder.execute("BEGIN IMMEDIATE")
        assert_busy(await site.client.post(link, data={"csrf": csrf_of(page)}))
        assert_busy(await site.client.post(unsubscribe))
        assert_busy(
            await site.client.post(
                preferences, data={"csrf": csrf_of(settings_page), "action": "pause"}
            )
        )
        lock_holder.execute("COMMIT")

        ben = await site.subscriber("ben@example.com")
        ana_now = await site.subscriber("ana@example.com")
        assert ben is not None
        assert ben.status == "pending"
        assert ana_now is not None
        assert ana_now.status == "confirmed"
        assert (await site.client.post(unsubscribe)).status_code == 200

    with_site(waiting(settings), tmp_path, smtp_server, scenario)


def test_a_database_server_that_refuses_connections_gets_a_503_not_a_500(
    settings, tmp_path, smtp_server
):
    async def scenario(site: Site) -> None:
        # Nothing listens on port 9 (discard) of this machine: the connection is refused.
        engine = create_engine("postgresql+psycopg://postgres@127.0.0.1:9/newsletter")
        app = create_app(
            site.stack.settings,
            make_sessionmaker(engine),
            site.stack.clock,
            site.links,
            secret="web-test-secret-0123456789",
        )
        transport = httpx.ASGITransport(app=app, client=("203.0.113.5", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost:8000") as c:
            assert_busy(await c.get("/"))
            assert_busy(await c.post("/subscribe", data={"email": "ana@example.com"}))
        await engine.dispose()

    with_site(settings, tmp_path, smtp_server, scenario)
