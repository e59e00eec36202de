"""The web app: pages, static files, middleware and error pages, put together; and uvicorn
to serve it, alone (`newsletter web`) or beside the scheduler."""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from pathlib import Path

import uvicorn
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from newsletter.clock import Clock, SystemClock
from newsletter.config import Settings, WebSettings, load_secret_key
from newsletter.db.session import database_unavailable
from newsletter.tokens import LinkMaker
from newsletter.web.edge import TrustedHost, TrustedProxies, redirect_slashes_to
from newsletter.web.routes import RETRY_BUSY_S, DatabaseBusy, Pages
from newsletter.web.security import (
    MAX_HEADER_BYTES,
    SECURITY_HEADERS,
    BodyLimit,
    HeaderLimit,
    SecurityHeaders,
)
from newsletter.web.server import bounded_httptools

log = logging.getLogger(__name__)

_STATUS_PAGES: dict[int, tuple[str, str]] = {
    400: (
        "We could not read what was sent",
        "Please go back, check the form, and send it again.",
    ),
    404: (
        "There is no page here",
        "Please check the address. If you followed a link from one of our emails, open it "
        "again from the email.",
    ),
    405: (
        "This page cannot do that",
        "Please use the buttons on our pages rather than typing the address.",
    ),
}


def web_templates_dir(settings: Settings) -> Path:
    """templates/web/, beside the email templates (templates/emails/ by default)."""
    return settings.templates_dir.parent / "web"


