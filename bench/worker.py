"""Worker process: due deliveries taken to 'sent' by the real `newsletter worker`, beside
`newsletter tick` and a bare aiosmtplib loop, each a process of its own.

    .venv/bin/python bench/worker.py [--subscribers 20000] [--connections 8] [--rounds 3]
        [--batch-size 500] [--record-every 50] [--cpu 0] [--sink-cpu 1] [--poll-ms 5]
        [--set SECTION.KEY=VALUE ...] [--profile DIR] [--baseline DIR]

Needs Postfix's smtp-sink (started and stopped by the script on a free 127.0.0.1 port):

    sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y postfix

Set-up, once, not timed: a SQLite file in a temporary folder, migrated, the shipped course
queued, N confirmed subscribers and their enrollments bulk-inserted, and planner passes until
every one has its welcome lesson queued and due (as bench/delivery.py does). Every run gets
its own copy of that file, so all of them start from the same queue.

Each round runs three kinds, each its own process pinned to `--cpu`, against a fresh
smtp-sink pinned to `--sink-cpu`, in an order that rotates from round to round:

- worker: `.venv/bin/newsletter worker` (the real entry point; APScheduler runs the plan
  and dispatch jobs every `schedule.tick_s`), stopped with SIGTERM once every delivery is
  'sent'; it must exit 0.
- tick: `.venv/bin/newsletter tick` (one planner pass, dispatcher passes until nothing is
  due, exit); it must exit 0.
- bare: this script as a child (`--bare-child`), a bare aiosmtplib loop on uvloop (the
  CLI's event loop) over the same number of connections, sending N copies of one rendered
  lesson 1 message: the ceiling.

Both `newsletter` processes read the shipped config.toml, overridden by NEWSLETTER_*
variables as an admin would: the copy of the database, a var folder, the sink as relay
(smtp.allow_http_links, since site.base_url stays http), no rate limit
(sending.max_per_second 1e9), `--connections`, `--batch-size`, `--record-every`; and
PYTHONPATH names this checkout, so that they run its package whatever the virtualenv's
editable install points at.

Timed, from the sink's own counter (smtp-sink -c, polled every `--poll-ms`) and the
database (a read-only count of 'sent' rows, polled once the sink has all N): start-up, from
starting the process to the first message at the sink (imports, migrations check, the
scheduler; tick's planner pass); sending, from the first message at the sink to every row
'sent' (bare: to the last message), which is what the rates and ratios compare; total,
from starting the process to every row 'sent'; and exit, from then (worker: from SIGTERM) to
the process's end. CPU time of the child (user + system, all threads, from /proc while it
runs and from wait4 when it ends): during sending, per message, and over its whole life.

`--baseline DIR` adds a fourth kind to every round, "baseline": `newsletter worker` run on
the package of another checkout in DIR (e.g. `git archive COMMIT | tar -x -C DIR`), on the
same database copies, to compare a change with the code before it in the same run.

For the worker, its log's "plan pass" lines give how many enrollments the planner job
looked at during the run, and how long those passes took.

After every run: the sink received exactly N; for worker and tick every delivery is 'sent',
one row per subscriber, one attempt each. Anything else fails the script.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import pstats
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# This checkout's package, not whichever one the virtualenv's editable install points at
# (in a git worktree that is another checkout).
sys.path.insert(0, str(ROOT))

from delivery import (  # noqa: E402
    COURSE,
    NO_LIMITS,
    bench_settings,
    delivery_problems,
    populate,
    queue_welcome,
    sample_message,
)
from processes import cpu_seconds  # noqa: E402
from smtpsink import Sink, check_sink, find_sink  # noqa: E402

TARGET = 0.90  #: worker / tick, sending
KINDS = ("worker", "tick", "bare")
#: The kinds that run `newsletter worker`.
WORKERS = ("worker", "baseline")
SECRET = "bench-worker-secret-0123456789abcdef"
#: A planner job's line in the worker's log, e.g.
#: "2026-12-03 09:10:00,123 INFO plan pass: 200 waiting" (newsletter/scheduling/jobs.py).
PLAN_LINE = re.compile(r"^(\S+ \S+) INFO plan pass: (.*)$", re.MULTILINE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=20_000)
    parser.add_argument("--connections", type=int, default=8, help="sending.connections")
    parser.add_argument("--batch-size", type=int, default=500, help="sending.batch_size")
    parser.add_argument("--record-every", type=int, default=50, help="sending.record_every")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each kind")
    parser.add_argument(
        "--cpu", type=int, default=0, help="core for the timed processes; -1: no pin"
    )
    parser.add_argument(
        "--sink-cpu", type=int, default=1, help="core for smtp-sink and this script; -1: no pin"
    )
    parser.add_argument("--poll-ms", type=float, default=5, help="how often the sink is read")
    parser.add_argument("--timeout", type=float, default=600, help="seconds a run may take")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="a config.toml setting for worker and tick, e.g. schedule.tick_s=0.1",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="add one uncounted worker run and one tick run under cProfile (main thread), "
        "into DIR/worker.prof and DIR/tick.prof, and print their top functions",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="DIR",
        help="add runs of `newsletter worker` on the package of the checkout in DIR",
    )
    parser.add_argument("--bare-child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_child:
        port, message, count, connections = args.bare_child
        bare_child(int(port), Path(message), int(count), int(connections))
        return

    sink = find_sink()
    cores = os.sched_getaffinity(0)
    cpu = args.cpu if args.cpu in cores else None
    sink_cpu = args.sink_cpu if args.sink_cpu in cores and args.sink_cpu != cpu else None
    if sink_cpu is not None:
        os.sched_setaffinity(0, {sink_cpu})  # this script polls beside the sink
    Bench(args, sink, cpu, sink_cpu).run()


def bare_child(port: int, message: Path, count: int, connections: int) -> None:
    """The ceiling, in a process of its own: reused connections, ready-made bytes."""
    from aiosmtplib import SMTP

    data = message.read_bytes()
    recipients = iter(range(1, count + 1))

    async def connection() -> None:
        client = SMTP(hostname="127.0.0.1", port=port, timeout=60)
        await client.connect()
        for index in recipients:  # shared: each connection takes the next recipient
            refused, _ = await client.sendmail(
                "course@example.org", [f"reader{index}@example.com"], data
            )
            if refused:
                sys.exit(f"FAILED: bare loop: the sink refused {refused}")
        await client.quit()

    async def send() -> None:
        await asyncio.gather(*(connection() for _ in range(connections)))

    try:
        import uvloop
    except ImportError:  # as the CLI does without it
        asyncio.run(send())
    else:
        uvloop.run(send())


# --- measurements ----------------------------------------------------------------------------


@dataclass
class Run:
    kind: str
    number: int
    messages: int = 0
    startup_s: float = 0.0  #: process started -> first message at the sink
    send_s: float = 0.0  #: first message -> every row 'sent' (bare: the last message)
    last_message_s: float = 0.0  #: first -> last message at the sink
    total_s: float = 0.0  #: process started -> every row 'sent'
    exit_s: float = 0.0  #: every row 'sent' (worker: SIGTERM) -> the process ended
    cpu_send_s: float = 0.0  #: the process's CPU time during sending
    cpu_total_s: float = 0.0  #: the process's CPU time over its life
    plan_passes: int = 0  #: worker: planner job runs that did something, during sending
    plan_counts: dict[str, int] = field(default_factory=dict)
    plan_span_s: float = 0.0  #: from the first to the last of those log lines

    @property
    def label(self) -> str:
        return f"{self.kind} {self.number}"

    @property
    def per_second(self) -> float:
        return self.messages / self.send_s

    @property
    def cpu_us(self) -> float:
        return self.cpu_send_s / self.messages * 1e6

    @property
    def cpu_total_us(self) -> float:
        return self.cpu_total_s / self.messages * 1e6


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
        self.folder = Path(tempfile.mkdtemp(prefix="bench-worker-"))
        self.template = self.folder / "newsletter.db"  #: what bench_settings() names
        self.message = self.folder / "message.eml"
        self.entry = Path(sys.executable).parent / "newsletter"
        self.setup_s = 0.0
        self.tick_s = self.base.schedule.tick_s
        self.started = datetime.now(UTC)
        self.kinds = KINDS + (("baseline",) if args.baseline else ())
        self.sources = {kind: ROOT for kind in self.kinds}
        if args.baseline:
            self.sources["baseline"] = args.baseline.resolve()

    def run(self) -> None:
        try:
            self.set_up()
            runs: list[Run] = []
            for number in range(1, self.args.rounds + 1):
                shift = (number - 1) % len(self.kinds)
                for kind in self.kinds[shift:] + self.kinds[:shift]:
                    runs.append(self.measure(kind, number))
            profiles = []
            if self.args.profile:
                self.args.profile.mkdir(parents=True, exist_ok=True)
                for kind in ("worker", "tick"):
                    path = self.args.profile / f"{kind}.prof"
                    self.measure(kind, 0, profile=path)
                    profiles.append((kind, path))
            self.report(runs)
            for kind, path in profiles:
                print(f"\ncProfile of one more, uncounted {kind} process (main thread), {path}:")
                stats = pstats.Stats(str(path))
                stats.sort_stats("tottime").print_stats(20)
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    # --- set-up ------------------------------------------------------------------------------

    def set_up(self) -> None:
        """The queue every run starts from: N welcome deliveries, queued and due."""
        from newsletter.cli.running import build_transport, build_worker
        from newsletter.clock import SystemClock
        from newsletter.db.session import create_engine, make_sessionmaker

        started = time.perf_counter()
        self.message.write_bytes(sample_message(self.base, self.course, self.count))
        settings = bench_settings(
            self.base,
            self.folder,
            25,  # never connected to: set-up only plans
            connections=self.args.connections,
            batch_size=self.args.batch_size,
            record_every=self.args.record_every,
        )

        async def prepare() -> None:
            await populate(self.base, self.course, settings.database.url, self.count)
            engine = create_engine(settings.database.url)
            transport = build_transport(settings)
            worker = build_worker(settings, make_sessionmaker(engine), transport, SystemClock())
            try:
                await queue_welcome(worker, self.count)
            finally:
                await transport.close()
                await engine.dispose()

        asyncio.run(prepare())
        if Path(f"{self.template}-wal").exists():
            sys.exit("FAILED: set-up left a write-ahead log beside the database")
        self.setup_s = time.perf_counter() - started
        for kind in self.kinds:
            self.check_package(kind)

    def environment(self, folder: Path, port: int, kind: str = "worker") -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("NEWSLETTER_")}
        source = self.sources[kind]
        python_path = [str(source), *filter(None, [os.environ.get("PYTHONPATH")])]
        env["PYTHONPATH"] = os.pathsep.join(python_path)
        settings = {
            "database.url": f"sqlite:///{folder / 'newsletter.db'}",
            "paths.var": str(folder / "var"),
            "smtp.host": "127.0.0.1",
            "smtp.port": str(port),
            "sending.connections": str(self.args.connections),
            "sending.batch_size": str(self.args.batch_size),
            "sending.record_every": str(self.args.record_every),
        }
        for section, key, value in NO_LIMITS:
            settings[f"{section}.{key}"] = str(value).lower() if value is True else str(value)
        for setting in self.args.set:
            key, _, value = setting.partition("=")
            settings[key] = value
        env["NEWSLETTER_CONFIG"] = str(ROOT / "config.toml")
        env["NEWSLETTER_SECRET_KEY"] = SECRET
        for key, value in settings.items():
            env["NEWSLETTER_" + key.replace(".", "__").upper()] = value
        if "schedule.tick_s" in settings:
            self.tick_s = float(settings["schedule.tick_s"])
        return env

    def check_package(self, kind: str) -> None:
        """The entry point's interpreter, run as the timed processes are, imports the
        newsletter package of this checkout (of DIR for the baseline)."""
        env = self.environment(self.folder, 25, kind)
        interpreter = self.entry.read_text().splitlines()[0].removeprefix("#!").strip()
        found = subprocess.run(
            [interpreter, "-c", "import newsletter; print(newsletter.__file__)"],
            env=env,
            cwd=self.folder,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        if not Path(found).resolve().is_relative_to(self.sources[kind]):
            sys.exit(f"FAILED: the entry point imports {found}, not {self.sources[kind]}'s")

    # --- one run -----------------------------------------------------------------------------

    def measure(self, kind: str, number: int, profile: Path | None = None) -> Run:
        run = Run(kind, number)
        folder = self.folder / f"{kind}-{number}"
        folder.mkdir()
        database = folder / "newsletter.db"
        shutil.copyfile(self.template, database)
        log = folder / "output.log"
        with Sink(self.sink_binary, self.sink_cpu) as sink:
            env = self.environment(folder, sink.port, kind)
            if kind == "bare":
                command = [sys.executable, str(Path(__file__).resolve()), "--bare-child"]
                command += [str(sink.port), str(self.message), str(self.count)]
                command += [str(self.args.connections)]
            else:
                command = [str(self.entry), "worker" if kind in WORKERS else kind]
                if profile is not None:
                    command = [sys.executable, "-m", "cProfile", "-o", str(profile), *command]
            cpu = self.cpu
            with log.open("wb") as output:
                started = time.perf_counter()
                process = subprocess.Popen(
                    command,
                    cwd=ROOT,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    preexec_fn=(lambda: os.sched_setaffinity(0, {cpu}))
                    if cpu is not None
                    else None,
                )
            try:
                first, cpu_first, last, done, cpu_done = self.follow(
                    run, process, sink, database, log
                )
                if kind in WORKERS:
                    process.send_signal(signal.SIGTERM)
                stop = time.perf_counter()
                _, status, usage = os.wait4(process.pid, 0)
                ended = time.perf_counter()
                process.returncode = os.waitstatus_to_exitcode(status)
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()
            # Anything sent after every row was 'sent' would be a repeat.
            check_sink(sink, self.count, run.label)
        if process.returncode != 0:
            sys.exit(f"FAILED: {run.label} exited {process.returncode}:\n{tail(log)}")
        if kind != "bare":
            problems = asyncio.run(self.problems(database))
            if problems:
                sys.exit(f"FAILED: {run.label}: " + "; ".join(problems))
        run.messages = self.count
        run.startup_s = first - started
        run.send_s = done - first
        run.last_message_s = last - first
        run.total_s = done - started
        run.exit_s = ended - (stop if kind in WORKERS else done)
        run.cpu_send_s = cpu_done - cpu_first
        run.cpu_total_s = usage.ru_utime + usage.ru_stime
        if kind in WORKERS:
            self.plan_work(run, log, first, done, started)
        return run

    def follow(
        self,
        run: Run,
        process: subprocess.Popen[bytes],
        sink: Sink,
        database: Path,
        log: Path,
    ) -> tuple[float, float, float, float, float]:
        """Poll the sink, then the database: (first message, CPU then, last message, every
        row 'sent', CPU then), as perf_counter() instants and CPU seconds."""
        poll_s = self.args.poll_ms / 1000
        deadline = time.monotonic() + self.args.timeout

        def wait(done: Any) -> float:
            while not done():
                if time.monotonic() > deadline:
                    sys.exit(
                        f"FAILED: {run.label}: not done after {self.args.timeout:g} s "
                        f"(sink received {sink.received()})\n{tail(log)}"
                    )
                if process.poll() is not None and not done():
                    sys.exit(
                        f"FAILED: {run.label} exited {process.returncode} with the sink at "
                        f"{sink.received()} of {self.count}:\n{tail(log)}"
                    )
                time.sleep(poll_s)
            return time.perf_counter()

        first = wait(lambda: sink.received() > 0)
        cpu_first = cpu_seconds(process.pid)
        last = wait(lambda: sink.received() >= self.count)
        if run.kind == "bare":
            return first, cpu_first, last, last, cpu_seconds(process.pid)
        done = wait(lambda: sent_rows(database) >= self.count)
        return first, cpu_first, last, done, cpu_seconds(process.pid)

    async def problems(self, database: Path) -> list[str]:
        from newsletter.db.session import create_engine

        engine = create_engine(f"sqlite:///{database}")
        try:
            return await delivery_problems(engine, self.count)
        finally:
            await engine.dispose()

    def plan_work(self, run: Run, log: Path, first: float, done: float, started: float) -> None:
        """What the worker's planner job did while it sent, from its log lines (their
        times are wall-clock; the run's instants are mapped onto them from its start)."""
        epoch = time.time() - (time.perf_counter() - started)
        window = (epoch + (first - started) - 1, epoch + (done - started) + 1)
        counts: dict[str, int] = {}
        stamps = []
        for stamp, report in PLAN_LINE.findall(log.read_text(errors="replace")):
            moment = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
            if not window[0] <= moment <= window[1]:
                continue
            stamps.append(moment)
            for part in report.split(", "):
                n, _, outcome = part.partition(" ")
                if n.isdigit():
                    counts[outcome] = counts.get(outcome, 0) + int(n)
        run.plan_passes = len(stamps)
        run.plan_counts = counts
        run.plan_span_s = max(stamps) - min(stamps) if stamps else 0.0

    # --- report ------------------------------------------------------------------------------

    def report(self, runs: list[Run]) -> None:
        args, count = self.args, self.count
        pinned = f"core {self.cpu}" if self.cpu is not None else "no pin"
        sink_where = f"core {self.sink_cpu}" if self.sink_cpu is not None else "no pin"
        print(
            f"worker benchmark, {self.started:%Y-%m-%d %H:%M} UTC, Python "
            f"{sys.version.split()[0]}, {os.cpu_count()} cores"
        )
        print(f"timed processes: {pinned}; smtp-sink and this script: {sink_where}")
        print(
            f"{count} subscribers, {COURSE} lesson 1 ({self.message.stat().st_size} bytes), "
            f"SQLite, connections {args.connections}, batch_size {args.batch_size}, "
            f"record_every {args.record_every}, tick_s {self.tick_s:g}, no rate limit"
        )
        if args.set:
            print("settings besides those: " + ", ".join(args.set))
        print(
            f"set-up, once (not timed): {self.setup_s:.1f} s; sink polled every {args.poll_ms:g} ms"
        )
        print()
        print(
            f"{'run':12}{'start-up s':>11}{'send s':>8}{'msgs/s':>8}{'total s':>9}{'exit s':>8}"
            f"{'CPU us/msg':>11}{'CPU s all':>10}"
        )
        for run in runs:
            print(
                f"{run.label:12}{run.startup_s:>11.2f}{run.send_s:>8.2f}{run.per_second:>8.0f}"
                f"{run.total_s:>9.2f}{run.exit_s:>8.2f}{run.cpu_us:>11.0f}{run.cpu_total_s:>10.2f}"
            )
        by_kind = {kind: [run for run in runs if run.kind == kind] for kind in self.kinds}
        best = {kind: max(r.per_second for r in kind_runs) for kind, kind_runs in by_kind.items()}
        median = {
            kind: statistics.median(r.per_second for r in kind_runs)
            for kind, kind_runs in by_kind.items()
        }
        print()
        print(f"{'sending, msgs/s':18}{'best':>7}{'median':>8}{'CPU us/msg':>11}{'start-up s':>11}")
        for kind, kind_runs in by_kind.items():
            print(
                f"{kind:18}{best[kind]:>7.0f}{median[kind]:>8.0f}"
                f"{statistics.median(r.cpu_us for r in kind_runs):>11.0f}"
                f"{statistics.median(r.startup_s for r in kind_runs):>11.2f}"
            )
        print()
        pairs = [("worker", "tick"), ("worker", "bare"), ("tick", "bare")]
        if "baseline" in by_kind:
            pairs += [("worker", "baseline"), ("baseline", "tick")]
        for top, bottom in pairs:
            print(
                f"{f'ratio {top} / {bottom}:':26}"
                f"{best[top] / best[bottom]:5.2f} best, {median[top] / median[bottom]:5.2f} median"
            )
        totals = {kind: min(r.total_s for r in by_kind[kind]) for kind in ("worker", "tick")}
        print(
            f"total from process start, best: worker {totals['worker']:.2f} s, tick "
            f"{totals['tick']:.2f} s (tick / worker {totals['tick'] / totals['worker']:.2f})"
        )
        ratio = best["worker"] / best["tick"]
        print(
            f"target worker / tick >= {TARGET:.2f} (sending, best): "
            f"{'meets' if ratio >= TARGET else 'MISSES'}"
        )
        print()
        if "baseline" in by_kind:
            print(f"baseline: `newsletter worker` on the package in {self.sources['baseline']}")
        for run in [r for r in runs if r.kind in WORKERS]:
            work = ", ".join(f"{n} {outcome}" for outcome, n in sorted(run.plan_counts.items()))
            print(
                f"{run.label}: the planner job, while sending: {run.plan_passes} runs over "
                f"{run.plan_span_s:.1f} s, {work or 'nothing'}"
            )
        print(
            f"check: every run, smtp-sink received {count}; worker and tick left every delivery "
            f"'sent' once (one row per subscriber, attempts = 1) and exited 0: OK"
        )


def sent_rows(database: Path) -> int:
    """Deliveries 'sent' so far: a read, which in WAL mode never waits for the writer."""
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        (count,) = db.execute("SELECT count(*) FROM deliveries WHERE status = 'sent'").fetchone()
    return int(count)


def tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


if __name__ == "__main__":
    main()
