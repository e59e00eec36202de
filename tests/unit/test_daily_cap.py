"""The daily cap's calendar: a person's day is their own, across a DST change too."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

from newsletter.scheduling.cap import holds_back, limit_for, local_day, next_day_at, sent_on

NEW_YORK = ZoneInfo("America/New_York")
TOKYO = ZoneInfo("Asia/Tokyo")


def test_a_persons_day_is_their_own():
    moment = datetime(2026, 6, 10, 2, 0, tzinfo=UTC)  # 22:00 on the 9th in New York
    assert local_day(moment, NEW_YORK) == date(2026, 6, 9)
    assert local_day(moment, TOKYO) == date(2026, 6, 10)


def test_held_mail_waits_for_the_window_on_their_next_day_even_across_dst():
    # 1 November 2026 is the day New York leaves summer time: 08:00 EST is 13:00 UTC.
    evening = datetime(2026, 10, 31, 23, 0, tzinfo=UTC)  # 19:00 EDT on the 31st
    assert next_day_at(evening, NEW_YORK, time(8, 0)) == datetime(2026, 11, 1, 13, 0, tzinfo=UTC)


def test_only_sends_of_that_local_day_count():
    sends = [
        (1, datetime(2026, 6, 9, 3, 59, tzinfo=UTC)),  # 23:59 on the 8th in New York
        (2, datetime(2026, 6, 9, 4, 0, tzinfo=UTC)),  # 00:00 on the 9th
        (3, datetime(2026, 6, 10, 3, 0, tzinfo=UTC)),  # 23:00 on the 9th
    ]
    assert sent_on(date(2026, 6, 9), NEW_YORK, sends) == {2, 3}


def test_a_course_or_issue_cap_of_its_own_wins_over_configs():
    assert limit_for(None, 1) == 1
    assert limit_for(3, 1) == 3
    assert limit_for(0, 1) == 0  # its own "no cap"


def test_the_cap_holds_back_the_message_past_it_and_none_when_zero():
    assert not holds_back(0, 1)
    assert holds_back(1, 1)
    assert not holds_back(1, 2)
    assert not holds_back(50, 0)
