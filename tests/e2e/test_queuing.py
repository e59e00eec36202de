"""Queuing a course is the admin's decision: `serve` queues only for the demo, and queuing
the same files again adds no version."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import COURSE_DIR, COURSE_SLUG, REPO
from tests.databases import on_each_engine
from tests.e2e.conftest import ok
from tests.smtpd import SmtpServer


@on_each_engine
def test_queuing_the_same_course_again_says_unchanged_and_adds_no_version(admin, tmp_path):
    course = Path(shutil.copytree(COURSE_DIR, tmp_path / COURSE_SLUG))
    first = ok(admin("sequences", "queue", str(course)))
    assert "new sequence" in first

    again = admin("sequences", "queue", str(course))

    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith(f"Unchanged: {COURSE_SLUG} version 1 already holds")
    assert json.loads(ok(admin("sequences", "show", COURSE_SLUG, "--json")))["version"] == 1

    lesson = course / "03-surgery-outcomes.md"
    lesson.write_text(lesson.read_text(encoding="utf-8") + "\nOne more line.\n", encoding="utf-8")
    changed = ok(admin("sequences", "queue", str(course)))
    assert "(version 2, 6 lessons)" in changed
    assert json.loads(ok(admin("sequences", "show", COURSE_SLUG, "--json")))["version"] == 2


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_and_stop_serve(env: dict[str, str], tmp_path: Path) -> str:
    """What `serve` says from its start until it is sending, then SIGTERM."""
    log = tmp_path / "serve.log"
    with log.open("w") as output:
        service = subprocess.Popen(
            [sys.executable, "-m", "newsletter", "serve", "--port", str(free_port())],
            cwd=REPO,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while "Sending to" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()
            assert service.poll() is None, log.read_text()
            time.sleep(0.1)
    finally:
        service.send_signal(signal.SIGTERM)
        service.wait(timeout=30)
    return log.read_text()


def test_serve_on_a_production_database_queues_nothing_and_says_how(
    admin, tmp_path, smtp_server: SmtpServer
):
    relay = {
        "NEWSLETTER_SMTP__HOST": smtp_server.host,
        "NEWSLETTER_SMTP__PORT": str(smtp_server.port),
        "NEWSLETTER_SMTP__TLS": "none",
        "NEWSLETTER_SMTP__ALLOW_HTTP_LINKS": "true",
    }
    said = start_and_stop_serve(admin.env | relay, tmp_path)
    assert (
        "No live course, so no lessons will be sent: queue one with "
        "`newsletter sequences queue lessons/<slug>`." in said
    )
    assert "queued the shipped course" not in said
    assert json.loads(ok(admin("sequences", "list", "--json"))) == {"sequences": []}


def test_the_demo_queues_only_the_shipped_course_and_says_so(admin, tmp_path):
    lessons = tmp_path / "lessons"
    shutil.copytree(COURSE_DIR, lessons / COURSE_SLUG)
    shutil.copytree(COURSE_DIR, lessons / "a-draft-course")  # a writer's work in progress
    said = start_and_stop_serve(admin.env | {"NEWSLETTER_PATHS__LESSONS": str(lessons)}, tmp_path)
    assert said.count("queued the shipped course") == 1
    assert "No live course" not in said
    listed = json.loads(ok(admin("sequences", "list", "--json")))["sequences"]
    assert [row["slug"] for row in listed] == [COURSE_SLUG]
