"""Commands for the sending switches: pause, resume, and what state sending is in."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer
from sqlalchemy.ext.asyncio import AsyncSession

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


async def sending_blocked(session: AsyncSession, wall_now: datetime) -> str:
    """Why no mail can go out now, in a line that says what to do; "" when it can."""
    switches = await queries.flags(session)
    paused = switches.get(queries.SENDING_PAUSED)
    if paused is not None and (paused.until is None or paused.until > wall_now):
        until = f"until {paused.until:%Y-%m-%d %H:%M:%S} UTC" if paused.until else "until resumed"
        return (
            f"sending is paused {until}: {paused.reason} "
            "(`newsletter sending resume` resumes it once the cause is fixed)"
        )
    circuit = switches.get(queries.RELAY_CIRCUIT)
    if circuit is not None and circuit.until is not None and circuit.until > wall_now:
        return (
            f"the relay is not taking mail ({circuit.reason}); the next try is at "
            f"{circuit.until:%H:%M:%S} UTC. Check that [smtp] host and port reach a running relay."
        )
    return ""
