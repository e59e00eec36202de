"""What an admin deploys with: the systemd units (deploy/systemd/), the Dockerfile and
compose.yaml. Neither Docker nor systemd runs here, so they are read as their tools read
them and held against the real `newsletter` command and config.toml; `systemd-analyze
verify` checks the units where it is installed. Then the units' own command lines are run,
as the units run them, and stopped with SIGTERM as `systemctl stop` stops them."""

from __future__ import annotations

import functools
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from pydantic import BaseModel
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from newsletter.cli import load_commands
from newsletter.config import Settings, load_settings
from tests.conftest import REPO

UNITS_DIR = REPO / "deploy" / "systemd"
UNIT_FILES = sorted(UNITS_DIR.glob("*.service"))
DOCKERFILE = REPO / "Dockerfile"
COMPOSE = REPO / "compose.yaml"
#: Where the units expect the checkout (their WorkingDirectory).
INSTALL_DIR = PurePosixPath("/opt/newsletter")
#: The services of compose.yaml that run the newsletter image.
APP_SERVICES = ("migrate", "web", "worker")


@pytest.fixture(scope="module")
def shipped() -> Settings:
    return load_settings(REPO / "config.toml")


# --- reading the files --------------------------------------------------------------------


@dataclass
class Unit:
    path: Path
    #: Section -> its directives in order; a key may repeat (Environment=, ReadWritePaths=).
    sections: dict[str, list[tuple[str, str]]] = field(default_factory=dict)

    def all(self, section: str, key: str) -> list[str]:
        return [value for name, value in self.sections.get(section, []) if name == key]

    def one(self, section: str, key: str) -> str:
        values = self.all(section, key)
        assert len(values) == 1, f"{self.path.name}: [{section}] {key}= set {len(values)} times"
        return values[0]

    def words(self, section: str, key: str) -> list[str]:
        return [word for value in self.all(section, key) for word in value.split()]

    @property
    def environment(self) -> dict[str, str]:
        pairs = (shlex.split(value) for value in self.all("Service", "Environment"))
        return dict(pair.split("=", 1) for line in pairs for pair in line)

    @property
    def argv(self) -> list[str]:
        return shlex.split(self.one("Service", "ExecStart"))


def read_unit(path: Path) -> Unit:
    """A systemd unit file as systemd.syntax(7) has it: sections, `Key=value` lines,
    comments starting with # or ;, and lines continued by a trailing backslash."""
    unit = Unit(path)
    section = ""
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = pending + raw.strip()
        pending = ""
        if not line or line[0] in "#;":
            continue
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            unit.sections.setdefault(section, [])
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not a directive: {line!r}"
        assert section, f"{path.name}: {line!r} before any [section]"
        unit.sections[section].append((key.strip(), value.strip()))
    return unit


def seconds(text: str | int | float) -> float:
    """A systemd time span ("30", "30s", "1min 30s", "500ms") or a compose duration
    ("30s", "1m30s") in seconds."""
    if isinstance(text, int | float):
        return float(text)
    units = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}
    total = 0.0
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", text.strip())
    assert parts, f"not a time span: {text!r}"
    for number, unit in parts:
        total += float(number) * units[unit or "s"]
    return total


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int


def read_dockerfile(path: Path) -> list[list[Instruction]]:
    """The Dockerfile's instructions, stage by stage (each FROM opens one); comments and
    line continuations as Docker reads them."""
    stages: list[list[Instruction]] = []
    pending = ""
    start = 0
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        stripped = raw.strip()
        if stripped.startswith("#"):
            continue  # also inside a continued instruction, as Docker skips it there
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        text = (pending + stripped).strip()
        pending = ""
        if not text:
            continue
        keyword, _, args = text.partition(" ")
        instruction = Instruction(keyword.upper(), args.strip(), start)
        if instruction.keyword == "FROM":
            stages.append([])
        assert stages, f"Dockerfile:{start}: {keyword} before any FROM"
        stages[-1].append(instruction)
    return stages


