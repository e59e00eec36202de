"""The schedule's clock and real time: `after()` turns a real delay into the clock's instant."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from newsletter.clock import FastForwardClock, FrozenClock, SystemClock

START = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


def test_a_fast_forwarded_schedule_reaches_a_real_delay_speed_times_further_on() -> None:
    clock = FastForwardClock(START, speed=100)

    moment = clock.after(timedelta(minutes=5))

    # Five real minutes are 500 minutes of the fast schedule (give or take the test's own time).
    assert timedelta(minutes=500) <= moment - START < timedelta(minutes=501)


def test_a_frozen_clock_is_one_real_delay_further_on() -> None:
    clock = FrozenClock(START)

    assert clock.after(timedelta(minutes=5)) == START + timedelta(minutes=5)


def test_the_system_clock_is_the_wall_clock() -> None:
    before = datetime.now(UTC)
    moment = SystemClock().after(timedelta(seconds=30))

    assert before + timedelta(seconds=30) <= moment <= datetime.now(UTC) + timedelta(seconds=30)
