"""Lesson + subscriber + templates/emails/ -> the exact bytes of an RFC 5322 message.

Everything shared by all recipients of a lesson (Jinja, Markdown, CSS inlining, header
folding, quoted-printable encoding) runs once, when the lesson is compiled. Per recipient
only the personal values are escaped, encoded and spliced between ready-made byte chunks,
so the hot path never touches the standard library's generic MIME serializer.
"""

from __future__ import annotations

import binascii
import functools
import itertools
import re
import secrets
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import css_inline
from jinja2 import (
    ChoiceLoader,
    DictLoader,
    Environment,
    FileSystemLoader,
    StrictUndefined,
    select_autoescape,
)
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedEnvironment
from markupsafe import Markup, escape

from newsletter import headers
from newsletter.config import SenderSettings
from newsletter.content import markdown
from newsletter.content.course import Course, list_label
from newsletter.content.lessons import Lesson
from newsletter.content.template import compile_body
from newsletter.errors import ContentError, Problem, RenderError
from newsletter.wire import Prepared, settle_line_ends, settled, stuff

#: Values that differ per recipient; templates and lesson bodies use them as plain {{ name }}.
PERSONAL_FIELDS = (
    "first_name",
    "email",
    "unsubscribe_url",
    "preferences_url",
    "confirm_url",
    "unsubscribe_all_url",
)
#: What {{ first_name }} says for a subscriber who gave no name.
FIRST_NAME_FALLBACK = "there"
#: Lesson bodies may use these names and no others (README, "Writing a course").
LESSON_BODY_NAMES = frozenset(
    {"first_name", "email", "unsubscribe_url", "preferences_url"}
    | {"course_title", "lesson_number", "lesson_count"}
)
#: Longest display name kept, in characters; it also bounds the To header's length.
NAME_MAX_CHARS = 100

# A marker stands in for each personal value while shared parts are rendered. Letters and
# digits only, so Markdown, URL-encoding and the CSS inliner all leave it alone.
_MARKER = "XNLSLOT{}X"
_MARKERS = {name: _MARKER.format(index) for index, name in enumerate(PERSONAL_FIELDS)}
_MARKER_PATTERN = re.compile(_MARKER.format(r"(\d+)"))
_ASCII_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
# Control characters and the Unicode line and paragraph separators: spacing in a name.
_BREAKS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
#: Characters that print nothing yet are not format characters (Cf): the combining
#: grapheme joiner, Hangul fillers, Khmer inherent vowels, the blank Braille pattern.
_BLANKS = "\u034f\u115f\u1160\u17b4\u17b5\u2800\u3164\uffa0"
_ZWJ = "\u200d"
_EMOJI_MODIFIERS = frozenset("\ufe0f" + "".join(map(chr, range(0x1F3FB, 0x1F400))))
_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9.-]+")
_CRLF = "\r\n"
_inliner = css_inline.CSSInliner(keep_at_rules=True)  # keeps dark-mode and phone @media rules
#: Follows the hidden preheader so that inbox previews do not run on into the body's first
#: words: figure spaces and combining grapheme joiners, which show as blank in every client.
_PREHEADER_FILLER = Markup("&#8199;&#847; " * 90)


