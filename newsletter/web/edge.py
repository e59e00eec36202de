"""The app's edge: which client is asking (believing forwarded headers only from trusted
proxies), under which host name, and where a path with a stray trailing slash leads."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Match, Router
from starlette.types import ASGIApp, Receive, Scope, Send

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_PORT = re.compile(r"[0-9]{1,5}")
#: One `name=value` pair of a Forwarded element (RFC 7239), the value a token or a quoted
#: string, followed by the separator that ends it.
_FORWARDED_PAIR = re.compile(
    r"""\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+)=("(?:[^"\\]|\\.)*"|[^";,\s]*)\s*([;,]|$)"""
)
_SCHEMES = frozenset({"http", "https"})


# --- the client behind the proxies -------------------------------------------------------


def parse_address(text: str) -> Address | None:
    """An IP address as proxies write one: `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`,
    `[2001:db8::1]` or `[2001:db8::1]:4711`. Anything else (`unknown`, a name, a zone
    index such as `fe80::1%eth0`, `garbage`) is None."""
    text = text.strip()
    if text.startswith("["):
        inside, bracket, port = text[1:].partition("]")
        if not bracket or (port and not (port[0] == ":" and _PORT.fullmatch(port[1:]))):
            return None
        text = inside
        if "." in text and ":" not in text:  # brackets are for IPv6 only
            return None
    elif text.count(":") == 1:
        text, _, port = text.partition(":")
        if not _PORT.fullmatch(port):
            return None
    if "%" in text:
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    return plain(address)


def plain(address: Address) -> Address:
    """An IPv4 address written as IPv6 (`::ffff:192.0.2.1`, as dual-stack sockets report
    IPv4 peers) as the IPv4 address it is."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def client_behind(hops: Sequence[str], trusted: Callable[[Address], bool]) -> Address | None:
    """The client in a list of hops, client first and nearest proxy last (the order of
    X-Forwarded-For): walking back from the nearest, the first hop that is not one of our
    trusted proxies. Hops beyond it were written by whoever sent the request and are never
    read. A malformed hop on the way means nothing in the list is believed: None."""
    address: Address | None = None
    for hop in reversed(hops):
        address = parse_address(hop)
        if address is None:
            return None
        if not trusted(address):
            return address
    return address  # every hop is a trusted proxy: the farthest of them asked


def parse_forwarded(value: str) -> list[dict[str, str]] | None:
    """A Forwarded header (RFC 7239) as its elements, each a dict of lower-cased names to
    unquoted values; None if it does not parse."""
    elements: list[dict[str, str]] = [{}]
    position = 0
    value = value.strip()
    while position < len(value):
        match = _FORWARDED_PAIR.match(value, position)
        if match is None:
            return None
        name, raw, separator = match.groups()
        if raw.startswith('"'):
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        elements[-1][name.lower()] = raw
        if separator == ",":
            elements.append({})
        position = match.end()
    return elements if all(elements) else None


def forwarded_client(
    headers: Iterable[tuple[bytes, bytes]], trusted: Callable[[Address], bool]
) -> tuple[Address | None, str | None]:
    """The client address and scheme that a trusted proxy's headers name, each None where
    they name none. X-Forwarded-For and Forwarded are read alike; a proxy rewrites the one
    it knows and passes the other on from the client unread, so when both are present and
    disagree, neither is believed."""
    found: dict[bytes, list[str]] = {}
    for name, value in headers:
        if name in (b"x-forwarded-for", b"forwarded", b"x-forwarded-proto"):
            found.setdefault(name, []).append(value.decode("latin-1"))
    clients: set[Address | None] = set()
    schemes: set[str | None] = set()
    if b"x-forwarded-for" in found:
        clients.add(client_behind(",".join(found[b"x-forwarded-for"]).split(","), trusted))
    if b"x-forwarded-proto" in found:
        schemes.add(_scheme(",".join(found[b"x-forwarded-proto"])))
    if b"forwarded" in found:
        elements = parse_forwarded(",".join(found[b"forwarded"]))
        if elements is not None:
            clients.add(client_behind([element.get("for", "") for element in elements], trusted))
            if "proto" in elements[-1]:
                schemes.add(_scheme(elements[-1]["proto"]))
    clients.discard(None)  # a malformed header is as good as none
    schemes.discard(None)
    return (
        clients.pop() if len(clients) == 1 else None,
        schemes.pop() if len(schemes) == 1 else None,
    )


