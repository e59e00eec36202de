"""uvicorn's HTTP/1.1 protocol made fit to face the open internet: a bound on the size of a
request's head, and a deadline for it."""

from __future__ import annotations

import asyncio
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_TOO_LARGE = b"Request header fields too large."


def bounded_httptools(max_head_bytes: int, head_timeout_s: float) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol (the fast parser, which uvicorn picks when installed),
    with two limits it lacks:

    - **Size.** A request line and headers longer than `max_head_bytes` get a 431 and the
      connection is closed; httptools alone reads 8 MB of headers and hands them on.
      (uvicorn's other parser, h11, bounds them, but is pure Python and slower.)
    - **Time.** The request line and headers must arrive within `head_timeout_s` of the
      connection opening, or of the previous answer, or the connection is closed. uvicorn's
      keep-alive timer is made that deadline: it starts when the connection opens (uvicorn
      starts it only after a first answer, so a connection that sends nothing is held for
      ever), and bytes that arrive do not push it back (uvicorn's do, so headers sent a byte
      every few seconds are waited for without end); it stops when the head is complete.
      The body has a deadline of its own, in the app (security.BodyLimit)."""

    class BoundedHttpToolsProtocol(HttpToolsProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.timeout_keep_alive = head_timeout_s  # type: ignore[assignment]
            self.reading_head = False  #: from a message's first byte to its head's end
            self.head_bytes = 0  #: of the head being read

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self.timeout_keep_alive_task = self.loop.call_later(
                head_timeout_s, self.timeout_keep_alive_handler
            )

        def data_received(self, data: bytes) -> None:
            # As uvicorn's, less the line that stops the timer on every byte received,
            # plus the count of the head's bytes.
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError:
                msg = "Invalid HTTP request received."
                self.logger.warning(msg)
                self.send_400_response(msg)
                return
            except httptools.HttpParserUpgrade:
                if self._should_upgrade():
                    self.handle_websocket_upgrade()
                else:
                    self._unsupported_upgrade_warning()
            if self.reading_head:
                # This chunk ends inside a head, so all of it belongs to that head; all
                # but the part before it, had a client pipelined it behind another
                # request (browsers and proxies do not), which is then counted too.
                self.head_bytes += len(data)
                if self.head_bytes > max_head_bytes:
                    self.refuse_head()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self.reading_head = True
            self.head_bytes = 0

        def on_headers_complete(self) -> None:
            super().on_headers_complete()
            self.reading_head = False
            self._unset_keepalive_if_required()

        def refuse_head(self) -> None:
            self.logger.warning("Request head over %d bytes refused.", max_head_bytes)
            self.transport.write(
                b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                b"content-type: text/plain; charset=utf-8\r\n"
                b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(_TOO_LARGE), _TOO_LARGE)
            )
            self.transport.close()

    return BoundedHttpToolsProtocol
