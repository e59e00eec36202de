"""The port every message leaves through, and its two adapters: an SMTP relay and a folder.

`Transport.send()` answers with a `SendReport` for every SMTP or network failure instead of
raising, so the caller can hand each report to `retry.decide()`. It still raises
`ValueError` for an address that cannot go on an SMTP command line (a space, CR, LF, <>).

DATA sends each message's bytes as `Envelope.payload()` gives them: settled (CRLF) and
dot-stuffed once, where the message was built (newsletter/wire.py), and not again by
aiosmtplib on every send. Everything else of the conversation is aiosmtplib's.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from enum import StrEnum
from functools import partial
from itertools import count
from pathlib import Path
from typing import Literal, Protocol

from aiosmtplib import (
    SMTP,
    SMTPDataError,
    SMTPException,
    SMTPResponse,
    SMTPResponseException,
    SMTPServerDisconnected,
    SMTPStatus,
    SMTPTimeoutError,
)

from newsletter.wire import Prepared, prepare


@dataclass(frozen=True, slots=True)
class Envelope:
    sender: str  #: MAIL FROM
    recipient: str  #: RCPT TO; one recipient per message
    data: bytes  #: the complete RFC 5322 message, already rendered, CRLF line ends
    #: `data` settled for DATA where it was built (Envelope.of); it counts only while it
    #: is of this very `data`, so an envelope copied with other data is settled afresh.
    prepared: Prepared | None = field(default=None, repr=False, compare=False)

    @classmethod
    def of(cls, sender: str, recipient: str, prepared: Prepared) -> Envelope:
        return cls(sender, recipient, prepared.message, prepared)

    def settled(self) -> Prepared:
        """`data` settled for DATA: `prepared` when it is of this `data`, else made now."""
        prepared = self.prepared
        if prepared is None or prepared.message is not self.data:
            return prepare(self.data)
        return prepared

    def payload(self) -> bytes:
        """What DATA sends before its final ".": `data` with CRLF line ends only, ending
        with CRLF, and dot-stuffed, as aiosmtplib's SMTP.data() would send it."""
        return self.settled().stuffed


class Stage(StrEnum):
    """Where in the SMTP conversation a send failed."""

    CONNECT = "connect"
    HELO = "helo"
    TLS = "tls"
    AUTH = "auth"
    MAIL = "mail"
    RCPT = "rcpt"
    DATA = "data"


@dataclass(frozen=True, slots=True)
class SendReport:
    accepted: bool
    code: int | None  #: SMTP reply code; None when no reply came (refused, dropped, timed out)
    enhanced: str | None  #: RFC 3463 enhanced status such as "5.1.1", read from the reply
    message: str  #: the reply text or the error, on one line
    stage: Stage | None  #: None when accepted
    #: No usable reply: the connection was refused, cut or timed out, or the relay
    #: answered garbage (rather than, say, a relay that does not offer AUTH at all).
    dropped: bool = False

    def __str__(self) -> str:
        """One line for logs and retry reasons, e.g. "RCPT: 550 5.1.1 No such user"."""
        reply = f"{self.code} {self.message}" if self.code is not None else self.message
        return reply if self.stage is None else f"{self.stage.upper()}: {reply}"


class Transport(Protocol):
    async def send(self, envelope: Envelope) -> SendReport:
        """Deliver one message; SMTP and network failures come back as a report."""
        ...

    async def close(self) -> None: ...


# RFC 3463 §2: class.subject.detail at the start of the reply text.
_ENHANCED_STATUS = re.compile(r"[245]\.\d{1,3}\.\d{1,3}(?=\s|$)")


def _report(
    stage: Stage | None, code: int | None, text: str, *, dropped: bool = False
) -> SendReport:
    """A reply `code` (None: none came) with its text; `stage` None means accepted."""
    message = " ".join(text.split())
    found = _ENHANCED_STATUS.match(message) if code is not None else None
    return SendReport(
        accepted=stage is None,
        code=code,
        enhanced=found.group() if found else None,
        message=message,
        stage=stage,
        dropped=dropped,
    )


_Step = tuple[Stage, Callable[[], Awaitable[SMTPResponse]]]

#: Failures of these stages leave a session that must not carry mail: it is dropped.
_OPENING_STAGES = frozenset({Stage.CONNECT, Stage.HELO, Stage.TLS, Stage.AUTH})


