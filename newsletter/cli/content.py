"""Commands for editors: check and split courses, preview emails."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from newsletter.cli.app import Fail, JsonOption, app, course_app, err, out, settings
from newsletter.cli.terminal import LiteralTable, print_json
from newsletter.config import Settings, load_secret_key
from newsletter.content.check import check_course
from newsletter.content.course import Course, load_course
from newsletter.content.lessons import format_duration
from newsletter.content.split import split_article
from newsletter.errors import ContentError, NewsletterError, Problem, errors_among
from newsletter.render import (
    ConfirmationEmail,
    LessonEmail,
    Recipient,
    make_environment,
    make_message_id,
)
from newsletter.tokens import LinkMaker, Tokens
from newsletter.words import plural

#: Preview links are signed for this id, which no real subscriber has.
PREVIEW_SUBSCRIBER_ID = 0


class PreviewFormat(StrEnum):
    EML = "eml"
    HTML = "html"
    TEXT = "text"


def resolve_course_path(reference: str, settings: Settings) -> Path:
    """A course given as a slug (looked up in the lessons folder) or as a folder path."""
    candidate = Path(reference)
    if candidate.is_dir():
        return candidate
    return settings.lessons_dir / reference


@course_app.command("check")
def course_check(
    course_ref: Annotated[
        str,
        typer.Argument(metavar="COURSE", help="A course folder, or a slug under lessons/"),
    ],
    strict: Annotated[
        bool, typer.Option(help="Fail on warnings (such as http:// links) too")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Validate a course before it can be queued: every problem at once, by file and line.
    Exits 1 on any error, and on warnings too with --strict."""
    config = settings()
    course_dir = resolve_course_path(course_ref, config)
    course, problems = check_course(
        course_dir, make_environment(config.templates_dir), config.sender
    )
    errors = errors_among(problems)
    failed = course is None or bool(errors) or (strict and bool(problems))
    if as_json:
        print_json(_check_document(course_dir, course, problems, failed))
        if failed:
            raise Fail
        return
    print_problems(problems)
    if course is None or failed:
        counted = _count(problems)
        err.print(Text.assemble((counted, "red"), f" in {course_dir}"), soft_wrap=True)
        raise Fail
    out.print(_lessons_table(course))
    warnings = f", {_count(problems)}" if problems else ""
    out.print(
        Text.assemble(
            ("OK", "green"), f": {course_dir} ({plural(len(course.lessons), 'lesson')}{warnings})"
        ),
        soft_wrap=True,
    )


def _check_document(
    path: Path, course: Course | None, problems: list[Problem], failed: bool
) -> dict[str, object]:
    return {
        "path": path,
        "ok": not failed,
        "errors": len(errors_among(problems)),
        "warnings": len(problems) - len(errors_among(problems)),
        "problems": [
            {"file": p.path, "line": p.line, "severity": p.severity, "message": p.message}
            for p in problems
        ],
        "lessons": None
        if course is None
        else [
            {
                "file": lesson.path.name,
                "key": lesson.key,
                "subject": lesson.subject,
                "delay_s": int(lesson.delay.total_seconds()),
                "send_at": lesson.send_at,
            }
            for lesson in course.lessons
        ],
    }


def print_problems(problems: list[Problem]) -> None:
    """One `file:line: message` line each, never wrapped, so editors can jump to it."""
    for problem in problems:
        err.print(str(problem), markup=False, highlight=False, soft_wrap=True)


def _count(problems: list[Problem]) -> str:
    errors = len(errors_among(problems))
    warnings = len(problems) - errors
    parts = [plural(errors, "error")] if errors else []
    parts += [plural(warnings, "warning")] if warnings else []
    return ", ".join(parts)


@course_app.command("split")
def course_split(
    article: Annotated[Path, typer.Argument(help="Markdown or plain-text article")],
    out_dir: Annotated[Path, typer.Option("--out", help="New course folder, lessons/<slug>")],
    force: Annotated[bool, typer.Option(help="Overwrite lesson files already there")] = False,
) -> None:
    """Turn an article into a draft course: one lesson per section, defaults to edit."""
    try:
        text = article.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise NewsletterError(f"{article}: cannot read the article ({exc})") from None
    draft = split_article(text, fallback_title=article.stem.replace("-", " ").capitalize())
    if out_dir.exists() and any(out_dir.iterdir()) and not force:
        raise NewsletterError(f"{out_dir}: not empty; pass --force to overwrite")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "course.toml").write_text(draft.manifest(), encoding="utf-8")
    for lesson in draft.lessons:
        (out_dir / lesson.filename).write_text(lesson.to_markdown(), encoding="utf-8")
    table = LiteralTable("file", "subject", "delay", title=draft.title)
    for lesson in draft.lessons:
        table.add_row(lesson.filename, lesson.subject, lesson.delay)
    out.print(table)
    out.print(
        f"Draft written to {out_dir}; edit it, then run: newsletter course check {out_dir}",
        markup=False,
        highlight=False,
    )


