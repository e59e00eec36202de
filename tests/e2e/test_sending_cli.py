"""The operator's view of sending, through the real CLI: whether mail goes out and why not,
and exit codes a monitoring script can trust."""

from __future__ import annotations

import json

from tests.databases import on_each_engine
from tests.smtpd import SmtpServer


def test_tick_and_status_exit_non_zero_while_sending_is_paused(admin):
    assert admin("sending", "status").returncode == 0
    assert admin("sending", "pause", "--reason", "moving to a new relay").returncode == 0

    tick = admin("tick")
    status = admin("sending", "status")
    report = json.loads(admin("sending", "status", "--json").stdout)

    assert tick.returncode == 1
    assert "sending is paused until resumed: moving to a new relay" in tick.stderr
    assert status.returncode == 1
    assert "Sending: held back: sending is paused until resumed" in status.stdout
    assert report["paused"]["reason"] == "moving to a new relay"
    assert report["paused"]["until"] is None
    assert report["queue"] == {"queued": 0, "due": 0, "sending": 0}

    assert admin("sending", "resume").stdout.strip() == "Sending resumed."
    assert admin("sending", "status").returncode == 0
    assert admin("tick").returncode == 0


@on_each_engine
def test_status_names_the_refusals_of_the_last_hour_by_domain_and_reply(
    admin, smtp_server: SmtpServer
):
    smtp_server.answer_rcpt("a@refusing.example", 550, "5.7.26 Unauthenticated email")
    smtp_server.answer_rcpt("b@refusing.example", 550, "5.7.26 Unauthenticated email")
    relay = {
        "NEWSLETTER_SMTP__HOST": smtp_server.host,
        "NEWSLETTER_SMTP__PORT": str(smtp_server.port),
        "NEWSLETTER_SMTP__TLS": "none",
        "NEWSLETTER_SMTP__ALLOW_HTTP_LINKS": "true",
    }
    assert admin("sequences", "queue", "lessons/leg-weakness-after-microdiscectomy").returncode == 0
    for email in ("a@refusing.example", "b@refusing.example", "c@fine.example"):
        added = admin("subscribers", "add", email, "--enroll", "leg-weakness-after-microdiscectomy")
        assert added.returncode == 0, added.stderr

    assert admin("tick", **relay).returncode == 0
    report = json.loads(admin("sending", "status", "--json").stdout)

    assert report["last_hour"]["sent"] == 1
    assert report["last_hour"]["failed"] == 2
    assert report["last_hour"]["refusals_by_domain"] == {"refusing.example": 2}
    assert report["last_hour"]["refusals_by_reply"] == {"RCPT: 550 5.7.26 Unauthenticated email": 2}
    assert report["blocked"] == ""


def test_a_real_relay_is_refused_while_links_would_be_plain_http(admin):
    result = admin("tick", NEWSLETTER_SMTP__HOST="mail.example.org")

    assert result.returncode == 1
    assert result.stderr.startswith("error: site.base_url is http://localhost:8000: links in")
    assert len(result.stderr.strip().splitlines()) == 1
    assert "smtp.allow_http_links = true" in result.stderr
