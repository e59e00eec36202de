"""The limits of a connection, against a real uvicorn as `newsletter web` runs it
(web_server), over raw sockets: a client that sends nothing, trickles its headers, sits
idle after an answer, trickles its body, or sends 8 MB of headers is answered 4xx or cut off
within its bound; forwarded headers from 127.0.0.1 are not believed by default.

These wait for real time, on shortened timeouts: the server's clock is the event loop's."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time

import httpx

from newsletter.config import Settings
from newsletter.web.security import MAX_BODY_BYTES, MAX_HEADER_BYTES
from tests.web.site import Site, real_server, with_site

TIMEOUT_S = 0.5
#: How much later than its bound a close may come on a busy, shared machine.
SLACK_S = 2.0
HEAD = b"GET /check-your-email HTTP/1.1\r\nHost: localhost\r\n"


def with_short_timeouts(settings: Settings) -> Settings:
    web = settings.web.model_copy(
        update={"header_timeout_s": TIMEOUT_S, "body_timeout_s": TIMEOUT_S}
    )
    return settings.model_copy(update={"web": web})


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection (or resets it); fails
    if it is still open after TIMEOUT_S + SLACK_S."""
    data = b""
    with contextlib.suppress(ConnectionResetError):
        async with asyncio.timeout(TIMEOUT_S + SLACK_S):
            while chunk := await reader.read(65536):
                data += chunk
    return data


async def response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    async with asyncio.timeout(TIMEOUT_S + SLACK_S):
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines if line)
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(status_line.split()[1]), headers, body


def on_real_server(settings, tmp_path, smtp_server, check) -> None:  # type: ignore[no-untyped-def]
    async def scenario(site: Site) -> None:
        async with real_server(site.app) as port:
            await check(site, port)

    with_site(with_short_timeouts(settings), tmp_path, smtp_server, scenario)


def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(
    settings, tmp_path, smtp_server
):
    async def check(site: Site, port: int) -> None:
        reader, writer = await connect(port)
        opened = time.monotonic()
        assert await until_closed(reader) == b""
        assert time.monotonic() - opened >= TIMEOUT_S * 0.9
        writer.close()

    on_real_server(settings, tmp_path, smtp_server, check)


def test_headers_trickled_byte_by_byte_are_cut_off_at_the_header_timeout(
    settings, tmp_path, smtp_server
):
    async def check(site: Site, port: int) -> None:
        reader, writer = await connect(port)
        opened = time.monotonic()
        writer.write(HEAD)

        async def trickle() -> None:  # a new header line every tenth of the timeout
            for n in range(1000):
                await asyncio.sleep(TIMEOUT_S / 10)
                writer.write(b"X-Slow-%d: 1\r\n" % n)
                await writer.drain()

        trickling = asyncio.create_task(trickle())
        assert await until_closed(reader) == b""
        closed_after = time.monotonic() - opened
        trickling.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await trickling
        # Counted from the connection's start, not pushed back by each new byte.
        assert TIMEOUT_S * 0.9 <= closed_after < TIMEOUT_S + SLACK_S
        writer.close()

    on_real_server(settings, tmp_path, smtp_server, check)


def test_a_kept_alive_connection_serves_requests_then_closes_when_idle(
    settings, tmp_path, smtp_server
):
    async def check(site: Site, port: int) -> None:
        reader, writer = await connect(port)
        for _ in range(3):
            writer.write(HEAD + b"\r\n")
            status, _, body = await response(reader)
            assert status == 200
            assert b"Check your email" in body
        writer.write(HEAD + b"\r\n" + HEAD + b"\r\n")  # pipelined
        assert [(await response(reader))[0] for _ in range(2)] == [200, 200]
        answered = time.monotonic()
        assert await until_closed(reader) == b""
        assert time.monotonic() - answered >= TIMEOUT_S * 0.9
        writer.close()

    on_real_server(settings, tmp_path, smtp_server, check)


