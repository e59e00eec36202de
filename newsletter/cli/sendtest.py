"""`newsletter send-test`: one lesson or the confirmation email, to one address, now."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from newsletter.cli.admin import database
from newsletter.cli.app import Fail, app, err, out, run, settings
from newsletter.cli.content import print_problems
from newsletter.cli.dkim import check_dkim
from newsletter.cli.running import build_links, build_transport
from newsletter.content.check import check_course
from newsletter.content.course import Course
from newsletter.courses import queue_course
from newsletter.db import queries
from newsletter.delivery.transport import SendReport
from newsletter.errors import NewsletterError, errors_among
from newsletter.render import Recipient, make_environment, make_message_id
from newsletter.scheduling.emails import CompiledEmails
from newsletter.sendtest import EmailForTest, build_test_email, scratch_database
from newsletter.subscribers import NewSubscriber
from newsletter.words import plural


@app.command("send-test")
def send_test(
    course_ref: Annotated[
        str,
        typer.Argument(
            metavar="COURSE",
            help="A queued course's slug, or a course folder (lessons/<slug>) to test its "
            "files before queuing",
        ),
    ],
    lesson_ref: Annotated[
        str,
        typer.Argument(
            metavar="LESSON", help="Number, name or file; 'confirm' for the opt-in email"
        ),
    ],
    to: Annotated[str, typer.Option("--to", help="Send to this address")],
    name: Annotated[str, typer.Option(help="First name to greet")] = "",
    force: Annotated[
        bool, typer.Option(help="Send even to an address on the suppression list")
    ] = False,
) -> None:
    """Send one email now, through the relay (or the outbox), with '[test] ' before its
    subject. Built as the worker builds it; never recorded as a delivery, and its links act
    on no subscriber."""
    config = settings()
    check_dkim(config)
    person = NewSubscriber.parse(to, name)
    recipient = Recipient(person.email, person.first_name)
    folder = Path(course_ref) if Path(course_ref).is_dir() else None
    course = _checked(folder) if folder is not None else None
    emails = CompiledEmails(config, make_environment(config.templates_dir), build_links(config))
    now = datetime.now(UTC)
    message_id = make_message_id(config.sender.domain)

    async def build() -> EmailForTest:
        async with database(config, read_only=True) as sessions, sessions() as session:
            if await queries.is_suppressed(session, recipient.email) and not force:
                raise NewsletterError(
                    f"{recipient.email} is on the suppression list (it bounced or complained), "
                    "so nothing is sent to it; pass --force to send this test anyway"
                )
            if course is None:
                return await build_test_email(
                    session,
                    emails,
                    course_ref,
                    lesson_ref,
                    recipient,
                    message_id=message_id,
                    now=now,
                )
        async with scratch_database() as scratch, scratch.begin() as session:
            await queue_course(session, course, now)
            return await build_test_email(
                session, emails, course.slug, lesson_ref, recipient, message_id=message_id, now=now
            )

    async def work() -> tuple[EmailForTest, SendReport]:
        email = await build()
        transport = build_transport(config)
        try:
            return email, await transport.send(email.envelope)
        finally:
            await transport.close()

    email, report = run(work)
    source = f"the files in {folder}" if folder else f"{course_ref} version {email.version}"
    if not report.accepted:
        err.print(f"error: the test of {email.what} was refused: {report}", markup=False)
        raise Fail
    where = (
        f"through {config.smtp.host}:{config.smtp.port}"
        if config.smtp.host
        else f"into the development outbox {config.var_dir / 'outbox'} ({report.message})"
    )
    out.print(
        f"Sent a test of {email.what} from {source} to {recipient.email} {where}; "
        "not recorded as a delivery.",
        markup=False,
        highlight=False,
    )


def _checked(folder: Path) -> Course:
    """The folder's course, checked as `sequences queue` checks it."""
    config = settings()
    course, problems = check_course(folder, make_environment(config.templates_dir), config.sender)
    print_problems(problems)
    if errors_among(problems) or course is None:
        err.print(
            Text.assemble(
                (plural(len(errors_among(problems)), "error"), "red"), "; nothing was sent."
            )
        )
        raise Fail
    return course
