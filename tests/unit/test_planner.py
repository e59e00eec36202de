"""When each lesson is due: delays, send times, windows, time zones and DST."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from newsletter.scheduling.planner import (
    AwaitSend,
    Complete,
    PlannedLesson,
    Send,
    SendWindow,
    Wait,
    next_look,
    next_step,
    send_time,
)

LONDON = ZoneInfo("Europe/London")
NEW_YORK = ZoneInfo("America/New_York")
DAYTIME = SendWindow(time(8), time(20))
OVERNIGHT = SendWindow(time(22), time(6))


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("earliest", "send_at", "window", "zone", "expected"),
    [
        # inside the window: at once
        ("2026-06-10 12:00", None, DAYTIME, LONDON, "2026-06-10 12:00"),
        # before the window opens (07:00 BST = 06:00 UTC): at 08:00 BST the same day
        ("2026-06-10 05:00", None, DAYTIME, LONDON, "2026-06-10 07:00"),
        # after it closes (21:00 BST): 08:00 BST the next morning
        ("2026-06-10 20:00", None, DAYTIME, LONDON, "2026-06-11 07:00"),
        # the window is in the subscriber's zone: 12:00 UTC is 08:00 in New York (EDT)
        ("2026-06-10 11:00", None, DAYTIME, NEW_YORK, "2026-06-10 12:00"),
        # a window across midnight
        ("2026-06-10 23:30", None, OVERNIGHT, ZoneInfo("UTC"), "2026-06-10 23:30"),
        ("2026-06-10 12:00", None, OVERNIGHT, ZoneInfo("UTC"), "2026-06-10 22:00"),
        # a lesson's own send time: later today, or tomorrow when it has passed
        ("2026-06-10 06:00", time(9, 30), DAYTIME, LONDON, "2026-06-10 08:30"),
        ("2026-06-10 10:00", time(9, 30), DAYTIME, LONDON, "2026-06-11 08:30"),
        # ...but a send time less than an hour before the delay is up is still that day's
        ("2026-06-10 09:00", time(9, 30), DAYTIME, LONDON, "2026-06-10 08:30"),
        # winter: London is on GMT, so 09:30 local is 09:30 UTC
        ("2026-01-10 06:00", time(9, 30), DAYTIME, LONDON, "2026-01-10 09:30"),
    ],
)
def test_send_time(earliest, send_at, window, zone, expected):
    assert send_time(utc(earliest), send_at=send_at, window=window, zone=zone) == utc(expected)


def test_a_daily_send_time_keeps_its_local_hour_across_the_spring_dst_change():
    # Europe/London moves from GMT to BST at 01:00 UTC on 2026-03-29.
    before = send_time(utc("2026-03-28 07:00"), send_at=time(9), window=DAYTIME, zone=LONDON)
    after = send_time(utc("2026-03-29 07:00"), send_at=time(9), window=DAYTIME, zone=LONDON)
    assert before == utc("2026-03-28 09:00")
    assert after == utc("2026-03-29 08:00")
    assert before.astimezone(LONDON).hour == after.astimezone(LONDON).hour == 9


def test_a_previous_send_a_little_late_does_not_push_a_daily_send_time_a_day_later():
    # The previous lesson went out at 09:00:02 (a scheduler tick late), delay 1 day.
    earliest = utc("2026-01-12 09:00:02") + timedelta(days=1)
    due = send_time(earliest, send_at=time(9), window=DAYTIME, zone=LONDON)
    assert due == utc("2026-01-13 09:00")


def test_a_one_day_delay_over_the_spring_change_keeps_the_local_send_time():
    # 09:00 GMT on Saturday plus 24 hours is 10:00 BST on Sunday: still Sunday's 09:00.
    due = send_time(utc("2026-03-29 09:00"), send_at=time(9), window=DAYTIME, zone=LONDON)
    assert due == utc("2026-03-29 08:00")


def test_a_send_time_skipped_by_the_clock_change_goes_out_just_after_it():
    # 01:30 does not exist in London on 2026-03-29; it resolves to 02:30 BST (01:30 UTC).
    due = send_time(utc("2026-03-29 00:00"), send_at=time(1, 30), window=DAYTIME, zone=LONDON)
    assert due == utc("2026-03-29 01:30")
    assert due.astimezone(LONDON).time() == time(2, 30)


def test_an_ambiguous_autumn_send_time_goes_out_once_at_its_first_occurrence():
    # 01:30 happens twice in London on 2026-10-25; the first is BST (00:30 UTC).
    due = send_time(utc("2026-10-25 00:00"), send_at=time(1, 30), window=DAYTIME, zone=LONDON)
    assert due == utc("2026-10-25 00:30")


LESSONS = [
    PlannedLesson(1, "welcome", timedelta(0), None),
    PlannedLesson(2, "cause", timedelta(days=2), None),
    PlannedLesson(3, "outcomes", timedelta(days=2), time(9)),
]


def step(
    handled: set[str],
    last_sent: str,
    now: str,
    welcome_at_once: bool = True,
    *,
    in_flight: bool = False,
):
    return next_step(
        LESSONS,
        handled,
        last_sent_at=utc(last_sent),
        now=utc(now),
        zone=LONDON,
        window=DAYTIME,
        welcome_at_once=welcome_at_once,
        in_flight=in_flight,
    )


def test_someone_confirming_late_at_night_gets_the_welcome_at_once():
    assert step(set(), "2026-06-10 22:00", "2026-06-10 22:00") == Send(
        LESSONS[0], utc("2026-06-10 22:00")
    )


def test_without_welcome_at_once_the_welcome_waits_for_the_window():
    assert step(set(), "2026-06-10 22:00", "2026-06-10 22:00", welcome_at_once=False) == Wait(
        utc("2026-06-11 07:00")
    )


def test_the_next_lesson_waits_its_delay_after_the_previous_was_sent():
    assert step({"welcome"}, "2026-06-10 12:00", "2026-06-11 12:00") == Wait(
        utc("2026-06-12 12:00")
    )
    assert step({"welcome"}, "2026-06-10 12:00", "2026-06-12 12:00") == Send(
        LESSONS[1], utc("2026-06-12 12:00")
    )


def test_a_lesson_with_a_send_time_waits_for_it():
    assert step({"welcome", "cause"}, "2026-06-10 12:00", "2026-06-12 12:00") == Wait(
        utc("2026-06-13 08:00")
    )


def test_a_lesson_inserted_behind_the_subscriber_is_sent_next():
    assert step({"welcome", "outcomes"}, "2026-06-10 12:00", "2026-06-20 12:00") == Send(
        LESSONS[1], utc("2026-06-12 12:00")
    )


def test_a_lesson_long_overdue_at_night_waits_for_the_morning():
    # The service was down: the lesson was due at 12:00 and it is now 03:00 (London).
    assert step({"welcome"}, "2026-06-10 11:00", "2026-06-13 02:00") == Wait(
        utc("2026-06-13 07:00")
    )


def test_a_lesson_long_overdue_in_the_day_goes_at_once():
    assert step({"welcome"}, "2026-06-10 11:00", "2026-06-13 12:00") == Send(
        LESSONS[1], utc("2026-06-12 11:00")
    )


def test_the_course_completes_when_every_lesson_is_handled():
    assert step({"welcome", "cause", "outcomes"}, "2026-06-10 12:00", "2026-06-20 12:00") == (
        Complete()
    )


def test_the_next_lesson_waits_while_one_is_still_queued_or_being_sent():
    # Timed from the send before the one in flight, "cause" would be due long ago.
    assert step({"welcome"}, "2026-06-01 12:00", "2026-06-20 12:00", in_flight=True) == (
        AwaitSend()
    )


def test_a_course_whose_last_lesson_is_in_flight_completes_as_before():
    handled = {"welcome", "cause", "outcomes"}
    assert step(handled, "2026-06-10 12:00", "2026-06-20 12:00", in_flight=True) == Complete()


def look(handled: set[str], queued: PlannedLesson, due: str, lessons=LESSONS):  # type: ignore[no-untyped-def]
    return next_look(lessons, handled, Send(queued, utc(due)))


def test_after_queueing_a_lesson_the_planner_looks_when_the_next_may_first_be_due():
    # "cause" is 2 calendar days after the welcome's send, which is no earlier than its due
    # time; calendar days can be up to ZONE_SHIFT_MAX (2 h) short in elapsed time.
    assert look(set(), LESSONS[0], "2026-06-10 12:00") == utc("2026-06-12 10:00")
    # "outcomes" has a send time, which may fall up to an hour before its delay is up.
    assert look({"welcome"}, LESSONS[1], "2026-06-12 12:00") == utc("2026-06-14 09:00")


def test_a_delay_in_hours_is_looked_at_exactly_when_it_ends():
    lessons = [LESSONS[0], PlannedLesson(2, "soon", timedelta(hours=36), None)]
    assert look(set(), lessons[0], "2026-06-10 12:00", lessons) == utc("2026-06-12 00:00")


def test_the_look_is_for_the_first_lesson_not_had_after_the_one_queued():
    # "cause" was had (inserted behind, or skipped): the look is for "outcomes".
    assert look({"cause"}, LESSONS[0], "2026-06-10 12:00") == utc("2026-06-12 09:00")


def test_without_a_lesson_after_it_or_with_one_due_at_once_the_send_asks_for_the_look():
    assert look({"welcome", "cause"}, LESSONS[2], "2026-06-14 08:00") is None
    lessons = [LESSONS[0], PlannedLesson(2, "same-time", timedelta(0), None)]
    assert look(set(), lessons[0], "2026-06-10 12:00", lessons) is None
    # An hour's delay with a send time: the slack eats it all.
    lessons = [LESSONS[0], PlannedLesson(2, "hour", timedelta(hours=1), time(9))]
    assert look(set(), lessons[0], "2026-06-10 12:00", lessons) is None
