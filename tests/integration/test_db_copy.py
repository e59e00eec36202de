"""`newsletter db copy` on real databases: a list filled through the real code paths on
SQLite, copied to PostgreSQL and back, row for row; the worker goes on from the copy."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from newsletter import signup
from newsletter.db import queries
from newsletter.db.copy import copy_database, copy_order
from newsletter.db.models import Base, SubscriberStatus
from newsletter.db.session import create_sync_engine
from newsletter.errors import NewsletterError
from newsletter.inbound.inbox import Inbox
from newsletter.inbound.reports import Report, ReportKind
from newsletter.subscribers import NewSubscriber, add_subscriber, add_tags, forget
from newsletter.tokens import Tokens
from tests.conftest import REPO
from tests.databases import on_database, only_sqlite
from tests.integration.harness import SECRET, Stack, settings_for, shipped_course
from tests.integration.test_broadcasts import issue, send
from tests.smtpd import SmtpServer

START = datetime(2026, 6, 8, 8, 0, 0, 123456, tzinfo=UTC)
CONSENT = {
    "form": "signup-page",
    "text": "Schick mir den Kurs \u2013 \u201ejederzeit\u201c abbestellbar 📨 日本語",
    "given_at": "2026-06-01T10:00:00+00:00",
    "ip": "203.0.113.7",
    "nested": {"list": [1, 2.5, None, True], "nul in json": "a\x00b"},
}
HOSTILE_NAME = "Robert'); DROP TABLE subscribers;-- «évil» 🙂 \\ %s"


async def fill(stack: Stack, tmp_path: Path) -> None:
    """A list with a row in every table, made as the service makes them."""
    sequence = await stack.queue(shipped_course(REPO))
    for n in range(4):
        await stack.subscribe(f"reader{n}@example.com", sequence_id=sequence)
    async with stack.sessions.begin() as session:
        hostile, _ = await add_subscriber(
            session,
            NewSubscriber.parse("hostile@example.com", HOSTILE_NAME, "Asia/Kolkata"),
            status=SubscriberStatus.CONFIRMED,
            consent=CONSENT,
            now=stack.clock.now(),
        )
        await queries.enroll(session, hostile.id, sequence, stack.clock.now())
        await add_tags(session, [(hostile.id, "vip"), (1, "vip"), (1, "physio")], START)
        await signup.take_signup_slot(session, signup.client_key(SECRET, "203.0.113.9"), START)
        await signup.subscribe(
            session,
            signup.SignupRequest(email="pending@example.com", first_name="Pat"),
            signup.Visitor(ip="203.0.113.9", user_agent="Mozilla/5.0"),
            sequence_id=sequence,
            sender_domain="example.com",
            now=stack.clock.now(),
        )
        await queries.suppress(session, "gone@example.com", "bounce", "550 5.1.1", START)
        await queries.set_flag(
            session, "sending_paused", until=START + timedelta(hours=1), reason="test", now=START
        )
    await stack.run_for(timedelta(days=3), step=timedelta(hours=6))
    await send(stack, issue(tmp_path, send_at="2026-06-12T09:30:00"))
    await stack.run()
    inbox = Inbox(
        stack.settings, stack.sessions, tokens=Tokens(SECRET), return_path=None, wall=stack.clock
    )
    await inbox.record(
        Report(
            kind=ReportKind.SOFT_BOUNCE,
            recipient="reader2@example.com",
            status="4.2.2",
            diagnostic="452 4.2.2 Mailbox full",
            original_message_id=None,
            original_return_path=None,
            fingerprint="f" * 64,
        ),
        "file",
    )
    # Someone signs up and is erased at once: their confirmation, the newest delivery, goes,
    # and its id is never handed out again (AUTOINCREMENT), on the copy neither.
    async with stack.sessions.begin() as session:
        await signup.subscribe(
            session,
            signup.SignupRequest(email="leaver@example.com"),
            signup.Visitor(ip=None),
            sequence_id=sequence,
            sender_domain="example.com",
            now=stack.clock.now(),
        )
    async with stack.sessions.begin() as session:
        leaver = await queries.subscriber_by_email(session, "leaver@example.com")
        assert leaver is not None
        await forget(session, leaver)


def rows_of(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, ordered by primary key; times as ISO text, so that an
    offset or a microsecond that changed shows."""
    engine = create_sync_engine(url)
    try:
        with engine.connect() as connection:
            return {
                copy.table.name: [
                    tuple(v.isoformat() if isinstance(v, datetime) else v for v in row)
                    for row in connection.execute(
                        select(copy.table).order_by(*copy.table.primary_key.columns)
                    )
                ]
                for copy in copy_order()
            }
    finally:
        engine.dispose()


def next_delivery_id_floor(url: str) -> int:
    """The highest delivery id the database ever handed out."""
    engine = create_sync_engine(url)
    try:
        with engine.connect() as connection:
            if connection.dialect.name == "postgresql":
                query = "SELECT pg_sequence_last_value(pg_get_serial_sequence('deliveries', 'id'))"
            else:
                query = "SELECT seq FROM sqlite_sequence WHERE name = 'deliveries'"
            return int(connection.scalar(text(query)) or 0)
    finally:
        engine.dispose()


