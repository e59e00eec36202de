"""Real `newsletter` processes stopped the ways production stops them: SIGKILL at every
failpoint of the send path, SIGTERM and Ctrl-C in the middle of a batch, a second signal,
and a log sink that fails. Nothing is lost; duplicates stay within the bound that
docs/delivery.md states (none at all for a clean stop)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from newsletter.config import Settings
from newsletter.db.models import Delivery, DeliveryStatus
from tests.conftest import REPO
from tests.databases import on_each_engine
from tests.databases import settings_on_test_database as settings_on_test_database
from tests.integration.harness import Stack, settings_for, shipped_course
from tests.smtpd import SmtpServer

pytestmark = on_each_engine  # workers killed on SQLite and on PostgreSQL
SUBSCRIBERS = 40
RECORD_EVERY = 5
CONNECTIONS = 2
#: docs/delivery.md: a crash sends again at most record_every + connections messages.
DUPLICATE_BOUND = RECORD_EVERY + CONNECTIONS
LEASE_S = 30
SMTP_TIMEOUT_S = 5  # the lease must outlast twice the SMTP timeouts


def wait_until(condition: Callable[[], object], timeout_s: float = 60) -> None:
    """Poll for something another process does; the deadline only guards against a hang."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the other process"
        time.sleep(0.02)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Scene:
    """A database with SUBSCRIBERS welcome emails due, a real SMTP server, and the
    environment a `newsletter` process needs to send them there."""

    def __init__(self, settings: Settings, tmp_path: Path, server: SmtpServer, **sending):  # type: ignore[no-untyped-def]
        defaults = {
            "record_every": RECORD_EVERY,
            "lease_s": LEASE_S,
            "connections": CONNECTIONS,
            "smtp_timeout_s": SMTP_TIMEOUT_S,
            "smtp_data_timeout_s": SMTP_TIMEOUT_S,
        }
        self.config = settings_for(settings, tmp_path, **(defaults | sending))
        self.server = server
        self.start = datetime.now(UTC)
        self.emails = [f"k{n}@example.com" for n in range(SUBSCRIBERS)]
        self.log = tmp_path / "process.log"
        base = {k: v for k, v in os.environ.items() if not k.upper().startswith("NEWSLETTER_")}
        self.environment = base | {
            "NEWSLETTER_DATABASE__URL": self.config.database.url,
            "NEWSLETTER_PATHS__VAR": str(tmp_path / "var"),
            "NEWSLETTER_SMTP__HOST": server.host,
            "NEWSLETTER_SMTP__PORT": str(server.port),
            "NEWSLETTER_SMTP__TLS": "none",
            "NEWSLETTER_SMTP__ALLOW_HTTP_LINKS": "true",
            "NEWSLETTER_SENDING__BATCH_SIZE": str(self.config.sending.batch_size),
            "NEWSLETTER_SENDING__CONNECTIONS": str(CONNECTIONS),
            "NEWSLETTER_SENDING__RECORD_EVERY": str(self.config.sending.record_every),
            "NEWSLETTER_SENDING__MAX_PER_SECOND": "1000",
            "NEWSLETTER_SENDING__LEASE_S": str(LEASE_S),
            "NEWSLETTER_SENDING__SMTP_TIMEOUT_S": str(SMTP_TIMEOUT_S),
            "NEWSLETTER_SENDING__SMTP_DATA_TIMEOUT_S": str(SMTP_TIMEOUT_S),
            "NEWSLETTER_SCHEDULE__TICK_S": "0.2",
            "NEWSLETTER_SECRET_KEY": "crash-test-secret-key",
        }
        asyncio.run(self._prepare())

    async def _prepare(self) -> None:
        stack = await Stack.start(self.config, self.server, self.start)
        try:
            sequence = await stack.queue(shipped_course(REPO))
            for email in self.emails:
                await stack.subscribe(email, sequence_id=sequence)
            await stack.worker.plan_once(stack.clock.now())
        finally:
            await stack.close()

    def spawn(self, *args: str, **environment: str) -> subprocess.Popen[bytes]:
        with self.log.open("wb") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "newsletter", *args],
                cwd=REPO,
                env=self.environment | environment,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def output(self) -> str:
        return self.log.read_text()

    def statuses(self) -> Counter[str]:
        return Counter(asyncio.run(self._read(select(Delivery.status))))

    def recover(self, after: timedelta = timedelta(0)) -> Counter[str]:
        """Another worker, `after` the start (past the dead one's leases, if need be),
        sends what is left; the statuses once it is done."""
        asyncio.run(self._recover(after))
        return self.statuses()

    async def _recover(self, after: timedelta) -> None:
        stack = await Stack.start(self.config, self.server, self.start + after)
        try:
            await stack.run()
        finally:
            await stack.close()

    async def _read(self, query):  # type: ignore[no-untyped-def]
        stack = await Stack.start(self.config, self.server, self.start)
        try:
            async with stack.sessions() as session:
                return list(await session.scalars(query))
        finally:
            await stack.close()

    def received(self) -> Counter[str]:
        return Counter(rcpt for _, rcpts, _ in self.server.messages for rcpt in rcpts)


@pytest.fixture
def slow_server() -> Iterator[SmtpServer]:
    with SmtpServer() as server:
        server.delay_data_s = 0.05  # slow enough that a signal lands inside a batch
        yield server


