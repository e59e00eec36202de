"""The web app on a whole delivery stack: real SQLite file, real SMTP server, a clock the
test moves, and an HTTP client speaking to the ASGI app in process."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from html import unescape
from pathlib import Path
from typing import Any, TypeVar

import httpx
from sqlalchemy import func, select
from starlette.applications import Starlette

from newsletter.config import Settings
from newsletter.db.models import Delivery, DeliveryKind, Subscriber
from newsletter.db.session import prompt_writes
from newsletter.tokens import LinkMaker, Tokens
from newsletter.web.app import create_app, web_server
from tests.conftest import REPO
from tests.integration.harness import Stack, settings_for, shipped_course
from tests.smtpd import SmtpServer

#: What the shipped course asks people to agree to, and its version (from course.toml).
SHIPPED_IDENTITY = shipped_course(REPO).identity
CONSENT_TEXT = SHIPPED_IDENTITY.consent_text
CONSENT_VERSION = SHIPPED_IDENTITY.consent_version

# A Tuesday morning in London, in summer time.
START = datetime(2026, 6, 9, 9, 0, tzinfo=UTC)
BASE = "http://localhost:8000"
CLIENT_IP = "203.0.113.5"
USER_AGENT = "Mozilla/5.0 (test browser)"
#: The secret Stack's workers sign links with.
LINK_SECRET = "integration-test-secret"

T = TypeVar("T")


@dataclass
class Site:
    stack: Stack
    app: Starlette
    client: httpx.AsyncClient
    links: LinkMaker
    sequence_id: int
    resources: AsyncExitStack

    def client_from(self, ip: str) -> httpx.AsyncClient:
        """Another client, as if from another network."""
        return client_for(self.app, ip)

    async def signup(
        self, email: str, *, client: httpx.AsyncClient | None = None, **fields: str
    ) -> httpx.Response:
        return await (client or self.client).post("/subscribe", data={"email": email, **fields})

    async def subscriber(self, email: str) -> Subscriber | None:
        async with self.stack.sessions() as session:
            return await session.scalar(select(Subscriber).where(Subscriber.email == email))

    async def confirmations(self, email: str) -> int:
        async with self.stack.sessions() as session:
            count = await session.scalar(
                select(func.count())
                .select_from(Delivery)
                .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
                .where(Subscriber.email == email, Delivery.kind == DeliveryKind.CONFIRMATION)
            )
            return int(count or 0)

    def confirm_link(self, email: str) -> str:
        """The path of the confirmation link in the newest email to this address."""
        [*_, message] = self.stack.received(email)
        text = message.get_body(("plain",)).get_content()
        found = re.search(r"https?://\S+(/confirm/\S+)", text)
        assert found is not None, text
        return found.group(1)

    def personal_paths(self, subscriber_id: int) -> tuple[str, str]:
        links = self.links.personal_links(subscriber_id, self.stack.clock.now())
        return links.unsubscribe_url.removeprefix(BASE), links.preferences_url.removeprefix(BASE)


def client_for(app: Starlette, ip: str = CLIENT_IP) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=(ip, 50000)),
        base_url=BASE,
        headers={"user-agent": USER_AGENT},
    )


def csrf_of(page: httpx.Response) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found is not None, page.text
    return unescape(found.group(1))


async def start_site(
    settings: Settings, tmp_path: Path, server: SmtpServer, **options: Any
) -> Site:
    stack = await Stack.start(settings_for(settings, tmp_path), server, START)
    sequence_id = await stack.queue(shipped_course(REPO))
    links = LinkMaker(Tokens(LINK_SECRET), stack.settings.site.base, "u@example.org")
    # The web's writes on their own connection, as `newsletter web` makes them.
    resources = AsyncExitStack()
    writes = await resources.enter_async_context(prompt_writes(stack.sessions))
    app = create_app(
        stack.settings,
        stack.sessions,
        stack.clock,
        links,
        secret="web-test-secret-0123456789",
        writes=writes,
        **options,
    )
    return Site(stack, app, client_for(app), links, sequence_id, resources)


async def close_site(site: Site) -> None:
    await site.client.aclose()
    await site.resources.aclose()
    await site.stack.close()


def with_site(
    settings: Settings,
    tmp_path: Path,
    server: SmtpServer,
    scenario: Callable[[Site], Awaitable[T]],
    **options: Any,
) -> T:
    async def main() -> T:
        site = await start_site(settings, tmp_path, server, **options)
        try:
            return await scenario(site)
        finally:
            await close_site(site)

    return asyncio.run(main())


@asynccontextmanager
async def real_server(app: Starlette) -> AsyncIterator[int]:
    """The app behind uvicorn as `newsletter web` runs it (web_server), on a free port of
    127.0.0.1: yields the port. The socket listens before the server starts, so a first
    connection waits in the backlog instead of being refused."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    server = web_server(app)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        await serving
        sock.close()
