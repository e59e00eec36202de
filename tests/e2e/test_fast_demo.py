"""`newsletter serve --speed`: the schedule runs fast, and nothing else does. A confirmation
link still works after more fast-forwarded days than it lives, because links expire in real
time."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from email import message_from_bytes, policy
from pathlib import Path

import httpx

from newsletter.delivery.transport import list_outbox
from tests.conftest import REPO


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(condition, timeout_s: float = 60):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not (found := condition()):
        assert time.monotonic() < deadline, "timed out waiting for serve"
        time.sleep(0.1)
    return found


def answering(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_confirmation_link_outlives_a_fast_forwarded_week(tmp_path: Path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    environment = {k: v for k, v in os.environ.items() if not k.upper().startswith("NEWSLETTER_")}
    environment |= {
        "NEWSLETTER_DATABASE__URL": f"sqlite:///{tmp_path / 'newsletter.db'}",
        "NEWSLETTER_PATHS__VAR": str(tmp_path / "var"),
        "NEWSLETTER_SECRET_KEY": "fast-demo-test-secret",
        "NEWSLETTER_SCHEDULE__TICK_S": "0.2",
    }
    log = tmp_path / "serve.log"
    with log.open("wb") as output:
        serve = subprocess.Popen(
            # A million times faster: the 7 days a confirmation link lives pass in 0.6 s.
            [
                sys.executable,
                "-m",
                "newsletter",
                "serve",
                "--speed",
                "1000000",
                "--port",
                str(port),
            ],
            cwd=REPO,
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: answering(base + "/") or serve.poll() is not None)
        with httpx.Client(base_url=base, timeout=10) as browser:
            signed_up = browser.post("/subscribe", data={"email": "fast@example.com"})
            assert signed_up.status_code == 303, signed_up.text

            outbox = tmp_path / "var" / "outbox"
            [entry] = wait_for(lambda: list_outbox(outbox))
            message = message_from_bytes(entry.path.read_bytes(), policy=policy.default)
            text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
            token = re.search(r"/confirm/(\S+)", text).group(1)  # type: ignore[union-attr]
            time.sleep(1)  # more than 11 days of the fast schedule

            page = browser.get(f"/confirm/{token}")
            assert page.status_code == 200, page.text
            csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
            confirmed = browser.post(f"/confirm/{token}", data={"csrf": csrf})
            assert confirmed.status_code == 200, confirmed.text
    finally:
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=30) == 0, log.read_text()
