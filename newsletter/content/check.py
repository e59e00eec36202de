"""Everything that must hold before a course can be queued, as a list of file:line problems."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email import message_from_bytes, policy
from pathlib import Path
from urllib.parse import urlsplit

from jinja2 import Environment

from newsletter.config import SenderSettings
from newsletter.content import markdown
from newsletter.content.course import Course, load_course
from newsletter.content.lessons import Lesson
from newsletter.errors import ContentError, Problem
from newsletter.render import LessonEmail, PersonalLinks, Recipient

_SAMPLE_RECIPIENT = Recipient("reader@example.com", "Sam")
_SAMPLE_LINKS = PersonalLinks(
    unsubscribe_url="https://example.com/unsubscribe/sample",
    unsubscribe_mailto="mailto:unsubscribe@example.com?subject=unsubscribe",
    preferences_url="https://example.com/preferences/sample",
)


def check_course(
    path: Path, env: Environment, sender: SenderSettings
) -> tuple[Course | None, list[Problem]]:
    try:
        course = load_course(path)
    except ContentError as exc:
        return None, exc.problems
    problems: list[Problem] = []
    for lesson in course.lessons:
        problems += _check_preheader(lesson)
        problems += _check_links(lesson)
        problems += _check_renders(env, sender, course, lesson)
    return course, problems


def _check_preheader(lesson: Lesson) -> list[Problem]:
    # The inbox shows the preheader right after the subject: it must say something new.
    if set(_words(lesson.preheader)) <= set(_words(lesson.subject)):
        return [Problem(lesson.path, 1, "preheader repeats the subject; make it add something")]
    return []


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.casefold())


def _check_links(lesson: Lesson) -> list[Problem]:
    problems = []
    for link in markdown.links_in(lesson.body):
        if reason := _link_flaw(link.url):
            line = lesson.body_line + link.line - 1
            problems.append(Problem(lesson.path, line, f"link {link.url!r}: {reason}"))
    return problems


def _link_flaw(url: str) -> str | None:
    if "{{" in url or "XNLSLOT" in url:
        return None  # a personal link filled in per recipient
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        return f"malformed ({exc})"
    if parts.scheme == "mailto":
        return None if "@" in parts.path else "mailto: needs an address"
    if parts.scheme not in ("http", "https"):
        return "an email needs a full address starting with https:// (or mailto:)"
    host = parts.hostname or ""
    if "." not in host or host.startswith(".") or host.endswith("."):
        return "the address has no valid host name"
    if any(char.isspace() for char in url):
        return "contains spaces"
    return None


def _check_renders(
    env: Environment, sender: SenderSettings, course: Course, lesson: Lesson
) -> list[Problem]:
    try:
        email = LessonEmail(env, sender, course, lesson)
        raw = email.render(
            _SAMPLE_RECIPIENT,
            _SAMPLE_LINKS,
            message_id="<check@example.com>",
            date=datetime(2024, 1, 1, tzinfo=UTC),
        )
    except ContentError as exc:
        return exc.problems
    except Exception as exc:  # a template bug must still name the lesson it broke on
        return [Problem(lesson.path, 0, f"does not render: {type(exc).__name__}: {exc}")]
    message = message_from_bytes(raw, policy=policy.default)
    parts = {part.get_content_type() for part in message.iter_parts()}
    if parts != {"text/plain", "text/html"}:
        return [Problem(lesson.path, 0, f"renders with parts {sorted(parts)}, not text and HTML")]
    return []
