"""The admin's terminal: names, titles and subjects printed as written, in a real terminal
(a pseudo-terminal) and piped; --json for scripts."""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import sqlite3
import struct
import subprocess
import sys
import termios
from datetime import datetime
from email.header import Header
from pathlib import Path

import pytest

from tests.conftest import COURSE_DIR, REPO
from tests.databases import on_each_engine
from tests.e2e.conftest import admin_in, ok

NAMES = {
    "closer@example.com": "[/]",
    "link@example.com": "[link=https://evil.test/x]click me[/link]",
    "red@example.com": "[bold red]ALERT[/] 用户 Zoë",
}
#: Stored without the CLI (an older version, another tool): what the terminal must not obey.
ESCAPES = "\x1b]8;;https://evil.test/y\x1b\\there\x1b]8;;\x1b\\\x1b[2J\x1b[H\x9b31m"
TITLE = "[/] Course [link=https://evil.test/t]title[/link]"
SUBJECT = "[bold red]Welcome[/] :skull:"
OUTBOX_SUBJECT = "[/] Hi \x1b[2J [link=https://evil.test/o]x[/link]"


def run_in_terminal(admin, *args: str) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    """`newsletter *args` with a pseudo-terminal of 200 x 50 as stdin, stdout and stderr,
    as a colour terminal: what an admin at a shell sees, escape sequences included."""
    leader, follower = os.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
    env = {k: v for k, v in admin.env.items() if k not in ("NO_COLOR", "COLUMNS", "FORCE_COLOR")}
    process = subprocess.Popen(
        [sys.executable, "-m", "newsletter", *args],
        cwd=REPO,
        env=env | {"TERM": "xterm-256color", "COLORTERM": "truecolor"},
        stdin=follower,
        stdout=follower,
        stderr=follower,
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    return process.wait(timeout=60), b"".join(chunks).decode("utf-8")


def assert_printed_literally(screen: str, *texts: str) -> None:
    for text in texts:
        assert text in screen, text
    assert "\x1b[1m" in screen  # a terminal indeed: the table header is bold
    assert "\x1b]8;" not in screen  # no OSC 8 hyperlink
    assert "evil.test/y" not in screen.replace("\u241b]8;;https://evil.test/y", "")
    assert "\x1b[2J" not in screen
    assert "\x1b[H" not in screen
    assert "\x9b" not in screen
    assert not re.search("\x1b\\[[0-9;]*31m", screen)  # nothing red
    assert "Traceback" not in screen


def write_hostile_course(folder: Path) -> Path:
    course = Path(shutil.copytree(COURSE_DIR, folder / "hostile-course"))
    manifest = course / "course.toml"
    manifest.write_text(
        manifest.read_text().replace(
            'title = "Leg weakness after microdiscectomy"', f"title = {json.dumps(TITLE)}"
        )
    )
    first = course / "01-welcome.md"
    first.write_text(
        first.read_text().replace(
            "subject: Welcome, and why your leg may stay weak", f"subject: '{SUBJECT}'"
        )
    )
    return course


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """`newsletter` on a database holding hostile names, a course with a hostile title and
    subject, and an outbox message with a hostile subject; read-only tests share it."""
    folder = tmp_path_factory.mktemp("hostile")
    admin = admin_in(folder)
    admin.course = write_hostile_course(folder)
    ok(admin("sequences", "queue", str(admin.course)))
    for email, name in NAMES.items():
        ok(admin("subscribers", "add", email, "--name", name, "--enroll", "hostile-course"))
    ok(admin("subscribers", "add", "escapes@example.com", "--enroll", "hostile-course"))
    with sqlite3.connect(folder / "newsletter.db") as db:
        db.execute(
            "UPDATE subscribers SET first_name = ?, consent = ? WHERE email = ?",
            (ESCAPES, json.dumps({"user_agent": ESCAPES}), "escapes@example.com"),
        )
    outbox = folder / "var" / "outbox"
    outbox.mkdir(parents=True)
    (outbox / "0001.eml").write_bytes(
        b"Date: Mon, 08 Jun 2026 09:00:00 +0000\r\n"
        b"To: Ana <ana@example.com>\r\n"
        b"Subject: " + Header(OUTBOX_SUBJECT, "utf-8").encode().encode() + b"\r\n\r\nBody\r\n"
    )
    return admin


def test_subscribers_list_shows_names_as_written_in_a_terminal(hostile):
    status, screen = run_in_terminal(hostile, "subscribers", "list")
    assert status == 0, screen
    assert_printed_literally(screen, *NAMES.values(), "\u241b[2J\u241b[H")


@pytest.mark.parametrize("email", [*NAMES, "escapes@example.com"])
def test_subscribers_show_shows_names_as_written_in_a_terminal(hostile, email):
    status, screen = run_in_terminal(hostile, "subscribers", "show", email)
    assert status == 0, screen
    name = NAMES.get(email, "\u241b[2J\u241b[H")
    assert_printed_literally(screen, name, "hostile-course")


@pytest.mark.parametrize(
    "args", [("sequences", "list"), ("sequences", "show", "hostile-course")], ids=" ".join
)
def test_course_titles_and_subjects_are_shown_as_written_in_a_terminal(hostile, args):
    status, screen = run_in_terminal(hostile, *args)
    assert status == 0, screen
    assert_printed_literally(screen, TITLE)
    if "show" in args:
        assert SUBJECT in screen


def test_course_check_shows_the_title_and_subjects_as_written_in_a_terminal(hostile):
    status, screen = run_in_terminal(hostile, "course", "check", str(hostile.course))
    assert status == 0, screen
    assert_printed_literally(screen, TITLE, SUBJECT)


def test_the_outbox_shows_subjects_as_written_in_a_terminal(hostile):
    status, screen = run_in_terminal(hostile, "outbox")
    assert status == 0, screen
    assert_printed_literally(screen, "[/] Hi \u241b[2J [link=https://evil.test/o]x[/link]")


def test_enrolling_by_a_slug_prints_it_as_written(hostile):
    status, screen = run_in_terminal(hostile, "enroll", "hostile-course", "--all")
    assert status == 0, screen
    assert "Enrolled 0 subscribers in hostile-course." in screen


def test_piped_tables_are_not_wrapped_at_80_columns(admin):
    long_name = "Maximiliana " + "Wolfeschlegelsteinhausenberger" * 2 + " 用户"
    address = "a.rather.long.address.of.someone@subdomain.example.com"
    ok(admin("subscribers", "add", address, "--name", long_name, "--timezone", "Europe/Paris"))
    listing = ok(admin("subscribers", "list"))
    row = next(line for line in listing.splitlines() if address in line)
    assert long_name in row
    assert "Europe/Paris" in row
    assert max(len(line) for line in listing.splitlines()) > 80
    assert "\x1b" not in listing  # no styles in a file


def test_an_error_is_one_line_however_long_when_piped(admin):
    result = admin("subscribers", "show", "someone.with.a.long.address@" + "sub." * 20 + "example")
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith("error: ")


@on_each_engine
def test_subscribers_list_and_show_as_json(admin):
    ok(admin("subscribers", "add", "ana@example.com", "--name", "[/] Zoë 用户"))
    ok(admin("subscribers", "add", "bo@example.com", "--timezone", "Europe/Paris"))
    ok(admin("subscribers", "remove", "bo@example.com"))
    raw = admin("subscribers", "list", "--json")
    document = json.loads(ok(raw))
    assert document["total"] == 2
    assert [
        (s["id"], s["email"], s["first_name"], s["status"], s["timezone"])
        for s in document["subscribers"]
    ] == [
        (2, "bo@example.com", "", "unsubscribed", "Europe/Paris"),
        (1, "ana@example.com", "[/] Zoë 用户", "confirmed", None),
    ]
    assert set(document["subscribers"][0]) == {
        "id",
        "email",
        "first_name",
        "status",
        "timezone",
        "created_at",
        "confirmed_at",
        "unsubscribed_at",
    }
    for field in ("created_at", "confirmed_at", "unsubscribed_at"):
        assert datetime.fromisoformat(document["subscribers"][0][field]).utcoffset() is not None
    only = json.loads(ok(admin("subscribers", "list", "--json", "--status", "confirmed")))
    assert [s["email"] for s in only["subscribers"]] == ["ana@example.com"]

    shown = json.loads(ok(admin("subscribers", "show", "ana@example.com", "--json")))
    assert shown["first_name"] == "[/] Zoë 用户"
    assert shown["consent"]["form"] == "admin command line"
    assert shown["enrollments"] == []
    assert shown["deliveries"] == []


def test_json_output_is_utf8_whatever_the_locale(admin):
    ok(admin("subscribers", "add", "ana@example.com", "--name", "Zoë 用户"))
    result = subprocess.run(
        [sys.executable, "-m", "newsletter", "subscribers", "list", "--json"],
        cwd=REPO,
        env=admin.env | {"LC_ALL": "C", "LANG": "C", "PYTHONIOENCODING": "ascii"},
        capture_output=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "Zoë 用户".encode() in result.stdout
    assert json.loads(result.stdout)["subscribers"][0]["first_name"] == "Zoë 用户"


def test_sequences_and_outbox_as_json(hostile):
    sequences = json.loads(ok(hostile("sequences", "list", "--json")))["sequences"]
    assert sequences == [
        {
            "slug": "hostile-course",
            "status": "live",
            "title": TITLE,
            "version": 1,
            "lessons": 6,
            "active": 4,
            "completed": 0,
            "sent": 0,
            "queued": 0,
        }
    ]
    shown = json.loads(ok(hostile("sequences", "show", "hostile-course", "--json")))
    assert (shown["slug"], shown["title"], shown["version"]) == ("hostile-course", TITLE, 1)
    assert shown["lessons"][0] == {
        "position": 1,
        "key": "welcome",
        "file": "01-welcome.md",
        "subject": SUBJECT,
        "preheader": shown["lessons"][0]["preheader"],
        "delay_s": 0,
        "send_at": None,
        "sent": 0,
    }
    outbox = json.loads(ok(hostile("outbox", "--json")))
    assert outbox["total"] == 1
    assert outbox["messages"] == [
        {
            "date": "2026-06-08T09:00:00+00:00",
            "to": "Ana <ana@example.com>",
            "subject": OUTBOX_SUBJECT,
            "file": "0001.eml",
        }
    ]
