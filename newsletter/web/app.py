"""The web app: pages, static files, middleware and error pages, put together; and uvicorn
to serve it, alone (`newsletter web`) or beside the scheduler."""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from pathlib import Path

import uvicorn
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from newsletter.clock import Clock
from newsletter.config import Settings, load_secret_key
from newsletter.tokens import LinkMaker
from newsletter.web.routes import Pages
from newsletter.web.security import SECURITY_HEADERS, BodyLimit, SecurityHeaders

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

    return Starlette(
        routes=[
            *pages.routes(),
            Mount("/static", StaticFiles(directory=folder / "static"), name="static"),
        ],
        middleware=[
            Middleware(SecurityHeaders),
            Middleware(BodyLimit, too_large=too_large),
        ],
        exception_handlers={HTTPException: http_error, Exception: server_error},
    )


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
    way `grace_s` to finish."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="off",
        server_header=False,
        # X-Forwarded-For is believed only from these (uvicorn's FORWARDED_ALLOW_IPS, by
        # default 127.0.0.1): a proxy on the same machine passes the real client address,
        # which the per-IP signup limit and the consent record need.
        proxy_headers=True,
        log_config=None,
        timeout_graceful_shutdown=math.ceil(grace_s),
    )
    return QuietServer(config)


async def serve_web(app: Starlette, host: str = "127.0.0.1", port: int = 8000) -> None:
    await web_server(app, host, port).serve()
