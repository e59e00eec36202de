"""Copy a whole list from one database to another, SQLite to PostgreSQL and back
(`newsletter db copy`, docs/postgres.md).

Every table of the schema is copied, in foreign-key order, with its primary keys, from
one read transaction of the source (a snapshot: SQLite's WAL read transaction,
PostgreSQL's REPEATABLE READ) into one transaction of the target. Before that transaction
commits, each table's rows are counted and its ids checksummed on both sides; if anything
differs it is rolled back, so a target holds either the whole verified copy or no rows.
Rows go through the columns' own types both ways (aware UTC times, JSON, times of day), in
batches read with a server-side cursor, so memory stays flat whatever the table's size."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    func,
    insert,
    inspect,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.sql.ddl import sort_tables_and_constraints

from newsletter.db import web_models as web_models  # registers the web app's tables
from newsletter.db.models import Base
from newsletter.db.session import READ_ONLY, SCHEMA_HEAD, create_sync_engine, upgrade_database
from newsletter.errors import NewsletterError

#: Rows read and written at a time.
BATCH = 1000
#: Tables a database or Alembic keeps for itself: not part of the list.
_OWN_TABLES = frozenset({"alembic_version", "sqlite_sequence", "sqlite_stat1", "sqlite_stat4"})
_BACKENDS = ("sqlite", "postgresql")


class CopyProgress(Protocol):
    def table_started(self, table: str, rows: int) -> None: ...
    def rows_copied(self, table: str, copied: int, rows: int) -> None: ...
    def table_done(self, table: str, rows: int, seconds: float) -> None: ...


class _Silent:
    def table_started(self, table: str, rows: int) -> None:
        pass

    def rows_copied(self, table: str, copied: int, rows: int) -> None:
        pass

    def table_done(self, table: str, rows: int, seconds: float) -> None:
        pass


@dataclass(frozen=True)
class TableCheck:
    """One table on both sides: its rows, and a checksum of its primary keys."""

    name: str
    source_rows: int
    source_ids: str
    target_rows: int
    target_ids: str

    @property
    def same(self) -> bool:
        return (self.source_rows, self.source_ids) == (self.target_rows, self.target_ids)


@dataclass(frozen=True)
class CopyReport:
    source: str  #: the URLs, passwords hidden
    target: str
    tables: list[TableCheck]
    seconds: float

    @property
    def same(self) -> bool:
        """True: the copy was committed. False: it was rolled back, the target has no rows."""
        return all(table.same for table in self.tables)

    @property
    def rows(self) -> int:
        return sum(table.source_rows for table in self.tables)


@dataclass(frozen=True)
class TableCopy:
    table: Table
    #: Columns of a foreign key that closes a cycle (sequences.current_version_id): copied
    #: as NULL, then filled in once every table is there.
    later: tuple[Column[Any], ...] = ()


def copy_order(metadata: MetaData = Base.metadata) -> list[TableCopy]:
    """Every table of the schema, each after the tables it refers to. A cycle of foreign
    keys is broken only where the schema says so (use_alter) on a column that may be NULL;
    anything else is an error, not a guess."""
    ordered = sort_tables_and_constraints(metadata.tables.values())  # type: ignore[no-untyped-call]
    later: dict[Table, list[Column[Any]]] = {}
    for table, constraints in ordered:
        if table is not None:
            continue
        for constraint in constraints:
            parent = constraint.table
            referred = constraint.referred_table.name
            if not constraint.use_alter:
                raise NewsletterError(
                    f"db copy cannot order table {parent.name}: its foreign key to {referred} "
                    "is part of a cycle that the schema does not break with use_alter"
                )
            for column in constraint.columns:
                if not column.nullable:
                    raise NewsletterError(
                        f"db copy cannot order table {parent.name}: {column.name} closes a "
                        f"cycle of foreign keys with {referred} and may not be NULL"
                    )
                later.setdefault(parent, []).append(column)
    return [
        TableCopy(table, tuple(later.get(table, ()))) for table, _ in ordered if table is not None
    ]


def database_url(text_: str, side: str) -> URL:
    """The URL of the source or target, or a one-line error."""
    expected = "expected sqlite:///path/to/newsletter.db or postgresql://user@host/database"
    try:
        url = make_url(text_)
    except ArgumentError:
        raise NewsletterError(f"the {side} {text_!r} is not a database URL: {expected}") from None
    if url.get_backend_name() not in _BACKENDS:
        raise NewsletterError(f"the {side} {describe(url)} is not SQLite or PostgreSQL: {expected}")
    if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
        raise NewsletterError(f"the {side} {describe(url)} names no SQLite file: {expected}")
    return url


def describe(url: URL) -> str:
    return url.render_as_string(hide_password=True)


def same_database(first: URL, second: URL) -> bool:
    if first.get_backend_name() != second.get_backend_name():
        return False
    if first.get_backend_name() == "sqlite":
        one, other = Path(first.database or ""), Path(second.database or "")
        if one.resolve() == other.resolve():
            return True
        return one.exists() and other.exists() and one.samefile(other)
    return (first.host or "localhost", first.port or 5432, first.database) == (
        second.host or "localhost",
        second.port or 5432,
        second.database,
    )


def copy_database(
    source: str,
    target: str,
    *,
    batch_size: int = BATCH,
    progress: CopyProgress | None = None,
) -> CopyReport:
    """Copy every table from `source` into `target`, which must hold no rows (it is
    migrated to the head first), and check both sides. Raises NewsletterError, saying
    what to do, when the copy cannot be made; a report whose `same` is False was rolled
    back."""
    source_url, target_url = database_url(source, "source"), database_url(target, "target")
    if same_database(source_url, target_url):
        raise NewsletterError(
            f"the source and the target are the same database ({describe(source_url)})"
        )
    if source_url.get_backend_name() == "sqlite" and not Path(source_url.database or "").is_file():
        raise NewsletterError(f"the source {describe(source_url)}: no such file")
    plan = copy_order()
    source_engine = create_sync_engine(source_url)
    target_engine = create_sync_engine(target_url)
    try:
        with _connected(source_engine, "source", source_url) as reader:
            snapshot = _snapshot(reader)
            with snapshot.begin():
                try:
                    _check_source(snapshot, source_url, plan)
                except DBAPIError as exc:
                    raise NewsletterError(
                        f"cannot read the source {describe(source_url)}: {_first_line(exc)}"
                    ) from None
                _prepare_target(target_engine, target_url, plan)
                with _connected(target_engine, "target", target_url) as writer:
                    started = time.monotonic()
                    tables = _copy(snapshot, writer, plan, batch_size, progress or _Silent())
        return CopyReport(
            describe(source_url), describe(target_url), tables, time.monotonic() - started
        )
    finally:
        source_engine.dispose()
        target_engine.dispose()


@contextmanager
def _connected(engine: Engine, side: str, url: URL) -> Iterator[Connection]:
    try:
        connection = engine.connect()
    except DBAPIError as exc:
        raise NewsletterError(
            f"cannot open the {side} database {describe(url)}: {_first_line(exc)}"
        ) from None
    with connection:
        yield connection


def _first_line(exc: DBAPIError) -> str:
    text_ = str(exc.orig) if exc.orig is not None else str(exc)
    return text_.strip().splitlines()[0] if text_.strip() else type(exc).__name__


def _schema_version(connection: Connection) -> str | None:
    if not inspect(connection).has_table("alembic_version"):
        return None
    version = connection.scalar(text("SELECT version_num FROM alembic_version"))
    return str(version) if version is not None else None


def _prepare_target(engine: Engine, url: URL, plan: list[TableCopy]) -> None:
    """Refuse a target with rows in it; migrate it to the head."""
    new_file = url.get_backend_name() == "sqlite" and not Path(url.database or "").exists()
    if not new_file:
        with _connected(engine, "target", url) as connection, connection.begin():
            present = set(inspect(connection).get_table_names())
            held = {
                copy.table.name: rows
                for copy in plan
                if copy.table.name in present
                and (rows := connection.scalar(select(func.count()).select_from(copy.table)))
            }
            version = _schema_version(connection)
        if held:
            listed = ", ".join(f"{name} {rows:,}" for name, rows in held.items())
            fresh = (
                "name a new file"
                if url.get_backend_name() == "sqlite"
                else "create a new database (createdb) and copy into it"
            )
            raise NewsletterError(
                f"the target {describe(url)} already holds rows ({listed}): db copy only "
                f"fills an empty database; {fresh}"
            )
        if version is not None and version > SCHEMA_HEAD:
            raise NewsletterError(
                f"the target {describe(url)} is at schema revision {version}, newer than "
                f"this newsletter's {SCHEMA_HEAD}"
            )
    upgrade_database(url.render_as_string(hide_password=False))


def _check_source(connection: Connection, url: URL, plan: list[TableCopy]) -> None:
    version = _schema_version(connection)
    if version is None:
        raise NewsletterError(
            f"the source {describe(url)} holds no newsletter schema (no alembic_version table)"
        )
    if version != SCHEMA_HEAD:
        raise NewsletterError(
            f"the source {describe(url)} is at schema revision {version}, not {SCHEMA_HEAD}: "
            "upgrade it first (`newsletter db upgrade` with database.url set to it, e.g. "
            "NEWSLETTER_DATABASE__URL=... newsletter db upgrade), then copy"
        )
    present = {
        name
        for name in inspect(connection).get_table_names()
        if name not in _OWN_TABLES and not name.startswith("sqlite_")
    }
    known = {copy.table.name for copy in plan}
    if unknown := sorted(present - known):
        raise NewsletterError(
            f"the source has tables this newsletter does not know ({', '.join(unknown)}): "
            "db copy would leave them behind, so it copies nothing"
        )
    if missing := sorted(known - present):
        raise NewsletterError(
            f"the source lacks tables of schema {SCHEMA_HEAD} ({', '.join(missing)})"
        )


def _snapshot(reader: Connection) -> Connection:
    """The connection, set to read one snapshot in its next transaction: on PostgreSQL a
    REPEATABLE READ one; on SQLite a deferred BEGIN, whose first read fixes what the whole
    transaction sees (WAL). (Connection.execution_options sets them on the connection.)"""
    if reader.dialect.name == "postgresql":
        return reader.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
    return reader.execution_options(**{READ_ONLY: True})


def _copy(
    snapshot: Connection,
    writer: Connection,
    plan: list[TableCopy],
    batch_size: int,
    progress: CopyProgress,
) -> list[TableCheck]:
    """Every table, in one transaction of the writer, committed only if both sides then
    have the same rows and ids."""
    with writer.begin() as transaction:
        for copy in plan:
            _copy_table(snapshot, writer, copy, batch_size, progress)
        for copy in plan:
            _fill_in_later(snapshot, writer, copy, batch_size)
        for copy in plan:
            _carry_id_counter(snapshot, writer, copy.table)
        checks = [
            TableCheck(copy.table.name, *_ids(snapshot, copy.table), *_ids(writer, copy.table))
            for copy in plan
        ]
        if not all(check.same for check in checks):
            transaction.rollback()
    return checks


def _copy_table(
    reader: Connection,
    writer: Connection,
    copy: TableCopy,
    batch_size: int,
    progress: CopyProgress,
) -> None:
    table, started = copy.table, time.monotonic()
    total = reader.scalar(select(func.count()).select_from(table)) or 0
    progress.table_started(table.name, total)
    keys = [column.key for column in table.columns]
    later = [column.key for column in copy.later]
    refuse = _postgresql_refusals(table) if writer.dialect.name == "postgresql" else None
    statement = insert(table)
    rows = reader.execute(
        select(table)
        .order_by(*table.primary_key.columns)
        .execution_options(yield_per=batch_size)  # a server-side cursor on PostgreSQL
    )
    copied = 0
    for partition in _read(rows.partitions(), table):
        batch = [dict(zip(keys, row, strict=True)) for row in partition]
        for values in batch:
            if refuse is not None:
                refuse(values)
            for key in later:
                values[key] = None
        try:
            writer.execute(statement, batch)
        except DBAPIError as exc:
            first, last = _row_name(table, batch[0]), _row_name(table, batch[-1])
            raise NewsletterError(
                f"{table.name}: the target refused a row between {first} and {last}: "
                f"{_first_line(exc)}; nothing was copied"
            ) from None
        copied += len(batch)
        progress.rows_copied(table.name, copied, total)
    progress.table_done(table.name, copied, time.monotonic() - started)


def _read(partitions: Iterator[Any], table: Table) -> Iterator[Any]:
    try:
        yield from partitions
    except (ValueError, TypeError) as exc:  # a value SQLite kept that its column cannot be
        raise NewsletterError(f"{table.name}: a row of the source cannot be read: {exc}") from None


def _postgresql_refusals(table: Table) -> Callable[[dict[str, Any]], None]:
    """A check of each row for text PostgreSQL would refuse or a driver would have to
    change: a NUL character (PostgreSQL text cannot hold one), or more characters than the
    column's length (SQLite never enforces it). Refused with the row named, never cut."""
    texts = [
        (column.key, column.type.length)
        for column in table.columns
        if isinstance(column.type, String)
    ]

    def refuse(values: dict[str, Any]) -> None:
        for key, length in texts:
            value = values[key]
            if not isinstance(value, str):
                continue
            if "\x00" in value:
                raise NewsletterError(
                    f"{table.name} {_row_name(table, values)}: {key} holds a NUL character, "
                    "which PostgreSQL text cannot store; nothing was copied (remove it from "
                    "that row of the source, then copy again)"
                )
            if length is not None and len(value) > length:
                raise NewsletterError(
                    f"{table.name} {_row_name(table, values)}: {key} is {len(value)} "
                    f"characters, longer than the column's {length}; nothing was copied"
                )

    return refuse


