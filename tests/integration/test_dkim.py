"""With [dkim] on, every message a worker sends arrives signed: after the real SMTP server,
dkimpy and Perl's Mail::DKIM, written apart from each other, both accept the signature,
and both reject it once the body or a signed header has been changed."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from newsletter.config import DkimSettings, Settings
from newsletter.db import queries
from newsletter.db.models import SubscriberStatus
from newsletter.dkim import generate_private_key
from newsletter.subscribers import NewSubscriber, add_subscriber
from tests.conftest import REPO
from tests.dkim_verifiers import dkimpy_verifies, mail_dkim_result
from tests.integration.harness import Stack, run, settings_for, shipped_course
from tests.smtpd import SmtpServer

START = datetime(2026, 6, 9, 9, 0, tzinfo=UTC)
SELECTOR = "s2026"
DOMAIN = "example.org"  #: sender.address in config.toml is course@example.org


@pytest.fixture(scope="module")
def key() -> bytes:
    return generate_private_key()


def signing(settings: Settings, tmp_path: Path, key: bytes) -> Settings:
    path = tmp_path / f"{SELECTOR}.pem"
    path.write_bytes(key)
    dkim = DkimSettings(domain=DOMAIN, selector=SELECTOR, key_path=path, feedback_id="spine")
    return settings_for(settings, tmp_path).model_copy(update={"dkim": dkim})


def received_bytes(settings: Settings, server: SmtpServer) -> list[bytes]:
    """What the server received: a welcome lesson to Ana and a confirmation to Ben."""

    async def scenario() -> list[bytes]:
        stack = await Stack.start(settings, server, START)
        try:
            sequence = await stack.queue(shipped_course(REPO))
            await stack.subscribe("ana@example.com", name="Ana", sequence_id=sequence)
            async with stack.sessions.begin() as session:
                ben, _ = await add_subscriber(
                    session,
                    NewSubscriber.parse("ben@example.com", "Ben"),
                    status=SubscriberStatus.PENDING,
                    consent={"form": "test"},
                    now=stack.clock.now(),
                )
                await queries.queue_confirmation(
                    session, ben.id, sequence, "<confirm-1@example.org>", stack.clock.now()
                )
            await stack.run()
        finally:
            await stack.close()
        return [data for _, _, data in sorted(server.messages, key=lambda m: m.rcpt_tos)]

    return list(run(scenario()))


def test_a_lesson_and_a_confirmation_arrive_signed_and_both_verifiers_accept_them(
    settings: Settings, tmp_path: Path, smtp_server: SmtpServer, key: bytes
) -> None:
    lesson, confirmation = received_bytes(signing(settings, tmp_path, key), smtp_server)

    for message in (lesson, confirmation):
        assert message.startswith(b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/simple;")
        assert message.count(b"DKIM-Signature:") == 1  # signed once, after rendering
        assert dkimpy_verifies(message, key, SELECTOR, DOMAIN)
        assert mail_dkim_result(message, key, SELECTOR, DOMAIN) == "pass"
    assert b"\r\nFeedback-ID: leg-weakness-after-microdiscectomy:lesson:" in lesson
    assert b"\r\nFeedback-ID: leg-weakness-after-microdiscectomy:confirmation:" in confirmation


def test_without_dkim_settings_messages_leave_unsigned(
    settings: Settings, tmp_path: Path, smtp_server: SmtpServer
) -> None:
    messages = received_bytes(settings_for(settings, tmp_path), smtp_server)

    assert len(messages) == 2
    assert not any(b"DKIM-Signature:" in message for message in messages)


def _tampered_body(message: bytes) -> bytes:
    head, blank, body = message.partition(b"\r\n\r\n")
    changed = body.replace(b"\r\nAna=\r\n", b"\r\nEve=\r\n", 1)
    assert changed != body
    return head + blank + changed


def _tampered_subject(message: bytes) -> bytes:
    changed = message.replace(b"\r\nSubject: ", b"\r\nSubject: Urgent: ", 1)
    assert changed != message
    return changed


def _tampered_unsubscribe(message: bytes) -> bytes:
    changed = message.replace(b"List-Unsubscribe: <", b"List-Unsubscribe: <https://x.example/>,<")
    assert changed != message
    return changed


def _added_from(message: bytes) -> bytes:
    # Over-signing From is what makes this fail: a verifier would otherwise not look at it.
    changed = message.replace(b"\r\nFrom: ", b"\r\nFrom: Bank <pay@bank.example>\r\nFrom: ", 1)
    assert changed != message
    return changed


@pytest.mark.parametrize(
    "tamper",
    [_tampered_body, _tampered_subject, _tampered_unsubscribe, _added_from],
    ids=["a name in the body", "the subject", "the unsubscribe link", "a second From"],
)
def test_a_message_changed_after_signing_fails_both_verifiers(
    settings: Settings,
    tmp_path: Path,
    smtp_server: SmtpServer,
    key: bytes,
    tamper: Callable[[bytes], bytes],
) -> None:
    lesson, _ = received_bytes(signing(settings, tmp_path, key), smtp_server)

    tampered = tamper(lesson)

    assert not dkimpy_verifies(tampered, key, SELECTOR, DOMAIN)
    assert mail_dkim_result(tampered, key, SELECTOR, DOMAIN).startswith("fail")
