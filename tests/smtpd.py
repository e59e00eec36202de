"""A real SMTP server for tests: aiosmtpd's Controller on a free loopback port, in a thread
of its own, with switches a test may flip at any time to make it answer like a relay in
trouble.

    with SmtpServer() as server:
        server.answer_rcpt("gone@example.org", 550, "5.1.1 No such user")
        ...  # send, then look at server.messages and server.connections

Scripted answers are used newest first; `times=None` keeps one for good. A 2xx answer is
an acceptance with that text. As on real submission ports, AUTH is offered only over TLS.
`size_limit` advertises SIZE and refuses bigger messages at MAIL FROM, as Postfix's
message_size_limit does; `on_message` is called (in the server's thread) with each message
accepted, before the client hears the 250.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, NamedTuple

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import (
    DATA_SIZE_DEFAULT,
    SMTP,
    AuthResult,
    Envelope,
    LoginPassword,
    Session,
)

HOST = "127.0.0.1"
OK = "250 OK"


class Received(NamedTuple):
    mail_from: str
    rcpt_tos: list[str]
    data: bytes


@dataclass
class _Answer:
    reply: str
    times: int | None  #: None: every time from now on
    address: str | None = None  #: RCPT only; None answers for every recipient


class _Script:
    """The scripted answers to one command. The test thread adds, the server thread takes."""

    def __init__(self) -> None:
        self._answers: list[_Answer] = []
        self._lock = threading.Lock()

    def add(self, code: int, text: str, times: int | None, address: str | None = None) -> None:
        with self._lock:
            self._answers.append(_Answer(f"{code} {text}", times, address))

    def clear(self) -> None:
        with self._lock:
            self._answers.clear()

    def take(self, address: str | None = None) -> str | None:
        with self._lock:
            for answer in reversed(self._answers):
                if answer.address in (None, address):
                    if answer.times is not None:
                        answer.times -= 1
                        if answer.times == 0:
                            self._answers.remove(answer)
                    return answer.reply
        return None


class SmtpServer:
    def __init__(
        self,
        *,
        tls: Literal["starttls", "implicit"] | None = None,
        require_auth: tuple[str, str] | None = None,
        size_limit: int | None = None,
    ) -> None:
        self.host = HOST
        self.port = _free_port()
        #: Trust it with `ca.configure_trust(context)` to talk TLS to this server.
        self.ca = trustme.CA()
        self.messages: list[Received] = []
        #: Connections accepted, to show that a client reuses its sessions.
        self.connections = 0
        #: Seconds to sit on a received message before answering it.
        self.delay_data_s = 0.0
        self.tls = tls
        self.require_auth = require_auth
        self.size_limit = size_limit
        self.on_message: Callable[[Received], None] | None = None
        self._greeting, self._mail = _Script(), _Script()
        self._rcpt, self._data = _Script(), _Script()
        self._drops_left = 0
        self._lock = threading.Lock()
        self._controller: _Controller | None = None

    # --- switches ------------------------------------------------------------------------

    def greet(self, line: str, times: int | None = None) -> None:
        """Open connections with this line instead of the 220 greeting, then hang up: a relay
        saying 421 (busy), or answering garbage."""
        self._greeting.add(0, line, times)

    def greet_normally(self) -> None:
        """Back to the 220 greeting."""
        self._greeting.clear()

    def greeting(self) -> str | None:
        reply = self._greeting.take()
        return reply.removeprefix("0 ") if reply is not None else None

    def answer_mail(self, code: int, text: str, times: int | None = None) -> None:
        self._mail.add(code, text, times)

    def answer_rcpt(
        self, address: str | None, code: int, text: str, times: int | None = None
    ) -> None:
        self._rcpt.add(code, text, times, address)

    def answer_data(
        self, code: int, text: str, times: int | None = None, address: str | None = None
    ) -> None:
        """The answer after the message has arrived (the final "." reply); `address`: only
        for a message to that recipient."""
        self._data.add(code, text, times, address)

    def drop_in_data(self, times: int = 1) -> None:
        """Hang up in the middle of the message, after its first line, without a reply."""
        with self._lock:
            self._drops_left += times

    def down(self) -> None:
        """Stop listening and cut every connection: connecting is refused until up()."""
        assert self._controller is not None, "the server is already down"
        self._controller.stop()
        self._controller = None

    def up(self) -> None:
        """Listen again, on the same port."""
        assert self._controller is None, "the server is already up"
        self._controller = _Controller(self)
        self._controller.start()
        with self._lock:
            # start() opens a connection of its own to see that the server answers.
            self.connections -= 1

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        self.up()

    def stop(self) -> None:
        if self._controller is not None:
            self.down()

    def __enter__(self) -> SmtpServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # --- called by aiosmtpd, in the server's thread -------------------------------------

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        reply = self._mail.take() or OK
        if _accepts(reply):
            envelope.mail_from = address
            envelope.mail_options.extend(mail_options)
        return _closing_after_421(server, reply)

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        reply = self._rcpt.take(address) or OK
        if _accepts(reply):
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(rcpt_options)
        return _closing_after_421(server, reply)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        await asyncio.sleep(self.delay_data_s)
        reply = self._data.take(envelope.rcpt_tos[0] if envelope.rcpt_tos else None) or OK
        if _accepts(reply):
            assert envelope.mail_from is not None
            assert envelope.original_content is not None
            received = Received(
                envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content
            )
            if self.on_message is not None:
                self.on_message(received)
            self.messages.append(received)
        return _closing_after_421(server, reply)

    def count_connection(self) -> None:
        with self._lock:
            self.connections += 1

    def take_drop(self) -> bool:
        with self._lock:
            if not self._drops_left:
                return False
            self._drops_left -= 1
            return True

    def authenticate(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        mechanism: str,
        login: LoginPassword,
    ) -> AuthResult:
        expected = tuple(part.encode() for part in self.require_auth or ())
        # handled=False: aiosmtpd then answers a failure with 535 5.7.8 itself.
        return AuthResult(success=(login.login, login.password) == expected, handled=False)


class _Controller(Controller):
    def __init__(self, server: SmtpServer) -> None:
        tls_context = _server_context(server.ca) if server.tls else None
        super().__init__(
            server,
            hostname=server.host,
            port=server.port,
            server_hostname="smtp.test",
            ssl_context=tls_context if server.tls == "implicit" else None,
            tls_context=tls_context if server.tls == "starttls" else None,
            require_starttls=server.tls == "starttls",
            auth_required=server.require_auth is not None,
            authenticator=server.authenticate,
            data_size_limit=server.size_limit or DATA_SIZE_DEFAULT,
        )
        self._open: weakref.WeakSet[_Connection] = weakref.WeakSet()

    def factory(self) -> SMTP:
        self.handler.count_connection()
        connection = _Connection(self.handler, **self.SMTP_kwargs)
        self._open.add(connection)
        return connection

    def stop(self, no_assert: bool = False) -> None:
        # Controller.stop() ends the loop too soon for a TLS connection to finish closing,
        # which would leak its socket: abort every connection first.
        asyncio.run_coroutine_threadsafe(self._abort_connections(), self.loop).result()
        super().stop(no_assert)

    async def _abort_connections(self) -> None:
        for connection in list(self._open):
            if connection.transport is not None:
                connection.transport.abort()
        await asyncio.sleep(0)  # aborted sockets close on the loop's next turn


class _Connection(SMTP):
    """aiosmtpd's server side of one connection, able to greet with something else than 220
    and to hang up in the middle of DATA."""

    async def _handle_client(self) -> None:
        greeting = self.event_handler.greeting()
        if greeting is None:
            await super()._handle_client()
            return
        assert self.transport is not None
        self.transport.write(greeting.encode() + b"\r\n")
        self.transport.close()

    async def smtp_DATA(self, arg: str) -> None:
        if not self.event_handler.take_drop():
            await super().smtp_DATA(arg)
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        await self._reader.readuntil(b"\r\n")
        assert self.transport is not None
        self.transport.close()


def _accepts(reply: str) -> bool:
    return reply.startswith("2")


def _closing_after_421(server: SMTP, reply: str) -> str:
    # RFC 5321 §3.8: a server that answers 421 closes the connection after that reply.
    if reply.startswith("421"):
        assert server.transport is not None
        server.loop.call_soon(server.transport.close)
    return reply


def _server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(HOST).configure_cert(context)
    return context


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port
