"""The schema on an SQLite file: migrated when behind, left alone (without Alembic) when
current."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from newsletter.content.identity import CourseIdentity
from newsletter.db.session import MIGRATIONS, SCHEMA_HEAD, sqlite_schema_version, upgrade_database


def alembic_config(database: Path) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["url"] = f"sqlite:///{database}"
    return config


def test_the_head_read_from_the_file_names_is_alembics_head(tmp_path: Path) -> None:
    heads = ScriptDirectory.from_config(alembic_config(tmp_path / "unused.db")).get_heads()
    assert heads == [SCHEMA_HEAD]


def test_a_new_file_is_created_at_the_head(tmp_path: Path) -> None:
    database = tmp_path / "new" / "list.db"
    upgrade_database(f"sqlite+aiosqlite:///{database}")
    assert sqlite_schema_version(database) == SCHEMA_HEAD


def test_a_file_behind_the_head_is_migrated(tmp_path: Path) -> None:
    database = tmp_path / "list.db"
    command.upgrade(alembic_config(database), "0001")
    assert sqlite_schema_version(database) == "0001"
    upgrade_database(f"sqlite+aiosqlite:///{database}")
    assert sqlite_schema_version(database) == SCHEMA_HEAD


def test_a_file_that_is_not_a_database_has_no_version(tmp_path: Path) -> None:
    not_a_database = tmp_path / "notes.db"
    not_a_database.write_text("hello")
    assert sqlite_schema_version(not_a_database) is None
    assert sqlite_schema_version(tmp_path / "missing.db") is None


def test_versions_queued_before_course_identities_keep_what_they_were_sent_with(
    tmp_path: Path,
) -> None:
    database = tmp_path / "list.db"
    command.upgrade(alembic_config(database), "0003")
    with contextlib.closing(sqlite3.connect(database)) as connection, connection:
        connection.execute(
            "INSERT INTO sequences (id, slug, status, created_at) "
            "VALUES (1, 'old-course', 'live', '2026-11-01 09:00:00')"
        )
        connection.execute(
            "INSERT INTO sequence_versions (id, sequence_id, number, title, description, "
            "source, created_at) VALUES (1, 1, 1, 'Old', 'D', 'lessons/old-course', "
            "'2026-11-01 09:00:00')"
        )
    upgrade_database(f"sqlite+aiosqlite:///{database}")

    with contextlib.closing(sqlite3.connect(database)) as connection:
        [(stored, templates)] = connection.execute(
            "SELECT identity, templates FROM sequence_versions"
        ).fetchall()
    identity = CourseIdentity.from_json(json.loads(stored))
    # The footer every email had, the sentence every form showed, under its old version
    # (snippets pasted on other sites still post it), and config's sender.
    assert "not medical advice" in identity.footer_note
    assert identity.consent_version == "2026-11-1"
    assert identity.consent_text.startswith("Send me this free email course")
    assert identity.sender_name is None
    assert json.loads(templates) == {}


def test_the_migrations_build_exactly_the_tables_the_models_describe(tmp_path: Path) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlalchemy import create_engine

    from newsletter.db.models import Base

    database = tmp_path / "list.db"
    upgrade_database(f"sqlite:///{database}")
    engine = create_engine(f"sqlite:///{database}")
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    engine.dispose()
    assert differences == []
