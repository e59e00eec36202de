"""One worker's two passes over the database, which is the queue: plan what is due, then
dispatch it (scheduling/dispatcher.py). The scheduler job, `newsletter tick` and the tests
all drive these same two methods; nothing in memory decides who gets what. A worker also
carries what outlives a pass: the relay's circuit, the policy watch, the rate bucket, the
compiled emails, and whether it is stopping."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from jinja2 import Environment
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from newsletter.clock import Clock, MonotonicClock, SystemClock
from newsletter.config import Settings
from newsletter.content.identity import CourseIdentity
from newsletter.db import queries
from newsletter.db.models import EnrollmentStatus, SequenceStatus, SequenceVersion
from newsletter.db.session import database_unavailable, read_only
from newsletter.delivery.circuit import Circuit, CircuitPolicy, CircuitState
from newsletter.delivery.retry import PolicyWatch, RetryPolicy
from newsletter.delivery.throttle import TokenBucket
from newsletter.delivery.transport import Transport
from newsletter.inbound.verp import ReturnPath
from newsletter.render import make_message_id
from newsletter.scheduling.dispatcher import DispatchPass
from newsletter.scheduling.emails import CompiledEmails
from newsletter.scheduling.planner import (
    AwaitSend,
    Complete,
    PlannedLesson,
    Send,
    SendWindow,
    Wait,
    next_look,
    next_step,
    planned,
)
from newsletter.scheduling.wallclock import zone_named
from newsletter.subscribers import add_tags
from newsletter.tokens import LinkMaker
from newsletter.words import plural

log = logging.getLogger(__name__)


@dataclass
class PassReport:
    """What one pass did, by outcome; printed by `newsletter tick`, asserted by tests."""

    counts: Counter[str] = field(default_factory=Counter)

    #: Outcomes that mean a pass could not go on, and another one right away would not
    #: either: sending paused, the relay's circuit open, the database busy, a cap reached.
    HELD_BACK = ("paused", "circuit_open", "db_busy", "capped")

    def __getitem__(self, outcome: str) -> int:
        return self.counts[outcome]

    @property
    def held_back(self) -> bool:
        return any(self.counts[outcome] for outcome in self.HELD_BACK)

    def __str__(self) -> str:
        return (
            ", ".join(f"{n} {outcome}" for outcome, n in sorted(self.counts.items())) or "nothing"
        )


@dataclass(frozen=True)
class Stopped:
    """How a worker stopped."""

    clean: bool  #: every send under way finished within the grace period
    interrupted: int  #: sends cut off mid-exchange: each may arrive twice
    #: Messages sent whose outcome the database did not take in time: sent again after
    #: their lease.
    unrecorded: int

    @property
    def repeats_nothing(self) -> bool:
        return self.clean and not self.unrecorded

    def __str__(self) -> str:
        if self.repeats_nothing:
            return (
                "every send under way finished, and claimed mail not yet sent went back to "
                "the queue."
            )
        parts = []
        if self.interrupted:
            were = "was" if self.interrupted == 1 else "were"
            parts.append(f"{plural(self.interrupted, 'send')} {were} cut off mid-exchange")
        if self.unrecorded:
            parts.append(
                f"the database did not take the outcomes of "
                f"{plural(self.unrecorded, 'sent message')}"
            )
        return "; ".join(parts or ["the grace period ran out"]) + ": they may arrive twice."


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
        clock: Clock | None = None,
        wall: Clock | None = None,
        return_path: ReturnPath | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        #: For reads that must never wait for, nor hold up, a write (SQLite's WAL).
        self.readers = read_only(sessions)
        self.transport = transport
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.rng = rng or random.Random()
        #: The schedule's clock, which `--speed` fast-forwards: when lessons fall due.
        self.clock = clock or SystemClock()
        #: Real time, whatever the schedule does: leases, retry and backoff delays, the
        #: circuit, the hourly and daily caps, token issue times, Date headers.
        self.wall = wall or SystemClock()
        #: The per-second rate protects the relay's real load: elapsed time that neither a
        #: test's frozen clock nor the wall clock stepping back can stop.
        self.rate_clock: Clock = MonotonicClock()
        sending = settings.sending
        self.bucket = TokenBucket(sending.max_per_second)
        self.retry_policy = RetryPolicy(
            first_delay_s=sending.retry_first_delay_s,
            max_delay_s=sending.retry_max_delay_s,
            give_up_after_s=sending.give_up_after_s,
        )
        self.circuit = Circuit(
            CircuitPolicy(
                threshold=sending.circuit_failures,
                first_delay_s=sending.circuit_first_delay_s,
                max_delay_s=sending.circuit_max_delay_s,
            ),
            self.rng,
        )
        self.policy_watch = PolicyWatch(sending.policy_refusal_window, sending.policy_refusal_share)
        self.emails = CompiledEmails(settings, env, links, return_path)
        self.window = SendWindow(
            settings.schedule.send_window_start, settings.schedule.send_window_end
        )
        # Snapshots never change once queued, so caching them is safe in every process.
        self._plans: dict[int, list[PlannedLesson]] = {}
        self._identities: dict[int, CourseIdentity] = {}
        #: Set by stop(): no new claims, no new sends, no new planner passes.
        self.stopping = False
        #: Set when the grace period is over: sends in flight are cut off.
        self.abandoning = False
        self._passes: set[DispatchPass] = set()
        self._active = 0
        self._idle = asyncio.Event()
        self._idle.set()

    # --- planning ------------------------------------------------------------------------

    async def plan_due(self, now: datetime) -> PassReport:
        """Planner passes until nothing more is due now. Each pass is a short transaction
        (`schedule.planner_batch` enrollments), so the web's writes on SQLite never wait
        long for the lock, however many subscribers fall due at once."""
        total = PassReport()
        with self._busy():
            while not self.stopping:
                try:
                    report = await self.plan_once(now)
                except Exception as exc:
                    if not database_unavailable(exc):
                        raise
                    # Nothing was written (it rolled back): the next tick tries again.
                    total.counts["db_busy"] += 1
                    break
                total.counts.update(report.counts)
                if sum(report.counts.values()) < self.settings.schedule.planner_batch:
                    break
                await asyncio.sleep(0)  # let the web app and the dispatcher take a turn
        return total

    async def plan_once(self, now: datetime) -> PassReport:
        """Turn due enrollments into queued deliveries; cost follows the number due."""
        report = PassReport()
        async with self.sessions.begin() as session:
            due = await queries.due_enrollments(session, now, self.settings.schedule.planner_batch)
            handled = await queries.handled_lessons(session, due)
            new_deliveries, checks = [], []
            finished: list[tuple[int, int]] = []  #: (subscriber, course version)
            for enrollment in due:
                lessons = await self._lesson_plan(session, enrollment.version_id)
                done = handled[enrollment.subscriber_id, enrollment.sequence_id]
                step = next_step(
                    lessons,
                    done.keys,
                    last_sent_at=enrollment.last_sent_at,
                    now=now,
                    zone=self.zone(enrollment.timezone),
                    window=self.window,
                    welcome_at_once=self.settings.schedule.welcome_at_once,
                    in_flight=done.in_flight,
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
                        # Not at once when it is sent (queries.lessons_sent leaves a later
                        # look alone): when the lesson after it may first be due.
                        next_check = next_look(lessons, done.keys, step)
                        report.counts["queued"] += 1
                    case Wait(until):
                        next_check = until
                        report.counts["waiting"] += 1
                    case AwaitSend():
                        report.counts["in_flight"] += 1  # its outcome asks for a look
                    case Complete():
                        status = EnrollmentStatus.COMPLETED
                        finished.append((enrollment.subscriber_id, enrollment.version_id))
                        report.counts["completed"] += 1
                checks.append(
                    {"enrollment_id": enrollment.id, "next_check": next_check, "new_status": status}
                )
            await queries.create_lesson_deliveries(session, new_deliveries)
            await queries.set_next_checks(session, checks)
            if started := await self._what_follows(session, finished, now):
                report.counts["started_next"] += started
        return report

    async def _what_follows(
        self, session: AsyncSession, finished: list[tuple[int, int]], now: datetime
    ) -> int:
        """What each finished course's [on_finish] says: a tag, and the next course some
        days later (once: someone who was ever on it is not started again). Returns how
        many were started on a next course."""
        tags: list[tuple[int, str]] = []
        started = 0
        for subscriber_id, version_id in finished:
            flow = await self._identity(session, version_id)
            if flow.finish_tag:
                tags.append((subscriber_id, flow.finish_tag))
            if flow.next_course is None:
                continue
            following = await queries.sequence_by_slug(session, flow.next_course)
            if following is None or following.status != SequenceStatus.LIVE:
                continue  # not queued, or paused: nobody is started on it
            starts_at = now + timedelta(days=flow.next_after_days)
            started += await queries.enroll(session, subscriber_id, following.id, starts_at)
        await add_tags(session, tags, now)
        return started

    async def _identity(self, session: AsyncSession, version_id: int) -> CourseIdentity:
        if version_id not in self._identities:
            version = await session.get(SequenceVersion, version_id)
            self._identities[version_id] = CourseIdentity.from_json(
                version.identity if version is not None else None
            )
        return self._identities[version_id]

    async def _lesson_plan(self, session: AsyncSession, version_id: int) -> list[PlannedLesson]:
        if version_id not in self._plans:
            self._plans[version_id] = [
                planned(row) for row in await queries.version_lessons(session, version_id)
            ]
        return self._plans[version_id]

    def zone(self, name: str | None) -> ZoneInfo:
        return zone_named(name, self.settings.schedule.zone)

    # --- dispatching ---------------------------------------------------------------------

    async def dispatch_once(self, now: datetime) -> PassReport:
        """Send what is due at `now` (the schedule's instant) and what falls due while the
        pass runs, until nothing is left, within the rate limits; see dispatcher.py."""
        report = PassReport()
        if self.stopping:
            return report
        try:
            async with self.readers() as session:
                switches = await queries.flags(session)
        except Exception as exc:
            if not database_unavailable(exc):
                raise
            report.counts["db_busy"] += 1
            return report
        wall_now = self.wall.now()
        paused = switches.get(queries.SENDING_PAUSED)
        if paused is not None and (paused.until is None or paused.until > wall_now):
            report.counts["paused"] += 1
            return report
        circuit = switches.get(queries.RELAY_CIRCUIT)
        if circuit is not None and circuit.until is not None:
            self.circuit.hold_until(circuit.until, circuit.reason)  # another worker saw it fail
        else:
            self.circuit.probe_now(wall_now)  # cleared by `newsletter sending resume`
        if self.circuit.state(wall_now) is CircuitState.OPEN:
            report.counts["circuit_open"] += 1
            return report
        dispatch = DispatchPass(self, now, report)
        self._passes.add(dispatch)
        try:
            with self._busy():
                await dispatch.run()
        finally:
            self._passes.discard(dispatch)
        return report

    async def stop(self, grace_s: float, forced: asyncio.Event | None = None) -> Stopped:
        """Stop claiming and starting sends, and planning; give the sends in flight `grace_s`
        (or until `forced` is set) to finish, then cut them off. Every pass releases what it
        claimed and did not send, and records what it did."""
        self.stopping = True
        passes = list(self._passes)
        if self._active:
            waiters = {asyncio.ensure_future(self._idle.wait())}
            if forced is not None:
                waiters.add(asyncio.ensure_future(forced.wait()))
            await asyncio.wait(waiters, timeout=grace_s, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()
        clean = self._idle.is_set()
        if not clean:
            self.abandoning = True
            for dispatch in list(self._passes):
                dispatch.abandon()
            await self._idle.wait()
        return Stopped(
            clean=clean,
            interrupted=sum(p.report["interrupted"] for p in passes),
            unrecorded=sum(p.report["outcomes_lost"] for p in passes),
        )

    @contextlib.contextmanager
    def _busy(self) -> Iterator[None]:
        """Counts a pass under way, for stop() to wait for."""
        self._active += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._active -= 1
            if not self._active:
                self._idle.set()
