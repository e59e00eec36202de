"""Planner cost against the number enrolled: it should follow the number due, not the total.

    .venv/bin/python bench/planner.py [--sizes 100000 1000000] [--due-percent 1]
        [--repeats 3] [--no-history]

For each size, set-up (not timed): a fresh SQLite file in a temporary folder, migrated; the
shipped course queued; SIZE confirmed subscribers, their enrollments and (unless
--no-history) one 'sent' welcome delivery each, bulk-inserted with SQLAlchemy Core
executemany in chunks of 50,000, one transaction per table, PRAGMA synchronous=OFF on the
set-up connection only. Every subscriber had lesson 1 sent; 1% of them (every 100th id) are
due lesson 2 (next_check_at in the past, inside the send window), the rest wait for a
next_check_at in the future.

Measured: in a fresh child process on a copy of that file, after one warm-up pass of 10
enrollments (it compiles the statements, as a running worker has long done), the wall time
of the Worker.plan_once passes needed to handle every due enrollment (schedule.planner_batch
per pass, 200 as shipped, so passes run until one handles nothing; that pass is counted), and
the peak RSS growth during those passes: VmHWM after the passes minus VmRSS before them, the
high-water mark being reset first (/proc/self/clear_refs). It is repeated `--repeats` times
on fresh copies; the best time and the largest growth are reported. A separate run on
another copy reports the peak of Python allocations under tracemalloc.

The reference is the smallest size in the same run: time per due enrollment, and memory
growth, should stay flat as the total grows. The due-enrollments query must use the index
ix_enrollments_due (EXPLAIN QUERY PLAN of the real query, compiled for SQLite with literal
binds), or the script fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
COURSE = "leg-weakness-after-microdiscectomy"
#: A Wednesday, 11:00 in London: inside the send window, so lesson 2 goes out at once.
NOW = datetime(2026, 6, 10, 10, 0, tzinfo=UTC)
WARM_UP = 10
CHUNK = 50_000
INDEX = "ix_enrollments_due"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--due-percent", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per size")
    parser.add_argument("--no-history", action="store_true", help="no welcome delivery rows")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--tracemalloc", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(child(args.child, args.tracemalloc))))
        return
    run(args)


# --- parent: set-up, query plan, children, table ----------------------------------------------


def run(args: argparse.Namespace) -> None:
    step = round(100 / args.due_percent)
    results: list[dict[str, Any]] = []
    plan: list[str] = []
    for size in args.sizes:
        with tempfile.TemporaryDirectory(prefix="bench-planner-") as folder:
            pristine = Path(folder) / "pristine.db"
            started = time.perf_counter()
            due = asyncio.run(populate(pristine, size, step, history=not args.no_history))
            setup_s = time.perf_counter() - started
            plan = query_plan(pristine)
            if not any(INDEX in line for line in plan):
                sys.exit(f"FAILED: the due-enrollments query does not use {INDEX}: {plan}")
            timed = [spawn(pristine, Path(folder) / "work.db", due) for _ in range(args.repeats)]
            traced = spawn(pristine, Path(folder) / "work.db", due, tracemalloc=True)
            size_mb = pristine.stat().st_size / 1e6
        best = min(timed, key=lambda r: r["wall_s"])
        results.append(
            {
                "size": size,
                "due": due,
                "setup_s": setup_s,
                "db_mb": size_mb,
                "passes": best["passes"],
                "wall_s": best["wall_s"],
                "walls": [r["wall_s"] for r in timed],
                "per_due_us": best["wall_s"] / best["handled"] * 1e6,
                "pass_ms": best["median_pass_ms"],
                "rss_mb": max(r["rss_growth_mb"] for r in timed),
                "py_peak_mb": traced["py_peak_mb"],
                "outcomes": best["outcomes"],
            }
        )
    report(args, results, plan)


def report(args: argparse.Namespace, results: list[dict[str, Any]], plan: list[str]) -> None:
    from newsletter.config import load_settings

    print(
        f"planner benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
        f"Python {sys.version.split()[0]}, {os.cpu_count()} cores"
    )
    print(
        f"SQLite; {args.due_percent:g}% due (every {round(100 / args.due_percent)}th subscriber); "
        f"planner_batch {load_settings(ROOT / 'config.toml').schedule.planner_batch}; "
        + ("no delivery history" if args.no_history else "one 'sent' welcome delivery each")
    )
    print(f"EXPLAIN QUERY PLAN of due_enrollments: {' | '.join(plan)}")
    print()
    header = (
        f"{'enrolled':>10}{'due':>8}{'passes':>7}{'wall s':>8}{'us/due':>8}{'ms/pass':>9}"
        f"{'RSS +MB':>9}{'py peak MB':>11}{'set-up s':>9}{'db MB':>7}"
    )
    print(header)
    for r in results:
        print(
            f"{r['size']:>10}{r['due']:>8}{r['passes']:>7}{r['wall_s']:>8.2f}"
            f"{r['per_due_us']:>8.0f}{r['pass_ms']:>9.0f}{r['rss_mb']:>9.1f}"
            f"{r['py_peak_mb']:>11.1f}{r['setup_s']:>9.0f}{r['db_mb']:>7.0f}"
        )
    print()
    for r in results:
        walls = ", ".join(f"{w:.2f}" for w in r["walls"])
        print(f"{r['size']:>10} enrolled: timed runs {walls} s (best taken), {r['outcomes']}")
    reference = results[0]
    verdicts = []
    for r in results[1:]:
        per_due = r["per_due_us"] / reference["per_due_us"]
        total = r["wall_s"] / reference["wall_s"]
        rss = r["rss_mb"] - reference["rss_mb"]
        py = r["py_peak_mb"] - reference["py_peak_mb"]
        flat_time = per_due <= 1.5
        flat_memory = rss <= 5 and py <= 2
        verdicts += [flat_time, flat_memory]
        print(
            f"{r['size']} vs {reference['size']}: total time x{total:.1f} for x"
            f"{r['due'] / reference['due']:.0f} due; time per due x{per_due:.2f} "
            f"({'flat' if flat_time else 'GROWS'}, limit x1.5); RSS growth {rss:+.1f} MB, "
            f"Python peak {py:+.1f} MB ({'flat' if flat_memory else 'GROWS'}, limits 5 / 2 MB)"
        )
    print(f"index {INDEX} used: yes; " + ("all flat" if all(verdicts) else "NOT FLAT"))


def query_plan(db: Path) -> list[str]:
    """EXPLAIN QUERY PLAN of the statement queries.due_enrollments really builds."""
    from sqlalchemy.dialects import sqlite

    from newsletter.db import queries

    class Capture:
        statement: Any = None

        async def execute(self, statement: Any, *args: Any, **kwargs: Any) -> list[Any]:
            self.statement = statement
            return []

    capture = Capture()
    asyncio.run(queries.due_enrollments(capture, NOW, 1000))  # type: ignore[arg-type]
    sql = str(
        capture.statement.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True})
    )
    with sqlite3.connect(db) as connection:
        rows = connection.execute(f"EXPLAIN QUERY PLAN {sql}").fetchall()
    return [row[-1] for row in rows]


def spawn(pristine: Path, work: Path, due: int, *, tracemalloc: bool = False) -> dict[str, Any]:
    for suffix in ("", "-wal", "-shm"):
        source = Path(f"{pristine}{suffix}")
        target = Path(f"{work}{suffix}")
        target.unlink(missing_ok=True)
        if source.exists():
            shutil.copyfile(source, target)
    command = [sys.executable, __file__, "--child", str(work)]
    if tracemalloc:
        command.append("--tracemalloc")
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"FAILED: the measuring process failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    handled = sum(result["outcomes"].values())
    if result["outcomes"].get("queued") != due - WARM_UP or handled != due - WARM_UP:
        sys.exit(f"FAILED: {due - WARM_UP} due after the warm-up, outcomes {result['outcomes']}")
    if result["lesson_2_rows"] != due:
        sys.exit(f"FAILED: {result['lesson_2_rows']} lesson 2 deliveries, expected {due}")
    result["handled"] = handled
    return result


def settings_for(db: Path) -> Any:
    """As tests/integration/harness.py's settings_for(): the shipped settings, on a
    database and var/ folder of our own."""
    from newsletter.config import load_settings

    base = load_settings(ROOT / "config.toml")
    return base.model_copy(
        update={
            "database": base.database.model_copy(update={"url": f"sqlite:///{db}"}),
            "paths": base.paths.model_copy(update={"var": db.parent / "var"}),
            "smtp": base.smtp.model_copy(update={"host": ""}),
            "schedule": base.schedule.model_copy(update={"timezone": "Europe/London"}),
        }
    )


async def populate(db: Path, size: int, step: int, *, history: bool) -> int:
    """Migrate, queue the course, bulk-insert; returns the number of due enrollments."""
    from sqlalchemy import create_engine as create_sync_engine
    from sqlalchemy import event, insert, select

    from newsletter.content.course import load_course
    from newsletter.courses import queue_course
    from newsletter.db.models import (
        Delivery,
        Enrollment,
        LessonSnapshot,
        Subscriber,
        SubscriberStatus,
    )
    from newsletter.db.session import create_engine, make_sessionmaker, upgrade_database

    settings = settings_for(db)
    url = settings.database.url
    upgrade_database(url)
    engine = create_engine(url)  # the application's own engine: WAL, foreign keys, ...
    created = NOW - timedelta(days=10)
    async with make_sessionmaker(engine).begin() as session:
        queued = await queue_course(session, load_course(settings.lessons_dir / COURSE), created)
        welcome = await session.scalar(select(LessonSnapshot).where(LessonSnapshot.position == 1))
        assert welcome is not None
    await engine.dispose()

    def sent_at(index: int) -> datetime:
        if index % step == 0:  # due: lesson 2 (2 days later) was due 1 to 3 hours ago
            return NOW - timedelta(days=2, hours=1, seconds=index % 7200)
        return NOW - timedelta(days=1, seconds=index % 7200)  # due tomorrow

    bulk = create_sync_engine(url)

    @event.listens_for(bulk, "connect")
    def _fast(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute("PRAGMA synchronous=OFF")  # set-up only

    def chunks(make_row: Any) -> Any:
        for start in range(1, size + 1, CHUNK):
            yield [make_row(i) for i in range(start, min(size, start + CHUNK - 1) + 1)]

    with bulk.begin() as connection:
        for rows in chunks(
            lambda i: {
                "id": i,
                "email": f"reader{i}@example.com",
                "first_name": f"Reader{i}",
                "status": SubscriberStatus.CONFIRMED,
                "timezone": "Europe/London" if i % 3 == 0 else None,
                "consent": {"form": "bench"},
                "created_at": created,
                "confirmed_at": created,
                "unsubscribed_at": None,
                "updated_at": created,
            }
        ):
            connection.execute(insert(Subscriber.__table__), rows)  # type: ignore[arg-type]
    with bulk.begin() as connection:
        for rows in chunks(
            lambda i: {
                "id": i,
                "subscriber_id": i,
                "sequence_id": queued.sequence_id,
                "status": "active",
                "last_sent_at": sent_at(i),
                "next_check_at": sent_at(i) + timedelta(days=2),
                "enrolled_at": sent_at(i),
            }
        ):
            connection.execute(insert(Enrollment.__table__), rows)  # type: ignore[arg-type]
    if history:
        with bulk.begin() as connection:
            for rows in chunks(
                lambda i: {
                    "id": i,
                    "subscriber_id": i,
                    "sequence_id": queued.sequence_id,
                    "lesson_id": welcome.id,
                    "lesson_key": welcome.key,
                    "kind": "lesson",
                    "priority": 10,
                    "status": "sent",
                    "due_at": sent_at(i),
                    "attempts": 1,
                    "last_error": "",
                    "message_id": f"<{i:032x}@example.org>",
                    "lease_until": None,
                    "claimed_by": None,
                    "first_attempt_at": sent_at(i),
                    "sent_at": sent_at(i),
                    "created_at": sent_at(i),
                }
            ):
                connection.execute(insert(Delivery.__table__), rows)  # type: ignore[arg-type]
    bulk.dispose()
    return size // step


# --- child: the measured passes ------------------------------------------------------------------


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise LookupError(field)


async def child(db: Path, trace: bool) -> dict[str, Any]:
    import tracemalloc

    from sqlalchemy import func, select

    from newsletter.cli.running import build_transport, build_worker
    from newsletter.db.models import Delivery
    from newsletter.db.session import create_engine, make_sessionmaker

    settings = settings_for(db)
    engine = create_engine(settings.database.url)
    sessions = make_sessionmaker(engine)
    transport = build_transport(settings)  # the outbox; the planner sends nothing
    warm_settings = settings.model_copy(
        update={"schedule": settings.schedule.model_copy(update={"planner_batch": WARM_UP})}
    )
    warmed = await build_worker(warm_settings, sessions, transport).plan_once(NOW)
    if warmed["queued"] != WARM_UP:
        raise SystemExit(f"warm-up pass: {warmed}")
    worker = build_worker(settings, sessions, transport)

    if trace:
        tracemalloc.start()
    rss_before = _status_kb("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # reset VmHWM, the peak resident set size
    except OSError:
        pass  # then VmHWM is the peak since the start: an upper bound
    outcomes: Counter[str] = Counter()
    pass_times = []
    started = time.perf_counter()
    while True:
        pass_started = time.perf_counter()
        report = await worker.plan_once(NOW)
        pass_times.append(time.perf_counter() - pass_started)
        outcomes.update(report.counts)
        if not sum(report.counts.values()):
            break
    wall_s = time.perf_counter() - started
    rss_peak = _status_kb("VmHWM")
    py_peak = tracemalloc.get_traced_memory()[1] if trace else 0
    tracemalloc.stop()

    async with engine.connect() as connection:
        lesson_2_rows = await connection.scalar(
            select(func.count()).select_from(Delivery).where(Delivery.lesson_key == "the-cause")
        )
    await engine.dispose()
    return {
        "passes": len(pass_times),
        "wall_s": wall_s,
        "median_pass_ms": statistics.median(pass_times[:-1] or pass_times) * 1e3,
        "rss_growth_mb": (rss_peak - rss_before) / 1024,
        "py_peak_mb": py_peak / 2**20,
        "outcomes": dict(outcomes),
        "lesson_2_rows": lesson_2_rows,
    }


if __name__ == "__main__":
    main()
