"""Delivery throughput: due deliveries taken to 'sent' by the real dispatcher, per second.

    .venv/bin/python bench/delivery.py [--subscribers 20000] [--batch-size 500] [--record-every 50]
        [--connections 8] [--rounds 3] [--cpu 0] [--sink-cpu 1] [--profile FILE]

Needs Postfix's smtp-sink (the script starts and stops it on a free 127.0.0.1 port):

    sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y postfix

Each round, set-up (not timed): a fresh SQLite file in a temporary folder, migrated; the
shipped course queued; N confirmed subscribers and their enrollments bulk-inserted with
SQLAlchemy Core executemany; planner passes (Worker.plan_once) until every enrollment has
its welcome lesson queued and due.

Timed: Worker.dispatch_once in a loop until a pass does nothing (claim, render, send over
`--connections` pooled SMTP sessions, record), built as the `newsletter` service builds it
(build_transport, build_worker) from the shipped config.toml, with no rate limit.

Reference, in the same run: a bare aiosmtplib loop over the same number of reused
connections to a sink of its own, sending N ready-made copies of one rendered lesson 1
message with sendmail(sender, [rcpt], data). It runs before every round and once after the
last, so the two kinds of run interleave. The machine is shared and noisy; noise only ever
adds time, so the best run of each kind is compared: ratio = best ours / best bare (the
ceiling). Target: at least 0.60. CPU time per message (all threads of this process) is
shown too; it is far less sensitive to other tenants than the wall clock.

After every round each delivery must be 'sent' exactly once (one row per subscriber, one
attempt) and each sink must have received exactly N messages, or the script fails.

The Python process is pinned to one core (`--cpu`, as `taskset -c 0` would) for both kinds
of run, the target being stated for one core; smtp-sink runs on another core (`--sink-cpu`)
when there is one, so that it takes no time from the client.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import inspect
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# This checkout's package, not whichever one the virtualenv's editable install points at
# (in a git worktree that is another checkout).
sys.path.insert(0, str(ROOT))

from population import insert_enrolled_readers  # noqa: E402
from smtpsink import Sink, check_sink, find_sink  # noqa: E402

COURSE = "leg-weakness-after-microdiscectomy"
TARGET = 0.60
#: The dispatcher's steps timed separately (queries.claim_due_deliveries, the recipient
#: check queries.held_deliveries, CompiledEmails.envelope, DispatchPass._try_commit); the
#: rest of dispatch_once, SMTP included, is "rest". Sends overlap with the other steps, so
#: a step's wall time may include SMTP work of other tasks.
STEPS = ("claim query", "check query", "render (envelope)", "record (commit)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=500, help="sending.batch_size")
    parser.add_argument("--record-every", type=int, default=50, help="sending.record_every")
    parser.add_argument("--connections", type=int, default=8, help="sending.connections")
    parser.add_argument("--rounds", type=int, default=3, help="dispatcher runs (fresh database)")
    parser.add_argument("--cpu", type=int, default=0, help="core for this process; -1: no pin")
    parser.add_argument("--sink-cpu", type=int, default=1, help="core for smtp-sink; -1: no pin")
    parser.add_argument(
        "--profile",
        type=Path,
        help="add one untimed round whose dispatch loop is profiled (cProfile) into FILE",
    )
    args = parser.parse_args()

    sink = find_sink()
    cores = os.sched_getaffinity(0)
    # Pinned before any thread exists (aiosqlite's), so that every thread inherits the core.
    cpu = None
    if args.cpu >= 0 and args.cpu in cores:
        os.sched_setaffinity(0, {args.cpu})
        cpu = args.cpu
    sink_cpu = args.sink_cpu if args.sink_cpu in cores and args.sink_cpu != cpu else None
    asyncio.run(Bench(args, sink, cpu, sink_cpu).run())


# --- measurements ----------------------------------------------------------------------------


@dataclass
class Timing:
    label: str
    messages: int
    wall_s: float
    cpu_s: float  #: user + system time of this process, all threads

    @property
    def per_second(self) -> float:
        return self.messages / self.wall_s

    @property
    def cpu_us(self) -> float:
        return self.cpu_s / self.messages * 1e6


@dataclass
class Phases:
    """Wall and CPU seconds spent inside some of the dispatcher's steps, summed over passes."""

    wall: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    cpu: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    def timed(self, name: str, step: Callable[..., Any]) -> Callable[..., Any]:
        """`step` (a coroutine function or a plain one) with its time added to `name`."""
        self.wall[name] += 0.0

        def add(wall: float, cpu: float) -> None:
            self.wall[name] += time.perf_counter() - wall
            self.cpu[name] += time.process_time() - cpu

        if inspect.iscoroutinefunction(step):

            async def wrapper(*args: Any, **kwargs: Any) -> Any:
                wall, cpu = time.perf_counter(), time.process_time()
                try:
                    return await step(*args, **kwargs)
                finally:
                    add(wall, cpu)

            return wrapper

        def plain(*args: Any, **kwargs: Any) -> Any:
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                return step(*args, **kwargs)
            finally:
                add(wall, cpu)

        return plain

    def instrument(self, owner: Any, attribute: str, name: str) -> Callable[[], None]:
        """Time `owner.attribute` if it exists (the code under test may change); returns
        the undo."""
        original = getattr(owner, attribute, None)
        if original is None or not callable(original):
            return lambda: None
        setattr(owner, attribute, self.timed(name, original))
        if inspect.ismodule(owner) or inspect.isclass(owner):
            return lambda: setattr(owner, attribute, original)
        return lambda: delattr(owner, attribute)  # the instance attribute shadowed the method


