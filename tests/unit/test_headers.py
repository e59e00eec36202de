"""Every header is built from clean values: control characters are refused where a value
enters (course files, config) and again when a header is written; any other text, in any
language, is encoded so that it parses back to itself and smuggles in no header."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from pydantic import ValidationError

from newsletter import headers
from newsletter.config import SenderSettings, Settings, load_settings
from newsletter.content.check import check_course
from newsletter.content.course import Course, list_label, load_course
from newsletter.content.lessons import Lesson, parse_lesson
from newsletter.errors import ConfigError, ContentError, RenderError
from newsletter.render import (
    FIRST_NAME_FALLBACK,
    LessonEmail,
    PersonalLinks,
    Recipient,
    clean_name,
    make_environment,
)
from tests.conftest import REPO

NOW = datetime(2026, 3, 29, 9, 30, tzinfo=UTC)
LINKS = PersonalLinks(
    unsubscribe_url="https://news.example.org/unsubscribe/abc",
    unsubscribe_mailto="mailto:unsubscribe@example.org?subject=unsubscribe",
    preferences_url="https://news.example.org/preferences/abc",
)
EXPECTED_HEADERS = {
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "MIME-Version",
    "Content-Type",
}
CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")


def parse(raw: bytes) -> EmailMessage:
    message = message_from_bytes(raw, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def one_lesson_course(title: str, subject: str, preheader: str, slug: str = "demo") -> Course:
    lesson = Lesson(
        path=Path(f"{slug}/01-hello.md"),
        key="hello",
        subject=subject,
        preheader=preheader,
        delay=timedelta(0),
        send_at=None,
        body="Hi {{ first_name }},\n\nA short lesson.\n",
        body_line=6,
    )
    return Course(slug, Path(slug), title, "A description.", (lesson,))


def assert_lines_within_limits(raw: bytes) -> None:
    head = raw.partition(b"\r\n\r\n")[0]
    for line in raw.split(b"\r\n"):
        assert len(line) <= 998, line[:80]  # RFC 5322 2.1.1, octets
    for line in head.split(b"\r\n"):
        if len(line) > headers.LINE_MAX:
            # Only where no break is possible: one token that cannot be split (an
            # address, a URL, a Message-ID), alone after the header name or the fold.
            after_name = line.split(b": ", 1)[1] if not line.startswith(b" ") else line
            assert b" " not in after_name.strip(), line


# --- the property -------------------------------------------------------------------------

#: Addresses as the render accepts them: ASCII dot-atoms (international ones are refused
#: at signup, not here).
ATEXT = "A-Za-z0-9!#$%&'*+/=?^_`{|}~-"
addresses = st.from_regex(
    rf"[{ATEXT}]{{1,20}}(\.[{ATEXT}]{{1,20}}){{0,2}}@[a-z0-9]{{1,20}}(\.[a-z0-9]{{1,20}}){{1,2}}",
    fullmatch=True,
)
unicode_text = st.text(max_size=120)
#: Built once: compiling the templates for every input would make the test slow.
TEMPLATES = make_environment(REPO / "templates" / "emails")


@hypothesis_settings(
    max_examples=300,
    deadline=None,
    database=None,  # no .hypothesis/ folder in the repository
    # The settings fixture is read, never changed, so sharing it between inputs is safe.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    subject=unicode_text,
    # Not a header but the inbox's one-line preview: lesson files refuse control characters
    # in it (tested below), so none reaches the render.
    preheader=unicode_text.filter(lambda text: not CONTROL.search(text)),
    title=unicode_text.filter(str.strip),  # course.toml refuses a blank title
    sender_name=unicode_text,
    first_name=st.text(max_size=300),
    address=addresses,
)
def test_any_unicode_in_any_header_field_is_refused_or_parses_back_to_itself(
    settings: Settings,
    subject: str,
    preheader: str,
    title: str,
    sender_name: str,
    first_name: str,
    address: str,
) -> None:
    """Values that hold a control character are refused (a clean error, never a message);
    every other value comes back from the standard library's parser exactly as it went in,
    in exactly the headers expected, within the RFC's line lengths.

    Each value takes the way it takes in real use: the sender's name through the config's
    validation, the first name through clean_name (as the web form and the CLI do), and
    subject and title straight into the render, as from a snapshot queued before course
    files were checked, so that the render's own refusal is what is tested for them."""
    try:
        sender = SenderSettings.model_validate(settings.sender.model_dump() | {"name": sender_name})
    except ValidationError:
        assert CONTROL.search(sender_name) or not sender_name.strip() or len(sender_name) > 100
        return
    course = one_lesson_course(title, subject, preheader)
    env = TEMPLATES
    if CONTROL.search(subject) or CONTROL.search(title):
        with pytest.raises(RenderError, match="control character"):
            LessonEmail(env, sender, course, course.lessons[0])
        return

    email = LessonEmail(env, sender, course, course.lessons[0])
    raw = email.render(Recipient(address, first_name), LINKS, message_id="<m@x.org>", date=NOW)
    message = parse(raw)

    assert set(message.keys()) == EXPECTED_HEADERS
    assert len(message.keys()) == len(EXPECTED_HEADERS)
    assert message.defects == []
    for name in EXPECTED_HEADERS:
        assert message[name].defects == (), name
    assert message["Subject"] == subject
    assert message["List-Id"] == f"{title} <demo.example.org>"
    [sender_address] = message["From"].addresses
    assert sender_address.display_name == " ".join(sender_name.split()) == sender.name
    assert sender_address.addr_spec == sender.address
    [recipient] = message["To"].addresses
    assert (recipient.display_name, recipient.addr_spec) == (clean_name(first_name), address)
    text = message.get_body(("plain",))
    page = message.get_body(("html",))
    assert text is not None
    assert page is not None
    greeting = f"Hi {clean_name(first_name) or FIRST_NAME_FALLBACK},"
    assert greeting in text.get_content().replace("\r\n", "\n")
    hidden = re.search(r'<div class="preheader"[^>]*>(.*?)\u2007', page.get_content(), re.DOTALL)
    assert hidden is not None
    assert html.unescape(hidden.group(1)) == preheader
    assert_lines_within_limits(raw)


