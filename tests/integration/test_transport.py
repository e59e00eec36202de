"""SmtpTransport against a real SMTP server on loopback, and the development outbox."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Literal

import pytest
import trustme

from newsletter.delivery.transport import (
    Envelope,
    OutboxTransport,
    SendReport,
    SmtpTransport,
    Stage,
    list_outbox,
)
from tests.smtpd import SmtpServer

#: Loopback answers in milliseconds; a test that goes wrong should fail fast, not hang.
TIMEOUT_S = 2.0
SENDER = "course@example.org"


def envelope(to: str = "ana@example.org", subject: str = "Where sciatica starts") -> Envelope:
    data = (
        f"From: Spine Health Notes <{SENDER}>\r\n"
        f"To: {to}\r\n"
        f"Subject: {subject}\r\n"
        "Date: Tue, 01 Oct 2024 09:30:00 +0000\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: quoted-printable\r\n"
        "\r\n"
        "Hi Ana,\r\n"
        ".a line that starts with a dot, which SMTP must carry through\r\n"
        "caf=C3=A9\r\n"
    ).encode()
    return Envelope(sender=SENDER, recipient=to, data=data)


class Client:
    """A transport driven from a plain test function. One event loop lives as long as the
    client, as the pool's sessions must; the test flips server switches between sends."""

    def __init__(self, transport: SmtpTransport) -> None:
        self.transport = transport
        self._runner = asyncio.Runner()

    def send(self, envelope: Envelope) -> SendReport:
        return self._runner.run(self.transport.send(envelope))

    def send_all(self, envelopes: list[Envelope]) -> list[SendReport]:
        async def send_together() -> list[SendReport]:
            return await asyncio.gather(*(self.transport.send(e) for e in envelopes))

        return self._runner.run(send_together())

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        with self._runner:
            self._runner.run(self.transport.close())


ClientFactory = Callable[..., Client]


@pytest.fixture
def connect(smtp_server: SmtpServer) -> Iterator[ClientFactory]:
    """Build clients of `smtp_server`; each QUITs its sessions when the test ends."""
    with ExitStack() as clients:

        def connect(
            *,
            tls: Literal["starttls", "implicit", "none"] = "none",
            username: str | None = None,
            password: str | None = None,
            connections: int = 1,
            timeout_s: float = TIMEOUT_S,
            data_timeout_s: float = TIMEOUT_S,
            trust: trustme.CA | None = None,
        ) -> Client:
            transport = SmtpTransport(
                smtp_server.host,
                smtp_server.port,
                tls,
                username,
                password,
                connections,
                timeout_s=timeout_s,
                data_timeout_s=data_timeout_s,
                tls_context=trusting(trust) if trust else None,
                local_hostname="client.test",
            )
            return clients.enter_context(Client(transport))

        yield connect