async def bare_aiosmtplib(
    port: int, sender: str, data: bytes, count: int, connections: int, label: str
) -> Timing:
    """The ceiling: reused connections, ready-made bytes, no database, no rendering."""
    from aiosmtplib import SMTP

    recipients = iter(range(1, count + 1))

    async def connection() -> int:
        client = SMTP(hostname="127.0.0.1", port=port, timeout=60)
        await client.connect()
        sent = 0
        for index in recipients:  # shared: each connection takes the next recipient
            refused, _ = await client.sendmail(sender, [f"reader{index}@example.com"], data)
            if refused:
                sys.exit(f"FAILED: bare loop: the sink refused {refused}")
            sent += 1
        await client.quit()
        return sent

    cpu, started = time.process_time(), time.perf_counter()
    sent = sum(await asyncio.gather(*(connection() for _ in range(connections))))
    return Timing(label, sent, time.perf_counter() - started, time.process_time() - cpu)


# --- set-up and checks (bench/worker.py uses them too) ---------------------------------


def sample_message(base: Any, course: Any, count: int) -> bytes:
    """One rendered lesson 1 message, as the dispatcher renders it (real signed links)."""
    from newsletter.render import LessonEmail, Recipient, make_environment, make_message_id
    from newsletter.tokens import LinkMaker, Tokens

    sender = base.sender
    links = LinkMaker(Tokens("bench-secret" * 4), base.site.base, sender.unsubscribe_address)
    email = LessonEmail(make_environment(base.templates_dir), sender, course, course.lessons[0])
    now = datetime.now(UTC)
    index = count // 2
    return email.render(
        Recipient(f"reader{index}@example.com", f"Reader{index}"),
        links.personal_links(index, now),
        message_id=make_message_id(sender.domain),
        date=now,
    )


#: What bench_settings() changes in the shipped config.toml besides the database, the var
#: folder, the relay and the sending settings given: (section, key, value).
NO_LIMITS = (
    ("smtp", "tls", "none"),
    ("smtp", "username", ""),
    # base_url stays http://localhost:8000; smtp-sink on 127.0.0.1 is a local test relay.
    ("smtp", "allow_http_links", True),
    ("sending", "max_per_second", 1e9),  # the token bucket never holds anything back
    ("sending", "max_per_hour", 0),
    ("sending", "max_per_day", 0),
    ("schedule", "timezone", "Europe/London"),
)


