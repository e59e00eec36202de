"""The `newsletter` command run as an admin runs it: a real process on a test's own files."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.databases import migrated_database, sqlite_url


@pytest.fixture(params=["sqlite"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """SQLite, and PostgreSQL too for the tests that say `on_each_engine` (tests/databases.py):
    a process's start-up costs a second here, and the database's part of each command runs
    on both engines in tests/integration and tests/web."""
    yield from migrated_database(request, tmp_path)


@pytest.fixture
def admin(tmp_path: Path, database_url: str):  # type: ignore[no-untyped-def]
    """Runs `newsletter …` against a database and var/ folder of this test's own, its
    output piped (not a terminal). The database has had its `db upgrade`, as at
    installation."""
    return admin_in(tmp_path, database_url)


def admin_in(folder: Path, database_url: str | None = None):  # type: ignore[no-untyped-def]
    """`newsletter …` on the database (a SQLite file in `folder` unless given) and the var/
    folder in `folder`."""
    base = {k: v for k, v in os.environ.items() if not k.upper().startswith("NEWSLETTER_")}
    base |= {
        "NEWSLETTER_DATABASE__URL": database_url or sqlite_url(folder),
        "NEWSLETTER_PATHS__VAR": str(folder / "var"),
        "NEWSLETTER_SECRET_KEY": "admin-cli-test-secret",
    }

    def newsletter(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "newsletter", *args],
            cwd=REPO,
            env=base | env,
            capture_output=True,
            text=True,
            encoding="utf-8",
            timeout=120,
        )

    newsletter.env = base  # type: ignore[attr-defined]
    return newsletter


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout
