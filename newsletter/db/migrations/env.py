"""Alembic environment: runs migrations over a synchronous connection to the configured URL."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from newsletter.db import web_models as web_models  # registers the web app's tables
from newsletter.db.models import Base
from newsletter.db.session import tune_sqlite

url = context.config.attributes["url"]
engine = create_engine(url)
if engine.dialect.name == "sqlite":
    # BEGIN IMMEDIATE around the whole upgrade: two processes starting at once take turns,
    # and the second finds the schema already at head.
    tune_sqlite(engine)
with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        # SQLite cannot ALTER most things in place; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    context.run_migrations()
engine.dispose()
