"""Webhooks of sending providers: their bounces and complaints, into the inbox
(docs/bounces.md). Answers are for a machine: plain text and a status (200: taken; 403:
not signed by the provider; 503: busy, try again later, which Mailgun does for hours)."""

from __future__ import annotations

import logging
import time

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from newsletter.inbound.inbox import Inbox
from newsletter.inbound.mailgun import WebhookRefused, read_event
from newsletter.logs import log_event

log = logging.getLogger(__name__)


class Webhooks:
    def __init__(self, inbox: Inbox, mailgun_signing_key: str) -> None:
        self.inbox = inbox
        self.mailgun_signing_key = mailgun_signing_key

    def routes(self) -> list[Route]:
        return [Route("/webhooks/mailgun", self.mailgun, methods=["POST"])]

    async def mailgun(self, request: Request) -> Response:
        try:
            event = read_event(await request.body(), self.mailgun_signing_key, time.time())
        except WebhookRefused as refused:
            log_event(
                log, logging.WARNING, f"Mailgun webhook refused: {refused}", "webhook_refused"
            )
            return PlainTextResponse("refused\n", status_code=403)
        if event.report is None:
            return PlainTextResponse(f"ignored: {event.name[:40]}\n")
        # A busy database raises here and answers 503 with Retry-After (app.py); Mailgun
        # retries an event for hours.
        finding = await self.inbox.record(event.report, "mailgun")
        return PlainTextResponse(f"{finding}\n")
