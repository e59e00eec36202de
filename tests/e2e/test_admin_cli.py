"""An admin at a shell: queue the course, add people, run passes, read the outbox."""

from __future__ import annotations

import csv
import io
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from itertools import accumulate

import pytest
from sqlalchemy import create_engine, insert, select

from newsletter.content.course import load_course
from newsletter.db.models import Subscriber, SubscriberTag
from newsletter.delivery.transport import list_outbox
from tests.conftest import COURSE_DIR, COURSE_SLUG, REPO
from tests.databases import on_each_engine
from tests.e2e.conftest import admin_in, ok
from tests.smtpd import SmtpServer

MONDAY_9AM = datetime(2026, 6, 8, 8, 0, tzinfo=UTC)  # 09:00 in London
#: When the shipped course's lessons fall due for someone starting at MONDAY_9AM: the tests
#: run a pass at each (a process each), and the lists they check show nothing came between.
DUE = list(
    accumulate((lesson.delay for lesson in load_course(COURSE_DIR).lessons), initial=MONDAY_9AM)
)[1:]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def tick(admin, at: datetime, **env: str) -> str:  # type: ignore[no-untyped-def]
    return ok(admin("tick", "--now", at.isoformat(), **env))


def test_the_course_arrives_in_the_outbox_lesson_by_lesson(admin, tmp_path):
    ok(admin("sequences", "queue", f"lessons/{COURSE_SLUG}"))
    ok(admin("subscribers", "add", "Ana@Example.com", "--name", "Ana"))
    ok(admin("enroll", COURSE_SLUG, "ana@example.com", "--start-at", MONDAY_9AM.isoformat()))
    outbox = tmp_path / "var" / "outbox"

    for due in DUE:
        tick(admin, due)
    arrived = [entry.subject for entry in list_outbox(outbox)]
    assert arrived == [
        "Welcome, and why your leg may stay weak",
        "Where sciatica often starts",
        'What "success" means after surgery',
        "Why pain can ease but weakness may stay",
        "Can a damaged nerve grow back?",
        "Bringing it all together",
    ]
    assert all(entry.to == "Ana <ana@example.com>" for entry in list_outbox(outbox))
    listing = ok(admin("outbox"))
    assert "6 messages in the outbox" in listing
    shown = ok(admin("subscribers", "show", "ana@example.com"))
    assert shown.count("sent") >= 6


def test_the_same_run_delivers_to_a_real_smtp_server(admin, smtp_server: SmtpServer):
    smtp = {
        "NEWSLETTER_SMTP__HOST": smtp_server.host,
        "NEWSLETTER_SMTP__ALLOW_HTTP_LINKS": "true",  # a local test relay
        "NEWSLETTER_SMTP__PORT": str(smtp_server.port),
        "NEWSLETTER_SMTP__TLS": "none",
    }
    ok(admin("sequences", "queue", f"lessons/{COURSE_SLUG}"))
    ok(admin("subscribers", "add", "bo@example.com"))
    ok(admin("enroll", COURSE_SLUG, "bo@example.com", "--start-at", MONDAY_9AM.isoformat()))
    for due in DUE[:2]:  # the rest of the course goes as in the outbox test above
        tick(admin, due, **smtp)
    subjects = [
        message_from_bytes(data, policy=policy.default)["Subject"]
        for _, _, data in smtp_server.messages
    ]
    assert subjects == ["Welcome, and why your leg may stay weak", "Where sciatica often starts"]
    assert {rcpt for _, rcpts, _ in smtp_server.messages for rcpt in rcpts} == {"bo@example.com"}


def test_import_takes_the_good_rows_and_names_the_bad_ones_by_line(admin, tmp_path):
    people = tmp_path / "people.csv"
    people.write_text(
        "email,first_name,timezone\n"
        "cy@example.com,Cy,Europe/Paris\n"
        "not-an-address,Bad,\n"
        "di@example.com,Di,Mars/Base\n"
        "ed@example.com,,\n"
        "fi@example.com,Fi,\n"
    )
    result = admin("subscribers", "import", str(people))
    assert result.returncode == 1
    assert f"{people}:3: 'not-an-address': " in result.stderr
    assert f"{people}:4: 'Mars/Base' is not a known time zone" in result.stderr
    assert "2 rows rejected" in result.stderr
    assert "Imported 3 new subscribers from 5 rows." in result.stdout
    exported = ok(admin("subscribers", "export"))
    assert exported.splitlines()[0].startswith("email,first_name,timezone,status,created_at,")
    assert sorted(line.split(",")[0] for line in exported.splitlines()[1:]) == [
        "cy@example.com",
        "ed@example.com",
        "fi@example.com",
    ]


