"""Lessons become complete RFC 5322 messages; personal data can break neither HTML nor headers."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from jinja2 import Environment

from newsletter.config import Settings
from newsletter.content import markdown
from newsletter.content.course import Course
from newsletter.content.lessons import Lesson
from newsletter.errors import RenderError
from newsletter.render import (
    ConfirmationEmail,
    LessonEmail,
    PersonalLinks,
    Recipient,
    clean_name,
    make_message_id,
)
from newsletter.tokens import LinkMaker, Tokens

NOW = datetime(2026, 3, 29, 9, 30, tzinfo=UTC)
ANA = Recipient("ana@example.com", "Ana")
HOSTILE_NAME = '<script>alert(1)</script>\r\nBcc: victim@example.net\r\n\r\n<b>"Ann"</b>'


@pytest.fixture
def links(settings: Settings) -> LinkMaker:
    return LinkMaker(Tokens("test-secret"), settings.site.base, settings.sender.unsubscribe_address)


def parse(raw: bytes) -> EmailMessage:
    message = message_from_bytes(raw, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def parts(message: EmailMessage) -> tuple[str, str]:
    text, html = message.get_body(("plain",)), message.get_body(("html",))
    assert text is not None
    assert html is not None
    # Bodies travel with CRLF line ends; compare them as the text they decode to.
    return tuple(part.get_content().replace("\r\n", "\n") for part in (text, html))  # type: ignore[return-value]


def render(
    env: Environment,
    settings: Settings,
    course: Course,
    links: LinkMaker,
    lesson: str = "3",
    recipient: Recipient = ANA,
    subscriber_id: int = 7,
) -> EmailMessage:
    email = LessonEmail(env, settings.sender, course, course.lesson(lesson))
    raw = email.render(
        recipient,
        links.personal_links(subscriber_id, NOW),
        message_id="<m1@example.org>",
        date=NOW,
    )
    assert b"\r\n" in raw
    assert b"\n" not in raw.replace(b"\r\n", b"")
    return parse(raw)


def test_lesson_has_the_headers_mailbox_providers_require(env, settings, course, links):
    message = render(env, settings, course, links)

    assert message["From"].addresses[0].addr_spec == settings.sender.address
    assert message["From"].addresses[0].display_name == settings.sender.name
    assert message["To"].addresses[0].addr_spec == "ana@example.com"
    assert message["Subject"] == course.lesson("3").subject
    assert message["Date"].datetime == NOW
    assert message["Message-ID"] == "<m1@example.org>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["List-Id"] == f"{course.title} <{course.slug}.example.org>"
    unsubscribe = re.findall(r"<([^>]+)>", message["List-Unsubscribe"])
    assert unsubscribe[0].startswith(f"{settings.site.base}/unsubscribe/")
    assert unsubscribe[1].startswith(f"mailto:{settings.sender.unsubscribe_address}?subject=")
    assert message.get_content_type() == "multipart/alternative"


def test_both_parts_are_utf8_and_carry_footer_disclaimer_and_sources(env, settings, course, links):
    message = render(env, settings, course, links)
    text, html = parts(message)

    for part in message.iter_parts():
        assert part.get_content_charset() == "utf-8"
    unsubscribe_url = re.findall(r"<([^>]+)>", message["List-Unsubscribe"])[0]
    for body in (text, html):
        assert "not medical advice" in body
        assert unsubscribe_url in body
        assert "/preferences/" in body
        assert "1 Example Street" in body
        assert "https://www.ncbi.nlm.nih.gov/pubmed/22193841" in body
        assert "Hi Ana," in body
    assert f'href="{unsubscribe_url}"' in html


def test_preheader_is_hidden_at_the_top_of_the_html(env, settings, course, links):
    _, html = parts(render(env, settings, course, links))
    preheader = course.lesson("3").preheader
    hidden = re.search(r"<div[^>]*display: ?none[^>]*>([^<]*)", html)
    assert hidden is not None
    assert hidden.group(1).startswith(preheader)
    assert html.index(preheader) < html.index("<h1")


def test_css_is_inlined_and_dark_mode_rules_survive(env, settings, course, links):
    _, html = parts(render(env, settings, course, links))
    assert re.search(r"<p[^>]* style=", html)
    assert "prefers-color-scheme: dark" in html


def test_hostile_name_is_escaped_in_html_and_cannot_inject_headers(env, settings, course, links):
    message = render(
        env, settings, course, links, recipient=Recipient("ana@example.com", HOSTILE_NAME)
    )
    text, html = parts(message)

    assert message["Bcc"] is None
    assert [a.addr_spec for a in message["To"].addresses] == ["ana@example.com"]
    assert "<script>" not in html
    assert "<b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "\r" not in message["To"]
    assert "\n" not in message["To"]
    greeting = next(line for line in text.splitlines() if line.startswith("Hi "))
    assert greeting == 'Hi <script>alert(1)</script> Bcc: victim@example.net <b>"Ann"</b>,'


def test_non_ascii_name_is_encoded_in_the_header_and_kept_in_the_body(env, settings, course, links):
    message = render(
        env, settings, course, links, recipient=Recipient("zoe@example.com", "Zoë Ñúñez")
    )
    text, html = parts(message)
    assert message["To"].addresses[0].display_name == "Zoë Ñúñez"
    assert "Hi Zoë Ñúñez," in text
    assert "Hi Zoë Ñúñez," in html


def test_a_subscriber_without_a_name_is_greeted_plainly(env, settings, course, links):
    text, html = parts(render(env, settings, course, links, recipient=Recipient("x@example.com")))
    assert "Hi there," in text
    assert "Hi there," in html


def test_no_line_exceeds_the_rfc_limits_whatever_the_value_length(env, settings, course, links):
    long_name = "Maximiliana " * 8
    email = LessonEmail(env, settings.sender, course, course.lesson("2"))
    raw = email.render(
        Recipient("a" * 60 + "@example.com", long_name),
        links.personal_links(10**12, NOW),
        message_id="<m@example.org>",
        date=NOW,
    )
    head, _, body = raw.partition(b"\r\n\r\n")
    assert max(len(line) for line in body.split(b"\r\n")) <= 76  # RFC 2045, quoted-printable
    assert max(len(line) for line in head.split(b"\r\n")) <= 998  # RFC 5322
    text, _ = parts(parse(raw))
    assert f"Hi {long_name.strip()}," in text


def test_spliced_parts_decode_to_the_same_text_as_a_plain_fill(env, settings, course, links):
    email = LessonEmail(env, settings.sender, course, course.lesson("5"))
    recipient = Recipient("bo@example.com", "Bo  =?Ünïcode?= & co")
    personal = links.personal_links(3, NOW)
    raw = email.render(recipient, personal, message_id="<x@example.org>", date=NOW)
    text, html = parts(parse(raw))
    assert text == email.text(recipient, personal)
    assert html == email.html(recipient, personal)


def test_each_recipient_gets_their_own_links_and_address(env, settings, course, links):
    email = LessonEmail(env, settings.sender, course, course.lesson("1"))
    first, second = (
        parse(
            email.render(
                Recipient(f"r{n}@example.com"),
                links.personal_links(n, NOW),
                message_id=f"<{n}@example.org>",
                date=NOW,
            )
        )
        for n in (1, 2)
    )
    assert first["List-Unsubscribe"] != second["List-Unsubscribe"]
    assert "r1@example.com" in parts(first)[1]
    assert "r2@example.com" in parts(second)[1]
    assert "r1@example.com" not in parts(second)[1]


def test_markdown_and_css_inlining_run_once_per_lesson_not_per_recipient(
    env, settings, course, links, monkeypatch
):
    calls: list[str] = []
    real_to_html = markdown.to_html
    monkeypatch.setattr(
        markdown, "to_html", lambda source: calls.append(source) or real_to_html(source)
    )
    email = LessonEmail(env, settings.sender, course, course.lesson("2"))
    for n in range(50):
        email.render(
            Recipient(f"r{n}@example.com"),
            links.personal_links(n, NOW),
            message_id="<m@x>",
            date=NOW,
        )
    assert len(calls) == 1


def test_date_header_keeps_the_offset_it_was_given(env, settings, course, links):
    email = LessonEmail(env, settings.sender, course, course.lesson("1"))
    local = NOW.astimezone(timezone(timedelta(hours=2)))
    raw = email.render(
        Recipient("a@example.com"), links.personal_links(1, NOW), message_id="<m@x>", date=local
    )
    assert parse(raw)["Date"].endswith("+0200")


@pytest.mark.parametrize(
    "address",
    ["bad address@example.com", "a@example.com\r\nBcc: x@example.net", "José@exämple.com", ""],
)
def test_an_address_that_cannot_go_in_a_header_is_refused(env, settings, course, links, address):
    email = LessonEmail(env, settings.sender, course, course.lesson("1"))
    with pytest.raises(RenderError, match="cannot address"):
        email.render(Recipient(address), links.personal_links(1, NOW), message_id="<m@x>", date=NOW)


def test_a_naive_date_is_refused(env, settings, course, links):
    email = LessonEmail(env, settings.sender, course, course.lesson("1"))
    with pytest.raises(RenderError, match="timezone"):
        email.render(
            Recipient("a@example.com"),
            links.personal_links(1, NOW),
            message_id="<m@x>",
            date=NOW.replace(tzinfo=None),
        )


def test_confirmation_is_transactional_and_carries_only_the_address(env, settings, course, links):
    url = links.confirm_url(99, NOW)
    raw = ConfirmationEmail(env, settings.sender, course).render(
        "new@example.com", url, message_id=make_message_id("example.org"), date=NOW
    )
    message = parse(raw)
    text, html = parts(message)

    assert message["List-Unsubscribe"] is None
    assert message["List-Unsubscribe-Post"] is None
    assert message["To"].addresses[0].display_name == ""
    assert url in text
    assert f'href="{url}"' in html
    assert "new@example.com" in text
    assert "7 days" in text
    assert "not medical advice" in text
    assert "1 Example Street" in html


def test_confirmation_uses_the_transactional_from_address_when_configured(
    env, settings, course, links
):
    sender = settings.sender.model_copy(update={"transactional_address": "hello@example.org"})
    raw = ConfirmationEmail(env, sender, course).render(
        "new@example.com", links.confirm_url(1, NOW), message_id="<c@example.org>", date=NOW
    )
    assert parse(raw)["From"].addresses[0].addr_spec == "hello@example.org"


def test_make_message_id_is_unique_and_under_the_sender_domain():
    ids = {make_message_id("example.org") for _ in range(1000)}
    assert len(ids) == 1000
    assert all(re.fullmatch(r"<[0-9a-f]{32}@example\.org>", i) for i in ids)


def test_personal_links_are_what_render_puts_in_the_list_unsubscribe_header(env, settings, course):
    links = PersonalLinks(
        unsubscribe_url="https://news.example.org/unsubscribe/abc",
        unsubscribe_mailto="mailto:u@example.org?subject=unsubscribe%20abc",
        preferences_url="https://news.example.org/preferences/def",
    )
    email = LessonEmail(env, settings.sender, course, course.lesson("1"))
    message = parse(email.render(Recipient("a@example.com"), links, message_id="<m@x>", date=NOW))
    assert message["List-Unsubscribe"] == (
        "<https://news.example.org/unsubscribe/abc>, "
        "<mailto:u@example.org?subject=unsubscribe%20abc>"
    )


@pytest.mark.parametrize(
    ("name", "cleaned"),
    [
        ("Ana", "Ana"),
        ("  Ana \t Maria\r\n", "Ana Maria"),
        ("Zoë Ñúñez", "Zoë Ñúñez"),
        ("山田\u3000太郎", "山田 太郎"),
        ("\u202eevil\u202c Ana", "evil Ana"),  # right-to-left override
        ("\u2066Ana\u2069 \u200eBo\u200f\u061c", "Ana Bo"),  # isolates, LRM, RLM, ALM
        ("A\u200bn\u200ca\u200d\u2060\ufeff", "Ana"),  # zero-width characters
        ("Jo\u00adhn", "John"),  # soft hyphen (Cf)
        ("Ana \U0001f469\u200d\U0001f4bb", "Ana \U0001f469\u200d\U0001f4bb"),  # ZWJ emoji kept
        ("\U0001f468\U0001f3fd\u200d\U0001f33e", "\U0001f468\U0001f3fd\u200d\U0001f33e"),
        ("Ana\u200d", "Ana"),  # a ZWJ joining nothing goes
        ("a\u200d\U0001f4bb", "a\U0001f4bb"),  # a letter and an emoji are not one picture
        ("\u200b\u200c\u200d\u2060\ufeff", ""),
        ("\u202e\u202d\u2066", ""),
        ("\u3164\u115f\u2800", ""),  # Hangul fillers, blank Braille
        ("\u0301\u0301", ""),  # combining marks with nothing to sit on
        ("\x00\x1b[31m", "[31m"),
        ("x" * 150, "x" * 100),
    ],
)
def test_clean_name_keeps_what_a_person_sees_and_drops_what_hides(name, cleaned):
    assert clean_name(name) == cleaned


@pytest.mark.parametrize("name", ["\u200b\u200b", "\u202e\u2066\u200f", "\ufeff \u2060", "\u3164"])
def test_a_name_of_only_invisible_characters_is_greeted_as_there(
    env, settings, course, links, name
):
    message = render(env, settings, course, links, recipient=Recipient("x@example.com", name))
    text, html = parts(message)
    assert "Hi there," in text
    assert "Hi there," in html
    assert message["To"].addresses[0].display_name == ""
    assert message["To"] == "x@example.com"


def test_bidi_and_zero_width_characters_are_kept_out_of_the_to_header(env, settings, course, links):
    recipient = Recipient("ana@example.com", "\u202eAna\u200b Maria\u2069")
    raw = LessonEmail(env, settings.sender, course, course.lesson("1")).render(
        recipient, links.personal_links(1, NOW), message_id="<m@x>", date=NOW
    )
    message = parse(raw)
    assert message["To"].addresses[0].display_name == "Ana Maria"
    text, html = parts(message)
    assert "Hi Ana Maria," in text
    assert "Hi Ana Maria," in html


def test_the_preheader_is_hidden_without_tiny_or_invisible_text(env, settings, course, links):
    _, html = parts(render(env, settings, course, links))
    preheader = course.lesson("3").preheader
    div = re.search(r'<div class="preheader"([^>]*)>([^<]*)</div>', html)
    assert div is not None
    attributes, content = div.groups()
    style = re.search(r'style="([^"]*)"', attributes)
    assert style is not None
    rules = {
        name.strip(): value.strip()
        for name, _, value in (rule.partition(":") for rule in style.group(1).split(";"))
        if name.strip()
    }
    assert rules["display"] == "none"  # Gmail, Apple Mail, most webmail
    assert rules["mso-hide"] == "all"  # Outlook for Windows (Word's renderer)
    assert rules["visibility"] == "hidden"
    assert rules["max-height"] == "0"
    assert rules["overflow"] == "hidden"
    assert re.search(r"\bhidden\b", attributes.replace(style.group(0), ""))
    assert 'aria-hidden="true"' in attributes
    assert content.startswith(preheader)
    # The filler keeps the body's first words out of the inbox preview.
    assert content.count("\u2007\u034f") >= 50
    # Spam filters count tiny, transparent or faded-out text against a message.
    for trick in ("font-size: 1px", "font-size:1px", "color: transparent", "opacity: 0"):
        assert trick not in html.replace("opacity: 0.", "")
    assert not re.search(r"font-size:\s*[01]px", html)
    assert not re.search(r"color:\s*transparent", html)
    assert not re.search(r"opacity:\s*0(?![.\d])", html)


def test_the_plain_text_underline_matches_a_wide_subject(env, settings, links):
    lesson = Lesson(
        path=Path("demo/01-a.md"),
        key="a",
        subject="腰痛の基礎",
        preheader="はじめに",
        delay=timedelta(0),
        send_at=None,
        body="こんにちは\n",
        body_line=6,
    )
    course = Course("demo", Path("demo"), "講座", "説明", (lesson,))
    text = LessonEmail(env, settings.sender, course, lesson).text(
        Recipient("a@example.com"), links.personal_links(1, NOW)
    )
    assert "腰痛の基礎\n==========\n" in text


def test_a_feedback_id_names_the_course_and_the_kind_of_email(env, settings, course, links):
    lesson = LessonEmail(env, settings.sender, course, course.lesson("2"), feedback_id="spine")
    confirmation = ConfirmationEmail(env, settings.sender, course, feedback_id="spine")

    sent = parse(
        lesson.render(ANA, links.personal_links(7, NOW), message_id="<m@example.org>", date=NOW)
    )
    confirm = parse(
        confirmation.render(ANA.email, "https://x.example/c", message_id="<c@x>", date=NOW)
    )

    slug = "leg-weakness-after-microdiscectomy"
    assert sent["Feedback-ID"] == f"{slug}:lesson:newsletter:spine"
    assert confirm["Feedback-ID"] == f"{slug}:confirmation:newsletter:spine"


def test_without_a_sender_id_there_is_no_feedback_id(env, settings, course, links):
    message = render(env, settings, course, links)
    assert message["Feedback-ID"] is None


def test_a_course_named_in_another_script_has_an_ascii_feedback_id(env, settings):
    lesson = Lesson(
        path=Path("demo/01-a.md"),
        key="a",
        subject="腰痛の基礎",
        preheader="はじめに",
        delay=timedelta(0),
        send_at=None,
        body="こんにちは\n",
        body_line=6,
    )
    course = Course("腰痛の基礎", Path("demo"), "講座", "説明", (lesson,))
    email = ConfirmationEmail(env, settings.sender, course, feedback_id="spine")

    raw = email.render("a@example.com", "https://x.example/c", message_id="<c@x>", date=NOW)

    assert b"\r\nFeedback-ID: xn--" in raw
    assert parse(raw)["Feedback-ID"].endswith(":confirmation:newsletter:spine")