def _row_name(table: Table, values: dict[str, Any]) -> str:
    return ", ".join(f"{column.key} {values[column.key]!r}" for column in table.primary_key)


def _fill_in_later(
    reader: Connection, writer: Connection, copy: TableCopy, batch_size: int
) -> None:
    if not copy.later:
        return
    table, keys = copy.table, list(copy.table.primary_key.columns)
    statement = (
        update(table)
        .where(*(column == bindparam(f"key_{column.key}") for column in keys))
        .values({column.key: bindparam(f"new_{column.key}") for column in copy.later})
    )
    query = (
        select(*keys, *copy.later)
        .where(or_(*(column.is_not(None) for column in copy.later)))
        .order_by(*keys)
        .execution_options(yield_per=batch_size)
    )
    names = [f"key_{column.key}" for column in keys] + [f"new_{c.key}" for c in copy.later]
    for partition in reader.execute(query).partitions():
        writer.execute(statement, [dict(zip(names, row, strict=True)) for row in partition])


def _id_column(table: Table) -> Column[Any] | None:
    """The table's primary key if it is one integer column (its ids come from a counter)."""
    keys = list(table.primary_key.columns)
    if len(keys) == 1 and isinstance(keys[0].type, Integer):
        return keys[0]
    return None


def _id_counter(connection: Connection, table: Table, column: Column[Any]) -> int:
    """The last id the database handed out for the table, which may be past its rows' own
    (the newest rows were deleted): PostgreSQL's sequence, SQLite's AUTOINCREMENT record."""
    if connection.dialect.name == "postgresql":
        value = connection.scalar(
            text("SELECT pg_sequence_last_value(pg_get_serial_sequence(:table, :column))"),
            {"table": table.name, "column": column.name},
        )
    elif _sqlite_autoincrement(connection, table):
        value = connection.scalar(
            text("SELECT seq FROM sqlite_sequence WHERE name = :table"), {"table": table.name}
        )
    else:
        value = None
    return int(value or 0)