def test_a_second_import_leaves_existing_subscribers_as_they_were_and_says_so(admin, tmp_path):
    first, second = tmp_path / "first.csv", tmp_path / "second.csv"
    first.write_text("email,first_name,timezone\ncy@example.com,Cy,Europe/Paris\n")
    second.write_text("email,first_name\nCY@Example.com,Someone else\ngus@example.com,Gus\n")
    ok(admin("subscribers", "import", str(first)))
    said = ok(admin("subscribers", "import", str(second)))
    assert "Imported 1 new subscriber from 2 rows." in said
    assert "1 already subscribed: their name, time zone and status were left as they were" in said
    cy = json.loads(ok(admin("subscribers", "show", "cy@example.com", "--json")))
    assert (cy["first_name"], cy["timezone"]) == ("Cy", "Europe/Paris")


def test_a_line_separator_in_a_quoted_name_smuggles_in_no_subscriber(admin, tmp_path):
    people = tmp_path / "people.csv"
    people.write_text(
        "email,first_name\n"
        'ana@example.com,"Ana\u2028evil@example.com,Evil"\n'
        'bo@example.com,"Bo\n'
        'Bo"\n'
        "cy@example.com,Cy\n"
        "CY@example.com,Cy again\n",
        encoding="utf-8",
    )
    result = admin("subscribers", "import", str(people))
    assert result.returncode == 1
    assert result.stderr.splitlines()[:4] == [
        f"{people}:2: first name 'Ana\\u2028evil@example.com,Evil': holds a control character "
        "(U+2028) such as a line break or a tab; a name is one line of text",
        f"{people}:3: first name 'Bo\\nBo': holds a control character (U+000A) such as a line "
        "break or a tab; a name is one line of text",
        f"{people}:5: cy@example.com is also on line 6; keep one of these rows and import again",
        f"{people}:6: cy@example.com is also on line 5; keep one of these rows and import again",
    ]
    assert "Imported 0 new subscribers from 4 rows." in result.stdout
    assert ok(admin("subscribers", "export")).count("\n") == 1  # the header alone


def test_an_oversized_cell_stops_the_import_in_one_line(admin, tmp_path):
    people = tmp_path / "people.csv"
    people.write_text(f'email,first_name\nana@example.com,Ana\nbo@example.com,"{"x" * 200_000}"\n')
    result = admin("subscribers", "import", str(people))
    assert result.returncode == 1
    assert result.stderr == (
        f"error: {people}:3: a cell longer than 131072 characters (is a closing quote "
        "missing?); nothing was imported\n"
    )
    assert "ana@example.com" not in ok(admin("subscribers", "export"))


def test_a_file_that_is_not_utf8_is_refused_naming_the_line(admin, tmp_path):
    people = tmp_path / "people.csv"
    people.write_bytes(b"email,first_name\nana@example.com,Ana\nbo@example.com,Bj\xf6rn\n")
    result = admin("subscribers", "import", str(people))
    assert result.returncode == 1
    assert result.stderr == (
        f"error: {people}:3: not UTF-8 text; save the file as CSV UTF-8 and import again\n"
    )


def test_export_writes_formulas_as_text_and_imports_back_as_it_was(admin, tmp_path):
    formula = '=HYPERLINK("https://evil.test","Click")'
    ok(admin("subscribers", "add", "--name", formula, "--", "-dash@example.com"))
    ok(
        admin(
            "subscribers",
            "add",
            "zoe@example.com",
            "--name",
            "Zoë 用户",
            "--timezone",
            "Asia/Tokyo",
        )
    )
    exported = tmp_path / "export.csv"
    ok(admin("subscribers", "export", "--out", str(exported)))
    with exported.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["email"], row["first_name"]) for row in rows] == [
        ("'-dash@example.com", "'" + formula),
        ("zoe@example.com", "Zoë 用户"),
    ]
    assert rows[0]["consent_form"] == "admin command line"
    assert not any(cell.startswith(("=", "+", "-", "@")) for row in rows for cell in row.values())

    elsewhere = admin_in(tmp_path / "elsewhere")
    assert "Imported 2 new subscribers from 2 rows." in ok(
        elsewhere("subscribers", "import", str(exported))
    )
    again = json.loads(ok(elsewhere("subscribers", "list", "--json")))["subscribers"]
    assert [(s["email"], s["first_name"], s["timezone"]) for s in again] == [
        ("zoe@example.com", "Zoë 用户", "Asia/Tokyo"),
        ("-dash@example.com", formula, None),
    ]


