"""APScheduler wiring only: two periodic jobs drive the worker's passes.

The database is the queue, so there is no job per subscriber: a million subscribers cost
the scheduler exactly what ten do."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from newsletter.clock import Clock
from newsletter.logs import log_event
from newsletter.scheduling.worker import Worker

log = logging.getLogger(__name__)


#: Housekeeping (e.g. purging signups never confirmed) runs this often.
HOUSEKEEPING_INTERVAL = timedelta(hours=1)


def build_scheduler(
    worker: Worker,
    clock: Clock,
    tick_s: float,
    housekeeping: Callable[[datetime], Awaitable[object]] | None = None,
) -> AsyncIOScheduler:
    scheduler = AsyncIOScheduler(timezone=UTC)
    if housekeeping is not None:

        async def tidy() -> None:
            await housekeeping(clock.now())

        scheduler.add_job(
            tidy,
            IntervalTrigger(seconds=HOUSEKEEPING_INTERVAL.total_seconds()),
            id="housekeeping",
            name="housekeeping",
            max_instances=1,
            coalesce=True,
            next_run_time=datetime.now(UTC),
        )
    for name, run_pass in (("plan", worker.plan_due), ("dispatch", worker.dispatch_once)):

        async def job(run_pass=run_pass, name=name) -> None:  # type: ignore[no-untyped-def]
            report = await run_pass(clock.now())
            if report.counts:
                log_event(log, logging.INFO, f"{name} pass: {report}", f"{name}_pass")

        scheduler.add_job(
            job,
            IntervalTrigger(seconds=tick_s),
            id=name,
            name=f"{name} pass",
            # A slow pass is never run twice at once, and missed runs collapse into one.
            max_instances=1,
            coalesce=True,
            next_run_time=datetime.now(UTC),
        )
    return scheduler
