"""`newsletter web --workers N`: N processes answering on one port, stopped together by one
SIGTERM or one Ctrl-C, and stopped together when one of them dies."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.e2e.conftest import ok
from tests.e2e.test_crash import free_port, stop, wait_until

COURSE = "leg-weakness-after-microdiscectomy"


class WebProcesses:
    def __init__(self, admin, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
        ok(admin("sequences", "queue", f"lessons/{COURSE}"))
        self.port = free_port()
        self.log = tmp_path / "web.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "newsletter", "web", "--workers", "2",
                 "--port", str(self.port)],
                cwd=REPO,
                env=admin.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, as a terminal's job is
            )  # fmt: skip

    def answers(self) -> bool:
        try:
            url = f"http://127.0.0.1:{self.port}/"
            return urllib.request.urlopen(url, timeout=2).status == 200
        except OSError:
            return False

    def children(self) -> list[int]:
        found = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(pid) for pid in found.read_text().split()] if found.exists() else []

    def output(self) -> str:
        return self.log.read_text()


@pytest.fixture
def web(admin, tmp_path: Path) -> Iterator[WebProcesses]:
    processes = WebProcesses(admin, tmp_path)
    # Each says so once its stop signal is handled: from then on, SIGTERM stops it cleanly.
    wait_until(
        lambda: processes.output().count(" answers.") == 2 or processes.process.poll() is not None
    )
    yield processes
    stop(processes.process)


def test_two_processes_answer_and_one_sigterm_stops_both(web: WebProcesses):
    children = web.children()
    assert all(web.answers() for _ in range(20))

    web.process.send_signal(signal.SIGTERM)

    assert stop(web.process) == 0, web.output()
    assert web.output().count("Stopped on SIGTERM: the requests under way were answered.") == 2
    assert not any(Path(f"/proc/{pid}").exists() for pid in children)
    assert "Traceback" not in web.output()


def test_ctrl_c_to_the_whole_group_stops_them_once_not_forced(web: WebProcesses):
    os.killpg(web.process.pid, signal.SIGINT)  # what a terminal does on Ctrl-C

    assert stop(web.process) == 0, web.output()
    assert "cut off" not in web.output()  # one stop each, not a forced one


def test_when_one_process_dies_the_others_stop_and_it_exits_1(web: WebProcesses):
    first, second = web.children()
    os.kill(first, signal.SIGKILL)

    assert stop(web.process) == 1, web.output()
    assert "A web process ended by itself (exit code -9); stopping the others." in web.output()
    assert not Path(f"/proc/{second}").exists()


def test_a_port_in_use_is_said_once(admin, tmp_path: Path):
    port = free_port()
    with socket.create_server(("127.0.0.1", port)):
        refused = admin("web", "--workers", "2", "--port", str(port))
    assert refused.returncode == 1
    assert (
        refused.stderr.strip()
        == f"error: cannot listen on 127.0.0.1:{port}: Address already in use"
    )
