"""Persistence: models, engine and session, named queries, migrations."""
