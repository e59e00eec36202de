"""lessons/<slug>/ (course.toml + NN-name.md files) -> an ordered Course."""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from jinja2 import TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from newsletter.content.identity import IDENTITY_KEYS, CourseIdentity, read_identity
from newsletter.content.lessons import Lesson, LessonBody, lesson_body, parse_lesson
from newsletter.errors import ContentError, Problem
from newsletter.headers import control_character

MANIFEST = "course.toml"
MANIFEST_KEYS = ("title", "description", *IDENTITY_KEYS)
#: A course's own email templates, in <course>/templates/, each replacing the shared one.
TEMPLATES_FOLDER = "templates"
TEMPLATE_NAMES = (
    "base.html",
    "base.txt",
    "lesson.html",
    "lesson.txt",
    "confirm.html",
    "confirm.txt",
)


@dataclass(frozen=True, slots=True)
class Course:
    slug: str
    path: Path
    title: str
    description: str
    lessons: tuple[Lesson, ...]
    identity: CourseIdentity = field(default_factory=CourseIdentity)
    #: Template name -> source, from the course's templates/ folder; they override the
    #: shared templates of the same name.
    templates: Mapping[str, str] = field(default_factory=dict)

    def lesson(self, reference: str) -> Lesson:
        """A lesson by number (1-based), key ('the-cause') or file name ('02-the-cause.md')."""
        for number, lesson in enumerate(self.lessons, start=1):
            if reference in (str(number), lesson.key, lesson.path.name, lesson.path.stem):
                return lesson
        known = ", ".join(lesson.path.stem for lesson in self.lessons)
        raise ContentError([Problem(self.path, 0, f"no lesson '{reference}' (have: {known})")])

    def number_of(self, lesson: Lesson) -> int:
        return self.lessons.index(lesson) + 1


def content_fingerprint(course: Course) -> str:
    """A digest of everything a queued version keeps of a course: title, description, and
    each lesson's file name, front matter and body. Where the folder is stays out, so a
    snapshot read back from the database has the fingerprint of the files it came from.
    Every field of Course and Lesson counts, those added later too."""
    canonical = json.dumps(_plain(course), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _plain(value: object) -> object:
    if is_dataclass(value) and not isinstance(value, type):
        skip = "path" if isinstance(value, Course) else ""
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value) if f.name != skip}
    if isinstance(value, Path):
        return value.name  # a lesson's file name: lessons are ordered by it
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return repr(value)  # timedelta, time: their repr is exact


def is_slug(name: str) -> bool:
    """Whether a folder name can be a course's id: in the database, on the command line and
    in List-Id. Letters and digits of any script, '-' and '_', dots between parts; combining
    marks too, as some file systems store names decomposed (NFD)."""
    return all(
        part and all(char.isalnum() or char in "-_" or _is_mark(char) for char in part)
        for part in name.split(".")
    )


def list_label(slug: str) -> str:
    """The slug as an RFC 2919 list label (ASCII dot-atom-text): a part that is not ASCII
    goes in its IDNA form (xn--...), as a domain name would. ValueError if not a slug."""
    if not is_slug(slug):
        raise ValueError(f"{slug!r} cannot be a course id")
    return ".".join(
        part if part.isascii() else "xn--" + part.encode("punycode").decode("ascii")
        for part in slug.split(".")
    )


def _is_mark(char: str) -> bool:
    return unicodedata.category(char).startswith("M")


@dataclass(frozen=True, slots=True)
class CourseReading:
    """A course folder as far as it could be read, for a check to go on past the first
    problems: `course` holds the lessons that parsed (and the folder's name for a title
    the manifest did not give); `bodies` the bodies of lessons whose front matter did not."""

    course: Course | None  #: None when the path is not a folder at all
    problems: list[Problem]
    bodies: tuple[LessonBody, ...]


def load_course(path: Path) -> Course:
    """Read the manifest and every lesson; fail with all problems of all files at once."""
    reading = read_course(path)
    if reading.problems or reading.course is None:
        raise ContentError(reading.problems)
    return reading.course