def bench_settings(
    base: Any, tmp: Path, port: int, *, connections: int, batch_size: int, record_every: int
) -> Any:
    """As tests/integration/harness.py's settings_for(): the shipped settings, on a database
    and var/ folder of our own; here with the sink as relay and no rate limit."""
    changes: dict[str, dict[str, Any]] = {
        "database": {"url": f"sqlite:///{tmp / 'newsletter.db'}"},
        "paths": {"var": tmp / "var"},
        "smtp": {"host": "127.0.0.1", "port": port},
        "sending": {
            "connections": connections,
            "batch_size": batch_size,
            "record_every": record_every,
        },
        "schedule": {},
    }
    for section, key, value in NO_LIMITS:
        changes[section][key] = value
    return base.model_copy(
        update={
            section: getattr(base, section).model_copy(update=update)
            for section, update in changes.items()
        }
    )


async def populate(base: Any, course: Any, url: str, count: int) -> None:
    """Migrate, queue the shipped course, bulk-insert subscribers and enrollments."""
    from newsletter.courses import queue_course
    from newsletter.db.session import create_engine, make_sessionmaker, upgrade_database

    upgrade_database(url)
    enrolled_at = datetime.now(UTC) - timedelta(minutes=1)
    engine = create_engine(url)
    try:
        async with make_sessionmaker(engine).begin() as session:
            sequence_id = (await queue_course(session, course, enrolled_at)).sequence_id
    finally:
        await engine.dispose()
    insert_enrolled_readers(url, sequence_id, count, enrolled_at)


async def queue_welcome(worker: Any, count: int) -> None:
    """Planner passes until every enrollment has its welcome lesson queued and due."""
    queued = 0
    while planned := (await worker.plan_once(datetime.now(UTC)))["queued"]:
        queued += planned
    if queued != count:
        sys.exit(f"FAILED: set-up queued {queued} welcome deliveries, expected {count}")


async def delivery_problems(engine: Any, count: int) -> list[str]:
    """What is wrong unless every delivery is 'sent', exactly once: one row per subscriber,
    one attempt each."""
    from sqlalchemy import func, select

    from newsletter.db.models import Delivery

    async with engine.connect() as connection:
        by_status = dict(
            (
                await connection.execute(
                    select(Delivery.status, func.count()).group_by(Delivery.status)
                )
            ).all()
        )
        distinct = await connection.scalar(
            select(func.count(func.distinct(Delivery.subscriber_id))).where(
                Delivery.status == "sent"
            )
        )
        attempts = dict(
            (
                await connection.execute(
                    select(Delivery.attempts, func.count()).group_by(Delivery.attempts)
                )
            ).all()
        )
    problems = []
    if by_status != {"sent": count}:
        problems.append(f"deliveries by status {by_status}, expected {{'sent': {count}}}")
    if distinct != count:
        problems.append(f"{distinct} distinct subscribers sent to, expected {count}")
    if attempts != {1: count}:
        problems.append(f"deliveries by attempts {attempts}, expected {{1: {count}}}")
    return problems


