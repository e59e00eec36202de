"""Signups per second on loopback, with p50/p99 latency, on SQLite, while a lesson send runs.

    .venv/bin/python bench/signup.py [--subscribers 80000] [--rounds 3] [--duration 20]
        [--serial 5] [--reference 10] [--warmup 2] [--connections 8] [--web-workers 1]
        [--one-client]
        [--profile FILE] [--set SECTION.KEY=VALUE ...]

Needs wrk (the load generator) and Postfix's smtp-sink (the relay the lesson send goes to):

    sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y wrk postfix

Set-up, not timed: a temporary folder with a fresh SQLite file, migrated; the shipped course
queued; N confirmed subscribers and their enrollments bulk-inserted (as bench/delivery.py
does), so that their welcome lesson is due at once.

Then the service's own commands, each its own process on that database through NEWSLETTER_*
environment variables (database URL, var folder, NEWSLETTER_SECRET_KEY):

- `python -m newsletter worker`: the scheduler, sending the welcome lesson to the N
  subscribers through smtp-sink on a free 127.0.0.1 port (one planner and one dispatcher pass
  a second, `sending.batch_size` 500, no per-second cap), and the signups' confirmation
  emails ahead of them (transactional priority);
- `python -m newsletter web --host 127.0.0.1 --port P --workers N`: uvicorn, one process
  (`--web-workers`, 1 as shipped) or N forked ones sharing the port, their CPU time summed;
- `wrk`: `--connections` keep-alive connections, each sending its next request as soon as
  the previous answer is in (a closed loop).

Runs, in this order, each after `--warmup` seconds of the same requests:
`GET /check-your-email` (a page that reads no database: the framework's ceiling) and `GET /`
(the signup page: two reads), `--reference` seconds each; then `--rounds` times:
`POST /subscribe` with a new address every request for `--duration` seconds (the figure),
and the same over one connection for `--serial` seconds (no request waits for another:
what is left is the cost of one signup); both references again. Each run reports requests
per second, wrk's p50, p99 and maximum latency, errors (any answer but 303 to a signup and
200 to a page, and socket errors; any 5xx stops the script), the web process's CPU time
per request, and how many lesson deliveries the worker recorded as sent meanwhile (none in
a run fails the script: the send must be running throughout).

The per-IP signup limit (20 an hour) would refuse nearly all of this: it is lifted with
NEWSLETTER_SIGNUP__SIGNUPS_PER_IP_PER_HOUR. By default every signup comes from another client
address, given in X-Forwarded-For (believed from 127.0.0.1, which the run lists in [web]
trusted_proxies; each in a /64 of its own, since the limit counts an IPv6 client by its /64,
in the 2001:db8::/32 documentation prefix), as signups from many visitors would; with
`--one-client` all come from 127.0.0.1, so that the limit's count reads one growing range.

Afterwards, in the database: every address a counted run signed up is a pending subscriber
with exactly one confirmation delivery, and there are at least as many as wrk counted 303s.

The machine's cores are shared by wrk, the web process, the worker and smtp-sink: nothing
is pinned, and the CPU time each used during the first signup run is shown. Other tenants
of a shared machine can slow every process for minutes, so the signup run is repeated and
judged round by round. Target: at least 300 signups a second with p99 under 100 ms, in a
majority of the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

from population import insert_enrolled_readers
from processes import tree_cpu_seconds

ROOT = Path(__file__).resolve().parents[1]
COURSE = "leg-weakness-after-microdiscectomy"
SMTP_SINK = "/usr/sbin/smtp-sink"
INSTALL_HINT = (
    "{what} is needed and was not found. Install it with:\n"
    "    sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y {package}"
)
TARGET_RATE = 300.0
TARGET_P99_MS = 100.0
SECRET = "bench-signup-secret-0123456789abcdef"
CHECK_PAGE = "/check-your-email"
SIGNUP_PAGE = "/"
SIGNUPS = "POST /subscribe"
#: What a good answer is: a page is 200, a valid signup 303 -> /check-your-email.
EXPECTED = {"page": 200, "signup": 303}
#: Frames nearly every sample passes through (start-up, the event loop, the ASGI layers
#: around every request): left out of the profile's "inside" table.
BOILERPLATE = (
    "thread (",
    "<frozen runpy>",
    "typer/",
    "asyncio/",
    "newsletter/cli/",
    "__main__",
    "RequestResponseCycle.run_asgi",
    "uvicorn/middleware/",
    "starlette/applications.py",
    "starlette/middleware/",
    "starlette/_exception_handler.py",
    "starlette/routing.py",
    "security.py)",
)

# One request generator for every run: GET `path`, or POST /subscribe with a new address each
# time (and, unless one_client is "1", a new client address in X-Forwarded-For). Each wrk
# thread counts answers by status; done() prints one JSON line with all of it.
WRK_SCRIPT = r"""
local threads = {}
local count = 0