@hypothesis_settings(max_examples=300, deadline=None, database=None)
@given(value=st.text(min_size=1, max_size=60))
def test_a_subject_from_a_lesson_file_is_refused_or_read_as_one_line(value: str) -> None:
    front = yaml.safe_dump({"subject": value}, allow_unicode=True, width=10**6)
    text = f"---\n{front}preheader: Something else entirely\ndelay: 1 day\n---\nBody.\n"
    try:
        lesson = parse_lesson(Path("demo/01-a.md"), text)
    except ContentError as exc:
        [problem] = exc.problems
        assert problem.line == 2
        assert not value.strip() or CONTROL.search(value.strip()), problem.message
    else:
        assert lesson.subject == " ".join(value.split())
        assert not CONTROL.search(lesson.subject)


# --- where values enter -------------------------------------------------------------------


def write_course(folder: Path, manifest: str, subject: str = "Hello") -> Path:
    folder.mkdir(parents=True)
    (folder / "course.toml").write_text(manifest, encoding="utf-8")
    (folder / "01-hello.md").write_text(
        f"---\nsubject: {subject}\npreheader: A first short note\ndelay: 0 days\n---\nHi.\n",
        encoding="utf-8",
    )
    return folder


def test_a_title_with_a_line_break_fails_course_check_at_its_line(tmp_path, env, settings):
    folder = write_course(
        tmp_path / "demo",
        'description = "About backs."\ntitle = "Course\\r\\nBcc: x@evil.test"\n',
    )
    course, problems = check_course(folder, env, settings.sender)
    assert course is None
    assert [str(problem) for problem in problems] == [
        f"{folder / 'course.toml'}:2: title: contains a control character (U+000D carriage return)"
    ]


def test_a_description_may_span_lines_but_holds_no_other_control(tmp_path):
    folder = write_course(tmp_path / "demo", 'title = "T"\ndescription = """\nOne.\nTwo.\n"""\n')
    assert load_course(folder).description == "One. Two."
    (folder / "course.toml").write_text('title = "T"\ndescription = "a\\u001bb"\n')
    with pytest.raises(ContentError, match=r"course.toml:2: description: .*U\+001B escape"):
        load_course(folder)