def instructions(stage: list[Instruction], keyword: str) -> list[Instruction]:
    return [i for i in stage if i.keyword == keyword]


def exec_form(args: str) -> list[str]:
    """The JSON array of an exec-form CMD, ENTRYPOINT or HEALTHCHECK CMD."""
    value = json.loads(args)
    assert isinstance(value, list), args
    assert all(isinstance(v, str) for v in value), args
    return value


def healthcheck_command(stage: list[Instruction]) -> list[str]:
    (check,) = instructions(stage, "HEALTHCHECK")
    _options, _, command = check.args.partition("CMD ")
    assert command, f"Dockerfile:{check.line}: HEALTHCHECK without CMD"
    return exec_form(command)


def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))  # `<<` merges included
    assert isinstance(document, dict)
    return document


# --- the real command -----------------------------------------------------------------------


@functools.cache
def command_help(*words: str) -> str:
    """`newsletter WORDS --help`, from the command itself (in this process: a process each
    would cost seconds of imports)."""
    result = CliRunner(env={"COLUMNS": "200", "TERM": "dumb", "NO_COLOR": "1"}).invoke(
        load_commands(), [*words, "--help"], prog_name="newsletter"
    )
    assert result.exit_code == 0, f"newsletter {' '.join(words)}: {result.output}"
    return result.output


def assert_real_command(arguments: list[str], where: str) -> None:
    """`arguments` (after `newsletter`) name a command that exists, with options it has:
    its --help says so."""
    words = []
    for argument in arguments:
        if argument.startswith("-"):
            break
        words.append(argument)
    assert words, f"{where}: no subcommand in {arguments}"
    text = command_help(*words)
    # A command, not a group: a group's usage line ends in COMMAND [ARGS]...
    usage = rf"^\s*Usage: .*newsletter {re.escape(' '.join(words))} \[OPTIONS\]\s*$"
    assert re.search(usage, text, re.M), f"{where}: `newsletter {' '.join(words)}`: {text}"
    for argument in arguments[len(words) :]:
        if argument.startswith("--"):
            option = argument.split("=", 1)[0]
            assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text), (
                f"{where}: `newsletter {' '.join(words)}` has no option {option}:\n{text}"
            )


# --- the systemd units ----------------------------------------------------------------------


def test_the_units_are_web_a_worker_template_and_the_receiver() -> None:
    assert [path.name for path in UNIT_FILES] == [
        "newsletter-inbound.service",
        "newsletter-web.service",
        "newsletter-worker@.service",
    ]
    worker = read_unit(UNITS_DIR / "newsletter-worker@.service")
    # Instances tell themselves apart in the journal.
    assert "%i" in worker.one("Service", "SyslogIdentifier")


@pytest.mark.parametrize("path", UNIT_FILES, ids=lambda p: p.name)
def test_each_unit_runs_a_real_newsletter_command_from_the_virtualenv(path: Path) -> None:
    unit = read_unit(path)
    program, *arguments = unit.argv
    assert program == str(INSTALL_DIR / ".venv" / "bin" / "newsletter")
    assert unit.one("Service", "WorkingDirectory") == str(INSTALL_DIR)
    assert unit.environment["NEWSLETTER_CONFIG"] == str(INSTALL_DIR / "config.toml")
    assert_real_command(arguments, path.name)


@pytest.mark.parametrize("path", UNIT_FILES, ids=lambda p: p.name)
def test_each_unit_stops_with_sigterm_and_waits_longer_than_the_grace(
    path: Path, shipped: Settings
) -> None:
    unit = read_unit(path)
    assert unit.one("Service", "KillSignal") == "SIGTERM"
    if "--workers" in unit.one("Service", "ExecStart"):
        # The main process passes SIGTERM on to its processes once; each must not get two.
        assert unit.one("Service", "KillMode") == "mixed"
    grace_s = float(
        unit.environment.get(
            "NEWSLETTER_SENDING__SHUTDOWN_GRACE_S", shipped.sending.shutdown_grace_s
        )
    )
    timeout_s = seconds(unit.one("Service", "TimeoutStopSec"))
    # Sends under way get the grace; then outcomes are recorded and the relay hears QUIT.
    assert timeout_s > grace_s + 5, f"{path.name}: TimeoutStopSec {timeout_s} s, grace {grace_s} s"
    assert unit.one("Service", "Restart") == "on-failure"
    assert "shutdown_grace_s" in path.read_text(encoding="utf-8")  # the relation, in a comment