@on_each_engine
def test_export_carries_tags_that_an_import_elsewhere_restores(admin, tmp_path, database_url):
    people = tmp_path / "people.csv"
    people.write_text(
        'email,tags\r\nana@example.com,"vip, baker"\r\nbo@example.com,baker\r\n'
        "cy@example.com,\r\ndi@example.com,\r\n",
        encoding="utf-8",
    )
    ok(admin("subscribers", "import", str(people)))
    ok(admin("subscribers", "tag", "cy@example.com", "late-joiner"))
    # A tag no command takes, as another program writing to the database could leave one.
    hostile = '=HYPERLINK("https://evil.test","x")'
    engine = create_engine(database_url)
    with engine.begin() as connection:
        di = select(Subscriber.id).where(Subscriber.email == "di@example.com").scalar_subquery()
        connection.execute(
            insert(SubscriberTag).values(subscriber_id=di, tag=hostile, created_at=MONDAY_9AM)
        )
    engine.dispose()

    exported = tmp_path / "export.csv"
    ok(admin("subscribers", "export", "--out", str(exported)))
    elsewhere = admin_in(tmp_path / "elsewhere")
    imported = elsewhere("subscribers", "import", str(exported))
    again = ok(elsewhere("subscribers", "export"))
    bakers = json.loads(ok(elsewhere("subscribers", "list", "--segment", "tag:baker", "--json")))

    with exported.open(newline="", encoding="utf-8") as handle:
        first = {row["email"]: row["tags"] for row in csv.DictReader(handle)}
    assert first == {
        "ana@example.com": "baker vip",
        "bo@example.com": "baker",
        "cy@example.com": "late-joiner",
        "di@example.com": "'" + hostile,  # text to a spreadsheet, not a formula
    }
    # The import judges an exported tag as any other: the row of one that is not a tag is
    # refused at its line, and the others come in with theirs.
    assert imported.returncode == 1
    assert f"""{exported}:5: '=HYPERLINK("https://evil.test"' is not a tag""" in imported.stderr
    assert "Imported 3 new subscribers from 4 rows." in imported.stdout
    second = {row["email"]: row["tags"] for row in csv.DictReader(io.StringIO(again))}
    assert second == {email: tags for email, tags in first.items() if email != "di@example.com"}
    assert sorted(s["email"] for s in bakers["subscribers"]) == [
        "ana@example.com",
        "bo@example.com",
    ]


def test_a_paused_sequence_sends_nothing_until_resumed(admin, tmp_path):
    ok(admin("sequences", "queue", f"lessons/{COURSE_SLUG}"))
    ok(admin("sequences", "pause", COURSE_SLUG))
    ok(admin("subscribers", "add", "fay@example.com", "--enroll", COURSE_SLUG))
    tick(admin, MONDAY_9AM)
    assert list_outbox(tmp_path / "var" / "outbox") == []
    assert "paused" in ok(admin("sequences", "list"))
    ok(admin("sequences", "resume", COURSE_SLUG))
    tick(admin, datetime.now(UTC) + timedelta(minutes=1))
    assert len(list_outbox(tmp_path / "var" / "outbox")) == 1


