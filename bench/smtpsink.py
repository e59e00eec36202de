"""Postfix's smtp-sink for the benchmarks: an SMTP server on a free 127.0.0.1 port that
accepts everything, keeps nothing, and counts what it received."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

SMTP_SINK = "/usr/sbin/smtp-sink"
INSTALL_HINT = (
    "smtp-sink (from Debian's postfix package) is needed and was not found. Install it with:\n"
    "    sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y postfix\n"
    "(the postfix service itself need not run; only /usr/sbin/smtp-sink is used)."
)
#: One counter record of `smtp-sink -c`, e.g. "sess=1 quit=1 mesg=3", each ended by "\r".
COUNTERS = re.compile(rb"mesg=(\d+)")


def find_sink() -> str:
    """The smtp-sink binary; stops the script with how to install it when there is none."""
    sink = shutil.which("smtp-sink") or (SMTP_SINK if os.access(SMTP_SINK, os.X_OK) else None)
    if sink is None:
        sys.exit(INSTALL_HINT)
    return sink


class Sink:
    """smtp-sink on a free loopback port, pinned to `cpu` when given. With -c it writes running
    counters after every message ("sess=1 quit=1 mesg=3\\r"); `received()` reads only what
    was written since it last looked, so that it can be polled often."""

    def __init__(self, binary: str, cpu: int | None) -> None:
        self.binary, self.cpu = binary, cpu
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.output = tempfile.TemporaryFile()  # noqa: SIM115 (closed in __exit__)
        self._read = 0  #: bytes of output parsed so far
        self._partial = b""  #: an unfinished record at the end of what was read
        self._count = 0

    def __enter__(self) -> Sink:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        command = [self.binary, "-c"]
        if os.geteuid() == 0:
            command += ["-u", "root"]  # as root, smtp-sink wants a user to switch to
        command += [f"127.0.0.1:{self.port}", "1000"]
        cpu = self.cpu
        self.process = subprocess.Popen(
            command,
            stdout=self.output,
            stderr=subprocess.STDOUT,
            preexec_fn=(lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    text = self._text()
                    self.__exit__()
                    sys.exit(f"smtp-sink did not start: {text}")
                time.sleep(0.05)

    def __exit__(self, *_: object) -> None:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        if not self.output.closed:
            self.received()  # the last count stays readable
            self.output.close()

    def received(self) -> int:
        """Messages received so far, by the sink's own counter."""
        if self.output.closed:
            return self._count
        new = os.pread(self.output.fileno(), 1 << 20, self._read)
        while new:
            self._read += len(new)
            records = (self._partial + new).split(b"\r")
            self._partial = records.pop()
            for record in reversed(records):
                if found := COUNTERS.search(record):
                    self._count = int(found[1])
                    break
            new = os.pread(self.output.fileno(), 1 << 20, self._read)
        return self._count

    def _text(self) -> str:
        return os.pread(self.output.fileno(), 1 << 16, 0).decode(errors="replace")


def check_sink(sink: Sink, expected: int, what: str) -> None:
    received = sink.received()
    if received != expected:
        sys.exit(f"FAILED: {what}: smtp-sink received {received} messages, expected {expected}")