@pytest.mark.postgres
@only_sqlite  # the list starts on SQLite
def test_a_list_copied_to_postgresql_and_back_keeps_every_row_and_the_worker_goes_on(
    settings, tmp_path, smtp_server: SmtpServer, postgres_url
):
    config = settings_for(settings, tmp_path)
    sqlite_url = config.database.url

    async def scenario() -> None:
        stack = await Stack.start(config, smtp_server, START)
        try:
            await fill(stack, tmp_path)
        finally:
            await stack.close()

    asyncio.run(scenario())
    original = rows_of(sqlite_url)
    assert [name for name, rows in original.items() if not rows] == [], (
        "fill() leaves these tables empty: give them a row so that the copy is tested"
    )
    high_water = next_delivery_id_floor(sqlite_url)
    assert high_water > max(row[0] for row in original["deliveries"])  # the leaver's confirmation

    report = copy_database(sqlite_url, postgres_url)

    assert report.same
    assert {check.name for check in report.tables} == set(Base.metadata.tables)
    assert rows_of(postgres_url) == original
    hostile = next(row for row in original["subscribers"] if row[1] == "hostile@example.com")
    assert hostile[2] == HOSTILE_NAME
    assert hostile[5] == CONSENT
    assert hostile[6] == START.isoformat()  # aware UTC, to the microsecond
    assert next_delivery_id_floor(postgres_url) == high_water

    # The worker goes on from the copy: the next lesson for each reader, none twice, with
    # ids past any the SQLite file handed out.
    sent_before = {row[0]: row for row in original["deliveries"]}

    async def go_on() -> None:
        stack = await Stack.start(
            on_database(config, postgres_url), smtp_server, START + timedelta(days=3)
        )
        try:
            await stack.run_for(timedelta(days=3), step=timedelta(hours=6))
            async with stack.sessions.begin() as session:
                newcomer, _ = await add_subscriber(
                    session,
                    NewSubscriber.parse("after@example.com"),
                    status=SubscriberStatus.CONFIRMED,
                    consent={},
                    now=stack.clock.now(),
                )
                assert newcomer.id == max(row[0] for row in original["subscribers"]) + 1
        finally:
            await stack.close()

    asyncio.run(go_on())
    after = rows_of(postgres_url)
    new = [row for row in after["deliveries"] if row[0] not in sent_before]
    assert new
    assert min(row[0] for row in new) > high_water
    lessons = [(row[1], row[5]) for row in after["deliveries"] if row[5] is not None]
    assert len(lessons) == len(set(lessons))  # no lesson twice to anyone
    for reader in (1, 2, 3):
        before = sum(1 for row in original["deliveries"] if row[1] == reader and row[5])
        assert sum(1 for subscriber, _ in lessons if subscriber == reader) > before

    # And back: PostgreSQL to a new SQLite file, row for row, counters too.
    back_url = f"sqlite:///{tmp_path / 'back' / 'newsletter.db'}"
    assert copy_database(postgres_url, back_url).same
    assert rows_of(back_url) == after
    assert next_delivery_id_floor(back_url) == next_delivery_id_floor(postgres_url)

    # A target with rows is refused, and left as it was.
    with pytest.raises(NewsletterError, match=r"already holds rows \(subscribers 7, "):
        copy_database(sqlite_url, postgres_url)
    assert rows_of(postgres_url) == after


@pytest.mark.postgres
@only_sqlite  # the list starts on SQLite
def test_text_postgresql_cannot_store_is_refused_with_its_row_named_and_nothing_copied(
    settings, tmp_path, smtp_server: SmtpServer, postgres_url
):
    config = settings_for(settings, tmp_path)

    async def scenario() -> None:
        stack = await Stack.start(config, smtp_server, START)
        try:
            sequence = await stack.queue(shipped_course(REPO))
            await stack.subscribe("ann@example.com", name="Ann", sequence_id=sequence)
        finally:
            await stack.close()

    asyncio.run(scenario())
    # SQLite keeps a NUL in text; PostgreSQL cannot.
    with contextlib.closing(sqlite3.connect(tmp_path / "newsletter.db")) as db, db:
        db.execute("UPDATE subscribers SET first_name = 'An' || char(0) || 'n' WHERE id = 1")

    with pytest.raises(NewsletterError) as refused:
        copy_database(config.database.url, postgres_url)

    assert str(refused.value).startswith(
        "subscribers id 1: first_name holds a NUL character, which PostgreSQL text cannot store"
    )
    assert all(rows == [] for rows in rows_of(postgres_url).values())


def test_a_source_behind_the_schema_head_is_refused_with_how_to_upgrade_it(tmp_path: Path):
    from alembic import command

    from tests.integration.test_schema import alembic_config

    command.upgrade(alembic_config(tmp_path / "old.db"), "0007")
    with pytest.raises(NewsletterError, match=r"schema revision 0007, not 0008: upgrade it first"):
        copy_database(f"sqlite:///{tmp_path / 'old.db'}", f"sqlite:///{tmp_path / 'new.db'}")
    assert not (tmp_path / "new.db").exists()
