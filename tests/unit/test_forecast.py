"""The forecast's replay of one person: the daily cap holding mail to their next morning,
the course going on from the held lesson's send, a cap of an issue's own, what follows a
course."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from newsletter.scheduling.forecast import (
    CoursePlan,
    Enrolled,
    Person,
    Queued,
    Rules,
    forecast,
)
from newsletter.scheduling.planner import PlannedLesson, SendWindow

LONDON = ZoneInfo("Europe/London")
START = datetime(2026, 6, 9, 9, 0, tzinfo=UTC)  # 10:00 in London
RULES = Rules(SendWindow(time(8), time(20)), welcome_at_once=True, max_per_subscriber_per_day=1)
COURSE = CoursePlan(
    1,
    "back",
    (
        PlannedLesson(1, "welcome", timedelta(0), None),
        PlannedLesson(2, "cause", timedelta(days=2), None),
    ),
    subjects={1: "Welcome", 2: "The cause"},
)
ISSUE = Queued(delivery_id=7, due_at=START, what="issue 2026-06: June news", own_cap=None)


def person(*queued: Queued, course: CoursePlan = COURSE) -> Person:
    return Person(
        "ann@example.com",
        LONDON,
        courses=(Enrolled(course, frozenset(), START - timedelta(minutes=5)),),
        queued=queued,
    )


def replay(who: Person, days: int = 7, **courses: CoursePlan) -> list[tuple[str, datetime, str]]:
    planned = forecast(
        who, start=START, end=START + timedelta(days=days), rules=RULES, courses_by_slug=courses
    )
    return [(item.what, item.at, item.held_by.value) for item in planned]


def test_the_cap_holds_a_lesson_to_the_next_morning_and_the_course_goes_on_from_there():
    # The welcome was due five minutes before the issue: it goes first, the issue waits.
    assert replay(person(ISSUE)) == [
        ("lesson 1 of back: Welcome", START, ""),
        ("issue 2026-06: June news", datetime(2026, 6, 10, 7, 0, tzinfo=UTC), "daily cap"),
        ("lesson 2 of back: The cause", START + timedelta(days=2), ""),
    ]


def test_an_issue_with_a_cap_of_its_own_goes_the_same_day():
    urgent = Queued(7, START, "issue 2026-06: June news", own_cap=2)
    assert [when for _, when, _ in replay(person(urgent))][:2] == [START, START]


def test_a_lesson_due_in_the_night_is_moved_into_the_window():
    late = CoursePlan(
        1,
        "back",
        (
            PlannedLesson(1, "welcome", timedelta(0), None),
            PlannedLesson(2, "cause", timedelta(hours=12), None),  # 22:00 in London
        ),
    )
    [_, second] = replay(person(course=late))
    assert second == (
        "lesson 2 of back: cause",
        datetime(2026, 6, 10, 7, 0, tzinfo=UTC),
        "send window",
    )


def test_the_course_that_follows_starts_its_days_later_once():
    first = CoursePlan(1, "back", COURSE.lessons, next_course="legs", next_after_days=3)
    legs = CoursePlan(2, "legs", (PlannedLesson(3, "hello", timedelta(0), None),))
    assert [what for what, _, _ in replay(person(course=first), days=10, legs=legs)] == [
        "lesson 1 of back: welcome",
        "lesson 2 of back: cause",
        "lesson 1 of legs: hello",
    ]
    # Someone who was ever on the next course is not started on it again.
    been_there = dataclasses.replace(person(course=first), ever_on=frozenset({"back", "legs"}))
    assert len(replay(been_there, days=10, legs=legs)) == 2
