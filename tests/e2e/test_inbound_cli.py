"""What comes back, through the real commands: a lesson goes out to the development outbox
with its VERP return path, its bounce is read by `newsletter inbound read` or delivered by
SMTP to `newsletter inbound serve`, and the admin sees the address suppressed."""

from __future__ import annotations

import json
import signal
import smtplib
import socket
import subprocess
import sys
from email import message_from_bytes
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.e2e.conftest import ok
from tests.e2e.test_crash import free_port, wait_until
from tests.fixtures.inbound import crlf, fixture

COURSE = "leg-weakness-after-microdiscectomy"
RETURN_PATH = {"NEWSLETTER_BOUNCES__RETURN_PATH": "bounces@example.org"}


def lesson_out(admin, tmp_path: Path, email: str) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    """Send `email` the course's first lesson into the outbox: its return path and Message-ID."""
    ok(admin("sequences", "queue", f"lessons/{COURSE}"))
    ok(admin("subscribers", "add", email, "--enroll", COURSE))
    ok(admin("tick", **RETURN_PATH))
    [saved] = sorted((tmp_path / "var" / "outbox").glob("*.eml"))
    lesson = message_from_bytes(saved.read_bytes())
    return lesson["Return-Path"].strip("<>"), lesson["Message-ID"]


def test_a_bounce_read_from_a_pipe_suppresses_the_address(admin, tmp_path: Path):
    verp, message_id = lesson_out(admin, tmp_path, "ann@example.com")
    assert verp.startswith("bounces+")
    bounce = tmp_path / "bounce.eml"
    bounce.write_bytes(
        fixture(
            "postfix-user-unknown",
            return_path=verp,
            recipient="ann@example.com",
            message_id=message_id,
        )
    )

    first = admin("inbound", "read", str(bounce), "--to", verp, **RETURN_PATH)
    again = admin("inbound", "read", str(bounce), "--to", verp, **RETURN_PATH)

    assert "hard bounce for ann@example.com (5.1.1): address suppressed" in ok(first)
    assert "already recorded" in ok(again)
    shown = json.loads(ok(admin("subscribers", "show", "ann@example.com", "--json")))
    assert shown["status"] == "bounced"
    [came_back] = shown["came_back"]
    assert came_back["kind"] == "hard_bounce"
    assert "User unknown" in came_back["reason"]


def test_the_receiver_takes_a_bounce_over_smtp_and_stops_on_sigterm(admin, tmp_path: Path):
    verp, message_id = lesson_out(admin, tmp_path, "ann@example.com")
    port = free_port()
    receiver = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "inbound", "serve", "--port", str(port)],
        cwd=REPO,
        env=admin.env | RETURN_PATH,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    wait_until(lambda: listening(port))
    with (
        smtplib.SMTP("127.0.0.1", port, timeout=10) as client,
        pytest.raises(smtplib.SMTPRecipientsRefused) as refused,
    ):
        client.sendmail("", ["ann@example.org"], b"Subject: hi\r\n\r\nhi\r\n")
    assert refused.value.recipients["ann@example.org"][0] == 550
    bounce = fixture(
        "postfix-user-unknown", return_path=verp, recipient="ann@example.com", message_id=message_id
    )
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        assert client.sendmail("", [verp], crlf(bounce)) == {}

    receiver.send_signal(signal.SIGTERM)
    _, stderr = receiver.communicate(timeout=30)

    assert receiver.returncode == 0, stderr.decode()
    assert b"Traceback" not in stderr
    shown = json.loads(ok(admin("subscribers", "show", "ann@example.com", "--json")))
    assert shown["status"] == "bounced"
    events = json.loads(ok(admin("inbound", "events", "--json")))
    assert [(event["kind"], event["source"]) for event in events] == [("hard_bounce", "smtp")]


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def test_serve_runs_the_receiver_when_inbound_is_enabled(admin, tmp_path: Path):
    verp, message_id = lesson_out(admin, tmp_path, "ann@example.com")
    port = free_port()
    log = tmp_path / "serve.log"
    enabled = RETURN_PATH | {
        "NEWSLETTER_INBOUND__ENABLED": "true",
        "NEWSLETTER_INBOUND__PORT": str(port),
    }
    with log.open("w") as output:
        service = subprocess.Popen(
            [sys.executable, "-m", "newsletter", "serve", "--port", str(free_port())],
            cwd=REPO,
            env=admin.env | enabled,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: f"smtp://127.0.0.1:{port}" in log.read_text() or service.poll())
        bounce = fixture(
            "postfix-user-unknown",
            return_path=verp,
            recipient="ann@example.com",
            message_id=message_id,
        )
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            assert client.sendmail("", [verp], crlf(bounce)) == {}
    finally:
        service.send_signal(signal.SIGTERM)
        service.wait(timeout=30)

    assert service.returncode == 0, log.read_text()
    shown = json.loads(ok(admin("subscribers", "show", "ann@example.com", "--json")))
    assert shown["status"] == "bounced"


def test_an_issue_paused_by_its_bounces_says_why_until_resumed(admin, tmp_path: Path):
    # Two of three readers an hour, and a rate from two messages on (100 as shipped).
    env = RETURN_PATH | {
        "NEWSLETTER_BOUNCES__RATE_MIN_SENT": "2",
        "NEWSLETTER_SENDING__MAX_PER_HOUR": "2",
    }
    people = tmp_path / "people.csv"
    people.write_text("email\nann@example.com\nben@example.com\ncy@example.com\n", "utf-8")
    ok(admin("subscribers", "import", str(people)))
    issue = tmp_path / "2026-06.md"
    issue.write_text("---\nsubject: June news\npreheader: What is new\n---\nHello.\n", "utf-8")
    ok(admin("broadcast", "send", str(issue), **env))
    ok(admin("tick", **env))
    first, _ = sorted((tmp_path / "var" / "outbox").glob("*.eml"))
    copy = message_from_bytes(first.read_bytes())
    verp = copy["Return-Path"].strip("<>")
    bounce = tmp_path / "bounce.eml"
    bounce.write_bytes(
        fixture(
            "postfix-user-unknown",
            return_path=verp,
            recipient=copy["To"],
            message_id=copy["Message-ID"],
        )
    )

    read = admin("inbound", "read", str(bounce), "--to", verp, **env)

    why = "paused by the bounce rate: 1 of 2 sent (50.0%) bounced hard"
    assert "address suppressed" in ok(read)
    assert f"Newsletter issue 2026-06 {why}" in read.stderr  # the log's warning
    shown = ok(admin("broadcast", "show", "2026-06", **env))
    assert "2026-06 (paused): 2 sent, 1 to go" in shown
    assert f"2026-06 {why}" in shown
    assert "`newsletter broadcast resume 2026-06` sends the rest." in shown
    assert f"2026-06 {why}" in ok(admin("broadcast", "list", **env))
    status = json.loads(ok(admin("sending", "status", "--json", **env)))
    assert list(status["held_issues"]) == ["2026-06"]
    assert status["held_issues"]["2026-06"].startswith(why)

    ok(admin("broadcast", "resume", "2026-06", **env))

    resumed = json.loads(ok(admin("broadcast", "show", "2026-06", "--json", **env)))
    assert (resumed["status"], resumed["pause_reason"]) == ("sending", "")
