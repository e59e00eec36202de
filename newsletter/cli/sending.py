"""Commands for the sending switches: pause, resume, and what state sending is in."""

from __future__ import annotations

from typing import Annotated

import typer

from newsletter.cli.admin import database, now
from newsletter.cli.app import out, run, sending_app, settings
from newsletter.db import queries


@sending_app.command("resume")
def sending_resume() -> None:
    """Resume sending after it was paused (e.g. the relay refused our login)."""
    config = settings()

    async def work() -> bool:
        async with database(config) as sessions, sessions.begin() as session:
            return await queries.clear_flag(session, queries.SENDING_PAUSED)

    out.print("Sending resumed." if run(work) else "Sending was not paused.")


@sending_app.command("pause")
def sending_pause(
    reason: Annotated[str, typer.Option(help="Why, for the log")] = "paused by an admin",
) -> None:
    """Pause all sending until `newsletter sending resume`."""
    config = settings()

    async def work() -> None:
        async with database(config) as sessions, sessions.begin() as session:
            await queries.set_flag(
                session, queries.SENDING_PAUSED, until=None, reason=reason, now=now()
            )

    run(work)
    out.print("Sending paused.")
