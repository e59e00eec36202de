"""`newsletter db copy` as an admin runs it: a table of counts and exit 0 when both sides
agree; exit 1 and one line of error, never a traceback, when they cannot or do not."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest

from newsletter.content.course import load_course
from newsletter.courses import queue_course
from newsletter.db import queries
from newsletter.db.models import SubscriberStatus
from newsletter.db.session import create_engine, make_sessionmaker, upgrade_database
from newsletter.subscribers import NewSubscriber, add_subscriber, add_tags
from tests.conftest import COURSE_DIR


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An SQLite file with the shipped course queued, two subscribers and a tag (made
    in-process, once: the commands under test are the copies)."""
    path = tmp_path_factory.mktemp("source") / "newsletter.db"

    async def fill() -> None:
        upgrade_database(f"sqlite:///{path}")
        engine = create_engine(f"sqlite:///{path}")
        async with make_sessionmaker(engine).begin() as session:
            course = await queue_course(session, load_course(COURSE_DIR), NOW)
            for email in ("ann@example.com", "bo@example.com"):
                person, _ = await add_subscriber(
                    session,
                    NewSubscriber.parse(email),
                    status=SubscriberStatus.CONFIRMED,
                    consent={},
                    now=NOW,
                )
                await queries.enroll(session, person.id, course.sequence_id, NOW)
            await add_tags(session, [(person.id, "vip")], NOW)
        await engine.dispose()

    asyncio.run(fill())
    return path


def copy_of(source: Path, tmp_path: Path) -> str:
    """A copy of the source file for one test (SQLite files are the tests' own)."""
    shutil.copy(source, tmp_path / "newsletter.db")
    return f"sqlite:///{tmp_path / 'newsletter.db'}"


NOW = datetime(2026, 6, 8, 8, 0, tzinfo=UTC)


def table_rows(stdout: str) -> dict[str, list[str]]:
    """The printed table's rows by table name: its cells, stripped."""
    rows = {}
    for line in stdout.splitlines():
        if line.startswith("│"):
            name, *cells = (cell.strip() for cell in line.strip("│").split("│"))
            rows[name] = cells
    return rows


def one_line_error(result) -> str:  # type: ignore[no-untyped-def]
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: ")
    return line


@pytest.mark.postgres
def test_a_copy_to_postgresql_prints_every_table_the_same_and_a_second_is_refused(
    admin, tmp_path, source, postgres_url
):
    source = copy_of(source, tmp_path)

    copied = admin("db", "copy", source, postgres_url)

    assert copied.returncode == 0, copied.stderr
    rows = table_rows(copied.stdout)
    assert rows["subscribers"] == ["2", "2", "max 2, sum 3", "max 2, sum 3", "same"]
    assert rows["lessons"][:2] == ["6", "6"]
    assert [cells[-1] for cells in rows.values()] == ["same"] * 12
    assert copied.stdout.splitlines()[-1].startswith("Copied ")
    assert "every table has the same rows and ids on both sides." in copied.stdout
    assert "subscribers: 2 rows copied in " in copied.stderr
    assert "lessons: 6 rows copied in " in copied.stderr

    again = one_line_error(admin("db", "copy", source, postgres_url))
    assert "already holds rows (subscribers 2, " in again
    assert again.endswith("create a new database (createdb) and copy into it")


def test_what_cannot_be_copied_is_said_in_one_line(admin, tmp_path, source):
    source = copy_of(source, tmp_path)
    cases = {
        "not a URL": ("not-a-url", f"sqlite:///{tmp_path / 'copy.db'}"),
        "the same file twice": (source, f"sqlite:///{tmp_path}/./newsletter.db"),
        "a server that does not answer": (source, "postgresql://postgres@127.0.0.1:1/list"),
        "a missing file": (f"sqlite:///{tmp_path / 'missing.db'}", f"sqlite:///{tmp_path}/c.db"),
        "another database": (source, "mysql://root@127.0.0.1/list"),
    }
    with ThreadPoolExecutor(len(cases)) as pool:
        results = dict(
            zip(
                cases,
                pool.map(lambda urls: admin("db", "copy", *urls), cases.values()),
                strict=True,
            )
        )
    lines = {case: one_line_error(result) for case, result in results.items()}

    assert lines["not a URL"].startswith("error: the source 'not-a-url' is not a database URL")
    assert "are the same database" in lines["the same file twice"]
    assert lines["a server that does not answer"].startswith(
        "error: cannot open the target database postgresql://postgres@127.0.0.1:1/list: "
    )
    assert lines["a missing file"].endswith("missing.db: no such file")
    assert "is not SQLite or PostgreSQL" in lines["another database"]
    assert not (tmp_path / "copy.db").exists()
    assert not (tmp_path / "c.db").exists()


def test_a_copy_that_does_not_count_the_same_on_both_sides_exits_1_and_keeps_nothing(
    admin, tmp_path, source
):
    source = copy_of(source, tmp_path)
    target = tmp_path / "target.db"
    upgrade_database(f"sqlite:///{target}")
    # A trigger on the target that quietly drops every tag copied into it.
    with contextlib.closing(sqlite3.connect(target)) as db, db:
        db.execute(
            "CREATE TRIGGER lose_tags AFTER INSERT ON subscriber_tags "
            "BEGIN DELETE FROM subscriber_tags WHERE id = NEW.id; END"
        )

    result = admin("db", "copy", source, f"sqlite:///{target}")

    assert result.returncode == 1
    rows = table_rows(result.stdout)
    assert rows["subscriber_tags"][:2] == ["1", "0"]
    assert rows["subscriber_tags"][-1] == "DIFFERENT"
    assert rows["subscribers"][-1] == "same"
    assert result.stderr.strip().splitlines()[-1] == (
        "error: subscriber_tags differ between the source and the target: the copy was "
        "rolled back and the target holds no rows"
    )
    with contextlib.closing(sqlite3.connect(target)) as db:
        assert db.execute("SELECT count(*) FROM subscribers").fetchone() == (0,)
