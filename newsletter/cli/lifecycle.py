"""How the long-running commands live and stop: their log output, and SIGTERM and SIGINT
(`systemctl stop`, `docker stop`, Ctrl-C), where the first signal asks for a clean stop and
a second one forces it."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from types import TracebackType

from newsletter import failpoints

log = logging.getLogger("newsletter")

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("newsletter"):
            failpoints.hit("log.emit")  # a test's stand-in for a log sink that fails
        super().emit(record)


def configure_logging() -> None:
    """One line per event on stderr, ours and the libraries' warnings; not their chatter."""
    handler = _Handler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    # Every job run, every migration step, every server start: buries what matters.
    for noisy in ("apscheduler", "alembic", "uvicorn.error"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # A dispatch pass runs for as long as mail is due, so the next tick finding it still
    # running is the normal case, not worth a warning every second.
    logging.getLogger("apscheduler.scheduler").setLevel(logging.ERROR)


class StopSignals:
    """While entered, SIGTERM and SIGINT set `requested`, and a second one `forced`, instead
    of ending the process (or raising KeyboardInterrupt in the middle of a send)."""

    def __init__(self) -> None:
        self.requested = asyncio.Event()
        self.forced = asyncio.Event()
        #: The first signal's name, for the last log line.
        self.name = ""
        self._loop: asyncio.AbstractEventLoop | None = None

    def __enter__(self) -> StopSignals:
        self._loop = asyncio.get_running_loop()
        for number in _STOP_SIGNALS:
            self._loop.add_signal_handler(number, self._received, number)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._loop is not None
        for number in _STOP_SIGNALS:
            self._loop.remove_signal_handler(number)

    def _received(self, number: int) -> None:
        if not self.requested.is_set():
            self.name = signal.Signals(number).name
            self.requested.set()
        else:
            self.forced.set()
