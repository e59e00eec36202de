"""A whole delivery stack on a real SQLite file and a real SMTP server, driven by a clock
the test moves: queue a course, add subscribers, run worker passes, read what arrived."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from newsletter.clock import Clock, FrozenClock
from newsletter.config import Settings
from newsletter.content.course import Course, load_course
from newsletter.courses import queue_course
from newsletter.db import queries
from newsletter.db.models import (
    Delivery,
    DeliveryStatus,
    Enrollment,
    EnrollmentStatus,
    Subscriber,
    SubscriberStatus,
)
from newsletter.db.session import create_engine, make_sessionmaker, upgrade_database
from newsletter.delivery.transport import SmtpTransport, Transport
from newsletter.inbound.verp import ReturnPath
from newsletter.render import make_environment
from newsletter.scheduling.worker import PassReport, Worker
from newsletter.subscribers import NewSubscriber, add_subscriber
from newsletter.tokens import LinkMaker, Tokens
from tests.smtpd import SmtpServer

#: Signs the links and return paths of every stack's mail.
SECRET = "integration-test-secret"
#: config.toml's database, which no test may write to.
SHIPPED_DATABASE_URL = "sqlite:///var/newsletter.db"


def settings_for(base: Settings, tmp_path: Path, **sending: object) -> Settings:
    """`base` (on the test's own database: tests/databases.py) with a var/ folder of the
    test's own, fast sending and a time zone."""
    assert base.database.url != SHIPPED_DATABASE_URL, "not on the test's own database"
    return base.model_copy(
        update={
            "paths": base.paths.model_copy(update={"var": tmp_path / "var"}),
            "sending": base.sending.model_copy(update={"max_per_second": 1000.0, **sending}),
            "schedule": base.schedule.model_copy(update={"timezone": "Europe/London"}),
        }
    )


@dataclass
class Stack:
    settings: Settings
    clock: FrozenClock
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    server: SmtpServer
    transport: Transport
    workers: list[Worker] = field(default_factory=list)

    @classmethod
    async def start(cls, settings: Settings, server: SmtpServer, start: datetime) -> Stack:
        upgrade_database(settings.database.url)
        engine = create_engine(
            settings.database.url,
            busy_timeout_ms=round(settings.database.busy_timeout_s * 1000),
        )
        transport = SmtpTransport(
            host=server.host,
            port=server.port,
            tls="none",
            username="",
            password="",
            connections=settings.sending.connections,
            timeout_s=5,
            data_timeout_s=5,
        )
        stack = cls(
            settings, FrozenClock(start), engine, make_sessionmaker(engine), server, transport
        )
        stack.workers.append(stack.new_worker(transport))
        return stack

    def new_worker(
        self,
        transport: Transport,
        name: str = "worker-1",
        *,
        clock: Clock | None = None,
        wall: Clock | None = None,
    ) -> Worker:
        links = LinkMaker(
            Tokens(SECRET), self.settings.site.base, self.settings.sender.unsubscribe_address
        )
        env = make_environment(self.settings.templates_dir)
        # The test's clock is both the schedule's and the wall clock: leases, retry delays
        # and the relay's circuit move only when the test moves it.
        return Worker(
            self.settings,
            self.sessions,
            transport,
            env,
            links,
            name=name,
            rng=random.Random(7),
            clock=clock or self.clock,
            wall=wall or self.clock,
            return_path=self.return_path,
        )

    @property
    def return_path(self) -> ReturnPath | None:
        address = self.settings.bounces.return_path
        return ReturnPath(address, SECRET) if address else None

    @property
    def worker(self) -> Worker:
        return self.workers[0]

    async def close(self) -> None:
        await self.transport.close()
        await self.engine.dispose()

    async def queue(self, course: Course, **options: bool) -> int:
        async with self.sessions.begin() as session:
            return (await queue_course(session, course, self.clock.now(), **options)).sequence_id

    async def subscribe(
        self, email: str, *, name: str = "", timezone: str | None = None, sequence_id: int
    ) -> int:
        async with self.sessions.begin() as session:
            subscriber, _ = await add_subscriber(
                session,
                NewSubscriber.parse(email, name, timezone),
                status=SubscriberStatus.CONFIRMED,
                consent={"form": "test"},
                now=self.clock.now(),
            )
            await queries.enroll(session, subscriber.id, sequence_id, self.clock.now())
            return subscriber.id

    async def run(self) -> PassReport:
        """Plan and dispatch at the current instant until nothing more is due now."""
        total = PassReport()
        while True:
            planned = await self.worker.plan_once(self.clock.now())
            sent = await self.worker.dispatch_once(self.clock.now())
            total.counts.update(planned.counts)
            total.counts.update(sent.counts)
            if sent.held_back or not (planned["queued"] or sum(sent.counts.values())):
                return total

    async def run_for(self, span: timedelta, step: timedelta = timedelta(hours=1)) -> PassReport:
        total = PassReport()
        end = self.clock.now() + span
        while self.clock.now() < end:
            total.counts.update((await self.run()).counts)
            self.clock.advance(step)
        return total

    async def run_through(self, span: timedelta) -> PassReport:
        """Passes at every instant something falls due within `span`, as the worker's
        scheduler wakes for them (an enrollment's next look, queued mail's due time), the
        clock jumping between them: weeks of a course in a few dozen passes."""
        total = PassReport()
        end = self.clock.now() + span
        while True:
            total.counts.update((await self.run()).counts)
            async with self.sessions() as session:
                look = await session.scalar(
                    select(func.min(Enrollment.next_check_at)).where(
                        Enrollment.status == EnrollmentStatus.ACTIVE
                    )
                )
                due = await session.scalar(
                    select(func.min(Delivery.due_at)).where(
                        Delivery.status == DeliveryStatus.QUEUED
                    )
                )
            following = min((moment for moment in (look, due) if moment is not None), default=end)
            following = max(following, self.clock.now() + timedelta(seconds=1))
            if following > end:
                self.clock.set(end)
                return total
            self.clock.set(following)

    async def deliveries(self, subscriber_id: int) -> list[Delivery]:
        async with self.sessions() as session:
            rows = await session.scalars(
                select(Delivery)
                .where(Delivery.subscriber_id == subscriber_id)
                .order_by(Delivery.id)
            )
            return list(rows)

    async def subscriber(self, subscriber_id: int) -> Subscriber:
        async with self.sessions() as session:
            subscriber = await session.get(Subscriber, subscriber_id)
            assert subscriber is not None
            return subscriber

    def received(self, recipient: str | None = None) -> list[EmailMessage]:
        messages = []
        for _, rcpt_tos, data in self.server.messages:
            if recipient is None or recipient in rcpt_tos:
                message = message_from_bytes(data, policy=policy.default)
                assert isinstance(message, EmailMessage)
                messages.append(message)
        return messages


@asynccontextmanager
async def started(settings: Settings, server: SmtpServer, start: datetime) -> AsyncIterator[Stack]:
    """A Stack for the length of a `with` block."""
    stack = await Stack.start(settings, server, start)
    try:
        yield stack
    finally:
        await stack.close()


def shipped_course(root: Path) -> Course:
    return load_course(root / "lessons" / "leg-weakness-after-microdiscectomy")


def run(coroutine):  # type: ignore[no-untyped-def]
    return asyncio.run(coroutine)