class Bench:
    def __init__(
        self, args: argparse.Namespace, sink: str, cpu: int | None, sink_cpu: int | None
    ) -> None:
        from newsletter.config import load_settings
        from newsletter.content.course import load_course

        self.args, self.sink_binary, self.cpu, self.sink_cpu = args, sink, cpu, sink_cpu
        self.count = args.subscribers
        self.base = load_settings(ROOT / "config.toml")
        self.course = load_course(self.base.lessons_dir / COURSE)
        self.sample = b""
        self.setup_s: list[float] = []
        self.journal = ""

    def sink(self) -> Sink:
        return Sink(self.sink_binary, self.sink_cpu)

    async def run(self) -> None:
        args = self.args
        bare: list[Timing] = []
        ours: list[Timing] = []
        phases = Phases()
        for number in range(1, args.rounds + 1):
            bare.append(await self.bare(f"bare aiosmtplib {len(bare) + 1}"))
            ours.append(await self.dispatcher_round(f"dispatcher {number}", phases))
        bare.append(await self.bare(f"bare aiosmtplib {len(bare) + 1}"))
        if args.profile:
            await self.dispatcher_round("profiled (not counted)", Phases(), args.profile)
        self.report(bare, ours, phases)
        if args.profile:
            print(f"\ncProfile of one more, uncounted round's dispatch loop, in {args.profile}")
            print("(main thread only: aiosqlite's thread, where SQLite itself runs, is not seen)")
            pstats.Stats(str(args.profile)).sort_stats("tottime").print_stats(30)

    async def bare(self, label: str) -> Timing:
        if not self.sample:
            self.sample = sample_message(self.base, self.course, self.count)
        with self.sink() as sink:
            timing = await bare_aiosmtplib(
                sink.port,
                self.base.sender.address,
                self.sample,
                self.count,
                self.args.connections,
                label,
            )
        check_sink(sink, self.count, label)
        return timing

    async def dispatcher_round(
        self, label: str, phases: Phases, profile: Path | None = None
    ) -> Timing:
        from sqlalchemy import text

        from newsletter.cli.running import build_transport, build_worker
        from newsletter.clock import SystemClock
        from newsletter.db import queries
        from newsletter.db.session import create_engine, make_sessionmaker
        from newsletter.scheduling.dispatcher import DispatchPass

        count = self.count
        with tempfile.TemporaryDirectory(prefix="bench-delivery-") as folder, self.sink() as sink:
            settings = bench_settings(
                self.base,
                Path(folder),
                sink.port,
                connections=self.args.connections,
                batch_size=self.args.batch_size,
                record_every=self.args.record_every,
            )
            setup_started = time.perf_counter()
            engine = create_engine(settings.database.url)
            sessions = make_sessionmaker(engine)
            await populate(self.base, self.course, settings.database.url, count)
            transport = build_transport(settings)
            worker = build_worker(settings, sessions, transport, SystemClock())
            await queue_welcome(worker, count)
            self.setup_s.append(time.perf_counter() - setup_started)

            # Timers around the dispatcher's steps (per claim, per check of up to
            # `connections` messages, per message, per commit), set from outside and undone
            # afterwards: nothing under newsletter/ changes.
            undo = [
                phases.instrument(queries, "claim_due_deliveries", STEPS[0]),
                phases.instrument(queries, "held_deliveries", STEPS[1]),
                phases.instrument(worker.emails, "envelope", STEPS[2]),
                phases.instrument(DispatchPass, "_try_commit", STEPS[3]),
            ]

            profiler = cProfile.Profile() if profile else None
            outcomes: Counter[str] = Counter()
            passes = 0
            cpu, started = time.process_time(), time.perf_counter()
            if profiler:
                profiler.enable()
            try:
                while True:
                    report = await worker.dispatch_once(datetime.now(UTC))
                    passes += 1
                    outcomes.update(report.counts)
                    if not sum(report.counts.values()) or report["paused"]:
                        break
            finally:
                if profiler:
                    profiler.disable()
                for restore in undo:
                    restore()
            timing = Timing(
                f"{label} ({passes} passes)",
                outcomes["sent"],
                time.perf_counter() - started,
                time.process_time() - cpu,
            )
            phases.wall["total"] += timing.wall_s
            phases.cpu["total"] += timing.cpu_s
            await transport.close()
            await self.verify(engine, outcomes, label)
            async with engine.connect() as connection:
                self.journal = str(await connection.scalar(text("PRAGMA journal_mode")))
            await engine.dispose()
        check_sink(sink, count, label)
        if profiler and profile:
            profiler.dump_stats(profile)
        return timing

    async def verify(self, engine: Any, outcomes: Counter[str], label: str) -> None:
        problems = await delivery_problems(engine, self.count)
        counted = dict(+outcomes)  # outcomes that happened (a pass reports "released": 0)
        if counted != {"sent": self.count}:
            problems.append(f"dispatcher outcomes {counted}, expected {{'sent': {self.count}}}")
        if problems:
            sys.exit(f"FAILED: {label}: " + "; ".join(problems))

    def report(self, bare: list[Timing], ours: list[Timing], phases: Phases) -> None:
        args, count = self.args, self.count
        pinned = f"core {self.cpu} (as taskset -c {self.cpu})" if self.cpu is not None else "no pin"
        sink_where = f"core {self.sink_cpu}" if self.sink_cpu is not None else "no pin"
        print(
            f"delivery benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
            f"Python {sys.version.split()[0]}, {os.cpu_count()} cores"
        )
        print(f"this process (both kinds of run): {pinned}; smtp-sink: {sink_where}")
        print(
            f"{count} subscribers, {COURSE} lesson 1, SQLite journal {self.journal}, "
            f"connections {args.connections}, batch_size {args.batch_size}, "
            f"record_every {args.record_every}"
        )
        print(f"message size: {len(self.sample)} bytes ({len(self.sample) / 1024:.1f} KiB)")
        print(f"set-up per round (not timed): {statistics.median(self.setup_s):.1f} s")
        print()
        print(f"{'run':34}{'msgs':>7}{'wall s':>8}{'msgs/s':>8}{'CPU us/msg':>12}")
        interleaved = [run for pair in zip(bare, ours, strict=False) for run in pair] + [bare[-1]]
        for timing in interleaved:
            print(
                f"{timing.label:34}{timing.messages:>7}{timing.wall_s:>8.2f}"
                f"{timing.per_second:>8.0f}{timing.cpu_us:>12.0f}"
            )
        best_bare = max(bare, key=lambda t: t.per_second)
        best_ours = max(ours, key=lambda t: t.per_second)
        ratio = best_ours.per_second / best_bare.per_second
        median_ratio = statistics.median(t.per_second for t in ours) / statistics.median(
            t.per_second for t in bare
        )
        cpu_ratio = statistics.median(t.cpu_us for t in bare) / statistics.median(
            t.cpu_us for t in ours
        )
        print()
        print(f"ceiling, best bare run:       {best_bare.per_second:6.0f} msgs/s")
        print(f"ours, best dispatcher run:    {best_ours.per_second:6.0f} msgs/s")
        print(
            f"ratio ours / ceiling (best):  {ratio:6.2f}   target >= {TARGET:.2f}: "
            f"{'meets' if ratio >= TARGET else 'MISSES'}"
        )
        print(f"ratio of medians:             {median_ratio:6.2f}")
        print(f"ratio of CPU per message:     {cpu_ratio:6.2f}   (bare / ours, medians)")
        print()
        total_wall, total_cpu = phases.wall["total"], phases.cpu["total"]
        print(f"where the dispatcher's time went, all {len(ours)} counted rounds:")
        print(f"{'step':24}{'wall s':>8}{'wall %':>8}{'CPU s':>8}{'CPU %':>7}{'us/msg':>8}")
        steps = [step for step in STEPS if step in phases.wall]  # those that still exist
        named_wall = sum(phases.wall[s] for s in steps)
        named_cpu = sum(phases.cpu[s] for s in steps)
        rows = [(s, phases.wall[s], phases.cpu[s]) for s in steps]
        rows.append(("rest (SMTP, txns, ...)", total_wall - named_wall, total_cpu - named_cpu))
        rows.append(("total", total_wall, total_cpu))
        messages = count * len(ours)
        for name, wall, cpu in rows:
            print(
                f"{name:24}{wall:>8.2f}{wall / total_wall:>8.0%}{cpu:>8.2f}"
                f"{cpu / total_cpu:>7.0%}{wall / messages * 1e6:>8.0f}"
            )
        print(
            f"check: every round {count} deliveries 'sent' once (one row per subscriber, "
            f"attempts = 1) and smtp-sink received {count}: OK"
        )


if __name__ == "__main__":
    main()
