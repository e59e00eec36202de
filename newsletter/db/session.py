"""Engines and sessions for SQLite (the default) and PostgreSQL, and schema migrations."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine as create_sync_engine_core
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.ext.asyncio import AsyncSession as AsyncSession

MIGRATIONS = Path(__file__).with_name("migrations")
#: Execution option marking an engine whose sessions only read.
READ_ONLY = "newsletter_read_only"
#: Execution option of a SQLite connection whose statements are each a transaction.
STATEMENT_READS = "newsletter_statement_reads"
#: How long a writer waits for SQLite's write lock before giving up with an error.
BUSY_TIMEOUT_MS = 10_000
#: take_write_lock asks again this often. SQLite's own busy handler sleeps ever longer
#: (1, 2, 5, 10, 15, 20, 25 … ms) before it looks again, at 1, 3, 8, 18, 33, 53, 78 … ms:
#: a writer that waits for a 35 ms transaction of the worker starts after 53 ms.
LOCK_POLL_S = 0.001
_ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+psycopg"}
_SYNC_DRIVERS = {"sqlite": "sqlite", "postgresql": "postgresql+psycopg"}


def _with_driver(url: str | URL, drivers: dict[str, str]) -> URL:
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    return parsed.set(drivername=drivers.get(backend, parsed.drivername))


def create_engine(url: str | URL, *, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> AsyncEngine:
    """`busy_timeout_ms`: on SQLite, how long a statement waits for another connection's
    lock before failing; 0 for connections whose user waits itself (prompt_writes)."""
    engine = create_async_engine(_with_driver(url, _ASYNC_DRIVERS))
    if engine.dialect.name == "sqlite":
        tune_sqlite(engine.sync_engine, busy_timeout_ms)
    return engine


def create_sync_engine(url: str | URL) -> Engine:
    """A synchronous engine (`db copy`), tuned as the async ones are on SQLite."""
    engine = create_sync_engine_core(_with_driver(url, _SYNC_DRIVERS))
    if engine.dialect.name == "sqlite":
        tune_sqlite(engine)
    return engine


def tune_sqlite(engine: Engine, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> None:
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
        cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # BEGIN IMMEDIATE: two processes that read, then write, would otherwise deadlock
        # and one would fail with "database is locked" instead of waiting its turn.
        # Read-only sessions (make_sessionmaker(read_only=True)) begin deferred, so a long
        # export never holds up the workers (WAL lets readers and one writer overlap).
        options = connection.get_execution_options()
        if options.get(STATEMENT_READS):
            return  # the driver runs each statement on its own (statement_reader)
        connection.exec_driver_sql("BEGIN" if options.get(READ_ONLY) else "BEGIN IMMEDIATE")


def make_sessionmaker(
    engine: AsyncEngine, *, read_only: bool = False
) -> async_sessionmaker[AsyncSession]:
    bind = engine.execution_options(**{READ_ONLY: True}) if read_only else engine
    return async_sessionmaker(bind, expire_on_commit=False)


def upgrade_database(url: str) -> None:
    """Apply pending migrations (idempotent). Creates the SQLite file and its folder."""
    sync_url = _with_driver(url, _SYNC_DRIVERS)
    if sync_url.get_backend_name() == "sqlite" and sync_url.database:
        if sqlite_schema_version(Path(sync_url.database)) == SCHEMA_HEAD:
            return
        Path(sync_url.database).parent.mkdir(parents=True, exist_ok=True)
    # Imported here: Alembic takes a fifth of a second to import, which every admin
    # command on an up-to-date SQLite file would otherwise pay.
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["url"] = sync_url
    command.upgrade(config, "head")


def _head_revision() -> str:
    # Migration files are named after their revision ("0003_last_attempt.py"), in order.
    return max(path.name.split("_")[0] for path in (MIGRATIONS / "versions").glob("[0-9]*.py"))


#: The newest schema revision.
SCHEMA_HEAD = _head_revision()


def sqlite_schema_version(path: Path) -> str | None:
    """The revision an SQLite file is at; None if it has none (or does not exist)."""
    if not path.is_file():
        return None
    try:
        with contextlib.closing(
            sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        ) as db:
            row = db.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.Error:
        return None
    return row[0] if row else None


def read_only(sessions: async_sessionmaker[AsyncSession]) -> async_sessionmaker[AsyncSession]:
    """The same database, for sessions that only read (see make_sessionmaker)."""
    engine: AsyncEngine = sessions.kw["bind"]
    return async_sessionmaker(engine.execution_options(**{READ_ONLY: True}), expire_on_commit=False)


@asynccontextmanager
async def statement_reader(
    sessions: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncConnection]:
    """A connection of its own on which every statement is a transaction of its own
    (autocommit), so each reads what was committed when it began. For a stream of small
    reads: one round trip each, where a session adds a checkout, a BEGIN and a ROLLBACK
    (on SQLite through aiosqlite's thread, a tenth of the cost)."""
    engine: AsyncEngine = sessions.kw["bind"]
    async with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            # The driver already leaves transactions to us (tune_sqlite): begin none.
            yield await connection.execution_options(**{STATEMENT_READS: True})
        else:
            yield await connection.execution_options(isolation_level="AUTOCOMMIT")


@asynccontextmanager
async def prompt_writes(
    sessions: async_sessionmaker[AsyncSession],
) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions for a process's latency-sensitive writes, which it makes one at a time and
    begins with take_write_lock. On SQLite they get a connection of their own that never
    sleeps in SQLite's busy handler: take_write_lock asks for the lock again every
    LOCK_POLL_S instead. (A connection of their own, because switching the wait off and on
    around each BEGIN costs two more statements per write.) Elsewhere, the same sessions."""
    engine: AsyncEngine = sessions.kw["bind"]
    if engine.dialect.name != "sqlite":
        yield sessions
        return
    own = create_engine(engine.url, busy_timeout_ms=0)
    try:
        yield make_sessionmaker(own)
    finally:
        await own.dispose()


async def take_write_lock(session: AsyncSession, timeout_s: float = BUSY_TIMEOUT_MS / 1000) -> None:
    """Begin the session's transaction now, taking SQLite's write lock: if another process
    holds it, ask again every LOCK_POLL_S for up to `timeout_s`. Prompt only on sessions
    from prompt_writes; on others SQLite's own wait comes first."""
    if session.get_bind().dialect.name != "sqlite":
        await session.connection()
        return
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            await session.connection()
            return
        except OperationalError as exc:
            if not _is_busy(exc) or time.monotonic() > deadline:
                raise
            await session.rollback()
        await asyncio.sleep(LOCK_POLL_S)


def _is_busy(exc: OperationalError) -> bool:
    return "database is locked" in str(exc.orig)


def database_unavailable(exc: BaseException) -> bool:
    """Whether a database error means "busy or out of reach for now, try again" rather than
    a mistake of ours: SQLite's write lock held past the wait, or its disk full; on
    PostgreSQL a lost or refused connection, a lock wait past lock_timeout, a serialization
    failure or deadlock, too many connections, a server shutting down; a full connection
    pool. A worker keeps its outcomes and tries again; the web answers 503, not 500."""
    if isinstance(exc, PoolTimeout):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    error = exc.orig
    sqlite_name = getattr(error, "sqlite_errorname", None)
    if isinstance(sqlite_name, str):
        return sqlite_name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_FULL"))
    sqlstate = getattr(error, "sqlstate", "")
    if sqlstate is None:  # psycopg: no answer from the server at all
        return isinstance(exc, OperationalError | InterfaceError)
    return isinstance(sqlstate, str) and (sqlstate[:2] in _UNAVAILABLE or sqlstate == "55P03")


#: PostgreSQL error classes that say "not now": connection exception, transaction rollback
#: (serialization failure, deadlock), insufficient resources, operator intervention.
_UNAVAILABLE = frozenset({"08", "40", "53", "57"})
