"""Commands for admins: the database, subscribers, sequences, enrolling, sending switches."""

from __future__ import annotations

import csv
import io
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer
from rich.progress import Progress, TaskID
from rich.text import Text
from sqlalchemy import and_, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from newsletter import segments
from newsletter.cli.app import (
    Fail,
    JsonOption,
    app,
    db_app,
    err,
    out,
    run,
    sequences_app,
    settings,
    subscribers_app,
)
from newsletter.cli.content import print_problems, resolve_course_path
from newsletter.cli.terminal import LiteralTable, literal, neutralise, print_json
from newsletter.config import Settings
from newsletter.content.check import check_course
from newsletter.content.lessons import format_duration
from newsletter.courses import queue_course, set_sequence_status
from newsletter.db import queries
from newsletter.db.copy import copy_database
from newsletter.db.models import (
    Delivery,
    DeliveryStatus,
    Enrollment,
    EnrollmentStatus,
    LessonSnapshot,
    MailEvent,
    Sequence,
    SequenceStatus,
    SequenceVersion,
    Subscriber,
    SubscriberStatus,
)
from newsletter.db.session import create_engine, make_sessionmaker, upgrade_database
from newsletter.errors import NewsletterError, errors_among
from newsletter.render import make_environment
from newsletter.subscriber_csv import read_import, spreadsheet_safe
from newsletter.subscribers import (
    EXPORT_COLUMNS,
    NewSubscriber,
    add_subscriber,
    add_tags,
    enroll_confirmed,
    export_rows,
    forget,
    import_subscribers,
    remove_tags,
    tags_of,
    unsubscribe,
)
from newsletter.tags import normalize_tag
from newsletter.words import plural

IMPORT_BATCH = 1000


def admin_consent(now: datetime, source: str | None = None) -> dict[str, Any]:
    """The consent record of someone an admin added: the admin vouches for their consent."""
    record = {"form": "admin command line", "text": "added by an administrator"}
    return record | {"given_at": now.isoformat()} | ({"source": source} if source else {})


@asynccontextmanager
async def database(
    config: Settings, *, read_only: bool = False
) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions on the configured database; the embedded SQLite file migrates itself.
    Read-only sessions never hold up the workers' writes."""
    if config.database.url.startswith("sqlite"):
        upgrade_database(config.database.url)
    engine = create_engine(
        config.database.url, busy_timeout_ms=round(config.database.busy_timeout_s * 1000)
    )
    try:
        yield make_sessionmaker(engine, read_only=read_only)
    finally:
        await engine.dispose()


def now() -> datetime:
    return datetime.now(UTC)


def parse_when(text: str | None) -> datetime:
    if not text:
        return now()
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise NewsletterError(f"{text!r}: expected a time like 2026-12-01T09:00+01:00") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# --- db ----------------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply pending schema migrations (run this before starting PostgreSQL workers)."""
    upgrade_database(settings().database.url)
    out.print("Database schema is up to date.")


class _CopyProgress:
    """Each table on stderr: a bar on a terminal, and one line when it is copied; in a log,
    a line every PROGRESS_EVERY_S of a long table too."""

    PROGRESS_EVERY_S = 10.0

    def __init__(self, bar: Progress) -> None:
        self.bar = bar
        self.task: TaskID | None = None
        self.said = 0.0

    def table_started(self, table: str, rows: int) -> None:
        self.task = self.bar.add_task(table, total=rows)
        self.said = time.monotonic()

    def rows_copied(self, table: str, copied: int, rows: int) -> None:
        if self.task is not None:
            self.bar.update(self.task, completed=copied)
        if not err.is_terminal and time.monotonic() - self.said > self.PROGRESS_EVERY_S:
            err.print(f"{table}: {copied:,} of {rows:,} rows", markup=False)
            self.said = time.monotonic()

    def table_done(self, table: str, rows: int, seconds: float) -> None:
        if self.task is not None:
            self.bar.remove_task(self.task)
            self.task = None
        err.print(f"{table}: {rows:,} {_rows(rows)} copied in {seconds:.1f} s", markup=False)


def _rows(count: int) -> str:
    return "row" if count == 1 else "rows"


