"""One worker's two passes over the database, which is the queue: plan what is due, then
claim, render, send and record it. The scheduler job, `newsletter tick` and the tests all
drive these same two methods; nothing in memory decides who gets what."""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from jinja2 import Environment
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from newsletter.config import Settings
from newsletter.courses import load_snapshot
from newsletter.db import queries
from newsletter.db.models import (
    DeliveryKind,
    DeliveryStatus,
    EnrollmentStatus,
    LessonSnapshot,
    Sequence,
    SequenceVersion,
    SubscriberStatus,
)
from newsletter.delivery.retry import Decision, RetryPolicy, Verdict, decide
from newsletter.delivery.throttle import TokenBucket, capped
from newsletter.delivery.transport import Envelope, SendReport, Stage, Transport
from newsletter.render import ConfirmationEmail, LessonEmail, Recipient, make_message_id
from newsletter.scheduling.planner import (
    Complete,
    PlannedLesson,
    Send,
    SendWindow,
    Wait,
    next_step,
)
from newsletter.tokens import LinkMaker

log = logging.getLogger(__name__)


@dataclass
class PassReport:
    """What one pass did, by outcome; printed by `newsletter tick`, asserted by tests."""

    counts: Counter[str] = field(default_factory=Counter)

    def __getitem__(self, outcome: str) -> int:
        return self.counts[outcome]

    def __str__(self) -> str:
        return (
            ", ".join(f"{n} {outcome}" for outcome, n in sorted(self.counts.items())) or "nothing"
        )


