"""A course speaks as itself: course.toml names its sender, footer note, consent sentence,
list and language, and may bring email templates of its own; bad values are refused at
their line."""

from __future__ import annotations

import re
import shutil
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from jinja2.exceptions import SecurityError, UndefinedError

from newsletter.content.course import Course, load_course
from newsletter.content.identity import DEFAULT_CONSENT, consent_version
from newsletter.errors import ContentError
from newsletter.render import ConfirmationEmail, LessonEmail, PersonalLinks, Recipient
from tests.conftest import REPO

SOURDOUGH = REPO / "tests" / "fixtures" / "courses" / "sourdough"
NOW = datetime(2026, 3, 29, 9, 30, tzinfo=UTC)
LINKS = PersonalLinks(
    "https://example.org/unsubscribe/t", "mailto:u@example.org", "https://example.org/p/t"
)


def parse(raw: bytes) -> EmailMessage:
    message = message_from_bytes(raw, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def lesson_message(env, settings, course: Course) -> EmailMessage:  # type: ignore[no-untyped-def]
    email = LessonEmail(env, settings.sender, course, course.lessons[0])
    return parse(
        email.render(Recipient("ana@example.com", "Ana"), LINKS, message_id="<m@x>", date=NOW)
    )


def bodies(message: EmailMessage) -> tuple[str, str]:
    text, html = message.get_body(("plain",)), message.get_body(("html",))
    assert text is not None
    assert html is not None
    return text.get_content(), html.get_content()


def manifest_problems(folder: Path, manifest: str) -> list[tuple[int, str]]:
    (folder / "course.toml").write_text(manifest, encoding="utf-8")
    with pytest.raises(ContentError) as raised:
        load_course(folder)
    return [(problem.line, problem.message) for problem in raised.value.problems]


@pytest.fixture
def sourdough() -> Course:
    return load_course(SOURDOUGH)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return Path(shutil.copytree(SOURDOUGH, tmp_path / "sourdough"))


def test_the_manifest_names_who_the_course_speaks_as(sourdough):
    identity = sourdough.identity
    assert (identity.sender_name, identity.sender_address) == (
        "The Crumb Club",
        "bread@crumb.example",
    )
    assert identity.reply_to == "baker@crumb.example"
    assert identity.language == "en-GB"
    assert identity.consent_text.startswith("Yes, send me the three sourdough lessons.")
    assert identity.consent_version == consent_version(identity.consent_text)
    assert identity.footer_paragraphs == [
        "Ovens differ: keep an eye on your first loaf rather than the clock.",
        "Baked with flour, water, salt and patience.",
    ]
    assert set(sourdough.templates) == {"lesson.txt"}


def test_a_new_consent_wording_gets_a_new_version():
    assert consent_version(DEFAULT_CONSENT) != consent_version(DEFAULT_CONSENT + " Thanks.")
    assert consent_version(DEFAULT_CONSENT) == consent_version(DEFAULT_CONSENT)


def test_the_shipped_course_keeps_its_medical_note_in_its_own_manifest(course):
    assert course.identity.footer_paragraphs == [
        "This course shares general information, not medical advice. Please talk to your "
        "own doctor before making decisions about treatment."
    ]
    assert course.identity.sender_name == "Spine Health Notes"
    for template in (REPO / "templates" / "emails").iterdir():
        assert "medical advice" not in template.read_text(encoding="utf-8"), template


def test_lessons_come_from_the_courses_sender_with_its_list_and_footer(env, settings, sourdough):
    message = lesson_message(env, settings, sourdough)

    [sender] = message["From"].addresses
    assert (sender.display_name, sender.addr_spec) == ("The Crumb Club", "bread@crumb.example")
    assert message["Reply-To"].addresses[0].addr_spec == "baker@crumb.example"
    assert message["List-Id"] == "Crumb Club sourdough <sourdough.crumb.example>"
    text, html = bodies(message)
    assert "Baked with flour, water, salt and patience." in text
    assert "Baked with flour, water, salt and patience." in html
    assert '<html lang="en-GB"' in html
    assert "medical advice" not in text + html
    # Its own lesson.txt replaces the shared one; the HTML twin is still the shared one.
    assert text.startswith("Crumb Club · lesson 1 of 3")
    assert "Lesson 1 of 3" in html
    assert "Crumb Club · lesson" not in html


def test_the_confirmation_comes_from_the_course_too(env, settings, sourdough):
    email = ConfirmationEmail(env, settings.sender, sourdough)
    message = parse(
        email.render("ana@example.com", "https://x.example/c/1", message_id="<m@x>", date=NOW)
    )
    assert message["From"].addresses[0].addr_spec == "bread@crumb.example"
    assert email.envelope_from == "bread@crumb.example"
    text, html = bodies(message)
    assert "Baked with flour" in text
    assert '<html lang="en-GB"' in html


def test_a_course_without_identity_keys_falls_back_to_config_and_says_no_footer_note(
    env, settings, folder
):
    (folder / "course.toml").write_text('title = "Bread"\ndescription = "About bread."\n')
    shutil.rmtree(folder / "templates")
    course = load_course(folder)
    message = lesson_message(env, settings, course)

    assert message["From"].addresses[0].display_name == settings.sender.name
    assert message["From"].addresses[0].addr_spec == settings.sender.address
    assert message["Reply-To"] is None
    assert message["List-Id"] == f"Bread <sourdough.{settings.sender.domain}>"
    assert course.identity.consent_text == DEFAULT_CONSENT
    text, html = bodies(message)
    assert "medical advice" not in text + html
    assert '<html lang="en"' in html


def test_unknown_keys_are_named_with_their_line(folder):
    problems = manifest_problems(
        folder,
        'title = "T"\ndescription = "D"\n\n[sender]\nname = "N"\nphone = "123"\n',
    )
    assert problems == [
        (6, "unknown key 'sender.phone' (expected one of: name, address, reply_to)")
    ]


def test_a_sender_name_carrying_a_header_is_refused_at_its_line(folder):
    problems = manifest_problems(
        folder,
        'title = "T"\ndescription = "D"\n[sender]\nname = "Crumb\\r\\nBcc: x@evil.test"\n',
    )
    assert problems == [
        (
            4,
            "sender.name: contains a control character (U+000D carriage return); it must be "
            "one line",
        )
    ]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('address = "bäcker@crumb.example"', "sender.address: "),
        ('reply_to = "not an address"', "sender.reply_to: "),
    ],
)
def test_sender_addresses_must_be_plain_addresses(folder, line, expected):
    [(number, message)] = manifest_problems(
        folder, f'title = "T"\ndescription = "D"\n[sender]\n{line}\n'
    )
    assert number == 4
    assert message.startswith(expected)