function setup(thread)
  count = count + 1
  thread:set("tid", count)
  table.insert(threads, thread)
end

function init(args)
  mode, path, prefix, one_client, rest = args[1], args[2], args[3], args[4], args[5]
  sent = 0
  statuses = {}
  headers = {["Content-Type"] = "application/x-www-form-urlencoded"}
end

function request()
  if mode ~= "signup" then
    return wrk.format("GET", path)
  end
  sent = sent + 1
  if one_client ~= "1" then
    headers["X-Forwarded-For"] = string.format("2001:db8:%x:%x::1", tid, sent)
  end
  local body = "email=" .. prefix .. "-" .. tid .. "-" .. sent .. "%40example.com" .. rest
  return wrk.format("POST", path, headers, body)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local merged, attempted = {}, 0
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do
      merged[tostring(status)] = (merged[tostring(status)] or 0) + n
    end
    attempted = attempted + (thread:get("sent") or 0)
  end
  local parts = {}
  for status, n in pairs(merged) do
    table.insert(parts, string.format('"%s": %d', status, n))
  end
  local e = summary.errors
  io.write(string.format(
    '\nWRK-RESULT {"requests": %d, "duration_us": %d, "attempted": %d, ' ..
    '"p50_us": %d, "p99_us": %d, "max_us": %d, "statuses": {%s}, ' ..
    '"connect": %d, "read": %d, "write": %d, "timeout": %d}\n',
    summary.requests, summary.duration, attempted,
    latency:percentile(50), latency:percentile(99), latency.max,
    table.concat(parts, ", "), e.connect, e.read, e.write, e.timeout))