def create_app(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    clock: Clock,
    links: LinkMaker,
    *,
    secret: str | None = None,
    sequence_slug: str | None = None,
    store_ip: bool | None = None,
    templates_dir: Path | None = None,
    writes: async_sessionmaker[AsyncSession] | None = None,
) -> Starlette:
    """The app for one course: `sequence_slug`, or the oldest live sequence.

    `writes`: sessions for its writes, from db.session.prompt_writes (by default `sessions`,
    which on SQLite wait for another process's lock in SQLite's coarser steps).

    `secret` signs CSRF tokens and keys the hashed client addresses of the rate limit;
    by default the same secret as the links (NEWSLETTER_SECRET_KEY or var/secret_key)."""
    folder = templates_dir or web_templates_dir(settings)
    pages = Pages(
        settings,
        sessions,
        clock,
        links,
        secret=secret or load_secret_key(settings),
        templates_dir=folder,
        sequence_slug=sequence_slug,
        store_ip=settings.signup.store_ip if store_ip is None else store_ip,
        writes=writes,
    )

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        title, text = _STATUS_PAGES.get(exc.status_code, _STATUS_PAGES[400])
        status = exc.status_code if 400 <= exc.status_code < 500 else 400
        return pages.message(status, title, text)

    async def too_large(request: Request) -> Response:
        return pages.message(
            413,
            "That was more than this form takes",
            "What was sent is larger than any of our forms needs (16 KiB). Please go back, "
            "shorten what you typed, and send it again.",
        )

    async def too_slow(request: Request) -> Response:
        return pages.message(
            408,
            "What you sent took too long to arrive",
            "Your connection may have dropped for a moment. Nothing was saved. Please go "
            "back and send the form again.",
        )

    async def headers_too_large(request: Request) -> Response:
        return pages.message(
            431,
            "Your browser sent more than we can read",
            "It sent unusually long headers with the request, perhaps many cookies. "
            "Please clear the cookies of this site, or try another browser.",
        )

    async def unknown_host(request: Request) -> Response:
        return pages.message(
            400,
            "This site is not at that address",
            f"Please use the address in our emails: {settings.site.base}/",
        )

    async def database_error(request: Request, exc: Exception) -> Response:
        if not (isinstance(exc, DatabaseBusy) or database_unavailable(exc)):
            return await server_error(request, exc)
        # The driver's message only: SQLAlchemy's own adds the statement and its
        # parameters, which hold the signer's address.
        reason = exc.orig if isinstance(exc, DBAPIError) else exc
        log.warning(
            "Database busy or unreachable on %s %s: %s", request.method, request.url.path, reason
        )
        response = pages.message(
            503,
            "We are busy for a moment",
            "Nothing was changed. Please try again in a minute: go back and press the "
            "button again, or reload this page.",
        )
        response.headers["retry-after"] = str(RETRY_BUSY_S)
        return response

    async def server_error(request: Request, exc: Exception) -> Response:
        # Logged with its traceback for the admin; the person sees no details at all.
        log.error("Unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        try:
            response: HTMLResponse = pages.message(
                500,
                "Something went wrong on our side",
                "Nothing you did caused this, and it has been logged for us to fix. Please "
                "try again in a few minutes.",
            )
        except Exception:  # the templates themselves may be what failed
            response = HTMLResponse(
                "<!doctype html><title>Error</title><p>Something went wrong on our side. "
                "Please try again in a few minutes.</p>",
                status_code=500,
            )
        response.headers.update(SECURITY_HEADERS)  # this handler sits outside the middleware
        return response

    web = settings.web
    app = Starlette(
        routes=[
            *pages.routes(),
            *_webhook_routes(settings, sessions, links),
            Mount("/static", StaticFiles(directory=folder / "static"), name="static"),
        ],
        middleware=[
            Middleware(SecurityHeaders),
            Middleware(HeaderLimit, too_large=headers_too_large),
            Middleware(TrustedProxies, networks=web.trusted_networks),
            Middleware(TrustedHost, base_url=settings.site.base, refuse=unknown_host),
            Middleware(
                BodyLimit, too_large=too_large, too_slow=too_slow, timeout_s=web.body_timeout_s
            ),
        ],
        exception_handlers={
            HTTPException: http_error,
            DatabaseBusy: database_error,
            DBAPIError: database_error,
            PoolTimeout: database_error,
            Exception: server_error,
        },
    )
    redirect_slashes_to(app.router, settings.site.base)
    app.state.web = web  # for web_server
    return app


def _webhook_routes(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], links: LinkMaker
) -> list[Route]:
    """Mailgun's event webhook, when its signing key is set (docs/bounces.md)."""
    key = settings.inbound.mailgun_signing_key
    if key is None:
        return []
    from newsletter.inbound.inbox import Inbox
    from newsletter.inbound.verp import return_path_for
    from newsletter.web.webhooks import Webhooks

    inbox = Inbox(
        settings,
        sessions,
        tokens=links.tokens,
        return_path=return_path_for(settings),
        wall=SystemClock(),
    )
    return Webhooks(inbox, key.get_secret_value()).routes()


class QuietServer(uvicorn.Server):
    """A uvicorn server that leaves SIGTERM and SIGINT to the command that runs it
    (newsletter/cli/lifecycle.py), which stops the scheduler and the web app together.
    uvicorn's own handling would raise the signal again once it has shut down, killing the
    process before the worker has recorded its last sends."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def web_server(
    app: Starlette, host: str = "127.0.0.1", port: int = 8000, *, grace_s: float = 8
) -> uvicorn.Server:
    """A uvicorn server for the app; `await server.serve()` runs it in the current loop,
    beside the scheduler, and `server.should_exit = True` stops it, giving requests under
    way `grace_s` to finish. The limits come from the app's [web] settings
    (docs/web.md#limits-of-the-connection)."""
    web: WebSettings = getattr(app.state, "web", WebSettings())
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="off",
        server_header=False,
        # The app decides whom to believe (edge.TrustedProxies, from [web]
        # trusted_proxies); uvicorn's own would believe anything from 127.0.0.1.
        proxy_headers=False,
        http=bounded_httptools(MAX_HEADER_BYTES, web.header_timeout_s),
        ws="none",
        log_config=None,
        timeout_graceful_shutdown=math.ceil(grace_s),
    )
    return QuietServer(config)
