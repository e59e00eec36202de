"""The cost of one signup in the web process, without HTTP and without other processes: a
figure that other tenants of a shared machine cannot move.

    .venv/bin/python bench/signup_cost.py [--signups 2000] [--warmup 200] [--instructions]

The app is built as `newsletter web` builds it (create_app on a fresh, migrated SQLite file
with the shipped course queued, writes through db.session.prompt_writes, on uvloop) and
called directly as an ASGI application: each request is one POST /subscribe with a new
address, as the signup page sends it, and must answer 303. Printed: CPU time per signup
(user + system, every thread of the process, from time.process_time), and wall time.

CPU time still moves with the machine (frequency, caches, a busy neighbour on the same
core). `--instructions` counts instead: it runs this script twice under valgrind's
callgrind (Debian's valgrind package), with `--signups` and three times as many, and
prints the difference in executed instructions divided by the difference in signups.
That takes about three minutes, and the count does not depend on how busy the machine is
(only on the code, Python and the libraries).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
COURSE = "leg-weakness-after-microdiscectomy"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--signups", type=int, default=2000, help="signups measured")
    parser.add_argument("--warmup", type=int, default=200, help="signups before measuring")
    parser.add_argument(
        "--instructions", action="store_true", help="count instructions with callgrind"
    )
    args = parser.parse_args()
    if args.instructions:
        count_instructions(args.signups, args.warmup)
    else:
        import uvloop

        uvloop.run(measure(args.signups, args.warmup))


def count_instructions(signups: int, warmup: int) -> None:
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        sys.exit("--instructions needs valgrind: sudo apt-get install -y valgrind")
    counts = {}
    for n in (signups, 3 * signups):
        command = [
            valgrind,
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            __file__,
            f"--signups={n}",
            f"--warmup={warmup}",
        ]
        done = subprocess.run(command, capture_output=True, text=True)
        found = re.search(r"Collected : (\d+)", done.stderr)
        if done.returncode or found is None:
            sys.exit(f"the run under valgrind failed:\n{done.stdout}{done.stderr[-3000:]}")
        counts[n] = int(found.group(1))
        print(f"{n} signups after {warmup} warm-up: {counts[n]:,} instructions in all")
    per_signup = (counts[3 * signups] - counts[signups]) / (2 * signups)
    print(f"instructions per signup: {per_signup / 1e6:.2f} million")


async def measure(signups: int, warmup: int) -> None:
    from newsletter.clock import SystemClock
    from newsletter.config import load_settings
    from newsletter.content.course import load_course
    from newsletter.courses import queue_course
    from newsletter.db.session import (
        create_engine,
        make_sessionmaker,
        prompt_writes,
        upgrade_database,
    )
    from newsletter.tokens import LinkMaker, Tokens
    from newsletter.web.app import create_app

    folder = Path(tempfile.mkdtemp(prefix="signup-cost-"))
    url = f"sqlite:///{folder / 'newsletter.db'}"
    os.environ["NEWSLETTER_SIGNUP__SIGNUPS_PER_IP_PER_HOUR"] = "1000000000"
    settings = load_settings(ROOT / "config.toml")
    upgrade_database(url)
    engine = create_engine(url)
    sessions = make_sessionmaker(engine)
    try:
        async with sessions.begin() as session:
            course = load_course(settings.lessons_dir / COURSE)
            await queue_course(session, course, datetime.now(UTC))
        async with prompt_writes(sessions) as writes:
            links = LinkMaker(Tokens("cost-" * 8), settings.site.base, "leave@example.com")
            app = create_app(
                settings, sessions, SystemClock(), links, secret="web-" * 8, writes=writes
            )
            for n in range(warmup):
                await sign_up(app, n)
            cpu, wall = time.process_time(), time.perf_counter()
            for n in range(warmup, warmup + signups):
                await sign_up(app, n)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    finally:
        await engine.dispose()
        shutil.rmtree(folder)
    print(
        f"{signups} signups: {cpu / signups * 1e3:.3f} ms CPU each "
        f"({wall / signups * 1e3:.3f} ms wall)"
    )


async def sign_up(app, n: int) -> None:  # type: ignore[no-untyped-def]
    body = urlencode(
        {
            "email": f"cost{n}@example.com",
            "first_name": "Ann",
            "timezone": "Europe/London",
            "form": "signup-page",
            "consent_version": "",  # the course's current sentence
        }
    ).encode()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/subscribe",
        "raw_path": b"/subscribe",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"content-type", b"application/x-www-form-urlencoded"),
            (b"content-length", str(len(body)).encode()),
            (b"user-agent", b"signup-cost"),
        ],
        # Each from another address in the documentation prefix, as many visitors would.
        "client": (f"2001:db8::{n:x}", 40000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    requests = [{"type": "http.request", "body": body, "more_body": False}]
    answers: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return requests.pop() if requests else {"type": "http.disconnect"}

    async def send(message: dict[str, object]) -> None:
        answers.append(message)

    await app(scope, receive, send)
    status = answers[0].get("status")
    if status != 303:
        sys.exit(f"signup {n} answered {status}, not 303")


if __name__ == "__main__":
    main()