def trusting(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def failure(report: SendReport) -> tuple[int | None, str | None, Stage | None]:
    return report.code, report.enhanced, report.stage


def test_message_arrives_byte_for_byte(smtp_server: SmtpServer, connect: ClientFactory) -> None:
    message = envelope()

    report = connect().send(message)

    assert report.accepted
    assert (report.code, report.stage) == (250, None)
    # The message ends in CRLF, so aiosmtpd hands over exactly the bytes that were sent.
    assert smtp_server.messages == [(SENDER, ["ana@example.org"], message.data)]


def test_a_hundred_messages_reuse_four_connections(
    smtp_server: SmtpServer, connect: ClientFactory
) -> None:
    messages = [envelope(to=f"reader{n}@example.org") for n in range(100)]

    reports = connect(connections=4).send_all(messages)

    assert all(report.accepted for report in reports)
    assert sorted(received.rcpt_tos[0] for received in smtp_server.messages) == sorted(
        message.recipient for message in messages
    )
    assert smtp_server.connections == 4


def test_unknown_recipient_is_reported_and_the_session_carries_on(
    smtp_server: SmtpServer, connect: ClientFactory
) -> None:
    smtp_server.answer_rcpt("gone@example.org", 550, "5.1.1 No such user")
    client = connect()

    refused = client.send(envelope(to="gone@example.org"))
    sent = client.send(envelope(to="ana@example.org"))

    assert not refused.accepted
    assert failure(refused) == (550, "5.1.1", Stage.RCPT)
    assert refused.message == "5.1.1 No such user"
    assert sent.accepted
    assert [received.rcpt_tos for received in smtp_server.messages] == [["ana@example.org"]]
    assert smtp_server.connections == 1  # RSET, not a new connection


def test_full_mailbox_is_a_4xx_with_its_enhanced_status(
    smtp_server: SmtpServer, connect: ClientFactory
) -> None:
    smtp_server.answer_rcpt(None, 452, "4.2.2 Mailbox full", times=1)
    client = connect()

    full = client.send(envelope())
    sent = client.send(envelope())

    assert failure(full) == (452, "4.2.2", Stage.RCPT)
    assert sent.accepted
    assert smtp_server.connections == 1


def test_refused_sender_is_reported_at_mail(
    smtp_server: SmtpServer, connect: ClientFactory
) -> None:
    smtp_server.answer_mail(553, "5.7.1 Sender address rejected", times=1)
    client = connect()

    refused = client.send(envelope())
    sent = client.send(envelope())

    assert failure(refused) == (553, "5.7.1", Stage.MAIL)
    assert sent.accepted
    assert smtp_server.connections == 1


def test_refused_content_is_reported_at_data(
    smtp_server: SmtpServer, connect: ClientFactory
) -> None:
    smtp_server.answer_data(554, "5.6.0 Message content rejected", times=1)
    client = connect()

    refused = client.send(envelope())
    sent = client.send(envelope())

    assert failure(refused) == (554, "5.6.0", Stage.DATA)
    assert sent.accepted
    assert len(smtp_server.messages) == 1
    assert smtp_server.connections == 1


def test_after_a_421_the_next_send_reconnects(
    smtp_server: SmtpServer, connect: ClientFactory
) -> None:
    smtp_server.answer_rcpt(None, 421, "4.3.2 Service shutting down", times=1)
    client = connect()

    closing = client.send(envelope())
    sent = client.send(envelope())

    assert failure(closing) == (421, "4.3.2", Stage.RCPT)
    assert sent.accepted
    assert smtp_server.connections == 2


def test_connection_dropped_in_data_has_no_reply_and_the_next_send_reconnects(
    smtp_server: SmtpServer, connect: ClientFactory
) -> None:
    smtp_server.drop_in_data()
    client = connect()

    dropped = client.send(envelope())
    sent = client.send(envelope())

    assert failure(dropped) == (None, None, Stage.DATA)
    assert dropped.message  # what went wrong, for the log
    assert sent.accepted
    assert len(smtp_server.messages) == 1
    assert smtp_server.connections == 2


def test_server_down_is_a_connect_failure_until_it_is_up_again(
    smtp_server: SmtpServer, connect: ClientFactory
) -> None:
    client = connect()
    assert client.send(envelope()).accepted  # leaves a session open, which down() cuts

    smtp_server.down()
    refused = client.send(envelope())
    smtp_server.up()
    sent = client.send(envelope())

    assert failure(refused) == (None, None, Stage.CONNECT)
    assert sent.accepted
    assert len(smtp_server.messages) == 2


def test_data_gets_the_long_timeout_and_commands_the_short_one(
    smtp_server: SmtpServer, connect: ClientFactory
) -> None:
    smtp_server.delay_data_s = 0.5

    patient = connect(timeout_s=0.25, data_timeout_s=TIMEOUT_S).send(envelope())
    impatient = connect(data_timeout_s=0.25).send(envelope())

    assert patient.accepted
    assert failure(impatient) == (None, None, Stage.DATA)


@pytest.mark.smtp(tls="starttls")
def test_starttls_with_a_trusted_certificate(
    smtp_server: SmtpServer, connect: ClientFactory
) -> None:
    # The server refuses MAIL before STARTTLS, so an accepted message went over TLS.
    assert connect(tls="starttls", trust=smtp_server.ca).send(envelope()).accepted


@pytest.mark.smtp(tls="starttls")
def test_starttls_refuses_an_unknown_certificate(
    smtp_server: SmtpServer, connect: ClientFactory
) -> None:
    report = connect(tls="starttls", trust=trustme.CA()).send(envelope())

    assert failure(report) == (None, None, Stage.TLS)
    assert "certificate" in report.message.lower()
    assert smtp_server.messages == []


@pytest.mark.smtp(tls="implicit")
def test_implicit_tls_with_a_trusted_certificate(
    smtp_server: SmtpServer, connect: ClientFactory
) -> None:
    assert connect(tls="implicit", trust=smtp_server.ca).send(envelope()).accepted


@pytest.mark.smtp(tls="starttls", require_auth=("course", "s3cret"))
def test_login_with_the_right_password(smtp_server: SmtpServer, connect: ClientFactory) -> None:
    client = connect(tls="starttls", trust=smtp_server.ca, username="course", password="s3cret")

    assert client.send(envelope()).accepted
    assert len(smtp_server.messages) == 1


@pytest.mark.smtp(tls="starttls", require_auth=("course", "s3cret"))
def test_login_with_a_wrong_password_is_refused_at_auth(
    smtp_server: SmtpServer, connect: ClientFactory
) -> None:
    client = connect(tls="starttls", trust=smtp_server.ca, username="course", password="wrong")

    report = client.send(envelope())

    assert failure(report) == (535, "5.7.8", Stage.AUTH)
    assert smtp_server.messages == []


@pytest.mark.smtp(tls="starttls", require_auth=("course", "s3cret"))
def test_sessions_cut_by_a_restart_reconnect_without_a_failed_send(
    smtp_server: SmtpServer, connect: ClientFactory
) -> None:
    client = connect(
        tls="starttls", trust=smtp_server.ca, username="course", password="s3cret", connections=3
    )
    before = client.send_all([envelope() for _ in range(6)])

    smtp_server.down()
    smtp_server.up()
    after = client.send_all([envelope() for _ in range(6)])

    assert all(report.accepted for report in before + after)
    assert smtp_server.connections == 6


def test_outbox_saves_each_message_as_delivered_and_lists_them(tmp_path: Path) -> None:
    folder = tmp_path / "outbox"
    outbox = OutboxTransport(folder)
    first = envelope(to="ana@example.org", subject="Lesson one")
    second = envelope(to="ben@example.org", subject="Lesson two")

    async def send_both() -> list[SendReport]:
        return [await outbox.send(first), await outbox.send(second)]

    reports = asyncio.run(send_both())

    assert all(report.accepted for report in reports)
    entries = list_outbox(folder)
    assert [(entry.to, entry.subject) for entry in entries] == [
        ("ana@example.org", "Lesson one"),
        ("ben@example.org", "Lesson two"),
    ]
    # As a mailbox gets it: a Return-Path naming the envelope sender, then the message.
    assert [entry.path.read_bytes() for entry in entries] == [
        f"Return-Path: <{sent.sender}>\r\n".encode() + sent.data for sent in (first, second)
    ]
    assert entries[0].date == datetime(2024, 10, 1, 9, 30, tzinfo=UTC)
    assert sorted(path.suffix for path in folder.iterdir()) == [".eml", ".eml"]


def test_an_outbox_never_written_lists_nothing(tmp_path: Path) -> None:
    assert list_outbox(tmp_path / "outbox") == []
