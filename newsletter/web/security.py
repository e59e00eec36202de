"""CSRF tokens for the site's own forms, security headers, and the request size and time
limits."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Literal

from itsdangerous import BadSignature, Signer
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Long enough for a tab left open over a bad night; short enough that a leaked page's
#: token soon stops working.
CSRF_MAX_AGE = timedelta(hours=12)
#: Forms here are a few short fields; anything bigger is not a person typing.
MAX_BODY_BYTES = 16 * 1024
#: A browser's request line and headers take 1 or 2 KiB (we set no cookies, though a site
#: on the same domain may); nginx's default buffers take 8 KiB a line.
MAX_HEADER_BYTES = 16 * 1024
#: Defaults of the [web] timeouts in config.toml.
BODY_TIMEOUT_S = 10.0

#: No inline script or style anywhere: the one script (the time zone) is a file of ours.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    # Page URLs carry personal tokens: never hand them to another site.
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=(), interest-cohort=()",
}


class CsrfGuard:
    """Signed '<form id>|<issued at>' tokens for a hidden field. No cookie or session is
    needed: the token is bound to one form (and, on personal pages, one subscriber), and
    only this server can make one."""

    def __init__(self, secret: str) -> None:
        self._signer = Signer(secret, salt="newsletter.csrf")

    def issue(self, form_id: str, now: datetime) -> str:
        return self._signer.sign(f"{form_id}|{int(now.timestamp())}").decode("ascii")

    def is_valid(self, token: str, form_id: str, now: datetime) -> bool:
        try:
            payload = self._signer.unsign(token).decode("ascii")
        except (BadSignature, UnicodeError):
            return False
        bound_to, _, issued = payload.rpartition("|")
        if bound_to != form_id or not issued.isdigit():
            return False
        age_s = now.timestamp() - int(issued)
        return -60 <= age_s <= CSRF_MAX_AGE.total_seconds()  # a minute of clock skew


class SecurityHeaders:
    """Adds the headers above to every response, and `Cache-Control: no-store` to pages
    (personal pages must not linger in shared caches); static files keep theirs."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = str(scope.get("path", "")).startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
                if not static:
                    headers["cache-control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)


class HeaderLimit:
    """Answers `too_large` (a friendly 431 page) to a request whose headers add up to more
    than `limit` bytes. The server's parser refuses a longer header block while it is still
    arriving; one that arrives whole in a single read would pass it."""

    def __init__(
        self,
        app: ASGIApp,
        too_large: Callable[[Request], Awaitable[Response]],
        limit: int = MAX_HEADER_BYTES,
    ) -> None:
        self.app = app
        self.too_large = too_large
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            size = len(scope.get("raw_path") or b"") + len(scope.get("query_string", b""))
            size += sum(len(name) + len(value) + 4 for name, value in scope["headers"])
            if size > self.limit:
                await _refuse(self.too_large, scope, send)
                return
        await self.app(scope, receive, send)


class BodyLimit:
    """Reads at most `limit` bytes of a request body, within `timeout_s`, before the app
    sees it; more gets the `too_large` response (a friendly 413 page) instead of a parser's
    error, and a body still arriving after `timeout_s` gets `too_slow` (a 408 page), so a
    client trickling its body cannot hold a connection and its task for ever."""

    def __init__(
        self,
        app: ASGIApp,
        too_large: Callable[[Request], Awaitable[Response]],
        too_slow: Callable[[Request], Awaitable[Response]],
        limit: int = MAX_BODY_BYTES,
        timeout_s: float = BODY_TIMEOUT_S,
    ) -> None:
        self.app = app
        self.too_large = too_large
        self.too_slow = too_slow
        self.limit = limit
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.limit:
            await _refuse(self.too_large, scope, send)
            return
        try:
            async with asyncio.timeout(self.timeout_s):
                chunks = await self._read(receive)
        except TimeoutError:
            await _refuse(self.too_slow, scope, send)
            return
        if chunks == "disconnected":
            return
        if chunks == "too large":
            await _refuse(self.too_large, scope, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)

    async def _read(self, receive: Receive) -> list[bytes] | Literal["disconnected", "too large"]:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return "disconnected"
            body = message.get("body", b"")
            size += len(body)
            if size > self.limit:
                return "too large"
            chunks.append(body)
            if not message.get("more_body", False):
                return chunks


async def _refuse(
    respond: Callable[[Request], Awaitable[Response]], scope: Scope, send: Send
) -> None:
    async def no_body() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    response = await respond(Request(scope, no_body))
    # The client may still be sending: tell it this connection is done with.
    response.headers["connection"] = "close"
    await response(scope, no_body, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
