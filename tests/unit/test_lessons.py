"""Lesson files and course folders -> Lesson and Course; each problem at its file line."""

from __future__ import annotations

import textwrap
from datetime import time, timedelta
from pathlib import Path

import pytest

from newsletter.content.course import Course, load_course
from newsletter.content.lessons import (
    format_duration,
    lesson_key,
    parse_duration,
    parse_lesson,
    parse_time_of_day,
)
from newsletter.errors import ContentError

SHIPPED_COURSE = Path(__file__).parents[2] / "lessons" / "leg-weakness-after-microdiscectomy"
LESSON_PATH = Path("lessons/demo/03-hello.md")
KNOWN_KEYS = "subject, preheader, delay, send_at"


def lesson_text(front: str, body: str = "Hello.\n") -> str:
    return "---\n" + textwrap.dedent(front) + "---\n" + body


def problems_of(text: str, path: Path = LESSON_PATH) -> list[tuple[int, str]]:
    with pytest.raises(ContentError) as caught:
        parse_lesson(path, text)
    assert {problem.path for problem in caught.value.problems} == {path}
    return [(problem.line, problem.message) for problem in caught.value.problems]


# --- durations and times ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2 days", timedelta(days=2)),
        ("1 day", timedelta(days=1)),
        ("1 week 3 days", timedelta(days=10)),
        ("1 week, 3 days", timedelta(days=10)),
        ("1 week and 3 days", timedelta(days=10)),
        ("36 hours", timedelta(hours=36)),
        ("0 days", timedelta(0)),
        ("90 minutes", timedelta(minutes=90)),
        ("1 hour 30 minutes", timedelta(minutes=90)),
        ("2 Weeks", timedelta(weeks=2)),
        ("  3 days  ", timedelta(days=3)),
    ],
)
def test_parse_duration_reads_units_and_sums_them(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text",
    ["soon", "2 fortnights", "", "   ", "days", "2", "-2 days", "2.5 days", "2 days later", "1h"],
)
def test_parse_duration_refuses_anything_else(text: str) -> None:
    with pytest.raises(ValueError, match="expected a duration such as") as caught:
        parse_duration(text)
    assert repr(text) in str(caught.value)


@pytest.mark.parametrize(
    ("delay", "text"),
    [
        (timedelta(days=2), "2 days"),
        (timedelta(days=1), "1 day"),
        (timedelta(weeks=1), "1 week"),
        (timedelta(weeks=2), "2 weeks"),
        (timedelta(days=10), "10 days"),
        (timedelta(hours=36), "36 hours"),
        (timedelta(hours=1), "1 hour"),
        (timedelta(minutes=90), "90 minutes"),
    ],
)
def test_format_duration_is_the_inverse_of_parse_duration(delay: timedelta, text: str) -> None:
    assert format_duration(delay) == text
    assert parse_duration(format_duration(delay)) == delay


def test_format_duration_of_no_delay_parses_back() -> None:
    assert parse_duration(format_duration(timedelta(0))) == timedelta(0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("09:30", time(9, 30)), ("9:05", time(9, 5)), ("00:00", time(0, 0)), ("23:59", time(23, 59))],
)
def test_parse_time_of_day_reads_hours_and_minutes(text: str, expected: time) -> None:
    assert parse_time_of_day(text) == expected


@pytest.mark.parametrize("text", ["24:00", "9:60", "9.30", "0930", "9am", ""])
def test_parse_time_of_day_refuses_anything_else(text: str) -> None:
    with pytest.raises(ValueError, match="expected a time of day"):
        parse_time_of_day(text)


@pytest.mark.parametrize(
    ("stem", "key"),
    [
        ("01-welcome", "welcome"),
        ("2_the-cause", "the-cause"),
        ("10 summary", "summary"),
        ("03-2024-review", "2024-review"),
        ("intro", "intro"),
        ("07", "07"),
    ],
)
def test_lesson_key_drops_only_the_order_prefix(stem: str, key: str) -> None:
    assert lesson_key(Path(f"{stem}.md")) == key


# --- one lesson -------------------------------------------------------------------------


