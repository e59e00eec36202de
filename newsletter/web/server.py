"""uvicorn's HTTP/1.1 protocol made fit to face the open internet: h11, which refuses an
over-long header block (httptools takes 8 MB), and a deadline for every request's head."""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol


def bounded_h11(head_timeout_s: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol, in which a connection must send a request's line and
    headers within `head_timeout_s` of opening, or of the previous answer, or be closed.

    uvicorn's keep-alive timer is made that deadline: it starts when the connection opens
    (uvicorn starts it only after a first answer, so a connection that sends nothing is
    held for ever), and bytes that arrive do not push it back (uvicorn's do, so headers
    sent one byte every few seconds are waited for without end). It still stops when a
    request's head is complete, where uvicorn stops it; the body has a deadline of its own
    in the app (security.BodyLimit)."""

    class BoundedH11Protocol(H11Protocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.timeout_keep_alive = head_timeout_s  # type: ignore[assignment]

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self.timeout_keep_alive_task = self.loop.call_later(
                head_timeout_s, self.timeout_keep_alive_handler
            )

        def data_received(self, data: bytes) -> None:
            # As uvicorn's, less the line that cancels the timer on every byte received.
            self.conn.receive_data(data)
            self.handle_events()

    return BoundedH11Protocol
