"""One dispatch pass: claim what is due, check each recipient right before their message goes,
send over every connection at once, record the outcomes in chunks. Claims are refilled as
sends complete, so the connections stay busy for as long as work is due.

What a pass guarantees (docs/delivery.md):
- At most `record_every + connections` messages are sent and not yet recorded at any
  moment: a permit is taken before each send and given back only once its outcome is
  committed. That bounds what a crash can send twice.
- A message is handed to the relay only if, at most SEND_CHECK_FRESH_S earlier, its row
  was still held by this claim (the fence), with at least half its lease left, and its
  recipient could still receive it (not unsubscribed, erased or suppressed).
- Leases are renewed while rows are held (a heartbeat), so a long batch is never taken over.
- Outcomes that cannot be committed (the database busy or gone) are kept and tried again;
  a busy database never ends a pass with accepted messages unrecorded.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from newsletter import failpoints
from newsletter.db import queries
from newsletter.db.models import DeliveryKind, DeliveryStatus, SubscriberStatus
from newsletter.delivery.circuit import CircuitState
from newsletter.delivery.retry import Decision, Verdict, decide
from newsletter.delivery.transport import SendReport, Stage
from newsletter.errors import RenderError
from newsletter.logs import log_event

if TYPE_CHECKING:
    from newsletter.scheduling.worker import PassReport, Worker

log = logging.getLogger(__name__)

#: A recipient check is trusted for this long (real time) before the message is sent; a
#: check is one query for up to `connections` messages.
SEND_CHECK_FRESH_S = 0.1
#: A send starts only while its row's lease has at least this share of its length left.
LEASE_MARGIN = 0.5
#: Leases are renewed this often, as a share of their length: two beats may be missed
#: before a row nears LEASE_MARGIN.
HEARTBEAT_SHARE = 1 / 6
#: Backoff of a commit that found the database busy or gone.
RECORD_RETRY_FIRST_S = 0.05
RECORD_RETRY_MAX_S = 2.0


def database_unavailable(exc: BaseException) -> bool:
    """A database that is busy (SQLite's lock held too long) or gone (a dropped PostgreSQL
    connection): worth trying again later, unlike a bug in a statement."""
    if isinstance(exc, (OperationalError, InterfaceError)):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


class Check(Enum):
    """What the database says of a claimed delivery just before it is sent; the value is
    the outcome a pass reports for those not sent."""

    SEND = "sent"
    GONE = "gone"  #: the row is gone: the person was erased
    LOST = "lost_claim"  #: another claim holds it now (our lease ran out)
    LEASE_SHORT = "lease_short"  #: too little lease left to start an SMTP exchange safely
    LEFT = "cancelled"  #: the recipient can no longer receive it


def check_before_send(
    row: queries.HeldDelivery | None,
    kind: str,
    *,
    token: str,
    wall_now: datetime,
    min_lease: timedelta,
) -> Check:
    if row is None:
        return Check.GONE
    if row.status != DeliveryStatus.SENDING or row.claimed_by != token:
        return Check.LOST
    if row.lease_until is None or row.lease_until - wall_now < min_lease:
        return Check.LEASE_SHORT
    wanted = SubscriberStatus.PENDING if kind == DeliveryKind.CONFIRMATION else None
    if row.suppressed or row.subscriber_status != (wanted or SubscriberStatus.CONFIRMED):
        return Check.LEFT
    return Check.SEND


@dataclass
class _Chunk:
    """Outcomes decided and not yet committed, with what goes with them."""

    changes: list[dict[str, Any]] = field(default_factory=list)
    released: dict[str | None, list[int]] = field(default_factory=dict)
    moved_on: list[tuple[int, int]] = field(default_factory=list)
    bounced: list[tuple[int, str, str]] = field(default_factory=list)
    flags: list[tuple[str, datetime | None, str]] = field(default_factory=list)
    cleared_flags: list[str] = field(default_factory=list)
    #: Log lines to write once committed: nothing is logged between the relay's 250 and the
    #: commit, so a failing log handler cannot cost an outcome.
    notes: list[tuple[int, str, str]] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    sent: int = 0  #: messages handed to the relay, each holding an unrecorded permit

    def __bool__(self) -> bool:
        return bool(self.ids or self.flags or self.cleared_flags)


class DispatchPass:
    def __init__(self, worker: Worker, now: datetime, report: PassReport) -> None:
        self.worker = worker
        self.now = now  #: the schedule's instant when the pass began
        self.report = report
        sending = worker.settings.sending
        self.connections = sending.connections
        self.batch_size = sending.batch_size
        self.record_every = sending.record_every
        self.lease = timedelta(seconds=sending.lease_s)
        #: The fence: outcomes are written only over rows still claimed under this token.
        self.token = f"{worker.name}/{secrets.token_hex(4)}"
        self.pending: deque[queries.ClaimedDelivery] = deque()
        self.checked: deque[tuple[float, queries.ClaimedDelivery]] = deque()
        #: Claimed and not yet recorded; the heartbeat renews their leases.
        self.held: dict[int, queries.ClaimedDelivery] = {}
        self.claiming: asyncio.Task[None] | None = None
        self.commits: set[asyncio.Task[None]] = set()
        self.exhausted = False  #: nothing more to claim in this pass
        self.halted = False  #: start no further sends (relay refusing, circuit open)
        self.probing = False
        self.chunk = _Chunk()
        self.unrecorded = asyncio.Semaphore(sending.record_every + sending.connections)
        self.gate = asyncio.Lock()
        self.recording = asyncio.Lock()
        self.senders: list[asyncio.Task[None]] = []
        self.finished = asyncio.Event()

    # --- the pass ------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            self._refill_soon()
            if (claim := self.claiming) is not None:
                await asyncio.wait({claim})
                claim.result()  # a bug in claiming ends the pass, loudly
            if not self.held:
                await self._record(force=True)  # what the claim itself decided (broken lessons)
                return
            heartbeat = asyncio.create_task(self._heartbeat())
            self.senders = [asyncio.create_task(self._sender()) for _ in range(self.connections)]
            try:
                results = await asyncio.gather(*self.senders, return_exceptions=True)
            finally:
                heartbeat.cancel()
                await self._wind_down()
            for result in results:
                if isinstance(result, Exception):
                    raise result
        finally:
            self.finished.set()

    def abandon(self) -> None:
        """Stop now: cut the sends in flight (a forced shutdown)."""
        self.halted = True
        for task in self.senders:
            task.cancel()

    async def _wind_down(self) -> None:
        """Release what was claimed and not sent, record everything decided."""
        if self.claiming is not None:
            await asyncio.wait({self.claiming})
        unsent = [delivery for _, delivery in self.checked] + list(self.pending)
        self.checked.clear()
        self.pending.clear()
        self._release(unsent, None)
        self.report.counts["released"] += len(unsent)
        await self._record(force=True)
        if self.commits:  # one a cut-off sender left running
            await asyncio.wait(self.commits)

    # --- senders -------------------------------------------------------------------------

    async def _sender(self) -> None:
        while True:
            await self.unrecorded.acquire()
            try:
                # Paced before the check, so that the check is fresh when the message goes.
                await self._pace()
                delivery = await self._next()
            except BaseException:
                self.unrecorded.release()
                raise
            if delivery is None:
                self.unrecorded.release()
                return
            await self._send(delivery)
            await self._record()

    async def _pace(self) -> None:
        """The per-second rate: wait for this worker's token bucket (real time)."""
        bucket, clock = self.worker.bucket, self.worker.rate_clock
        while (wait_s := bucket.wait_s(clock.now())) > 0:
            await asyncio.sleep(wait_s)
        bucket.take(1, clock.now())

    async def _send(self, delivery: queries.ClaimedDelivery) -> None:
        wall_now = self.worker.wall.now()
        try:
            envelope = self.worker.emails.envelope(delivery, wall_now)
        except RenderError as exc:  # an address no header can carry
            self._settle(delivery, Decision(Verdict.FAILED, None, str(exc)))
            self.unrecorded.release()  # nothing went to the relay
            return
        try:
            outcome = await self.worker.transport.send(envelope)
        except ValueError as exc:
            # An address no SMTP command line can carry: as good as unknown.
            reason = f"unusable address: {exc}"
            outcome = SendReport(False, 553, "5.1.3", reason, Stage.RCPT)
        except asyncio.CancelledError:
            # Cut off mid-exchange: whether the relay took it is unknown.
            self._release([delivery], "interrupted by a forced shutdown; may arrive twice")
            self.report.counts["interrupted"] += 1
            raise
        if outcome.accepted:
            failpoints.hit("dispatch.after_accept")
        self.chunk.sent += 1
        decision = decide(
            outcome,
            attempts=delivery.attempts,
            first_attempt_at=delivery.first_attempt_at,
            now=self.worker.wall.now(),
            policy=self.worker.retry_policy,
            rng=self.worker.rng,
        )
        self._settle(delivery, decision, outcome)

    # --- what to send next ---------------------------------------------------------------

    async def _next(self) -> queries.ClaimedDelivery | None:
        """The next delivery whose check is fresh; None when this sender should stop."""
        async with self.gate:
            prober = False
            while True:
                if self.halted or self.worker.stopping:
                    return None
                match self.worker.circuit.state(self.worker.wall.now()):
                    case CircuitState.OPEN:
                        self.halted = True
                        self.report.counts["circuit_open"] += 1
                        return None
                    case CircuitState.HALF_OPEN if not prober:
                        if self.probing:
                            return None  # one probe at a time; the rest waits for its answer
                        self.probing = prober = True
                if fresh := self._take_fresh():
                    return fresh
                self._refill_soon()
                if not self.pending:
                    if (claim := self.claiming) is None:
                        return None
                    await asyncio.wait({claim})  # not cancelled with this sender
                    claim.result()
                    continue
                await self._check_group()

    def _take_fresh(self) -> queries.ClaimedDelivery | None:
        if self.checked and time.monotonic() - self.checked[0][0] <= SEND_CHECK_FRESH_S:
            return self.checked.popleft()[1]
        # Stale checks go back to the front of the queue, in order, to be checked again.
        self.pending.extendleft(reversed([delivery for _, delivery in self.checked]))
        self.checked.clear()
        return None

    async def _check_group(self) -> None:
        group = [self.pending.popleft() for _ in range(min(self.connections, len(self.pending)))]
        try:
            async with self.worker.readers() as session:
                rows = await queries.held_deliveries(session, [d.id for d in group])
        except BaseException as exc:
            self.pending.extendleft(reversed(group))  # released with the rest at wind-down
            if not (isinstance(exc, Exception) and database_unavailable(exc)):
                raise
            self._halt_for_database(exc)
            return
        checked_at, wall_now = time.monotonic(), self.worker.wall.now()
        for delivery in group:
            check = check_before_send(
                rows.get(delivery.id),
                delivery.kind,
                token=self.token,
                wall_now=wall_now,
                min_lease=self.lease * LEASE_MARGIN,
            )
            if check is Check.SEND:
                self.checked.append((checked_at, delivery))
                continue
            self.report.counts[check.value] += 1
            if check is Check.LEFT:
                reason = "the recipient left or is suppressed; not sent"
                self._change(delivery, DeliveryStatus.CANCELLED, last_error=reason)
            else:
                # Nothing of ours to write: the row is gone, or no longer ours to send.
                self.held.pop(delivery.id, None)
                if check is not Check.GONE:
                    why = (
                        "another worker holds it now"
                        if check is Check.LOST
                        else "its lease is running out (is the database reachable?)"
                    )
                    log_event(
                        log,
                        logging.WARNING,
                        f"Delivery {delivery.id} was not sent: {why}.",
                        "claim_lost",
                    )

    def _halt_for_database(self, exc: BaseException) -> None:
        self.halted = True
        self.report.counts["db_busy"] += 1
        log_event(
            log,
            logging.WARNING,
            f"The database is busy or unreachable ({_first_line(exc)}); sending waits for it.",
            "database_unavailable",
        )

    # --- claiming ------------------------------------------------------------------------

    def _refill_soon(self) -> None:
        """Claim more in the background while the queue still holds work for the senders."""
        low_water = max(2 * self.connections, self.batch_size // 2)
        if self.claiming is not None or self.exhausted or self.halted or self.worker.stopping:
            return
        if len(self.pending) + len(self.checked) >= low_water:
            return
        self.claiming = asyncio.create_task(self._claim())

    async def _claim(self) -> None:
        try:
            claimed = await self._claim_rows()
            if not claimed:
                self.exhausted = True
                return
            failpoints.hit("dispatch.after_claim")
            self.held.update((delivery.id, delivery) for delivery in claimed)
            try:
                async with self.worker.readers() as session:
                    problems = await self.worker.emails.prepare(session, claimed)
            except Exception as exc:
                if not database_unavailable(exc):
                    raise
                self._release(claimed, None)  # their emails could not be read: next pass
                raise
            for delivery in claimed:
                if delivery.id in problems:
                    self._settle(delivery, Decision(Verdict.FAILED, None, problems[delivery.id]))
                else:
                    self.pending.append(delivery)
            if self._half_open():
                self.exhausted = True  # a probe: the rest waits for the circuit to close
        except Exception as exc:
            if not database_unavailable(exc):
                raise
            # Finish what is held; the next pass claims again.
            self.exhausted = True
            self.report.counts["db_busy"] += 1
        finally:
            self.claiming = None

    async def _claim_rows(self) -> list[queries.ClaimedDelivery]:
        limit = await self._allowance()
        if limit <= 0:
            return []
        wall_now = self.worker.wall.now()
        async with self.worker.sessions.begin() as session:
            return await queries.claim_due_deliveries(
                session,
                now=max(self.now, self.worker.clock.now()),
                wall_now=wall_now,
                limit=limit,
                lease_until=wall_now + self.lease,
                token=self.token,
            )

    def _half_open(self) -> bool:
        return self.worker.circuit.state(self.worker.wall.now()) is CircuitState.HALF_OPEN

    async def _allowance(self) -> int:
        """How many to claim: a batch, within the hourly and daily caps; one for a probe."""
        if self._half_open():
            return 1
        sending = self.worker.settings.sending
        limit = self.batch_size
        if sending.max_per_hour or sending.max_per_day:
            wall_now = self.worker.wall.now()
            async with self.worker.readers() as session:
                for cap, span in (
                    (sending.max_per_hour, timedelta(hours=1)),
                    (sending.max_per_day, timedelta(days=1)),
                ):
                    if cap:
                        sent = await queries.sent_since(session, wall_now - span)
                        limit = min(limit, cap - sent)
            if limit <= 0:
                self.report.counts["capped"] += 1
        return limit

    # --- leases --------------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        every_s = self.lease.total_seconds() * HEARTBEAT_SHARE
        while True:
            await asyncio.sleep(every_s)
            if not self.held:
                continue
            try:
                async with self.worker.sessions.begin() as session:
                    await queries.renew_leases(
                        session,
                        list(self.held),
                        token=self.token,
                        lease_until=self.worker.wall.now() + self.lease,
                    )
            except Exception as exc:
                if not database_unavailable(exc):
                    raise
                log_event(
                    log,
                    logging.WARNING,
                    f"Could not renew the leases of {len(self.held)} deliveries "
                    f"({_first_line(exc)}); trying again.",
                    "lease_renewal_failed",
                )

    # --- outcomes ------------------------------------------------------------------------

    def _settle(
        self,
        delivery: queries.ClaimedDelivery,
        decision: Decision,
        outcome: SendReport | None = None,
    ) -> None:
        """Turn a decision into the changes of the next chunk, and tell the circuit and the
        policy watch what the relay did."""
        worker, chunk = self.worker, self.chunk
        wall_now = worker.wall.now()
        self.report.counts[decision.verdict.value] += 1
        match decision.verdict:
            case Verdict.SENT:
                self._change(delivery, DeliveryStatus.SENT, sent_at=wall_now)
            case Verdict.RETRY:
                assert decision.retry_at is not None
                due_at = worker.clock.after(decision.retry_at - wall_now)
                self._change(delivery, DeliveryStatus.QUEUED, due_at=due_at, error=decision)
            case Verdict.BOUNCED:
                self._change(delivery, DeliveryStatus.FAILED, error=decision)
                chunk.bounced.append((delivery.subscriber_id, delivery.email, decision.reason))
            case Verdict.FAILED:
                self._change(delivery, DeliveryStatus.FAILED, error=decision)
                if decision.too_big:
                    chunk.notes.append(
                        (
                            logging.ERROR,
                            f"The relay refused {worker.emails.describe(delivery)} to "
                            f"{delivery.email} as too big ({decision.reason}). That email "
                            "failed for good; shorten it, or raise the relay's message size "
                            "limit, before it goes to anyone else.",
                            "message_too_big",
                        )
                    )
            case Verdict.SENDER_BLOCKED:
                self._release([delivery], decision.reason)
                self._pause_sending(decision.reason)
            case Verdict.RELAY_UNAVAILABLE:
                self._release([delivery], decision.reason)
                if worker.circuit.failed(wall_now, decision.reason):
                    self._open_circuit()
        if outcome is None or decision.verdict is Verdict.RELAY_UNAVAILABLE:
            return
        if worker.circuit.succeeded():
            chunk.cleared_flags.append(queries.RELAY_CIRCUIT)
            chunk.notes.append((logging.INFO, "The relay takes mail again.", "circuit_closed"))
        if outcome.accepted or outcome.stage in (Stage.RCPT, Stage.DATA):
            too_many = worker.policy_watch.observe(
                refused_for_policy=decision.policy,
                recipient=delivery.email,
                reason=decision.reason,
            )
            if too_many:
                self._pause_for_policy()

    def _change(
        self,
        delivery: queries.ClaimedDelivery,
        status: DeliveryStatus,
        *,
        sent_at: datetime | None = None,
        due_at: datetime | None = None,
        error: Decision | None = None,
        last_error: str = "",
    ) -> None:
        chunk = self.chunk
        chunk.ids.append(delivery.id)
        chunk.changes.append(
            {
                "id": delivery.id,
                "status": status,
                "lease_until": None,
                "claimed_by": None,
                "sent_at": sent_at,
                "due_at": due_at or self.now,
                "last_error": error.reason if error else last_error,
                "last_attempt_at": self.worker.wall.now(),
            }
        )
        finished = status in (DeliveryStatus.SENT, DeliveryStatus.FAILED)
        if finished and delivery.kind == DeliveryKind.LESSON and delivery.sequence_id:
            chunk.moved_on.append((delivery.subscriber_id, delivery.sequence_id))

    def _release(self, deliveries: list[queries.ClaimedDelivery], reason: str | None) -> None:
        if deliveries:
            self.chunk.released.setdefault(reason, []).extend(d.id for d in deliveries)
            self.chunk.ids.extend(d.id for d in deliveries)

    def _pause_sending(self, reason: str) -> None:
        self.halted = True
        until = self.worker.wall.now() + timedelta(seconds=self.worker.retry_policy.first_delay_s)
        self.chunk.flags.append((queries.SENDING_PAUSED, until, reason))
        self.chunk.notes.append(
            (
                logging.ERROR,
                f"Sending paused: the relay refused us as a sender ({reason}). No subscriber "
                "was marked. Check [smtp] host, port, tls, username and "
                "NEWSLETTER_SMTP__PASSWORD, and the relay account; sending tries again by "
                f"itself at {until:%H:%M:%S} UTC, or at once with `newsletter sending resume`.",
                "sending_paused",
            )
        )

    def _pause_for_policy(self) -> None:
        self.halted = True
        summary = self.worker.policy_watch.summary()
        self.worker.policy_watch.reset()
        self.chunk.flags.append((queries.SENDING_PAUSED, None, summary))
        self.chunk.notes.append(
            (
                logging.ERROR,
                f"Sending paused: {summary}. Receiving servers are refusing our mail, which "
                "usually means the sending domain's SPF, DKIM or DMARC records are missing or "
                "wrong, or its reputation suffers. Fix that, then run "
                "`newsletter sending resume`.",
                "sending_paused",
            )
        )

    def _open_circuit(self) -> None:
        self.halted = True
        circuit = self.worker.circuit
        assert circuit.open_until is not None
        self.chunk.flags.append((queries.RELAY_CIRCUIT, circuit.open_until, circuit.reason))
        self.chunk.notes.append(
            (
                logging.WARNING,
                f"The relay is not taking mail ({circuit.reason}); no connection is tried "
                f"before {circuit.open_until:%H:%M:%S} UTC. Nothing is lost: due mail waits. "
                "If this lasts, check that the relay is up and reachable "
                "(`newsletter sending status`).",
                "circuit_open",
            )
        )

    async def _record(self, *, force: bool = False) -> None:
        """Commit the chunk once `record_every` messages are in it (or now, if `force`)."""
        if not force and self.chunk.sent < self.record_every:
            return
        async with self.recording:
            chunk, self.chunk = self.chunk, _Chunk()
            if not chunk:
                return
            # Shielded: a sender cut off by a forced shutdown must not take the commit of
            # outcomes the relay already accepted down with it.
            commit = asyncio.create_task(self._commit(chunk))
            self.commits.add(commit)
            commit.add_done_callback(self.commits.discard)
            await asyncio.shield(commit)

    async def _commit(self, chunk: _Chunk) -> None:
        delay_s = RECORD_RETRY_FIRST_S
        while True:
            try:
                async with self.worker.sessions.begin() as session:
                    await self._write(session, chunk)
                break
            except Exception as exc:
                if not database_unavailable(exc):
                    raise
                if self.worker.abandoning:
                    log_event(
                        log,
                        logging.ERROR,
                        f"Stopped before {len(chunk.ids)} outcomes could be recorded "
                        f"({_first_line(exc)}); those deliveries are sent again once their "
                        "lease ends.",
                        "outcomes_lost",
                    )
                    return
                self.report.counts["record_retries"] += 1
                if delay_s == RECORD_RETRY_FIRST_S:
                    log_event(
                        log,
                        logging.WARNING,
                        f"Cannot record {len(chunk.ids)} outcomes yet ({_first_line(exc)}); "
                        "keeping them and trying again.",
                        "record_retry",
                    )
                await asyncio.sleep(delay_s)
                delay_s = min(2 * delay_s, RECORD_RETRY_MAX_S)
        for delivery_id in chunk.ids:
            self.held.pop(delivery_id, None)
        for _ in range(chunk.sent):
            self.unrecorded.release()
        failpoints.hit("dispatch.after_record")
        for level, message, action in chunk.notes:
            log_event(log, level, message, action)

    async def _write(self, session: Any, chunk: _Chunk) -> None:
        now = self.now
        await queries.record_outcomes(session, chunk.changes, token=self.token)
        for reason, ids in chunk.released.items():
            await queries.release_claims(session, ids, token=self.token, reason=reason)
        await queries.lessons_sent(session, chunk.moved_on, now)
        for _, email, reason in chunk.bounced:
            await queries.suppress(session, email, "bounced", reason, self.worker.wall.now())
        await queries.mark_bounced(session, [s for s, _, _ in chunk.bounced], now)
        for name in chunk.cleared_flags:
            await queries.clear_flag(session, name)
        for name, until, reason in chunk.flags:
            await queries.set_flag(
                session, name, until=until, reason=reason, now=self.worker.wall.now()
            )


def _first_line(exc: BaseException) -> str:
    cause = getattr(exc, "orig", None) or exc
    return (str(cause).splitlines() or [type(cause).__name__])[0]