@pytest.mark.parametrize(
    ("front", "found"),
    [
        ('subject: "What\\r\\nBcc: x@evil.test"', "U+000D carriage return"),
        ("subject: |\n  Two\n  lines", "U+000A line feed"),
        ('subject: "Nul\\0here"', "U+0000 NUL"),
        ('subject: "Next\\x85line"', "U+0085"),
        ('subject: "Line\\u2028separator"', "U+2028"),
    ],
)
def test_a_subject_with_a_control_character_is_a_problem_at_its_line(front, found):
    text = f"---\n{front}\npreheader: Something else\ndelay: 1 day\n---\nBody.\n"
    with pytest.raises(ContentError) as caught:
        parse_lesson(Path("demo/01-a.md"), text)
    [problem] = caught.value.problems
    assert problem.line == 2
    assert problem.message == (
        f"subject: contains a control character ({found}); it must be one line of text"
    )


def test_a_preheader_with_a_control_character_is_a_problem_at_its_line():
    text = '---\nsubject: Hello\npreheader: "Tab\\tis fine, escape \\e is not"\ndelay: 1 day\n'
    with pytest.raises(ContentError, match=r"01-a.md:3: preheader: .*U\+001B escape"):
        parse_lesson(Path("demo/01-a.md"), text + "---\nBody.\n")


def test_tabs_and_folded_lines_in_a_subject_are_only_spacing():
    text = "---\nsubject: >\n  Folded\n  over\tlines\npreheader: Else\ndelay: 1 day\n---\nB.\n"
    assert parse_lesson(Path("demo/01-a.md"), text).subject == "Folded over lines"


def config_with_sender(tmp_path: Path, **sender: str) -> Path:
    values = {
        "name": "Spine Health Notes",
        "address": "course@example.org",
        "unsubscribe_address": "unsubscribe@example.org",
        "postal_address": "1 Example Street",
    } | sender
    lines = "\n".join(f"{key} = {toml_string(value)}" for key, value in values.items())
    path = tmp_path / "config.toml"
    path.write_text(f"[sender]\n{lines}\n", encoding="utf-8")
    return path


def toml_string(value: str) -> str:
    escaped = "".join(
        f"\\u{ord(char):04X}" if char in '"\\' or ord(char) < 0x20 or ord(char) == 0x7F else char
        for char in value
    )
    return f'"{escaped}"'


@pytest.mark.parametrize(
    ("sender", "error"),
    [
        (
            {"name": "Notes\r\nBcc: x@evil.test"},
            "2: sender.name: contains a control character (U+000D carriage return); "
            "it must be one line",
        ),
        ({"name": "N" * 101}, "2: sender.name: string should have at most 100 characters"),
        ({"name": "  "}, "2: sender.name: must not be blank"),
        (
            {"address": "kurs@exämple.org"},
            "3: sender.address: must be an ASCII address",
        ),
        (
            {"postal_address": "1 Example Street\n\x1b[2J"},
            "5: sender.postal_address: contains a control character (U+001B escape)",
        ),
    ],
)
def test_a_sender_value_that_cannot_go_in_a_header_is_a_config_error_naming_the_key(
    tmp_path, sender, error
):
    path = config_with_sender(tmp_path, **sender)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert str(caught.value).startswith(f"{path}:{error}"), str(caught.value)


def test_a_sender_name_in_any_language_is_accepted_with_its_spaces_collapsed(tmp_path):
    path = config_with_sender(tmp_path, name="Rückenschule  Müller – 腰痛\t教室")  # noqa: RUF001
    assert load_settings(path).sender.name == "Rückenschule Müller – 腰痛 教室"  # noqa: RUF001


# --- the render's own guard, for values that entered before these checks ------------------


def test_a_title_with_a_bcc_line_from_an_old_snapshot_is_refused_not_sent(env, settings):
    course = one_lesson_course("Course\r\nBcc: x@evil.test", "Hello", "A first note")
    with pytest.raises(RenderError, match=r"List-Id header cannot hold .*U\+000D"):
        LessonEmail(env, settings.sender, course, course.lessons[0])