class Worker:
    def __init__(
        self,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        transport: Transport,
        env: Environment,
        links: LinkMaker,
        *,
        name: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.transport = transport
        self.env = env
        self.links = links
        self.name = name or f"{socket.gethostname()}:{id(self):x}"
        self.rng = rng or random.Random()
        sending = settings.sending
        self.bucket = TokenBucket(sending.max_per_second)
        self.retry_policy = RetryPolicy(
            first_delay_s=sending.retry_first_delay_s,
            max_delay_s=sending.retry_max_delay_s,
            give_up_after_s=sending.give_up_after_s,
        )
        self.window = SendWindow(
            settings.schedule.send_window_start, settings.schedule.send_window_end
        )
        # Snapshots never change once queued, so caching them is safe in every process.
        self._plans: dict[int, list[PlannedLesson]] = {}
        self._lessons: dict[int, LessonEmail] = {}
        self._confirmations: dict[int, ConfirmationEmail] = {}

    async def tick(self, now: datetime) -> tuple[PassReport, PassReport]:
        return await self.plan_once(now), await self.dispatch_once(now)

    # --- planning ------------------------------------------------------------------------

    async def plan_once(self, now: datetime) -> PassReport:
        """Turn due enrollments into queued deliveries; cost follows the number due."""
        report = PassReport()
        async with self.sessions.begin() as session:
            due = await queries.due_enrollments(session, now, self.settings.schedule.planner_batch)
            handled = await queries.handled_lesson_keys(session, due)
            new_deliveries, checks = [], []
            for enrollment in due:
                step = next_step(
                    await self._lesson_plan(session, enrollment.version_id),
                    handled[enrollment.subscriber_id, enrollment.sequence_id],
                    last_sent_at=enrollment.last_sent_at,
                    now=now,
                    zone=self._zone(enrollment.timezone),
                    window=self.window,
                    welcome_at_once=self.settings.schedule.welcome_at_once,
                )
                status, next_check = EnrollmentStatus.ACTIVE, None
                match step:
                    case Send(lesson, due_at):
                        new_deliveries.append(
                            {
                                "subscriber_id": enrollment.subscriber_id,
                                "sequence_id": enrollment.sequence_id,
                                "lesson_id": lesson.id,
                                "lesson_key": lesson.key,
                                "due_at": due_at,
                                "message_id": make_message_id(self.settings.sender.domain),
                                "created_at": now,
                            }
                        )
                        report.counts["queued"] += 1
                    case Wait(until):
                        next_check = until
                        report.counts["waiting"] += 1
                    case Complete():
                        status = EnrollmentStatus.COMPLETED
                        report.counts["completed"] += 1
                checks.append(
                    {"enrollment_id": enrollment.id, "next_check": next_check, "new_status": status}
                )
            await queries.create_lesson_deliveries(session, new_deliveries)
            await queries.set_next_checks(session, checks)
        return report

    async def _lesson_plan(self, session: AsyncSession, version_id: int) -> list[PlannedLesson]:
        if version_id not in self._plans:
            self._plans[version_id] = [
                PlannedLesson(row.id, row.key, timedelta(seconds=row.delay_s), row.send_at)
                for row in await queries.version_lessons(session, version_id)
            ]
        return self._plans[version_id]

    def _zone(self, name: str | None) -> ZoneInfo:
        try:
            return ZoneInfo(name) if name else self.settings.schedule.zone
        except (ValueError, KeyError):
            return self.settings.schedule.zone

    # --- dispatching ---------------------------------------------------------------------

    async def dispatch_once(self, now: datetime) -> PassReport:
        """Claim what is due (within the rate limits), render it, send it, record it."""
        report = PassReport()
        async with self.sessions.begin() as session:
            paused = await queries.flag(session, queries.SENDING_PAUSED)
            if paused is not None and (paused.until is None or paused.until > now):
                report.counts["paused"] += 1
                return report
            allowance = await self._allowance(session, now)
            if allowance <= 0:
                return report
            claimed = await queries.claim_due_deliveries(
                session,
                now=now,
                limit=min(allowance, self.settings.sending.batch_size),
                lease_until=now + timedelta(seconds=self.settings.sending.lease_s),
                worker=self.name,
            )
            if not claimed:
                return report
            self.bucket.take(len(claimed), now)
            sendable, cancelled = [], []
            for delivery in claimed:
                if _may_receive(delivery):
                    sendable.append(delivery)
                    await self._load_template(session, delivery)
                else:
                    cancelled.append(delivery)  # left after it was queued: never send
        # Rendering and sending happen outside the transaction: no lock is held meanwhile.
        # Outcomes are written every `record_every` messages rather than once per claim,
        # so a crash re-sends at most that many (plus those on the wire), while the claim
        # stays large enough to keep its cost per message small.
        outgoing = [(delivery, self._envelope(delivery, now)) for delivery in sendable]
        if cancelled:
            async with self.sessions.begin() as session:
                await self._record(session, [], cancelled, now, report)
        async for sent in self._send_in_chunks(outgoing):
            decisions = [
                (
                    delivery,
                    decide(
                        outcome,
                        attempts=delivery.attempts,
                        first_attempt_at=delivery.first_attempt_at,
                        now=now,
                        policy=self.retry_policy,
                        rng=self.rng,
                    ),
                )
                for delivery, outcome in sent
            ]
            async with self.sessions.begin() as session:
                await self._record(session, decisions, [], now, report)
        return report

    async def _allowance(self, session: AsyncSession, now: datetime) -> int:
        sending = self.settings.sending
        hour = (
            await queries.sent_since(session, now - timedelta(hours=1))
            if sending.max_per_hour
            else 0
        )
        day = (
            await queries.sent_since(session, now - timedelta(days=1)) if sending.max_per_day else 0
        )
        return capped(
            self.bucket.available(now), hour, day, sending.max_per_hour, sending.max_per_day
        )

    def _envelope(self, delivery: queries.ClaimedDelivery, now: datetime) -> Envelope:
        sender = self.settings.sender
        if delivery.kind == DeliveryKind.CONFIRMATION:
            assert delivery.sequence_id is not None
            data = self._confirmations[delivery.sequence_id].render(
                delivery.email,
                self.links.confirm_url(delivery.subscriber_id, now),
                message_id=delivery.message_id,
                date=now,
            )
            return Envelope(sender.transactional_from, delivery.email, data)
        assert delivery.lesson_id is not None
        data = self._lessons[delivery.lesson_id].render(
            Recipient(delivery.email, delivery.first_name),
            self.links.personal_links(delivery.subscriber_id, now),
            message_id=delivery.message_id,
            date=now,
        )
        return Envelope(sender.address, delivery.email, data)

    async def _load_template(
        self, session: AsyncSession, delivery: queries.ClaimedDelivery
    ) -> None:
        """Compile the email a delivery needs, once per lesson snapshot (or per sequence for
        confirmations): snapshots never change, so the cache is safe in every process."""
        if delivery.kind == DeliveryKind.CONFIRMATION:
            sequence_id = delivery.sequence_id
            if sequence_id is not None and sequence_id not in self._confirmations:
                version = await queries.current_version(session, sequence_id)
                assert version is not None
                course = await load_snapshot(
                    session, version.id, await self._slug_of(session, version.id)
                )
                self._confirmations[sequence_id] = ConfirmationEmail(
                    self.env, self.settings.sender, course
                )
        elif delivery.lesson_id is not None and delivery.lesson_id not in self._lessons:
            snapshot = await session.get(LessonSnapshot, delivery.lesson_id)
            assert snapshot is not None
            slug = await self._slug_of(session, snapshot.version_id)
            course = await load_snapshot(session, snapshot.version_id, slug)
            lesson = next(item for item in course.lessons if item.key == snapshot.key)
            self._lessons[delivery.lesson_id] = LessonEmail(
                self.env, self.settings.sender, course, lesson
            )

    async def _slug_of(self, session: AsyncSession, version_id: int) -> str:
        version = await session.get(SequenceVersion, version_id)
        assert version is not None
        sequence = await session.get(Sequence, version.sequence_id)
        assert sequence is not None
        return sequence.slug

    async def _send_in_chunks(
        self, outgoing: list[tuple[queries.ClaimedDelivery, Envelope]]
    ) -> AsyncIterator[list[tuple[queries.ClaimedDelivery, SendReport]]]:
        """Send over every pooled connection at once; yield outcomes as they complete."""
        # As many sends at a time as the transport has connections: each stays busy,
        # and nothing queues up inside the transport.
        gate = asyncio.Semaphore(self.settings.sending.connections)

        async def send(
            delivery: queries.ClaimedDelivery, envelope: Envelope
        ) -> tuple[queries.ClaimedDelivery, SendReport]:
            async with gate:
                try:
                    return delivery, await self.transport.send(envelope)
                except ValueError as exc:
                    # An address no SMTP command line can carry: as good as unknown.
                    unusable = SendReport(
                        False, 553, "5.1.3", f"unusable address: {exc}", Stage.RCPT
                    )
                    return delivery, unusable

        tasks = [asyncio.create_task(send(delivery, envelope)) for delivery, envelope in outgoing]
        chunk: list[tuple[queries.ClaimedDelivery, SendReport]] = []
        try:
            for finished in asyncio.as_completed(tasks):
                chunk.append(await finished)
                if len(chunk) >= self.settings.sending.record_every:
                    yield chunk
                    chunk = []
            if chunk:
                yield chunk
        finally:
            for task in tasks:
                task.cancel()

    async def _record(
        self,
        session: AsyncSession,
        decisions: list[tuple[queries.ClaimedDelivery, Decision]],
        cancelled: list[queries.ClaimedDelivery],
        now: datetime,
        report: PassReport,
    ) -> None:
        changes: list[dict[str, object]] = []
        moved_on: list[tuple[int, int]] = []
        bounced: list[tuple[queries.ClaimedDelivery, str]] = []
        blocked: Decision | None = None

        def change(delivery: queries.ClaimedDelivery, status: str, **values: object) -> None:
            changes.append(
                {
                    "id": delivery.id,
                    "status": status,
                    "lease_until": None,
                    "claimed_by": None,
                    "sent_at": values.get("sent_at"),
                    "due_at": values.get("due_at", now),
                    "last_error": values.get("last_error", ""),
                    "attempts": values.get("attempts", delivery.attempts),
                }
            )

        for delivery in cancelled:
            change(
                delivery,
                DeliveryStatus.CANCELLED,
                last_error=f"recipient is {delivery.subscriber_status}",
            )
            report.counts["cancelled"] += 1
        for delivery, decision in decisions:
            report.counts[decision.verdict.value] += 1
            match decision.verdict:
                case Verdict.SENT:
                    change(delivery, DeliveryStatus.SENT, sent_at=now)
                case Verdict.RETRY:
                    change(
                        delivery,
                        DeliveryStatus.QUEUED,
                        due_at=decision.retry_at,
                        last_error=decision.reason,
                    )
                case Verdict.BOUNCED:
                    change(delivery, DeliveryStatus.FAILED, last_error=decision.reason)
                    bounced.append((delivery, decision.reason))
                case Verdict.FAILED:
                    change(delivery, DeliveryStatus.FAILED, last_error=decision.reason)
                case Verdict.SENDER_BLOCKED:
                    # Not the recipient's fault: the attempt does not count against them.
                    change(
                        delivery,
                        DeliveryStatus.QUEUED,
                        due_at=decision.retry_at,
                        last_error=decision.reason,
                        attempts=delivery.attempts - 1,
                    )
                    blocked = decision
            finished = decision.verdict in (Verdict.SENT, Verdict.FAILED)
            if finished and delivery.kind == DeliveryKind.LESSON and delivery.sequence_id:
                moved_on.append((delivery.subscriber_id, delivery.sequence_id))

        await queries.update_deliveries(session, changes)
        await queries.lessons_sent(session, moved_on, now)
        for delivery, reason in bounced:
            await queries.suppress(session, delivery.email, "bounced", reason, now)
        await queries.mark_bounced(session, [d.subscriber_id for d, _ in bounced], now)
        if blocked is not None:
            await queries.set_flag(
                session,
                queries.SENDING_PAUSED,
                until=blocked.retry_at,
                reason=blocked.reason,
                now=now,
            )
            log.error(
                "Sending paused: the mail server refused us as a sender (%s). No subscriber was "
                "marked; fix the relay settings, then run `newsletter sending resume`.",
                blocked.reason,
                extra={"action": "sending_paused"},
            )


def _may_receive(delivery: queries.ClaimedDelivery) -> bool:
    """Checked when the delivery is about to go, not when it was queued: someone who left
    (or bounced) in between gets nothing."""
    if delivery.suppressed:
        return False
    if delivery.kind == DeliveryKind.CONFIRMATION:
        return delivery.subscriber_status == SubscriberStatus.PENDING
    return delivery.subscriber_status == SubscriberStatus.CONFIRMED
