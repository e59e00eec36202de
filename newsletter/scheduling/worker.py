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

from newsletter.clock import Clock, SystemClock
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
from newsletter.delivery.retry import Decision, RetryPolicy, Verdict, blames_sender, decide
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
        rate_clock: Clock | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.transport = transport
        self.env = env
        self.links = links
        self.name = name or f"{socket.gethostname()}:{id(self):x}"
        self.rng = rng or random.Random()
        #: The per-second rate is about the relay's real load, so it runs on the wall
        #: clock even when scheduling runs on a frozen or fast-forwarded one.
        self.rate_clock = rate_clock or SystemClock()
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
        #: By sequence version; and the version each sequence's confirmations use now.
        self._confirmations: dict[int, ConfirmationEmail] = {}
        self._confirmation_versions: dict[int, int] = {}

    # --- planning ------------------------------------------------------------------------

    async def plan_due(self, now: datetime) -> PassReport:
        """Planner passes until nothing more is due now. Each pass is a short transaction
        (`schedule.planner_batch` enrollments), so the web's writes on SQLite never wait
        long for the lock, however many subscribers fall due at once."""
        total = PassReport()
        while True:
            report = await self.plan_once(now)
            total.counts.update(report.counts)
            if sum(report.counts.values()) < self.settings.schedule.planner_batch:
                return total
            await asyncio.sleep(0)  # let the web app and the dispatcher take a turn

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
            allowance = await self._allowance(session, now, report)
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
            self.bucket.take(len(claimed), self.rate_clock.now())
            sendable: list[queries.ClaimedDelivery] = []
            # Sequences whose current version this pass has looked up: once each, not
            # once per confirmation, while the write lock is held.
            pass_versions: set[int] = set()
            dropped: list[tuple[queries.ClaimedDelivery, str, str]] = []
            for delivery in claimed:
                if not _may_receive(delivery):
                    # They left after it was queued: never send.
                    reason = f"recipient is {delivery.subscriber_status}"
                    dropped.append((delivery, DeliveryStatus.CANCELLED, reason))
                elif problem := await self._load_template(session, delivery, pass_versions):
                    dropped.append((delivery, DeliveryStatus.FAILED, problem))
                else:
                    sendable.append(delivery)
        if dropped:
            async with self.sessions.begin() as session:
                await self._record(session, [], dropped, now, report)
        # Rendering and sending happen outside the transaction: no lock is held meanwhile.
        outgoing = [(delivery, self._envelope(delivery, now)) for delivery in sendable]
        async for sent in self._send_in_chunks(outgoing):
            decisions = [(d, self._decide(outcome, d, now)) for d, outcome in sent]
            async with self.sessions.begin() as session:
                await self._record(session, decisions, [], now, report)
        return report

    def _decide(
        self, outcome: SendReport | None, delivery: queries.ClaimedDelivery, now: datetime
    ) -> Decision:
        if outcome is None:  # not attempted: the relay had just refused us as a sender
            retry_at = now + timedelta(seconds=self.retry_policy.first_delay_s)
            return Decision(Verdict.SENDER_BLOCKED, retry_at, "not attempted: sending paused")
        return decide(
            outcome,
            attempts=delivery.attempts,
            first_attempt_at=delivery.first_attempt_at,
            now=now,
            policy=self.retry_policy,
            rng=self.rng,
        )

    async def _allowance(self, session: AsyncSession, now: datetime, report: PassReport) -> int:
        sending = self.settings.sending
        hour = await self._sent_since(session, now - timedelta(hours=1), sending.max_per_hour)
        day = await self._sent_since(session, now - timedelta(days=1), sending.max_per_day)
        available = self.bucket.available(self.rate_clock.now())
        if available <= 0:
            report.counts["throttled"] += 1
        return capped(available, hour, day, sending.max_per_hour, sending.max_per_day)

    @staticmethod
    async def _sent_since(session: AsyncSession, since: datetime, cap: int) -> int:
        return await queries.sent_since(session, since) if cap else 0

    def _envelope(self, delivery: queries.ClaimedDelivery, now: datetime) -> Envelope:
        sender = self.settings.sender
        if delivery.kind == DeliveryKind.CONFIRMATION:
            assert delivery.sequence_id is not None
            version_id = self._confirmation_versions[delivery.sequence_id]
            data = self._confirmations[version_id].render(
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
        self, session: AsyncSession, delivery: queries.ClaimedDelivery, pass_versions: set[int]
    ) -> str | None:
        """Compile the email a delivery needs, once per lesson snapshot or per sequence
        version (snapshots never change, so the cache is safe in every process). Returns
        why it cannot be built, rather than raising: one broken lesson must not hold up
        every other email."""
        try:
            if delivery.kind == DeliveryKind.CONFIRMATION:
                await self._load_confirmation(session, delivery, pass_versions)
            else:
                await self._load_lesson(session, delivery)
        except Exception as exc:  # a template or content error, reported per delivery
            log.exception(
                "Cannot build delivery %s", delivery.id, extra={"action": "render_failed"}
            )
            return f"cannot build the email: {type(exc).__name__}: {exc}"[:500]
        return None

    async def _load_confirmation(
        self, session: AsyncSession, delivery: queries.ClaimedDelivery, pass_versions: set[int]
    ) -> None:
        assert delivery.sequence_id is not None
        if delivery.sequence_id in pass_versions:
            return  # looked up already in this pass
        version = await queries.current_version(session, delivery.sequence_id)
        assert version is not None
        pass_versions.add(delivery.sequence_id)
        self._confirmation_versions[delivery.sequence_id] = version.id
        if version.id not in self._confirmations:
            slug = await self._slug_of(session, version.id)
            course = await load_snapshot(session, version.id, slug)
            self._confirmations[version.id] = ConfirmationEmail(
                self.env, self.settings.sender, course
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
    ) -> AsyncIterator[list[tuple[queries.ClaimedDelivery, SendReport | None]]]:
        """Send over every pooled connection at once; yield outcomes in chunks of
        `record_every` for the caller to record.

        At most `record_every + connections` messages are ever sent and not yet recorded:
        a permit is taken before each send and given back only once the caller has
        recorded its chunk. That is the bound on what a crash can re-send. Once the relay
        refuses us as a sender, sends not yet started are skipped (outcome None)."""
        sending = self.settings.sending
        unrecorded = asyncio.Semaphore(sending.record_every + sending.connections)
        connections = asyncio.Semaphore(sending.connections)
        halt = asyncio.Event()

        async def send(
            delivery: queries.ClaimedDelivery, envelope: Envelope
        ) -> tuple[queries.ClaimedDelivery, SendReport | None]:
            await unrecorded.acquire()
            async with connections:
                if halt.is_set():
                    return delivery, None
                try:
                    outcome = await self.transport.send(envelope)
                except ValueError as exc:
                    # An address no SMTP command line can carry: as good as unknown.
                    reason = f"unusable address: {exc}"
                    return delivery, SendReport(False, 553, "5.1.3", reason, Stage.RCPT)
                if blames_sender(outcome):
                    # Every further try would fail alike, and repeated failed logins can
                    # get the relay account locked: stop starting new sends.
                    halt.set()
                return delivery, outcome

        tasks = [asyncio.create_task(send(delivery, envelope)) for delivery, envelope in outgoing]
        chunk: list[tuple[queries.ClaimedDelivery, SendReport | None]] = []
        try:
            for finished in asyncio.as_completed(tasks):
                chunk.append(await finished)
                if len(chunk) >= sending.record_every:
                    yield chunk
                    for _ in chunk:
                        unrecorded.release()
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
        dropped: list[tuple[queries.ClaimedDelivery, str, str]],
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

        for delivery, status, reason in dropped:
            change(delivery, status, last_error=reason)
            report.counts[status] += 1
            if status == DeliveryStatus.FAILED and delivery.sequence_id:
                moved_on.append((delivery.subscriber_id, delivery.sequence_id))
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

        await queries.record_outcomes(session, changes, worker=self.name)
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