def stop(process: subprocess.Popen[bytes], timeout_s: float = 30) -> int:
    try:
        return process.wait(timeout=timeout_s)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


# --- crashes -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failpoint", "may_repeat"),
    [
        ("dispatch.after_claim=kill", False),  # claimed, nothing sent: nothing to repeat
        ("dispatch.after_accept=kill@8", True),  # accepted, not recorded
        ("dispatch.after_record=kill@2", True),  # one chunk recorded, the next on the wire
        ("", True),  # SIGKILL from outside, at whatever point the batch has reached
    ],
    ids=["after claim", "after the relay's 250", "after a commit", "from outside"],
)
def test_a_killed_worker_loses_nothing_and_repeats_at_most_the_stated_bound(
    settings, tmp_path, slow_server, failpoint, may_repeat
):
    scene = Scene(settings, tmp_path, slow_server, batch_size=SUBSCRIBERS)
    worker = scene.spawn("worker", NEWSLETTER_FAILPOINTS=failpoint)
    try:
        if failpoint:
            assert stop(worker) == -signal.SIGKILL, scene.output()
        else:
            wait_until(lambda: len(slow_server.messages) >= 2 * RECORD_EVERY + 3)
            worker.send_signal(signal.SIGKILL)
            stop(worker)
    finally:
        if worker.poll() is None:
            worker.kill()
    at_crash = scene.statuses()
    assert at_crash[DeliveryStatus.SENDING] > 0  # it died holding claims it never recorded

    after = scene.recover(timedelta(seconds=LEASE_S + 60))

    received = scene.received()
    assert set(received) == set(scene.emails)  # none lost
    duplicates = sum(count - 1 for count in received.values())
    assert duplicates <= (DUPLICATE_BOUND if may_repeat else 0)
    assert after == {DeliveryStatus.SENT: SUBSCRIBERS}


# --- stopping cleanly --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "stop_signal"),
    [
        (("worker",), signal.SIGTERM),  # systemctl stop, docker stop
        (("worker",), signal.SIGINT),  # Ctrl-C
        (("serve",), signal.SIGTERM),  # the scheduler and the web app
    ],
    ids=["worker SIGTERM", "worker Ctrl-C", "serve SIGTERM"],
)
def test_a_signal_mid_batch_finishes_what_is_on_the_wire_and_repeats_nothing(
    settings, tmp_path, slow_server, command, stop_signal
):
    scene = Scene(settings, tmp_path, slow_server, record_every=50)  # all 40 unrecorded
    web = ("--port", str(free_port())) if command == ("serve",) else ()
    process = scene.spawn(*command, *web)
    wait_until(lambda: len(slow_server.messages) >= 6 or process.poll() is not None)
    process.send_signal(stop_signal)
    code = stop(process)

    output = scene.output()
    assert code == 0, output
    assert "Traceback" not in output
    assert output.count(f"Stopped on {signal.Signals(stop_signal).name}: every send") == 1
    at_stop = scene.statuses()
    assert DeliveryStatus.SENDING not in at_stop  # claimed, unsent rows went straight back
    assert at_stop[DeliveryStatus.SENT] == len(slow_server.messages) < SUBSCRIBERS

    after = scene.recover()  # at once: no lease to wait for

    assert scene.received() == Counter(scene.emails)  # everyone once, nobody twice
    assert after == {DeliveryStatus.SENT: SUBSCRIBERS}


def test_a_second_signal_cuts_off_the_sends_under_way(settings, tmp_path, slow_server):
    scene = Scene(settings, tmp_path, slow_server)
    slow_server.delay_data_s = 30  # a relay that takes its time over every message
    process = scene.spawn("worker")
    wait_until(lambda: "Sending to" in scene.output())
    time.sleep(1)  # the first sends are under way
    process.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    started = time.monotonic()
    code = stop(process, timeout_s=10)

    assert time.monotonic() - started < 5
    assert code == 1
    output = scene.output()
    assert "Traceback" not in output
    assert "Stopped on SIGTERM: 2 sends were cut off mid-exchange: they may arrive twice." in output
    assert scene.statuses() == {DeliveryStatus.QUEUED: SUBSCRIBERS}  # all back in the queue


def test_the_web_app_alone_stops_on_sigterm(settings, tmp_path, slow_server):
    scene = Scene(settings, tmp_path, slow_server)
    port = free_port()
    process = scene.spawn("web", "--port", str(port))

    def answers() -> bool:
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).status == 200
        except OSError:
            return False

    wait_until(lambda: answers() or process.poll() is not None)
    process.send_signal(signal.SIGTERM)

    assert stop(process) == 0, scene.output()
    assert "Stopped on SIGTERM: the requests under way were answered." in scene.output()
    assert "Traceback" not in scene.output()


def test_a_failing_log_sink_costs_no_outcome(settings, tmp_path, slow_server):
    scene = Scene(settings, tmp_path, slow_server)
    process = scene.spawn("worker", NEWSLETTER_FAILPOINTS="log.emit=raise")
    wait_until(lambda: len(slow_server.messages) == SUBSCRIBERS or process.poll() is not None)
    wait_until(lambda: scene.statuses() == {DeliveryStatus.SENT: SUBSCRIBERS})
    process.send_signal(signal.SIGTERM)

    assert stop(process) == 0, scene.output()
    assert scene.received() == Counter(scene.emails)
