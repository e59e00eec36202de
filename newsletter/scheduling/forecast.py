"""Pure: what the workers will send one person over the coming days, and what the daily cap
and the send window hold back, without sending anything (`newsletter forecast`).

It replays what the worker does, with the worker's own rules: the planner's next_step for
each course (delays, send times, the send window, catching up), the daily cap as the
dispatcher applies it right before sending (cap.py), and [on_finish]'s next course. It
assumes each message goes out when it falls due; what it cannot know is said in
docs/newsletters.md (the relay refusing, rate limits, someone leaving meanwhile)."""

from __future__ import annotations

import dataclasses
import heapq
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from newsletter.scheduling import cap
from newsletter.scheduling.planner import (
    SEND_TIME_SLACK,
    AwaitSend,
    Complete,
    PlannedLesson,
    Send,
    SendWindow,
    Wait,
    earliest_send,
    next_step,
)


class HeldBy(StrEnum):
    NOTHING = ""
    DAILY_CAP = "daily cap"  #: moved to the send window's start on their next day
    SEND_WINDOW = "send window"  #: due in the night, moved to the window's start


@dataclass(frozen=True, slots=True)
class CoursePlan:
    """A queued course as the planner sees it: its current version's lessons and what its
    course.toml says about the cap and what follows it."""

    sequence_id: int
    slug: str
    lessons: tuple[PlannedLesson, ...]
    #: Lesson id -> its subject, for the forecast's lines.
    subjects: Mapping[int, str] = field(default_factory=dict)
    own_cap: int | None = None
    next_course: str | None = None
    next_after_days: int = 0


@dataclass(frozen=True, slots=True)
class Enrolled:
    """One person's place in one live course."""

    course: CoursePlan
    handled: frozenset[str]  #: lesson keys they have a delivery for, in any state
    last_sent_at: datetime


@dataclass(frozen=True, slots=True)
class Queued:
    """A lesson or issue already in the queue (the worker planned it, or `broadcast send`
    queued it): it goes when due, unless the cap holds it."""

    delivery_id: int
    due_at: datetime
    what: str  #: "lesson 2 of <slug>: <subject>" or "issue <key>: <subject>"
    own_cap: int | None
    #: For a lesson: its course and key, so that the course goes on from its send.
    sequence_id: int | None = None
    lesson_key: str | None = None
    course_slug: str | None = None


@dataclass(frozen=True, slots=True)
class Person:
    email: str
    zone: ZoneInfo
    courses: tuple[Enrolled, ...]
    queued: tuple[Queued, ...]
    #: Lessons and issues sent to them lately: they count towards today's cap.
    sent_lately: tuple[datetime, ...] = ()
    #: Every course they were ever on: [on_finish] never starts one of those again.
    ever_on: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Rules:
    window: SendWindow
    welcome_at_once: bool
    max_per_subscriber_per_day: int  #: config's cap; 0: none


@dataclass(frozen=True, slots=True)
class Planned:
    """One message the workers will send."""

    email: str
    zone: ZoneInfo
    at: datetime  #: UTC
    what: str
    course_slug: str | None  #: None for an issue
    held_by: HeldBy = HeldBy.NOTHING
    #: When it would have gone but for what held it.
    would_have_gone: datetime | None = None


@dataclass(order=True)
class _Event:
    at: datetime
    #: 0, a look, before 1, a send: each tick plans first, then dispatches.
    phase: int
    due_at: datetime  #: the dispatcher takes the earliest due first
    order: int
    course: _Course | None = field(compare=False, default=None)  #: look at this course
    message: _Message | None = field(compare=False, default=None)  #: send this


@dataclass
class _Course:
    plan: CoursePlan
    handled: set[str]
    last_sent_at: datetime


@dataclass(frozen=True)
class _Message:
    what: str
    own_cap: int | None
    course: _Course | None  #: the course goes on from its send
    lesson_key: str | None
    course_slug: str | None  #: None for an issue
    held_by: HeldBy = HeldBy.NOTHING
    would_have_gone: datetime | None = None


def forecast(
    person: Person,
    *,
    start: datetime,
    end: datetime,
    rules: Rules,
    courses_by_slug: Mapping[str, CoursePlan],
) -> list[Planned]:
    """What `person` gets from `start` until `end`, in the order it goes out."""
    return _Replay(person, rules, courses_by_slug).run(start, end)


