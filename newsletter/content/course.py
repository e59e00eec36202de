"""lessons/<slug>/ (course.toml + NN-name.md files) -> an ordered Course."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from newsletter.content.lessons import Lesson, read_lesson
from newsletter.errors import ContentError, Problem

MANIFEST = "course.toml"
MANIFEST_KEYS = ("title", "description")


@dataclass(frozen=True, slots=True)
class Course:
    slug: str
    path: Path
    title: str
    description: str
    lessons: tuple[Lesson, ...]

    def lesson(self, reference: str) -> Lesson:
        """A lesson by number (1-based), key ('the-cause') or file name ('02-the-cause.md')."""
        for number, lesson in enumerate(self.lessons, start=1):
            if reference in (str(number), lesson.key, lesson.path.name, lesson.path.stem):
                return lesson
        known = ", ".join(lesson.path.stem for lesson in self.lessons)
        raise ContentError([Problem(self.path, 0, f"no lesson '{reference}' (have: {known})")])

    def number_of(self, lesson: Lesson) -> int:
        return self.lessons.index(lesson) + 1


def load_course(path: Path) -> Course:
    """Read the manifest and every lesson; fail with all problems of all files at once."""
    if not path.is_dir():
        raise ContentError([Problem(path, 0, "not a course folder (expected lessons/<slug>/)")])
    problems: list[Problem] = []
    title, description = "", ""
    try:
        title, description = _read_manifest(path / MANIFEST)
    except ContentError as exc:
        problems += exc.problems

    lessons: list[Lesson] = []
    for file in sorted(path.glob("*.md")):
        try:
            lessons.append(read_lesson(file))
        except ContentError as exc:
            problems += exc.problems
    if not lessons and not problems:
        problems.append(Problem(path, 0, "no lesson files (*.md) in this folder"))

    seen: dict[str, Path] = {}
    for lesson in lessons:
        if lesson.key in seen:
            other = seen[lesson.key].name
            problems.append(Problem(lesson.path, 1, f"same lesson name as {other}; rename one"))
        seen[lesson.key] = lesson.path
    if problems:
        raise ContentError(problems)
    return Course(path.name, path, title, description, tuple(lessons))


def _read_manifest(path: Path) -> tuple[str, str]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ContentError([Problem(path, 0, "missing; it names the course")]) from None
    except tomllib.TOMLDecodeError as exc:
        line = re.search(r"line (\d+)", str(exc))
        raise ContentError(
            [Problem(path, int(line.group(1)) if line else 0, f"not valid TOML: {exc}")]
        ) from None
    problems = [
        Problem(path, 0, f"unknown key '{key}' (expected one of: {', '.join(MANIFEST_KEYS)})")
        for key in data
        if key not in MANIFEST_KEYS
    ]
    for key in MANIFEST_KEYS:
        if not isinstance(data.get(key), str) or not data[key].strip():
            problems.append(Problem(path, 0, f"'{key}' must be a non-empty string"))
    if problems:
        raise ContentError(problems)
    return data["title"].strip(), " ".join(data["description"].split())