def test_a_body_that_does_not_arrive_in_time_gets_a_408_and_saves_nothing(
    settings, tmp_path, smtp_server
):
    async def check(site: Site, port: int) -> None:
        reader, writer = await connect(port)
        writer.write(
            b"POST /subscribe HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\n"
            b"email=ana%40example.com"
        )
        sent = time.monotonic()
        status, headers, body = await response(reader)
        assert status == 408
        assert time.monotonic() - sent >= TIMEOUT_S * 0.9
        assert b"took too long to arrive" in body
        assert headers["connection"] == "close"
        assert await until_closed(reader) == b""
        assert await site.subscriber("ana@example.com") is None
        writer.close()

    on_real_server(settings, tmp_path, smtp_server, check)


def test_eight_megabytes_of_headers_are_refused_not_read(settings, tmp_path, smtp_server):
    eight_mb = 8 * 1024 * 1024

    async def check(site: Site, port: int) -> None:
        sock = socket.socket()
        # A small send buffer: what the client manages to send is close to what the
        # server read before it closed, not what the kernel took on its behalf.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        sock.connect(("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(HEAD + b"X-Big: ")
        sent = 0
        started = time.monotonic()
        with contextlib.suppress(ConnectionError):
            while sent < eight_mb:
                writer.write(b"a" * 65536)
                await writer.drain()
                sent += 65536
            writer.write(b"\r\n\r\n")
            await writer.drain()
        answer = await until_closed(reader)
        assert sent < eight_mb / 4
        # A 4xx, or the connection cut before the answer could be read; never a 200.
        assert answer == b"" or answer.startswith(b"HTTP/1.1 4"), answer[:100]
        assert time.monotonic() - started < TIMEOUT_S + SLACK_S
        writer.close()

    on_real_server(settings, tmp_path, smtp_server, check)


def test_headers_over_the_bound_get_a_431_and_a_form_of_the_largest_size_still_goes_through(
    settings, tmp_path, smtp_server
):
    async def check(site: Site, port: int) -> None:
        over = HEAD + b"X-Big: " + b"a" * MAX_HEADER_BYTES + b"\r\n\r\n"
        for piece in (1024, len(over)):  # trickled in, or whole in one write
            reader, writer = await connect(port)
            for start in range(0, len(over), piece):
                writer.write(over[start : start + piece])
            status, _, _ = await response(reader)
            assert status == 431, piece
            assert await until_closed(reader) == b""
            writer.close()

        # A head and a 16 KiB body in one write: only the head counts against its bound.
        body = b"email=ana%40example.com&first_name=" + b"n" * (MAX_BODY_BYTES - 40)
        reader, writer = await connect(port)
        writer.write(
            b"POST /subscribe HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        status, _, page = await response(reader)
        assert status == 400  # the name is too long: the form's answer, not the server's
        assert b"shorten your name" in page
        writer.close()

    on_real_server(settings, tmp_path, smtp_server, check)


def test_the_real_server_believes_no_forwarded_header_by_default_and_checks_the_host(
    settings, tmp_path, smtp_server
):
    async def check(site: Site, port: int) -> None:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            forged = {"x-forwarded-for": "198.51.100.7", "forwarded": "for=198.51.100.7"}
            signed_up = await client.post(
                "/subscribe", data={"email": "ana@example.com"}, headers=forged
            )
            assert signed_up.status_code == 303
            ana = await site.subscriber("ana@example.com")
            assert ana is not None
            assert ana.consent["ip"] == "127.0.0.1"

            evil = await client.get("/check-your-email/", headers={"host": "evil.example"})
            assert evil.status_code == 400
            slash = await client.get("/check-your-email/")  # Host: 127.0.0.1:port
            assert slash.status_code == 307
            assert slash.headers["location"] == "http://localhost:8000/check-your-email"

    on_real_server(settings, tmp_path, smtp_server, check)