class _Replay:
    """The worker's passes for one person, event by event: a course looked at, a message
    sent (or held back by the cap)."""

    def __init__(
        self, person: Person, rules: Rules, courses_by_slug: Mapping[str, CoursePlan]
    ) -> None:
        self.person = person
        self.rules = rules
        self.courses_by_slug = courses_by_slug
        self.ever_on = set(person.ever_on)
        self.events: list[_Event] = []
        self.order = itertools.count()
        self.sent = list(person.sent_lately)

    def run(self, start: datetime, end: datetime) -> list[Planned]:
        courses: dict[int, _Course] = {}
        for enrolled in self.person.courses:
            course = _Course(enrolled.course, set(enrolled.handled), enrolled.last_sent_at)
            courses[enrolled.course.sequence_id] = course
            if not any(q.sequence_id == enrolled.course.sequence_id for q in self.person.queued):
                self._look_at(start, course)
        for queued in sorted(self.person.queued, key=lambda q: (q.due_at, q.delivery_id)):
            message = _Message(
                queued.what,
                queued.own_cap,
                courses.get(queued.sequence_id or 0),
                queued.lesson_key,
                queued.course_slug,
            )
            self._send_at(max(queued.due_at, start), message, due_at=queued.due_at)
        planned: list[Planned] = []
        while self.events and self.events[0].at <= end:
            event = heapq.heappop(self.events)
            if event.course is not None:
                self._look(event.course, event.at)
            elif event.message is not None and (sent := self._send(event.message, event.at)):
                planned.append(sent)
        return planned

    def _look_at(self, at: datetime, course: _Course) -> None:
        heapq.heappush(self.events, _Event(at, 0, at, next(self.order), course=course))

    def _send_at(self, at: datetime, message: _Message, *, due_at: datetime) -> None:
        heapq.heappush(self.events, _Event(at, 1, due_at, next(self.order), message=message))

    def _send(self, message: _Message, now: datetime) -> Planned | None:
        """As the dispatcher's check right before sending: it goes, or the cap holds it to
        the send window's start on the person's next day."""
        zone = self.person.zone
        limit = cap.limit_for(message.own_cap, self.rules.max_per_subscriber_per_day)
        today = cap.local_day(now, zone)
        if cap.holds_back(sum(cap.local_day(s, zone) == today for s in self.sent), limit):
            later = cap.next_day_at(now, zone, self.rules.window.start)
            held = dataclasses.replace(
                message,
                held_by=HeldBy.DAILY_CAP,
                would_have_gone=message.would_have_gone or now,
            )
            self._send_at(later, held, due_at=later)
            return None
        self.sent.append(now)
        course = message.course
        if course is not None and message.lesson_key is not None:
            # The next lesson is timed from this send, as the worker does.
            course.handled.add(message.lesson_key)
            course.last_sent_at = now
            self._look_at(now, course)
        return Planned(
            self.person.email,
            zone,
            now,
            message.what,
            message.course_slug,
            message.held_by,
            message.would_have_gone,
        )

    def _look(self, course: _Course, now: datetime) -> None:
        """What the planner does when it looks at this person's course at `now`."""
        step = next_step(
            course.plan.lessons,
            course.handled,
            last_sent_at=course.last_sent_at,
            now=now,
            zone=self.person.zone,
            window=self.rules.window,
            welcome_at_once=self.rules.welcome_at_once,
        )
        match step:
            case Send(lesson, due_at):
                number = course.plan.lessons.index(lesson) + 1
                subject = course.plan.subjects.get(lesson.id, lesson.key)
                earliest = earliest_send(course.last_sent_at, lesson.delay, self.person.zone)
                by_window = lesson.send_at is None and due_at - earliest > SEND_TIME_SLACK
                message = _Message(
                    f"lesson {number} of {course.plan.slug}: {subject}",
                    course.plan.own_cap,
                    course,
                    lesson.key,
                    course.plan.slug,
                    HeldBy.SEND_WINDOW if by_window else HeldBy.NOTHING,
                    earliest if by_window else None,
                )
                self._send_at(now, message, due_at=due_at)
            case Wait(until):
                self._look_at(until, course)
            case AwaitSend():  # not reached: one course's sends are replayed in turn
                pass
            case Complete():
                following = self.courses_by_slug.get(course.plan.next_course or "")
                if following is not None and following.slug not in self.ever_on:
                    self.ever_on.add(following.slug)
                    starts_at = now + timedelta(days=course.plan.next_after_days)
                    self._look_at(now, _Course(following, set(), starts_at))


@dataclass
class DayTotals:
    lessons: int = 0
    issues: int = 0
    held_by_cap: int = 0
    held_by_window: int = 0


def count_days(days: dict[str, DayTotals], planned: Sequence[Planned], zone: ZoneInfo) -> None:
    """Add to `days` (by day in `zone`, the admin's) what goes out, and what was held to go
    then: called person by person, so that a large list is never held whole."""
    for item in planned:
        totals = days.setdefault(item.at.astimezone(zone).date().isoformat(), DayTotals())
        if item.course_slug is None:
            totals.issues += 1
        else:
            totals.lessons += 1
        if item.held_by is HeldBy.DAILY_CAP:
            totals.held_by_cap += 1
        elif item.held_by is HeldBy.SEND_WINDOW:
            totals.held_by_window += 1