def make_environment(templates_dir: Path) -> ImmutableSandboxedEnvironment:
    """The email templates' environment: sandboxed (no attribute, call or global reaches
    Python internals) and with no globals at all, only the context each email passes."""
    env = ImmutableSandboxedEnvironment(
        loader=FileSystemLoader(templates_dir),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.globals.clear()
    env.filters["width"] = markdown.display_width
    return env


def make_message_id(domain: str) -> str:
    return f"<{secrets.token_hex(16)}@{domain}>"


def clean_name(name: str) -> str:
    """A display name safe for headers and bodies, and as a person reads it.

    Control characters and line breaks become spaces; bidi controls (U+202A-E,
    U+2066-9, LRM, RLM, ALM), zero-width and other invisible characters (Unicode category
    Cf, fillers) go, so that a name cannot reorder the text around it or hide in a blank;
    whitespace collapses. A zero-width joiner stays between two emoji, where it makes one
    picture of several (a family, a profession): without it the name shows them apart.
    '' when nothing visible is left, for the caller's fallback ("there")."""
    if name.isascii():
        return " ".join(_ASCII_CONTROL.sub(" ", name).split())[:NAME_MAX_CHARS].rstrip()
    text = _invisible().sub("", _BREAKS.sub(" ", name))
    if _ZWJ in text:
        text = re.sub(_ZWJ, lambda found: _emoji_joiner(found.string, found.start()), text)
    cleaned = " ".join(text.split())[:NAME_MAX_CHARS].rstrip(" " + _ZWJ)
    visible = any(unicodedata.category(char)[0] in "LNPS" for char in cleaned)
    return cleaned if visible else ""


@functools.cache
def _invisible() -> re.Pattern[str]:
    """Format characters (Cf) but the zero-width joiner, lone surrogates and blanks, from
    the running Python's Unicode tables. Built on first use: the scan takes milliseconds,
    which a command that renders no email should not pay."""
    planes = itertools.chain(range(0x20000), range(0xE0000, 0xE1000))
    format_chars = "".join(
        chr(code) for code in planes if unicodedata.category(chr(code)) == "Cf"
    ).replace(_ZWJ, "")
    return re.compile(f"[{re.escape(format_chars + _BLANKS)}\ud800-\udfff]+")


def _emoji_joiner(text: str, index: int) -> str:
    before = index - 1
    while before >= 0 and text[before] in _EMOJI_MODIFIERS:
        before -= 1
    after = text[index + 1 : index + 2]
    joins = (
        before >= 0
        and unicodedata.category(text[before]) == "So"
        and after != ""
        and unicodedata.category(after) == "So"
    )
    return _ZWJ if joins else ""


@dataclass(frozen=True, slots=True)
class Recipient:
    email: str
    first_name: str = ""


@dataclass(frozen=True, slots=True)
class PersonalLinks:
    #: Leaves the lesson's course (when the links were made for one), also one-click.
    unsubscribe_url: str
    #: mailto: alternative for List-Unsubscribe, for clients that do not POST (RFC 2369).
    unsubscribe_mailto: str
    preferences_url: str
    #: Leaves every course; the unsubscribe URL itself where there is no course.
    unsubscribe_all_url: str = ""


class _Spliceable:
    """A text rendered once with markers, pre-encoded as quoted-printable chunks.

    Each personal value is spliced in on a line of its own between soft line breaks
    (RFC 2045 "=" at end of line), so the shared chunks never need re-encoding and no
    line grows past the 76-character limit, whatever the value's length. Every chunk and
    every value therefore starts a line: each is dot-stuffed for DATA on its own, the
    chunks once, here (newsletter/wire.py).
    """

    def __init__(self, text: str, *, html: bool) -> None:
        pieces = _MARKER_PATTERN.split(text)
        self.chunks = pieces[0::2]
        self.fields = [PERSONAL_FIELDS[int(index)] for index in pieces[1::2]]
        self.html = html
        self.encoded_chunks = [_qp(chunk) for chunk in self.chunks]
        self.stuffed_chunks = [stuff(chunk) for chunk in self.encoded_chunks]
        #: No chunk has a line that starts with a dot: only the values may need stuffing.
        self.chunks_plain = all(
            plain is stuffed
            for plain, stuffed in zip(self.encoded_chunks, self.stuffed_chunks, strict=True)
        )

    def fill(self, values: Mapping[str, str]) -> str:
        parts = [self.chunks[0]]
        for field, chunk in zip(self.fields, self.chunks[1:], strict=True):
            parts += (self._value(values, field), chunk)
        return "".join(parts)

    def encode(self, values: Mapping[str, str]) -> bytes:
        return _splice(self.encoded_chunks, [_qp(self._value(values, f)) for f in self.fields])

    def encode_prepared(self, values: Mapping[str, str]) -> tuple[bytes, bytes]:
        """encode(), and the same bytes dot-stuffed (the same object when nothing is)."""
        encoded = [_qp(self._value(values, field)) for field in self.fields]
        message = _splice(self.encoded_chunks, encoded)
        # Each value starts a line: one look at them all says whether any line of theirs
        # starts with a dot.
        if self.chunks_plain and b"\n." not in b"\n" + b"\n".join(encoded):
            return message, message
        return message, _splice(self.stuffed_chunks, [stuff(value) for value in encoded])

    def _value(self, values: Mapping[str, str], field: str) -> str:
        return str(escape(values[field])) if self.html else values[field]


def _splice(chunks: list[bytes], values: list[bytes]) -> bytes:
    """The chunks with each value on a line of its own between them (soft line breaks)."""
    parts = [chunks[0]]
    for value, chunk in zip(values, chunks[1:], strict=True):
        parts += (b"=\r\n", value, b"=\r\n", chunk)
    return b"".join(parts)


def _qp(text: str) -> bytes:
    body = text.replace("\r\n", "\n").replace("\n", _CRLF).encode("utf-8")
    # b2a_qp breaks long lines with a bare "\n" when its input has no CRLF to copy, and
    # leaves a lone "\r" as it is: both become CRLF, as SMTP's DATA would make them.
    return settle_line_ends(binascii.b2a_qp(body, istext=True))


class _MessageLayout:
    """The byte skeleton of a multipart/alternative message with text and HTML twins."""

    def __init__(self, static_headers: list[str], text: str, html: str) -> None:
        self.text = _Spliceable(text, html=False)
        self.html = _Spliceable(_inliner.inline(html), html=True)
        # "=_" cannot occur in quoted-printable output, so the boundary never clashes.
        boundary = f"=_nl_{secrets.token_hex(12)}"
        self.head = settle_line_ends("".join(static_headers).encode("ascii"))
        self.head_stuffed = stuff(self.head)
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
        # The MIME lines made here are settled and none starts with a dot, so they go to
        # DATA as they are; every header line ends with CRLF, so the personal headers
        # start a line.
        for made in (self.body_start, self.between, self.end):
            assert settled(made)
            assert stuff(made) is made
        if not self.head.endswith(b"\r\n"):
            raise RenderError("the static header fields must end with CRLF")

    def build(self, personal_headers: str, values: Mapping[str, str]) -> bytes:
        return b"".join(
            (
                self.head,
                settle_line_ends(personal_headers.encode("ascii")),
                self.body_start,
                self.text.encode(values),
                self.between,
                self.html.encode(values),
                self.end,
            )
        )

    def build_prepared(self, personal_headers: str, values: Mapping[str, str]) -> Prepared:
        """build(), settled for DATA: only the personal parts are looked at here."""
        personal = settle_line_ends(personal_headers.encode("ascii"))
        personal_stuffed = stuff(personal)
        text, text_stuffed = self.text.encode_prepared(values)
        html, html_stuffed = self.html.encode_prepared(values)
        message = b"".join(
            (self.head, personal, self.body_start, text, self.between, html, self.end)
        )
        if (
            self.head_stuffed is self.head
            and personal_stuffed is personal
            and text_stuffed is text
            and html_stuffed is html
        ):
            return Prepared(message, message)
        stuffed = b"".join(
            (
                self.head_stuffed,
                personal_stuffed,
                self.body_start,
                text_stuffed,
                self.between,
                html_stuffed,
                self.end,
            )
        )
        return Prepared(message, stuffed)


def _to_and_date(email: str, display_name: str, message_id: str, date: datetime) -> str:
    """The personal headers but List-Unsubscribe; `display_name` is already clean_name()'d."""
    if not _PLAIN_ADDRESS.fullmatch(email):
        raise RenderError(f"cannot address a message to {email!r}: not a plain ASCII address")
    if date.tzinfo is None:
        raise RenderError("the Date header needs a timezone-aware datetime")
    return (
        headers.mailbox("To", display_name, email)
        + f"Date: {format_datetime(date)}\r\nMessage-ID: {message_id}\r\n"
    )


@dataclass(frozen=True, slots=True)
class CourseSender:
    """Who a course's emails come from: its course.toml [sender], else config's."""

    name: str
    address: str  #: of lessons
    transactional_address: str  #: of confirmations
    reply_to: str | None
    postal_lines: list[str]
    #: Of config's address: List-Id and Message-ID keep one domain, whatever the course.
    domain: str

    @classmethod
    def of(cls, sender: SenderSettings, course: Course) -> CourseSender:
        identity = course.identity
        return cls(
            name=identity.sender_name or sender.name,
            address=identity.sender_address or sender.address,
            transactional_address=identity.sender_address or sender.transactional_from,
            reply_to=identity.reply_to,
            postal_lines=sender.postal_lines,
            domain=sender.domain,
        )


def _list_id(course: Course, sender: CourseSender) -> str:
    if course.identity.list_id:
        label = course.identity.list_id
    else:
        try:
            label = f"{list_label(course.slug)}.{sender.domain}"
        except ValueError as exc:
            raise RenderError(f"List-Id: {exc}") from None
    return headers.list_id(course.identity.list_name or course.title, label)


def _feedback_id(course: Course, kind: str, sender_id: str) -> list[str]:
    """Gmail's feedback loop header, a:b:c:SenderId; none without a sender id. Static per
    course and kind, so its complaint rates are told apart at no cost per recipient."""
    if not sender_id:
        return []
    try:
        label = list_label(course.slug)  # ASCII, and never a colon
    except ValueError as exc:
        raise RenderError(f"Feedback-ID: {exc}") from None
    return [f"Feedback-ID: {label}:{kind}:newsletter:{sender_id}\r\n"]


def _require_sandbox(env: Environment) -> None:
    if not isinstance(env, SandboxedEnvironment):
        raise TypeError("email templates render only in the sandbox of make_environment()")


def course_environment(env: Environment, course: Course) -> Environment:
    """The shared templates' environment, with the course's own templates (from its
    snapshot) in front of the shared ones: the same sandbox, no globals, only the context."""
    _require_sandbox(env)
    if not course.templates:
        return env
    assert env.loader is not None
    return env.overlay(loader=ChoiceLoader([DictLoader(dict(course.templates)), env.loader]))


def _identity_headers(sender: CourseSender, address: str) -> list[str]:
    # Names and addresses are checked where they enter (config, course.toml); cleaning
    # them again here would silently change what was typed, so they must already be clean.
    if not _PLAIN_ADDRESS.fullmatch(address):
        raise RenderError(f"cannot send from {address!r}: not a plain ASCII address")
    lines = [headers.mailbox("From", sender.name, address)]
    if sender.reply_to:
        if not _PLAIN_ADDRESS.fullmatch(sender.reply_to):
            raise RenderError(f"cannot take replies at {sender.reply_to!r}: not plain ASCII")
        lines.append(headers.mailbox("Reply-To", "", sender.reply_to))
    return lines


def _common_context(
    sender: CourseSender, course: Course, subject: str, preheader: str
) -> dict[str, Any]:
    # Plain values only: templates may come with a course, from writers who are not the
    # server's administrators, and an object such as the course's Path would offer them
    # methods (read_text, unlink) that the sandbox lets through.
    return {
        "subject": subject,
        "preheader": preheader,
        "preheader_filler": _PREHEADER_FILLER,
        "sender": {
            "name": sender.name,
            "address": sender.address,
            "reply_to": sender.reply_to or "",
            "postal_lines": tuple(sender.postal_lines),
        },
        "course": {
            "slug": course.slug,
            "title": course.title,
            "description": course.description,
        },
        "language": course.identity.language,
        "footer_note": tuple(course.identity.footer_paragraphs),
        **_MARKERS,
    }


class LessonEmail:
    """One lesson compiled for sending: build once, then render() per recipient."""

    def __init__(
        self,
        env: Environment,
        sender: SenderSettings,
        course: Course,
        lesson: Lesson,
        *,
        feedback_id: str = "",
        kind: str = "lesson",
    ) -> None:
        """`feedback_id`: the sender id of a Feedback-ID header; empty, no header. `kind`:
        "lesson", or "newsletter" for an issue of the newsletter (its own templates)."""
        self.lesson = lesson
        self.number = course.number_of(lesson)
        #: The course's or issue's own daily cap per person; None: config's.
        self.own_daily_cap = course.identity.max_per_subscriber_per_day
        env = course_environment(env, course)
        identity = CourseSender.of(sender, course)
        #: MAIL FROM: the address of the From header.
        self.envelope_from = identity.address
        body = render_lesson_body(course, lesson)
        context = _common_context(identity, course, lesson.subject, lesson.preheader) | {
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
                *_identity_headers(identity, identity.address),
                headers.unstructured("Subject", lesson.subject),
                _list_id(course, identity),
                # RFC 8058: mailbox providers unsubscribe with one POST, no page visit.
                "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n",
                *_feedback_id(course, kind, feedback_id),
            ],
            text=env.get_template(f"{kind}.txt").render(context),
            html=env.get_template(f"{kind}.html").render(context),
        )

    def render(
        self, recipient: Recipient, links: PersonalLinks, *, message_id: str, date: datetime
    ) -> bytes:
        return self.layout.build(*self._personal(recipient, links, message_id, date))

    def render_prepared(
        self, recipient: Recipient, links: PersonalLinks, *, message_id: str, date: datetime
    ) -> Prepared:
        """render(), settled for SMTP's DATA: the same message, and its dot-stuffed form."""
        return self.layout.build_prepared(*self._personal(recipient, links, message_id, date))

    def _personal(
        self, recipient: Recipient, links: PersonalLinks, message_id: str, date: datetime
    ) -> tuple[str, dict[str, str]]:
        """The personal header fields, and the personal values."""
        name = clean_name(recipient.first_name)
        personal = _to_and_date(recipient.email, name, message_id, date) + (
            f"List-Unsubscribe: <{links.unsubscribe_url}>,\r\n <{links.unsubscribe_mailto}>\r\n"
        )
        return personal, self.values(recipient, links, name)

    def html(self, recipient: Recipient, links: PersonalLinks) -> str:
        return self.layout.html.fill(self.values(recipient, links))

    def text(self, recipient: Recipient, links: PersonalLinks) -> str:
        return self.layout.text.fill(self.values(recipient, links))

    @staticmethod
    def values(
        recipient: Recipient, links: PersonalLinks, name: str | None = None
    ) -> dict[str, str]:
        """The personal values; `name` is the recipient's clean_name(), if already known."""
        if name is None:
            name = clean_name(recipient.first_name)
        return {
            "first_name": name or FIRST_NAME_FALLBACK,
            "email": recipient.email,
            "unsubscribe_url": links.unsubscribe_url,
            "preferences_url": links.preferences_url,
            "confirm_url": "",
            "unsubscribe_all_url": links.unsubscribe_all_url or links.unsubscribe_url,
        }