def test_removing_a_subscriber_stops_their_course(admin, tmp_path):
    ok(admin("sequences", "queue", f"lessons/{COURSE_SLUG}"))
    ok(admin("subscribers", "add", "gil@example.com"))
    ok(admin("enroll", COURSE_SLUG, "gil@example.com", "--start-at", MONDAY_9AM.isoformat()))
    tick(admin, DUE[0])
    ok(admin("subscribers", "remove", "gil@example.com"))
    for due in (DUE[1], DUE[-1]):  # when the next lesson, and the last, would have gone
        tick(admin, due)
    assert len(list_outbox(tmp_path / "var" / "outbox")) == 1
    assert "unsubscribed" in ok(admin("subscribers", "list"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("subscribers", "add", "not an address"), "error: 'not an address': "),
        (
            ("subscribers", "add", "a@example.com", "--name", "Ana\r\nBcc: x@evil.test"),
            "error: first name 'Ana\\r\\nBcc: x@evil.test': holds a control character (U+000D)",
        ),
        (
            ("subscribers", "add", "b@example.com", "--name", "Bo\x1b[2J"),
            "error: first name 'Bo\\x1b[2J': holds a control character (U+001B)",
        ),
        (
            ("subscribers", "add", "a" * 65 + "@example.com"),
            f"error: '{'a' * 65}@example.com': the part before the @ is 65 characters long",
        ),
        (
            ("subscribers", "add", "josé@exämple.org"),
            "error: 'josé@exämple.org': the part before the @ has letters outside plain ASCII",
        ),
        (("subscribers", "add", "a@example.com", "--enroll", "nope"), "error: no sequence 'nope'"),
        (("subscribers", "show", "nobody@example.com"), "error: no subscriber nobody@example.com"),
        (("sequences", "pause", "nope"), "error: no sequence 'nope'"),
        (("tick", "--now", "next tuesday"), "error: 'next tuesday': expected a time like"),
        (("enroll", COURSE_SLUG), "error: name subscribers to enroll, or pass --all"),
    ],
)
def test_bad_admin_input_is_one_clear_line(admin, args, message):
    result = admin(*args)
    assert result.returncode == 1
    assert result.stderr.startswith(message), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_a_broken_course_is_not_queued(admin, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "course.toml").write_text('title = "Broken"\ndescription = "x"\n')
    (broken / "01-a.md").write_text("---\nsubject: A\npreheader: B\ndelay: soon\n---\nBody\n")
    result = admin("sequences", "queue", str(broken))
    assert result.returncode == 1
    assert f"{broken / '01-a.md'}:4: delay:" in result.stderr
    assert "nothing was queued" in result.stderr
    assert "broken" not in ok(admin("sequences", "list"))


def test_serve_fast_forwards_a_course_into_the_outbox(admin, tmp_path):
    """The README's main job: serve on the embedded defaults, a subscriber added from the
    command line, the course arriving in the outbox while the clock runs fast."""
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("w") as log_file:
        service = subprocess.Popen(
            [sys.executable, "-m", "newsletter", "serve", "--speed", "86400", "--port", str(port)],
            cwd=REPO,
            env=admin.env | {"NEWSLETTER_SCHEDULE__TICK_S": "0.2"},
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    outbox = tmp_path / "var" / "outbox"
    try:
        deadline = time.monotonic() + 60
        while "leg-weakness" not in admin("sequences", "list").stdout:
            assert time.monotonic() < deadline, "serve did not queue the shipped course"
            assert service.poll() is None, log.read_text()
            time.sleep(0.2)
        ok(admin("subscribers", "add", "hal@example.com", "--enroll", COURSE_SLUG))
        # The signup page is served by the same process.
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10)
        assert page.status == 200
        assert "Leg weakness after microdiscectomy" in page.read().decode()
        while len(list_outbox(outbox)) < 3:  # a simulated day passes every second
            assert time.monotonic() < deadline, "lessons did not arrive"
            assert service.poll() is None, log.read_text()
            time.sleep(0.2)
    finally:
        service.send_signal(signal.SIGINT)
        service.wait(timeout=20)
    subjects = [entry.subject for entry in list_outbox(outbox)]
    assert subjects[:3] == [
        "Welcome, and why your leg may stay weak",
        "Where sciatica often starts",
        'What "success" means after surgery',
    ]


@pytest.mark.postgres
def test_a_postgresql_database_without_its_schema_says_to_upgrade_it(tmp_path, postgres_url):
    listed = admin_in(tmp_path, postgres_url)("subscribers", "list")

    assert listed.returncode == 1
    assert listed.stderr.startswith("error: database: relation ")
    assert listed.stderr.rstrip().endswith("run `newsletter db upgrade` first)")
    assert "Traceback" not in listed.stderr