end
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=80_000, help="lesson recipients")
    parser.add_argument("--duration", type=float, default=20, help="seconds of signups")
    parser.add_argument(
        "--serial", type=float, default=5, help="seconds of signups over 1 connection; 0: none"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="signup runs (each then its serial run)"
    )
    parser.add_argument("--reference", type=float, default=10, help="seconds per reference run")
    parser.add_argument("--warmup", type=float, default=2, help="seconds before each run")
    parser.add_argument("--connections", type=int, default=8, help="wrk connections")
    parser.add_argument(
        "--web-workers", type=int, default=1, help="processes of `newsletter web --workers N`"
    )
    parser.add_argument(
        "--one-client", action="store_true", help="every signup from 127.0.0.1 (no X-Forwarded-For)"
    )
    parser.add_argument(
        "--profile",
        type=Path,
        help="sample the web process's main thread with py-spy (while it holds the GIL) during "
        "the signup run, into FILE (collapsed stacks), and print its top functions",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="a config.toml setting for both processes, e.g. schedule.planner_batch=50",
    )
    args = parser.parse_args()

    sink = shutil.which("smtp-sink") or (SMTP_SINK if os.access(SMTP_SINK, os.X_OK) else None)
    if sink is None:
        sys.exit(
            INSTALL_HINT.format(what="smtp-sink (Debian's postfix package)", package="postfix")
        )
    wrk = shutil.which("wrk")
    if wrk is None:
        sys.exit(INSTALL_HINT.format(what="wrk", package="wrk"))
    py_spy = None
    if args.profile:
        py_spy = shutil.which("py-spy", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
        if py_spy is None:
            sys.exit("--profile needs py-spy: .venv/bin/pip install py-spy")
    Bench(args, sink, wrk, py_spy).run()


# --- processes -------------------------------------------------------------------------------


def plural_processes(count: int) -> str:
    return "1 process" if count == 1 else f"{count} processes (--workers)"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Service:
    """One of the service's commands, run as a process of its own; output into `log`."""

    name: str
    command: list[str]
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> Service:
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                self.command,
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def check_alive(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            sys.exit(f"FAILED: the {self.name} process stopped:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# --- measurements ----------------------------------------------------------------------------


@dataclass
class Run:
    label: str
    kind: str  #: "page" or "signup"
    path: str
    connections: int
    seconds: float
    prefix: str = ""  #: every address a signup run sends starts with it
    requests: int = 0  #: answers wrk counted
    attempted: int = 0  #: signups sent (some may be unanswered when wrk stops)
    wall_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    statuses: Counter[int] = field(default_factory=Counter)
    socket_errors: int = 0
    cpu_s: dict[str, float] = field(default_factory=dict)  #: per process, during the run
    lessons_sent: int = 0  #: lesson deliveries recorded 'sent' during the run
    sink_received: int = 0  #: messages smtp-sink received during the run (all kinds)

    @property
    def per_second(self) -> float:
        return self.requests / self.wall_s if self.wall_s else 0.0

    @property
    def errors(self) -> int:
        expected = EXPECTED[self.kind]
        return self.socket_errors + sum(n for s, n in self.statuses.items() if s != expected)

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)

    @property
    def web_cpu_ms(self) -> float:
        return self.cpu_s.get("web", 0.0) / self.requests * 1e3 if self.requests else 0.0


class Bench:
    def __init__(self, args: argparse.Namespace, sink: str, wrk: str, py_spy: str | None) -> None:
        self.args, self.sink_binary, self.wrk, self.py_spy = args, sink, wrk, py_spy
        self.count = args.subscribers
        self.folder = Path(tempfile.mkdtemp(prefix="bench-signup-"))
        self.database = self.folder / "newsletter.db"
        self.script = self.folder / "load.lua"
        self.port = free_port()
        self.services: list[Service] = []
        self.pids: dict[str, int] = {}
        self.sink: Any = None
        self.setup_s = 0.0
        self.stored: dict[str, int] = {}  #: subscribers found per signup run
        self.started = datetime.now(UTC)

    def run(self) -> None:
        from smtpsink import Sink  # bench/smtpsink.py, beside this file

        try:
            self.populate()
            self.script.write_text(WRK_SCRIPT)
            with Sink(self.sink_binary, None) as sink:
                self.sink = sink
                env = self.environment(sink.port)
                newsletter = [sys.executable, "-m", "newsletter"]
                address = ["--host", "127.0.0.1", "--port", str(self.port)]
                address += ["--workers", str(self.args.web_workers)]
                web = Service("web", [*newsletter, "web", *address], env, self.folder / "web.log")
                worker = Service("worker", [*newsletter, "worker"], env, self.folder / "worker.log")
                self.services = [web, worker]
                try:
                    for service in self.services:
                        service.start()
                    self.wait_until_ready(web, worker)
                    self.pids = {"web": web.pid, "worker": worker.pid}
                    if sink.process is not None:
                        self.pids["smtp-sink"] = sink.process.pid
                    runs = self.measure()
                finally:
                    for service in self.services:
                        service.stop()
            self.verify(runs)
            self.report(runs)
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    # --- set-up ------------------------------------------------------------------------------

    def environment(self, smtp_port: int) -> dict[str, str]:
        """The shipped config.toml, overridden as an admin would: the temporary database and
        var folder, the sink as relay, no rate cap on the lesson send, and the per-IP signup
        limit lifted. The same for both processes (the web app ignores the SMTP keys)."""
        env = {key: value for key, value in os.environ.items() if not key.startswith("NEWSLETTER_")}
        env.update(
            {
                "NEWSLETTER_CONFIG": str(ROOT / "config.toml"),
                "NEWSLETTER_DATABASE__URL": f"sqlite:///{self.database}",
                "NEWSLETTER_PATHS__VAR": str(self.folder / "var"),
                "NEWSLETTER_SECRET_KEY": SECRET,
                "NEWSLETTER_SMTP__HOST": "127.0.0.1",
                "NEWSLETTER_SMTP__PORT": str(smtp_port),
                "NEWSLETTER_SMTP__TLS": "none",
                "NEWSLETTER_SMTP__USERNAME": "",
                # base_url stays plain http://localhost:8000: smtp-sink is a local test relay.
                "NEWSLETTER_SMTP__ALLOW_HTTP_LINKS": "true",
                "NEWSLETTER_SENDING__MAX_PER_SECOND": "1000000000",
                "NEWSLETTER_SENDING__MAX_PER_HOUR": "0",
                "NEWSLETTER_SENDING__MAX_PER_DAY": "0",
                "NEWSLETTER_SIGNUP__SIGNUPS_PER_IP_PER_HOUR": "1000000000",
                # wrk stands for a reverse proxy on this machine, naming each client.
                "NEWSLETTER_WEB__TRUSTED_PROXIES": '["127.0.0.1"]',
                "NEWSLETTER_SCHEDULE__TIMEZONE": "Europe/London",
            }
        )
        for setting in self.args.set:
            key, _, value = setting.partition("=")
            env["NEWSLETTER_" + key.replace(".", "__").upper()] = value
        return env

    def populate(self) -> None:
        """Migrate, queue the shipped course, bulk-insert confirmed subscribers and their
        enrollments, due a minute ago (a welcome lesson goes out at once, at any hour)."""

        from newsletter.config import load_settings
        from newsletter.content.course import load_course
        from newsletter.courses import queue_course
        from newsletter.db.session import create_engine, make_sessionmaker, upgrade_database

        started = time.perf_counter()
        url = f"sqlite:///{self.database}"
        settings = load_settings(ROOT / "config.toml")
        course = load_course(settings.lessons_dir / COURSE)
        upgrade_database(url)
        enrolled_at = datetime.now(UTC) - timedelta(minutes=1)

        async def queue() -> int:
            engine = create_engine(url)
            try:
                async with make_sessionmaker(engine).begin() as session:
                    return (await queue_course(session, course, enrolled_at)).sequence_id
            finally:
                await engine.dispose()

        sequence_id = asyncio.run(queue())
        insert_enrolled_readers(url, sequence_id, self.count, enrolled_at)
        self.setup_s = time.perf_counter() - started

    def wait_until_ready(self, web: Service, worker: Service) -> None:
        """The web app answers, and the worker has sent its first lessons."""
        deadline = time.monotonic() + 60
        while True:
            web.check_alive()
            worker.check_alive()
            try:
                with urllib.request.urlopen(self.url(CHECK_PAGE), timeout=5) as answer:
                    serving = answer.status == 200
            except OSError:
                serving = False
            if serving and self.sink.received() > 0:
                return
            if time.monotonic() > deadline:
                sys.exit(
                    f"FAILED: not ready after 60 s (web answers: {serving}, messages sent: "
                    f"{self.sink.received()})\nweb:\n{web.tail()}\nworker:\n{worker.tail()}"
                )
            time.sleep(0.2)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    # --- runs --------------------------------------------------------------------------------

    def measure(self) -> list[Run]:
        args = self.args
        many, seconds = args.connections, args.reference
        plan = [
            Run("GET /check-your-email 1", "page", CHECK_PAGE, many, seconds),
            Run("GET / 1", "page", SIGNUP_PAGE, many, seconds),
            *(
                run
                for n in range(1, args.rounds + 1)
                for run in (
                    Run(f"{SIGNUPS} {n}", "signup", "/subscribe", many, args.duration),
                    Run(f"{SIGNUPS} serial {n}", "signup", "/subscribe", 1, args.serial),
                )
            ),
            Run("GET /check-your-email 2", "page", CHECK_PAGE, many, seconds),
            Run("GET / 2", "page", SIGNUP_PAGE, many, seconds),
        ]
        runs = []
        for run in plan:
            if run.seconds <= 0:
                continue
            if args.warmup > 0:
                warm = Run("warm-up", run.kind, run.path, run.connections, args.warmup)
                self.load(warm, "warm")
            profile = run.label == f"{SIGNUPS} 1" and self.py_spy is not None
            runs.append(self.load(run, "bench", profile=profile))
        return runs

    def load(self, run: Run, prefix: str, *, profile: bool = False) -> Run:
        """One wrk run, with the CPU time of every process and the lessons sent meanwhile."""
        run.prefix = f"{prefix}{time.time_ns() // 1000}"
        rest = (
            f"&first_name=Ana&timezone={quote('Europe/London', safe='')}&form=signup-page"
            # No version: the course's current sentence, as a form made from it would post.
            "&consent_version=&leave_empty="
        )
        command = [
            self.wrk,
            "-t1",
            f"-c{run.connections}",
            f"-d{max(1, round(run.seconds))}s",
            "--timeout",
            "10s",
            "-s",
            str(self.script),
            self.url(run.path),
            "--",
            run.kind,
            run.path,
            run.prefix,
            "1" if self.args.one_client else "0",
            rest,
        ]
        for service in self.services:
            service.check_alive()
        cpu_before = {name: tree_cpu_seconds(pid) for name, pid in self.pids.items()}
        sent_before, sink_before = self.lessons_sent(), self.sink.received()
        spy = self.start_profile(run) if profile else None
        load = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert load.stdout is not None
        output = load.stdout.read().decode(errors="replace")
        _, status, usage = os.wait4(load.pid, 0)
        load.returncode = os.waitstatus_to_exitcode(status)
        load.stdout.close()
        run.cpu_s = {
            name: tree_cpu_seconds(pid) - cpu_before[name] for name, pid in self.pids.items()
        }
        run.cpu_s["wrk"] = usage.ru_utime + usage.ru_stime
        run.lessons_sent = self.lessons_sent() - sent_before
        run.sink_received = self.sink.received() - sink_before
        if spy is not None:
            spy.wait(timeout=run.seconds + 60)
        lines = [line for line in output.splitlines() if line.startswith("WRK-RESULT ")]
        if load.returncode != 0 or not lines:
            sys.exit(f"FAILED: wrk exited {load.returncode}:\n{output}")
        result = json.loads(lines[-1].removeprefix("WRK-RESULT "))
        run.requests, run.attempted = result["requests"], result["attempted"]
        run.wall_s = result["duration_us"] / 1e6
        run.p50_ms, run.p99_ms = result["p50_us"] / 1e3, result["p99_us"] / 1e3
        run.max_ms = result["max_us"] / 1e3
        run.statuses = Counter({int(status): n for status, n in result["statuses"].items()})
        run.socket_errors = sum(result[kind] for kind in ("connect", "read", "write", "timeout"))
        if run.server_errors:
            sys.exit(
                f"FAILED: {run.label}: {run.server_errors} answers 5xx, all answers by status "
                f"{dict(run.statuses)}; the web process's log:\n{self.services[0].tail()}"
            )
        return run

    def start_profile(self, run: Run) -> subprocess.Popen[bytes]:
        assert self.py_spy is not None
        assert self.args.profile is not None
        command = [self.py_spy, "record", "--pid", str(self.pids["web"]), "--rate", "100"]
        command += ["--gil", "--format", "raw", "--output", str(self.args.profile)]
        command += ["--duration", str(max(1, round(run.seconds)))]
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def lessons_sent(self) -> int:
        """Lesson deliveries recorded 'sent' so far: a read, which in WAL mode runs beside
        the writers without waiting for them."""
        with sqlite3.connect(f"file:{self.database}?mode=ro", uri=True, timeout=30) as db:
            (count,) = db.execute(
                "SELECT count(*) FROM deliveries WHERE status = 'sent' AND kind = 'lesson'"
            ).fetchone()
        return int(count)

    # --- checks ------------------------------------------------------------------------------

    def verify(self, runs: list[Run]) -> None:
        """Each address a counted run signed up is one pending subscriber with one
        confirmation delivery; the send ran through every run."""
        problems = []
        with sqlite3.connect(f"file:{self.database}?mode=ro", uri=True) as db:
            for run in (run for run in runs if run.kind == "signup"):
                rows = db.execute(
                    "SELECT s.status, count(d.id) FROM subscribers s LEFT JOIN deliveries d "
                    "ON d.subscriber_id = s.id AND d.kind = 'confirmation' "
                    "WHERE s.email LIKE ? GROUP BY s.id",
                    (f"{run.prefix}-%",),
                ).fetchall()
                shapes = Counter((status, confirmations) for status, confirmations in rows)
                if set(shapes) - {("pending", 1)}:
                    problems.append(
                        f"{run.label}: subscribers by (status, confirmation deliveries): "
                        f"{dict(shapes)}, expected only ('pending', 1)"
                    )
                if not run.statuses[303] <= len(rows) <= run.attempted:
                    problems.append(
                        f"{run.label}: {len(rows)} subscribers, expected from the "
                        f"{run.statuses[303]} answered 303 to the {run.attempted} sent"
                    )
                self.stored[run.label] = len(rows)
        for run in runs:
            if run.lessons_sent <= 0:
                problems.append(f"{run.label}: no lesson was sent meanwhile")
        if problems:
            sys.exit("FAILED: " + "; ".join(problems))

    # --- report ------------------------------------------------------------------------------

    def report(self, runs: list[Run]) -> None:
        args = self.args
        cores = os.cpu_count()
        print(
            f"signup benchmark, {self.started:%Y-%m-%d %H:%M} UTC, Python "
            f"{sys.version.split()[0]}, {cores} cores shared by wrk, web, worker and smtp-sink"
        )
        print(
            f"SQLite (WAL); `newsletter web` (uvicorn, {plural_processes(self.args.web_workers)}); "
            "`newsletter worker` sending "
            f"{COURSE} lesson 1 to {self.count} subscribers through smtp-sink"
        )
        clients = "all from 127.0.0.1" if args.one_client else "each from another client address"
        print(
            f"wrk: closed loop, {args.warmup:g} s warm-up before each run; every signup a new "
            f"address, {clients}; set-up (not timed): {self.setup_s:.1f} s"
        )
        if args.set:
            print("settings besides the shipped config.toml: " + ", ".join(args.set))
        print()
        print(
            f"{'run':24}{'conns':>6}{'requests':>9}{'req/s':>7}{'p50 ms':>8}{'p99 ms':>8}"
            f"{'max ms':>8}{'errors':>7}{'web CPU ms/req':>15}{'lessons sent':>13}"
        )
        for run in runs:
            print(
                f"{run.label:24}{run.connections:>6}{run.requests:>9}{run.per_second:>7.0f}"
                f"{run.p50_ms:>8.1f}{run.p99_ms:>8.1f}{run.max_ms:>8.0f}{run.errors:>7}"
                f"{run.web_cpu_ms:>15.2f}{run.lessons_sent:>13}"
            )
        rounds = [run for run in runs if run.kind == "signup" and run.connections > 1]
        signup = rounds[0]
        used = ", ".join(f"{name} {seconds:.1f}" for name, seconds in signup.cpu_s.items())
        print()
        print(
            f"CPU seconds during {signup.label} ({signup.wall_s:.1f} s, "
            f"{signup.wall_s * (cores or 1):.1f} CPU seconds on {cores} cores): {used}"
        )
        print(
            f"smtp-sink received {signup.sink_received} messages meanwhile: "
            f"{signup.lessons_sent} lessons, the rest confirmations"
        )
        ceiling = max((r for r in runs if r.path == CHECK_PAGE), key=lambda r: r.per_second)
        page = max((r for r in runs if r.path == SIGNUP_PAGE), key=lambda r: r.per_second)
        rate = statistics.median(r.per_second for r in rounds)
        p99 = statistics.median(r.p99_ms for r in rounds)
        print()
        print(f"framework ceiling, GET /check-your-email (best): {ceiling.per_second:6.0f} req/s")
        print(f"signup page, GET / (best):                       {page.per_second:6.0f} req/s")
        print(f"signups, {SIGNUPS}, median of {len(rounds)} rounds:  {rate:6.0f} req/s")
        print(
            f"ratio signups / ceiling: {rate / ceiling.per_second:.3f}; "
            f"signups / signup page: {rate / page.per_second:.2f}"
        )
        met = [r for r in rounds if r.per_second >= TARGET_RATE and r.p99_ms < TARGET_P99_MS]
        verdict = "meets" if 2 * len(met) > len(rounds) else "MISSES"
        print(
            f"target >= {TARGET_RATE:.0f} signups/s with p99 < {TARGET_P99_MS:.0f} ms: met in "
            f"{len(met)} of {len(rounds)} rounds (median {rate:.0f}/s, p99 {p99:.0f} ms): "
            f"{verdict}"
        )
        stored = ", ".join(f"{label} {n}" for label, n in self.stored.items())
        print(
            f"check: every address signed up ({stored}) is one pending subscriber with one "
            f"confirmation delivery; no 5xx; lessons were sent during every run: OK"
        )
        if args.profile:
            print_profile(args.profile)


def print_profile(path: Path, top: int = 25) -> None:
    """py-spy's collapsed stacks summed by function: samples in the function itself (by
    line), and samples anywhere inside it (all its lines together)."""
    own: Counter[str] = Counter()
    inside: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples, frames = int(count), stack.split(";")
        total += samples
        own[frames[-1]] += samples
        for function in {re.sub(r":\d+\)$", ")", frame) for frame in frames}:
            inside[function] += samples
    if not total:
        print(f"\npy-spy recorded nothing into {path}")
        return
    print(
        f"\npy-spy, web process, main thread while holding the GIL, during POST /subscribe: "
        f"{total} samples at 100 Hz ({path}; the sampling slows the run it profiles)"
    )
    print(f"{'own':>6}  function and line")
    for frame, samples in own.most_common(top):
        print(f"{samples / total:>6.1%}  {frame}")
    print(f"\n{'inside':>7}  function (start-up, event loop and ASGI layers left out)")
    shown = [(f, n) for f, n in inside.most_common() if not any(b in f for b in BOILERPLATE)]
    for frame, samples in shown[:top]:
        print(f"{samples / total:>7.1%}  {frame}")


if __name__ == "__main__":
    main()