class SmtpTransport:
    """Sends through one relay, reusing up to `connections` SMTP sessions across messages.

    Timeouts follow RFC 5321 §4.5.3.2 in spirit: `timeout_s` bounds connecting and every
    command; `data_timeout_s` bounds DATA, whose final reply can take minutes while the relay
    scans the message. (aiosmtplib gives DATA one timeout for both its 354 and its final
    reply, so the 354 wait gets the long one too.)
    """

    def __init__(
        self,
        host: str,
        port: int,
        tls: Literal["starttls", "implicit", "none"],
        username: str | None,
        password: str | None,
        connections: int,
        *,
        timeout_s: float = 60,
        data_timeout_s: float = 600,
        tls_context: ssl.SSLContext | None = None,
        local_hostname: str | None = None,
    ) -> None:
        if connections < 1:
            raise ValueError(f"connections must be at least 1, got {connections}")
        self._starttls = tls == "starttls"
        self._credentials = (username, password or "") if username else None
        self._data_timeout_s = data_timeout_s
        self._clients = tuple(
            SMTP(
                hostname=host,
                port=port,
                use_tls=tls == "implicit",
                start_tls=False,  # we run STARTTLS ourselves, to know the stage that failed
                timeout=timeout_s,
                tls_context=tls_context,
                local_hostname=local_hostname,
            )
            for _ in range(connections)
        )
        # The idle sessions; each connects on its first message, not here.
        self._idle: asyncio.Queue[SMTP] = asyncio.Queue()
        for client in self._clients:
            self._idle.put_nowait(client)

    async def send(self, envelope: Envelope) -> SendReport:
        client = await self._idle.get()
        try:
            return await self._send_on(client, envelope)
        except BaseException:
            # Cancelled, or a bad address, half-way through: the session is out of step.
            _hang_up(client)
            raise
        finally:
            self._idle.put_nowait(client)

    async def close(self) -> None:
        await asyncio.gather(*(_quit(client) for client in self._clients))
        # Aborted sockets are released on the loop's next turn: take it here, so that a
        # caller who ends the loop right after leaves none open.
        await asyncio.sleep(0)

    async def _send_on(self, client: SMTP, envelope: Envelope) -> SendReport:
        if client.is_connected:
            report = await self._run(client, self._transaction_steps(client, envelope))
            # An idle session can die unnoticed (the relay's idle timeout, a restart) until
            # MAIL finds it dead; a fresh connection then sends now, not at the next retry.
            if not (report.code is None and report.stage is Stage.MAIL):
                return report
        steps = self._opening_steps(client) + self._transaction_steps(client, envelope)
        return await self._run(client, steps)

    def _opening_steps(self, client: SMTP) -> list[_Step]:
        steps: list[_Step] = [(Stage.CONNECT, client.connect), (Stage.HELO, client.ehlo)]
        if self._starttls:
            # RFC 3207 §4.2: what EHLO said before TLS is void; ask again.
            steps += [(Stage.TLS, client.starttls), (Stage.HELO, client.ehlo)]
        if self._credentials:
            steps.append((Stage.AUTH, partial(client.login, *self._credentials)))
        return steps

    def _transaction_steps(self, client: SMTP, envelope: Envelope) -> list[_Step]:
        # mail/rcpt/data rather than sendmail(): each failure then names its stage, and
        # DATA gets its own, longer timeout.
        return [
            (Stage.MAIL, partial(_mail_from, client, envelope)),
            (Stage.RCPT, partial(client.rcpt, envelope.recipient)),
            (Stage.DATA, partial(_data, client, envelope.payload(), self._data_timeout_s)),
        ]

    async def _run(self, client: SMTP, steps: list[_Step]) -> SendReport:
        for stage, step in steps:
            try:
                reply = await step()
            except (SMTPException, OSError) as failure:
                return await _failed(client, stage, failure)
        return _report(None, reply.code, reply.message)


async def _mail_from(client: SMTP, envelope: Envelope) -> SMTPResponse:
    # RFC 1870: announcing the size lets the relay refuse a message too big before the body.
    options = [f"SIZE={len(envelope.data)}"] if client.supports_extension("size") else []
    return await client.mail(envelope.sender, options=options)


_END_OF_DATA = b".\r\n"


