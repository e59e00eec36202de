"""Tables of the web app, on the same Base (and so the same migrations) as the rest."""

from __future__ import annotations

from datetime import datetime
from typing import cast

from sqlalchemy import Index, String, Table
from sqlalchemy.orm import Mapped, mapped_column

from newsletter.db.models import Base


class SignupAttempt(Base):
    """One accepted signup, by client, for the per-IP limit. In the database rather than in
    memory so that every web worker counts the same attempts; rows older than the limit's
    window are purged with stale pending subscribers."""

    __tablename__ = "signup_attempts"
    __table_args__ = (Index("ix_signup_attempts_client", "client_key", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    #: A keyed hash of the client's IP address: enough to count, useless to anyone reading.
    client_key: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]


signup_attempts_table = cast(Table, SignupAttempt.__table__)
