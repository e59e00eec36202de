"""Subscribers' lifecycle in the database: add, confirm, unsubscribe, forget."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from newsletter.addresses import normalize_address
from newsletter.db import queries
from newsletter.db.models import (
    Delivery,
    Enrollment,
    MailEvent,
    Sequence,
    Subscriber,
    SubscriberStatus,
    SubscriberTag,
    enrollments_table,
    subscribers_table,
)
from newsletter.errors import NewsletterError
from newsletter.render import clean_name
from newsletter.tags import normalize_tag

#: The longest first name kept: the column's size, and the signup form's limit.
MAX_NAME_LENGTH = 100
# Line breaks (also U+2028 and U+2029), tabs, NUL, escapes: a name is one line of text,
# and one that holds them was pasted or forged, not typed.
_CONTROL_CHARACTER = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


@dataclass(frozen=True, slots=True)
class NewSubscriber:
    email: str
    first_name: str = ""
    timezone: str | None = None
    tags: tuple[str, ...] = ()

    @classmethod
    def parse(
        cls, email: str, first_name: str = "", timezone: str | None = None, tags: str = ""
    ) -> NewSubscriber:
        """Validate what an admin or a CSV gave us; NewsletterError says what is wrong."""
        address = normalize_address(email)
        name = first_name.strip()
        if control := _CONTROL_CHARACTER.search(name):
            raise NewsletterError(
                f"first name {name!r}: holds a control character (U+{ord(control.group()):04X}) "
                "such as a line break or a tab; a name is one line of text"
            )
        if len(name) > MAX_NAME_LENGTH:
            raise NewsletterError(
                f"first name {name[:20]!r}…: {len(name)} characters; "
                f"at most {MAX_NAME_LENGTH} are allowed"
            )
        if timezone:
            try:
                ZoneInfo(timezone)
            except (ZoneInfoNotFoundError, ValueError):
                raise NewsletterError(f"{timezone!r} is not a known time zone") from None
        # "baker, vip" or "baker vip": as a spreadsheet column is likely to hold them.
        labels = tuple(dict.fromkeys(normalize_tag(t) for t in re.split(r"[\s,;]+", tags) if t))
        return cls(address, clean_name(name), timezone or None, labels)


async def add_subscriber(
    session: AsyncSession,
    new: NewSubscriber,
    *,
    status: SubscriberStatus,
    consent: dict[str, Any],
    now: datetime,
) -> tuple[Subscriber, bool]:
    """The subscriber for this address, created if new; False when it existed already."""
    existing = await queries.subscriber_by_email(session, new.email)
    if existing is not None:
        return existing, False
    subscriber = Subscriber(
        email=new.email,
        first_name=new.first_name,
        timezone=new.timezone,
        status=status,
        consent=consent,
        created_at=now,
        updated_at=now,
        confirmed_at=now if status == SubscriberStatus.CONFIRMED else None,
    )
    session.add(subscriber)
    await session.flush()
    return subscriber, True


async def import_subscribers(
    session: AsyncSession, people: list[NewSubscriber], consent: dict[str, Any], now: datetime
) -> int:
    """Add many confirmed subscribers in one statement; addresses already there are left
    as they are (so is an address given twice: the first one counts). Returns how many
    were new."""
    rows = [
        {
            "email": person.email,
            "first_name": person.first_name,
            "timezone": person.timezone,
            "status": SubscriberStatus.CONFIRMED,
            "consent": consent,
            "created_at": now,
            "updated_at": now,
            "confirmed_at": now,
        }
        for person in people
    ]
    if not rows:
        return 0
    before = await session.scalar(select(func.count()).select_from(Subscriber))
    await session.execute(queries.insert_ignoring_duplicates(session, Subscriber), rows)
    after = await session.scalar(select(func.count()).select_from(Subscriber))
    # Tags are added to those already there too: an import is how a list is labelled.
    tagged: dict[str, tuple[str, ...]] = {}
    for person in people:  # as for names: the first row of an address counts
        if person.tags and person.email not in tagged:
            tagged[person.email] = person.tags
    if tagged:
        ids = await session.execute(
            select(Subscriber.email, Subscriber.id).where(Subscriber.email.in_(tagged))
        )
        await add_tags(session, [(i, tag) for email, i in ids for tag in tagged[email]], now)
    return int(after or 0) - int(before or 0)


#: The columns of `subscribers export`. An import reads the first three and `tags`, and
#: ignores the rest.
EXPORT_COLUMNS = (
    "email",
    "first_name",
    "timezone",
    "status",
    "created_at",
    "confirmed_at",
    "unsubscribed_at",
    # How and when consent was given: the consent record (see signup.consent_record).
    "consent_form",
    "consent_version",
    "consent_given_at",
    "consent_ip",
    "consent_confirmed_at",
    "consent_confirmed_ip",
    "consent_source",  # the file an import came from
    "courses",  # "slug: status" for each enrollment, separated by "; "
    "tags",  # separated by spaces, as an import reads them
)
#: Rows fetched at a time while exporting: memory stays flat however long the list.
EXPORT_BATCH = 1000
_CONSENT_KEYS = ("form", "version", "given_at", "ip", "confirmed_at", "confirmed_ip", "source")


async def export_rows(session: AsyncSession) -> AsyncIterator[list[str]]:
    """Every subscriber, oldest first, as a row of EXPORT_COLUMNS (times in ISO 8601).

    Plain rows stream from the database EXPORT_BATCH at a time, one per enrollment, each
    with its subscriber's tags: no ORM object is made, so nothing piles up in the session."""
    people, enrollments = subscribers_table.c, enrollments_table.c
    tags = (
        select(func.aggregate_strings(SubscriberTag.tag, " "))
        .where(SubscriberTag.subscriber_id == people.id)
        .scalar_subquery()
    )
    query = (
        select(
            people.id,
            people.email,
            people.first_name,
            people.timezone,
            people.status,
            people.created_at,
            people.confirmed_at,
            people.unsubscribed_at,
            people.consent,
            tags.label("tags"),
            Sequence.slug,
            enrollments.status.label("course_status"),
        )
        .select_from(subscribers_table)
        .outerjoin(enrollments_table, enrollments.subscriber_id == people.id)
        .outerjoin(Sequence, Sequence.id == enrollments.sequence_id)
        .order_by(people.id, Sequence.slug)
        .execution_options(yield_per=EXPORT_BATCH)
    )
    result = await session.stream(query)
    person: Any = None
    courses: list[str] = []
    # A batch at a time: each fetch is a hop to the driver's thread and back.
    async for batch in result.partitions():
        for row in batch:
            if person is not None and row.id != person.id:
                yield _export_row(person, courses)
                courses = []
            person = row
            if row.slug is not None:
                courses.append(f"{row.slug}: {row.course_status}")
    if person is not None:
        yield _export_row(person, courses)