def read_course(path: Path) -> CourseReading:
    """Every problem of the manifest and the lesson files, and whatever could be read."""
    if not path.is_dir():
        problem = Problem(path, 0, "not a course folder (expected lessons/<slug>/)")
        return CourseReading(None, [problem], ())
    problems: list[Problem] = []
    if not is_slug(path.name):
        problems.append(
            Problem(
                path,
                0,
                f"the folder name {path.name!r} is the course's id (in the database and the "
                "List-Id header): use letters, digits, '-', '_', and '.' between parts",
            )
        )
    title, description, identity = "", "", CourseIdentity()
    try:
        title, description, identity = read_manifest(path / MANIFEST)
    except ContentError as exc:
        problems += exc.problems
    templates: dict[str, str] = {}
    try:
        templates = _read_templates(path / TEMPLATES_FOLDER)
    except ContentError as exc:
        problems += exc.problems

    lessons: list[Lesson] = []
    bodies: list[LessonBody] = []
    for file in sorted(path.glob("*.md")):
        try:
            text = file.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            problems.append(Problem(file, 0, f"not UTF-8 text ({exc.reason})"))
            continue
        try:
            lessons.append(parse_lesson(file, text))
        except ContentError as exc:
            problems += exc.problems
            if body := lesson_body(file, text):
                bodies.append(body)
    if not lessons and not problems:
        problems.append(Problem(path, 0, "no lesson files (*.md) in this folder"))

    seen: dict[str, Path] = {}
    for lesson in lessons:
        if lesson.key in seen:
            other = seen[lesson.key].name
            problems.append(Problem(lesson.path, 1, f"same lesson name as {other}; rename one"))
        seen[lesson.key] = lesson.path
    course = Course(
        path.name, path, title or path.name, description, tuple(lessons), identity, templates
    )
    return CourseReading(course, problems, tuple(bodies))


def read_manifest(path: Path) -> tuple[str, str, CourseIdentity]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ContentError([Problem(path, 0, "missing; it names the course")]) from None
    except UnicodeDecodeError as exc:
        raise ContentError([Problem(path, 0, f"not UTF-8 text ({exc.reason})")]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = re.search(r"line (\d+)", str(exc))
        raise ContentError(
            [Problem(path, int(line.group(1)) if line else 0, f"not valid TOML: {exc}")]
        ) from None
    problems = [
        Problem(
            path,
            line_of(text, key),
            f"unknown key '{key}' (expected one of: {', '.join(MANIFEST_KEYS)})",
        )
        for key in data
        if key not in MANIFEST_KEYS
    ]
    for key in ("title", "description"):
        value = data.get(key)
        if not isinstance(value, str) or not value.strip():
            message = f"'{key}' must be a non-empty string"
            problems.append(Problem(path, line_of(text, key), message))
        # The title goes into headers (List-Id, the confirmation's preheader) and must be
        # one line; the description is body text, where line breaks are only spacing.
        elif found := control_character(value, line_breaks=key == "description"):
            problems.append(
                Problem(path, line_of(text, key), f"{key}: contains a control character ({found})")
            )
    identity = read_identity(_identity_values(data))
    if isinstance(identity, list):
        problems += [Problem(path, line_of(text, *key), message) for key, message in identity]
    if problems or isinstance(identity, list):
        raise ContentError(problems)
    return " ".join(data["title"].split()), " ".join(data["description"].split()), identity


def _identity_values(data: dict[str, Any]) -> dict[str, Any]:
    return {key: data[key] for key in IDENTITY_KEYS if key in data}


_TABLE = re.compile(r"""\s*\[\s*([^\]]+?)\s*\]\s*(?:#.*)?$""")


def line_of(text: str, *key: str) -> int:
    """The line that sets a key (`title`, or `sender`, `name` for name in [sender]), for an
    editor's jump-to-line; the table's line when the key is not written; 0 if not found."""
    *tables, name = key
    pattern = re.compile(
        rf"""\s*(?:{re.escape(name)}|"{re.escape(name)}"|'{re.escape(name)}')\s*="""
    )
    table: list[str] = []
    table_line = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if found := _TABLE.match(line):
            table = [part.strip().strip("\"'") for part in found.group(1).split(".")]
            if table == tables:
                table_line = number
        elif table == tables and pattern.match(line):
            return number
    return table_line


def _read_templates(folder: Path) -> dict[str, str]:
    """The course's own email templates, checked for syntax; ContentError at file:line."""
    if not folder.is_dir():
        return {}
    templates: dict[str, str] = {}
    problems: list[Problem] = []
    parser = ImmutableSandboxedEnvironment()
    for file in sorted(folder.iterdir()):
        if file.name not in TEMPLATE_NAMES:
            known = ", ".join(TEMPLATE_NAMES)
            problems.append(Problem(file, 0, f"not an email template (expected one of: {known})"))
            continue
        try:
            source = file.read_text(encoding="utf-8")
            parser.parse(source)
        except UnicodeDecodeError as exc:
            problems.append(Problem(file, 0, f"not UTF-8 text ({exc.reason})"))
            continue
        except TemplateSyntaxError as exc:
            problems.append(Problem(file, exc.lineno or 0, f"template error: {exc.message}"))
            continue
        templates[file.name] = source
    if problems:
        raise ContentError(problems)
    return templates
