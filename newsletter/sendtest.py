"""A test send: one email built exactly as the worker builds it, marked as a test, recorded
nowhere.

The worker builds a lesson from the snapshot queued in the database (CompiledEmails), so a
test send does too: whatever the worker puts in an email, a test send shows. A course
folder not yet queued is first queued into a scratch database in memory, then built from
that snapshot the same way; the real database is not written.

Links in a test send are signed for subscriber 0, which no one is (ids start at 1): the
unsubscribe, preference and confirmation pages open, and change nobody. So a writer can
click every link without unsubscribing the real subscriber whose address received it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from email.parser import BytesHeaderParser
from email.policy import default as default_policy

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import StaticPool

from newsletter import headers
from newsletter.courses import load_snapshot
from newsletter.db import queries
from newsletter.db.models import Base, DeliveryKind, LessonSnapshot
from newsletter.delivery.transport import Envelope
from newsletter.errors import NewsletterError
from newsletter.render import Recipient
from newsletter.scheduling.emails import CompiledEmails

TEST_SUBJECT_PREFIX = "[test] "
#: No subscriber has this id, so the links of a test send act on no one.
TEST_SUBSCRIBER_ID = 0
#: What LESSON says for the double opt-in email.
CONFIRMATION = "confirm"


@dataclasses.dataclass(frozen=True, slots=True)
class EmailForTest:
    envelope: Envelope
    what: str  #: 'lesson 3 (the-cause)' or 'confirmation'
    version: int  #: of the sequence it was built from


async def build_test_email(
    session: AsyncSession,
    emails: CompiledEmails,
    slug: str,
    lesson_ref: str,
    recipient: Recipient,
    *,
    message_id: str,
    now: datetime,
) -> EmailForTest:
    """The email of `lesson_ref` (number, name, file, or 'confirm') in the current version
    of the queued course `slug`, for `recipient`, with '[test] ' before its subject."""
    sequence = await queries.sequence_by_slug(session, slug)
    version = await queries.current_version(session, sequence.id) if sequence else None
    if sequence is None or version is None:
        raise NewsletterError(
            f"no queued course '{slug}'; queue it (newsletter sequences queue lessons/{slug}) "
            f"or give the folder to test its files: newsletter send-test lessons/{slug} …"
        )
    lesson_id = None
    if lesson_ref != CONFIRMATION:
        lesson = (await load_snapshot(session, version.id, slug)).lesson(lesson_ref)
        lesson_id = await session.scalar(
            select(LessonSnapshot.id).where(
                LessonSnapshot.version_id == version.id, LessonSnapshot.key == lesson.key
            )
        )
    # The worker's own input: a claimed delivery, though none was claimed or will be stored.
    delivery = queries.ClaimedDelivery(
        id=0,
        kind=DeliveryKind.CONFIRMATION if lesson_id is None else DeliveryKind.LESSON,
        sequence_id=sequence.id,
        lesson_id=lesson_id,
        message_id=message_id,
        attempts=1,
        first_attempt_at=now,
        subscriber_id=TEST_SUBSCRIBER_ID,
        email=recipient.email,
        first_name=recipient.first_name,
    )
    if problems := await emails.prepare(session, [delivery]):
        raise NewsletterError(problems[delivery.id])
    # Marked before it is signed: the signature covers the subject as sent.
    envelope = emails.unsigned_envelope(delivery, now)
    return EmailForTest(
        dataclasses.replace(envelope, data=emails.sign(mark_as_test(envelope.data))),
        emails.describe(delivery),
        version.number,
    )


def mark_as_test(message: bytes) -> bytes:
    """The message with TEST_SUBJECT_PREFIX before its subject, the header encoded and
    folded again as every Subject is; nothing else changes."""
    head, blank, body = message.partition(b"\r\n\r\n")
    parsed = BytesHeaderParser(policy=default_policy).parsebytes(head + blank)
    subject = headers.unstructured("Subject", TEST_SUBJECT_PREFIX + str(parsed["subject"] or ""))
    lines = head.split(b"\r\n")
    kept: list[bytes] = []
    in_subject = False
    for line in lines:
        if line[:1] in (b" ", b"\t") and in_subject:
            continue  # a folded continuation of the old subject
        in_subject = line.lower().startswith(b"subject:")
        if in_subject:
            kept.append(subject.removesuffix("\r\n").encode("ascii"))
        else:
            kept.append(line)
    return b"\r\n".join(kept) + blank + body


@asynccontextmanager
async def scratch_database() -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """An empty database in memory, gone when the block ends: where a course folder is
    queued to be built as the worker builds a queued course."""
    engine = create_async_engine("sqlite+aiosqlite://", poolclass=StaticPool)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(Base.metadata.create_all)
        yield async_sessionmaker(engine, expire_on_commit=False)
    finally:
        await engine.dispose()