def test_valid_lesson_is_parsed() -> None:
    text = lesson_text(
        """\
        subject: Say "hello" to the garden
        preheader: A short note   on  light
        delay: 1 week 2 days
        send_at: 09:30
        """,
        body="\n\nFirst line of the body.\n\nSecond paragraph.\n\n\n",
    )

    lesson = parse_lesson(LESSON_PATH, text)

    assert lesson.path == LESSON_PATH
    assert lesson.key == "hello"
    assert lesson.subject == 'Say "hello" to the garden'
    assert lesson.preheader == "A short note on light"
    assert lesson.delay == timedelta(days=9)
    assert lesson.body == "First line of the body.\n\nSecond paragraph.\n"
    assert lesson.body_line == 9
    assert text.splitlines()[lesson.body_line - 1] == "First line of the body."


def test_send_at_stays_a_time_of_day_not_yaml_sexagesimal() -> None:
    # YAML 1.1 reads an unquoted 09:30 as 570 (base 60); the lesson must get 09:30.
    lesson = parse_lesson(
        LESSON_PATH, lesson_text("subject: S\npreheader: P\ndelay: 2 days\nsend_at: 09:30\n")
    )

    assert lesson.send_at == time(9, 30)


def test_yaml_booleans_stay_text() -> None:
    lesson = parse_lesson(LESSON_PATH, lesson_text("subject: no\npreheader: yes\ndelay: 2 days\n"))

    assert (lesson.subject, lesson.preheader) == ("no", "yes")


def test_lesson_without_send_at_goes_out_any_time_in_the_window() -> None:
    lesson = parse_lesson(LESSON_PATH, lesson_text("subject: S\npreheader: P\ndelay: 0 days\n"))

    assert lesson.send_at is None
    assert lesson.delay == timedelta(0)
    assert lesson.body_line == 6


def test_windows_line_endings_are_read_like_unix_ones() -> None:
    text = "---\r\nsubject: S\r\npreheader: P\r\ndelay: 2 days\r\n---\r\nBody\r\n"

    lesson = parse_lesson(LESSON_PATH, text)

    assert (lesson.subject, lesson.body, lesson.body_line) == ("S", "Body\n", 6)


def test_unknown_key_is_reported_at_its_line() -> None:
    text = lesson_text("subject: S\npreheader: P\ndelay: 2 days\ncolour: red\n")

    assert problems_of(text) == [(5, f"unknown key 'colour' (expected one of: {KNOWN_KEYS})")]


def test_bad_delay_is_reported_at_its_line() -> None:
    text = lesson_text("subject: S\npreheader: P\ndelay: soon\n")

    assert problems_of(text) == [
        (4, 'delay: expected a duration such as "2 days" or "12 hours", got \'soon\'')
    ]


def test_bad_send_at_is_reported_at_its_line() -> None:
    text = lesson_text("subject: S\npreheader: P\ndelay: 2 days\nsend_at: 25:00\n")

    assert problems_of(text) == [
        (5, "send_at: expected a time of day such as \"09:30\", got '25:00'")
    ]


def test_subject_of_sixty_characters_is_accepted() -> None:
    lesson = parse_lesson(
        LESSON_PATH, lesson_text(f"subject: {'x' * 60}\npreheader: P\ndelay: 1 day\n")
    )

    assert len(lesson.subject) == 60


def test_subject_over_sixty_characters_is_reported_at_its_line() -> None:
    text = lesson_text(f"preheader: P\nsubject: {'x' * 61}\ndelay: 2 days\n")

    assert problems_of(text) == [
        (3, "subject: 61 characters; keep it to 60 so inboxes show it whole")
    ]


def test_empty_subject_is_reported_at_its_line() -> None:
    text = lesson_text("subject: ''\npreheader: P\ndelay: 2 days\n")

    assert problems_of(text) == [(2, "subject: must not be empty")]


def test_missing_subject_is_reported_at_line_one() -> None:
    text = lesson_text("preheader: P\ndelay: 2 days\n")

    assert problems_of(text) == [(1, "front matter lacks 'subject'")]


def test_duplicate_key_is_reported_at_its_second_line() -> None:
    text = lesson_text("subject: S\npreheader: P\ndelay: 2 days\nsubject: T\n")

    assert problems_of(text) == [(5, "'subject' is given twice")]


