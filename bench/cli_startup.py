"""How long an admin waits for a `newsletter` command: wall and CPU time of whole processes,
this checkout beside another (`--baseline DIR`, e.g. a worktree of an older commit), run
in turns so that both meet the same load.

    .venv/bin/python bench/cli_startup.py [--runs 15] [--baseline DIR]

Each command runs on a migrated SQLite file of its own with nothing in it (so what is
timed is mostly start-up: imports, config, opening the database); PYTHONPATH names the
checkout whose package runs. Python writes no bytecode cache during the runs
(PYTHONDONTWRITEBYTECODE), so both checkouts are byte-compiled first, as `make test` does.
"""

from __future__ import annotations

import argparse
import compileall
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMMANDS = [
    ["--version"],
    ["subscribers", "list"],
    ["sequences", "list"],
    ["tick"],
    ["sending", "status"],
]


def run_once(checkout: Path, command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds (user + system) of one `newsletter COMMAND` process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "newsletter", *command],
        cwd=checkout,
        env=env | {"PYTHONPATH": str(checkout)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="runs of each command, each side")
    parser.add_argument("--baseline", type=Path, metavar="DIR", help="another checkout")
    args = parser.parse_args()

    checkouts = {"this": REPO} | ({"baseline": args.baseline.resolve()} if args.baseline else {})
    for checkout in checkouts.values():
        compileall.compile_dir(checkout / "newsletter", quiet=1)
    base = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    base["PYTHONDONTWRITEBYTECODE"] = "1"
    with tempfile.TemporaryDirectory() as folder:
        times: dict[tuple[str, str], list[tuple[float, float]]] = {}
        envs = {}
        for name in checkouts:
            envs[name] = base | {
                "NEWSLETTER_DATABASE__URL": f"sqlite:///{folder}/{name}.db",
                "NEWSLETTER_PATHS__VAR": f"{folder}/{name}-var",
            }
            run_once(checkouts[name], ["subscribers", "list"], envs[name])  # creates the file
        for _ in range(args.runs):
            for command in COMMANDS:
                for name, checkout in checkouts.items():
                    key = (name, " ".join(command))
                    times.setdefault(key, []).append(run_once(checkout, command, envs[name]))

    print(f"{'command':<18} {'checkout':<9} {'wall s':>7} {'CPU s':>6}  (medians of {args.runs})")
    for command in COMMANDS:
        words = " ".join(command)
        medians = {}
        for name in checkouts:
            runs = times[(name, words)]
            medians[name] = (
                statistics.median(w for w, _ in runs),
                statistics.median(c for _, c in runs),
            )
            wall, cpu = medians[name]
            print(f"{words:<18} {name:<9} {wall:7.2f} {cpu:6.2f}")
        if "baseline" in medians:
            ratio = medians["this"][1] / medians["baseline"][1]
            print(f"{'':<18} {'ratio':<9} {'':>7} {ratio:6.2f}  (CPU, this / baseline)")


if __name__ == "__main__":
    main()
