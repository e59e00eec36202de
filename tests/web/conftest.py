"""Every test here that asks for `settings` runs on SQLite and on PostgreSQL."""

from tests.databases import settings_on_test_database  # noqa: F401  (stands in for `settings`)