def test_nested_value_is_reported_at_its_line() -> None:
    text = lesson_text("subject: S\npreheader:\n  short: yes\ndelay: 2 days\n")

    assert problems_of(text)[0] == (3, "preheader: expected a single value")


def test_invalid_yaml_is_reported_at_the_line_it_breaks() -> None:
    text = lesson_text("subject: S\npreheader: P\n  oops: here\ndelay: 2 days\n")

    line, message = problems_of(text)[0]

    assert line == 4
    assert message.startswith("front matter is not valid YAML: ")


def test_invalid_yaml_does_not_claim_present_keys_are_missing() -> None:
    text = lesson_text("subject: S\npreheader: P\n  oops: here\ndelay: 2 days\n")

    assert len(problems_of(text)) == 1


def test_front_matter_that_is_not_a_mapping_is_reported() -> None:
    text = lesson_text("- subject\n- delay\n")

    assert problems_of(text)[0] == (2, "front matter must be 'key: value' lines")


@pytest.mark.parametrize("text", ["subject: S\n\nHello.\n", "", "\n---\nsubject: S\n---\n"])
def test_missing_front_matter_is_reported_at_line_one(text: str) -> None:
    assert problems_of(text) == [(1, "expected front matter starting with '---'")]


def test_unclosed_front_matter_is_reported_at_line_one() -> None:
    text = "---\nsubject: S\npreheader: P\ndelay: 2 days\n\nHello.\n"

    assert problems_of(text) == [(1, "front matter is never closed by '---'")]


def test_every_problem_of_a_file_is_reported_at_once() -> None:
    text = lesson_text(
        """\
        subject: S
        colour: red
        delay: whenever
        send_at: 25:00
        subject: T
        """
    )

    assert problems_of(text) == [
        (6, "'subject' is given twice"),
        (3, f"unknown key 'colour' (expected one of: {KNOWN_KEYS})"),
        (4, 'delay: expected a duration such as "2 days" or "12 hours", got \'whenever\''),
        (5, "send_at: expected a time of day such as \"09:30\", got '25:00'"),
        (1, "front matter lacks 'preheader'"),
    ]


def test_content_error_message_is_one_line_per_problem() -> None:
    text = lesson_text("colour: red\ndelay: soon\n")

    with pytest.raises(ContentError) as caught:
        parse_lesson(LESSON_PATH, text)

    assert str(caught.value).split("\n") == [
        f"{LESSON_PATH}:2: unknown key 'colour' (expected one of: {KNOWN_KEYS})",
        f'{LESSON_PATH}:3: delay: expected a duration such as "2 days" or "12 hours", got \'soon\'',
        f"{LESSON_PATH}:1: front matter lacks 'subject'",
        f"{LESSON_PATH}:1: front matter lacks 'preheader'",
    ]


# --- a course folder --------------------------------------------------------------------


def write_lesson(folder: Path, name: str, subject: str) -> None:
    (folder / name).write_text(
        lesson_text(f"subject: {subject}\npreheader: About {subject}\ndelay: 2 days\n"),
        encoding="utf-8",
    )


@pytest.fixture
def course_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "garden-basics"
    folder.mkdir()
    (folder / "course.toml").write_text(
        'title = "  Garden basics "\ndescription = """\nA short\n  course on plants.\n"""\n',
        encoding="utf-8",
    )
    # Written out of order: the file names, not the writing, decide the order.
    write_lesson(folder, "03-soil.md", "Soil")
    write_lesson(folder, "01-light.md", "Light")
    write_lesson(folder, "02-water.md", "Water")
    (folder / "notes.txt").write_text("not a lesson", encoding="utf-8")
    return folder


def course_problems(folder: Path) -> list[tuple[Path, int, str]]:
    with pytest.raises(ContentError) as caught:
        load_course(folder)
    return [(p.path, p.line, p.message) for p in caught.value.problems]


def test_course_lessons_are_ordered_by_file_name(course_dir: Path) -> None:
    course = load_course(course_dir)

    assert course.slug == "garden-basics"
    assert course.title == "Garden basics"
    assert course.description == "A short course on plants."
    assert [lesson.path.name for lesson in course.lessons] == [
        "01-light.md",
        "02-water.md",
        "03-soil.md",
    ]
    assert [lesson.key for lesson in course.lessons] == ["light", "water", "soil"]
    assert [lesson.subject for lesson in course.lessons] == ["Light", "Water", "Soil"]
    assert course.number_of(course.lessons[2]) == 3


