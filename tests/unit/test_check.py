"""`course check` passes the shipped course and names file and line of every broken lesson."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from newsletter.content.check import check_course
from newsletter.render import make_environment
from tests.conftest import COURSE_DIR


@pytest.fixture
def course_copy(tmp_path: Path) -> Path:
    return Path(shutil.copytree(COURSE_DIR, tmp_path / "course"))


def write_lesson(folder: Path, name: str, front: str, body: str) -> Path:
    path = folder / name
    path.write_text(f"---\n{front.strip()}\n---\n{body}", encoding="utf-8")
    return path


def problems_of(folder: Path, env, settings) -> list[str]:
    _, problems = check_course(folder, env, settings.sender)
    return [str(problem) for problem in problems]


def test_the_shipped_course_passes(env, settings):
    course, problems = check_course(COURSE_DIR, env, settings.sender)
    assert problems == []
    assert course is not None
    assert len(course.lessons) >= 6


def test_unknown_template_variable_is_reported_at_its_line(course_copy, env, settings):
    path = write_lesson(
        course_copy,
        "07-extra.md",
        "subject: One more thing\npreheader: A short note that adds to it\ndelay: 1 day",
        "Hello {{ first_name }},\n\nSome text.\n\nYour code is {{ coupon_code }}.\n",
    )
    [problem] = problems_of(course_copy, env, settings)
    assert problem.startswith(f"{path}:10: unknown variable 'coupon_code' (known: ")
    assert "first_name" in problem


def test_template_syntax_error_is_reported_at_its_line(course_copy, env, settings):
    path = write_lesson(
        course_copy,
        "07-extra.md",
        "subject: One more thing\npreheader: A short note that adds to it\ndelay: 1 day",
        "Hello,\n\nThis {{ breaks\n",
    )
    [problem] = problems_of(course_copy, env, settings)
    assert problem.startswith(f"{path}:8: template error")


@pytest.mark.parametrize(
    ("link", "reason"),
    [
        ("/relative/page", "full address"),
        ("ftp://example.com/file", "full address"),
        ("https://nodot/page", "no valid host"),
        ("mailto:nobody", "needs an address"),
    ],
)
def test_malformed_links_are_reported_at_their_line(course_copy, env, settings, link, reason):
    path = write_lesson(
        course_copy,
        "07-extra.md",
        "subject: One more thing\npreheader: A short note that adds to it\ndelay: 1 day",
        f"First paragraph.\n\nSecond paragraph with [a link]({link}).\n",
    )
    [problem] = problems_of(course_copy, env, settings)
    assert problem.startswith(f"{path}:8: link ")
    assert reason in problem


def test_front_matter_problems_of_several_files_are_all_reported(course_copy, env, settings):
    first = write_lesson(
        course_copy,
        "07-long.md",
        "subject: "
        + "A subject that goes on and on far past what any phone shows" * 2
        + "\npreheader: Fine\ndelay: 2 days",
        "Body.\n",
    )
    second = write_lesson(
        course_copy,
        "08-late.md",
        "subject: Fine\npreheader: Also fine here\ndelay: soon-ish",
        "Body.\n",
    )
    problems = problems_of(course_copy, env, settings)
    assert any(p.startswith(f"{first}:2: subject: ") for p in problems)
    assert any(p.startswith(f"{second}:4: delay: ") for p in problems)


def test_a_preheader_that_repeats_the_subject_is_reported(course_copy, env, settings):
    path = write_lesson(
        course_copy,
        "07-echo.md",
        "subject: Rest and recovery\npreheader: Recovery and rest!\ndelay: 1 day",
        "Body.\n",
    )
    assert problems_of(course_copy, env, settings) == [
        f"{path}:1: preheader repeats the subject; make it add something"
    ]


def test_a_broken_template_names_the_lesson_it_broke_on(course_copy, env, settings, tmp_path):
    templates = Path(shutil.copytree(settings.templates_dir, tmp_path / "templates"))
    lesson_html = templates / "lesson.html"
    lesson_html.write_text(
        lesson_html.read_text().replace("{{ lesson.subject }}", "{{ lesson.title }}")
    )
    problems = problems_of(course_copy, make_environment(templates), settings)
    assert len(problems) == len(list(course_copy.glob("*.md")))
    assert all("does not render" in p and "title" in p for p in problems), problems
