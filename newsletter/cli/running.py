"""Commands that run the service: serve, worker, tick, and the development outbox."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from newsletter.cli.admin import database, parse_when
from newsletter.cli.app import JsonOption, app, err, out, run, settings
from newsletter.cli.terminal import LiteralTable, print_json
from newsletter.clock import Clock, FastForwardClock, FrozenClock, SystemClock
from newsletter.config import Settings, load_secret_key
from newsletter.content.check import check_course
from newsletter.courses import queue_course
from newsletter.db.models import Sequence
from newsletter.db.session import prompt_writes
from newsletter.delivery.transport import OutboxTransport, SmtpTransport, Transport, list_outbox
from newsletter.render import make_environment
from newsletter.scheduling.jobs import build_scheduler
from newsletter.scheduling.worker import PassReport, Worker
from newsletter.signup import purge_stale_signups
from newsletter.tokens import LinkMaker, Tokens
from newsletter.web.app import create_app, serve_web

SpeedOption = Annotated[
    float,
    typer.Option(help="Run the clock this many times faster (e.g. 8640: a day in 10 s)"),
]


def build_transport(config: Settings) -> Transport:
    smtp = config.smtp
    if not smtp.host:
        return OutboxTransport(config.var_dir / "outbox")
    return SmtpTransport(
        host=smtp.host,
        port=smtp.port,
        tls=smtp.tls,
        username=smtp.username,
        password=smtp.password.get_secret_value() if smtp.password else "",
        connections=config.sending.connections,
        timeout_s=config.sending.smtp_timeout_s,
        data_timeout_s=config.sending.smtp_data_timeout_s,
    )


def build_links(config: Settings) -> LinkMaker:
    tokens = Tokens(load_secret_key(config))
    return LinkMaker(tokens, config.site.base, config.sender.unsubscribe_address)


def build_worker(
    config: Settings, sessions: async_sessionmaker[AsyncSession], transport: Transport
) -> Worker:
    env = make_environment(config.templates_dir)
    return Worker(config, sessions, transport, env, build_links(config))


async def queue_shipped_courses(config: Settings, sessions) -> list[str]:  # type: ignore[no-untyped-def]
    """On the very first start, every course under lessons/ is queued, so a newcomer has
    something to enroll in."""
    async with sessions.begin() as session:
        if await session.scalar(select(func.count()).select_from(Sequence)):
            return []
        queued = []
        env = make_environment(config.templates_dir)
        for folder in sorted(path for path in config.lessons_dir.iterdir() if path.is_dir()):
            course, problems = check_course(folder, env, config.sender)
            if problems or course is None:
                for problem in problems:
                    err.print(str(problem), markup=False, highlight=False)
                err.print(f"[red]Not queued[/]: {folder} has problems (newsletter course check).")
                continue
            await queue_course(session, course, datetime.now(UTC))
            queued.append(folder.name)
        return queued


async def run_service(
    config: Settings,
    clock: Clock,
    *,
    first_start: bool,
    web_address: tuple[str, int] | None = None,
) -> None:
    """The scheduler (planner, dispatcher, housekeeping) and, given an address, the web app,
    in one process and one event loop."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    # Their routine chatter (every job run, every migration step) buries what matters.
    for noisy in ("apscheduler", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    async with database(config) as sessions:
        if first_start:
            for slug in await queue_shipped_courses(config, sessions):
                out.print(f"Queued the shipped course [bold]{slug}[/].")
        transport = build_transport(config)
        pending_max_age = timedelta(days=config.signup.pending_max_age_days)

        async def purge(now: datetime) -> None:
            async with sessions.begin() as session:
                await purge_stale_signups(session, now, pending_max_age)

        scheduler = build_scheduler(
            build_worker(config, sessions, transport), clock, config.schedule.tick_s, purge
        )
        where = config.smtp.host or f"the development outbox {config.var_dir / 'outbox'}"
        out.print(f"Sending to {where}.")
        scheduler.start()
        try:
            if web_address is None:
                out.print("Ctrl-C stops.")
                await asyncio.Event().wait()
            else:
                host, port = web_address
                out.print(
                    f"Signup page: http://{host}:{port}/ (public: {config.site.base}/). "
                    "Ctrl-C stops."
                )
                async with prompt_writes(sessions) as writes:
                    app = create_app(config, sessions, clock, build_links(config), writes=writes)
                    await serve_web(app, host, port)
        finally:
            scheduler.shutdown(wait=False)
            await transport.close()


def _clock(speed: float) -> Clock:
    return FastForwardClock(datetime.now(UTC), speed) if speed != 1 else SystemClock()


@app.command()
def serve(
    speed: SpeedOption = 1.0,
    host: Annotated[str, typer.Option(help="Address the web app listens on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port the web app listens on")] = 8000,
) -> None:
    """Run the service: the scheduler and the signup web app, on the configured database."""
    config = settings()
    service = run_service(config, _clock(speed), first_start=True, web_address=(host, port))
    with contextlib.suppress(KeyboardInterrupt):
        run(lambda: service)
    out.print("Stopped.")


@app.command()
def worker(speed: SpeedOption = 1.0) -> None:
    """Run the scheduler alone (one of several workers on a shared database)."""
    config = settings()
    try:
        run(lambda: run_service(config, _clock(speed), first_start=False))
    except KeyboardInterrupt:
        out.print("Stopped.")


@app.command()
def tick(
    at: Annotated[
        str | None, typer.Option("--now", help="The instant to act at (ISO time); default now")
    ] = None,
) -> None:
    """One planner pass and dispatcher passes until nothing due is left, then exit (for cron,
    tests and demos)."""
    config = settings()
    clock = FrozenClock(parse_when(at))

    async def work() -> tuple[PassReport, PassReport]:
        async with database(config) as sessions:
            transport = build_transport(config)
            try:
                worker = build_worker(config, sessions, transport)
                planned = await worker.plan_due(clock.now())
                sent = PassReport()
                while True:
                    report = await worker.dispatch_once(clock.now())
                    if report["throttled"]:  # the per-second rate: wait for the bucket
                        await asyncio.sleep(1 / config.sending.max_per_second)
                        continue
                    sent.counts.update(report.counts)
                    if sum(report.counts.values()) == 0 or report["paused"]:
                        return planned, sent
            finally:
                await transport.close()

    planned, sent = run(work)
    out.print(f"planned: {planned}; dispatched: {sent}")


@app.command()
def outbox(
    limit: Annotated[int, typer.Option(help="Show the newest N")] = 20,
    as_json: JsonOption = False,
) -> None:
    """List the messages in the development outbox (used when no SMTP host is configured)."""
    folder = settings().var_dir / "outbox"
    everything = list_outbox(folder)
    entries = everything[-limit:] if limit > 0 else []
    if as_json:
        print_json(
            {
                "folder": folder,
                "total": len(everything),
                "messages": [
                    {"date": e.date, "to": e.to, "subject": e.subject, "file": e.path.name}
                    for e in entries
                ],
            }
        )
        return
    # The headers of a saved message are whatever a course and a signup put there.
    table = LiteralTable("date", "to", "subject", "file", title=str(folder))
    for entry in entries:
        table.add_row(
            f"{entry.date:%Y-%m-%d %H:%M}" if entry.date else "",
            entry.to,
            entry.subject,
            entry.path.name,
        )
    out.print(table)
    out.print(f"{len(everything)} messages in the outbox.")
