"""The Typer application and what every command shares: settings, consoles, failing."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from importlib.metadata import version
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from sqlalchemy.exc import DBAPIError

from newsletter.cli.terminal import make_console
from newsletter.config import Settings, default_config_path, load_settings
from newsletter.errors import NewsletterError

try:
    from uvloop import new_event_loop as _new_event_loop
except ImportError:  # not built for Windows: asyncio's own loop
    _new_event_loop = None  # type: ignore[assignment]

app = typer.Typer(
    help="A self-hosted email course and newsletter sender.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
course_app = typer.Typer(help="Write and check courses (lessons/<slug>/).", no_args_is_help=True)
db_app = typer.Typer(help="The database schema.", no_args_is_help=True)
subscribers_app = typer.Typer(help="Add, list, import, export, remove.", no_args_is_help=True)
sequences_app = typer.Typer(help="Queue courses and control their sending.", no_args_is_help=True)
sending_app = typer.Typer(help="Pause or resume all sending.", no_args_is_help=True)
dkim_app = typer.Typer(help="DKIM keys and the DNS record to publish.", no_args_is_help=True)
app.add_typer(course_app, name="course")
app.add_typer(db_app, name="db")
app.add_typer(subscribers_app, name="subscribers")
app.add_typer(sequences_app, name="sequences")
app.add_typer(sending_app, name="sending")
app.add_typer(dkim_app, name="dkim")

# Both print other people's text only through literal() or LiteralTable (cli/terminal.py):
# markup in an f-string is for our own words.
out = make_console()
err = make_console(stderr=True)

T = TypeVar("T")


class Fail(Exception):
    """Stop with exit status 1 after the message has been printed."""


ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Config file [default: $NEWSLETTER_CONFIG or config.toml]"),
]
_config_path: Path | None = None
JsonOption = Annotated[
    bool, typer.Option("--json", help="One JSON document (ISO times, UTF-8) instead of a table")
]


def _print_version(wanted: bool) -> None:
    if wanted:
        # From the installed package's metadata, so it is the version pip installed.
        out.print(f"newsletter {version('newsletter')}", markup=False, highlight=False)
        raise typer.Exit


@app.callback()
def _global_options(
    config: ConfigOption = None,
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit"
        ),
    ] = False,
) -> None:
    global _config_path
    _config_path = config


def config_file() -> Path:
    return _config_path or default_config_path()


def settings() -> Settings:
    return load_settings(config_file())


def run(coroutine: Callable[[], Awaitable[T]]) -> T:
    """Run to the end on uvloop where it is installed (everywhere but Windows): it hands
    work to the database driver's thread and back more cheaply than asyncio's own loop,
    and a signup makes many such hand-offs (docs/benchmarks.md, signups)."""

    async def wrapped() -> T:
        return await coroutine()

    with asyncio.Runner(loop_factory=_new_event_loop) as runner:
        return runner.run(wrapped())


def reporting_errors(command: Callable[[], object]) -> None:
    """Run `command`; what goes wrong ends the process with one line, never a traceback."""
    try:
        command()
    except NewsletterError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False)
        sys.exit(1)
    except OSError as exc:  # a file or folder the admin named cannot be used
        err.print(f"error: {exc}", markup=False, highlight=False)
        sys.exit(1)
    except DBAPIError as exc:  # locked, unreachable, or a schema that needs `db upgrade`
        first_line = str(exc.orig).splitlines()[0] if exc.orig else type(exc).__name__
        if _lacks_schema(exc):
            first_line += " (a new database: run `newsletter db upgrade` first)"
        err.print(f"error: database: {first_line}", markup=False, highlight=False)
        sys.exit(1)
    except Fail:
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


def _lacks_schema(exc: DBAPIError) -> bool:
    """A table is missing: a PostgreSQL database nobody has upgraded yet (SQLite's file
    migrates itself, unless it was made elsewhere)."""
    if getattr(exc.orig, "sqlstate", None) == "42P01":  # PostgreSQL's undefined_table
        return True
    return "no such table" in str(exc.orig)
