"""Courses in German and Japanese, and subscribers named in any script, go through the real
worker and a real SMTP server; every message arrives 7-bit clean and parses back to the
very text of the course files."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

import pytest

from newsletter.content.check import check_course
from newsletter.content.course import Course, list_label, load_course
from newsletter.db.models import DeliveryStatus
from newsletter.render import clean_name, make_environment
from tests.conftest import REPO
from tests.integration.harness import Stack, run, settings_for

COURSES = REPO / "tests" / "fixtures" / "courses"
START = datetime(2026, 6, 9, 9, 0, tzinfo=UTC)  # a Tuesday morning in London
READERS = {
    "zoe@example.com": "Zoë Ñúñez-Çelik",
    "taro@example.jp": "山田 太郎",
    "ana@example.org": "Ana \U0001f469\u200d\U0001f4bb",  # a ZWJ emoji: one picture
    "eve@example.net": "\u202eEve\u200b",  # a right-to-left override and a zero-width space
}


def body_text(message: EmailMessage, kind: str) -> str:
    part = message.get_body((kind,))
    assert part is not None
    return str(part.get_content()).replace("\r\n", "\n")


@pytest.mark.parametrize("folder", ["rückenschule", "腰痛の基礎"])
def test_a_course_in_another_language_checks_and_arrives_as_written(
    settings, tmp_path, smtp_server, folder
):
    course = load_course(COURSES / folder)
    config = settings_for(settings, tmp_path)
    checked, problems = check_course(
        course.path, make_environment(config.templates_dir), config.sender
    )
    assert problems == []
    assert checked == course

    async def scenario(stack: Stack) -> None:
        sequence = await stack.queue(course)
        ids = {
            email: await stack.subscribe(email, name=name, sequence_id=sequence)
            for email, name in READERS.items()
        }
        await stack.run_for(timedelta(days=5))

        for email, name in READERS.items():
            deliveries = await stack.deliveries(ids[email])
            assert [d.status for d in deliveries] == [DeliveryStatus.SENT] * len(course.lessons)
            received = stack.received(email)
            assert [m["Subject"] for m in received] == [lesson.subject for lesson in course.lessons]
            for message, lesson in zip(received, course.lessons, strict=True):
                assert_is_the_lesson(message, course, lesson.subject, email, name)
        for _, _, data in stack.server.messages:
            head = data.partition(b"\r\n\r\n")[0]
            assert head.isascii()  # 7-bit headers: any relay, no SMTPUTF8 needed
            for line in head.split(b"\r\n"):
                # Folded at 78 except a link or an address, which cannot be broken.
                assert len(line) <= 78 or b" " not in line.split(b": ", 1)[-1].strip(), line

    run(_with_stack(config, smtp_server, scenario))


def assert_is_the_lesson(
    message: EmailMessage, course: Course, subject: str, email: str, name: str
) -> None:
    assert message.defects == []
    assert message["List-Id"] == f"{course.title} <{list_label(course.slug)}.example.org>"
    [to] = message["To"].addresses
    assert (to.display_name, to.addr_spec) == (clean_name(name), email)
    text, html = body_text(message, "plain"), body_text(message, "html")
    greeting = clean_name(name)
    for body in (text, html):
        assert subject in body
        assert greeting in body
        assert "\u202e" not in body
        assert "\u200b" not in body
    assert course.title in text


def test_the_names_are_cleaned_once_and_shown_as_typed():
    assert [clean_name(name) for name in READERS.values()] == [
        "Zoë Ñúñez-Çelik",
        "山田 太郎",
        "Ana \U0001f469\u200d\U0001f4bb",
        "Eve",
    ]


async def _with_stack(config, smtp_server, scenario):  # type: ignore[no-untyped-def]
    stack = await Stack.start(config, smtp_server, START)
    try:
        await scenario(stack)
    finally:
        await stack.close()
