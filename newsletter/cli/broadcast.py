"""`newsletter broadcast`: send an issue of the newsletter to a segment, once, and follow
it (docs/newsletters.md)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text
from sqlalchemy import func, select

from newsletter import broadcasts, failpoints
from newsletter.cli.admin import check_courses_exist, database, now
from newsletter.cli.app import JsonOption, app, out, run, settings
from newsletter.cli.terminal import LiteralTable, literal, print_json
from newsletter.content.newsletters import WallTime, parse_send_at, read_newsletter
from newsletter.db.models import Broadcast, BroadcastStatus, Delivery, DeliveryStatus, Subscriber
from newsletter.errors import NewsletterError
from newsletter.render import LessonEmail, make_environment
from newsletter.segments import courses_named, parse
from newsletter.words import plural

broadcast_app = typer.Typer(
    help="Send newsletter issues to a segment, once (docs/newsletters.md).", no_args_is_help=True
)
app.add_typer(broadcast_app, name="broadcast")


@broadcast_app.command("send")
def broadcast_send(
    file: Annotated[Path, typer.Argument(help="The issue: Markdown with front matter")],
    to: Annotated[str | None, typer.Option(help="Segment, instead of the file's `to`")] = None,
    at: Annotated[
        str | None,
        typer.Option(
            help="When, instead of `send_at`: 2026-12-10T09:00+00:00 (one instant), or "
            "2026-12-10T09:00 (09:00 in each subscriber's time zone)"
        ),
    ] = None,
    skip_active_courses: Annotated[
        bool, typer.Option(help="Leave out whoever is in the middle of a course")
    ] = False,
    dry_run: Annotated[bool, typer.Option(help="Say who would get it; queue nothing")] = False,
) -> None:
    """Queue an issue for everyone its segment matches now. Run again, it resumes and
    queues nobody twice; the workers send it."""
    config = settings()
    issue = read_newsletter(file)
    segment = " ".join(to.split()) if to is not None else issue.segment
    parse(segment)  # a mistake in --to is said before anything else happens
    if skip_active_courses:
        segment = f"({segment}) and not course:*:active"
    started = now()
    when = _parse_at(at) if at is not None else issue.send_at or started
    unsaved = broadcasts.new_broadcast(issue, segment, when, started)
    # Compiled as the workers will: a template mistake stops it here, at its file and line.
    course, lesson = broadcasts.as_course(config.sender, unsaved)
    LessonEmail(
        make_environment(config.templates_dir), config.sender, course, lesson, kind="newsletter"
    )

    async def work() -> tuple[int, str, bool]:
        async with database(config) as sessions:
            async with sessions.begin() as session:
                await check_courses_exist(session, courses_named(parse(segment)))
                if dry_run:
                    matched = await session.scalar(
                        select(func.count())
                        .select_from(Subscriber)
                        .where(broadcasts.audience(unsaved, config.schedule.timezone))  # type: ignore[arg-type]
                    )
                    return int(matched or 0), _when(unsaved.due_at, unsaved.local_send_at), False
                broadcast, resumed = await broadcasts.start(session, issue, segment, when, started)
                broadcast_id, due = broadcast.id, _when(broadcast.due_at, broadcast.local_send_at)
                if broadcast.enqueued_at is not None:  # its audience was all queued before
                    return broadcast.audience, due, resumed
            after = 0
            while True:
                async with sessions.begin() as session:
                    broadcast = await session.get_one(Broadcast, broadcast_id)
                    if broadcast.status == BroadcastStatus.CANCELLED:
                        return broadcast.audience, due, resumed
                    taken = await broadcasts.enqueue_batch(
                        session,
                        broadcast,
                        default_timezone=config.schedule.timezone,
                        message_domain=config.sender.domain,
                        after=after,
                        now=now(),
                    )
                if not taken:
                    break
                failpoints.hit("broadcast.after_batch")
                after = taken[-1]
            async with sessions.begin() as session:
                broadcast = await session.get_one(Broadcast, broadcast_id)
                return await broadcasts.finish_enqueueing(session, broadcast, now()), due, resumed

    total, due, resumed = run(work)
    if dry_run:
        out.print(
            Text.assemble(
                "Would send ",
                literal(issue.subject),
                f" to {plural(total, 'subscriber')} ({segment}) {due}"
                f"{_own_cap(issue.max_per_subscriber_per_day)}. Nothing was queued.",
            )
        )
        return
    how = "Resumed" if resumed else "Started"
    out.print(
        f"{how} {issue.key}: {plural(total, 'subscriber')} in its audience, due {due}. "
        f"`newsletter broadcast show {issue.key} --watch` follows it."
    )


def _parse_at(text: str) -> datetime | WallTime:
    try:
        return parse_send_at(text)
    except ValueError as exc:
        raise NewsletterError(f"--at: {exc}") from None


def _own_cap(cap: int | None) -> str:
    """An issue's own daily cap per person, in words; "" when it has config's."""
    if cap is None:
        return ""
    return ", never held back by the daily cap" if not cap else f", under a daily cap of {cap}"


def _when(due_at: datetime, local_send_at: datetime | None) -> str:
    """When an issue is due, in words: "at 2026-12-10 09:00 UTC", or "at 09:00 on
    2026-12-10 in each subscriber's time zone"."""
    if local_send_at is not None:
        return f"at {local_send_at:%H:%M on %Y-%m-%d} in each subscriber's time zone"
    return f"at {due_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


