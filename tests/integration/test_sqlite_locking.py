"""Taking SQLite's write lock promptly (prompt_writes, take_write_lock): the web's writes
wait for another process's transaction in 1 ms steps instead of SQLite's ever longer
sleeps, and give up with an error after the timeout like any other writer; the process's
other sessions keep SQLite's own wait."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from newsletter.db import session as session_module
from newsletter.db.session import (
    BUSY_TIMEOUT_MS,
    LOCK_POLL_S,
    create_engine,
    make_sessionmaker,
    prompt_writes,
    take_write_lock,
    upgrade_database,
)

Sessions = async_sessionmaker[AsyncSession]
ADD_FLAG = "INSERT INTO system_flags (name, reason, set_at) VALUES (:name, '', 0)"


@pytest.fixture
def database(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'locking.db'}"
    upgrade_database(url)
    return url


@pytest.fixture
def other_process(database: str) -> Iterator[sqlite3.Connection]:
    """Another writer, as the worker process would be: its own connection to the file,
    which fails at once rather than wait when it cannot have the lock."""
    connection = sqlite3.connect(database.removeprefix("sqlite:///"), isolation_level=None)
    connection.execute("PRAGMA busy_timeout=0")
    yield connection
    connection.close()


def run_with_sessions(
    database: str, scenario: Callable[[Sessions, Sessions], Awaitable[None]]
) -> None:
    """The scenario gets the process's sessions, and its prompt ones for the web's writes."""

    async def main() -> None:
        engine = create_engine(database)
        sessions = make_sessionmaker(engine)
        try:
            async with prompt_writes(sessions) as writes:
                await scenario(sessions, writes)
        finally:
            await engine.dispose()

    asyncio.run(main())


async def busy_timeout(session: AsyncSession) -> int:
    return int(await session.scalar(text("PRAGMA busy_timeout")) or 0)


@pytest.fixture
def refusals(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every time take_write_lock was refused the lock, in order: it asks again each time,
    where SQLite's own wait would have kept it inside the driver, unseen."""
    seen: list[str] = []
    is_busy = session_module._is_busy

    def counting(exc: OperationalError) -> bool:
        seen.append(str(exc.orig))
        return is_busy(exc)

    monkeypatch.setattr(session_module, "_is_busy", counting)
    return seen


def test_a_write_asks_again_while_another_process_writes_and_goes_on_when_it_is_done(
    database, other_process, refusals
):
    other_process.execute("BEGIN IMMEDIATE")
    other_process.execute(ADD_FLAG, {"name": "theirs"})

    async def scenario(sessions: Sessions, writes: Sessions) -> None:
        async def write() -> None:
            async with writes() as session:
                await take_write_lock(session)
                await session.execute(text(ADD_FLAG), {"name": "ours"})
                await session.commit()

        writing = asyncio.create_task(write())
        # Turns to ask for the lock and be refused; a loaded machine gives fewer per second.
        async with asyncio.timeout(10):
            while len(refusals) < 2:
                await asyncio.sleep(LOCK_POLL_S)
        assert not writing.done()
        assert all("locked" in refusal for refusal in refusals)

        other_process.execute("COMMIT")
        await asyncio.wait_for(writing, timeout=5)

    run_with_sessions(database, scenario)
    names = [row[0] for row in other_process.execute("SELECT name FROM system_flags")]
    assert sorted(names) == ["ours", "theirs"]


def test_a_write_gives_up_after_the_timeout(database, other_process, refusals):
    other_process.execute("BEGIN IMMEDIATE")

    async def scenario(sessions: Sessions, writes: Sessions) -> None:
        async with writes() as session:
            with pytest.raises(OperationalError, match="locked"):
                # Long enough for a second try on a loaded machine (it asks every 1 ms).
                await take_write_lock(session, timeout_s=0.5)
        assert len(refusals) >= 2  # it asked again before giving up

    run_with_sessions(database, scenario)


def test_only_the_prompt_writes_skip_sqlites_own_wait(database):
    """The process's other writers (the scheduler, in `newsletter serve`) still wait."""

    async def scenario(sessions: Sessions, writes: Sessions) -> None:
        async with sessions.begin() as session:
            assert await busy_timeout(session) == BUSY_TIMEOUT_MS
        async with writes.begin() as session:
            assert await busy_timeout(session) == 0

    run_with_sessions(database, scenario)


def test_the_lock_is_held_from_the_moment_it_is_taken(database, other_process):
    async def scenario(sessions: Sessions, writes: Sessions) -> None:
        async with writes() as session:
            await take_write_lock(session)
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other_process.execute("BEGIN IMMEDIATE")
            await session.rollback()
        other_process.execute("BEGIN IMMEDIATE")
        other_process.execute("ROLLBACK")

    run_with_sessions(database, scenario)
