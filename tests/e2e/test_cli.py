"""The `newsletter` command as an editor and an admin run it: a real process, real files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest

from newsletter.content.course import load_course
from tests.conftest import COURSE_DIR, COURSE_SLUG, REPO

FIXTURES = REPO / "tests" / "fixtures" / "articles"


def newsletter(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    environment |= {"NEWSLETTER_SECRET_KEY": "e2e-secret-of-some-length", "COLUMNS": "200"} | (
        env or {}
    )
    return subprocess.run(
        [sys.executable, "-m", "newsletter", *args],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_course_check_passes_the_shipped_course():
    result = newsletter("course", "check", f"lessons/{COURSE_SLUG}")
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout
    assert "6 lessons" in result.stdout


def test_course_check_fails_naming_file_and_line(tmp_path: Path):
    course = Path(shutil.copytree(COURSE_DIR, tmp_path / "broken"))
    lesson = course / "02-the-cause.md"
    lesson.write_text(lesson.read_text().replace("delay: 2 days", "delay: two days"))

    result = newsletter("course", "check", str(course))

    assert result.returncode == 1
    assert f"{lesson}:4: delay: expected a duration" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_every_lesson_previews_as_a_complete_message(tmp_path: Path):
    for number, lesson in enumerate(load_course(COURSE_DIR).lessons, start=1):
        out = tmp_path / f"{number}.eml"
        result = newsletter(
            "preview", COURSE_SLUG, str(number), "--to", "ana@example.com", "--out", str(out)
        )
        assert result.returncode == 0, result.stderr
        message = message_from_bytes(out.read_bytes(), policy=policy.default)
        assert isinstance(message, EmailMessage)
        for header in ("From", "To", "Subject", "Date", "Message-ID", "List-Id"):
            assert message[header], header
        assert message["Subject"] == lesson.subject
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert "<http" in message["List-Unsubscribe"]
        assert "<mailto:" in message["List-Unsubscribe"]
        bodies = [message.get_body((kind,)) for kind in ("plain", "html")]
        for body in bodies:
            assert body is not None
            content = body.get_content()
            assert "not medical advice" in content  # the shipped course's footer note
            assert "Leave this course" in content
            assert "Leave everything" in content
            assert "1 Example Street" in content


@pytest.mark.parametrize(
    ("fmt", "marker"), [("html", "<!doctype html>"), ("text", "Lesson 2 of 6")]
)
def test_preview_shows_html_and_text_to_stdout(fmt: str, marker: str):
    result = newsletter("preview", COURSE_SLUG, "the-cause", "--name", "Ana", "--format", fmt)
    assert result.returncode == 0, result.stderr
    assert marker in result.stdout.lower() if fmt == "html" else marker in result.stdout
    assert "Hi Ana," in result.stdout


def test_preview_of_the_whole_course_writes_every_email(tmp_path: Path):
    result = newsletter("preview", COURSE_SLUG, "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    written = sorted(path.name for path in (tmp_path / COURSE_SLUG).iterdir())
    assert "confirm.eml" in written
    assert {"01-welcome.eml", "01-welcome.html", "01-welcome.txt", "06-summary.eml"} <= set(written)
    assert len(written) == 6 * 3 + 1


def test_preview_of_an_unknown_lesson_lists_the_lessons():
    result = newsletter("preview", COURSE_SLUG, "99")
    assert result.returncode == 1
    assert "no lesson '99'" in result.stderr
    assert "02-the-cause" in result.stderr
    assert "Traceback" not in result.stderr


def test_split_drafts_a_course_that_course_check_accepts(tmp_path: Path):
    out = tmp_path / "drafted"
    result = newsletter("course", "split", str(FIXTURES / "with-headings.md"), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert (out / "course.toml").exists()
    assert len(list(out.glob("*.md"))) >= 2

    check = newsletter("course", "check", str(out))
    assert check.returncode == 0, check.stderr


def test_split_refuses_to_overwrite_without_force(tmp_path: Path):
    out = tmp_path / "drafted"
    out.mkdir()
    (out / "01-mine.md").write_text("keep me")
    result = newsletter("course", "split", str(FIXTURES / "no-headings.txt"), "--out", str(out))
    assert result.returncode == 1
    assert "--force" in result.stderr
    assert (out / "01-mine.md").read_text() == "keep me"


def test_a_bad_config_value_stops_with_one_line_naming_the_key(tmp_path: Path):
    config = tmp_path / "config.toml"
    config.write_text((REPO / "config.toml").read_text().replace("port = 587", 'port = "abc"'))
    result = newsletter("--config", str(config), "course", "check", str(COURSE_DIR))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"error: {config}:")
    assert "smtp.port" in lines[0]
    assert "Traceback" not in result.stderr


def test_an_environment_override_is_named_when_it_is_wrong():
    result = newsletter(
        "course", "check", str(COURSE_DIR), env={"NEWSLETTER_SCHEDULE__TIMEZONE": "Mars/Olympus"}
    )
    assert result.returncode == 1
    assert "environment variable NEWSLETTER_SCHEDULE__TIMEZONE" in result.stderr
    assert "schedule.timezone" in result.stderr


def test_version_comes_from_the_installed_package():
    from importlib.metadata import version

    result = newsletter("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"newsletter {version('newsletter')}"


def test_course_check_reports_front_matter_and_template_errors_in_one_run(tmp_path: Path):
    course = Path(shutil.copytree(COURSE_DIR, tmp_path / "broken"))
    lesson = course / "02-the-cause.md"
    text = lesson.read_text(encoding="utf-8").replace("delay: 2 days", "delay: two days")
    lesson.write_text(text.replace("{{ first_name }}", "{{ first_name.upper() }}", 1))

    result = newsletter("course", "check", str(course))

    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines[0].startswith(f"{lesson}:4: delay: expected a duration")
    assert lines[1].startswith(f"{lesson}:6: {{{{ }}}} may hold only a variable name")
    assert lines[2] == f"2 errors in {course}"


def test_course_check_takes_a_slug_and_warns_without_failing_unless_strict(tmp_path: Path):
    lessons = tmp_path / "lessons"
    course = Path(shutil.copytree(COURSE_DIR, lessons / "plain-links"))
    lesson = course / "03-surgery-outcomes.md"
    lesson.write_text(lesson.read_text() + "\nSee [the old page](http://example.com/old).\n")
    env = {"NEWSLETTER_PATHS__LESSONS": str(lessons)}

    relaxed = newsletter("course", "check", "plain-links", env=env)
    strict = newsletter("course", "check", "plain-links", "--strict", env=env)
    as_json = newsletter("course", "check", "plain-links", "--json", env=env)

    assert relaxed.returncode == 0, relaxed.stderr
    assert f"{lesson}:" in relaxed.stderr
    assert "warning: link 'http://example.com/old'" in relaxed.stderr
    assert "(6 lessons, 1 warning)" in relaxed.stdout
    assert strict.returncode == 1
    document = json.loads(as_json.stdout)
    assert (document["ok"], document["errors"], document["warnings"]) == (True, 0, 1)
    assert document["problems"][0]["severity"] == "warning"
    assert len(document["lessons"]) == 6
