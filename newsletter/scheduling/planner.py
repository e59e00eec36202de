"""Pure: given where a subscriber stands and the time, what should happen next.

Rules (docs/delivery.md tells them to admins):
- A lesson is due its delay after the previous lesson was actually sent (the first lesson:
  after enrolling), then moved to the lesson's own send time or into the send window, in
  the subscriber's time zone, daylight-saving changes included. A delay of whole days
  counts days on the subscriber's calendar ("2 days" after Saturday 09:00 is Monday 09:00,
  even across a daylight-saving change); other delays count elapsed hours.
- The next lesson is the first lesson of the sequence's current version that this
  subscriber has no delivery for. A re-queued sequence therefore never repeats a lesson,
  and a lesson inserted behind a subscriber is still sent (unless skipped when queued).
- While a lesson of the course is still queued or being sent, the next one waits for it:
  its delay counts from that send.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from newsletter.scheduling.wallclock import instant

if TYPE_CHECKING:
    from newsletter.db.models import LessonSnapshot

#: How far before the end of a lesson's delay its send time may fall and still be used.
SEND_TIME_SLACK = timedelta(hours=1)
#: The most a time zone's offset changes at once (Antarctica/Troll moves by two hours): a
#: delay of whole calendar days can be this much shorter in elapsed time.
ZONE_SHIFT_MAX = timedelta(hours=2)
#: A step overdue by more than this (the service was down, or paused) waits for the send
#: window instead of going out at once; shorter lateness is just a scheduler tick.
CATCH_UP_GRACE = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class SendWindow:
    start: time
    end: time  #: may be earlier than start: a window across midnight

    def contains(self, moment: time) -> bool:
        if self.start <= self.end:
            return self.start <= moment < self.end
        return moment >= self.start or moment < self.end


@dataclass(frozen=True, slots=True)
class PlannedLesson:
    id: int
    key: str
    delay: timedelta
    send_at: time | None


def planned(row: LessonSnapshot) -> PlannedLesson:
    """A queued lesson's snapshot as the planner sees it (the worker's and the forecast's)."""
    return PlannedLesson(row.id, row.key, timedelta(seconds=row.delay_s), row.send_at)


@dataclass(frozen=True, slots=True)
class Send:
    lesson: PlannedLesson
    due_at: datetime


@dataclass(frozen=True, slots=True)
class Wait:
    until: datetime


@dataclass(frozen=True, slots=True)
class AwaitSend:
    """A lesson of the course is still queued or being sent: the next one is timed from that
    send, whose outcome asks for the next look."""


@dataclass(frozen=True, slots=True)
class Complete:
    pass


Step = Send | Wait | AwaitSend | Complete


def next_step(
    lessons: Sequence[PlannedLesson],
    handled_keys: set[str],
    *,
    last_sent_at: datetime,
    now: datetime,
    zone: ZoneInfo,
    window: SendWindow,
    welcome_at_once: bool,
    in_flight: bool = False,
) -> Step:
    """`in_flight`: a lesson of this course is still queued or being sent."""
    lesson = next((item for item in lessons if item.key not in handled_keys), None)
    if lesson is None:
        return Complete()
    if in_flight:
        # Timed from last_sent_at, the lesson after it would be timed from the one before.
        return AwaitSend()
    earliest = earliest_send(last_sent_at, lesson.delay, zone)
    is_welcome = not handled_keys and not lesson.delay
    if is_welcome and welcome_at_once and lesson.send_at is None:
        # Someone who confirms at 23:00 hears from us at once, not the next morning; a
        # welcome with a send time of its own keeps it.
        return Send(lesson, earliest) if earliest <= now else Wait(earliest)
    due = send_time(earliest, send_at=lesson.send_at, window=window, zone=zone)
    if due > now:
        return Wait(due)
    if now - due > CATCH_UP_GRACE:
        # Long overdue (the service was down): go now if this is a time lessons may go
        # out at, else at the next one. Never in the middle of the night.
        next_allowed = send_time(now, send_at=None, window=window, zone=zone)
        if next_allowed > now:
            return Wait(next_allowed)
    return Send(lesson, due)


def next_look(
    lessons: Sequence[PlannedLesson], handled_keys: set[str], queued: Send
) -> datetime | None:
    """When to look at an enrollment again once `queued` is: the earliest instant the lesson
    after it could fall due, so that sending this one costs the planner no look of its own.

    That lesson's delay counts from the actual send, which is no earlier than `queued.due_at`;
    a send time may fall SEND_TIME_SLACK before the delay is up, and calendar days may be
    ZONE_SHIFT_MAX short. Looking then, the planner finds either the send done (and times
    the lesson from it) or the lesson still in flight (AwaitSend). None when nothing would be
    gained: no lesson follows (the send's outcome asks for a look, which completes the
    course), or it may fall due at once."""
    after = {*handled_keys, queued.lesson.key}
    following = next((item for item in lessons if item.key not in after), None)
    if following is None:
        return None
    gap = following.delay
    if following.send_at is not None:
        gap -= SEND_TIME_SLACK
    if following.delay and not following.delay % timedelta(days=1):
        gap -= ZONE_SHIFT_MAX
    return queued.due_at + gap if gap > timedelta(0) else None


def earliest_send(last_sent_at: datetime, delay: timedelta, zone: ZoneInfo) -> datetime:
    """When the delay after the previous send is over. Whole days are calendar days in the
    subscriber's zone: counted in elapsed hours, "2 days" across a spring-forward change
    would end at 10:00 instead of 09:00, and a 09:00 send time would slip a whole day."""
    if not delay or delay % timedelta(days=1):
        return last_sent_at + delay
    local = last_sent_at.astimezone(zone).replace(tzinfo=None) + delay
    return instant(local.date(), local.time(), zone)


def send_time(
    earliest: datetime, *, send_at: time | None, window: SendWindow, zone: ZoneInfo
) -> datetime:
    """The first instant (UTC) at or after `earliest` when the lesson may go out.

    A send time up to SEND_TIME_SLACK before `earliest` still counts as that day's: a
    previous lesson sent a few seconds after 09:00, or a daylight-saving change, must not
    push a daily 09:00 lesson a whole day later."""
    local = earliest.astimezone(zone)
    if send_at is not None:
        candidate = instant(local.date(), send_at, zone)
        if candidate < earliest - SEND_TIME_SLACK:
            candidate = instant(local.date() + timedelta(days=1), send_at, zone)
        return candidate
    if window.contains(local.time()):
        return earliest.astimezone(UTC)
    opening = instant(local.date(), window.start, zone)
    if opening < earliest:
        opening = instant(local.date() + timedelta(days=1), window.start, zone)
    return opening