@broadcast_app.command("list")
def broadcast_list(as_json: JsonOption = False) -> None:
    """Every issue sent, newest first."""
    config = settings()

    async def work() -> list[dict[str, Any]]:
        async with database(config, read_only=True) as sessions, sessions() as session:
            rows = list(await session.scalars(select(Broadcast).order_by(Broadcast.id.desc())))
            return [_fields(row, await broadcasts.progress(session, row.id)) for row in rows]

    issues = run(work)
    if as_json:
        print_json({"broadcasts": issues})
        return
    table = LiteralTable("issue", "status", "subject", "audience", "sent", "failed")
    for item in issues:
        table.add_row(
            item["key"],
            item["status"],
            item["subject"],
            str(item["audience"]),
            str(item["counts"].get("sent", 0)),
            str(item["counts"].get("failed", 0)),
        )
    out.print(table if issues else Text("No issue has been sent yet."))
    for item in issues:
        if item["pause_reason"]:
            out.print(_paused_line(item))


@broadcast_app.command("show")
def broadcast_show(
    key: str,
    watch: Annotated[bool, typer.Option(help="Follow it until it is done (Ctrl-C stops)")] = False,
    as_json: JsonOption = False,
) -> None:
    """How far an issue has got: sent, queued, failed, the rate and the time left."""
    config = settings()

    async def look() -> dict[str, Any]:
        async with database(config, read_only=True) as sessions, sessions() as session:
            broadcast = await broadcasts.by_key(session, key)
            fields = _fields(broadcast, await broadcasts.progress(session, broadcast.id))
            recent = await session.scalar(
                select(func.count())
                .select_from(Delivery)
                .where(Delivery.broadcast_id == broadcast.id)
                .where(Delivery.sent_at >= now() - timedelta(minutes=1))
            )
            return fields | {"per_minute": int(recent or 0)}

    async def follow() -> dict[str, Any]:
        while True:
            state = await look()
            out.print(_progress_line(state))
            waiting = state["counts"].get("queued", 0) + state["counts"].get("sending", 0)
            queueing = state["status"] == BroadcastStatus.ENQUEUEING
            held = state["status"] in (BroadcastStatus.PAUSED, BroadcastStatus.CANCELLED)
            if not watch or held or not (waiting or queueing):
                return state
            await asyncio.sleep(2)

    if as_json:
        print_json(run(look))
        return
    state = run(follow)
    out.print(Text.assemble("subject: ", literal(state["subject"])))
    out.print(Text.assemble("to: ", literal(state["segment"])))
    out.print(
        f"due {_when(state['due_at'], state['local_send_at'])}{_own_cap(state['max_per_day'])}"
    )
    if state["pause_reason"]:
        out.print(_paused_line(state))


def _fields(broadcast: Broadcast, counts: Any) -> dict[str, Any]:
    return {
        "key": broadcast.key,
        "subject": broadcast.subject,
        "segment": broadcast.segment,
        "status": broadcast.status,
        "due_at": broadcast.due_at,
        "local_send_at": broadcast.local_send_at,
        "started_at": broadcast.started_at,
        "audience": broadcast.audience or sum(counts.values()),
        "counts": dict(counts),
        "pause_reason": broadcast.pause_reason,
        "max_per_day": broadcast.max_per_day,  #: its own daily cap per person; None: config's
    }


def _progress_line(state: dict[str, Any]) -> str:
    counts = state["counts"]
    waiting = counts.get(DeliveryStatus.QUEUED, 0) + counts.get(DeliveryStatus.SENDING, 0)
    rate = state["per_minute"]
    left = f", about {waiting / rate:.0f} min left" if rate and waiting else ""
    return (
        f"{state['key']} ({state['status']}): {counts.get('sent', 0)} sent, {waiting} to go, "
        f"{counts.get('failed', 0)} failed, {counts.get('cancelled', 0)} cancelled of "
        f"{state['audience']}; {rate} in the last minute{left}"
    )


def _paused_line(state: dict[str, Any]) -> Text:
    """Why an issue paused itself, and how to send the rest."""
    return Text.assemble(
        literal(state["key"]),
        f" {state['pause_reason']}. `newsletter broadcast resume ",
        literal(state["key"]),
        "` sends the rest.",
    )


def _set(key: str, status: BroadcastStatus) -> None:
    config = settings()

    async def work() -> None:
        async with database(config) as sessions, sessions.begin() as session:
            await broadcasts.set_status(session, key, status, now=now())

    run(work)
    out.print(Text.assemble(literal(key), f" is {status}."))


@broadcast_app.command("pause")
def broadcast_pause(key: str) -> None:
    """Hold an issue's mail not yet sent; `resume` sends it."""
    _set(key, BroadcastStatus.PAUSED)


@broadcast_app.command("resume")
def broadcast_resume(key: str) -> None:
    _set(key, BroadcastStatus.SENDING)


@broadcast_app.command("cancel")
def broadcast_cancel(key: str) -> None:
    """Never send what of the issue is not sent yet."""
    _set(key, BroadcastStatus.CANCELLED)
