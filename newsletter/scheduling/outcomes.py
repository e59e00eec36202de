"""What a dispatch pass has decided and not yet committed: delivery rows to update, rows to
put back in the queue or to drop, courses that move on, addresses to suppress, the shared
switches to set or clear, and the log lines to write once all of it is in. Written in one
transaction, fenced by the pass's claim token."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from newsletter.db import queries
from newsletter.db.models import DeliveryKind, DeliveryStatus

#: (level, message, action) of a log line.
Note = tuple[int, str, str]


@dataclass
class Outcomes:
    changes: list[dict[str, Any]] = field(default_factory=list)
    #: (reason, due_at) -> ids of rows going back to the queue uncharged.
    released: dict[tuple[str | None, datetime | None], list[int]] = field(default_factory=dict)
    dropped: list[int] = field(default_factory=list)
    moved_on: list[tuple[int, int]] = field(default_factory=list)
    bounced: list[tuple[int, str, str]] = field(default_factory=list)
    flags: list[tuple[str, datetime | None, str]] = field(default_factory=list)
    cleared_flags: list[str] = field(default_factory=list)
    #: Written once committed: nothing is logged between the relay's 250 and the commit,
    #: so a failing log handler cannot cost an outcome.
    notes: list[Note] = field(default_factory=list)
    #: Every delivery these outcomes settle, whatever becomes of its row.
    ids: list[int] = field(default_factory=list)
    #: Messages handed to the relay, each holding one of the pass's unrecorded permits.
    sent: int = 0

    def __bool__(self) -> bool:
        return bool(self.ids or self.flags or self.cleared_flags)

    def change(
        self,
        delivery: queries.ClaimedDelivery,
        status: DeliveryStatus,
        *,
        wall_now: datetime,
        sent_at: datetime | None = None,
        due_at: datetime | None = None,
        last_error: str = "",
    ) -> None:
        """The delivery's row takes `status`, due at `due_at` (a retry) or else now."""
        self.ids.append(delivery.id)
        self.changes.append(
            {
                "id": delivery.id,
                "status": status,
                "lease_until": None,
                "claimed_by": None,
                "sent_at": sent_at,
                "due_at": due_at,
                "last_error": last_error,
                "last_attempt_at": wall_now,
            }
        )
        finished = status in (DeliveryStatus.SENT, DeliveryStatus.FAILED)
        if finished and delivery.kind == DeliveryKind.LESSON and delivery.sequence_id:
            self.moved_on.append((delivery.subscriber_id, delivery.sequence_id))

    def release(
        self,
        deliveries: list[queries.ClaimedDelivery],
        reason: str | None = None,
        due_at: datetime | None = None,
    ) -> None:
        if deliveries:
            self.released.setdefault((reason, due_at), []).extend(d.id for d in deliveries)
            self.ids.extend(d.id for d in deliveries)

    def pause_sending(self, until: datetime, reason: str) -> None:
        """The relay refused us as a sender: every worker waits until `until`."""
        self.flags.append((queries.SENDING_PAUSED, until, reason))
        self.notes.append(
            (
                logging.ERROR,
                f"Sending paused: the relay refused us as a sender ({reason}). No subscriber "
                "was marked. Check [smtp] host, port, tls, username and "
                "NEWSLETTER_SMTP__PASSWORD, the relay account, and that the sender address "
                f"is one the relay accepts; sending tries again by itself at {until:%H:%M:%S} "
                "UTC, or at once with `newsletter sending resume`.",
                "sending_paused",
            )
        )

    def pause_for_policy(self, summary: str) -> None:
        """Receiving servers refuse our mail: every worker waits for an operator."""
        self.flags.append((queries.SENDING_PAUSED, None, summary))
        self.notes.append(
            (
                logging.ERROR,
                f"Sending paused: {summary}. Receiving servers are refusing our mail, which "
                "usually means the sending domain's SPF, DKIM or DMARC records are missing or "
                "wrong, or its reputation suffers. Fix that, then run "
                "`newsletter sending resume`.",
                "sending_paused",
            )
        )

    def open_circuit(self, until: datetime, reason: str) -> None:
        """The relay is not taking mail: no worker connects before `until`."""
        self.flags.append((queries.RELAY_CIRCUIT, until, reason))
        self.notes.append(
            (
                logging.WARNING,
                f"The relay is not taking mail ({reason}); no connection is tried before "
                f"{until:%H:%M:%S} UTC. Nothing is lost: due mail waits. If this lasts, check "
                "that the relay is up and reachable (`newsletter sending status`).",
                "circuit_open",
            )
        )

    def close_circuit(self) -> None:
        self.cleared_flags.append(queries.RELAY_CIRCUIT)
        self.notes.append((logging.INFO, "The relay takes mail again.", "circuit_closed"))

    def too_big(self, what: str, recipient: str, reason: str) -> None:
        self.notes.append(
            (
                logging.ERROR,
                f"The relay refused {what} to {recipient} as too big ({reason}). That email "
                "failed for good; shorten it, or raise the relay's message size limit, before "
                "it goes to anyone else.",
                "message_too_big",
            )
        )

    def drop(self, delivery: queries.ClaimedDelivery) -> None:
        self.dropped.append(delivery.id)
        self.ids.append(delivery.id)

    async def write(
        self, session: AsyncSession, *, token: str, now: datetime, wall_now: datetime
    ) -> None:
        """`now` (the schedule's instant) times the courses that move on; `wall_now` the
        suppressions and switches."""
        for change in self.changes:
            change["due_at"] = change["due_at"] or now
        await queries.record_outcomes(session, self.changes, token=token)
        for (reason, due_at), ids in self.released.items():
            await queries.release_claims(session, ids, token=token, reason=reason, due_at=due_at)
        if self.dropped:
            await queries.drop_claims(session, self.dropped, token=token)
        await queries.lessons_sent(session, self.moved_on, now)
        for _, email, reason in self.bounced:
            await queries.suppress(session, email, "bounced", reason, wall_now)
        await queries.mark_bounced(session, [s for s, _, _ in self.bounced], now)
        for name in self.cleared_flags:
            await queries.clear_flag(session, name)
        if self.flags:
            current = await queries.flags(session)
        for name, until, reason in self.flags:
            kept = current.get(name)
            if kept is not None and kept.until is not None and until is not None:
                # Another worker's wait may be longer (its backoff further along): keep it.
                until = max(until, kept.until)
            await queries.set_flag(session, name, until=until, reason=reason, now=wall_now)