@db_app.command("copy")
def db_copy(
    source: Annotated[
        str, typer.Argument(help="Database URL to copy from, e.g. sqlite:///var/newsletter.db")
    ],
    target: Annotated[
        str,
        typer.Argument(
            help="An empty database to copy into, e.g. postgresql://newsletter@db/newsletter"
        ),
    ],
) -> None:
    """Copy every table to another database (SQLite to PostgreSQL, or back), then count
    both sides. The target must hold no rows; it is migrated first. Stop workers and the
    web app first: what they write once the copy has begun is not copied (docs/postgres.md)."""
    with Progress(console=err, transient=True, disable=not err.is_terminal) as bar:
        report = copy_database(source, target, progress=_CopyProgress(bar))
    table = LiteralTable("table", "source rows", "target rows", "source ids", "target ids", "")
    for check in report.tables:
        table.add_row(
            check.name,
            f"{check.source_rows:,}",
            f"{check.target_rows:,}",
            check.source_ids,
            check.target_ids,
            "same" if check.same else Text("DIFFERENT", style="bold red"),
        )
    out.print(table)
    if not report.same:
        differ = [check.name for check in report.tables if not check.same]
        err.print(
            f"error: {', '.join(differ)} differ between the source and the target: the copy "
            "was rolled back and the target holds no rows",
            markup=False,
        )
        raise Fail
    tables = plural(len(report.tables), "table")
    out.print(
        f"Copied {report.rows:,} {_rows(report.rows)} of {tables} from {report.source}"
        f" to {report.target} in {report.seconds:.1f} s; every table has the "
        "same rows and ids on both sides.",
        markup=False,
    )


# --- subscribers -------------------------------------------------------------------------


EnrollOption = Annotated[
    list[str] | None, typer.Option("--enroll", help="Sequence slug to enroll in (repeatable)")
]


@subscribers_app.command("add")
def subscribers_add(
    email: str,
    name: Annotated[str, typer.Option(help="First name")] = "",
    timezone: Annotated[str | None, typer.Option(help="IANA time zone")] = None,
    enroll: EnrollOption = None,
) -> None:
    """Add a confirmed subscriber (you vouch for their consent) and enroll them."""
    config = settings()
    new = NewSubscriber.parse(email, name, timezone)

    async def work() -> None:
        async with database(config) as sessions, sessions.begin() as session:
            if await queries.is_suppressed(session, new.email):
                raise NewsletterError(
                    f"{new.email} is on the suppression list (it bounced or complained); "
                    "it will not be mailed again"
                )
            at = now()
            subscriber, created = await add_subscriber(
                session, new, status=SubscriberStatus.CONFIRMED, consent=admin_consent(at), now=at
            )
            for slug in enroll or []:
                await _enroll(session, subscriber, slug)
            verb = "Added " if created else "Already subscribed: "
            out.print(Text.assemble(verb, literal(subscriber.email), f" (id {subscriber.id})"))

    run(work)


async def _enroll(
    session: AsyncSession, subscriber: Subscriber, slug: str, at: datetime | None = None
) -> bool:
    sequence = await _live_sequence(session, slug)
    if subscriber.status != SubscriberStatus.CONFIRMED:
        raise NewsletterError(
            f"{subscriber.email} is {subscriber.status}; only confirmed subscribers can be enrolled"
        )
    return await queries.enroll(session, subscriber.id, sequence.id, at or now())


async def _live_sequence(session: AsyncSession, slug: str) -> Sequence:
    sequence = await queries.sequence_by_slug(session, slug)
    if sequence is None:
        raise NewsletterError(
            f"no sequence '{slug}'; queue it with: newsletter sequences queue lessons/{slug}"
        )
    if sequence.status == SequenceStatus.ARCHIVED:
        raise NewsletterError(f"sequence '{slug}' is archived")
    return sequence


async def _subscriber(session: AsyncSession, email: str) -> Subscriber:
    subscriber = await queries.subscriber_by_email(session, NewSubscriber.parse(email).email)
    if subscriber is None:
        raise NewsletterError(f"no subscriber {email}")
    return subscriber


