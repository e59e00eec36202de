"""A worker process killed with SIGKILL in the middle of a batch loses nothing, and sends
again at most what it had not yet recorded (docs/delivery.md states the bound)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from newsletter.db.models import Delivery, DeliveryStatus
from tests.conftest import REPO
from tests.integration.harness import Stack, settings_for, shipped_course
from tests.smtpd import SmtpServer

SUBSCRIBERS = 40
BATCH = 40  # the whole backlog in one claim: the kill lands inside it
RECORD_EVERY = 5
CONNECTIONS = 2
#: docs/delivery.md: at most record_every + connections messages are sent again.
DUPLICATE_BOUND = RECORD_EVERY + CONNECTIONS
LEASE_S = 30
SMTP_TIMEOUT_S = 5  # the lease must outlast twice the SMTP timeouts


def wait_until(condition, timeout_s: float = 60) -> None:  # type: ignore[no-untyped-def]
    """Poll for something another process does; the deadline only guards against a hang."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the worker"
        time.sleep(0.02)


def test_a_killed_worker_loses_nothing_and_duplicates_at_most_one_batch(settings, tmp_path):
    config = settings_for(
        settings,
        tmp_path,
        batch_size=BATCH,
        record_every=RECORD_EVERY,
        lease_s=LEASE_S,
        connections=CONNECTIONS,
        smtp_timeout_s=SMTP_TIMEOUT_S,
        smtp_data_timeout_s=SMTP_TIMEOUT_S,
    )
    start = datetime.now(UTC)

    async def prepare(server: SmtpServer) -> None:
        stack = await Stack.start(config, server, start)
        try:
            sequence = await stack.queue(shipped_course(REPO))
            for n in range(SUBSCRIBERS):
                await stack.subscribe(f"k{n}@example.com", sequence_id=sequence)
            await stack.worker.plan_once(stack.clock.now())
        finally:
            await stack.close()

    async def statuses(stack: Stack) -> list[str]:
        async with stack.sessions() as session:
            return list(await session.scalars(select(Delivery.status)))

    async def recover(server: SmtpServer) -> tuple[list[str], list[str]]:
        # Later than the dead worker's lease, so its claims are free again.
        stack = await Stack.start(config, server, start + timedelta(seconds=LEASE_S + 60))
        try:
            at_crash = await statuses(stack)
            await stack.run()
            return at_crash, await statuses(stack)
        finally:
            await stack.close()

    with SmtpServer() as server:
        asyncio.run(prepare(server))
        server.delay_data_s = 0.05  # slow enough that the kill lands inside a batch
        environment = {
            k: v for k, v in os.environ.items() if not k.upper().startswith("NEWSLETTER_")
        }
        environment |= {
            "NEWSLETTER_DATABASE__URL": config.database.url,
            "NEWSLETTER_PATHS__VAR": str(tmp_path / "var"),
            "NEWSLETTER_SMTP__HOST": server.host,
            "NEWSLETTER_SMTP__PORT": str(server.port),
            "NEWSLETTER_SMTP__TLS": "none",
            "NEWSLETTER_SENDING__BATCH_SIZE": str(BATCH),
            "NEWSLETTER_SENDING__CONNECTIONS": str(CONNECTIONS),
            "NEWSLETTER_SENDING__RECORD_EVERY": str(RECORD_EVERY),
            "NEWSLETTER_SENDING__MAX_PER_SECOND": "1000",
            "NEWSLETTER_SENDING__LEASE_S": str(LEASE_S),
            "NEWSLETTER_SENDING__SMTP_TIMEOUT_S": str(SMTP_TIMEOUT_S),
            "NEWSLETTER_SENDING__SMTP_DATA_TIMEOUT_S": str(SMTP_TIMEOUT_S),
            "NEWSLETTER_SECRET_KEY": "crash-test-secret-key",
        }
        worker = subprocess.Popen(
            [sys.executable, "-m", "newsletter", "worker"],
            cwd=REPO,
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            # Kill it once a batch is under way: some of it received, not all recorded.
            wait_until(
                lambda: len(server.messages) >= 2 * RECORD_EVERY + 3 or worker.poll() is not None
            )
            assert worker.poll() is None, worker.stderr.read() if worker.stderr else ""
            worker.send_signal(signal.SIGKILL)
            worker.wait(timeout=10)
        finally:
            if worker.poll() is None:
                worker.kill()
            if worker.stderr:
                worker.stderr.close()
        received_before = len(server.messages)
        assert 0 < received_before < SUBSCRIBERS

        server.delay_data_s = 0
        at_crash, after = asyncio.run(recover(server))

    per_recipient = Counter(rcpt for _, rcpts, _ in server.messages for rcpt in rcpts)
    assert set(per_recipient) == {f"k{n}@example.com" for n in range(SUBSCRIBERS)}  # none lost
    duplicates = sum(count - 1 for count in per_recipient.values())
    assert duplicates <= DUPLICATE_BOUND
    assert DeliveryStatus.SENDING in at_crash  # it died holding claims it never recorded
    assert after == [DeliveryStatus.SENT] * SUBSCRIBERS
