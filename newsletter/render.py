"""Lesson + subscriber + templates/emails/ -> the exact bytes of an RFC 5322 message.

Everything shared by all recipients of a lesson (Jinja, Markdown, CSS inlining, header
folding, quoted-printable encoding) runs once, when the lesson is compiled. Per recipient
only the personal values are escaped, encoded and spliced between ready-made byte chunks,
so the hot path never touches the standard library's generic MIME serializer.
"""

from __future__ import annotations

import binascii
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from email.policy import SMTP
from email.utils import format_datetime, formataddr
from pathlib import Path
from typing import Any

import css_inline
from jinja2 import (
    Environment,
    FileSystemLoader,
    StrictUndefined,
    TemplateSyntaxError,
    meta,
    nodes,
    select_autoescape,
)
from markupsafe import Markup, escape

from newsletter.config import SenderSettings
from newsletter.content import markdown
from newsletter.content.course import Course
from newsletter.content.lessons import Lesson
from newsletter.errors import ContentError, Problem, RenderError

#: Values that differ per recipient; templates and lesson bodies use them as plain {{ name }}.
PERSONAL_FIELDS = ("first_name", "email", "unsubscribe_url", "preferences_url", "confirm_url")
#: What {{ first_name }} says for a subscriber who gave no name.
FIRST_NAME_FALLBACK = "there"
#: Lesson bodies may use these names: the personal ones and a few facts about the course.
LESSON_BODY_NAMES = frozenset(PERSONAL_FIELDS) | {"course_title", "lesson_number", "lesson_count"}

# A marker stands in for each personal value while shared parts are rendered. Letters and
# digits only, so Markdown, URL-encoding and the CSS inliner all leave it alone.
_MARKER = "XNLSLOT{}X"
_MARKERS = {name: _MARKER.format(index) for index, name in enumerate(PERSONAL_FIELDS)}
_MARKER_PATTERN = re.compile(_MARKER.format(r"(\d+)"))
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9.-]+")
_CRLF = "\r\n"
_HEADERS = SMTP.clone(max_line_length=78)
_inliner = css_inline.CSSInliner(keep_at_rules=True)  # keeps dark-mode and phone @media rules