def _subscriber_fields(subscriber: Subscriber) -> dict[str, Any]:
    return {
        "id": subscriber.id,
        "email": subscriber.email,
        "first_name": subscriber.first_name,
        "status": subscriber.status,
        "timezone": subscriber.timezone,
        "created_at": subscriber.created_at,
        "confirmed_at": subscriber.confirmed_at,
        "unsubscribed_at": subscriber.unsubscribed_at,
    }


def event_fields(event: MailEvent) -> dict[str, Any]:
    """A bounce, complaint or unsubscribe by mail, for --json."""
    return {
        "received_at": event.received_at,
        "kind": event.kind,
        "source": event.source,
        "email": event.email,
        "status": event.status,
        "reason": event.reason,
        "outcome": event.outcome,
        "delivery_id": event.delivery_id,
    }


@subscribers_app.command("list")
def subscribers_list(
    status: Annotated[SubscriberStatus | None, typer.Option(help="Only this status")] = None,
    segment: Annotated[
        str | None,
        typer.Option(help="Only those it matches, e.g. 'tag:baker and not course:bread:active'"),
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many rows")] = 50,
    as_json: JsonOption = False,
) -> None:
    """List subscribers, newest first; `in all` counts every match, not only those shown."""
    config = settings()
    parsed = segments.parse(segment) if segment is not None else segments.Everyone()

    async def work() -> None:
        async with database(config, read_only=True) as sessions, sessions() as session:
            await check_courses_exist(session, segments.courses_named(parsed))
            matching = segments.where_clause(parsed, config.schedule.timezone)
            if status is not None:
                matching = and_(matching, Subscriber.status == status)
            query = select(Subscriber).where(matching)
            rows = list(await session.scalars(query.order_by(Subscriber.id.desc()).limit(limit)))
            total = await session.scalar(
                select(func.count()).select_from(Subscriber).where(matching)
            )
        if as_json:
            print_json({"total": total, "subscribers": [_subscriber_fields(r) for r in rows]})
            return
        table = LiteralTable("id", "email", "name", "status", "time zone", "since")
        for row in rows:
            table.add_row(
                str(row.id),
                row.email,
                row.first_name,
                row.status,
                row.timezone or "(default)",
                f"{row.created_at:%Y-%m-%d}",
            )
        out.print(table)
        out.print(f"{plural(total or 0, 'subscriber')} in all")

    run(work)


async def check_courses_exist(session: AsyncSession, slugs: set[str]) -> None:
    """A segment naming a course that does not exist is a typo, not an empty match."""
    known = set(await session.scalars(select(Sequence.slug).where(Sequence.slug.in_(slugs))))
    if missing := sorted(slugs - known):
        raise NewsletterError(
            f"the segment names no course called {', '.join(missing)} (see `sequences list`)"
        )


@subscribers_app.command("tag")
def subscribers_tag(
    email: str,
    tags: Annotated[list[str], typer.Argument(help="Tags to add (lower-case words)")],
    remove: Annotated[bool, typer.Option("--remove", help="Take these tags off instead")] = False,
) -> None:
    """Add tags to a subscriber, or take them off (segments match on them)."""
    config = settings()
    wanted = [normalize_tag(tag) for tag in tags]

    async def work() -> list[str]:
        async with database(config) as sessions, sessions.begin() as session:
            subscriber = await _subscriber(session, email)
            if remove:
                await remove_tags(session, subscriber.id, wanted)
            else:
                await add_tags(session, [(subscriber.id, tag) for tag in wanted], now())
            return await tags_of(session, subscriber.id)

    held = run(work)
    out.print(Text.assemble(literal(email), ": ", literal(" ".join(held) or "(no tags)")))


@subscribers_app.command("show")
def subscribers_show(email: str, as_json: JsonOption = False) -> None:
    """One subscriber: status, consent, enrollments and every email sent or queued."""
    config = settings()

    async def work() -> None:
        async with database(config, read_only=True) as sessions, sessions() as session:
            subscriber = await _subscriber(session, email)
            enrollments = (
                await session.execute(
                    select(Enrollment, Sequence.slug)
                    .join(Sequence, Sequence.id == Enrollment.sequence_id)
                    .where(Enrollment.subscriber_id == subscriber.id)
                    .order_by(Enrollment.id)
                )
            ).all()
            deliveries = (
                await session.execute(
                    select(Delivery, Sequence.slug)
                    .outerjoin(Sequence, Sequence.id == Delivery.sequence_id)
                    .where(Delivery.subscriber_id == subscriber.id)
                    .order_by(Delivery.id)
                )
            ).all()
            events = list(
                await session.scalars(
                    select(MailEvent)
                    .where(
                        (MailEvent.subscriber_id == subscriber.id)
                        | (MailEvent.email == subscriber.email)
                    )
                    .order_by(MailEvent.id)
                )
            )
            tags = await tags_of(session, subscriber.id)
        if as_json:
            print_json(
                _subscriber_fields(subscriber)
                | {
                    "updated_at": subscriber.updated_at,
                    "tags": tags,
                    "consent": subscriber.consent,
                    "enrollments": [
                        {
                            "sequence": slug,
                            "status": enrollment.status,
                            "enrolled_at": enrollment.enrolled_at,
                            "last_sent_at": enrollment.last_sent_at,
                            "next_check_at": enrollment.next_check_at,
                        }
                        for enrollment, slug in enrollments
                    ],
                    "deliveries": [
                        {
                            "sequence": slug,
                            "lesson": delivery.lesson_key,
                            "kind": delivery.kind,
                            "status": delivery.status,
                            "due_at": delivery.due_at,
                            "sent_at": delivery.sent_at,
                            "attempts": delivery.attempts,
                            "last_error": delivery.last_error,
                            "message_id": delivery.message_id,
                        }
                        for delivery, slug in deliveries
                    ],
                    "came_back": [event_fields(event) for event in events],
                }
            )
            return
        out.print(
            Text.assemble(
                (neutralise(subscriber.email), "bold"),
                f" (id {subscriber.id}) {subscriber.status}",
            )
        )
        out.print(
            Text.assemble(
                "name: ",
                literal(subscriber.first_name or "-"),
                "; time zone: ",
                literal(subscriber.timezone or "(default)"),
            )
        )
        out.print(Text.assemble("tags: ", literal(" ".join(tags) or "-")))
        out.print("consent:")
        for key, value in (subscriber.consent or {}).items():
            out.print(Text.assemble(f"  {neutralise(str(key))}: ", literal(value)))
        courses = LiteralTable("sequence", "status", "enrolled", "last sent")
        for enrollment, slug in enrollments:
            courses.add_row(
                slug,
                enrollment.status,
                f"{enrollment.enrolled_at:%Y-%m-%d %H:%M}",
                f"{enrollment.last_sent_at:%Y-%m-%d %H:%M}",
            )
        out.print(courses)
        table = LiteralTable(
            "sequence", "lesson", "status", "due", "sent", "attempts", "last error"
        )
        for delivery, slug in deliveries:
            table.add_row(
                slug or "-",
                delivery.lesson_key or delivery.kind,
                delivery.status,
                f"{delivery.due_at:%Y-%m-%d %H:%M}",
                f"{delivery.sent_at:%Y-%m-%d %H:%M}" if delivery.sent_at else "",
                str(delivery.attempts),
                delivery.last_error[:60],
            )
        out.print(table)
        if events:
            came_back = LiteralTable("received", "what", "status", "outcome", "reason")
            for event in events:
                came_back.add_row(
                    f"{event.received_at:%Y-%m-%d %H:%M}",
                    event.kind.replace("_", " "),
                    event.status,
                    event.outcome,
                    event.reason[:60],
                )
            out.print("came back (bounces, complaints, unsubscribes by mail):")
            out.print(came_back)

    run(work)


@subscribers_app.command("remove")
def subscribers_remove(
    email: str,
    forget_them: Annotated[
        bool, typer.Option("--forget", help="Delete them and their history")
    ] = False,
) -> None:
    """Unsubscribe someone (effective for mail already queued), or forget them entirely."""
    config = settings()

    async def work() -> None:
        async with database(config) as sessions, sessions.begin() as session:
            subscriber = await _subscriber(session, email)
            if forget_them:
                await forget(session, subscriber)
                out.print(
                    Text.assemble("Forgot ", literal(subscriber.email), " and their history.")
                )
            else:
                await unsubscribe(session, subscriber, now())
                out.print(Text.assemble("Unsubscribed ", literal(subscriber.email), "."))

    run(work)


@subscribers_app.command("import")
def subscribers_import(
    csv_path: Annotated[
        Path, typer.Argument(help="CSV with a header: email[,first_name][,timezone][,tags]")
    ],
    enroll: EnrollOption = None,
) -> None:
    """Import confirmed subscribers from a CSV file (you vouch for their consent)."""
    config = settings()
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as handle:
            plan = read_import(handle, csv_path)
    except UnicodeDecodeError:
        line = _undecodable_line(csv_path)
        raise NewsletterError(
            f"{csv_path}:{line}: not UTF-8 text; save the file as CSV UTF-8 and import again"
        ) from None
    except OSError as exc:
        raise NewsletterError(f"{csv_path}: cannot read ({exc.strerror or exc})") from None
    people = [row.person for row in plan.people]
    added = 0

    async def work() -> None:
        nonlocal added
        async with database(config) as sessions:
            async with sessions() as session:
                sequences = [await _live_sequence(session, slug) for slug in enroll or []]
            consent = admin_consent(now(), source=csv_path.name)
            # A progress bar is for a person watching; in a log it would be a stray line.
            with Progress(console=err, transient=True, disable=not err.is_terminal) as progress:
                task = progress.add_task("Importing", total=len(people))
                for start in range(0, len(people), IMPORT_BATCH):
                    chunk = people[start : start + IMPORT_BATCH]
                    async with sessions.begin() as session:
                        added += await import_subscribers(session, chunk, consent, now())
                        for sequence in sequences:
                            await enroll_confirmed(session, chunk, sequence.id, now())
                    progress.advance(task, len(chunk))

    run(work)
    for problem in plan.problems:
        err.print(str(problem), markup=False)
    summary = f"Imported {plural(added, 'new subscriber')} from {plural(plan.rows, 'row')}."
    if existing := len(people) - added:
        summary += (
            f" {existing} already subscribed: their name, time zone and status were left "
            "as they were."
        )
    out.print(summary)
    if plan.problems:
        err.print(
            f"[red]{plural(len(plan.problems), 'row')} rejected[/]; fix them and import again "
            "(rows already imported are skipped)."
        )
        raise Fail


def _undecodable_line(path: Path) -> int:
    """The line of the first byte that is not UTF-8 (the decoder reads ahead, so the csv
    reader's own count would be off)."""
    data = path.read_bytes()
    try:
        data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return data[: exc.start].count(b"\n") + 1
    return 1


@subscribers_app.command("export")
def subscribers_export(
    out_path: Annotated[Path | None, typer.Option("--out", help="CSV file; default stdout")] = None,
) -> None:
    """Export every subscriber as CSV (UTF-8), with consent, courses and tags. A cell that a
    spreadsheet would take for a formula (=, +, -, @, tab, CR) starts with a ' instead."""
    config = settings()

    async def write(handle: TextIO) -> None:
        writer = csv.writer(handle)
        writer.writerow(EXPORT_COLUMNS)
        async with database(config, read_only=True) as sessions, sessions() as session:
            async for row in export_rows(session):
                writer.writerow([spreadsheet_safe(cell) for cell in row])

    if out_path is None:
        sys.stdout.flush()
        stdout = io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", newline="")
        try:
            run(lambda: write(stdout))
        finally:
            stdout.flush()
            stdout.detach()  # sys.stdout still owns the stream
        return
    # Written beside and renamed when whole: a failed export leaves no half file behind.
    partial = out_path.with_name(f".{out_path.name}.partial")
    try:
        with partial.open("w", newline="", encoding="utf-8") as handle:
            run(lambda: write(handle))
        partial.replace(out_path)
    finally:
        partial.unlink(missing_ok=True)


@app.command("enroll")
def enroll_command(
    slug: Annotated[str, typer.Argument(help="Sequence slug")],
    emails: Annotated[list[str] | None, typer.Argument(help="Subscribers to enroll")] = None,
    all_confirmed: Annotated[
        bool, typer.Option("--all", help="Every confirmed subscriber")
    ] = False,
    start_at: Annotated[
        str | None, typer.Option(help="When their first lesson may start (ISO time)")
    ] = None,
) -> None:
    """Enroll subscribers in a sequence; those already on it are left as they are."""
    config = settings()
    if not emails and not all_confirmed:
        raise NewsletterError("name subscribers to enroll, or pass --all")
    at = parse_when(start_at)

    async def work() -> int:
        async with database(config) as sessions, sessions.begin() as session:
            if all_confirmed:
                return await _enroll_all(session, await _live_sequence(session, slug), at)
            count = 0
            for email in emails or []:
                count += await _enroll(session, await _subscriber(session, email), slug, at)
            return count

    out.print(Text.assemble(f"Enrolled {plural(run(work), 'subscriber')} in ", literal(slug), "."))


async def _enroll_all(session: AsyncSession, sequence: Sequence, at: datetime) -> int:
    """Every confirmed subscriber not yet on the sequence; returns how many were added."""
    on_it = select(Enrollment.subscriber_id).where(Enrollment.sequence_id == sequence.id)
    ids = list(
        await session.scalars(
            select(Subscriber.id)
            .where(Subscriber.status == SubscriberStatus.CONFIRMED)
            .where(Subscriber.id.not_in(on_it))
        )
    )
    await queries.enroll_many(session, ids, sequence.id, at)
    return len(ids)


# --- sequences ---------------------------------------------------------------------------


@sequences_app.command("queue")
def sequences_queue(
    course_dir: Annotated[
        str, typer.Argument(help="Course folder or slug, e.g. lessons/my-course")
    ],
    start_at: Annotated[
        str | None, typer.Option(help="When newly enrolled subscribers start (ISO time)")
    ] = None,
    enroll_all: Annotated[
        bool, typer.Option("--enroll-all", help="Enroll every confirmed subscriber")
    ] = False,
    skip_inserted: Annotated[
        bool, typer.Option(help="Do not send lessons inserted behind a subscriber's position")
    ] = False,
) -> None:
    """Check a course, store it as the sequence's next version, and make it live; a course
    that is the same as the live version is left as it is ("unchanged")."""
    config = settings()
    path = resolve_course_path(course_dir, config)
    course, problems = check_course(path, make_environment(config.templates_dir), config.sender)
    print_problems(problems)  # warnings too: shown, but they do not stop the queueing
    if errors_among(problems) or course is None:
        errors = len(errors_among(problems))
        err.print(Text.assemble((plural(errors, "error"), "red"), "; nothing was queued."))
        raise Fail

    async def work() -> str:
        async with database(config) as sessions, sessions.begin() as session:
            queued = await queue_course(session, course, now(), skip_inserted=skip_inserted)
            enrolled = 0
            if enroll_all:
                sequence = await session.get(Sequence, queued.sequence_id)
                assert sequence is not None
                enrolled = await _enroll_all(session, sequence, parse_when(start_at))
            if queued.unchanged:
                also = f"; {enrolled} enrolled" if enroll_all else ""
                return (
                    f"Unchanged: {course.slug} version {queued.version} already holds these "
                    f"files, so no version was added{also}."
                )
            what = "new sequence" if queued.created else f"version {queued.version}"
            return (
                f"Queued {course.slug} ({what}, {plural(len(course.lessons), 'lesson')}); "
                f"{enrolled} enrolled, {plural(queued.skipped, 'inserted lesson')} skipped."
            )

    out.print(run(work), markup=False, highlight=False)


@sequences_app.command("list")
def sequences_list(as_json: JsonOption = False) -> None:
    """Every sequence with its version and progress."""
    config = settings()

    async def work() -> list[dict[str, Any]]:
        async with database(config, read_only=True) as sessions, sessions() as session:
            found = []
            for sequence in await session.scalars(select(Sequence).order_by(Sequence.slug)):
                version = await queries.current_version(session, sequence.id)
                lessons = len(await queries.version_lessons(session, version.id)) if version else 0
                row: dict[str, Any] = {
                    "slug": sequence.slug,
                    "status": sequence.status,
                    "title": version.title if version else None,
                    "version": version.number if version else None,
                    "lessons": lessons,
                }
                found.append(row | await _counts(session, sequence.id))
            return found

    sequences = run(work)
    if as_json:
        print_json({"sequences": sequences})
        return
    table = LiteralTable(
        "slug", "title", "status", "version", "lessons", "active", "completed", "sent", "queued"
    )
    for row in sequences:
        table.add_row(
            row["slug"],
            row["title"] or "-",
            row["status"],
            str(row["version"] or "-"),
            *(str(row[key]) for key in ("lessons", "active", "completed", "sent", "queued")),
        )
    out.print(table)


async def _counts(session: AsyncSession, sequence_id: int) -> dict[str, int]:
    counts: dict[str, int] = {"active": 0, "completed": 0, "sent": 0, "queued": 0}
    for status, n in await session.execute(
        select(Enrollment.status, func.count())
        .where(Enrollment.sequence_id == sequence_id)
        .group_by(Enrollment.status)
    ):
        if status in (EnrollmentStatus.ACTIVE, EnrollmentStatus.COMPLETED):
            counts[status] = n
    for status, n in await session.execute(
        select(Delivery.status, func.count())
        .where(Delivery.sequence_id == sequence_id)
        .group_by(Delivery.status)
    ):
        if status == DeliveryStatus.SENT:
            counts["sent"] = n
        elif status in (DeliveryStatus.QUEUED, DeliveryStatus.SENDING):
            counts["queued"] += n
    return counts


@sequences_app.command("show")
def sequences_show(slug: str, as_json: JsonOption = False) -> None:
    """The lessons of a sequence's current version, with how many have received each."""
    config = settings()

    async def work() -> tuple[
        Sequence, SequenceVersion, list[LessonSnapshot], dict[str | None, int]
    ]:
        async with database(config, read_only=True) as sessions, sessions() as session:
            sequence = await _live_sequence(session, slug)
            version = await queries.current_version(session, sequence.id)
            assert version is not None
            sent: dict[str | None, int] = dict(
                (
                    await session.execute(
                        select(Delivery.lesson_key, func.count())
                        .where(
                            Delivery.sequence_id == sequence.id,
                            Delivery.status == DeliveryStatus.SENT,
                        )
                        .group_by(Delivery.lesson_key)
                    )
                )
                .tuples()
                .all()
            )
            return sequence, version, await queries.version_lessons(session, version.id), sent

    sequence, version, lessons, sent = run(work)
    if as_json:
        print_json(
            {
                "slug": sequence.slug,
                "status": sequence.status,
                "title": version.title,
                "version": version.number,
                "lessons": [
                    {
                        "position": lesson.position,
                        "key": lesson.key,
                        "file": lesson.file_name,
                        "subject": lesson.subject,
                        "preheader": lesson.preheader,
                        "delay_s": lesson.delay_s,
                        "send_at": lesson.send_at,
                        "sent": sent.get(lesson.key, 0),
                    }
                    for lesson in lessons
                ],
            }
        )
        return
    out.print(
        Text.assemble(
            (neutralise(version.title), "bold"),
            " (",
            literal(sequence.slug),
            f", {sequence.status}, version {version.number})",
        )
    )
    table = LiteralTable("#", "lesson", "subject", "delay", "sent")
    for lesson in lessons:
        table.add_row(
            str(lesson.position),
            lesson.key,
            lesson.subject,
            format_duration(timedelta(seconds=lesson.delay_s)),  # as the file says it
            str(sent.get(lesson.key, 0)),
        )
    out.print(table)


def _set_status(slug: str, status: SequenceStatus) -> None:
    config = settings()

    async def work() -> None:
        async with database(config) as sessions, sessions.begin() as session:
            sequence = await _live_sequence(session, slug)
            await set_sequence_status(session, sequence, status, now())
            out.print(Text.assemble(literal(slug), f" is {status}."))

    run(work)


@sequences_app.command("pause")
def sequences_pause(slug: str) -> None:
    """Stop sending this sequence; nothing is lost."""
    _set_status(slug, SequenceStatus.PAUSED)


@sequences_app.command("resume")
def sequences_resume(slug: str) -> None:
    """Continue a paused sequence; waiting lessons shift by the pause (no burst)."""
    _set_status(slug, SequenceStatus.LIVE)


@sequences_app.command("archive")
def sequences_archive(slug: str) -> None:
    """Retire a sequence for good: nothing more of it is sent."""
    _set_status(slug, SequenceStatus.ARCHIVED)