@app.command()
def preview(
    course_ref: Annotated[str, typer.Argument(metavar="COURSE", help="Slug or course folder")],
    lesson_ref: Annotated[
        str | None,
        typer.Argument(
            metavar="[LESSON]", help="Number, name or file; 'confirm' for the opt-in email"
        ),
    ] = None,
    to: Annotated[str, typer.Option(help="Recipient address")] = "reader@example.com",
    name: Annotated[str, typer.Option(help="Recipient first name")] = "",
    format: Annotated[PreviewFormat, typer.Option(help="eml, html or text")] = PreviewFormat.EML,
    out_path: Annotated[
        Path | None,
        typer.Option("--out", help="File (one lesson) or folder (whole course); default stdout"),
    ] = None,
) -> None:
    """Show exactly what will be sent: one lesson, or the whole course into a folder."""
    try:
        _preview(course_ref, lesson_ref, to, name, format, out_path)
    except ContentError as exc:  # one file:line per problem, as `course check` prints them
        print_problems(exc.problems)
        raise Fail from None


def _preview(
    course_ref: str,
    lesson_ref: str | None,
    to: str,
    name: str,
    format: PreviewFormat,
    out_path: Path | None,
) -> None:
    config = settings()
    course = load_course(resolve_course_path(course_ref, config))
    env = make_environment(config.templates_dir)
    links = LinkMaker(
        Tokens(load_secret_key(config)), config.site.base, config.sender.unsubscribe_address
    )
    now = datetime.now(UTC)
    recipient = Recipient(to, name)

    def render(reference: str, fmt: PreviewFormat) -> bytes:
        message_id = make_message_id(config.sender.domain)
        if reference == "confirm":
            if fmt is not PreviewFormat.EML:
                raise NewsletterError("the confirmation email previews as eml only")
            url = links.confirm_url(PREVIEW_SUBSCRIBER_ID, now)
            return ConfirmationEmail(
                env, config.sender, course, feedback_id=config.dkim.feedback_id
            ).render(to, url, message_id=message_id, date=now)
        email = LessonEmail(
            env,
            config.sender,
            course,
            course.lesson(reference),
            feedback_id=config.dkim.feedback_id,
        )
        personal = links.personal_links(PREVIEW_SUBSCRIBER_ID, now)
        if fmt is PreviewFormat.HTML:
            return email.html(recipient, personal).encode("utf-8")
        if fmt is PreviewFormat.TEXT:
            return email.text(recipient, personal).encode("utf-8")
        return email.render(recipient, personal, message_id=message_id, date=now)

    if lesson_ref is not None:
        data = render(lesson_ref, format)
        if out_path is None:
            sys.stdout.buffer.write(data)
        else:
            out_path.parent.mkdir(parents=True, exist_ok=True)
            out_path.write_bytes(data)
            out.print(f"Wrote {out_path}")
        return

    folder = (out_path or config.var_dir / "preview") / course.slug
    folder.mkdir(parents=True, exist_ok=True)
    suffix = {PreviewFormat.EML: "eml", PreviewFormat.HTML: "html", PreviewFormat.TEXT: "txt"}
    for lesson in course.lessons:
        for fmt in PreviewFormat:
            (folder / f"{lesson.path.stem}.{suffix[fmt]}").write_bytes(render(lesson.key, fmt))
    (folder / "confirm.eml").write_bytes(render("confirm", PreviewFormat.EML))
    out.print(_lessons_table(course))
    out.print(
        f"Previews of {plural(len(course.lessons), 'lesson')} and the confirmation email in "
        f"{folder}"
    )


def _lessons_table(course: Course) -> Table:
    """The course's lessons; titles, file names and subjects are printed as written."""
    table = LiteralTable("#", "file", "subject", "after", "at", title=course.title)
    for number, lesson in enumerate(course.lessons, start=1):
        at = lesson.send_at.strftime("%H:%M") if lesson.send_at else "window"
        table.add_row(
            str(number), lesson.path.name, lesson.subject, format_duration(lesson.delay), at
        )
    return table
