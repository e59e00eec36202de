"""Where what comes back is recorded and acted on, whichever way it arrived: the SMTP
receiver, `newsletter inbound read`, or a provider's webhook.

A report is acted on only when it names a message we sent: through its signed VERP return
path, or the Message-ID of the original it quotes (which only its recipient has). Anything
else is recorded, so that it can be seen, and changes nothing: a forged bounce cannot
suppress anyone.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import distinct, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from newsletter import broadcasts, signup
from newsletter.addresses import address_parts
from newsletter.clock import Clock
from newsletter.config import Settings
from newsletter.courses import set_sequence_status
from newsletter.db import queries
from newsletter.db.models import (
    Broadcast,
    BroadcastStatus,
    Delivery,
    DeliveryStatus,
    MailEvent,
    MailEventKind,
    SequenceStatus,
    Subscriber,
    SubscriberStatus,
)
from newsletter.db.models import Sequence as SequenceRow
from newsletter.inbound.policy import (
    SendRates,
    Verdict,
    issue_pause_reason,
    rates_exceeded,
    verdict,
)
from newsletter.inbound.reports import (
    Report,
    is_auto_reply,
    read_reports,
    read_unsubscribe_request,
)
from newsletter.inbound.verp import ReturnPath
from newsletter.logs import log_event
from newsletter.tokens import LinkTarget, Purpose, TokenInvalid, Tokens

log = logging.getLogger(__name__)

_SUPPRESSION_REASON = {
    MailEventKind.HARD_BOUNCE: "bounced",
    MailEventKind.SOFT_BOUNCE: "bounced",
    MailEventKind.COMPLAINT: "complained",
}
_SUBSCRIBER_STATUS = {
    MailEventKind.HARD_BOUNCE: SubscriberStatus.BOUNCED,
    MailEventKind.SOFT_BOUNCE: SubscriberStatus.BOUNCED,
    MailEventKind.COMPLAINT: SubscriberStatus.COMPLAINED,
}


@dataclass(frozen=True, slots=True)
class Target:
    """The message a report is about, as we sent it."""

    delivery_id: int
    subscriber_id: int
    sequence_id: int | None
    email: str
    broadcast_id: int | None = None  #: the newsletter issue it carried


class Inbox:
    def __init__(
        self,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        *,
        tokens: Tokens,
        return_path: ReturnPath | None,
        wall: Clock,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.tokens = tokens
        self.return_path = return_path
        self.wall = wall
        base, _, domain = address_parts(settings.sender.unsubscribe_address)
        self._unsubscribe_address = (base, domain)

    # --- which addresses are ours ---------------------------------------------------------

    def is_unsubscribe_address(self, address: str) -> bool:
        """The unsubscribe address, or a tagged form of it naming a course (+<slug>)."""
        base, _, domain = address_parts(address)
        return (base, domain) == self._unsubscribe_address

    def refusal(self, address: str) -> str:
        """Why the receiver refuses mail to this address at RCPT; "" when it takes it."""
        if self.is_unsubscribe_address(address):
            return ""
        if self.return_path is None or not self.return_path.is_ours(address):
            return "550 5.1.1 No such mailbox here"
        tagged = "+" in address.partition("@")[0]
        if tagged and self.return_path.delivery_of(address) is None:
            return "550 5.1.1 No such mailbox here (unknown return address)"
        return ""

    # --- receiving ------------------------------------------------------------------------

    async def receive(self, raw: bytes, recipients: Sequence[str], source: str) -> list[str]:
        """Record one inbound message and act on it; what happened, one line per finding.
        Raises only when the database cannot take it now (the sender should try again)."""
        for address in recipients:
            if self.is_unsubscribe_address(address):
                return [await self._unsubscribe(raw, source, course=address_parts(address)[1])]
        # Before any auto-reply test: bounces are auto-submitted too (RFC 3464).
        reports = read_reports(raw)
        if not reports:
            if is_auto_reply(raw):
                return ["an automatic reply (such as an out-of-office notice): nothing to do"]
            return ["no bounce or complaint in it: nothing to do"]
        verp = None
        if self.return_path is not None:
            verp = next(
                (d for a in recipients if (d := self.return_path.delivery_of(a)) is not None),
                None,
            )
        return [await self.record(report, source, verp_delivery=verp) for report in reports]

    async def record(self, report: Report, source: str, *, verp_delivery: int | None = None) -> str:
        """Record one report and act on it, once: the same report again changes nothing."""
        now = self.wall.now()
        kind = MailEventKind(report.kind)
        async with self.sessions.begin() as session:
            target = await self._target(session, report, verp_delivery)
            event = {
                "fingerprint": report.fingerprint,
                "kind": kind,
                "source": source,
                "email": target.email if target else report.recipient,
                "subscriber_id": target.subscriber_id if target else None,
                "delivery_id": target.delivery_id if target else None,
                "sequence_id": target.sequence_id if target else None,
                "status": report.status or "",
                "reason": report.diagnostic,
                "outcome": "",
                "received_at": now,
            }
            event_id = await _new_event(session, event)
            if event_id is None:
                return f"{_describe(kind, report)}: already recorded, nothing more to do"
            if target is None:
                outcome = "not acted on: it names no message we sent"
            else:
                outcome = await self._act(session, kind, report, target, now)
            await _settle_event(session, event_id, outcome)
        line = f"{_describe(kind, report)}: {outcome}"
        log_event(log, logging.INFO, line, "inbound_" + kind)
        return line

    async def _target(
        self, session: AsyncSession, report: Report, verp_delivery: int | None
    ) -> Target | None:
        delivery_id = verp_delivery
        if delivery_id is None and report.original_return_path and self.return_path:
            delivery_id = self.return_path.delivery_of(report.original_return_path)
        query = select(
            Delivery.id,
            Delivery.subscriber_id,
            Delivery.sequence_id,
            Subscriber.email,
            Delivery.message_id,
            Delivery.broadcast_id,
        ).join(Subscriber, Subscriber.id == Delivery.subscriber_id)
        if delivery_id is not None:
            query = query.where(Delivery.id == delivery_id)
        elif report.original_message_id:
            query = query.where(Delivery.message_id == report.original_message_id).limit(1)
        else:
            return None
        row = (await session.execute(query)).first()
        if row is None:
            return None
        quoted = report.original_message_id
        if quoted is not None and quoted != row.message_id:
            return None  # it quotes another message than the one its return path names
        return Target(row.id, row.subscriber_id, row.sequence_id, row.email, row.broadcast_id)

    async def _act(
        self,
        session: AsyncSession,
        kind: MailEventKind,
        report: Report,
        target: Target,
        now: datetime,
    ) -> str:
        bounces = self.settings.bounces
        soft = 0
        if kind == MailEventKind.SOFT_BOUNCE:
            since = now - timedelta(days=bounces.soft_window_days)
            soft = await _soft_bounced_deliveries(session, target.subscriber_id, since)
        decided = verdict(kind, soft, bounces)
        if decided is Verdict.SUPPRESS:
            await self._suppress(session, kind, report, target, now)
            outcome = "address suppressed, its queued mail cancelled"
            if kind == MailEventKind.SOFT_BOUNCE:
                outcome += f" ({soft} soft bounces in {bounces.soft_window_days:g} days)"
        elif decided is Verdict.COUNT:
            outcome = f"counted ({soft} of {bounces.soft_limit} soft bounces before suppression)"
        elif kind == MailEventKind.POLICY_BOUNCE:
            outcome = "recorded; a refusal of our mail, not held against the subscriber"
        else:
            outcome = "recorded; nothing to do"
        if kind in (MailEventKind.HARD_BOUNCE, MailEventKind.COMPLAINT):
            if target.sequence_id:
                await self._watch_course(session, target.sequence_id, now)
            elif target.broadcast_id:
                await self._watch_issue(session, target.broadcast_id, now)
        return outcome

    async def _suppress(
        self,
        session: AsyncSession,
        kind: MailEventKind,
        report: Report,
        target: Target,
        now: datetime,
    ) -> None:
        detail = " ".join(part for part in (report.status, report.diagnostic) if part)[:500]
        await queries.suppress(session, target.email, _SUPPRESSION_REASON[kind], detail, now)
        await session.execute(
            update(Subscriber)
            .where(Subscriber.id == target.subscriber_id)
            .values(status=_SUBSCRIBER_STATUS[kind], updated_at=now)
        )
        await queries.stop_enrollments(session, [target.subscriber_id])
        await session.execute(
            update(Delivery)
            .where(Delivery.subscriber_id == target.subscriber_id)
            .where(Delivery.status == DeliveryStatus.QUEUED)
            .values(
                status=DeliveryStatus.CANCELLED,
                last_error=f"not sent: the address {_SUPPRESSION_REASON[kind]}",
            )
        )

    async def _watch_course(self, session: AsyncSession, sequence_id: int, now: datetime) -> None:
        """Pause the course if its mail of late bounces or draws complaints beyond bounds."""
        bounces = self.settings.bounces
        sequence = await session.get(SequenceRow, sequence_id)
        if sequence is None or sequence.status != SequenceStatus.LIVE:
            return
        since = now - timedelta(days=bounces.rate_window_days)
        held = await queries.flag(session, queries.course_held(sequence.id))
        if held is not None and held.until is not None:
            since = max(since, held.until)  # resumed since: what came before was dealt with
        in_course = MailEvent.sequence_id == sequence_id
        rates = SendRates(
            sent=await session.scalar(
                select(func.count())
                .select_from(Delivery)
                .where(Delivery.sequence_id == sequence_id)
                .where(Delivery.sent_at >= since)
            )
            or 0,
            hard_bounces=await _count_events(session, in_course, MailEventKind.HARD_BOUNCE, since),
            complaints=await _count_events(session, in_course, MailEventKind.COMPLAINT, since),
        )
        why = rates_exceeded(rates, bounces)
        sequence = await session.get(SequenceRow, sequence_id)
        if not why or sequence is None or sequence.status != SequenceStatus.LIVE:
            return
        await set_sequence_status(session, sequence, SequenceStatus.PAUSED, now)
        reason = f"paused: {why}"
        await queries.set_flag(
            session, queries.course_held(sequence.id), until=None, reason=reason, now=now
        )
        log_event(
            log,
            logging.ERROR,
            f"Course {sequence.slug} {reason}. `newsletter sequences resume {sequence.slug}` "
            "sends it again.",
            "course_paused_for_rates",
        )

    async def _watch_issue(self, session: AsyncSession, broadcast_id: int, now: datetime) -> None:
        """Pause a newsletter issue whose own sends bounce or draw complaints beyond the
        course's bounds: over all it sent, or all it sent since it was last resumed."""
        broadcast = await session.get(Broadcast, broadcast_id, with_for_update=True)
        if broadcast is None or broadcast.status not in queries.BROADCAST_SENDING:
            return
        left = await session.scalar(
            select(Delivery.id)
            .where(Delivery.broadcast_id == broadcast_id)
            .where(Delivery.status.in_(queries.IN_FLIGHT))
            .limit(1)
        )
        if left is None and broadcast.enqueued_at is not None:
            return  # all sent: a late report has nothing left to hold back
        since = broadcast.started_at
        held = await queries.flag(session, queries.issue_held(broadcast.id))
        if held is not None and held.until is not None:
            since = max(since, held.until)  # resumed since: what came before was dealt with
        rates = SendRates(
            sent=await session.scalar(
                select(func.count())
                .select_from(Delivery)
                .where(Delivery.broadcast_id == broadcast_id)
                .where(Delivery.sent_at >= since)
            )
            or 0,
            hard_bounces=await _issue_reports(
                session, broadcast_id, MailEventKind.HARD_BOUNCE, since
            ),
            complaints=await _issue_reports(session, broadcast_id, MailEventKind.COMPLAINT, since),
        )
        reason = issue_pause_reason(rates, self.settings.bounces)
        if not reason:
            return
        await broadcasts.set_status(
            session, broadcast.key, BroadcastStatus.PAUSED, now=now, reason=reason
        )
        log_event(
            log,
            logging.WARNING,
            f"Newsletter issue {broadcast.key} {reason}. Its mail not sent yet waits; "
            f"`newsletter broadcast resume {broadcast.key}` sends it.",
            "issue_paused_for_rates",
        )

    # --- mailto unsubscribes ----------------------------------------------------------------

    async def _unsubscribe(self, raw: bytes, source: str, *, course: str) -> str:
        """RFC 2369 / 8058 mailto: the token of our List-Unsubscribe subject says who and
        which course. Without one, the sender's address leaves the course the address names
        (unsubscribe+<slug>@) or everything, but only when the receiving server vouches for
        that address (DMARC passed): anyone can write any From. Nobody is sent a reply: an
        answer to a forged sender would be mail to someone who asked for none."""
        request = read_unsubscribe_request(raw)
        now = self.wall.now()
        async with self.sessions.begin() as session:
            target = self._token_target(request.token, now)
            sequence_id = target.sequence_id if target else None
            subscriber = None
            if target is not None:
                subscriber = await session.get(Subscriber, target.subscriber_id)
            elif request.sender and request.sender_authenticated:
                subscriber = await queries.subscriber_by_email(session, request.sender)
                named = await queries.sequence_by_slug(session, course) if course else None
                sequence_id = named.id if named else None
            event_id = await _new_event(
                session,
                {
                    "fingerprint": request.fingerprint,
                    "kind": MailEventKind.UNSUBSCRIBE,
                    "source": source,
                    "email": subscriber.email if subscriber else request.sender,
                    "subscriber_id": subscriber.id if subscriber else None,
                    "sequence_id": sequence_id,
                    "status": "",
                    "reason": request.subject,
                    "outcome": "",
                    "received_at": now,
                },
            )
            if event_id is None:
                return "an unsubscribe request by mail: already done"
            if subscriber is not None and sequence_id is not None:
                await signup.leave_course(session, subscriber.id, sequence_id)
                outcome = "left the course"
            elif subscriber is not None:
                await signup.leave(session, subscriber.id, now)
                outcome = "unsubscribed from everything"
            elif target is None and request.sender and not request.sender_authenticated:
                outcome = "not acted on: no token, and no proof the sender is who it says"
            else:
                outcome = "not acted on: neither its token nor its sender is a subscriber"
            await _settle_event(session, event_id, outcome)
        line = f"an unsubscribe request by mail: {outcome}"
        log_event(log, logging.INFO, line, "inbound_unsubscribe")
        return line

    def _token_target(self, token: str | None, now: datetime) -> LinkTarget | None:
        if token is None:
            return None
        try:
            return self.tokens.read_target(Purpose.UNSUBSCRIBE, token, now)
        except TokenInvalid:
            return None


