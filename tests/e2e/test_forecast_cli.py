"""`newsletter forecast` through the real command: person by person, per-day totals, JSON,
a mistake named; and it sends nothing."""

from __future__ import annotations

import json
from pathlib import Path

from tests.databases import on_each_engine
from tests.e2e.conftest import ok

COURSE = "leg-weakness-after-microdiscectomy"


@on_each_engine
def test_the_forecast_shows_each_persons_mail_and_sends_nothing(admin, tmp_path: Path):
    ok(admin("sequences", "queue", f"lessons/{COURSE}"))
    ok(
        admin(
            "subscribers", "add", "ann@example.com", "--timezone", "Asia/Tokyo", "--enroll", COURSE
        )
    )
    ok(admin("subscribers", "add", "bo@example.com", "--enroll", COURSE))
    issue = tmp_path / "2026-06.md"
    issue.write_text("---\nsubject: June news\npreheader: What is new\n---\nHello.\n")
    ok(admin("broadcast", "send", str(issue)))
    capped = {"NEWSLETTER_SENDING__MAX_PER_SUBSCRIBER_PER_DAY": "1"}

    shown = ok(admin("forecast", "--days", "5", "--subscriber", "ANN@example.com", **capped))
    document = json.loads(ok(admin("forecast", "--days", "14", "--json", **capped)))

    assert "ann@example.com (Asia/Tokyo)" in shown
    assert "bo@example.com" not in shown
    assert "lesson 1 of leg-weakness-after-microdiscectomy: Welcome" in shown
    # With one a day, the issue (queued after her welcome) waits for her next morning.
    assert "issue 2026-06: June news  [held by the daily cap from" in shown
    assert "08:00 JST" in shown
    assert "day (Europe/London)" in shown
    messages = document["messages"]
    assert {m["email"] for m in messages} == {"ann@example.com", "bo@example.com"}
    assert sum(m["course"] == COURSE for m in messages) == 12  # six lessons each
    assert sum(total["issues"] for total in document["per_day"].values()) == 2
    assert not list((tmp_path / "var" / "outbox").glob("*.eml"))  # nothing was sent


def test_an_unknown_course_is_named(admin):
    refused = admin("forecast", "--course", "no-such-course")
    assert refused.returncode == 1
    assert "no-such-course" in refused.stderr
