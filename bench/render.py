"""Per-recipient render cost: the full message bytes of one lesson for one subscriber.

    .venv/bin/python bench/render.py [--recipients 20000] [--rounds 5] [--lesson 3] [--dkim]

Compiles one lesson of the shipped course once, then renders it for many distinct
recipients (signed links included) and reports the median microseconds per message.
In the same run it times the generic way (an email.message.EmailMessage per recipient,
serialized by the standard library) on the same compiled HTML and text, so the ratio
between the two is meaningful on a noisy, shared machine.

With --dkim it also times rendering plus DKIM signing of each message (newsletter.dkim,
a 2048-bit key made for the run), in rounds interleaved with unsigned ones, and dkimpy's
own dkim.sign on a sample of --dkimpy-sample messages per round, for comparison.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

import dkim

from newsletter.config import load_settings
from newsletter.content.course import load_course
from newsletter.dkim import (
    CANONICALIZATION,
    OVER_SIGNED,
    SIGNED_HEADERS,
    DkimSigner,
    generate_private_key,
)
from newsletter.render import LessonEmail, Recipient, make_environment
from newsletter.tokens import LinkMaker, Tokens

ROOT = Path(__file__).resolve().parents[1]
COURSE = "leg-weakness-after-microdiscectomy"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--lesson", default="3")
    parser.add_argument("--dkim", action="store_true", help="also time DKIM signing")
    parser.add_argument("--dkimpy-sample", type=int, default=200)
    args = parser.parse_args()

    settings = load_settings(ROOT / "config.toml")
    course = load_course(settings.lessons_dir / COURSE)
    env = make_environment(settings.templates_dir)
    links = LinkMaker(Tokens("bench-secret" * 4), settings.site.base, "unsubscribe@example.org")
    now = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)
    recipients = [
        (index, Recipient(f"reader{index}@example.com", f"Reader Nº{index}"))
        for index in range(args.recipients)
    ]

    started = time.perf_counter()
    email = LessonEmail(env, settings.sender, course, course.lesson(args.lesson))
    compile_ms = (time.perf_counter() - started) * 1e3

    def spliced() -> int:
        size = 0
        for index, recipient in recipients:
            message = email.render(
                recipient,
                links.personal_links(index, now),
                message_id=f"<{index}@example.org>",
                date=now,
            )
            size += len(message)
        return size

    def generic() -> int:
        size = 0
        for index, recipient in recipients:
            personal = links.personal_links(index, now)
            message = EmailMessage(policy=SMTP)
            message["From"] = f"{settings.sender.name} <{settings.sender.address}>"
            message["To"] = f"{recipient.first_name} <{recipient.email}>"
            message["Subject"] = email.lesson.subject
            message["Message-ID"] = f"<{index}@example.org>"
            message["List-Unsubscribe"] = f"<{personal.unsubscribe_url}>"
            message.set_content(email.text(recipient, personal))
            message.add_alternative(email.html(recipient, personal), subtype="html")
            size += len(message.as_bytes())
        return size

    spliced_us, spliced_bytes = measure(spliced, len(recipients), args.rounds)
    generic_us, _ = measure(generic, len(recipients), max(1, args.rounds // 2))
    print(f"lesson {args.lesson} of {course.slug}: compiled once in {compile_ms:.1f} ms")
    print(f"recipients per round: {len(recipients)}, rounds: {args.rounds}")
    print(f"message size: {spliced_bytes / len(recipients) / 1024:.1f} KiB on average")
    print(f"spliced render (ours):        {spliced_us:7.1f} us per message (median of rounds)")
    print(f"EmailMessage per recipient:   {generic_us:7.1f} us per message (median of rounds)")
    print(f"ratio generic / ours:         {generic_us / spliced_us:7.1f}x")
    verdict = "meets" if spliced_us < 100 else "MISSES"
    print(f"target < 100 us per message:  {verdict}")
    if args.dkim:
        report_dkim(email, spliced, len(recipients), args.rounds, args.dkimpy_sample)


def report_dkim(
    email: LessonEmail, spliced: Callable[[], int], count: int, rounds: int, sample: int
) -> None:
    """Render only, render + our signature, render + dkimpy's dkim.sign: rounds of each
    interleaved, so that the machine's drift falls on all three alike."""
    domain, selector = "example.org", "bench"
    key = generate_private_key(2048)
    signer = DkimSigner(domain, selector, key)
    links = LinkMaker(Tokens("bench-secret" * 4), "https://example.org", "u@example.org")
    now = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)

    def rendered(index: int) -> bytes:
        return email.render(
            Recipient(f"reader{index}@example.com", f"Reader Nº{index}"),
            links.personal_links(index, now),
            message_id=f"<{index}@example.org>",
            date=now,
        )

    def signed() -> int:
        return sum(len(signer.sign(rendered(index))) for index in range(count))

    def dkimpy_signed() -> int:
        size = 0
        for index in range(sample):
            message = rendered(index)
            header = dkim.sign(
                message,
                selector.encode(),
                domain.encode(),
                key,
                canonicalize=tuple(CANONICALIZATION.split(b"/")),
                include_headers=[*SIGNED_HEADERS, *OVER_SIGNED],
            )
            size += len(header + message)
        return size

    plain_timings, signed_timings, dkimpy_timings = [], [], []
    for _ in range(rounds):
        plain_timings.append(measure(spliced, count, 1)[0])
        signed_timings.append(measure(signed, count, 1)[0])
        dkimpy_timings.append(measure(dkimpy_signed, sample, 1)[0])
    plain_us = statistics.median(plain_timings)
    signed_us = statistics.median(signed_timings)
    dkimpy_us = statistics.median(dkimpy_timings)
    print()
    canonicalization = CANONICALIZATION.decode()
    print(f"DKIM, rsa-sha256 with a 2048-bit key, {canonicalization}; rounds interleaved:")
    print(f"render only:                  {plain_us:7.1f} us per message (median of rounds)")
    print(f"render + sign (newsletter):   {signed_us:7.1f} us per message (median of rounds)")
    print(f"  of which signing:           {signed_us - plain_us:7.1f} us per message")
    print(f"ratio signed / unsigned:      {signed_us / plain_us:7.1f}x")
    print(f"render + dkimpy's dkim.sign:  {dkimpy_us:7.1f} us per message ({sample} a round)")
    print(
        f"ratio dkim.sign / newsletter: {(dkimpy_us - plain_us) / (signed_us - plain_us):7.1f}x"
        " (signing alone)"
    )


def measure(run: Callable[[], int], count: int, rounds: int) -> tuple[float, int]:
    timings, size = [], 0
    for _ in range(rounds):
        started = time.perf_counter()
        size = run()
        timings.append((time.perf_counter() - started) / count * 1e6)
    return statistics.median(timings), size


if __name__ == "__main__":
    main()