async def _new_event(session: AsyncSession, values: Mapping[str, object]) -> int | None:
    """Insert an event; None when one with its fingerprint is already there."""
    inserted = await session.execute(
        queries.insert_ignoring_duplicates(session, MailEvent)
        .values(**values)
        .returning(MailEvent.id)
    )
    return inserted.scalar()


async def _settle_event(session: AsyncSession, event_id: int, outcome: str) -> None:
    await session.execute(update(MailEvent).where(MailEvent.id == event_id).values(outcome=outcome))


async def _soft_bounced_deliveries(
    session: AsyncSession, subscriber_id: int, since: datetime
) -> int:
    """Soft bounces of the subscriber's own messages since then, one per message: what
    names none of them (recorded, not acted on) or a report of one again counts nothing."""
    count = await session.scalar(
        select(func.count(distinct(MailEvent.delivery_id)))
        .where(MailEvent.subscriber_id == subscriber_id)
        .where(MailEvent.delivery_id.is_not(None))
        .where(MailEvent.kind == MailEventKind.SOFT_BOUNCE)
        .where(MailEvent.received_at >= since)
    )
    return int(count or 0)


async def _count_events(
    session: AsyncSession, where: object, kind: MailEventKind, since: datetime
) -> int:
    """Messages that drew a report of this kind since then, each once: a complaint from
    the mailbox provider and another from its feedback loop are one message's."""
    count = await session.scalar(
        select(func.count(distinct(MailEvent.delivery_id)))
        .where(where)  # type: ignore[arg-type]
        .where(MailEvent.kind == kind)
        .where(MailEvent.received_at >= since)
    )
    return int(count or 0)


async def _issue_reports(
    session: AsyncSession, broadcast_id: int, kind: MailEventKind, since: datetime
) -> int:
    """The issue's messages sent since then that drew a report of this kind, each once
    (a report names a message of an issue through its delivery; such events have no
    sequence, which lets the query use the events' (sequence, kind, time) index)."""
    count = await session.scalar(
        select(func.count(distinct(MailEvent.delivery_id)))
        .join(Delivery, Delivery.id == MailEvent.delivery_id)
        .where(MailEvent.sequence_id.is_(None))
        .where(MailEvent.kind == kind)
        .where(MailEvent.received_at >= since)  # a report comes after its message
        .where(Delivery.broadcast_id == broadcast_id)
        .where(Delivery.sent_at >= since)
    )
    return int(count or 0)


def _describe(kind: MailEventKind, report: Report) -> str:
    what = kind.replace("_", " ")
    about = f" for {report.recipient}" if report.recipient else ""
    status = f" ({report.status})" if report.status else ""
    return f"a {what}{about}{status}"
