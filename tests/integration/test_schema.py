"""The schema on an SQLite file: migrated when behind, left alone (without Alembic) when
current."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

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