@pytest.mark.parametrize("path", UNIT_FILES, ids=lambda p: p.name)
def test_each_unit_runs_unprivileged_and_writes_only_var(path: Path, shipped: Settings) -> None:
    unit = read_unit(path)
    assert unit.one("Service", "User") not in ("", "root", "0")
    service = dict(unit.sections["Service"])
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "CapabilityBoundingSet": "",
    }.items():
        assert service.get(key) == value, f"{path.name}: {key}={service.get(key)!r}"
    # config.toml's relative paths are taken from its folder (newsletter/config.py), so var/
    # and the SQLite file (with its -wal and -shm files beside it) are under the checkout.
    config_dir = PurePosixPath(unit.environment["NEWSLETTER_CONFIG"]).parent
    var = config_dir / shipped.paths.var.relative_to(REPO)
    sqlite_file = config_dir / Path(make_url(shipped.database.url).database or "").relative_to(REPO)
    writable = [PurePosixPath(word) for word in unit.words("Service", "ReadWritePaths")]
    assert var in writable
    assert any(sqlite_file.parent == folder or folder in sqlite_file.parents for folder in writable)
    # Secrets come from a file outside the checkout, never from the unit.
    assert unit.all("Service", "EnvironmentFile") == ["/etc/newsletter/env"]
    assert not any("SECRET" in name or "PASSWORD" in name for name in unit.environment)
    # journald reads stdout through a pipe: unbuffered, the lines arrive as they are printed.
    assert unit.environment.get("PYTHONUNBUFFERED") == "1"
    assert "postgresql.service" in unit.words("Unit", "After")
    assert "network-online.target" in unit.words("Unit", "Wants")


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_systemd_analyze_verifies_the_units(tmp_path: Path) -> None:
    """`systemd-analyze verify` warns about unknown keys and bad values; it also insists that
    ExecStart's program exists, so the copies verified name this checkout's virtualenv."""
    program = REPO / ".venv" / "bin" / "newsletter"
    if not os.access(program, os.X_OK):
        pytest.skip(f"{program} missing: `make test` installs it")
    for path in UNIT_FILES:
        text = path.read_text(encoding="utf-8")
        (tmp_path / path.name).write_text(
            text.replace(str(INSTALL_DIR / ".venv" / "bin" / "newsletter"), str(program)),
            encoding="utf-8",
        )
    result = subprocess.run(
        ["systemd-analyze", "verify", *(str(tmp_path / p.name) for p in UNIT_FILES)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr  # unknown keys are only warnings


# --- the Dockerfile -------------------------------------------------------------------------


def test_the_image_is_pinned_python_of_the_lockfiles_version() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    floor = re.fullmatch(r">=(\d+)\.(\d+)", project["project"]["requires-python"])
    assert floor is not None
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    assert re.findall(r"--python-version (\d+\.\d+)", makefile) == [f"{floor[1]}.{floor[2]}"] * 2
    for stage in read_dockerfile(DOCKERFILE):
        image = stage[0].args.split()[0]
        tag = re.fullmatch(r"python:(\d+)\.(\d+)\.(\d+)-slim-[a-z]+", image)
        assert tag, f"Dockerfile:{stage[0].line}: {image} is not a pinned slim Python"
        assert (tag[1], tag[2]) == (floor[1], floor[2])


def test_the_image_installs_only_what_the_lockfile_pins() -> None:
    build, run = read_dockerfile(DOCKERFILE)
    copied = {
        PurePosixPath(i.args.split()[-1]).name: i.args.split()[-1]
        for i in instructions(build, "COPY")
        if i.args.split()[0] == "requirements.lock"
    }
    assert "requirements.lock" in copied
    installs = [i.args for i in instructions(build, "RUN") if "pip install" in i.args]
    assert installs, "no pip install"
    for command in installs:
        words = shlex.split(command)
        assert "--require-hashes" in words, command
        assert words[words.index("-r") + 1] == copied["requirements.lock"], command
    everything = DOCKERFILE.read_text(encoding="utf-8")
    for flag in ("--index-url", "--extra-index-url", "--trusted-host", "--find-links", " -i "):
        assert flag not in everything  # pip's own defaults
    # The package is not built into the virtualenv (that would fetch the build backend
    # unpinned): it runs from /app, on PYTHONPATH.
    assert not any("pip install" in i.args for i in instructions(run, "RUN"))
    env = " ".join(i.args for i in instructions(run, "ENV"))
    assert "PYTHONPATH=/app" in env
    assert "NEWSLETTER_CONFIG=/app/config.toml" in env


def test_the_image_copies_files_that_exist_and_that_dockerignore_lets_through() -> None:
    allowed = {
        line[1:].rstrip("/")
        for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.startswith("!")
    }
    for stage in read_dockerfile(DOCKERFILE):
        for copy in instructions(stage, "COPY"):
            *sources, _ = (w for w in copy.args.split() if not w.startswith("--"))
            if "--from=" in copy.args:
                continue
            for source in sources:
                assert (REPO / source).exists(), f"Dockerfile:{copy.line}: no {source}"
                assert source.rstrip("/") in allowed, f".dockerignore leaves out {source}"


def test_the_image_runs_as_a_user_stops_on_sigterm_and_keeps_var_in_a_volume(
    shipped: Settings,
) -> None:
    *_, run = read_dockerfile(DOCKERFILE)
    user = instructions(run, "USER")[-1].args.split(":")[0]
    assert user not in ("root", "0")
    assert [i.args for i in instructions(run, "STOPSIGNAL")] == ["SIGTERM"]
    (workdir,) = (PurePosixPath(i.args) for i in instructions(run, "WORKDIR"))
    volumes = [v for i in instructions(run, "VOLUME") for v in exec_form(i.args)]
    assert str(workdir / shipped.paths.var.relative_to(REPO)) in volumes
    entrypoint = exec_form(instructions(run, "ENTRYPOINT")[-1].args)
    assert entrypoint == ["python", "-m", "newsletter"]
    assert_real_command(exec_form(instructions(run, "CMD")[-1].args), "Dockerfile CMD")
    health = healthcheck_command(run)
    assert health[0] == "python"  # slim images have no curl


# --- compose.yaml ---------------------------------------------------------------------------


def test_compose_has_postgres_a_migration_web_and_a_scalable_worker() -> None:
    services = compose()["services"]
    assert set(services) == {"postgres", *APP_SERVICES}
    assert "healthcheck" in services["postgres"]
    assert services["migrate"]["command"] == ["db", "upgrade"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("web", "worker"):
        assert services[name]["depends_on"]["migrate"]["condition"] == (
            "service_completed_successfully"
        )
    worker = services["worker"]
    # `--scale worker=N` needs no fixed name and no host port.
    assert "container_name" not in worker
    assert "ports" not in worker
    assert worker["healthcheck"] == {"disable": True}  # it serves no web page
    for name in APP_SERVICES:
        assert_real_command(services[name]["command"], f"compose.yaml {name}")


def test_compose_stops_each_service_later_than_the_grace_and_keeps_secrets_in_env_files(
    shipped: Settings,
) -> None:
    services = compose()["services"]
    for name in APP_SERVICES:
        service = services[name]
        assert service["stop_signal"] == "SIGTERM"
        grace_s = float(
            service.get("environment", {}).get(
                "NEWSLETTER_SENDING__SHUTDOWN_GRACE_S", shipped.sending.shutdown_grace_s
            )
        )
        assert seconds(service["stop_grace_period"]) > grace_s + 5, name
        assert service["env_file"] == "newsletter.env"
        assert not any("SECRET" in k or "PASSWORD" in k for k in service.get("environment", {}))
        assert "var:/app/var" in service["volumes"]
    assert services["postgres"]["env_file"] == "postgres.env"
    assert "POSTGRES_PASSWORD" not in services["postgres"].get("environment", {})
    ignored = (REPO / ".gitignore").read_text(encoding="utf-8").split()
    assert {"/newsletter.env", "/postgres.env"} <= set(ignored)


def test_the_env_file_examples_name_only_real_settings() -> None:
    example = REPO / "deploy" / "newsletter.env.example"
    names = re.findall(r"^#? ?(NEWSLETTER_[A-Z_]+)=", example.read_text("utf-8"), re.M)
    assert "NEWSLETTER_SECRET_KEY" in names
    for name in names:
        model: type[BaseModel] = Settings
        parts = name.removeprefix("NEWSLETTER_").lower().split("__")
        for part in parts[:-1]:
            annotation = model.model_fields[part].annotation
            assert isinstance(annotation, type), name
            assert issubclass(annotation, BaseModel), name
            model = annotation
        assert parts[-1] in model.model_fields, name
    assert (REPO / "deploy" / "postgres.env.example").read_text("utf-8").count(
        "POSTGRES_PASSWORD="
    ) == 1


def test_web_s_healthcheck_in_compose_is_the_image_s() -> None:
    *_, run = read_dockerfile(DOCKERFILE)
    assert compose()["services"]["web"]["healthcheck"]["test"] == ["CMD", *healthcheck_command(run)]


@pytest.mark.skipif(not shutil.which("hadolint"), reason="hadolint not installed")
def test_hadolint_finds_nothing() -> None:
    result = subprocess.run(
        ["hadolint", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- the commands run as the units and compose run them -------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Running:
    """A `newsletter` process, its stdout read line by line as it comes."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path, log: Path) -> None:
        self.lines: list[str] = []
        self._stderr = log.open("wb")
        self.process = subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=self._stderr
        )
        self.log = log
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.decode("utf-8", "replace"))

    def wait_for(self, text: str, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while not any(text in line for line in self.lines):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop(timeout_s=5)
                raise AssertionError(
                    f"no {text!r}; stdout: {self.lines}; stderr: {self.log.read_text('utf-8')}"
                )
            time.sleep(0.05)

    def stop(self, timeout_s: float) -> tuple[int, float, str]:
        """SIGTERM, as systemctl stop and docker stop send it; the exit code, how long
        it took, and the last line of the log."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError(f"still running {timeout_s} s after SIGTERM") from None
        finally:
            self._reader.join(timeout=5)
            assert self.process.stdout is not None
            self.process.stdout.close()
            self._stderr.close()
        log = self.log.read_text("utf-8").strip().splitlines()
        return code, time.monotonic() - started, log[-1] if log else ""


def environment_for(tmp_path: Path, unit_env: dict[str, str]) -> dict[str, str]:
    """The unit's Environment=, with the checkout at /opt/newsletter read as this one, and
    the secrets file's lines for a database and var/ of this test's own."""
    base = {k: v for k, v in os.environ.items() if not k.upper().startswith("NEWSLETTER_")}
    base |= {key: value.replace(str(INSTALL_DIR), str(REPO)) for key, value in unit_env.items()}
    return base | {
        "NEWSLETTER_SECRET_KEY": "deploy-test-secret-key-0123456789",
        "NEWSLETTER_DATABASE__URL": f"sqlite:///{tmp_path / 'newsletter.db'}",
        "NEWSLETTER_PATHS__VAR": str(tmp_path / "var"),
    }


def with_port(arguments: list[str], port: int) -> list[str]:
    """The same command line on a free port: the test runs beside others."""
    if "--port" not in arguments:
        return arguments
    at = arguments.index("--port") + 1
    return [*arguments[:at], str(port), *arguments[at + 1 :]]


def ready_line(arguments: list[str]) -> str:
    """What each command prints once it is listening or running."""
    return "Serving the signup pages" if arguments[0] == "web" else "Ctrl-C stops."


def test_each_unit_s_command_starts_and_stops_cleanly_on_sigterm_within_timeoutstopsec(
    tmp_path: Path,
) -> None:
    """ExecStart's command line, from WorkingDirectory with Environment= (the checkout at
    /opt/newsletter read as this one), the venv's python for the venv's `newsletter`. The
    three run side by side, as on a server."""
    started: list[tuple[Unit, list[str], Running]] = []
    for path in UNIT_FILES:
        unit = read_unit(path)
        _, *arguments = unit.argv
        folder = tmp_path / path.stem
        folder.mkdir()
        port = free_port()
        env = environment_for(folder, unit.environment) | {"NEWSLETTER_INBOUND__PORT": str(port)}
        cwd = Path(unit.one("Service", "WorkingDirectory").replace(str(INSTALL_DIR), str(REPO)))
        argv = [sys.executable, "-m", "newsletter", *with_port(arguments, port)]
        started.append((unit, arguments, Running(argv, env, cwd, folder / "stderr.log")))
    for _, arguments, running in started:
        running.wait_for(ready_line(arguments))
    for unit, arguments, running in started:
        timeout_s = seconds(unit.one("Service", "TimeoutStopSec"))
        code, took_s, last = running.stop(timeout_s)
        assert code == 0, f"{unit.path.name}: {running.log.read_text('utf-8')}"
        assert took_s < timeout_s
        if arguments[0] != "inbound":  # the receiver leaves no line of its own
            assert "Stopped on SIGTERM" in last, f"{unit.path.name}: {last}"


def test_compose_s_web_and_worker_start_answer_the_healthcheck_and_stop_within_the_grace_period(
    tmp_path: Path,
) -> None:
    """compose's commands, as the image's ENTRYPOINT runs them (python -m newsletter) with
    the image's ENV; the web answers the image's HEALTHCHECK, run as Docker runs it inside
    the container (on 127.0.0.1, the web listening on 0.0.0.0)."""
    services = compose()["services"]
    *_, run = read_dockerfile(DOCKERFILE)
    image_env = dict(
        pair.split("=", 1)
        for instruction in instructions(run, "ENV")
        for pair in shlex.split(instruction.args)
        if pair.startswith(("PYTHON", "NEWSLETTER_"))
    )
    started: list[tuple[str, Running]] = []
    ports: dict[str, int] = {}
    for name in ("web", "worker"):
        service = services[name]
        folder = tmp_path / name
        folder.mkdir()
        ports[name] = free_port()
        arguments = with_port(service["command"], ports[name])
        env = environment_for(folder, image_env) | {
            "PYTHONPATH": str(REPO),
            "NEWSLETTER_CONFIG": str(REPO / "config.toml"),
            **service.get("environment", {}),
        }
        argv = [sys.executable, "-m", "newsletter", *arguments]
        started.append((name, Running(argv, env, REPO, folder / "stderr.log")))
    for name, running in started:
        running.wait_for(ready_line(services[name]["command"]))
    program, *rest = healthcheck_command(run)
    check = [sys.executable if program == "python" else program, *rest]
    check = [part.replace("127.0.0.1:8000", f"127.0.0.1:{ports['web']}") for part in check]
    result = subprocess.run(check, capture_output=True, text=True, timeout=10)
    assert result.returncode == 0, result.stderr
    for name, running in started:
        code, _, last = running.stop(seconds(services[name]["stop_grace_period"]))
        assert code == 0, f"{name}: {running.log.read_text('utf-8')}"
        assert "Stopped on SIGTERM" in last, f"{name}: {last}"
