"""Subscribers' lifecycle in the database: add, confirm, unsubscribe, forget."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from newsletter.addresses import normalize_address
from newsletter.db import queries
from newsletter.db.models import Delivery, Enrollment, Subscriber, SubscriberStatus
from newsletter.errors import NewsletterError
from newsletter.render import clean_name


@dataclass(frozen=True, slots=True)
class NewSubscriber:
    email: str
    first_name: str = ""
    timezone: str | None = None

    @classmethod
    def parse(cls, email: str, first_name: str = "", timezone: str | None = None) -> NewSubscriber:
        """Validate what a person or a CSV gave us; NewsletterError says what is wrong."""
        if timezone:
            try:
                ZoneInfo(timezone)
            except (ZoneInfoNotFoundError, ValueError):
                raise NewsletterError(f"{timezone!r} is not a known time zone") from None
        return cls(normalize_address(email), clean_name(first_name), timezone or None)


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
    as they are. Returns how many were new."""
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
        for person in {person.email: person for person in people}.values()
    ]
    if not rows:
        return 0
    before = await session.scalar(select(func.count()).select_from(Subscriber))
    await session.execute(queries.insert_ignoring_duplicates(session, Subscriber), rows)
    after = await session.scalar(select(func.count()).select_from(Subscriber))
    return int(after or 0) - int(before or 0)


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
    """Delete the person and their history. A suppression entry, if any, stays: it only
    holds the address, so a bounced or complaining address is never mailed again."""
    await session.execute(delete(Delivery).where(Delivery.subscriber_id == subscriber.id))
    await session.execute(delete(Enrollment).where(Enrollment.subscriber_id == subscriber.id))
    await session.delete(subscriber)
