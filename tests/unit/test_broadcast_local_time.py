"""An issue sent at a local time: each subscriber's copy is due when their own clock shows
that time (a time a spring-forward change skips resolves as lessons' send times do), or at
once if it had passed there when the send started; the issue itself is listed at the
earliest moment any copy can be due."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo, available_timezones

from newsletter.broadcasts import first_due_at, local_due_at, new_broadcast
from newsletter.content.newsletters import Newsletter, WallTime

NINE_ON_10_DEC = datetime(2026, 12, 10, 9, 0)
STARTED = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def utc(year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def test_each_zone_gets_its_copy_at_nine_on_its_own_clock() -> None:
    due = {
        name: local_due_at(NINE_ON_10_DEC, ZoneInfo(name), STARTED)
        for name in ("Asia/Tokyo", "Europe/London", "America/New_York", "Asia/Kolkata")
    }

    assert due == {
        "Asia/Tokyo": utc(2026, 12, 10, 0, 0),
        "Europe/London": utc(2026, 12, 10, 9, 0),
        "America/New_York": utc(2026, 12, 10, 14, 0),
        "Asia/Kolkata": utc(2026, 12, 10, 3, 30),
    }


def test_a_time_a_spring_forward_change_skips_comes_as_long_after_the_change() -> None:
    # 14 March 2027, New York: clocks go from 02:00 EST straight to 03:00 EDT.
    due = local_due_at(datetime(2027, 3, 14, 2, 30), ZoneInfo("America/New_York"), STARTED)

    assert due == utc(2027, 3, 14, 7, 30)  # 03:30 EDT
    assert due.astimezone(ZoneInfo("America/New_York")).hour == 3


def test_a_time_that_comes_twice_in_autumn_means_the_first() -> None:
    # 7 November 2027, New York: 01:30 comes in EDT, then again an hour later in EST.
    due = local_due_at(datetime(2027, 11, 7, 1, 30), ZoneInfo("America/New_York"), STARTED)

    assert due == utc(2027, 11, 7, 5, 30)  # 01:30 EDT


def test_where_the_time_has_passed_when_the_send_starts_the_copy_is_due_at_once() -> None:
    started = utc(2026, 12, 10, 5, 0)  # 14:00 in Tokyo, 05:00 in London

    assert local_due_at(NINE_ON_10_DEC, ZoneInfo("Asia/Tokyo"), started) == started
    assert local_due_at(NINE_ON_10_DEC, ZoneInfo("Europe/London"), started) == utc(
        2026, 12, 10, 9, 0
    )


def test_the_issue_is_due_when_the_time_first_comes_anywhere() -> None:
    assert first_due_at(NINE_ON_10_DEC, STARTED) == utc(2026, 12, 9, 19, 0)  # 09:00 at UTC+14
    late_start = utc(2026, 12, 10, 5, 0)
    assert first_due_at(NINE_ON_10_DEC, late_start) == late_start


def test_no_zone_gets_its_copy_before_the_issue_is_due() -> None:
    for wall in (NINE_ON_10_DEC, datetime(2027, 3, 14, 2, 30), datetime(2027, 10, 3, 2, 0)):
        first = first_due_at(wall, STARTED)
        earliest = min(
            local_due_at(wall, ZoneInfo(name), STARTED) for name in available_timezones()
        )
        assert first <= earliest
        assert earliest - first < timedelta(hours=1)  # and some zone gets it right then


def test_an_issue_sent_at_a_local_time_keeps_the_wall_time_on_its_row() -> None:
    issue = Newsletter(
        path=Path("2026-12.md"),
        key="2026-12",
        subject="News",
        preheader="All of it",
        segment="all",
        send_at=WallTime(NINE_ON_10_DEC),
        body="Hello.\n",
        body_line=5,
    )

    local = new_broadcast(issue, "all", WallTime(NINE_ON_10_DEC), STARTED)
    instant = new_broadcast(issue, "all", utc(2026, 12, 10, 9, 0), STARTED)

    assert (local.local_send_at, local.due_at) == (NINE_ON_10_DEC, utc(2026, 12, 9, 19, 0))
    assert (instant.local_send_at, instant.due_at) == (None, utc(2026, 12, 10, 9, 0))
