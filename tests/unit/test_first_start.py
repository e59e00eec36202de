"""What `serve` does about courses as it starts: only the demo queues one by itself."""

from __future__ import annotations

import dataclasses
import shutil
from datetime import time, timedelta
from pathlib import Path

from newsletter.cli.running import FirstStart, first_start
from newsletter.content.course import content_fingerprint, load_course
from tests.conftest import COURSE_DIR


def test_the_demo_queues_the_shipped_course_on_an_empty_database():
    assert first_start(sequences=0, live=0, smtp_host="") is FirstStart.QUEUE_DEMO


def test_a_database_with_a_relay_configured_is_never_queued_for():
    assert first_start(sequences=0, live=0, smtp_host="mail.example.org") is FirstStart.HINT


def test_a_database_that_had_courses_is_told_how_to_queue_when_none_is_live():
    assert first_start(sequences=2, live=0, smtp_host="") is FirstStart.HINT
    assert first_start(sequences=2, live=1, smtp_host="") is FirstStart.NOTHING
    assert first_start(sequences=1, live=1, smtp_host="mail.example.org") is FirstStart.NOTHING


def test_the_fingerprint_ignores_where_the_folder_is(tmp_path: Path):
    copy = load_course(Path(shutil.copytree(COURSE_DIR, tmp_path / COURSE_DIR.name)))
    assert content_fingerprint(copy) == content_fingerprint(load_course(COURSE_DIR))


def test_the_fingerprint_changes_with_titles_front_matter_and_bodies():
    course = load_course(COURSE_DIR)
    first = course.lessons[0]
    variants = [
        dataclasses.replace(course, title=course.title + "!"),
        dataclasses.replace(course, description=course.description + " More."),
        dataclasses.replace(course, lessons=course.lessons[:-1]),
        dataclasses.replace(course, lessons=course.lessons[::-1]),
    ] + [
        dataclasses.replace(course, lessons=(changed, *course.lessons[1:]))
        for changed in (
            dataclasses.replace(first, subject=first.subject + "?"),
            dataclasses.replace(first, preheader="Another preheader"),
            dataclasses.replace(first, delay=first.delay + timedelta(hours=1)),
            dataclasses.replace(first, send_at=time(3, 33)),
            dataclasses.replace(first, body=first.body + "One more line.\n"),
            dataclasses.replace(first, path=first.path.with_name("00-renamed.md")),
        )
    ]
    prints = {content_fingerprint(variant) for variant in variants}
    assert content_fingerprint(course) not in prints
    assert len(prints) == len(variants)
