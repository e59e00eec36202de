"""`course check` passes the shipped course and names file and line of every broken lesson."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from newsletter.content.check import check_course
from newsletter.errors import errors_among
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
        ("/relative/page", "a full address starting with https://"),
        ("page.html", "a full address starting with https://"),
        ("ftp://example.com/file", "ftp: links are not allowed"),
        ("tel:+441234567890", "tel: links are not allowed"),
        ("javascript:alert(document.cookie)", "a javascript: link runs code"),
        ("JavaScript:alert(1)", "a javascript: link runs code"),
        ("jav&#x61;script:alert(1)", "a javascript: link runs code"),
        ("vbscript:msgbox(1)", "a vbscript: link runs code"),
        ("data:text/html,<script>alert(1)</script>", "a data: link embeds"),
        ("file:///etc/passwd", "a file: link points into the reader's own computer"),
        ("https://nodot/page", "no valid host"),
        ("mailto:nobody", "needs an address"),
    ],
)
def test_unsafe_or_malformed_links_are_errors_at_their_line(
    course_copy, env, settings, link, reason
):
    path = write_lesson(
        course_copy,
        "07-extra.md",
        "subject: One more thing\npreheader: A short note that adds to it\ndelay: 1 day",
        f"First paragraph.\n\nSecond paragraph with [a link]({link}).\n",
    )
    _, problems = check_course(course_copy, env, settings.sender)
    [problem] = problems
    assert str(problem).startswith(f"{path}:8: link ")
    assert reason in problem.message
    assert problem.is_error


def test_an_autolink_or_an_image_with_an_unsafe_address_is_an_error(course_copy, env, settings):
    path = write_lesson(
        course_copy,
        "07-extra.md",
        "subject: One more thing\npreheader: A short note that adds to it\ndelay: 1 day",
        "An autolink <javascript:alert(1)>.\n\n![a pixel](data:image/gif;base64,R0lGOD)\n",
    )
    assert problems_of(course_copy, env, settings) == [
        f"{path}:6: link 'javascript:alert(1)': a javascript: link runs code; it is not allowed",
        f"{path}:8: image 'data:image/gif;base64,R0lGOD': a data: link embeds a document or "
        "image that mail clients block; it is not allowed",
    ]


def test_a_plain_http_link_is_a_warning_that_does_not_fail_the_check(course_copy, env, settings):
    path = write_lesson(
        course_copy,
        "07-extra.md",
        "subject: One more thing\npreheader: A short note that adds to it\ndelay: 1 day",
        "See [the study](http://www.example.org/study).\n",
    )
    course, problems = check_course(course_copy, env, settings.sender)
    assert course is not None
    [problem] = problems
    assert not problem.is_error
    assert errors_among(problems) == []
    assert str(problem) == (
        f"{path}:6: warning: link 'http://www.example.org/study': plain http://; "
        "use https:// if the site offers it"
    )


def test_https_mailto_and_personal_links_pass(course_copy, env, settings):
    write_lesson(
        course_copy,
        "07-extra.md",
        "subject: One more thing\npreheader: A short note that adds to it\ndelay: 1 day",
        "[Site](https://example.org/a?b=c#d), [write](mailto:help@example.org?subject=Hi) "
        "and [leave]({{ unsubscribe_url }}).\n",
    )
    assert problems_of(course_copy, env, settings) == []


def test_a_link_in_an_email_template_is_checked_too(course_copy, env, settings, tmp_path):
    templates = Path(shutil.copytree(settings.templates_dir, tmp_path / "templates"))
    lesson_html = templates / "lesson.html"
    lesson_html.write_text(
        lesson_html.read_text().replace(
            "{% endblock %}\n{% block footer %}",
            '<p><a href="javascript:void(0)">More</a> <a href="http://example.org/x">x</a></p>'
            "\n{% endblock %}\n{% block footer %}",
            1,
        )
    )
    problems = problems_of(course_copy, make_environment(templates), settings)
    assert problems == [
        f"{lesson_html}: the rendered email links to 'javascript:void(0)': a javascript: link "
        "runs code; it is not allowed",
        f"{lesson_html}: warning: the rendered email links to 'http://example.org/x': plain "
        "http://; use https:// if the site offers it",
    ]


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


def test_a_confirmation_email_that_does_not_render_names_the_course_file(
    course_copy, settings, tmp_path
):
    templates = Path(shutil.copytree(settings.templates_dir, tmp_path / "templates"))
    confirm_html = templates / "confirm.html"
    confirm_html.write_text(confirm_html.read_text().replace("{{ course.title }}", "{{ nope }}"))
    problems = problems_of(course_copy, make_environment(templates), settings)
    assert len(problems) == 1
    assert problems[0].startswith(
        f"{course_copy / 'course.toml'}: the confirmation email does not render: UndefinedError"
    )


def test_front_matter_manifest_and_template_errors_are_all_reported_in_one_run(
    course_copy, env, settings
):
    broken_front = course_copy / "02-the-cause.md"
    broken_front.write_text(
        broken_front.read_text(encoding="utf-8")
        .replace("delay: 2 days", "delay: two days")
        .replace("Hi {{ first_name }},", "Hi {{ first_name }}, {{ coupon }}"),
        encoding="utf-8",
    )
    other = write_lesson(
        course_copy,
        "07-extra.md",
        "subject: One more thing\npreheader: A short note that adds to it\ndelay: 1 day",
        "Hello,\n\nThis {{ breaks\n",
    )
    (course_copy / "course.toml").write_text('title = ""\ndescription = "Fine."\n')

    course, problems = check_course(course_copy, env, settings.sender)

    found = [str(problem) for problem in problems]
    assert course is None
    assert found[0].startswith(f"{broken_front}:4: delay: expected a duration")
    assert found[1].startswith(f"{broken_front}:6: unknown variable 'coupon'")
    assert found[2].startswith(f"{other}:8: template error")
    assert found[3] == f"{course_copy / 'course.toml'}:1: 'title' must be a non-empty string"
    assert len(found) == 4