def _sqlite_autoincrement(connection: Connection, table: Table) -> bool:
    sql = connection.scalar(
        text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = :table"),
        {"table": table.name},
    )
    return sql is not None and "AUTOINCREMENT" in str(sql).upper()


def _carry_id_counter(reader: Connection, writer: Connection, table: Table) -> None:
    """Set the target's id counter to the source's, so that new rows get new ids, never
    one the source handed out already (a late bounce names its delivery by id)."""
    column = _id_column(table)
    if column is None:
        return
    highest = max(
        int(reader.scalar(select(func.coalesce(func.max(column), 0))) or 0),
        _id_counter(reader, table, column),
    )
    if writer.dialect.name == "postgresql":
        # setval(…, 1, false): the next id is 1; setval(…, n, true): the next is n + 1.
        writer.execute(
            text("SELECT setval(pg_get_serial_sequence(:table, :column), :value, :called)"),
            {
                "table": table.name,
                "column": column.name,
                "value": max(highest, 1),
                "called": highest > 0,
            },
        )
    elif _sqlite_autoincrement(writer, table):
        changed = writer.execute(
            text("UPDATE sqlite_sequence SET seq = max(seq, :value) WHERE name = :table"),
            {"table": table.name, "value": highest},
        ).rowcount
        if not changed and highest:
            writer.execute(
                text("INSERT INTO sqlite_sequence (name, seq) VALUES (:table, :value)"),
                {"table": table.name, "value": highest},
            )
    # Other SQLite tables take the highest id present plus one: nothing to carry.


def _ids(connection: Connection, table: Table) -> tuple[int, str]:
    """The table's rows and a checksum of its primary keys: count, highest and sum of an
    integer id; otherwise an order-free sum of the keys' hashes (collations differ)."""
    column = _id_column(table)
    if column is not None:
        rows, highest, total = connection.execute(
            select(
                func.count(), func.coalesce(func.max(column), 0), func.coalesce(func.sum(column), 0)
            ).select_from(table)
        ).one()
        return int(rows), f"max {int(highest)}, sum {int(total)}"
    rows, digest = 0, 0
    keys = select(*table.primary_key.columns).execution_options(yield_per=BATCH)
    for partition in connection.execute(keys).partitions():
        for key in partition:
            hashed = hashlib.sha256(repr(tuple(key)).encode()).digest()[:8]
            digest = (digest + int.from_bytes(hashed, "big")) % 2**64
            rows += 1
    return rows, f"keys {digest:016x}"
