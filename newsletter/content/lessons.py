"""A lesson file (YAML front matter + Markdown body) -> Lesson; every problem names file:line."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import time, timedelta
from pathlib import Path

import yaml

from newsletter.errors import ContentError, Problem
from newsletter.headers import control_character
from newsletter.words import plural

FRONT_MATTER_FENCE = "---"
#: Inboxes cut subjects around here; phones earlier still.
SUBJECT_MAX_CHARS = 60
REQUIRED_KEYS = ("subject", "preheader", "delay")
OPTIONAL_KEYS = ("send_at",)

_DURATION_PART = re.compile(r"(\d+)\s*(minute|hour|day|week)s?", re.IGNORECASE)
_UNIT = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1), "day": timedelta(days=1)}
_UNIT["week"] = timedelta(weeks=1)
_TIME_OF_DAY = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)")


@dataclass(frozen=True, slots=True)
class Lesson:
    path: Path
    #: Stable identity across edits and renumbering: the file name without its order prefix.
    key: str
    subject: str
    preheader: str
    #: Wait after the previous lesson was sent (for the first lesson: after confirmation).
    delay: timedelta
    #: Local time of day to send at; None: any time within the send window.
    send_at: time | None
    #: Markdown source, which may use the personal variables of render.PERSONAL_FIELDS.
    body: str
    #: File line of the body's first line, to turn body line numbers into file lines.
    body_line: int


@dataclass(frozen=True, slots=True)
class LessonBody:
    """A lesson file's body, found by its front matter's fences whatever the front matter
    says, so that a check can report the body's problems along with the front matter's."""

    path: Path
    body: str
    body_line: int  #: file line of the body's first line


def lesson_body(path: Path, text: str) -> LessonBody | None:
    """The body after the front matter; None when the fences are missing."""
    lines = text.splitlines()
    if not lines or lines[0].strip() != FRONT_MATTER_FENCE:
        return None
    end = next((i for i in range(1, len(lines)) if lines[i].strip() == FRONT_MATTER_FENCE), None)
    if end is None:
        return None
    after = lines[end + 1 :]
    return LessonBody(
        path, "\n".join(after).strip("\n") + "\n", end + 2 + _leading_blank_lines(after)
    )


def parse_duration(text: str) -> timedelta:
    """'2 days', '1 week 3 days', '36 hours' -> timedelta; ValueError otherwise."""
    cleaned = re.sub(r"[,\s]+(and\s+)?", " ", text.strip())
    parts = list(_DURATION_PART.finditer(cleaned))
    leftover = _DURATION_PART.sub("", cleaned).strip()
    if not parts or leftover:
        raise ValueError(f'expected a duration such as "2 days" or "12 hours", got {text!r}')
    return sum((int(m.group(1)) * _UNIT[m.group(2).lower()] for m in parts), timedelta())


def format_duration(delay: timedelta) -> str:
    """The inverse of parse_duration, in the largest whole units: '2 days', '36 hours'."""
    if not delay:
        return "0 days"
    for unit in ("week", "day", "hour", "minute"):
        count, rest = divmod(delay, _UNIT[unit])
        if not rest:
            return plural(count, unit)
    return str(delay)


def parse_time_of_day(text: str) -> time:
    if not (match := _TIME_OF_DAY.fullmatch(text.strip())):
        raise ValueError(f'expected a time of day such as "09:30", got {text!r}')
    return time(int(match.group(1)), int(match.group(2)))


def lesson_key(path: Path) -> str:
    return re.sub(r"^\d+[-_ ]*", "", path.stem) or path.stem


def read_lesson(path: Path) -> Lesson:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ContentError([Problem(path, 0, f"not UTF-8 text ({exc.reason})")]) from None
    return parse_lesson(path, text)


def parse_lesson(path: Path, text: str) -> Lesson:
    """Parse one lesson, collecting every problem of its front matter before failing."""
    values, found = read_fields(
        path, text, required=REQUIRED_KEYS, optional=OPTIONAL_KEYS, convert=convert
    )
    return Lesson(
        path=path,
        key=lesson_key(path),
        subject=str(values["subject"]),
        preheader=str(values["preheader"]),
        delay=values["delay"],  # type: ignore[arg-type]
        send_at=values.get("send_at"),  # type: ignore[arg-type]
        body=found.body,
        body_line=found.body_line,
    )


def read_fields(
    path: Path,
    text: str,
    *,
    required: tuple[str, ...],
    optional: tuple[str, ...],
    convert: Callable[[str, str], object],
) -> tuple[dict[str, object], LessonBody]:
    """A Markdown file's front matter, each key converted, and its body; ContentError
    with every problem of the front matter at its line (as lessons and newsletter issues
    have them)."""
    lines = text.splitlines()
    if not lines or lines[0].strip() != FRONT_MATTER_FENCE:
        raise ContentError([Problem(path, 1, "expected front matter starting with '---'")])
    try:
        end = next(i for i in range(1, len(lines)) if lines[i].strip() == FRONT_MATTER_FENCE)
    except StopIteration:
        raise ContentError([Problem(path, 1, "front matter is never closed by '---'")]) from None

    fields, problems = read_front_matter(path, "\n".join(lines[1:end]))
    if problems and not fields:
        raise ContentError(problems)  # unreadable YAML: the keys' absence says nothing more
    values: dict[str, object] = {}
    for key, (raw, line) in fields.items():
        if key not in required + optional:
            known = ", ".join(required + optional)
            problems.append(Problem(path, line, f"unknown key '{key}' (expected one of: {known})"))
            continue
        try:
            values[key] = convert(key, raw)
        except ValueError as exc:
            problems.append(Problem(path, line, f"{key}: {exc}"))
    missing = [key for key in required if key not in fields]
    problems += [Problem(path, 1, f"front matter lacks '{key}'") for key in missing]
    if problems:
        raise ContentError(problems)
    found = lesson_body(path, text)
    assert found is not None  # the fences were found above
    return values, found


def convert(key: str, raw: str) -> object:
    if key == "delay":
        return parse_duration(raw)
    if key == "send_at":
        return parse_time_of_day(raw)
    # Subject and preheader go into headers and the inbox's one-line preview: a line
    # break there could start a header of its own (Bcc:), so it is refused, not mended.
    if found := control_character(raw.strip()):
        raise ValueError(f"contains a control character ({found}); it must be one line of text")
    text = " ".join(raw.split())
    if not text:
        raise ValueError("must not be empty")
    if key == "subject" and len(text) > SUBJECT_MAX_CHARS:
        raise ValueError(
            f"{len(text)} characters; keep it to {SUBJECT_MAX_CHARS} so inboxes show it whole"
        )
    return text


def read_front_matter(path: Path, source: str) -> tuple[dict[str, tuple[str, int]], list[Problem]]:
    """Key -> (raw string, file line). Every scalar stays a string: no YAML 1.1 surprises
    such as 09:30 read as a number of minutes or 'no' as False."""
    try:
        node = yaml.compose(source, Loader=yaml.BaseLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 2 if mark else 1
        return {}, [Problem(path, line, f"front matter is not valid YAML: {exc.problem}")]
    if node is None:
        return {}, []
    if not isinstance(node, yaml.MappingNode):
        return {}, [Problem(path, 2, "front matter must be 'key: value' lines")]
    fields: dict[str, tuple[str, int]] = {}
    problems = []
    for key_node, value_node in node.value:
        line = key_node.start_mark.line + 2  # +1 for 1-based, +1 for the opening fence
        key = str(key_node.value)
        if key in fields:
            problems.append(Problem(path, line, f"'{key}' is given twice"))
        elif not isinstance(value_node, yaml.ScalarNode):
            problems.append(Problem(path, line, f"{key}: expected a single value"))
        else:
            fields[key] = (str(value_node.value), line)
    return fields, problems


def _leading_blank_lines(lines: list[str]) -> int:
    count = 0
    for line in lines:
        if line.strip():
            break
        count += 1
    return count
