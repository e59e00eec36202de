"""Peak memory of `newsletter subscribers export` against the number of subscribers.

    .venv/bin/python bench/export.py [--sizes 1 20000 200000] [--source DIR]

For each size, set-up (not measured): a fresh SQLite file in a temporary folder, migrated;
the shipped course queued; SIZE confirmed subscribers, each enrolled in it, bulk-inserted
(bench/population.py), then every consent record set to one as the signup form writes it
(form, text, version, given_at, IP, user agent, confirmed_at, confirmed IP and agent).

Measured: the real command, `python -m newsletter subscribers export --out FILE`, in a
child process under `/usr/bin/time -v`: its maximum resident set size and wall time. Each
size is compared with the one before; the first, a single subscriber, shows what the
command costs before it reads anything. An export that streams keeps the same peak
whatever the size. The file written must hold a header and one row per subscriber, or the
script fails.

--source DIR runs the command from another checkout of the repository (for example the
commit before a change, unpacked with `git archive`), on the same files and venv.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import itertools
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.population import insert_enrolled_readers  # noqa: E402
from newsletter.content.course import load_course  # noqa: E402
from newsletter.courses import queue_course  # noqa: E402
from newsletter.db.session import create_engine as create_async_engine  # noqa: E402
from newsletter.db.session import make_sessionmaker, upgrade_database  # noqa: E402

COURSE = ROOT / "lessons" / "leg-weakness-after-microdiscectomy"
AT = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
#: As newsletter/signup.py records a signup confirmed from a phone.
CONSENT = {
    "form": "signup-page",
    "text": (
        "Send me this free email course, one lesson every few days. "
        "I can stop it at any time with the link at the foot of every email."
    ),
    "version": "2026-11-1",
    "given_at": "2026-06-01T10:00:00+00:00",
    "ip": "203.0.113.7",
    "user_agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15",
    "confirmed_at": "2026-06-01T10:05:00+00:00",
    "confirmed_ip": "203.0.113.8",
    "confirmed_user_agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X)",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 20_000, 200_000])
    parser.add_argument("--source", type=Path, default=ROOT, help="checkout to run the CLI from")
    args = parser.parse_args()
    source = args.source.resolve()
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    print(
        f"export benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, Python "
        f"{platform.python_version()}, {os.cpu_count()} cores"
    )
    print(f"CLI from {source}" + (f" (this checkout, {commit})" if source == ROOT else ""))
    print(f"{'subscribers':>12} {'set-up s':>9} {'export s':>9} {'peak RSS MB':>12} {'CSV MB':>7}")
    peaks = []
    for size in args.sizes:
        with tempfile.TemporaryDirectory(prefix="bench-export-") as folder:
            database = Path(folder) / "newsletter.db"
            started = time.monotonic()
            populate(f"sqlite:///{database}", size)
            set_up_s = time.monotonic() - started
            out = Path(folder) / "export.csv"
            wall_s, peak_kb = export(source, database, Path(folder) / "var", out)
            check(out, size)
            peaks.append(peak_kb / 1024)
            print(
                f"{size:>12} {set_up_s:>9.1f} {wall_s:>9.1f} {peak_kb / 1024:>12.1f} "
                f"{out.stat().st_size / 1e6:>7.1f}"
            )
    for (smaller, peak), (larger, larger_peak) in itertools.pairwise(
        zip(args.sizes, peaks, strict=True)
    ):
        print(f"{larger} vs {smaller} subscribers: peak RSS {larger_peak - peak:+.1f} MB")


def populate(url: str, size: int) -> None:
    upgrade_database(url)

    async def queue() -> int:
        engine = create_async_engine(url)
        try:
            async with make_sessionmaker(engine).begin() as session:
                return (await queue_course(session, load_course(COURSE), AT)).sequence_id
        finally:
            await engine.dispose()

    sequence_id = asyncio.run(queue())
    insert_enrolled_readers(url, sequence_id, size, AT)
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE subscribers SET consent = :consent"),
            {"consent": json.dumps(CONSENT)},
        )
    engine.dispose()


def export(source: Path, database: Path, var: Path, out: Path) -> tuple[float, int]:
    """(wall seconds, maximum resident set size in KiB) of one export by the real CLI."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")} | {
        "NEWSLETTER_DATABASE__URL": f"sqlite:///{database}",
        "NEWSLETTER_PATHS__VAR": str(var),
        "NEWSLETTER_SECRET_KEY": "bench-export-secret-of-some-length",
    }
    command = [sys.executable, "-m", "newsletter", "subscribers", "export", "--out", str(out)]
    result = subprocess.run(
        ["/usr/bin/time", "-v", *command], cwd=source, env=env, capture_output=True, text=True
    )
    if result.returncode != 0:
        sys.exit(f"export failed:\n{result.stderr}")
    peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr)
    wall = re.search(
        r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([\d.]+)", result.stderr
    )
    if peak is None or wall is None:
        sys.exit(f"no figures from /usr/bin/time:\n{result.stderr}")
    hours, minutes, seconds = wall.groups()
    return int(hours or 0) * 3600 + int(minutes) * 60 + float(seconds), int(peak.group(1))


def check(out: Path, size: int) -> None:
    with out.open(newline="", encoding="utf-8") as handle:
        rows = sum(1 for _ in csv.reader(handle))
    if rows != size + 1:
        sys.exit(f"{out}: {rows} rows, expected a header and {size}")


if __name__ == "__main__":
    main()
