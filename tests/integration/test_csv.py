"""Subscribers to and from CSV on real databases (SQLite, and PostgreSQL where one answers):
export rows with consent, courses and tags, streamed; imports keep the first of an
address."""

from __future__ import annotations

import asyncio
import shutil
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select, update

from newsletter.content.course import load_course
from newsletter.courses import queue_course
from newsletter.db import queries
from newsletter.db.models import Enrollment, EnrollmentStatus, Subscriber, SubscriberStatus
from newsletter.db.session import create_engine, make_sessionmaker, upgrade_database
from newsletter.subscribers import (
    EXPORT_COLUMNS,
    NewSubscriber,
    add_subscriber,
    add_tags,
    export_rows,
    import_subscribers,
)
from tests.conftest import COURSE_DIR, COURSE_SLUG

NOW = datetime(2026, 6, 8, 8, 0, tzinfo=UTC)
WEB_CONSENT = {
    "form": "signup-page",
    "text": "Send me this free email course …",
    "version": "2026-11-1",
    "given_at": "2026-06-01T10:00:00+00:00",
    "ip": "203.0.113.7",
    "user_agent": "Mozilla/5.0",
    "confirmed_at": "2026-06-01T10:05:00+00:00",
    "confirmed_ip": "203.0.113.8",
    "confirmed_user_agent": "Mozilla/5.0",
}
ADMIN_CONSENT = {
    "form": "admin command line",
    "text": "added by an administrator",
    "given_at": "2026-06-02T09:00:00+00:00",
    "source": "people.csv",
}


async def populate(url: str, tmp_path: Path) -> None:
    upgrade_database(url)
    engine = create_engine(url)
    sessions = make_sessionmaker(engine)
    second = Path(shutil.copytree(COURSE_DIR, tmp_path / "another-course"))
    async with sessions.begin() as session:
        first_id = (await queue_course(session, load_course(COURSE_DIR), NOW)).sequence_id
        second_id = (await queue_course(session, load_course(second), NOW)).sequence_id
        people = [
            ("ana@example.com", "Ana", "Europe/Paris", WEB_CONSENT, [first_id, second_id]),
            ("-bo@example.com", '=HYPERLINK("https://evil.test","x")', None, ADMIN_CONSENT, []),
            ("cy@example.com", "Cy", None, {}, [first_id]),
        ]
        for email, name, timezone, consent, sequences in people:
            subscriber, _ = await add_subscriber(
                session,
                NewSubscriber.parse(email, name, timezone),
                status=SubscriberStatus.CONFIRMED,
                consent=consent,
                now=NOW,
            )
            for sequence_id in sequences:
                await queries.enroll(session, subscriber.id, sequence_id, NOW)
            if email == "ana@example.com":
                await add_tags(session, [(subscriber.id, "vip"), (subscriber.id, "baker")], NOW)
        await session.execute(
            update(Enrollment)
            .where(Enrollment.sequence_id == second_id)
            .values(status=EnrollmentStatus.COMPLETED)
        )
    await engine.dispose()


async def export(url: str) -> tuple[list[dict[str, str]], int]:
    """The export as dicts by column, and the most objects the session held meanwhile."""
    engine = create_engine(url)
    rows, most_held = [], 0
    try:
        async with make_sessionmaker(engine, read_only=True)() as session:
            async for row in export_rows(session):
                rows.append(dict(zip(EXPORT_COLUMNS, row, strict=True)))
                most_held = max(most_held, len(session.identity_map))
    finally:
        await engine.dispose()
    return rows, most_held


def test_export_has_consent_course_and_tag_columns_and_keeps_no_objects(database_url, tmp_path):
    asyncio.run(populate(database_url, tmp_path))
    rows, most_held = asyncio.run(export(database_url))
    assert most_held == 0
    assert [row["email"] for row in rows] == [
        "ana@example.com",
        "-bo@example.com",
        "cy@example.com",
    ]
    ana, bo, cy = rows
    assert ana == {
        "email": "ana@example.com",
        "first_name": "Ana",
        "timezone": "Europe/Paris",
        "status": "confirmed",
        "created_at": "2026-06-08T08:00:00+00:00",
        "confirmed_at": "2026-06-08T08:00:00+00:00",
        "unsubscribed_at": "",
        "consent_form": "signup-page",
        "consent_version": "2026-11-1",
        "consent_given_at": "2026-06-01T10:00:00+00:00",
        "consent_ip": "203.0.113.7",
        "consent_confirmed_at": "2026-06-01T10:05:00+00:00",
        "consent_confirmed_ip": "203.0.113.8",
        "consent_source": "",
        "courses": f"another-course: completed; {COURSE_SLUG}: active",
        "tags": "baker vip",  # once, though ana is on two courses; as an import reads them
    }
    assert (bo["consent_form"], bo["consent_given_at"], bo["consent_source"]) == (
        "admin command line",
        "2026-06-02T09:00:00+00:00",
        "people.csv",
    )
    assert bo["courses"] == ""
    assert bo["tags"] == cy["tags"] == ""
    # Cells come out as stored: making them safe for spreadsheets is the writer's job.
    assert bo["first_name"] == '=HYPERLINK("https://evil.test","x")'
    assert cy["consent_form"] == ""
    assert cy["courses"] == f"{COURSE_SLUG}: active"


def test_an_import_adds_only_new_addresses_and_leaves_existing_ones_as_they_were(database_url):
    async def scenario() -> tuple[int, list[tuple[str, str]]]:
        upgrade_database(database_url)
        engine = create_engine(database_url)
        sessions = make_sessionmaker(engine)
        try:
            async with sessions.begin() as session:
                await import_subscribers(
                    session, [NewSubscriber("cy@example.com", "Cy")], ADMIN_CONSENT, NOW
                )
            async with sessions.begin() as session:
                added = await import_subscribers(
                    session,
                    [NewSubscriber("cy@example.com", "Other"), NewSubscriber("di@example.com")],
                    ADMIN_CONSENT,
                    NOW,
                )
            async with sessions() as session:
                found = await session.execute(
                    select(Subscriber.email, Subscriber.first_name).order_by(Subscriber.email)
                )
                return added, [tuple(row) for row in found]
        finally:
            await engine.dispose()

    added, people = asyncio.run(scenario())
    assert added == 1
    assert people == [("cy@example.com", "Cy"), ("di@example.com", "")]