def _export_row(person: Any, courses: list[str]) -> list[str]:
    consent = person.consent if isinstance(person.consent, dict) else {}
    return [
        person.email,
        person.first_name,
        person.timezone or "",
        person.status,
        _iso(person.created_at),
        _iso(person.confirmed_at),
        _iso(person.unsubscribed_at),
        *("" if consent.get(key) is None else str(consent[key]) for key in _CONSENT_KEYS),
        "; ".join(courses),
        # The database joins them in no promised order; a tag holds no space.
        " ".join(sorted((person.tags or "").split())),
    ]


def _iso(moment: datetime | None) -> str:
    return moment.isoformat() if moment else ""


async def enroll_confirmed(
    session: AsyncSession, people: list[NewSubscriber], sequence_id: int, now: datetime
) -> None:
    """Enroll those of these addresses that are confirmed; others (unsubscribed, bounced)
    are never enrolled by an import."""
    ids = await session.scalars(
        select(Subscriber.id)
        .where(Subscriber.email.in_([person.email for person in people]))
        .where(Subscriber.status == SubscriberStatus.CONFIRMED)
    )
    await queries.enroll_many(session, list(ids), sequence_id, now)


async def unsubscribe(session: AsyncSession, subscriber: Subscriber, now: datetime) -> None:
    """Takes effect for mail already queued too: the dispatcher checks status at send time."""
    if subscriber.status != SubscriberStatus.UNSUBSCRIBED:
        subscriber.status = SubscriberStatus.UNSUBSCRIBED
        subscriber.unsubscribed_at = now
        subscriber.updated_at = now
    await queries.stop_enrollments(session, [subscriber.id])


async def forget(session: AsyncSession, subscriber: Subscriber) -> None:
    """Delete the person and their history, what came back about them included. A
    suppression entry, if any, stays: it only holds the address, so a bounced or
    complaining address is never mailed again."""
    await session.execute(
        delete(MailEvent).where(
            (MailEvent.subscriber_id == subscriber.id) | (MailEvent.email == subscriber.email)
        )
    )
    await session.execute(delete(Delivery).where(Delivery.subscriber_id == subscriber.id))
    await session.execute(delete(Enrollment).where(Enrollment.subscriber_id == subscriber.id))
    await session.delete(subscriber)


async def add_tags(session: AsyncSession, pairs: list[tuple[int, str]], now: datetime) -> None:
    """(subscriber id, tag) pairs; a tag a subscriber has already is left as it is."""
    if pairs:
        await session.execute(
            queries.insert_ignoring_duplicates(session, SubscriberTag),
            [{"subscriber_id": s, "tag": tag, "created_at": now} for s, tag in pairs],
        )


async def remove_tags(session: AsyncSession, subscriber_id: int, tags: list[str]) -> None:
    await session.execute(
        delete(SubscriberTag)
        .where(SubscriberTag.subscriber_id == subscriber_id)
        .where(SubscriberTag.tag.in_(tags))
    )


async def tags_of(session: AsyncSession, subscriber_id: int) -> list[str]:
    rows = await session.scalars(
        select(SubscriberTag.tag)
        .where(SubscriberTag.subscriber_id == subscriber_id)
        .order_by(SubscriberTag.tag)
    )
    return list(rows)
