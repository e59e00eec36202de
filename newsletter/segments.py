"""Segments: who a newsletter or a list is for, as a small expression over tags, courses,
signup dates and time zones (docs/segments.md).

    tag:baker and not course:sourdough:active
    (course:leg-weakness-after-microdiscectomy:finished or tag:vip) and tz:Europe/London
    signup:after:2026-06-01

Parsing is pure and says where a mistake is; `where_clause` turns a parsed segment into a
SQL condition on subscribers, so the database does the matching."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, NoReturn
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import and_, exists, false, func, not_, or_, select, true

from newsletter.db.models import Enrollment, EnrollmentStatus, Sequence, Subscriber, SubscriberTag
from newsletter.errors import NewsletterError
from newsletter.tags import TagInvalid, normalize_tag

#: course:<slug>:<state>, by the state of the subscriber's enrollment.
COURSE_STATES: dict[str, tuple[EnrollmentStatus, ...]] = {
    "any": tuple(EnrollmentStatus),
    "active": (EnrollmentStatus.ACTIVE,),
    "finished": (EnrollmentStatus.COMPLETED,),
    "left": (EnrollmentStatus.LEFT,),
    "stopped": (EnrollmentStatus.STOPPED,),
}
#: course:*:active: on any course.
ANY_COURSE = "*"
_TOKEN = re.compile(r"\s*(?:(?P<paren>[()])|(?P<word>[^\s()]+))")


class SegmentInvalid(NewsletterError):
    """A segment that cannot be read; says where and what was expected."""


@dataclass(frozen=True, slots=True)
class Tag:
    name: str


@dataclass(frozen=True, slots=True)
class Course:
    slug: str
    state: str  #: a key of COURSE_STATES


@dataclass(frozen=True, slots=True)
class SignedUp:
    before: bool  #: before the day, or on it and after
    day: date


@dataclass(frozen=True, slots=True)
class TimeZone:
    name: str


@dataclass(frozen=True, slots=True)
class Everyone:
    pass


@dataclass(frozen=True, slots=True)
class Not:
    term: Segment


@dataclass(frozen=True, slots=True)
class All:
    terms: tuple[Segment, ...]


@dataclass(frozen=True, slots=True)
class Any_:
    terms: tuple[Segment, ...]


Segment = Tag | Course | SignedUp | TimeZone | Everyone | Not | All | Any_


def parse(text: str) -> Segment:
    """The segment `text` describes; SegmentInvalid naming the word that is wrong."""
    tokens = [
        (match.start(match.lastgroup or "word"), match.group(match.lastgroup or "word"))
        for match in _TOKEN.finditer(text)
        if match.lastgroup
    ]
    if not tokens:
        raise SegmentInvalid("the segment is empty; `all` is everyone")
    parser = _Parser(text, tokens)
    segment = parser.either()
    if parser.position < len(tokens):
        parser.fail("'and', 'or' or the end")
    return segment


class _Parser:
    """either := both ('or' both)* ; both := one ('and' one)* ;
    one := 'not' one | '(' either ')' | term"""

    def __init__(self, text: str, tokens: list[tuple[int, str]]) -> None:
        self.text = text
        self.tokens = tokens
        self.position = 0

    def peek(self) -> str | None:
        return self.tokens[self.position][1] if self.position < len(self.tokens) else None

    def take(self) -> str:
        word = self.peek()
        if word is None:
            self.fail("a term such as tag:NAME")
        self.position += 1
        return word

    def fail(self, expected: str) -> NoReturn:
        if self.position < len(self.tokens):
            at, word = self.tokens[self.position]
            where = f"at character {at + 1}, {word!r}"
        else:
            where = "at the end"
        raise SegmentInvalid(f"segment {self.text!r}: {where}: expected {expected}")

    def either(self) -> Segment:
        terms = [self.both()]
        while (self.peek() or "").lower() == "or":
            self.take()
            terms.append(self.both())
        return terms[0] if len(terms) == 1 else Any_(tuple(terms))

    def both(self) -> Segment:
        terms = [self.one()]
        while (self.peek() or "").lower() == "and":
            self.take()
            terms.append(self.one())
        return terms[0] if len(terms) == 1 else All(tuple(terms))

    def one(self) -> Segment:
        word = self.peek()
        if word is not None and word.lower() == "not":
            self.take()
            return Not(self.one())
        if word == "(":
            self.take()
            inner = self.either()
            if self.peek() != ")":
                self.fail("')'")
            self.take()
            return inner
        if word in (None, ")") or word.lower() in ("and", "or"):
            self.fail("a term such as tag:NAME")
        return self.term(self.take())

    def term(self, word: str) -> Segment:
        kind, _, rest = word.partition(":")
        match kind.lower():
            case "all" if not rest:
                return Everyone()
            case "tag":
                try:
                    return Tag(normalize_tag(rest))
                except TagInvalid as exc:
                    self.position -= 1
                    self.fail(f"a tag ({exc})")
            case "course":
                slug, _, state = rest.partition(":")
                state = state.lower() or "any"
                if not slug or state not in COURSE_STATES:
                    self.position -= 1
                    self.fail("course:SLUG or course:SLUG:" + "|".join(COURSE_STATES))
                return Course(slug, state)
            case "signup":
                when, _, day = rest.partition(":")
                try:
                    parsed = date.fromisoformat(day)
                except ValueError:
                    parsed = None
                if when.lower() not in ("before", "after") or parsed is None:
                    self.position -= 1
                    self.fail("signup:before:YYYY-MM-DD or signup:after:YYYY-MM-DD")
                return SignedUp(when.lower() == "before", parsed)
            case "tz" if rest:
                try:
                    ZoneInfo(rest)
                except (ZoneInfoNotFoundError, ValueError):
                    self.position -= 1
                    self.fail("tz: and an IANA time zone such as Europe/London")
                return TimeZone(rest)
        self.position -= 1
        self.fail("tag:NAME, course:SLUG[:STATE], signup:before|after:DATE, tz:ZONE or all")


def where_clause(segment: Segment, default_timezone: str) -> Any:
    """A condition on Subscriber rows matching `segment`. Subscribers without a time zone
    of their own are in `default_timezone` (schedule.timezone)."""
    match segment:
        case Everyone():
            return true()
        case Tag(name):
            return exists(
                select(SubscriberTag.id)
                .where(SubscriberTag.subscriber_id == Subscriber.id)
                .where(SubscriberTag.tag == name)
            )
        case Course(slug, state):
            enrolled = (
                select(Enrollment.id)
                .join(Sequence, Sequence.id == Enrollment.sequence_id)
                .where(Enrollment.subscriber_id == Subscriber.id)
                .where(Enrollment.status.in_(COURSE_STATES[state]))
            )
            return exists(enrolled if slug == ANY_COURSE else enrolled.where(Sequence.slug == slug))
        case SignedUp(before, day):
            midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
            return Subscriber.created_at < midnight if before else Subscriber.created_at >= midnight
        case TimeZone(name):
            return func.coalesce(Subscriber.timezone, default_timezone) == name
        case Not(term):
            return not_(where_clause(term, default_timezone))
        case All(terms):
            return and_(*(where_clause(term, default_timezone) for term in terms))
        case Any_(terms):
            return or_(*(where_clause(term, default_timezone) for term in terms))
    return false()


def courses_named(segment: Segment) -> set[str]:
    """The course slugs a segment mentions, to check that they exist."""
    match segment:
        case Course(slug, _):
            return {slug} - {ANY_COURSE}
        case Not(term):
            return courses_named(term)
        case All(terms) | Any_(terms):
            return set().union(*(courses_named(term) for term in terms))
    return set()
