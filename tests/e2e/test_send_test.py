"""`newsletter send-test`: a writer's test email reaches the relay at once, marked as a
test, is recorded nowhere, and its links act on no subscriber."""

from __future__ import annotations

import re
import sqlite3
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

from newsletter.delivery.transport import list_outbox
from tests.conftest import COURSE_SLUG
from tests.e2e.conftest import ok
from tests.smtpd import SmtpServer


def relay_of(server: SmtpServer) -> dict[str, str]:
    return {
        "NEWSLETTER_SMTP__HOST": server.host,
        "NEWSLETTER_SMTP__PORT": str(server.port),
        "NEWSLETTER_SMTP__TLS": "none",
        "NEWSLETTER_SMTP__ALLOW_HTTP_LINKS": "true",  # a local test relay
    }


def rows(tmp_path: Path, table: str) -> int:
    with sqlite3.connect(tmp_path / "newsletter.db") as db:
        count: int = db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        return count


def test_a_queued_lesson_reaches_the_relay_marked_as_a_test_and_is_not_recorded(
    admin, tmp_path, smtp_server: SmtpServer
):
    ok(admin("sequences", "queue", f"lessons/{COURSE_SLUG}"))
    ok(admin("subscribers", "add", "ana@example.com", "--name", "Ana"))

    result = admin(
        "send-test", COURSE_SLUG, "the-cause", "--to", "Ana@Example.com", "--name", "Ana",
        **relay_of(smtp_server),
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert f"Sent a test of lesson 2 (the-cause) from {COURSE_SLUG} version 1" in result.stdout
    [(_, rcpts, data)] = smtp_server.messages
    assert rcpts == ["ana@example.com"]
    message = message_from_bytes(data, policy=policy.default)
    assert isinstance(message, EmailMessage)
    assert message["Subject"] == "[test] Where sciatica often starts"
    assert message["To"] == "Ana <ana@example.com>"
    # Signed for subscriber 0, who does not exist: clicking it unsubscribes nobody.
    assert re.search(r"/unsubscribe/0(-\d+)?\.", message["List-Unsubscribe"])
    assert "Hi Ana," in message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert rows(tmp_path, "deliveries") == 0
    shown = ok(admin("subscribers", "show", "ana@example.com"))
    assert "confirmed" in shown


def test_a_course_folder_can_be_tested_before_it_is_queued(admin, tmp_path):
    result = admin("send-test", f"lessons/{COURSE_SLUG}", "confirm", "--to", "bo@example.com")

    assert result.returncode == 0, result.stderr
    [entry] = list_outbox(tmp_path / "var" / "outbox")
    assert entry.subject == "[test] Please confirm your subscription"
    assert entry.to == "bo@example.com"
    assert re.search(r"/confirm/0(-\d+)?\.", entry.path.read_text())
    assert rows(tmp_path, "sequences") == 0  # the real database was only read
    assert rows(tmp_path, "deliveries") == 0


def test_a_slug_that_is_not_queued_says_how_to_test_its_files(admin):
    result = admin("send-test", COURSE_SLUG, "1", "--to", "bo@example.com")
    assert result.returncode == 1
    assert f"no queued course '{COURSE_SLUG}'" in result.stderr
    assert f"newsletter send-test lessons/{COURSE_SLUG}" in result.stderr


def test_a_suppressed_address_is_refused_unless_forced(admin, tmp_path, smtp_server: SmtpServer):
    ok(admin("sequences", "queue", f"lessons/{COURSE_SLUG}"))
    with sqlite3.connect(tmp_path / "newsletter.db") as db:
        db.execute(
            "INSERT INTO suppressions (email, reason, detail, created_at) "
            "VALUES ('gone@example.com', 'bounce', '550 5.1.1', '2026-01-01 00:00:00')"
        )

    refused = admin(
        "send-test", COURSE_SLUG, "1", "--to", "gone@example.com", **relay_of(smtp_server)
    )
    assert refused.returncode == 1
    [line] = refused.stderr.strip().splitlines()
    assert line.startswith("error: gone@example.com is on the suppression list")
    assert "--force" in line
    assert smtp_server.messages == []

    forced = admin(
        "send-test", COURSE_SLUG, "1", "--to", "gone@example.com", "--force",
        **relay_of(smtp_server),
    )  # fmt: skip
    assert forced.returncode == 0, forced.stderr
    assert len(smtp_server.messages) == 1
    assert rows(tmp_path, "deliveries") == 0


def test_a_refusal_by_the_relay_is_an_error(admin, smtp_server: SmtpServer):
    ok(admin("sequences", "queue", f"lessons/{COURSE_SLUG}"))
    smtp_server.answer_rcpt("nobody@example.com", 550, "5.1.1 No such user")
    result = admin(
        "send-test", COURSE_SLUG, "1", "--to", "nobody@example.com", **relay_of(smtp_server)
    )
    assert result.returncode == 1
    assert "refused: RCPT: 550 5.1.1 No such user" in result.stderr