class ConfirmationEmail:
    """The double opt-in email: transactional, and it carries nothing the signer typed
    except the address, so the signup form cannot be used to message strangers."""

    SUBJECT = "Please confirm your subscription"

    def __init__(
        self, env: Environment, sender: SenderSettings, course: Course, *, feedback_id: str = ""
    ) -> None:
        env = course_environment(env, course)
        identity = CourseSender.of(sender, course)
        self.envelope_from = identity.transactional_address
        # Adds to the subject in the inbox list rather than repeating it: what the email is
        # for, and that nothing comes without the click.
        preheader = f"One click starts {course.title}. Without it, we send nothing more."
        context = _common_context(identity, course, self.SUBJECT, preheader)
        self.layout = _MessageLayout(
            [
                *_identity_headers(identity, identity.transactional_address),
                headers.unstructured("Subject", self.SUBJECT),
                *_feedback_id(course, "confirmation", feedback_id),
            ],
            text=env.get_template("confirm.txt").render(context),
            html=env.get_template("confirm.html").render(context),
        )

    def render(self, email: str, confirm_url: str, *, message_id: str, date: datetime) -> bytes:
        return self.layout.build(*self._personal(email, confirm_url, message_id, date))

    def render_prepared(
        self, email: str, confirm_url: str, *, message_id: str, date: datetime
    ) -> Prepared:
        """render(), settled for SMTP's DATA: the same message, and its dot-stuffed form."""
        return self.layout.build_prepared(*self._personal(email, confirm_url, message_id, date))

    @staticmethod
    def _personal(
        email: str, confirm_url: str, message_id: str, date: datetime
    ) -> tuple[str, dict[str, str]]:
        values = dict.fromkeys(PERSONAL_FIELDS, "") | {"email": email, "confirm_url": confirm_url}
        return _to_and_date(email, "", message_id, date), values


def render_lesson_body(course: Course, lesson: Lesson) -> str:
    """The lesson's Markdown with markers for the personal values.

    Only `{{ name }}` of LESSON_BODY_NAMES may appear; anything else (unknown names, calls,
    attributes, filters, tags) is a ContentError at the lesson file's own line, raised
    before any of the body runs. The body renders in a sandbox of its own, apart from the
    email templates' environment, with nothing but these values."""
    if _MARKER_PATTERN.search(lesson.body):
        raise ContentError(
            [Problem(lesson.path, lesson.body_line, "reserved text XNLSLOT in body")]
        )
    template = compile_body(lesson.path, lesson.body, lesson.body_line, LESSON_BODY_NAMES)
    return template.render(
        {name: _MARKERS[name] for name in LESSON_BODY_NAMES & _MARKERS.keys()},
        course_title=course.title,
        lesson_number=course.number_of(lesson),
        lesson_count=len(course.lessons),
    )
