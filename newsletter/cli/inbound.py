"""`newsletter inbound`: take in bounces, complaints and mailto unsubscribes, by SMTP or
from a file or a pipe, and show what came back."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from newsletter.cli.admin import database, event_fields
from newsletter.cli.app import Fail, JsonOption, app, err, out, run, settings
from newsletter.cli.lifecycle import StopSignals, configure_logging
from newsletter.cli.running import build_links
from newsletter.cli.terminal import LiteralTable, literal, print_json
from newsletter.clock import SystemClock
from newsletter.config import Settings
from newsletter.db.models import MailEvent
from newsletter.db.session import database_unavailable
from newsletter.inbound.inbox import Inbox
from newsletter.inbound.receiver import start_receiver
from newsletter.inbound.verp import return_path_for

inbound_app = typer.Typer(
    help="Bounces, complaints and mailto unsubscribes (docs/bounces.md).", no_args_is_help=True
)
app.add_typer(inbound_app, name="inbound")

#: sysexits.h EX_TEMPFAIL: an MTA piping mail to `inbound read` keeps it and tries again.
EXIT_TRY_AGAIN = 75


def build_inbox(config: Settings, sessions: async_sessionmaker[AsyncSession]) -> Inbox:
    return Inbox(
        config,
        sessions,
        tokens=build_links(config).tokens,
        return_path=return_path_for(config),
        wall=SystemClock(),
    )


async def start_inbound(
    config: Settings, sessions: async_sessionmaker[AsyncSession]
) -> asyncio.Server:
    """The receiver on [inbound] host and port; the caller closes it."""
    inbound = config.inbound
    server = await start_receiver(
        build_inbox(config, sessions), inbound.host, inbound.port, inbound.max_message_bytes
    )
    out.print(
        f"Inbound mail (bounces, complaints, unsubscribes): smtp://{inbound.host}:{inbound.port}"
    )
    return server


@inbound_app.command("serve")
def inbound_serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on [inbound.host]")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on [inbound.port]")] = None,
) -> None:
    """Receive bounces, complaints and mailto unsubscribes over SMTP until stopped."""
    config = settings()
    changes = {key: value for key, value in (("host", host), ("port", port)) if value is not None}
    config = config.model_copy(update={"inbound": config.inbound.model_copy(update=changes)})
    _warn_without_return_path(config)
    configure_logging()

    async def work() -> None:
        async with database(config) as sessions:
            server = await start_inbound(config, sessions)
            with StopSignals() as signals:
                out.print("Ctrl-C stops.")
                await signals.requested.wait()
            server.close()
            await server.wait_closed()

    try:
        run(work)
    except OSError as exc:
        err.print(
            f"error: cannot listen on {config.inbound.host}:{config.inbound.port}: {exc.strerror}"
        )
        raise Fail from None


@inbound_app.command("read")
def inbound_read(
    files: Annotated[list[Path], typer.Argument(help="Messages (RFC 5322 files); - reads stdin")],
    to: Annotated[
        list[str] | None,
        typer.Option(
            "--to",
            help="The envelope recipient, as an MTA's pipe passes it (e.g. Postfix's "
            "${original_recipient}); default: the message's Delivered-To or To",
        ),
    ] = None,
) -> None:
    """Read bounces, complaints or mailto unsubscribes from files or a pipe, as the receiver
    would. Exits 75 (try again later) when the database is busy, for an MTA's pipe."""
    config = settings()
    messages = [
        (str(path), sys.stdin.buffer.read() if str(path) == "-" else path.read_bytes())
        for path in files
    ]

    async def work() -> list[str]:
        findings = []
        async with database(config) as sessions:
            inbox = build_inbox(config, sessions)
            for name, raw in messages:
                recipients = to or _addressed_to(raw)
                for finding in await inbox.receive(raw, recipients, "file"):
                    findings.append(f"{name}: {finding}")
        return findings

    try:
        findings = run(work)
    except Exception as exc:
        if database_unavailable(exc):
            err.print("error: the database is busy; try again later", markup=False)
            raise typer.Exit(EXIT_TRY_AGAIN) from None
        raise
    for finding in findings:
        out.print(literal(finding))


@inbound_app.command("events")
def inbound_events(
    email: Annotated[str | None, typer.Option(help="Only those about this address")] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first")] = 20,
    as_json: JsonOption = False,
) -> None:
    """What came back lately: bounces, complaints, unsubscribes by mail, and what each did."""
    config = settings()

    async def work() -> list[MailEvent]:
        async with database(config, read_only=True) as sessions, sessions() as session:
            query = select(MailEvent).order_by(MailEvent.id.desc()).limit(limit)
            if email is not None:
                query = query.where(MailEvent.email == email.strip().lower())
            return list(await session.scalars(query))

    events = run(work)
    if as_json:
        print_json([event_fields(event) for event in events])
        return
    table = LiteralTable("received", "kind", "address", "status", "outcome", "reason")
    for event in events:
        table.add_row(
            f"{event.received_at:%Y-%m-%d %H:%M}",
            event.kind,
            event.email or "-",
            event.status,
            event.outcome,
            event.reason[:60],
        )
    out.print(table if events else Text("Nothing has come back yet."))


def _addressed_to(raw: bytes) -> list[str]:
    """Where a saved message was delivered, from the headers MTAs add."""
    from email.parser import BytesHeaderParser
    from email.utils import getaddresses

    headers = BytesHeaderParser().parsebytes(raw)
    for name in ("Delivered-To", "X-Original-To", "To"):
        if values := headers.get_all(name):
            return [address for _, address in getaddresses([str(v) for v in values]) if address]
    return []


def _warn_without_return_path(config: Settings) -> None:
    if not config.bounces.return_path:
        err.print(
            "warning: bounces.return_path is not set, so bounces go to sender.address unread "
            "and this receiver takes only mail to the unsubscribe address.",
            markup=False,
        )