def make_environment(templates_dir: Path) -> Environment:
    return Environment(
        loader=FileSystemLoader(templates_dir),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def make_message_id(domain: str) -> str:
    return f"<{secrets.token_hex(16)}@{domain}>"


def clean_name(name: str) -> str:
    """A display name safe for headers and bodies: no control characters, no line breaks."""
    return " ".join(_CONTROL_CHARS.sub(" ", name).split())[:100]


@dataclass(frozen=True, slots=True)
class Recipient:
    email: str
    first_name: str = ""


@dataclass(frozen=True, slots=True)
class PersonalLinks:
    unsubscribe_url: str
    #: mailto: alternative for List-Unsubscribe, for clients that do not POST (RFC 2369).
    unsubscribe_mailto: str
    preferences_url: str


class _Spliceable:
    """A text rendered once with markers, pre-encoded as quoted-printable chunks.

    Each personal value is spliced in on a line of its own between soft line breaks
    (RFC 2045 "=" at end of line), so the shared chunks never need re-encoding and no
    line grows past the 76-character limit, whatever the value's length.
    """

    def __init__(self, text: str, *, html: bool) -> None:
        pieces = _MARKER_PATTERN.split(text)
        self.chunks = pieces[0::2]
        self.fields = [PERSONAL_FIELDS[int(index)] for index in pieces[1::2]]
        self.html = html
        self.encoded_chunks = [_qp(chunk) for chunk in self.chunks]

    def fill(self, values: Mapping[str, str]) -> str:
        parts = [self.chunks[0]]
        for field, chunk in zip(self.fields, self.chunks[1:], strict=True):
            parts += (self._value(values, field), chunk)
        return "".join(parts)

    def encode(self, values: Mapping[str, str]) -> bytes:
        parts = [self.encoded_chunks[0]]
        for field, chunk in zip(self.fields, self.encoded_chunks[1:], strict=True):
            parts += (b"=\r\n", _qp(self._value(values, field)), b"=\r\n", chunk)
        return b"".join(parts)

    def _value(self, values: Mapping[str, str], field: str) -> str:
        return str(escape(values[field])) if self.html else values[field]


def _qp(text: str) -> bytes:
    body = text.replace("\r\n", "\n").replace("\n", _CRLF).encode("utf-8")
    # b2a_qp breaks long lines with a bare "\n" when its input has no CRLF to copy.
    return re.sub(rb"(?<!\r)\n", b"\r\n", binascii.b2a_qp(body, istext=True))


class _MessageLayout:
    """The byte skeleton of a multipart/alternative message with text and HTML twins."""

    def __init__(self, static_headers: list[tuple[str, str]], text: str, html: str) -> None:
        self.text = _Spliceable(text, html=False)
        self.html = _Spliceable(_inliner.inline(html), html=True)
        # "=_" cannot occur in quoted-printable output, so the boundary never clashes.
        boundary = f"=_nl_{secrets.token_hex(12)}"
        self.head = "".join(_HEADERS.fold(name, value) for name, value in static_headers)
        part = '--{b}\r\nContent-Type: {t}; charset="utf-8"\r\n' + (
            "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        )
        self.body_start = (
            "MIME-Version: 1.0\r\n"
            f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n'
            + part.format(b=boundary, t="text/plain")
        ).encode("ascii")
        self.between = ("\r\n" + part.format(b=boundary, t="text/html")).encode("ascii")
        self.end = f"\r\n--{boundary}--\r\n".encode("ascii")

    def build(self, personal_headers: str, values: Mapping[str, str]) -> bytes:
        return b"".join(
            (
                self.head.encode("ascii"),
                personal_headers.encode("ascii"),
                self.body_start,
                self.text.encode(values),
                self.between,
                self.html.encode(values),
                self.end,
            )
        )


def _address_header(name: str, email: str) -> str:
    if not _PLAIN_ADDRESS.fullmatch(email):
        raise RenderError(f"cannot address a message to {email!r}: not a plain ASCII address")
    return formataddr((clean_name(name), email), charset="utf-8")


def _to_and_date(recipient: Recipient, message_id: str, date: datetime) -> str:
    if date.tzinfo is None:
        raise RenderError("the Date header needs a timezone-aware datetime")
    return (
        f"To: {_address_header(recipient.first_name, recipient.email)}\r\n"
        f"Date: {format_datetime(date)}\r\nMessage-ID: {message_id}\r\n"
    )


def _common_context(
    sender: SenderSettings, course: Course, subject: str, preheader: str
) -> dict[str, Any]:
    return {
        "subject": subject,
        "preheader": preheader,
        "sender": sender,
        "course": course,
        **_MARKERS,
    }


class LessonEmail:
    """One lesson compiled for sending: build once, then render() per recipient."""

    def __init__(
        self, env: Environment, sender: SenderSettings, course: Course, lesson: Lesson
    ) -> None:
        self.lesson = lesson
        self.number = course.number_of(lesson)
        body = render_lesson_body(env, course, lesson)
        context = _common_context(sender, course, lesson.subject, lesson.preheader) | {
            "lesson": {
                "number": self.number,
                "count": len(course.lessons),
                "subject": lesson.subject,
            },
            "body_html": Markup(markdown.to_html(body)),
            "body_text": markdown.to_text(body),
        }
        self.layout = _MessageLayout(
            [
                ("From", formataddr((sender.name, sender.address), charset="utf-8")),
                ("Subject", lesson.subject),
                ("List-Id", f"{course.title} <{course.slug}.{sender.domain}>"),
                # RFC 8058: mailbox providers unsubscribe with one POST, no page visit.
                ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
            ],
            text=env.get_template("lesson.txt").render(context),
            html=env.get_template("lesson.html").render(context),
        )

    def render(
        self, recipient: Recipient, links: PersonalLinks, *, message_id: str, date: datetime
    ) -> bytes:
        headers = _to_and_date(recipient, message_id, date) + (
            f"List-Unsubscribe: <{links.unsubscribe_url}>,\r\n <{links.unsubscribe_mailto}>\r\n"
        )
        return self.layout.build(headers, self.values(recipient, links))

    def html(self, recipient: Recipient, links: PersonalLinks) -> str:
        return self.layout.html.fill(self.values(recipient, links))

    def text(self, recipient: Recipient, links: PersonalLinks) -> str:
        return self.layout.text.fill(self.values(recipient, links))

    @staticmethod
    def values(recipient: Recipient, links: PersonalLinks) -> dict[str, str]:
        return {
            "first_name": clean_name(recipient.first_name) or FIRST_NAME_FALLBACK,
            "email": recipient.email,
            "unsubscribe_url": links.unsubscribe_url,
            "preferences_url": links.preferences_url,
            "confirm_url": "",
        }


class ConfirmationEmail:
    """The double opt-in email: transactional, and it carries nothing the signer typed
    except the address, so the signup form cannot be used to message strangers."""

    SUBJECT = "Please confirm your subscription"

    def __init__(self, env: Environment, sender: SenderSettings, course: Course) -> None:
        preheader = f"One click and {course.title} starts arriving."
        context = _common_context(sender, course, self.SUBJECT, preheader)
        self.layout = _MessageLayout(
            [
                ("From", formataddr((sender.name, sender.transactional_from), charset="utf-8")),
                ("Subject", self.SUBJECT),
            ],
            text=env.get_template("confirm.txt").render(context),
            html=env.get_template("confirm.html").render(context),
        )

    def render(self, email: str, confirm_url: str, *, message_id: str, date: datetime) -> bytes:
        values = dict.fromkeys(PERSONAL_FIELDS, "") | {"email": email, "confirm_url": confirm_url}
        return self.layout.build(_to_and_date(Recipient(email), message_id, date), values)


def render_lesson_body(env: Environment, course: Course, lesson: Lesson) -> str:
    """Jinja pass over the lesson's Markdown, with markers for the personal values.

    Unknown names and syntax errors become ContentError at the lesson file's own line."""
    try:
        tree = env.parse(lesson.body)
    except TemplateSyntaxError as exc:
        line = lesson.body_line + (exc.lineno or 1) - 1
        raise ContentError([Problem(lesson.path, line, f"template error: {exc.message}")]) from None
    unknown = meta.find_undeclared_variables(tree) - LESSON_BODY_NAMES
    if unknown:
        problems = [
            Problem(
                lesson.path,
                lesson.body_line + node.lineno - 1,
                f"unknown variable '{node.name}' (known: {', '.join(sorted(LESSON_BODY_NAMES))})",
            )
            for node in tree.find_all(nodes.Name)
            if node.name in unknown
        ]
        raise ContentError(problems)
    if _MARKER_PATTERN.search(lesson.body):
        raise ContentError(
            [Problem(lesson.path, lesson.body_line, "reserved text XNLSLOT in body")]
        )
    return env.from_string(tree).render(
        _MARKERS,
        course_title=course.title,
        lesson_number=course.number_of(lesson),
        lesson_count=len(course.lessons),
    )
