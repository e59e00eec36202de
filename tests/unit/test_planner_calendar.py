"""Each lesson lands on the intended local day, whatever the send time, the delay, the time
zone and the daylight-saving changes in between: never a day late, never a day early.

The oracle below works on the subscriber's wall clock only (naive local times and dates),
as a writer thinks of "two days later at 09:00"; the planner works on UTC instants."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from hypothesis import example, given, settings
from hypothesis import strategies as st

from newsletter.scheduling.planner import (
    SEND_TIME_SLACK,
    PlannedLesson,
    Send,
    SendWindow,
    Wait,
    next_look,
    next_step,
)

#: Zones with daylight saving on both hemispheres, a half-hour and a 45-minute offset,
#: one whose change happens at midnight, and some without any change.
ZONES = [
    "Europe/London",
    "Europe/Berlin",
    "America/New_York",
    "America/St_Johns",
    "America/Santiago",
    "Australia/Sydney",
    "Australia/Lord_Howe",
    "Pacific/Chatham",
    "Asia/Kolkata",
    "Asia/Tokyo",
    "UTC",
]
#: Besides those: the largest change at once (two hours, every spring and autumn).
LOOK_ZONES = [*ZONES, "Antarctica/Troll"]
#: Instants in the months with daylight-saving changes on either hemisphere.
near_changes = st.builds(
    lambda year, month, day, second: (
        datetime(year, month, day, tzinfo=UTC) + timedelta(seconds=second)
    ),
    st.integers(min_value=2025, max_value=2028),
    st.sampled_from([3, 4, 9, 10, 11]),
    st.integers(min_value=1, max_value=28),
    st.integers(min_value=0, max_value=86_399),
)
DAYTIME = SendWindow(time(8), time(20))
EVENING_TO_MORNING = SendWindow(time(18), time(9))


def lesson(days: int, send_at: time | None) -> PlannedLesson:
    return PlannedLesson(2, "next", timedelta(days=days), send_at)


def due_at(
    last_sent_at: datetime, days: int, send_at: time | None, zone: ZoneInfo, window: SendWindow
) -> datetime:
    step = next_step(
        [PlannedLesson(1, "first", timedelta(0), None), lesson(days, send_at)],
        {"first"},
        last_sent_at=last_sent_at,
        now=last_sent_at,  # planned right after the previous send
        zone=zone,
        window=window,
        welcome_at_once=True,
    )
    assert isinstance(step, Wait)
    return step.until


def local(moment: datetime, zone: ZoneInfo) -> datetime:
    return moment.astimezone(zone).replace(tzinfo=None)


def intended_day(sent_local: datetime, days: int, send_at: time | None, window: SendWindow) -> date:
    """The writer's reading: `days` calendar days after the previous send, at the lesson's
    send time (still that day if it is at most SEND_TIME_SLACK before the same clock time),
    or at once if inside the window, else when the window next opens."""
    earliest = sent_local + timedelta(days=days)
    day, clock = earliest.date(), earliest.time()
    if send_at is not None:
        slack_start = (datetime.combine(day, clock) - SEND_TIME_SLACK).time()
        same_day = send_at >= slack_start or slack_start > clock  # slack reaching back a day
        return day if same_day else day + timedelta(days=1)
    if window.contains(clock) or clock < window.start:
        return day
    return day + timedelta(days=1)


instants = st.datetimes(
    min_value=datetime(2025, 1, 1), max_value=datetime(2028, 12, 31), timezones=st.just(UTC)
)
times = st.times().map(lambda t: t.replace(microsecond=0))


@settings(max_examples=600, deadline=None)
@given(
    sent=instants,
    days=st.integers(min_value=1, max_value=14),
    send_at=st.none() | times,
    zone_name=st.sampled_from(ZONES),
    window=st.sampled_from([DAYTIME, EVENING_TO_MORNING]),
)
# The reported slip: lesson 2 at 09:00:02 New York time, the day before the spring change.
@example(
    sent=datetime(2026, 3, 7, 14, 0, 2, tzinfo=UTC),
    days=2,
    send_at=time(9),
    zone_name="America/New_York",
    window=DAYTIME,
)
@example(
    sent=datetime(2026, 3, 7, 14, 0, 2, tzinfo=UTC),
    days=2,
    send_at=None,
    zone_name="America/New_York",
    window=DAYTIME,
)
# The autumn change, in London.
@example(
    sent=datetime(2026, 10, 24, 8, 0, 2, tzinfo=UTC),
    days=2,
    send_at=time(9),
    zone_name="Europe/London",
    window=DAYTIME,
)
def test_every_lesson_lands_on_its_intended_local_day(
    sent: datetime, days: int, send_at: time | None, zone_name: str, window: SendWindow
) -> None:
    zone = ZoneInfo(zone_name)
    sent_local = local(sent, zone)

    due = local(due_at(sent, days, send_at, zone, window), zone)

    assert due.date() == intended_day(sent_local, days, send_at, window)
    if send_at is not None and due.time() != send_at:
        # Only a send time the clocks skip that day moves, by the length of the skip.
        assert due - datetime.combine(due.date(), send_at) <= timedelta(hours=1)


@settings(max_examples=300, deadline=None)
@given(
    sent=instants,
    days=st.integers(min_value=1, max_value=14),
    zone_name=st.sampled_from(ZONES),
)
def test_a_lesson_without_a_send_time_keeps_the_previous_local_hour_inside_the_window(
    sent: datetime, days: int, zone_name: str
) -> None:
    zone = ZoneInfo(zone_name)
    sent_local = local(sent, zone)
    earliest = sent_local + timedelta(days=days)
    if not DAYTIME.contains(earliest.time()):
        return  # moved to the window: the other test covers its day

    due = local(due_at(sent, days, None, zone, DAYTIME), zone)

    # The same wall-clock time, unless the clocks skipped it that day.
    assert timedelta(0) <= due - earliest <= timedelta(hours=1)


def test_a_welcome_with_a_send_time_waits_for_it_even_when_sent_at_once_is_on() -> None:
    new_york = ZoneInfo("America/New_York")
    confirmed = datetime(2026, 12, 3, 8, 59, tzinfo=UTC)  # 03:59 in New York
    welcome = PlannedLesson(1, "welcome", timedelta(0), time(9))

    step = next_step(
        [welcome],
        set(),
        last_sent_at=confirmed,
        now=confirmed,
        zone=new_york,
        window=DAYTIME,
        welcome_at_once=True,
    )

    assert step == Wait(datetime(2026, 12, 3, 14, 0, tzinfo=UTC))  # 09:00 New York time


def test_a_welcome_without_a_send_time_still_goes_at_once() -> None:
    confirmed = datetime(2026, 12, 3, 23, 0, tzinfo=UTC)
    welcome = PlannedLesson(1, "welcome", timedelta(0), None)

    step = next_step(
        [welcome],
        set(),
        last_sent_at=confirmed,
        now=confirmed,
        zone=ZoneInfo("Europe/London"),
        window=DAYTIME,
        welcome_at_once=True,
    )

    assert step == Send(welcome, confirmed)


@settings(max_examples=1500, deadline=None)
@given(
    due=near_changes,
    lag=st.sampled_from([0, 2, 59, 3600, 86_400]) | st.integers(min_value=0, max_value=6 * 86_400),
    days=st.integers(min_value=0, max_value=14),
    hours=st.sampled_from([0, 1, 2, 3, 23, 25, 36]),
    send_at=st.none() | times,
    zone_name=st.sampled_from(LOOK_ZONES),
    window=st.sampled_from([DAYTIME, EVENING_TO_MORNING]),
)
# London's spring change: one calendar day after Saturday 09:00 GMT is 23 hours.
@example(
    due=datetime(2026, 3, 28, 9, 0, tzinfo=UTC),
    lag=0,
    days=1,
    hours=0,
    send_at=None,
    zone_name="Europe/London",
    window=DAYTIME,
)
# The autumn change in London two days after the welcome's due time, the send 2 s late.
@example(
    due=datetime(2026, 10, 23, 0, 30, tzinfo=UTC),
    lag=2,
    days=2,
    hours=0,
    send_at=time(1, 15),
    zone_name="Europe/London",
    window=DAYTIME,
)
# Troll moves from +00 to +02 at 01:00 UTC on 2026-03-29: one calendar day is 22 hours.
@example(
    due=datetime(2026, 3, 28, 10, 0, tzinfo=UTC),
    lag=0,
    days=1,
    hours=0,
    send_at=None,
    zone_name="Antarctica/Troll",
    window=DAYTIME,
)
# Troll moves from +02 back to +00 at 01:00 UTC on 2026-10-25.
@example(
    due=datetime(2026, 10, 24, 0, 59, tzinfo=UTC),
    lag=120,
    days=1,
    hours=0,
    send_at=None,
    zone_name="Antarctica/Troll",
    window=EVENING_TO_MORNING,
)
def test_the_look_after_queueing_a_lesson_is_never_after_the_next_one_falls_due(
    due: datetime,
    lag: int,
    days: int,
    hours: int,
    send_at: time | None,
    zone_name: str,
    window: SendWindow,
) -> None:
    """Whenever the queued lesson is actually sent (at or after its due time), the lesson after
    it does not fall due before the planner's look: the look never makes a lesson late."""
    zone = ZoneInfo(zone_name)
    queued = PlannedLesson(1, "queued", timedelta(0), None)
    following = PlannedLesson(2, "next", timedelta(days=days, hours=hours), send_at)

    look = next_look([queued, following], set(), Send(queued, due))
    if look is None:
        return  # the send's outcome asks for the look
    assert look > due
    sent = due + timedelta(seconds=lag)
    if sent > look:
        return  # still in flight at the look: the planner waits for the send (AwaitSend)
    step = next_step(
        [queued, following],
        {"queued"},
        last_sent_at=sent,
        now=sent,
        zone=zone,
        window=window,
        welcome_at_once=True,
    )
    assert isinstance(step, Wait)
    assert step.until >= look
