"""An issue of the newsletter through the real commands: a dry run, the send, a rerun that
queues nobody twice, the workers' pass into the development outbox, its progress, and a
worker killed in the middle of sending it to 10,000 people."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select

from newsletter.db.models import Delivery, DeliveryStatus, Subscriber
from tests.conftest import REPO
from tests.databases import on_each_engine
from tests.e2e.conftest import ok
from tests.e2e.test_crash import stop, wait_until
from tests.smtpd import SmtpServer

COURSE = "leg-weakness-after-microdiscectomy"


def test_an_issue_goes_to_its_segment_once(admin, tmp_path: Path):
    ok(admin("sequences", "queue", f"lessons/{COURSE}"))
    for name in ("ann", "ben", "cy"):
        ok(admin("subscribers", "add", f"{name}@example.com"))
    ok(admin("subscribers", "tag", "ann@example.com", "news"))
    ok(admin("subscribers", "tag", "ben@example.com", "news"))
    issue = tmp_path / "2026-06.md"
    issue.write_text(
        "---\nsubject: June news\npreheader: What is new\nto: tag:news\n---\n\nHello.\n",
        encoding="utf-8",
    )

    dry = ok(admin("broadcast", "send", str(issue), "--dry-run"))
    first = ok(admin("broadcast", "send", str(issue)))
    again = ok(admin("broadcast", "send", str(issue)))
    ok(admin("tick"))
    ok(admin("tick"))

    assert "Would send June news to 2 subscribers (tag:news)" in dry
    assert first.startswith("Started 2026-06: 2 subscribers in its audience")
    assert again.startswith("Resumed 2026-06: 2 subscribers in its audience")
    outbox = [path.read_text() for path in (tmp_path / "var" / "outbox").glob("*.eml")]
    issues = [text for text in outbox if "Subject: June news" in text]
    assert sorted(
        line for text in issues for line in text.splitlines() if line.startswith("To:")
    ) == [
        "To: ann@example.com",
        "To: ben@example.com",
    ]
    shown = json.loads(ok(admin("broadcast", "show", "2026-06", "--json")))
    assert shown["counts"] == {"sent": 2}
    assert "2026-06 (sending): 2 sent, 0 to go" in ok(admin("broadcast", "show", "2026-06"))


def test_a_changed_file_of_the_same_name_is_refused(admin, tmp_path: Path):
    ok(admin("subscribers", "add", "ann@example.com"))
    issue = tmp_path / "2026-06.md"
    issue.write_text("---\nsubject: June news\npreheader: One\n---\nHello.\n", encoding="utf-8")
    ok(admin("broadcast", "send", str(issue)))
    issue.write_text("---\nsubject: June news!\npreheader: One\n---\nHello.\n", encoding="utf-8")

    refused = admin("broadcast", "send", str(issue))

    assert refused.returncode == 1
    assert "rename the file to send it as a new issue" in refused.stderr


def test_a_send_killed_while_queueing_10000_resumes_and_queues_each_once(admin, tmp_path: Path):
    people = tmp_path / "people.csv"
    people.write_text(
        "email\r\n" + "".join(f"reader{n}@example.com\r\n" for n in range(10_000)),
        encoding="utf-8",
    )
    ok(admin("subscribers", "import", str(people)))
    issue = tmp_path / "2026-07.md"
    issue.write_text("---\nsubject: July news\npreheader: Summer\n---\nHello.\n", encoding="utf-8")

    killed = admin(
        "broadcast", "send", str(issue), NEWSLETTER_FAILPOINTS="broadcast.after_batch=kill@3"
    )
    half = json.loads(ok(admin("broadcast", "show", "2026-07", "--json")))
    resumed = ok(admin("broadcast", "send", str(issue)))
    done = json.loads(ok(admin("broadcast", "show", "2026-07", "--json")))

    assert killed.returncode == -9  # SIGKILL, mid-send: no cleanup at all
    assert half["status"] == "enqueueing"
    assert half["counts"] == {"queued": 3000}
    assert resumed.startswith("Resumed 2026-07: 10000 subscribers in its audience")
    assert done["status"] == "sending"
    assert done["counts"] == {"queued": 10_000}
    assert done["audience"] == 10_000  # one delivery each: the database allows no more


def test_skip_active_courses_leaves_out_whoever_is_mid_course(admin, tmp_path: Path):
    ok(admin("sequences", "queue", f"lessons/{COURSE}"))
    ok(admin("subscribers", "add", "ann@example.com", "--enroll", COURSE))
    ok(admin("subscribers", "add", "ben@example.com"))
    issue = tmp_path / "2026-08.md"
    issue.write_text("---\nsubject: August\npreheader: News\n---\nHello.\n", encoding="utf-8")

    dry = ok(admin("broadcast", "send", str(issue), "--skip-active-courses", "--dry-run"))

    assert "to 1 subscriber ((all) and not course:*:active)" in dry


def test_an_issue_at_a_local_time_says_so_in_the_dry_run_the_send_and_show(admin, tmp_path: Path):
    ok(admin("subscribers", "add", "ann@example.com"))
    issue = tmp_path / "2030-12.md"
    issue.write_text(
        "---\nsubject: December news\npreheader: News\nsend_at: 2030-12-10T09:00\n---\nHello.\n",
        encoding="utf-8",
    )

    dry = ok(admin("broadcast", "send", str(issue), "--dry-run"))
    started = ok(admin("broadcast", "send", str(issue)))
    shown = ok(admin("broadcast", "show", "2030-12"))
    document = json.loads(ok(admin("broadcast", "show", "2030-12", "--json")))

    local = "at 09:00 on 2030-12-10 in each subscriber's time zone"
    assert f"Would send December news to 1 subscriber (all) {local}. Nothing was queued." in dry
    assert started.startswith(f"Started 2030-12: 1 subscriber in its audience, due {local}.")
    assert f"due {local}" in shown
    assert document["local_send_at"] == "2030-12-10T09:00:00"
    assert document["due_at"] == "2030-12-09T19:00:00+00:00"  # when it is 09:00 at UTC+14


def test_at_without_an_offset_is_a_local_time_and_with_one_an_instant(admin, tmp_path: Path):
    issue = tmp_path / "2030-11.md"
    issue.write_text("---\nsubject: November\npreheader: News\n---\nHello.\n", encoding="utf-8")

    local = ok(admin("broadcast", "send", str(issue), "--at", "2030-11-10T07:30", "--dry-run"))
    instant = ok(
        admin("broadcast", "send", str(issue), "--at", "2030-11-10T07:30+01:00", "--dry-run")
    )
    wrong = admin("broadcast", "send", str(issue), "--at", "soon", "--dry-run")

    assert "to 0 subscribers (all) at 07:30 on 2030-11-10 in each subscriber's time zone." in local
    assert "to 0 subscribers (all) at 2030-11-10 06:30 UTC. Nothing was queued." in instant
    assert wrong.returncode == 1
    assert "--at: 'soon' is not a date and time such as 2026-12-10T09:00" in wrong.stderr


def test_an_issue_with_a_cap_of_its_own_says_so(admin, tmp_path: Path):
    issue = tmp_path / "2030-10.md"
    issue.write_text(
        "---\nsubject: Urgent\npreheader: News\nmax_per_subscriber_per_day: 0\n---\nHello.\n",
        encoding="utf-8",
    )

    dry = ok(admin("broadcast", "send", str(issue), "--dry-run"))
    ok(admin("broadcast", "send", str(issue)))
    shown = ok(admin("broadcast", "show", "2030-10"))

    assert ", never held back by the daily cap. Nothing was queued." in dry
    assert ", never held back by the daily cap" in shown


# --- a worker killed mid-send ------------------------------------------------------------

READERS = 10_000
#: The shipped [sending] record_every; more connections than the shipped 2 keep the relay
#: busy while the worker builds the next messages, which sends the 10,000 a third faster.
RECORD_EVERY = 50
CONNECTIONS = 8
#: docs/delivery.md: a crash re-sends at most record_every + connections messages.
CRASH_BOUND = RECORD_EVERY + CONNECTIONS
#: The first worker dies right after the relay's 250 for this message, before recording it.
KILL_AT = 4_000
#: Generous for a relay on loopback: a reply given up on would be sent again, a duplicate
#: that is no crash's.
SMTP_TIMEOUT_S = 4
#: The least the settings allow (twice the two timeouts): the dead worker's claims are
#: taken over this long after its last heartbeat, while the new worker sends what was
#: still queued.
LEASE_S = 2 * (SMTP_TIMEOUT_S + SMTP_TIMEOUT_S)
#: How long each worker may take: 10,000 messages through a Python SMTP server can take
#: a minute or two on a busy machine, past the suite's usual 120 s a test.
SLOW_S = 240


class Deliveries:
    """What the database says of the issue's deliveries, read while workers write it (with
    the driver's own transactions, which take no lock to read a WAL database)."""

    def __init__(self, database_url: str) -> None:
        self.engine = create_engine(database_url)

    def statuses(self) -> Counter[str]:
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(Delivery.status, func.count()).group_by(Delivery.status)
            )
            return Counter({status: count for status, count in rows})

    def recipients(self, status: DeliveryStatus) -> set[str]:
        with self.engine.connect() as connection:
            return set(
                connection.scalars(
                    select(Subscriber.email)
                    .join(Delivery, Delivery.subscriber_id == Subscriber.id)
                    .where(Delivery.status == status)
                )
            )


