"""Course files from a writer who is not the administrator, through the real command: a
template injection fails `course check`, `preview` and `sequences queue` with file:line and
runs nothing; header injection and unsafe links are refused; http:// links only warn; and
courses in German and Japanese check, preview in every format and parse back as written."""

from __future__ import annotations

import shutil
import subprocess
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest

from newsletter.content.course import list_label, load_course
from tests.conftest import COURSE_DIR, REPO

UNICODE_COURSES = REPO / "tests" / "fixtures" / "courses"
FRONT = "subject: One more thing\npreheader: A short note that adds to it\ndelay: 1 day"


@pytest.fixture
def newsletter(admin):  # type: ignore[no-untyped-def]
    """The admin's `newsletter …` (tests/e2e/conftest.py) with a narrow COLUMNS, so that a
    wrapped problem line would show."""

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return admin(*args, COLUMNS="80")  # type: ignore[no-any-return]

    return run


@pytest.fixture
def hostile(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A copy of the shipped course with a lesson that would create `proof` if it ran."""
    folder = Path(shutil.copytree(COURSE_DIR, tmp_path / "hostile"))
    proof = tmp_path / "proof"
    lesson = folder / "07-extra.md"
    lesson.write_text(
        f"---\n{FRONT}\n---\nHello {{{{ first_name }}}},\n\n"
        f"{{{{ lipsum.__globals__['os'].popen('touch {proof}').read() }}}}\n",
        encoding="utf-8",
    )
    return folder, lesson, proof


def test_template_injection_fails_check_preview_and_queue_and_runs_nothing(newsletter, hostile):
    folder, lesson, proof = hostile
    expected = f"{lesson}:8: {{{{ }}}} may hold only a variable name; found a call '(...)'"

    for command in (
        ("course", "check", str(folder)),
        ("preview", str(folder), "extra"),
        ("preview", str(folder), "extra", "--format", "html"),
        ("preview", str(folder), "--out", str(folder.parent / "previews")),
        ("sequences", "queue", str(folder)),
    ):
        result = newsletter(*command)
        assert result.returncode == 1, command
        assert expected in result.stderr, (command, result.stderr)
        assert "Traceback" not in result.stderr + result.stdout
        assert not proof.exists(), command

    listed = newsletter("sequences", "list")
    assert listed.returncode == 0, listed.stderr
    assert "hostile" not in listed.stdout  # nothing was queued


def test_a_title_carrying_a_bcc_header_is_refused_at_its_line(newsletter, tmp_path):
    folder = Path(shutil.copytree(COURSE_DIR, tmp_path / "course"))
    manifest = folder / "course.toml"
    manifest.write_text(
        'title = "Course\\r\\nBcc: x@evil.test"\ndescription = "About backs."\n', "utf-8"
    )
    for command in (("course", "check", str(folder)), ("sequences", "queue", str(folder))):
        result = newsletter(*command)
        assert result.returncode == 1
        assert (
            f"{manifest}:1: title: contains a control character (U+000D carriage return)"
            in result.stderr
        )


def test_unsafe_links_fail_and_http_links_warn_unless_strict(newsletter, tmp_path):
    folder = Path(shutil.copytree(COURSE_DIR, tmp_path / "links"))
    lesson = folder / "07-extra.md"
    lesson.write_text(
        f"---\n{FRONT}\n---\nSee [the study](http://www.example.org/study).\n", "utf-8"
    )
    warning = (
        f"{lesson}:6: warning: link 'http://www.example.org/study': plain http://; "
        "use https:// if the site offers it\n"
    )

    checked = newsletter("course", "check", str(folder))
    assert checked.returncode == 0, checked.stderr
    assert warning in checked.stderr  # one line, however narrow the terminal
    assert "OK" in checked.stdout
    assert "1 warning" in checked.stdout

    strict = newsletter("course", "check", "--strict", str(folder))
    assert strict.returncode == 1
    assert warning in strict.stderr
    assert "1 warning in" in strict.stderr

    queued = newsletter("sequences", "queue", str(folder))
    assert queued.returncode == 0, queued.stderr
    assert warning in queued.stderr
    assert "Queued links" in queued.stdout

    lesson.write_text(f"---\n{FRONT}\n---\nSee [this](javascript:alert(1)).\n", "utf-8")
    refused = newsletter("course", "check", str(folder))
    assert refused.returncode == 1
    assert f"{lesson}:6: link 'javascript:alert(1)': a javascript: link runs code" in (
        refused.stderr
    )
    assert "1 error in" in refused.stderr


def test_markup_in_a_subject_is_printed_literally(newsletter, tmp_path):
    folder = Path(shutil.copytree(COURSE_DIR, tmp_path / "markup"))
    (folder / "07-extra.md").write_text(
        "---\nsubject: '[bold red]Loud[/] [link=https://evil.test]click[/link]'\n"
        "preheader: Something to add here\ndelay: 1 day\n---\nBody.\n",
        "utf-8",
    )
    result = newsletter("course", "check", str(folder))
    assert result.returncode == 0, result.stderr
    assert "[bold red]Loud[/]" in result.stdout


@pytest.mark.parametrize("folder", ["rückenschule", "腰痛の基礎"])
def test_a_course_in_another_language_checks_and_previews_in_every_format(
    newsletter, tmp_path, folder
):
    path = UNICODE_COURSES / folder
    course = load_course(path)
    checked = newsletter("course", "check", str(path))
    assert checked.returncode == 0, checked.stderr
    assert checked.stderr == ""
    assert course.title in checked.stdout.replace("\n", "")

    single = newsletter("preview", str(path), "1", "--name", "Zoë 山田")
    assert single.returncode == 0, single.stderr
    assert single.stdout.isascii()  # 7-bit: headers encoded, bodies quoted-printable

    out = tmp_path / "previews"
    everything = newsletter("preview", str(path), "--out", str(out), "--name", "Zoë 山田")
    assert everything.returncode == 0, everything.stderr
    folder_out = out / course.slug
    assert len(list(folder_out.iterdir())) == 3 * len(course.lessons) + 1
    for lesson in course.lessons:
        stem = folder_out / lesson.path.stem
        message = parse((stem.with_suffix(".eml")).read_bytes())
        assert message["Subject"] == lesson.subject
        assert message["List-Id"] == f"{course.title} <{list_label(course.slug)}.example.org>"
        assert message["To"].addresses[0].display_name == "Zoë 山田"
        for shown in (stem.with_suffix(".html"), stem.with_suffix(".txt")):
            content = shown.read_text(encoding="utf-8")
            assert lesson.subject in content
            assert "Zoë 山田" in content
    confirm = parse((folder_out / "confirm.eml").read_bytes())
    text = confirm.get_body(("plain",))
    assert text is not None
    assert course.title in text.get_content()


def parse(raw: bytes) -> EmailMessage:
    message = message_from_bytes(raw, policy=policy.default)
    assert isinstance(message, EmailMessage)
    assert message.defects == []
    return message
