"""Per-message cost of getting a rendered lesson ready for SMTP's DATA, in microseconds.

    .venv/bin/python bench/wire.py [--number 2000] [--repeat 7] [--cpu 0]

One lesson 1 message of the shipped course, rendered as the dispatcher renders it (real
signed links), then each step timed on its own with timeit (best of `--repeat`, CPU time of
this process, pinned to `--cpu`):

- aiosmtplib's own preparation in SMTP.data(): its line-end regex over the whole message,
  its dot-stuffing regex, and the address parsing of MAIL FROM and RCPT TO (quote_address);
- newsletter's: render() against render_prepared() (the message and its DATA form, built
  from chunks settled when the lesson was compiled), and Envelope.payload() of the result;
- prepare() on the whole rendered message, the general path for bytes built elsewhere.

No network and no database: this isolates the per-message byte work that "Send bytes once"
(docs/benchmarks.md) moved out of the send. bench/delivery.py and bench/worker.py measure
what it is worth from due to sent.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import timeit
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=2000, help="calls per timing")
    parser.add_argument("--repeat", type=int, default=7, help="timings; the best is kept")
    parser.add_argument("--cpu", type=int, default=0, help="core for this process; -1: no pin")
    args = parser.parse_args()
    if args.cpu >= 0 and args.cpu in os.sched_getaffinity(0):
        os.sched_setaffinity(0, {args.cpu})

    from aiosmtplib.email import quote_address
    from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings

    from newsletter.config import load_settings
    from newsletter.content.course import load_course
    from newsletter.delivery.transport import Envelope
    from newsletter.render import LessonEmail, Recipient, make_environment, make_message_id
    from newsletter.tokens import LinkMaker, Tokens
    from newsletter.wire import prepare

    settings = load_settings(ROOT / "config.toml")
    course = load_course(settings.lessons_dir / "leg-weakness-after-microdiscectomy")
    sender = settings.sender
    links = LinkMaker(Tokens("bench-secret" * 4), settings.site.base, sender.unsubscribe_address)
    email = LessonEmail(make_environment(settings.templates_dir), sender, course, course.lessons[0])
    now = datetime.now(UTC)
    recipient = Recipient("reader10000@example.com", "Reader10000")
    personal = links.personal_links(10000, now)
    message_id = make_message_id(sender.domain)

    def render() -> bytes:
        return email.render(recipient, personal, message_id=message_id, date=now)

    def render_prepared() -> Any:
        return email.render_prepared(recipient, personal, message_id=message_id, date=now)

    data = render()
    normalized = normalize_message_line_endings(data)
    envelope = Envelope.of("bounce+10000@example.org", recipient.email, render_prepared())

    steps: list[tuple[str, Callable[[], object]]] = [
        ("aiosmtplib: line-end regex", lambda: normalize_message_line_endings(data)),
        ("aiosmtplib: dot-stuffing regex", lambda: PERIOD_REGEX.sub(b"..", normalized)),
        (
            "aiosmtplib: quote_address x2",
            lambda: (quote_address(envelope.sender), quote_address(envelope.recipient)),
        ),
        ("newsletter: render()", render),
        ("newsletter: render_prepared()", render_prepared),
        ("newsletter: Envelope.payload()", envelope.payload),
        ("newsletter: prepare(whole message)", lambda: prepare(data)),
    ]
    print(f"per-message DATA preparation, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    lines = data.count(b"\r\n")
    print(f"message: lesson 1 of {course.slug}, {len(data)} bytes, {lines} lines")
    print(f"best of {args.repeat} x {args.number} calls, CPU time\n")
    print(f"{'step':40} {'us/msg':>8}")
    for name, step in steps:
        timer = timeit.Timer(step, timer=time.process_time)
        best = min(timer.repeat(repeat=args.repeat, number=args.number)) / args.number
        print(f"{name:40} {best * 1e6:8.2f}")


if __name__ == "__main__":
    main()
