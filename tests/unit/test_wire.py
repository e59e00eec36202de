"""A message's bytes settled once for DATA are the bytes aiosmtplib's DATA would send."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings
from jinja2 import Environment

from newsletter.config import Settings
from newsletter.content.course import Course
from newsletter.delivery.transport import Envelope
from newsletter.render import ConfirmationEmail, LessonEmail, Recipient
from newsletter.tokens import LinkMaker, Tokens
from newsletter.wire import prepare, settle_line_ends, stuff

NOW = datetime(2026, 3, 29, 9, 30, tzinfo=UTC)


def aiosmtplib_payload(data: bytes) -> bytes:
    """What aiosmtplib 5's SMTP.data() sends before the final ".\r\n" (the oracle)."""
    return PERIOD_REGEX.sub(b"..", normalize_message_line_endings(data))


EDGES = [
    b"",
    b".",
    b"\r",
    b"\n",
    b"\r\n",
    b"\n\r",
    b"\r\r\n",
    b"..",
    b".\r\n.\r\n",
    b"a\r.b\n.c\r\n.d",
    b"\n.\r.\r\n.",
    b"x" * 998 + b"\r\n." + b"y" * 997,
]


@pytest.mark.parametrize("data", EDGES)
def test_edge_cases_are_settled_and_stuffed_as_aiosmtplib_does(data: bytes) -> None:
    prepared = prepare(data)

    assert prepared.stuffed == aiosmtplib_payload(data)
    assert prepared.message == normalize_message_line_endings(data)


def test_random_line_soup_is_settled_and_stuffed_as_aiosmtplib_does() -> None:
    rng = random.Random(13)
    alphabet = [b"a", b".", b"\r", b"\n", b"\r\n", b" ", b"\xc3\xa9"]
    for _ in range(3000):
        data = b"".join(rng.choices(alphabet, k=rng.randrange(0, 40)))
        prepared = prepare(data)
        assert prepared.stuffed == aiosmtplib_payload(data), data
        assert prepared.message == normalize_message_line_endings(data), data


def test_nothing_is_copied_when_nothing_needs_settling_or_stuffing() -> None:
    data = b"Subject: x\r\n\r\nno line starts with a dot.\r\n"

    assert settle_line_ends(data) is data
    assert stuff(data) is data
    prepared = prepare(data)
    assert prepared.message is data
    assert prepared.stuffed is data


def test_a_field_put_in_front_is_as_if_it_had_been_there_all_along() -> None:
    field = b"DKIM-Signature: v=1; a=rsa-sha256;\r\n b=abc\r\n"
    for data in [*EDGES, b"Subject: x\r\n\r\n.dot\r\n"]:
        assert prepare(data).with_field(field) == prepare(field + prepare(data).message)


def test_an_envelope_copied_with_other_data_is_settled_afresh() -> None:
    prepared = prepare(b"Subject: a\r\n\r\n.one\r\n")
    envelope = Envelope.of("from@example.org", "to@example.org", prepared)
    other = b"Subject: b\n\n.two\n"

    assert envelope.payload() is prepared.stuffed
    assert replace(envelope, data=other).payload() == aiosmtplib_payload(other)
    # An equal but separately made copy is not trusted either: it is settled again.
    assert replace(envelope, data=bytes(bytearray(envelope.data))).payload() == prepared.stuffed


# A body whose plain-text part has lines that start with a dot (a code block), and a lone
# "." line, which quoted-printable encodes as "=2E" by itself.
DOTTED_BODY = """Hi {{ first_name }},

```
.hidden-file
..two dots
.
```

.a paragraph that starts with a dot
"""


@pytest.fixture
def links(settings: Settings) -> LinkMaker:
    return LinkMaker(Tokens("test-secret"), settings.site.base, settings.sender.unsubscribe_address)


@pytest.mark.parametrize("first_name", ["Ana", ".Dot", ". ."])
@pytest.mark.parametrize("dotted", [False, True])
def test_a_rendered_lesson_is_settled_per_chunk_as_aiosmtplib_settles_it_whole(
    env: Environment,
    settings: Settings,
    course: Course,
    links: LinkMaker,
    first_name: str,
    dotted: bool,
) -> None:
    lesson = course.lessons[0]
    if dotted:
        lesson = replace(lesson, body=DOTTED_BODY)
        course = replace(course, lessons=(lesson, *course.lessons[1:]))
    email = LessonEmail(env, settings.sender, course, lesson)
    recipient = Recipient("ana@example.com", first_name)
    personal = links.personal_links(7, NOW)

    rendered = email.render(recipient, personal, message_id="<m@example.org>", date=NOW)
    prepared = email.render_prepared(recipient, personal, message_id="<m@example.org>", date=NOW)

    assert prepared.message == rendered
    assert prepared.stuffed == aiosmtplib_payload(rendered)
    starts_with_dot = rendered.startswith(b".") or b"\n." in rendered
    assert starts_with_dot == (dotted or first_name != "Ana")
    assert (prepared.stuffed is prepared.message) == (not starts_with_dot)


def test_a_confirmation_is_settled_as_aiosmtplib_settles_it(
    env: Environment, settings: Settings, course: Course
) -> None:
    email = ConfirmationEmail(env, settings.sender, course)
    url = "https://example.org/confirm/abc"

    rendered = email.render("ana@example.com", url, message_id="<c@example.org>", date=NOW)
    prepared = email.render_prepared("ana@example.com", url, message_id="<c@example.org>", date=NOW)

    assert prepared.message == rendered
    assert prepared.stuffed == aiosmtplib_payload(rendered)
