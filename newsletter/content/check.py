"""Everything that must hold before a course can be queued, as a list of file:line problems."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

from jinja2 import Environment

from newsletter.config import SenderSettings
from newsletter.content import markdown
from newsletter.content.course import MANIFEST, Course, is_slug, line_of, read_course, read_manifest
from newsletter.content.lessons import Lesson, LessonBody
from newsletter.content.template import compile_body
from newsletter.errors import ContentError, Problem, Severity
from newsletter.render import (
    LESSON_BODY_NAMES,
    ConfirmationEmail,
    LessonEmail,
    PersonalLinks,
    Recipient,
)

_SAMPLE_RECIPIENT = Recipient("reader@example.com", "Sam")
_SAMPLE_LINKS = PersonalLinks(
    unsubscribe_url="https://example.com/unsubscribe/sample",
    unsubscribe_mailto="mailto:unsubscribe@example.com?subject=unsubscribe",
    preferences_url="https://example.com/preferences/sample",
)
_SAMPLE_CONFIRM_URL = "https://example.com/confirm/sample"
_SAMPLE_DATE = datetime(2024, 1, 1, tzinfo=UTC)
#: Schemes a reader's client opens safely; plain http is allowed with a warning.
_SAFE_SCHEMES = ("https", "mailto")
_REFUSED_SCHEMES = {
    "javascript": "runs code",
    "vbscript": "runs code",
    "data": "embeds a document or image that mail clients block",
    "file": "points into the reader's own computer",
}


def _check_flow(course: Course) -> list[Problem]:
    """[on_finish] start names a course beside this one, and following each course's
    start from there never comes back: a loop would move people round for ever."""
    first = course.identity.next_course
    if first is None:
        return []
    manifest = course.path / MANIFEST
    line = line_of(manifest.read_text(encoding="utf-8"), "on_finish", "start")
    if not is_slug(first):
        return [
            Problem(manifest, line, f"on_finish.start: {first!r} is not a course's folder name")
        ]
    seen = [course.slug]
    slug: str | None = first
    while slug is not None:
        if slug in seen:
            chain = " -> ".join([*seen, slug])
            return [Problem(manifest, line, f"on_finish.start: {chain} comes back round: a loop")]
        folder = course.path.parent / slug
        if not is_slug(slug) or not (folder / MANIFEST).is_file():
            if slug != first:
                return []  # that course's own check names what is wrong with it
            return [Problem(manifest, line, f"on_finish.start: no course {slug!r} beside this one")]
        seen.append(slug)
        try:
            slug = read_manifest(folder / MANIFEST)[2].next_course
        except ContentError:
            return []  # as above
    return []


def check_course(
    path: Path, env: Environment, sender: SenderSettings
) -> tuple[Course | None, list[Problem]]:
    """Every problem of the course in one go: errors (Problem.is_error) stop it from being
    queued, warnings are for the writer to judge. A lesson whose front matter is wrong still
    has its body checked (template, links), and the lessons that parsed are rendered, so
    fixing one problem never reveals another that was there all along. The course is None
    when its files could not all be read."""
    reading = read_course(path)
    if reading.course is None:
        return None, reading.problems
    course = reading.course
    problems = list(reading.problems)
    for body in reading.bodies:
        problems += _check_links(body)
        problems += _check_template(body)
    problems += _check_flow(course)
    # A folder name that cannot be an id fails every render (List-Id): said once is enough.
    renders = is_slug(course.slug)
    template_links: dict[str, Path] = {}
    for lesson in course.lessons:
        problems += _check_preheader(lesson)
        problems += _check_links(LessonBody(lesson.path, lesson.body, lesson.body_line))
        if renders:
            problems += _check_renders(env, sender, course, lesson, template_links)
    if renders:
        problems += _check_confirmation(env, sender, course, template_links)
    for url, template in template_links.items():
        if flaw := _link_flaw(url):
            severity, reason = flaw
            problems.append(
                Problem(template, 0, f"the rendered email links to {url!r}: {reason}", severity)
            )
    # File by file, top to bottom, as an editor walks through them.
    problems.sort(key=lambda problem: (str(problem.path), problem.line))
    return (None if reading.problems else course), problems


def _check_template(body: LessonBody) -> list[Problem]:
    try:
        compile_body(body.path, body.body, body.body_line, LESSON_BODY_NAMES)
    except ContentError as exc:
        return exc.problems
    return []


def _check_preheader(lesson: Lesson) -> list[Problem]:
    # The inbox shows the preheader right after the subject: it must say something new.
    if set(_words(lesson.preheader)) <= set(_words(lesson.subject)):
        return [Problem(lesson.path, 1, "preheader repeats the subject; make it add something")]
    return []


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.casefold())


def _check_links(lesson: LessonBody) -> list[Problem]:
    problems = []
    for link in markdown.links_in(lesson.body):
        if flaw := _link_flaw(link.url):
            severity, reason = flaw
            line = lesson.body_line + link.line - 1
            what = "image" if link.image else "link"
            problems.append(Problem(lesson.path, line, f"{what} {link.url!r}: {reason}", severity))
    return problems


def _link_flaw(url: str) -> tuple[Severity, str] | None:
    """What is wrong with a link in an email, if anything: only full https:// and mailto:
    addresses are fine; http:// is a warning (readers' clients may flag it); anything else,
    relative links included, is an error: there is no page an email is relative to."""
    if "{{" in url or "XNLSLOT" in url:
        return None  # a personal link filled in per recipient
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        return Severity.ERROR, f"malformed ({exc})"
    scheme = parts.scheme.lower()
    if scheme in _REFUSED_SCHEMES:
        return Severity.ERROR, f"a {scheme}: link {_REFUSED_SCHEMES[scheme]}; it is not allowed"
    if scheme == "mailto":
        return None if "@" in parts.path else (Severity.ERROR, "mailto: needs an address")
    if scheme not in ("http", "https"):
        return Severity.ERROR, (
            "an email needs a full address starting with https:// (or mailto:)"
            if not scheme
            else f"{scheme}: links are not allowed; use https:// (or mailto:)"
        )
    host = parts.hostname or ""
    if "." not in host or host.startswith(".") or host.endswith("."):
        return Severity.ERROR, "the address has no valid host name"
    if any(char.isspace() for char in url):
        return Severity.ERROR, "contains spaces"
    if scheme == "http":
        return Severity.WARNING, "plain http://; use https:// if the site offers it"
    return None


def _check_renders(
    env: Environment,
    sender: SenderSettings,
    course: Course,
    lesson: Lesson,
    template_links: dict[str, Path],
) -> list[Problem]:
    try:
        email = LessonEmail(env, sender, course, lesson)
        raw = email.render(
            _SAMPLE_RECIPIENT, _SAMPLE_LINKS, message_id="<check@example.com>", date=_SAMPLE_DATE
        )
    except ContentError as exc:
        return exc.problems
    except Exception as exc:  # a template bug must still name the lesson it broke on
        return [Problem(lesson.path, 0, f"does not render: {type(exc).__name__}: {exc}")]
    problems, html = _parts(lesson.path, raw)
    in_body = {link.url for link in markdown.links_in(lesson.body)}
    template = _template_file(env, "lesson.html")
    for url in _html_links(html):
        if url not in in_body:  # those are reported at their line already
            template_links.setdefault(url, template)
    return problems


def _check_confirmation(
    env: Environment, sender: SenderSettings, course: Course, template_links: dict[str, Path]
) -> list[Problem]:
    """The opt-in email shows the course's title and description: they must render too."""
    manifest = course.path / "course.toml"
    try:
        raw = ConfirmationEmail(env, sender, course).render(
            _SAMPLE_RECIPIENT.email,
            _SAMPLE_CONFIRM_URL,
            message_id="<check@example.com>",
            date=_SAMPLE_DATE,
        )
    except Exception as exc:  # as for lessons: name the file rather than crash
        message = f"the confirmation email does not render: {type(exc).__name__}: {exc}"
        return [Problem(manifest, 0, message)]
    problems, html = _parts(manifest, raw)
    template = _template_file(env, "confirm.html")
    for url in _html_links(html):
        template_links.setdefault(url, template)
    return problems


def _parts(path: Path, raw: bytes) -> tuple[list[Problem], str]:
    message = message_from_bytes(raw, policy=policy.default)
    assert isinstance(message, EmailMessage)
    parts = {part.get_content_type() for part in message.iter_parts()}
    if parts != {"text/plain", "text/html"}:
        return [Problem(path, 0, f"renders with parts {sorted(parts)}, not text and HTML")], ""
    html = message.get_body(("html",))
    assert html is not None
    return [], str(html.get_content())


def _template_file(env: Environment, name: str) -> Path:
    filename = env.get_template(name).filename
    return Path(filename) if filename else Path(name)


class _LinkCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("href", "src") and value]


def _html_links(html: str) -> list[str]:
    collector = _LinkCollector()
    collector.feed(html)
    collector.close()
    return collector.urls