def _scheme(value: str) -> str | None:
    scheme = value.strip().lower()
    return scheme if scheme in _SCHEMES else None


class TrustedProxies:
    """Replaces the connecting address (and scheme) with the client's, as a trusted proxy
    names it in X-Forwarded-For, X-Forwarded-Proto or Forwarded; from anyone else these
    headers are ignored, and so are malformed ones. The per-IP signup limit and the consent
    record read the result, so it must be an address, and one a client cannot choose."""

    def __init__(self, app: ASGIApp, networks: Collection[Network]) -> None:
        self.app = app
        self.networks = tuple(networks)

    def trusts(self, address: Address) -> bool:
        return any(address in network for network in self.networks)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.networks and scope.get("client"):
            peer = parse_address(scope["client"][0])
            if peer is not None and self.trusts(peer):
                client, scheme = forwarded_client(scope["headers"], self.trusts)
                # Changed in place, as uvicorn's own proxy middleware does, so that its
                # access log names the client too.
                if client is not None:
                    scope["client"] = (str(client), 0)
                if scheme is not None:
                    scope["scheme"] = scheme
        await self.app(scope, receive, send)


# --- the host name -----------------------------------------------------------------------


def host_name(value: str) -> str:
    """The name in a Host header, without its port, lower-cased: `Example.org:8000` ->
    `example.org`, `[::1]:8000` -> `::1`."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].partition("]")[0]
    name, _, port = value.rpartition(":")
    return name.rstrip(".") if name and _PORT.fullmatch(port) else value.rstrip(".")


class TrustedHost:
    """Answers `refuse` (a friendly 400 page) to a request whose Host header names neither
    the host of `site.base_url` nor the address the server was reached at (so that
    http://127.0.0.1:8000 works beside http://localhost:8000). Nothing here builds a URL
    from the Host header any more; this keeps a forged one from reaching anything that
    might, and shows a mistyped name at once."""

    def __init__(
        self,
        app: ASGIApp,
        base_url: str,
        refuse: Callable[[Request], Awaitable[Response]],
    ) -> None:
        self.app = app
        self.refuse = refuse
        self.allowed = frozenset({urlsplit(base_url).hostname or ""})

    def allows(self, scope: Scope) -> bool:
        server = scope.get("server")
        own = str(server[0]).lower() if server else None
        for name, value in scope["headers"]:
            if name == b"host":
                host = host_name(value.decode("latin-1"))
                if host not in self.allowed and host != own:
                    return False
        return True  # no Host header (HTTP/1.0): nothing was claimed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self.allows(scope):
            response = await self.refuse(Request(scope))
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


# --- trailing slashes --------------------------------------------------------------------


def redirect_slashes_to(router: Router, base: str) -> None:
    """Make the router answer a path with a trailing slash that would match without it
    with a redirect to `base` + that path. Starlette's own redirect builds the address
    from the request's Host header and scheme, which whoever sent the request chose."""
    router.redirect_slashes = False
    not_found = router.default

    async def default(scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] == "http" and path != "/" and path.endswith("/"):
            stripped = {**scope, "path": path.rstrip("/") or "/"}
            if any(route.matches(stripped)[0] is not Match.NONE for route in router.routes):
                query = scope.get("query_string", b"").decode("latin-1")
                location = base + stripped["path"] + (f"?{query}" if query else "")
                await RedirectResponse(location)(scope, receive, send)
                return
        await not_found(scope, receive, send)

    router.default = default
