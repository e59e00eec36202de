"""An issue of the newsletter through the real commands: a dry run, the send, a rerun that
queues nobody twice, the workers' pass into the development outbox, and its progress."""

from __future__ import annotations

import json
from pathlib import Path

from tests.e2e.conftest import ok

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
