"""The `newsletter` command: builds the parts from config, calls them, prints the outcome.

Each command lives in the module of its domain, and `main` imports only the module of the
command asked for: `newsletter subscribers list` need not load the scheduler, DKIM or the
bounce receiver's libraries (a fifth less CPU a command: docs/benchmarks.md)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

import typer

from newsletter.cli.app import app, reporting_errors

#: The module under newsletter/cli/ that defines each top-level command or group.
COMMAND_MODULES: dict[str, str] = {
    "broadcast": "broadcast",
    "course": "content",
    "db": "admin",
    "dkim": "dkim",
    "doctor": "doctor",
    "enroll": "admin",
    "forecast": "forecast",
    "form-snippet": "web",
    "inbound": "inbound",
    "outbox": "running",
    "preview": "content",
    "send-test": "sendtest",
    "sending": "sending",
    "sequences": "admin",
    "serve": "running",
    "subscribers": "admin",
    "tick": "running",
    "web": "web",
    "worker": "running",
}
#: Options of the whole command that take a value (the value is not a command's name).
_VALUED_OPTIONS = {"--config", "-c"}


def command_name(argv: Sequence[str]) -> str | None:
    """The command asked for in `argv` (the arguments after the program's name), if any."""
    arguments = iter(argv)
    for argument in arguments:
        if argument in _VALUED_OPTIONS:
            next(arguments, None)
        elif not argument.startswith("-"):
            return argument
    return None


def load_commands(name: str | None = None) -> typer.Typer:
    """The application with the command `name` defined, or with every command when `name`
    is None or unknown (the help lists them all; Typer names an unknown one)."""
    module = COMMAND_MODULES.get(name or "")
    for each in [module] if module else sorted(set(COMMAND_MODULES.values())):
        importlib.import_module(f"newsletter.cli.{each}")
    return app


def main() -> None:
    reporting_errors(load_commands(command_name(sys.argv[1:])))


__all__ = ["COMMAND_MODULES", "command_name", "load_commands", "main"]
