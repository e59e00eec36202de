"""Commands for the sending switches: pause, resume, and what state sending is in."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Annotated, Any

import typer
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from newsletter.cli.admin import database, now
from newsletter.cli.app import Fail, JsonOption, out, run, sending_app, settings
from newsletter.cli.terminal import neutralise, print_json
from newsletter.db import queries
from newsletter.db.models import Broadcast, BroadcastStatus, Sequence, SystemFlag
from newsletter.words import plural


@sending_app.command("resume")
def sending_resume() -> None:
    """Resume sending after it was paused (by an admin, or because the relay or the
    receiving servers refused our mail), and try the relay again at once."""
    config = settings()

    async def work() -> bool:
        async with database(config) as sessions, sessions.begin() as session:
            paused = await queries.clear_flag(session, queries.SENDING_PAUSED)
            waiting_for_relay = await queries.clear_flag(session, queries.RELAY_CIRCUIT)
            return paused or waiting_for_relay

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


@sending_app.command("status")
def sending_status(as_json: JsonOption = False) -> None:
    """Whether mail is going out, and if not why; the queue; the last hour. Exits 1 when
    sending is paused or the relay is not taking mail."""
    config = settings()

    async def work() -> dict[str, Any]:
        async with database(config, read_only=True) as sessions, sessions() as session:
            wall_now = now()
            switches = await queries.flags(session)
            counts = await queries.sending_counts(session, wall_now)
            refusals = await queries.recent_refusals(session, wall_now)
            return {
                "blocked": await sending_blocked(session, wall_now),
                "paused": _flag(switches.get(queries.SENDING_PAUSED), wall_now),
                "relay_circuit": _flag(switches.get(queries.RELAY_CIRCUIT), wall_now),
                "held_courses": await _held_courses(session, switches),
                "held_issues": await _held_issues(session),
                "queue": {"queued": counts.queued, "due": counts.due, "sending": counts.sending},
                "last_hour": {
                    "sent": counts.sent_last_hour,
                    "retried": counts.retried_last_hour,
                    "failed": counts.failed_last_hour,
                    "refusals_by_domain": dict(
                        Counter(email.rpartition("@")[2] for email, _ in refusals).most_common(5)
                    ),
                    "refusals_by_reply": dict(
                        Counter(error for _, error in refusals).most_common(5)
                    ),
                },
            }

    state = run(work)
    if as_json:
        print_json(state)
    else:
        _print_status(state)
    if state["blocked"]:
        raise Fail


async def _held_courses(session: AsyncSession, switches: dict[str, SystemFlag]) -> dict[str, str]:
    """Courses paused for their bounce or complaint rate, by slug: why."""
    held = {
        int(name.removeprefix(queries.COURSE_HELD)): row.reason
        for name, row in switches.items()
        if name.startswith(queries.COURSE_HELD) and row.until is None
    }
    rows = await session.execute(select(Sequence.id, Sequence.slug).where(Sequence.id.in_(held)))
    return {slug: held[sequence_id] for sequence_id, slug in rows}


async def _held_issues(session: AsyncSession) -> dict[str, str]:
    """Newsletter issues paused for their bounce or complaint rate, by key: why."""
    rows = await session.execute(
        select(Broadcast.key, Broadcast.pause_reason)
        .where(Broadcast.status == BroadcastStatus.PAUSED)
        .where(Broadcast.pause_reason != "")
        .order_by(Broadcast.id)
    )
    return {key: reason for key, reason in rows}


def _flag(row: SystemFlag | None, wall_now: datetime) -> dict[str, Any] | None:
    """A switch for the report: None when it is off. One whose time has run out is still
    shown (`over`): a circuit in that state is being probed."""
    if row is None:
        return None
    return {
        "since": row.set_at.isoformat(),
        "until": row.until.isoformat() if row.until else None,
        "over": row.until is not None and row.until <= wall_now,
        "reason": row.reason,
    }


def _print_status(state: dict[str, Any]) -> None:
    lines = [f"Sending: {'held back: ' + state['blocked'] if state['blocked'] else 'running'}"]
    circuit = state["relay_circuit"]
    if circuit is None:
        lines.append("Relay: taking mail (circuit closed)")
    elif circuit["over"]:
        lines.append(f"Relay: being tried again (circuit half-open) after: {circuit['reason']}")
    else:
        lines.append(
            f"Relay: not taking mail since {circuit['since']} ({circuit['reason']}); "
            f"next try at {circuit['until']}"
        )
    for slug, reason in state["held_courses"].items():
        lines.append(f"Course {slug}: {reason} (`newsletter sequences resume {slug}`)")
    for key, reason in state["held_issues"].items():
        key = neutralise(key)  # a file's name
        lines.append(f"Issue {key}: {reason} (`newsletter broadcast resume {key}`)")
    queue, hour = state["queue"], state["last_hour"]
    lines.append(
        f"Queue: {plural(queue['queued'], 'message')} waiting, {queue['due']} due now, "
        f"{queue['sending']} being sent"
    )
    lines.append(
        f"Last hour: {hour['sent']} sent, {hour['retried']} to be tried again, "
        f"{hour['failed']} failed"
    )
    for title, key in (("by domain", "refusals_by_domain"), ("by reply", "refusals_by_reply")):
        if hour[key]:
            lines.append(f"Refusals in the last hour, {title}:")
            lines += [f"  {count:>5}  {what}" for what, count in hour[key].items()]
    for line in lines:
        out.print(line, markup=False, highlight=False, soft_wrap=True)
