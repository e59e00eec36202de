"""The operator's view of sending, through the real CLI: whether mail goes out and why not,
and exit codes a monitoring script can trust."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.smtpd import SmtpServer


@pytest.fixture
def newsletter(tmp_path: Path):  # type: ignore[no-untyped-def]
    base = {k: v for k, v in os.environ.items() if not k.upper().startswith("NEWSLETTER_")}
    base |= {
        "NEWSLETTER_DATABASE__URL": f"sqlite:///{tmp_path / 'newsletter.db'}",
        "NEWSLETTER_PATHS__VAR": str(tmp_path / "var"),
        "NEWSLETTER_SECRET_KEY": "sending-cli-test-secret",
    }

    def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "newsletter", *args],
            cwd=REPO,
            env=base | env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    return run


def test_tick_and_status_exit_non_zero_while_sending_is_paused(newsletter):
    assert newsletter("sending", "status").returncode == 0
    assert newsletter("sending", "pause", "--reason", "moving to a new relay").returncode == 0

    tick = newsletter("tick")
    status = newsletter("sending", "status")
    report = json.loads(newsletter("sending", "status", "--json").stdout)

    assert tick.returncode == 1
    assert "sending is paused until resumed: moving to a new relay" in tick.stderr
    assert status.returncode == 1
    assert "Sending: held back: sending is paused until resumed" in status.stdout
    assert report["paused"]["reason"] == "moving to a new relay"
    assert report["paused"]["until"] is None
    assert report["queue"] == {"queued": 0, "due": 0, "sending": 0}

    assert newsletter("sending", "resume").stdout.strip() == "Sending resumed."
    assert newsletter("sending", "status").returncode == 0
    assert newsletter("tick").returncode == 0


def test_status_names_the_refusals_of_the_last_hour_by_domain_and_reply(
    newsletter, smtp_server: SmtpServer
):
    smtp_server.answer_rcpt("a@refusing.example", 550, "5.7.26 Unauthenticated email")
    smtp_server.answer_rcpt("b@refusing.example", 550, "5.7.26 Unauthenticated email")
    relay = {
        "NEWSLETTER_SMTP__HOST": smtp_server.host,
        "NEWSLETTER_SMTP__PORT": str(smtp_server.port),
        "NEWSLETTER_SMTP__TLS": "none",
        "NEWSLETTER_SMTP__ALLOW_HTTP_LINKS": "true",
    }
    assert (
        newsletter("sequences", "queue", "lessons/leg-weakness-after-microdiscectomy").returncode
        == 0
    )
    for email in ("a@refusing.example", "b@refusing.example", "c@fine.example"):
        added = newsletter(
            "subscribers", "add", email, "--enroll", "leg-weakness-after-microdiscectomy"
        )
        assert added.returncode == 0, added.stderr

    assert newsletter("tick", **relay).returncode == 0
    report = json.loads(newsletter("sending", "status", "--json").stdout)

    assert report["last_hour"]["sent"] == 1
    assert report["last_hour"]["failed"] == 2
    assert report["last_hour"]["refusals_by_domain"] == {"refusing.example": 2}
    assert report["last_hour"]["refusals_by_reply"] == {"RCPT: 550 5.7.26 Unauthenticated email": 2}
    assert report["blocked"] == ""


def test_a_real_relay_is_refused_while_links_would_be_plain_http(newsletter):
    result = newsletter("tick", NEWSLETTER_SMTP__HOST="mail.example.org")

    assert result.returncode == 1
    assert result.stderr.startswith("error: site.base_url is http://localhost:8000: links in")
    assert result.stderr.count("error:") == 1
    assert "smtp.allow_http_links = true" in result.stderr
