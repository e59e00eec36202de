"""Engines and sessions for SQLite (the default) and PostgreSQL, and schema migrations."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.ext.asyncio import AsyncSession as AsyncSession

MIGRATIONS = Path(__file__).with_name("migrations")
#: Execution option marking an engine whose sessions only read.
READ_ONLY = "newsletter_read_only"
#: Execution option: on SQLite, BEGIN IMMEDIATE fails at once instead of waiting when
#: another connection writes, so that the caller can wait in finer steps (take_write_lock).
NO_BUSY_WAIT = "newsletter_no_busy_wait"
#: How long a writer waits for SQLite's write lock before giving up with an error.
BUSY_TIMEOUT_MS = 10_000
#: take_write_lock asks again this often. SQLite's own busy handler sleeps ever longer
#: (1, 2, 5, 10 … 100 ms) and only then looks again, so a wait on a lock held for 30 ms
#: often lasted 53 or 78 ms (docs/benchmarks.md, signups).
LOCK_POLL_S = 0.001
_ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+psycopg"}
_SYNC_DRIVERS = {"sqlite": "sqlite", "postgresql": "postgresql+psycopg"}


def _with_driver(url: str, drivers: dict[str, str]) -> URL:
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    return parsed.set(drivername=drivers.get(backend, parsed.drivername))


def create_engine(url: str) -> AsyncEngine:
    engine = create_async_engine(_with_driver(url, _ASYNC_DRIVERS))
    if engine.dialect.name == "sqlite":
        tune_sqlite(engine.sync_engine)
    return engine


def tune_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # The driver's own implicit BEGIN would start deferred transactions; we begin
        # ourselves (below) so that every transaction takes the write lock up front.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
        cursor.execute("PRAGMA synchronous=NORMAL")  # durable at checkpoints; safe with WAL
        cursor.execute("PRAGMA foreign_keys=ON")
        # Another process writing: wait, do not fail.
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # BEGIN IMMEDIATE: two processes that read, then write, would otherwise deadlock
        # and one would fail with "database is locked" instead of waiting its turn.
        # Read-only sessions (make_sessionmaker(read_only=True)) begin deferred, so a long
        # export never holds up the workers (WAL lets readers and one writer overlap).
        options = connection.get_execution_options()
        if options.get(READ_ONLY, False):
            connection.exec_driver_sql("BEGIN")
        elif options.get(NO_BUSY_WAIT, False):
            connection.exec_driver_sql("PRAGMA busy_timeout=0")
            try:
                connection.exec_driver_sql("BEGIN IMMEDIATE")
            finally:
                connection.exec_driver_sql(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        else:
            connection.exec_driver_sql("BEGIN IMMEDIATE")


def make_sessionmaker(
    engine: AsyncEngine, *, read_only: bool = False
) -> async_sessionmaker[AsyncSession]:
    bind = engine.execution_options(**{READ_ONLY: True}) if read_only else engine
    return async_sessionmaker(bind, expire_on_commit=False)


def upgrade_database(url: str) -> None:
    """Apply pending migrations (idempotent). Creates the SQLite file and its folder."""
    sync_url = _with_driver(url, _SYNC_DRIVERS)
    if sync_url.get_backend_name() == "sqlite" and sync_url.database:
        Path(sync_url.database).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(sync_url), "head")


def alembic_config(sync_url: URL) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["url"] = sync_url
    return config


def read_only(sessions: async_sessionmaker[AsyncSession]) -> async_sessionmaker[AsyncSession]:
    """The same database, for sessions that only read (see make_sessionmaker)."""
    engine: AsyncEngine = sessions.kw["bind"]
    return async_sessionmaker(engine.execution_options(**{READ_ONLY: True}), expire_on_commit=False)


async def take_write_lock(session: AsyncSession, timeout_s: float = BUSY_TIMEOUT_MS / 1000) -> None:
    """Begin the session's transaction now, and on SQLite take the write lock, asking for
    it every LOCK_POLL_S while another process holds it, for up to `timeout_s`. For a
    process's latency-sensitive writes (the web's); other writers use SQLite's own wait."""
    if session.get_bind().dialect.name != "sqlite":
        await session.connection()
        return
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            await session.connection(execution_options={NO_BUSY_WAIT: True})
            return
        except OperationalError as exc:
            if not _is_busy(exc) or time.monotonic() > deadline:
                raise
            await session.rollback()
        await asyncio.sleep(LOCK_POLL_S)


def _is_busy(exc: OperationalError) -> bool:
    return "database is locked" in str(exc.orig)
