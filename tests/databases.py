"""The databases a test runs on: a SQLite file of its own, and a PostgreSQL database of its
own on the server named by TEST_POSTGRES_URL (.ci/run sets it; unset, the PostgreSQL half of
each test is skipped, saying why).

A test that asks for `database_url`, or in tests/integration, tests/web and the crash tests for
`settings`, runs twice: `[sqlite]` and `[postgresql]`. A test about one engine's own
behaviour (SQLite's write lock, PostgreSQL's row locks) says so with `only_sqlite` or
`only_postgres`. The command-line tests in tests/e2e run on SQLite, and on both engines where
they say `on_each_engine`: those whose commands run queries of their own, or start workers."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, make_url, text

from newsletter.config import Settings
from newsletter.db.session import upgrade_database

#: A database on the PostgreSQL server to connect to while creating and dropping the tests'
#: own, e.g. postgresql+psycopg://postgres@127.0.0.1:5432/postgres
POSTGRES_SERVER = os.environ.get("TEST_POSTGRES_URL", "")
ENGINES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]

only_sqlite = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
on_each_engine = pytest.mark.parametrize("database_url", ENGINES, indirect=True)
only_postgres = pytest.mark.parametrize(
    "database_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)


def sqlite_url(folder: Path) -> str:
    return f"sqlite:///{folder / 'newsletter.db'}"


@contextmanager
def postgres_database(template: str = "template1") -> Iterator[str]:
    """A new database on the PostgreSQL server, a copy of `template`, dropped afterwards."""
    if not POSTGRES_SERVER:
        pytest.skip("TEST_POSTGRES_URL is not set: no PostgreSQL server to run on")
    server = make_url(POSTGRES_SERVER)
    name = f"newsletter_test_{secrets.token_hex(4)}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
            # A test's commits need not wait for the disk: it never outlives a crash.
            connection.execute(text(f'ALTER DATABASE "{name}" SET synchronous_commit = off'))
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """An empty PostgreSQL database of this test's own (no schema: `db upgrade` not run)."""
    with postgres_database() as url:
        yield url


# Each test's database is a copy of one migrated once per test process: migrating each
# anew would cost more than many of the tests.
@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("migrated")
    upgrade_database(sqlite_url(folder))
    return folder / "newsletter.db"


@pytest.fixture(scope="session")
def migrated_postgres() -> Iterator[str]:
    """The name of a migrated database that is only ever copied."""
    with postgres_database() as url:
        upgrade_database(url)
        yield str(make_url(url).database)


def migrated_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated database of this test's own, on the engine `request` is parametrised with
    (for a fixture to yield from)."""
    if request.param == "sqlite":
        shutil.copyfile(request.getfixturevalue("migrated_sqlite"), tmp_path / "newsletter.db")
        yield sqlite_url(tmp_path)
    else:
        with postgres_database(template=request.getfixturevalue("migrated_postgres")) as url:
            yield url


@pytest.fixture(params=ENGINES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated database of this test's own: a SQLite file, then a PostgreSQL database."""
    yield from migrated_database(request, tmp_path)


def on_database(settings: Settings, url: str) -> Settings:
    return settings.model_copy(
        update={"database": settings.database.model_copy(update={"url": url})}
    )


@pytest.fixture(name="settings")
def settings_on_test_database(settings: Settings, database_url: str) -> Settings:
    """The shipped settings on this test's own database (imported by the conftest of each
    folder whose tests all use one, to stand in for the plain `settings`)."""
    return on_database(settings, database_url)