@pytest.mark.parametrize("reference", ["2", "water", "02-water.md", "02-water"])
def test_course_finds_a_lesson_by_number_key_or_file_name(course_dir: Path, reference: str) -> None:
    assert load_course(course_dir).lesson(reference).path == course_dir / "02-water.md"


@pytest.mark.parametrize("reference", ["rain", "0", "4", "water.md"])
def test_unknown_lesson_reference_lists_the_lessons(course_dir: Path, reference: str) -> None:
    course: Course = load_course(course_dir)

    with pytest.raises(ContentError) as caught:
        course.lesson(reference)

    assert str(caught.value) == (
        f"{course_dir}: no lesson '{reference}' (have: 01-light, 02-water, 03-soil)"
    )


def test_missing_manifest_is_reported(course_dir: Path) -> None:
    (course_dir / "course.toml").unlink()

    assert course_problems(course_dir) == [
        (course_dir / "course.toml", 0, "missing; it names the course")
    ]


def test_unknown_manifest_key_is_reported_at_its_line(course_dir: Path) -> None:
    (course_dir / "course.toml").write_text(
        'title = "T"\ndescription = "D"\nauthor = "Sam"\n', encoding="utf-8"
    )

    assert course_problems(course_dir) == [
        (
            course_dir / "course.toml",
            3,
            "unknown key 'author' (expected one of: title, description, language, consent, "
            "footer_note, sender, list, on_finish, sending)",
        )
    ]


def test_invalid_manifest_toml_is_reported_at_its_line(course_dir: Path) -> None:
    (course_dir / "course.toml").write_text('title = "T"\ndescription = \n', encoding="utf-8")

    [(path, line, message)] = course_problems(course_dir)

    assert (path, line) == (course_dir / "course.toml", 2)
    assert message.startswith("not valid TOML: ")


def test_blank_manifest_title_is_reported_at_its_line(course_dir: Path) -> None:
    (course_dir / "course.toml").write_text('title = "  "\ndescription = "D"\n', encoding="utf-8")

    assert course_problems(course_dir) == [
        (course_dir / "course.toml", 1, "'title' must be a non-empty string")
    ]


def test_two_files_with_the_same_key_are_reported(course_dir: Path) -> None:
    write_lesson(course_dir, "04_water.md", "More water")

    assert course_problems(course_dir) == [
        (course_dir / "04_water.md", 1, "same lesson name as 02-water.md; rename one")
    ]


def test_problems_of_every_file_are_reported_together(course_dir: Path) -> None:
    (course_dir / "course.toml").write_text('title = "T"\n', encoding="utf-8")
    (course_dir / "02-water.md").write_text(
        lesson_text("subject: Water\npreheader: P\ndelay: soon\n"), encoding="utf-8"
    )
    (course_dir / "03-soil.md").write_text("no front matter\n", encoding="utf-8")

    assert [(path.name, line) for path, line, _ in course_problems(course_dir)] == [
        ("course.toml", 0),
        ("02-water.md", 4),
        ("03-soil.md", 1),
    ]


def test_folder_without_lessons_is_reported(tmp_path: Path) -> None:
    (tmp_path / "course.toml").write_text('title = "T"\ndescription = "D"\n', encoding="utf-8")

    assert course_problems(tmp_path) == [(tmp_path, 0, "no lesson files (*.md) in this folder")]


def test_missing_folder_is_reported(tmp_path: Path) -> None:
    assert course_problems(tmp_path / "absent") == [
        (tmp_path / "absent", 0, "not a course folder (expected lessons/<slug>/)")
    ]


def test_shipped_course_loads() -> None:
    course = load_course(SHIPPED_COURSE)

    assert course.title == "Leg weakness after microdiscectomy"
    assert [lesson.key for lesson in course.lessons] == [
        "welcome",
        "the-cause",
        "surgery-outcomes",
        "nerve-damage",
        "regeneration",
        "summary",
    ]
    assert course.lessons[0].delay == timedelta(0)
    assert all(lesson.delay > timedelta(0) for lesson in course.lessons[1:])
