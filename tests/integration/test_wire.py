"""Bytes settled once (newsletter/wire.py) and sent by the transport's own DATA arrive at a
real SMTP server as aiosmtplib's own DATA delivers them, and DKIM signatures over them hold."""

from __future__ import annotations

import asyncio

import pytest
from aiosmtplib import SMTP

from newsletter.delivery.transport import Envelope, SmtpTransport
from newsletter.dkim import DkimSigner, generate_private_key
from newsletter.wire import prepare
from tests.dkim_verifiers import dkimpy_verifies, mail_dkim_result
from tests.smtpd import SmtpServer

SENDER = "course@example.org"
TO = "ana@example.org"
SELECTOR = "s2026"
DOMAIN = "example.org"
TIMEOUT_S = 5.0

#: Every shape DATA has to settle or stuff: lone LFs and CRs (in the header block too), a
#: CR before a CRLF, lines that start with one dot or two, a line that is only a dot (even
#: right after a lone CR or LF), lines of 998 octets (one of them after its stuffed dot),
#: and no line end at the very end.
MESSY = b"".join(
    [
        b"From: Spine Health Notes <course@example.org>\r\n",
        b"To: ana@example.org\n",
        b"Subject: lone ends\r",
        b"Date: Tue, 01 Oct 2024 09:30:00 +0000\r\n",
        b"Message-ID: <messy@example.org>\r\n",
        b"Content-Type: text/plain; charset=us-ascii\r\n",
        b"\r\n",
        b"a lone LF\nand a lone CR\rand a CR before CRLF\r\r\n",
        b".one dot\r\n..two dots\n.\r\n",
        b".\n.\r.\r\n",
        b"x" * 998 + b"\r\n",
        b"." + b"y" * 997 + b"\n",
        b"\n\r\n\r",
        b"last line, no line end, then a dot:\r\n.",
    ]
)


async def _send_with_transport(server: SmtpServer, envelopes: list[Envelope]) -> None:
    transport = SmtpTransport(server.host, server.port, "none", None, None, 1, timeout_s=TIMEOUT_S)
    try:
        for envelope in envelopes:
            report = await transport.send(envelope)
            assert report.accepted, report
    finally:
        await transport.close()


async def _send_with_aiosmtplib(server: SmtpServer, data: bytes) -> None:
    client = SMTP(hostname=server.host, port=server.port, timeout=TIMEOUT_S)
    await client.connect()
    try:
        refused, _ = await client.sendmail(SENDER, [TO], data)
        assert not refused
    finally:
        await client.quit()


def test_messy_bytes_arrive_as_aiosmtplib_delivers_them(smtp_server: SmtpServer) -> None:
    asyncio.run(_send_with_aiosmtplib(smtp_server, MESSY))
    asyncio.run(
        _send_with_transport(
            smtp_server,
            [
                Envelope(SENDER, TO, MESSY),  # settled by the transport
                Envelope.of(SENDER, TO, prepare(MESSY)),  # settled before
            ],
        )
    )

    plain, unprepared, prepared = (received.data for received in smtp_server.messages)
    assert unprepared == plain
    assert prepared == plain
    # What the server keeps is the settled message, every line end a CRLF...
    assert plain == prepare(MESSY).message
    assert b"\n" not in plain.replace(b"\r\n", b"")
    assert b"\r" not in plain.replace(b"\r\n", b"")
    # ... with its dots unstuffed again: the lone-dot lines and the 998-octet lines intact.
    assert b"\r\n.\r\n.\r\n.\r\n" in plain
    assert b"\r\n" + b"x" * 998 + b"\r\n." + b"y" * 997 + b"\r\n" in plain
    assert plain.endswith(b"then a dot:\r\n.\r\n")


def test_a_signed_messy_message_verifies_as_received(smtp_server: SmtpServer) -> None:
    key = generate_private_key()
    signer = DkimSigner(DOMAIN, SELECTOR, key)
    settled = prepare(MESSY)
    signed = settled.with_field(signer.signature_field(settled.message))

    asyncio.run(_send_with_transport(smtp_server, [Envelope.of(SENDER, TO, signed)]))
    asyncio.run(_send_with_aiosmtplib(smtp_server, signed.message))

    ours, plain = (received.data for received in smtp_server.messages)
    assert ours == plain == signed.message
    assert dkimpy_verifies(ours, key, SELECTOR, DOMAIN)
    assert mail_dkim_result(ours, key, SELECTOR, DOMAIN) == "pass"


@pytest.mark.parametrize("data", [b"", b".", b"\r\n.\r\n"])
def test_degenerate_messages_arrive_as_aiosmtplib_delivers_them(
    smtp_server: SmtpServer, data: bytes
) -> None:
    asyncio.run(_send_with_aiosmtplib(smtp_server, data))
    asyncio.run(_send_with_transport(smtp_server, [Envelope(SENDER, TO, data)]))

    plain, ours = (received.data for received in smtp_server.messages)
    assert ours == plain