@pytest.mark.parametrize("slug", ["my course", "a\r\nBcc: x@evil.test", "..", "a/b"])
def test_a_folder_name_that_cannot_be_a_list_label_is_refused(tmp_path, env, settings, slug):
    with pytest.raises(ValueError, match="cannot be a course id"):
        list_label(slug)
    course = one_lesson_course("Title", "Hello", "A first note", slug=slug)
    with pytest.raises(RenderError, match="List-Id"):
        LessonEmail(env, settings.sender, course, course.lessons[0])


@pytest.mark.parametrize(
    ("slug", "label"),
    [
        ("back-school", "back-school"),
        ("rückenschule", "xn--rckenschule-thb"),
        ("腰痛の基礎", "xn--u9j930ju2tx1cq7n"),
        ("course.v2", "course.v2"),
    ],
)
def test_a_course_folder_in_any_script_becomes_an_ascii_list_label(slug, label):
    assert list_label(slug) == label


def test_a_course_folder_name_with_a_space_fails_course_check(tmp_path, env, settings):
    folder = write_course(tmp_path / "my course", 'title = "T"\ndescription = "D"\n')
    _, problems = check_course(folder, env, settings.sender)
    assert [problem.message for problem in problems] == [
        "the folder name 'my course' is the course's id (in the database and the List-Id "
        "header): use letters, digits, '-', '_', and '.' between parts"
    ]


# --- encoding -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "line"),
    [
        ("Where sciatica often starts", "Subject: Where sciatica often starts\r\n"),
        ("What’s next", "Subject: =?utf-8?q?What=E2=80=99s_next?=\r\n"),  # noqa: RUF001
        ("=?utf-8?q?fake?=", "Subject: =?utf-8?b?PT91dGYtOD9xP2Zha2U/PQ==?=\r\n"),
        ("腰痛", "Subject: =?utf-8?b?6IWw55eb?=\r\n"),
    ],
)
def test_subjects_stay_readable_when_plain_and_are_encoded_when_not(value, line):
    assert headers.unstructured("Subject", value) == line


def test_a_long_subject_folds_at_spaces_and_a_long_encoded_one_between_characters():
    plain = headers.unstructured("Subject", " ".join(["word"] * 40))
    encoded = headers.unstructured("Subject", "日本語の件名" * 12)
    for folded in (plain, encoded):
        lines = folded.removesuffix("\r\n").split("\r\n")
        assert len(lines) > 1
        assert all(len(line) <= headers.LINE_MAX for line in lines)
    assert parse(f"{encoded}\r\n".encode("ascii"))["Subject"] == "日本語の件名" * 12


@pytest.mark.parametrize(
    ("name", "line"),
    [
        ("Ana", "To: Ana <a@example.org>\r\n"),
        ("J. R. Smith", 'To: "J. R. Smith" <a@example.org>\r\n'),
        ('Ann "Boss" O\\Neil', 'To: "Ann \\"Boss\\" O\\\\Neil" <a@example.org>\r\n'),
        ("", "To: a@example.org\r\n"),
        ("Zoë", "To: =?utf-8?q?Zo=C3=AB?= <a@example.org>\r\n"),
    ],
)
def test_display_names_are_atoms_quoted_strings_or_encoded_words(name, line):
    assert headers.mailbox("To", name, "a@example.org") == line
    parsed = parse(line.encode("ascii") + b"\r\n")["To"].addresses[0]
    assert parsed.display_name == name


def test_a_course_title_with_dashes_and_umlauts_makes_a_valid_list_id(env, settings):
    course = one_lesson_course("Rückenschule – Übungen", "Hallo", "Eine erste Notiz")  # noqa: RUF001
    raw = LessonEmail(env, settings.sender, course, course.lessons[0]).render(
        Recipient("a@example.org"), LINKS, message_id="<m@x.org>", date=NOW
    )
    head = raw.partition(b"\r\n\r\n")[0].decode("ascii")  # 7-bit clean
    assert "List-Id: =?utf-8?" in head
    assert parse(raw)["List-Id"] == "Rückenschule – Übungen <demo.example.org>"  # noqa: RUF001
