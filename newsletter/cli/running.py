"""Commands that run the service: serve, worker, tick, and the development outbox."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer
from rich.text import Text
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from newsletter.cli.admin import database, parse_when
from newsletter.cli.app import Fail, JsonOption, app, err, out, run, settings
from newsletter.cli.content import print_problems
from newsletter.cli.dkim import check_dkim
from newsletter.cli.lifecycle import StopSignals, configure_logging
from newsletter.cli.sending import sending_blocked
from newsletter.cli.terminal import LiteralTable, print_json
from newsletter.clock import Clock, FastForwardClock, FrozenClock, SystemClock
from newsletter.config import Settings, load_secret_key
from newsletter.content.check import check_course
from newsletter.courses import queue_course
from newsletter.db.models import Sequence, SequenceStatus
from newsletter.db.session import prompt_writes
from newsletter.delivery.transport import OutboxTransport, SmtpTransport, Transport, list_outbox
from newsletter.errors import NewsletterError, errors_among
from newsletter.inbound.verp import return_path_for
from newsletter.logs import log_event
from newsletter.render import make_environment
from newsletter.scheduling.jobs import build_scheduler
from newsletter.scheduling.worker import PassReport, Stopped, Worker
from newsletter.signup import purge_stale_signups
from newsletter.tokens import LinkMaker, Tokens
from newsletter.words import plural

if TYPE_CHECKING:
    import uvicorn

log = logging.getLogger(__name__)

SpeedOption = Annotated[
    float,
    typer.Option(help="Run the clock this many times faster (e.g. 8640: a day in 10 s)"),
]


def build_transport(config: Settings) -> Transport:
    smtp = config.smtp
    if not smtp.host:
        return OutboxTransport(config.var_dir / "outbox")
    if config.site.base_url.scheme != "https" and not smtp.allow_http_links:
        raise NewsletterError(
            f"site.base_url is {config.site.base}: links in real mail must be https, or "
            "every unsubscribe link travels unencrypted. Set [site] base_url to the https "
            "address of the web app (or smtp.allow_http_links = true for a local test relay)."
        )
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
    config: Settings,
    sessions: async_sessionmaker[AsyncSession],
    transport: Transport,
    clock: Clock,
) -> Worker:
    env = make_environment(config.templates_dir)
    return Worker(
        config,
        sessions,
        transport,
        env,
        build_links(config),
        clock=clock,
        return_path=return_path_for(config),
    )


#: The course the demo (`make run`) queues on its first start.
SHIPPED_COURSE = "leg-weakness-after-microdiscectomy"
QUEUE_HINT = (
    "No live course, so no lessons will be sent: queue one with "
    "`newsletter sequences queue lessons/<slug>`."
)


class FirstStart(StrEnum):
    QUEUE_DEMO = "queue the shipped course"
    HINT = "say how to queue a course"
    NOTHING = "nothing to say"


def first_start(sequences: int, live: int, smtp_host: str) -> FirstStart:
    """What `serve` does about courses as it starts. Queuing is the admin's decision, so
    only the demo queues by itself: a database that never had a course, with mail going to
    the development outbox (no SMTP host), where no real person can be mailed."""
    if not sequences and not smtp_host:
        return FirstStart.QUEUE_DEMO
    return FirstStart.HINT if not live else FirstStart.NOTHING


async def start_courses(config: Settings, sessions: async_sessionmaker[AsyncSession]) -> None:
    """Queue the shipped course for the demo, or say how to queue one (see first_start)."""
    async with sessions.begin() as session:
        sequences = await session.scalar(select(func.count()).select_from(Sequence)) or 0
        live = await session.scalar(
            select(func.count()).select_from(Sequence).where(Sequence.status == SequenceStatus.LIVE)
        )
        action = first_start(sequences, live or 0, config.smtp.host)
        if action is FirstStart.HINT:
            out.print(QUEUE_HINT, markup=False, highlight=False)
        if action is not FirstStart.QUEUE_DEMO:
            return
        folder = config.lessons_dir / SHIPPED_COURSE
        course, problems = check_course(
            folder, make_environment(config.templates_dir), config.sender
        )
        print_problems(problems)  # warnings too: they do not stop it being queued
        if errors_among(problems) or course is None:
            err.print(Text.assemble(("Not queued", "red"), f": {folder} has errors. {QUEUE_HINT}"))
            return
        await queue_course(session, course, datetime.now(UTC))
    out.print(
        Text.assemble(
            "First start of the demo (an empty database, mail to the outbox): queued the "
            "shipped course ",
            (SHIPPED_COURSE, "bold"),
            ".",
        )
    )


async def run_service(
    config: Settings,
    clock: Clock,
    *,
    starting_courses: bool,
    web_address: tuple[str, int] | None = None,
) -> Stopped:
    """The scheduler (planner, dispatcher, housekeeping) and, given an address, the web app,
    in one process and one event loop, until SIGTERM or SIGINT. `starting_courses`: queue
    the demo's course or say how to queue one (start_courses)."""
    configure_logging()
    grace_s = config.sending.shutdown_grace_s
    async with database(config) as sessions, contextlib.AsyncExitStack() as stack:
        if starting_courses:
            await start_courses(config, sessions)
        transport = build_transport(config)
        stack.push_async_callback(transport.close)  # QUIT, once the last send is recorded
        pending_max_age = timedelta(days=config.signup.pending_max_age_days)

        async def purge(now: datetime) -> None:
            async with sessions.begin() as session:
                await purge_stale_signups(session, now, pending_max_age)

        worker = build_worker(config, sessions, transport, clock)
        scheduler = build_scheduler(worker, clock, config.schedule.tick_s, purge)
        signals = stack.enter_context(StopSignals())
        where = config.smtp.host or f"the development outbox {config.var_dir / 'outbox'}"
        out.print(f"Sending to {where}.")
        scheduler.start()
        stack.callback(scheduler.shutdown, wait=False)
        running: list[asyncio.Future[object]] = [asyncio.ensure_future(signals.requested.wait())]
        server = None
        if web_address is not None:
            host, port = web_address
            from newsletter.web.app import create_app, web_server  # only `serve` needs the web

            writes = await stack.enter_async_context(prompt_writes(sessions))
            # The web's clock is the wall clock even under --speed: links and form tokens
            # expire in real time.
            app = create_app(config, sessions, SystemClock(), build_links(config), writes=writes)
            server = web_server(app, host, port, grace_s=grace_s)
            running.append(asyncio.ensure_future(serve_until_stopped(server)))
            out.print(
                f"Signup page: http://{host}:{port}/ (public: {config.site.base}/). Ctrl-C stops."
            )
            if config.inbound.enabled:
                from newsletter.cli.inbound import start_inbound

                receiver = await start_inbound(config, sessions)
                stack.push_async_callback(receiver.wait_closed)
                stack.callback(receiver.close)
        else:
            out.print("Ctrl-C stops.")
        await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
        scheduler.pause()  # no new passes; the ones under way wind down below
        if server is not None:
            server.should_exit = True
        stopped = await worker.stop(grace_s, signals.forced)
        if server is not None:
            if signals.forced.is_set():
                server.force_exit = True
            await asyncio.wait(running[1:])
            running[1].result()  # a server that failed to start says why
    log_stopped(signals, stopped)
    return stopped