@pytest.fixture
def deliveries(database_url: str) -> Iterator[Deliveries]:
    reader = Deliveries(database_url)
    yield reader
    reader.engine.dispose()


@pytest.mark.timeout(2 * SLOW_S)
@on_each_engine
def test_a_worker_killed_mid_send_to_10000_loses_nobody_and_repeats_within_the_crash_bound(
    admin, tmp_path: Path, smtp_server: SmtpServer, deliveries: Deliveries
):
    readers = [f"reader{n}@example.com" for n in range(READERS)]
    people = tmp_path / "people.csv"
    people.write_text("email\r\n" + "".join(f"{a}\r\n" for a in readers), encoding="utf-8")
    ok(admin("subscribers", "import", str(people)))
    issue = tmp_path / "2026-09.md"
    issue.write_text(
        "---\nsubject: September news\npreheader: Autumn\n---\nHello.\n", encoding="utf-8"
    )
    ok(admin("broadcast", "send", str(issue)))
    log = tmp_path / "workers.log"
    relay = {
        "NEWSLETTER_SMTP__HOST": smtp_server.host,
        "NEWSLETTER_SMTP__PORT": str(smtp_server.port),
        "NEWSLETTER_SMTP__TLS": "none",
        "NEWSLETTER_SMTP__ALLOW_HTTP_LINKS": "true",
        "NEWSLETTER_SENDING__RECORD_EVERY": str(RECORD_EVERY),
        "NEWSLETTER_SENDING__CONNECTIONS": str(CONNECTIONS),
        "NEWSLETTER_SENDING__MAX_PER_SECOND": "100000",
        "NEWSLETTER_SENDING__LEASE_S": str(LEASE_S),
        "NEWSLETTER_SENDING__SMTP_TIMEOUT_S": str(SMTP_TIMEOUT_S),
        "NEWSLETTER_SENDING__SMTP_DATA_TIMEOUT_S": str(SMTP_TIMEOUT_S),
        "NEWSLETTER_SCHEDULE__TICK_S": "0.2",
    }

    def worker(**env: str) -> subprocess.Popen[bytes]:
        with log.open("ab") as output:
            return subprocess.Popen(
                [sys.executable, "-m", "newsletter", "worker"],
                cwd=REPO,
                env=admin.env | relay | env,
                stdout=output,
                stderr=subprocess.STDOUT,
            )

    first = worker(NEWSLETTER_FAILPOINTS=f"dispatch.after_accept=kill@{KILL_AT}")
    assert stop(first, timeout_s=SLOW_S) == -signal.SIGKILL, log.read_text()
    at_kill = deliveries.statuses()
    unrecorded = deliveries.recipients(DeliveryStatus.SENDING)
    second = worker()
    try:
        wait_until(lambda: deliveries.statuses()[DeliveryStatus.SENT] == READERS, SLOW_S)
        second.send_signal(signal.SIGTERM)
        assert stop(second) == 0, log.read_text()
    finally:
        if second.poll() is None:
            second.kill()

    # It died mid-send, with mail the relay had taken and it had not yet recorded.
    assert KILL_AT - CRASH_BOUND <= at_kill[DeliveryStatus.SENT] < KILL_AT
    assert at_kill[DeliveryStatus.SENDING] > 0
    assert at_kill[DeliveryStatus.QUEUED] > 0
    # The new worker sent the rest, and stopped cleanly with nothing left unrecorded.
    assert deliveries.statuses() == {DeliveryStatus.SENT: READERS}
    assert "Stopped on SIGTERM: every send under way finished" in log.read_text()
    # What the relay received: everyone, once; twice only for what the dead worker had not
    # recorded, and never more of them than docs/delivery.md's bound.
    received = Counter(rcpt for _, rcpts, _ in smtp_server.messages for rcpt in rcpts)
    twice = {address for address, count in received.items() if count > 1}
    assert set(received) == set(readers)
    assert max(received.values()) == 2
    assert twice <= unrecorded
    assert 1 <= len(twice) <= CRASH_BOUND  # the message whose 250 the kill cut off, at least
    assert all(b"\r\nSubject: September news\r\n" in data for _, _, data in smtp_server.messages)
