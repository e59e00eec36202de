"""One dispatch pass: claim what is due, check each recipient right before their message goes,
send over every connection at once, record the outcomes in chunks. Claims are refilled as
sends complete, so the connections stay busy for as long as work is due.

What a pass guarantees (docs/delivery.md):
- At most `record_every + connections` messages are sent and not yet recorded at any
  moment: a permit is taken before each send and given back only once its outcome is
  committed. That bounds what a crash can send twice.
- A message is handed to the relay only if, at most SEND_CHECK_FRESH_S before (as the
  check's query began), its row was still held by this claim (the fence), with at least
  half its lease left, its recipient could still receive it (not unsubscribed, erased or
  suppressed), and its course was running for them (not paused).
- Leases are renewed while rows are held (a heartbeat), so a long batch is never taken over.
- Outcomes that cannot be committed (the database busy or gone) are kept and tried again,
  and nothing new is claimed meanwhile; a busy database never ends a pass with accepted
  messages unrecorded.
- The switches are read again at every claim: a pause, or a circuit another worker
  opened, stops a running pass too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import deque
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING

from newsletter import failpoints
from newsletter.db import queries
from newsletter.db.models import (
    DeliveryKind,
    DeliveryStatus,
    SystemFlag,
)
from newsletter.db.session import database_unavailable, statement_reader
from newsletter.delivery.circuit import CircuitState
from newsletter.delivery.retry import Decision, Verdict, decide
from newsletter.delivery.throttle import capped
from newsletter.delivery.transport import SendReport, Stage
from newsletter.logs import log_event
from newsletter.scheduling import cap
from newsletter.scheduling.checks import Check, check_before_send
from newsletter.scheduling.outcomes import Outcomes
from newsletter.words import plural

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

    from newsletter.scheduling.worker import PassReport, Worker

log = logging.getLogger(__name__)

#: A recipient check is trusted for this long (real time) before the message is sent; a
#: check is one query for up to `connections` messages, on a connection of its own.
SEND_CHECK_FRESH_S = 0.1
#: A send starts only while its row's lease has at least this share of its length left.
LEASE_MARGIN = 0.5
#: Leases are renewed this often, as a share of their length: two beats may be missed
#: before a row nears LEASE_MARGIN.
HEARTBEAT_SHARE = 1 / 6
#: Backoff of a commit that found the database busy or gone.
RECORD_RETRY_FIRST_S = 0.05
RECORD_RETRY_MAX_S = 2.0


class DispatchPass:
    def __init__(self, worker: Worker, now: datetime, report: PassReport) -> None:
        self.worker = worker
        self.now = now  #: the schedule's instant when the pass began
        self.report = report
        sending = worker.settings.sending
        self.batch_size = sending.batch_size
        self.record_every = sending.record_every
        self.lease = timedelta(seconds=sending.lease_s)
        #: The relay's circuit is half-open: this pass is one probe message on one sender.
        self.probe = worker.circuit.state(worker.wall.now()) is CircuitState.HALF_OPEN
        self.connections = 1 if self.probe else sending.connections
        #: The fence: outcomes are written only over rows still claimed under this token.
        self.token = f"{worker.name}/{secrets.token_hex(4)}"
        self.pending: deque[queries.ClaimedDelivery] = deque()
        self.checked: deque[tuple[float, queries.ClaimedDelivery]] = deque()
        #: Claimed and not yet recorded; the heartbeat renews their leases.
        self.held: dict[int, queries.ClaimedDelivery] = {}
        self.claiming: asyncio.Task[None] | None = None
        self.commits: set[asyncio.Task[None]] = set()
        self.exhausted = False  #: nothing more to claim in this pass
        self.halted = False  #: start no further sends (paused, relay refusing, circuit open)
        self.committing_fails = False  #: the database would not take the last commit yet
        self.outcomes = Outcomes()
        self.unrecorded = asyncio.Semaphore(sending.record_every + self.connections)
        self.gate = asyncio.Lock()
        self.recording = asyncio.Lock()
        self.senders: list[asyncio.Task[None]] = []
        #: What the pass opens as it goes and closes at its end.
        self.closing = contextlib.AsyncExitStack()
        self.check_connection: AsyncConnection | None = None  #: opened by the first check
        #: Messages this pass let through, by subscriber and their local day: counted
        #: towards the daily cap with those recorded as sent.
        self.going_today: dict[tuple[int, date], set[int]] = {}

    # --- the pass ------------------------------------------------------------------------

    async def run(self) -> None:
        async with self.closing:
            await self._run()

    async def _run(self) -> None:
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
            await self._wind_down()
        finally:
            heartbeat.cancel()  # only once everything held is released or recorded
        for result in results:
            if isinstance(result, Exception):
                raise result

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
        self.outcomes.release(unsent)
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
        except Exception as exc:  # an address no header can carry, a template gone wrong
            reason = f"cannot build the email: {type(exc).__name__}: {exc}"[:500]
            self._settle(delivery, Decision(Verdict.FAILED, None, reason))
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
            self.outcomes.release([delivery], "interrupted by a forced stop; may arrive twice")
            self.report.counts["interrupted"] += 1
            raise
        if outcome.accepted:
            failpoints.hit("dispatch.after_accept")
        self.outcomes.sent += 1
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
            while True:
                if self.halted or self.worker.stopping:
                    return None
                if self.worker.circuit.state(self.worker.wall.now()) is CircuitState.OPEN:
                    return None  # opened by a failure in this pass, which halts it too
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
        checked_at = time.monotonic()  # before the query: a slow answer is no fresher
        try:
            if self.check_connection is None:
                self.check_connection = await self.closing.enter_async_context(
                    statement_reader(self.worker.sessions)
                )
            rows = await queries.held_deliveries(self.check_connection, [d.id for d in group])
            sends = await self._counted_sends(group, rows)
        except BaseException as exc:
            self.pending.extendleft(reversed(group))  # released with the rest at wind-down
            if not (isinstance(exc, Exception) and database_unavailable(exc)):
                raise
            self._halt_for_database(exc)
            return
        wall_now = self.worker.wall.now()
        for delivery in group:
            row = rows.get(delivery.id)
            check = check_before_send(
                row,
                delivery.kind,
                token=self.token,
                wall_now=wall_now,
                min_lease=self.lease * LEASE_MARGIN,
            )
            capped_until = None
            if check is Check.SEND and row is not None and sends is not None:
                capped_until = self._over_daily_cap(delivery, row, sends)
            if capped_until is not None:
                self.report.counts["per_person_cap"] += 1
                self.outcomes.release([delivery], "waits: the daily cap per person", capped_until)
                continue
            if check is Check.SEND:
                self.checked.append((checked_at, delivery))
                continue
            self.report.counts[check.value] += 1
            match check:
                case Check.LEFT | Check.WITHDRAWN:
                    reason = (
                        "not sent: the recipient left or is suppressed"
                        if check is Check.LEFT
                        else "not sent: the issue was cancelled"
                    )
                    self.outcomes.change(
                        delivery, DeliveryStatus.CANCELLED, wall_now=wall_now, last_error=reason
                    )
                case Check.PAUSED:
                    self.outcomes.drop(delivery)  # planned afresh when the course resumes
                case Check.HELD | Check.LEASE_SHORT:
                    self.outcomes.release([delivery])
                case Check.GONE | Check.LOST:
                    self.held.pop(delivery.id, None)  # nothing of ours to write
            if check in (Check.LOST, Check.LEASE_SHORT):
                why = (
                    "another worker holds it now"
                    if check is Check.LOST
                    else "its lease was running out (is the database reachable?)"
                )
                log_event(
                    log, logging.WARNING, f"Delivery {delivery.id} was not sent: {why}.", "claim"
                )

    async def _counted_sends(
        self, group: list[queries.ClaimedDelivery], rows: dict[int, queries.HeldDelivery]
    ) -> dict[int, list[tuple[int, datetime]]] | None:
        """What counts towards the daily cap of the group's recipients; None when no cap
        applies to anything compiled."""
        if not self.worker.emails.caps_in_use or self.check_connection is None:
            return None
        people = {d.subscriber_id for d in group if d.kind != DeliveryKind.CONFIRMATION}
        if not people:
            return {}
        # Two days back covers the local day of every time zone.
        since = self.now - timedelta(days=2)
        return await queries.counted_sends(self.check_connection, people, since)

    def _over_daily_cap(
        self,
        delivery: queries.ClaimedDelivery,
        row: queries.HeldDelivery,
        sends: dict[int, list[tuple[int, datetime]]],
    ) -> datetime | None:
        """When this message may go instead, if it would pass the subscriber's daily cap:
        the send window's start on their next day. None: it goes now (and counts)."""
        if delivery.kind == DeliveryKind.CONFIRMATION:
            return None  # never held back, never counted
        zone = self.worker.zone(row.subscriber_timezone)
        day = cap.local_day(self.now, zone)
        going = self.going_today.setdefault((delivery.subscriber_id, day), set())
        # A message of no cap still counts towards the others' (as recorded ones do).
        if limit := self.worker.emails.daily_cap(delivery):
            counted = cap.sent_on(day, zone, sends.get(delivery.subscriber_id, []))
            # Itself excluded: a check gone stale before its send is made again.
            if cap.holds_back(len((counted | going) - {delivery.id}), limit):
                return cap.next_day_at(self.now, zone, self.worker.window.start)
        going.add(delivery.id)
        return None

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
        if self.claiming is not None or self.exhausted or self.halted or self.worker.stopping:
            return
        if self.committing_fails:
            return  # what was sent must be recorded before anything new is claimed
        if len(self.pending) + len(self.checked) >= max(2 * self.connections, self.batch_size // 2):
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
                if database_unavailable(exc):
                    self.outcomes.release(claimed)  # their emails could not be read: later
                raise
            for delivery in claimed:
                if delivery.id in problems:
                    self._settle(delivery, Decision(Verdict.FAILED, None, problems[delivery.id]))
                elif delivery.kind == DeliveryKind.CONFIRMATION:
                    self.pending.appendleft(delivery)  # ahead of the lessons already waiting
                else:
                    self.pending.append(delivery)
            if self.probe:
                self.exhausted = True  # one message; the rest waits for the circuit to close
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
            if held_back := self._held_back(await queries.flags(session), wall_now):
                self.halted = True
                self.report.counts[held_back] += 1
                return []
            return await queries.claim_due_deliveries(
                session,
                now=max(self.now, self.worker.clock.now()),
                wall_now=wall_now,
                limit=limit,
                lease_until=wall_now + self.lease,
                token=self.token,
            )

    def _held_back(self, switches: dict[str, SystemFlag], wall_now: datetime) -> str:
        """Why no more may be claimed now, as a report key; "" when it may. Read at every
        claim, so that a pause, or a circuit another worker opened, stops this pass too."""
        paused = switches.get(queries.SENDING_PAUSED)
        if paused is not None and (paused.until is None or paused.until > wall_now):
            return "paused"
        circuit = switches.get(queries.RELAY_CIRCUIT)
        if circuit is not None and circuit.until is not None and not self.probe:
            self.worker.circuit.hold_until(circuit.until, circuit.reason)
        if self.worker.circuit.state(wall_now) is CircuitState.OPEN:
            return "circuit_open"
        return ""

    async def _allowance(self) -> int:
        """How many to claim: a batch, within the hourly and daily caps; one for a probe."""
        if self.probe:
            return 1
        sending = self.worker.settings.sending
        if not (sending.max_per_hour or sending.max_per_day):
            return self.batch_size
        wall_now = self.worker.wall.now()
        async with self.worker.readers() as session:
            hour = await queries.sent_since(session, wall_now - timedelta(hours=1))
            day = await queries.sent_since(session, wall_now - timedelta(days=1))
        limit = capped(self.batch_size, hour, day, sending.max_per_hour, sending.max_per_day)
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
                # Busy, gone, or worse: say so and beat again; a send only starts while
                # enough of its lease is left, so a missed beat repeats nothing.
                log_event(
                    log,
                    logging.WARNING if database_unavailable(exc) else logging.ERROR,
                    "Could not renew the leases of "
                    f"{plural(len(self.held), 'delivery', 'deliveries')} "
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
        """Turn a decision into outcomes to record, and tell the circuit and the policy
        watch what the relay did."""
        worker, outcomes = self.worker, self.outcomes
        wall_now = worker.wall.now()
        self.report.counts[decision.verdict.value] += 1
        reason = decision.reason
        match decision.verdict:
            case Verdict.SENT:
                outcomes.change(delivery, DeliveryStatus.SENT, wall_now=wall_now, sent_at=wall_now)
            case Verdict.RETRY:
                assert decision.retry_at is not None
                due_at = worker.clock.after(decision.retry_at - wall_now)
                outcomes.change(
                    delivery,
                    DeliveryStatus.QUEUED,
                    wall_now=wall_now,
                    due_at=due_at,
                    last_error=reason,
                )
            case Verdict.BOUNCED:
                outcomes.change(
                    delivery, DeliveryStatus.FAILED, wall_now=wall_now, last_error=reason
                )
                outcomes.bounced.append((delivery.subscriber_id, delivery.email, reason))
            case Verdict.FAILED:
                outcomes.change(
                    delivery, DeliveryStatus.FAILED, wall_now=wall_now, last_error=reason
                )
                if decision.too_big:
                    outcomes.too_big(worker.emails.describe(delivery), delivery.email, reason)
            case Verdict.SENDER_BLOCKED:
                outcomes.release([delivery], decision.reason)
                self._pause_sending(decision.reason)
            case Verdict.RELAY_UNAVAILABLE:
                # Due again no sooner than the circuit's first wait: a refusal that comes
                # back for this one message must not make it the next probe at once.
                first_wait = timedelta(seconds=worker.circuit.policy.first_delay_s)
                outcomes.release([delivery], decision.reason, worker.clock.after(first_wait))
                if worker.circuit.failed(wall_now, decision.reason):
                    self._open_circuit()
        if outcome is None or decision.verdict in (
            Verdict.RELAY_UNAVAILABLE,
            Verdict.SENDER_BLOCKED,
        ):
            return
        if worker.circuit.succeeded():
            outcomes.close_circuit()
        if outcome.accepted or outcome.stage in (Stage.RCPT, Stage.DATA):
            too_many = worker.policy_watch.observe(
                refused_for_policy=decision.policy,
                recipient=delivery.email,
                reason=decision.reason,
            )
            if too_many:
                self._pause_for_policy()

    def _pause_sending(self, reason: str) -> None:
        self.halted = True
        until = self.worker.wall.now() + timedelta(seconds=self.worker.retry_policy.first_delay_s)
        self.outcomes.pause_sending(until, reason)

    def _pause_for_policy(self) -> None:
        self.halted = True
        self.outcomes.pause_for_policy(self.worker.policy_watch.summary())
        self.worker.policy_watch.reset()

    def _open_circuit(self) -> None:
        self.halted = True
        circuit = self.worker.circuit
        assert circuit.open_until is not None
        self.outcomes.open_circuit(circuit.open_until, circuit.reason)

    async def _record(self, *, force: bool = False) -> None:
        """Commit the outcomes once `record_every` messages are in them (or now, if `force`)."""
        if not force and self.outcomes.sent < self.record_every:
            return
        async with self.recording:
            outcomes, self.outcomes = self.outcomes, Outcomes()
            if not outcomes:
                return
            # Shielded: a sender cut off by a forced stop must not take the commit of
            # outcomes the relay already accepted down with it.
            commit = asyncio.create_task(self._commit(outcomes))
            self.commits.add(commit)
            commit.add_done_callback(self.commits.discard)
            await asyncio.shield(commit)

    async def _commit(self, outcomes: Outcomes) -> None:
        delay_s = RECORD_RETRY_FIRST_S
        try:
            while not await self._try_commit(outcomes, delay_s == RECORD_RETRY_FIRST_S):
                self.committing_fails = True
                if self.worker.abandoning:
                    self.report.counts["outcomes_lost"] += outcomes.sent
                    return
                await asyncio.sleep(delay_s)
                delay_s = min(2 * delay_s, RECORD_RETRY_MAX_S)
        except BaseException:
            # Not a busy database but a bug: halt, and give the permits back so that the
            # other senders are not left waiting for a commit that will not come.
            self.halted = True
            for _ in range(outcomes.sent):
                self.unrecorded.release()
            raise
        self.committing_fails = False
        for delivery_id in outcomes.ids:
            self.held.pop(delivery_id, None)
        for _ in range(outcomes.sent):
            self.unrecorded.release()
        failpoints.hit("dispatch.after_record")
        for level, message, action in outcomes.notes:
            log_event(log, level, message, action)

    async def _try_commit(self, outcomes: Outcomes, first_try: bool) -> bool:
        try:
            async with self.worker.sessions.begin() as session:
                await outcomes.write(
                    session,
                    token=self.token,
                    now=max(self.now, self.worker.clock.now()),
                    wall_now=self.worker.wall.now(),
                )
        except Exception as exc:
            if not database_unavailable(exc):
                raise
            self.report.counts["record_retries"] += 1
            if first_try:
                log_event(
                    log,
                    logging.WARNING,
                    f"Cannot record {plural(len(outcomes.ids), 'outcome')} yet "
                    f"({_first_line(exc)}); keeping them and trying again.",
                    "record_retry",
                )
            return False
        return True


def _first_line(exc: BaseException) -> str:
    cause = getattr(exc, "orig", None) or exc
    return (str(cause).splitlines() or [type(cause).__name__])[0]
