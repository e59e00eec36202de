"""The emails a worker sends, compiled once per lesson snapshot or course version and kept:
snapshots never change once queued, so the cache is safe in every process."""

from __future__ import annotations

import logging
from datetime import datetime

from jinja2 import Environment
from sqlalchemy.ext.asyncio import AsyncSession

from newsletter.broadcasts import as_course
from newsletter.config import Settings
from newsletter.courses import load_snapshot
from newsletter.db import queries
from newsletter.db.models import (
    Broadcast,
    DeliveryKind,
    LessonSnapshot,
    Sequence,
    SequenceVersion,
)
from newsletter.db.session import database_unavailable
from newsletter.delivery.transport import Envelope
from newsletter.dkim import DkimSigner
from newsletter.inbound.verp import ReturnPath
from newsletter.logs import log_event
from newsletter.render import ConfirmationEmail, LessonEmail, Recipient
from newsletter.scheduling import cap
from newsletter.tokens import LinkMaker

log = logging.getLogger(__name__)


class CompiledEmails:
    def __init__(
        self,
        settings: Settings,
        env: Environment,
        links: LinkMaker,
        return_path: ReturnPath | None = None,
    ) -> None:
        self.settings = settings
        self.env = env
        self.links = links
        #: VERP: each message's envelope sender names its delivery (bounces.return_path).
        self.return_path = return_path
        self._lessons: dict[int, LessonEmail] = {}
        self._broadcasts: dict[int, LessonEmail] = {}  #: newsletter issues, by broadcast id
        #: By sequence version; and the version each sequence's confirmations use now.
        self._confirmations: dict[int, ConfirmationEmail] = {}
        self._confirmation_versions: dict[int, int] = {}
        #: Signs every message once it is built; None when [dkim] names no domain.
        self.signer = DkimSigner.from_settings(settings.dkim) if settings.dkim.enabled else None

    async def prepare(
        self, session: AsyncSession, deliveries: list[queries.ClaimedDelivery]
    ) -> dict[int, str]:
        """Compile what these deliveries need. Returns, by delivery id, why an email cannot be
        built, rather than raising: one broken lesson must not hold up every other email.
        A sequence's current version is looked up once per call, not once per confirmation."""
        looked_up: set[int] = set()
        problems: dict[int, str] = {}
        for delivery in deliveries:
            try:
                if delivery.kind == DeliveryKind.CONFIRMATION:
                    await self._load_confirmation(session, delivery, looked_up)
                elif delivery.kind == DeliveryKind.BROADCAST:
                    await self._load_broadcast(session, delivery)
                else:
                    await self._load_lesson(session, delivery)
            except Exception as exc:  # a template or content error, reported per delivery
                if database_unavailable(exc):
                    raise  # not the lesson's fault: the pass puts these back in the queue
                log_event(
                    log,
                    logging.ERROR,
                    f"Cannot build delivery {delivery.id}",
                    "render_failed",
                    exc_info=True,
                )
                problems[delivery.id] = f"cannot build the email: {type(exc).__name__}: {exc}"[:500]
        return problems

    def envelope(self, delivery: queries.ClaimedDelivery, now: datetime) -> Envelope:
        """The message for one recipient as it is sent: DKIM-signed when [dkim] says so.
        The signature covers the message settled as DATA carries it (newsletter/wire.py),
        so it is over the very bytes the relay receives."""
        unsigned = self.unsigned_envelope(delivery, now)
        if self.signer is None:
            return unsigned
        prepared = unsigned.settled()
        signed = prepared.with_field(self.signer.signature_field(prepared.message))
        return Envelope.of(unsigned.sender, unsigned.recipient, signed)

    def sign(self, message: bytes) -> bytes:
        """`message` with its DKIM signature in front; as it is when DKIM is off."""
        return self.signer.sign(message) if self.signer is not None else message

    def unsigned_envelope(self, delivery: queries.ClaimedDelivery, now: datetime) -> Envelope:
        """The message for one recipient; `now` (wall clock) dates it and its links."""
        if delivery.kind == DeliveryKind.CONFIRMATION:
            assert delivery.sequence_id is not None
            version_id = self._confirmation_versions[delivery.sequence_id]
            confirmation = self._confirmations[version_id]
            prepared = confirmation.render_prepared(
                delivery.email,
                self.links.confirm_url(delivery.subscriber_id, now, delivery.sequence_id),
                message_id=delivery.message_id,
                date=now,
            )
            return Envelope.of(
                self._sender(delivery, confirmation.envelope_from), delivery.email, prepared
            )
        if delivery.kind == DeliveryKind.BROADCAST:
            assert delivery.broadcast_id is not None
            lesson = self._broadcasts[delivery.broadcast_id]
        else:
            assert delivery.lesson_id is not None
            lesson = self._lessons[delivery.lesson_id]
        prepared = lesson.render_prepared(
            Recipient(delivery.email, delivery.first_name),
            self.links.personal_links(delivery.subscriber_id, now, delivery.sequence_id),
            message_id=delivery.message_id,
            date=now,
        )
        return Envelope.of(self._sender(delivery, lesson.envelope_from), delivery.email, prepared)

    @property
    def caps_in_use(self) -> bool:
        """Whether any daily cap applies: config's, or one of a course or issue compiled."""
        return bool(self.settings.sending.max_per_subscriber_per_day) or any(
            email.own_daily_cap for email in (*self._lessons.values(), *self._broadcasts.values())
        )

    def daily_cap(self, delivery: queries.ClaimedDelivery) -> int:
        """The daily cap per person this (compiled) message is held to; 0: none."""
        configured = self.settings.sending.max_per_subscriber_per_day
        if delivery.kind == DeliveryKind.CONFIRMATION:
            return 0
        if delivery.kind == DeliveryKind.BROADCAST:
            email = self._broadcasts.get(delivery.broadcast_id or 0)
        else:
            email = self._lessons.get(delivery.lesson_id or 0)
        return cap.limit_for(email.own_daily_cap if email else None, configured)

    def _sender(self, delivery: queries.ClaimedDelivery, from_address: str) -> str:
        if self.return_path is None:
            return from_address
        return self.return_path.for_delivery(delivery.id)

    def describe(self, delivery: queries.ClaimedDelivery) -> str:
        """Which email this is, for the operator: 'lesson 3 of <slug>' or 'confirmation'."""
        if delivery.lesson_id is not None and delivery.lesson_id in self._lessons:
            email = self._lessons[delivery.lesson_id]
            return f"lesson {email.number} ({email.lesson.key})"
        return delivery.kind

    async def _load_confirmation(
        self, session: AsyncSession, delivery: queries.ClaimedDelivery, looked_up: set[int]
    ) -> None:
        assert delivery.sequence_id is not None
        if delivery.sequence_id in looked_up:
            return
        version = await queries.current_version(session, delivery.sequence_id)
        assert version is not None
        if version.id not in self._confirmations:
            slug = await self._slug_of(session, version.id)
            course = await load_snapshot(session, version.id, slug)
            self._confirmations[version.id] = ConfirmationEmail(
                self.env, self.settings.sender, course, feedback_id=self.settings.dkim.feedback_id
            )
        # Only once it compiled: until then, confirmations keep the version they had.
        self._confirmation_versions[delivery.sequence_id] = version.id
        looked_up.add(delivery.sequence_id)

    async def _load_broadcast(
        self, session: AsyncSession, delivery: queries.ClaimedDelivery
    ) -> None:
        assert delivery.broadcast_id is not None
        if delivery.broadcast_id in self._broadcasts:
            return
        broadcast = await session.get(Broadcast, delivery.broadcast_id)
        assert broadcast is not None
        course, issue = as_course(self.settings.sender, broadcast)
        self._broadcasts[delivery.broadcast_id] = LessonEmail(
            self.env,
            self.settings.sender,
            course,
            issue,
            feedback_id=self.settings.dkim.feedback_id,
            kind="newsletter",
        )

    async def _load_lesson(self, session: AsyncSession, delivery: queries.ClaimedDelivery) -> None:
        assert delivery.lesson_id is not None
        if delivery.lesson_id in self._lessons:
            return
        snapshot = await session.get(LessonSnapshot, delivery.lesson_id)
        assert snapshot is not None
        slug = await self._slug_of(session, snapshot.version_id)
        course = await load_snapshot(session, snapshot.version_id, slug)
        lesson = next(item for item in course.lessons if item.key == snapshot.key)
        self._lessons[delivery.lesson_id] = LessonEmail(
            self.env,
            self.settings.sender,
            course,
            lesson,
            feedback_id=self.settings.dkim.feedback_id,
        )

    @staticmethod
    async def _slug_of(session: AsyncSession, version_id: int) -> str:
        version = await session.get(SequenceVersion, version_id)
        assert version is not None
        sequence = await session.get(Sequence, version.sequence_id)
        assert sequence is not None
        return sequence.slug