def log_stopped(signals: StopSignals, stopped: Stopped) -> None:
    """The one line a stop leaves in the log."""
    on = f" on {signals.name}" if signals.name else ""
    level = logging.INFO if stopped.repeats_nothing else logging.WARNING
    log_event(log, level, f"Stopped{on}: {stopped}", "stopped")


async def serve_until_stopped(
    server: uvicorn.Server, sockets: list[socket.socket] | None = None
) -> None:
    try:
        await server.serve(sockets)
    except SystemExit:  # uvicorn's answer to a port in use, after logging why
        raise NewsletterError("the web app could not start; see the line above") from None


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
    check_dkim(config)
    service = run_service(config, _clock(speed), starting_courses=True, web_address=(host, port))
    if not run(lambda: service).repeats_nothing:
        raise Fail


@app.command()
def worker(speed: SpeedOption = 1.0) -> None:
    """Run the scheduler alone (one of several workers on a shared database)."""
    config = settings()
    check_dkim(config)
    if not run(lambda: run_service(config, _clock(speed), starting_courses=False)).repeats_nothing:
        raise Fail


@app.command()
def tick(
    at: Annotated[
        str | None, typer.Option("--now", help="The instant to act at (ISO time); default now")
    ] = None,
) -> None:
    """One planner pass and dispatcher passes until nothing due is left, then exit (for cron,
    tests and demos). Exits non-zero when sending is paused or the relay is unavailable."""
    config = settings()
    check_dkim(config)
    clock = FrozenClock(parse_when(at))

    async def work() -> tuple[PassReport, PassReport, str, Stopped | None]:
        configure_logging()
        async with database(config) as sessions:
            transport = build_transport(config)
            worker = build_worker(config, sessions, transport, clock)
            stopped: Stopped | None = None
            with StopSignals() as signals:

                async def stop_on_signal() -> None:
                    nonlocal stopped
                    await signals.requested.wait()
                    stopped = await worker.stop(config.sending.shutdown_grace_s, signals.forced)
                    log_stopped(signals, stopped)

                stopper = asyncio.ensure_future(stop_on_signal())
                try:
                    planned = await worker.plan_due(clock.now())
                    sent = PassReport()
                    while not worker.stopping:
                        report = await worker.dispatch_once(clock.now())
                        sent.counts.update(report.counts)
                        if not report.counts or report.held_back:
                            break
                    if worker.stopping:
                        await stopper  # its line, once the last pass has wound down
                    async with sessions() as session:
                        blocked = await sending_blocked(session, SystemClock().now())
                    return planned, sent, blocked, stopped
                finally:
                    stopper.cancel()
                    await transport.close()

    planned, sent, blocked, stopped = run(work)
    out.print(f"planned: {planned}; dispatched: {sent}", markup=False, highlight=False)
    if blocked:
        err.print(f"error: {blocked}", markup=False, highlight=False)
    if blocked or (stopped is not None and not stopped.repeats_nothing):
        raise Fail


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
    out.print(f"{plural(len(everything), 'message')} in the outbox.")
