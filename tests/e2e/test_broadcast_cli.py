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
