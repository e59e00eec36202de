"""`newsletter` imports only the module of the command asked for, so the map from command to
module must name, for every command and every subcommand of a group, the module defining it."""

from __future__ import annotations

import subprocess
import sys

import pytest
import typer

from newsletter.cli import COMMAND_MODULES, command_name, load_commands


def defining_modules(app: typer.Typer) -> dict[str, set[str]]:
    """Each top-level command's name, with the modules whose functions it runs."""
    modules: dict[str, set[str]] = {}
    for command in app.registered_commands:
        assert command.callback is not None
        name = command.name or command.callback.__name__.replace("_", "-")
        modules.setdefault(name, set()).add(command.callback.__module__)
    for group in app.registered_groups:
        assert group.name is not None
        assert group.typer_instance is not None
        for sub in group.typer_instance.registered_commands:
            assert sub.callback is not None
            modules.setdefault(group.name, set()).add(sub.callback.__module__)
    return modules


def test_every_command_is_mapped_to_the_one_module_that_defines_it():
    registered = defining_modules(load_commands())

    assert {name: {f"newsletter.cli.{module}"} for name, module in COMMAND_MODULES.items()} == (
        registered
    )


@pytest.mark.parametrize(
    ("argv", "name"),
    [
        (["subscribers", "add", "a@example.com"], "subscribers"),
        (["--config", "tick", "worker"], "worker"),
        (["-c", "x.toml", "tick", "--now"], "tick"),
        (["--config=x.toml", "serve"], "serve"),
        (["--version"], None),
        ([], None),
    ],
)
def test_the_command_is_the_first_word_that_is_not_an_option_or_its_value(argv, name):
    assert command_name(argv) == name


def test_a_command_loads_its_own_module_and_not_the_others():
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from newsletter.cli import load_commands; load_commands('subscribers');"
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('newsletter.cli.'))))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()

    assert "newsletter.cli.admin" in loaded
    for elsewhere in ("running", "inbound", "dkim", "doctor", "web", "broadcast"):
        assert f"newsletter.cli.{elsewhere}" not in loaded