async def _data(client: SMTP, payload: bytes, timeout: float) -> SMTPResponse:
    """SMTP.data() for a payload already settled and dot-stuffed (Envelope.payload): the
    same exchange over the same protocol, its reply parsing, errors and timeouts, without
    aiosmtplib's two passes over the message (normalising line ends, then stuffing)."""
    protocol = client.protocol
    if protocol is None:
        raise SMTPServerDisconnected("Connection lost")
    # The lock every aiosmtplib command takes on this connection: nothing else (a QUIT
    # from close()) can come between DATA, the message and the reply, as in SMTP.data().
    lock = protocol._command_lock
    try:
        if lock is None:
            raise SMTPServerDisconnected("Server not connected")
        async with lock:
            # read_response() marks a reply as awaited before it yields to the loop, so
            # nothing the relay says after write() can be missed.
            protocol.write(b"DATA\r\n")
            start = await protocol.read_response(timeout=timeout)
            if start.code != SMTPStatus.start_input:
                raise SMTPDataError(start.code, start.message)
            protocol.write(payload + _END_OF_DATA)
            reply = await protocol.read_response(timeout=timeout)
            if reply.code != SMTPStatus.completed:
                raise SMTPDataError(reply.code, reply.message)
    except (SMTPServerDisconnected, SMTPTimeoutError):
        client.close()  # as SMTP.data() does: the session is gone or out of step
        raise
    return reply


async def _failed(client: SMTP, stage: Stage, failure: Exception) -> SendReport:
    if isinstance(failure, SMTPResponseException) and failure.code != SMTPStatus.invalid_response:
        await _recover(client, stage)
        return _report(stage, failure.code, failure.message)
    _hang_up(client)  # no reply, or garbage for one: the session is gone or out of step
    # aiosmtplib's connect, timeout and disconnect errors are OSErrors, as TLS errors are.
    dropped = isinstance(failure, (OSError, SMTPResponseException))
    return _report(stage, None, str(failure) or type(failure).__name__, dropped=dropped)


async def _recover(client: SMTP, stage: Stage) -> None:
    """After a refusal, RSET so the session can carry the next message, or drop it."""
    if stage in _OPENING_STAGES or not client.is_connected:
        _hang_up(client)
        return
    try:
        await client.rset()
    except (SMTPException, OSError):
        _hang_up(client)


#: QUIT is a courtesy: a relay that does not answer it soon is hung up on, so that a stop
#: is never held up for a whole command timeout.
QUIT_TIMEOUT_S = 2.0


async def _quit(client: SMTP) -> None:
    if client.is_connected:
        with contextlib.suppress(SMTPException, OSError):
            await client.execute_command(b"QUIT", timeout=QUIT_TIMEOUT_S)
    _hang_up(client)


def _hang_up(client: SMTP) -> None:
    """Drop the connection at once. After QUIT, or on a session given up, nothing is left to
    say, so no TLS goodbye either: waiting for the relay's close_notify could outlive the
    event loop and leak the socket."""
    if isinstance(client.transport, asyncio.WriteTransport):
        client.transport.abort()
    client.close()


class OutboxTransport:
    """The development outbox: each message is saved as a .eml file, as a mailbox would get
    it: the message byte for byte, after a Return-Path header naming its envelope sender."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._sequence = count(1)

    async def send(self, envelope: Envelope) -> SendReport:
        # Microseconds plus a per-process sequence keep names unique and in sending order.
        name = f"{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}-{next(self._sequence):06d}.eml"
        delivered = f"Return-Path: <{envelope.sender}>\r\n".encode() + envelope.data
        await asyncio.to_thread(self._save, name, delivered)
        return SendReport(
            accepted=True, code=None, enhanced=None, message=f"saved as {name}", stage=None
        )

    async def close(self) -> None:
        pass

    def _save(self, name: str, data: bytes) -> None:
        self._folder.mkdir(parents=True, exist_ok=True)
        final = self._folder / name
        incomplete = final.with_suffix(".tmp")
        incomplete.write_bytes(data)
        # A reader never sees half a message: the .eml name appears only once it is whole.
        os.replace(incomplete, final)


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    path: Path
    date: datetime | None  #: from the Date header; None when missing or unreadable
    to: str
    subject: str


def list_outbox(folder: Path) -> list[OutboxEntry]:
    """The saved messages, oldest first, read from their headers only."""
    if not folder.is_dir():
        return []
    return [_read_entry(path) for path in sorted(folder.glob("*.eml"))]


def _read_entry(path: Path) -> OutboxEntry:
    with path.open("rb") as file:
        headers = BytesHeaderParser(policy=default_policy).parse(file)
    date = headers["date"]
    return OutboxEntry(
        path=path,
        date=date.datetime if date is not None else None,
        to=str(headers["to"] or ""),
        subject=str(headers["subject"] or ""),
    )
