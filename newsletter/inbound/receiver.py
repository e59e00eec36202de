"""`newsletter inbound serve`: an SMTP server (aiosmtpd) that the MTA of the return path's
domain relays bounces, complaints and mailto unsubscribes to.

It takes mail only for the return path (and its signed VERP forms) and the unsubscribe
address, answers 250 only once what the message said is committed, and 451 (try again
later) while the database is busy, so that nothing is lost: the sending MTA keeps the
message and delivers it again. It never sends anything back."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from newsletter.db.session import database_unavailable
from newsletter.inbound.inbox import Inbox
from newsletter.logs import log_event

log = logging.getLogger(__name__)


class _Handler:
    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if refusal := self.inbox.refusal(address):
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        try:
            findings = await self.inbox.receive(raw, envelope.rcpt_tos, "smtp")
        except Exception as exc:
            if not database_unavailable(exc):
                log_event(
                    log,
                    logging.ERROR,
                    "Cannot read an inbound message",
                    "inbound_failed",
                    exc_info=True,
                )
                # Temporary, so the sender keeps it and it is not lost while we fix the bug.
                return "451 4.3.0 Cannot take this message now; please try again later"
            log_event(
                log,
                logging.WARNING,
                "The database is busy; the sender was asked to deliver again later.",
                "inbound_database_busy",
            )
            return "451 4.3.0 Busy; please try again later"
        for finding in findings:
            log_event(log, logging.INFO, f"Inbound mail: {finding}", "inbound")
        return "250 OK"


async def start_receiver(inbox: Inbox, host: str, port: int, max_bytes: int) -> asyncio.Server:
    """Listening once this returns; close() and wait_closed() stop it."""
    loop = asyncio.get_running_loop()
    handler = _Handler(inbox)

    def protocol() -> Any:
        return SMTP(
            handler,
            data_size_limit=max_bytes,
            ident="newsletter inbound",
            hostname=inbox.settings.sender.domain,
            loop=loop,
        )

    return await loop.create_server(protocol, host, port)