@pytest.mark.parametrize(
    ("manifest_line", "key"),
    [
        ('language = "english please"', "language"),
        ('consent = "  "', "consent"),
        ('footer_note = "a\\u001bb"', "footer_note"),
    ],
)
def test_bad_values_are_named_with_their_key_and_line(folder, manifest_line, key):
    [(number, message)] = manifest_problems(
        folder, f'title = "T"\ndescription = "D"\n{manifest_line}\n'
    )
    assert number == 3
    assert message.startswith(f"{key}: ")


def test_a_list_id_must_be_a_dot_atom(folder):
    [(number, message)] = manifest_problems(
        folder, 'title = "T"\ndescription = "D"\n[list]\nid = "sour dough"\n'
    )
    assert (number, message.split(":")[0]) == (4, "list.id")


def test_a_course_template_with_a_syntax_error_is_named_at_its_line(folder):
    (folder / "templates" / "confirm.html").write_text("<p>\n{% if %}\n", encoding="utf-8")
    (folder / "templates" / "notes.md").write_text("hi", encoding="utf-8")
    with pytest.raises(ContentError) as raised:
        load_course(folder)
    found = {(problem.path.name, problem.line) for problem in raised.value.problems}
    assert found == {("confirm.html", 2), ("notes.md", 0)}


def test_a_course_template_renders_in_the_sandbox(env, settings, folder):
    (folder / "templates" / "lesson.txt").write_text(
        "{{ course.__class__.__mro__ }}", encoding="utf-8"
    )
    with pytest.raises(SecurityError, match="unsafe"):
        lesson_message(env, settings, load_course(folder))


def test_the_confirmations_preheader_adds_to_its_subject_in_whole_sentences(
    env, settings, sourdough
):
    email = ConfirmationEmail(env, settings.sender, sourdough)
    message = parse(
        email.render("ana@example.com", "https://x.example/c/1", message_id="<m@x>", date=NOW)
    )
    text, html = bodies(message)
    preheader = re.search(r'class="preheader"[^>]*>([^\u2007<]+)', html)
    assert preheader is not None
    words = set(re.findall(r"\w+", preheader.group(1).casefold()))
    subject = set(re.findall(r"\w+", message["Subject"].casefold()))
    assert words - subject  # it says something the subject does not
    assert "Sourdough from scratch" in preheader.group(1)
    assert preheader.group(1).strip().endswith(".")
    # Every paragraph of the plain text ends a sentence (or is the link itself).
    body = text.split("-" * 60)[0]
    for paragraph in filter(None, (" ".join(p.split()) for p in body.split("\n\n"))):
        if paragraph.startswith(("http", "=", "Please confirm your subscription")):
            continue
        assert paragraph.endswith((".", ":")), paragraph


@pytest.mark.parametrize(
    ("template", "error"),
    [
        ("{{ course.path }}", UndefinedError),  # the course is its title and words, no more
        ("{{ sender.postal_lines.append('x') }}", UndefinedError),  # a tuple
        ("{{ footer_note.__class__ }}", SecurityError),
        ("{{ lesson.number.__class__.__mro__ }}", SecurityError),
    ],
)
def test_a_course_template_sees_plain_values_only(env, settings, folder, template, error):
    (folder / "templates" / "lesson.txt").write_text(template, encoding="utf-8")
    with pytest.raises(error):
        lesson_message(env, settings, load_course(folder))
