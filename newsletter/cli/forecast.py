"""`newsletter forecast`: who will get which lesson or issue when, and what the daily cap
and the send window hold back, without sending anything (docs/newsletters.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import typer
from rich.text import Text

from newsletter.cli.admin import check_courses_exist, database, now
from newsletter.cli.app import JsonOption, app, out, run, settings
from newsletter.cli.terminal import LiteralTable, literal, print_json
from newsletter.forecasts import forecast_list
from newsletter.scheduling.forecast import DayTotals, HeldBy, Planned, count_days
from newsletter.words import plural


@app.command("forecast")
def forecast(
    days: Annotated[int, typer.Option(min=1, max=366, help="How many days ahead")] = 14,
    course: Annotated[str | None, typer.Option(help="Only this course's lessons")] = None,
    subscriber: Annotated[str | None, typer.Option(help="Only this subscriber (email)")] = None,
    as_json: JsonOption = False,
) -> None:
    """What the workers will send over the coming days, person by person, with per-day
    totals: replayed with the worker's own rules. Sends nothing."""
    config = settings()
    start = now()
    email = subscriber.strip().lower() if subscriber is not None else None
    days_totals: dict[str, DayTotals] = {}
    messages: list[dict[str, Any]] = []  # --json only: the document holds every message

    async def work() -> int:
        """Each person's forecast as it is replayed; how many people get something."""
        people = 0
        async with database(config, read_only=True) as sessions, sessions() as session:
            if course is not None:
                await check_courses_exist(session, {course})
            async for planned in forecast_list(
                session, config, start=start, days=days, email=email, course=course
            ):
                people += 1
                count_days(days_totals, planned, config.schedule.zone)
                if as_json:
                    messages.extend(_fields(item) for item in planned)
                    continue
                out.print()
                out.print(literal(f"{planned[0].email} ({planned[0].zone.key})"))
                for item in planned:
                    out.print(literal(_line(item)))
        return people

    if not as_json:
        out.print(
            Text(
                f"What the workers will send in the next {plural(days, 'day')}, from "
                f"{start:%Y-%m-%d %H:%M} UTC, if every message goes when due (nothing is sent):"
            )
        )
    people = run(work)
    totals = dict(sorted(days_totals.items()))
    busiest = max((total.lessons + total.issues for total in totals.values()), default=0)
    # [sending] max_per_day counts a rolling 24 hours: a calendar day over it is a sign.
    over_rate = bool(config.sending.max_per_day) and busiest > config.sending.max_per_day
    if as_json:
        print_json(
            {
                "from": start,
                "days": days,
                "messages": messages,
                "per_day": {day: vars(total) for day, total in totals.items()},
                "over_max_per_day": over_rate,
            }
        )
        return
    if not people:
        out.print(Text("Nothing is due in that time."))
        return
    out.print()
    table = LiteralTable(
        f"day ({config.schedule.timezone})", "lessons", "issues", "held by the cap",
        "moved into the window",
    )  # fmt: skip
    for day, total in totals.items():
        table.add_row(
            day,
            str(total.lessons),
            str(total.issues),
            str(total.held_by_cap),
            str(total.held_by_window),
        )
    out.print(table)
    if over_rate:
        out.print(
            Text(
                f"Some days hold more than [sending] max_per_day ({config.sending.max_per_day}), "
                "which counts the last 24 hours: some of that mail goes later than shown."
            )
        )


def _line(item: Planned) -> str:
    local = item.at.astimezone(item.zone)
    line = f"  {local:%a %Y-%m-%d %H:%M %Z} ({item.at:%H:%M} UTC)  {item.what}"
    if item.held_by is not HeldBy.NOTHING and item.would_have_gone is not None:
        was = item.would_have_gone.astimezone(item.zone)
        line += f"  [held by the {item.held_by} from {was:%a %H:%M}]"
    return line


def _fields(item: Planned) -> dict[str, Any]:
    local: datetime = item.at.astimezone(item.zone)
    return {
        "email": item.email,
        "at": item.at,
        "local": local.isoformat(),
        "timezone": item.zone.key,
        "what": item.what,
        "course": item.course_slug,
        "held_by": item.held_by.value or None,
        "would_have_gone": item.would_have_gone,
    }
