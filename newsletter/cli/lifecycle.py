"""How the long-running commands live and stop: their log output, and SIGTERM and SIGINT
(`systemctl stop`, `docker stop`, Ctrl-C), where the first signal asks for a clean stop and
a second one forces it."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
from collections.abc import Callable
from types import FrameType, TracebackType

from newsletter import failpoints
from newsletter.logs import log_event

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

    def __init__(self, *, only_sigterm: bool = False) -> None:
        #: SIGINT left alone: a process of `web --workers` hears its stop from its parent.
        self._signals = (signal.SIGTERM,) if only_sigterm else _STOP_SIGNALS
        self.requested = asyncio.Event()
        self.forced = asyncio.Event()
        #: The first signal's name, for the last log line.
        self.name = ""
        self._loop: asyncio.AbstractEventLoop | None = None

    def __enter__(self) -> StopSignals:
        self._loop = asyncio.get_running_loop()
        for number in self._signals:
            self._loop.add_signal_handler(number, self._received, number)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._loop is not None
        for number in self._signals:
            self._loop.remove_signal_handler(number)

    def _received(self, number: int) -> None:
        if not self.requested.is_set():
            self.name = signal.Signals(number).name
            self.requested.set()
        else:
            self.forced.set()


def supervise(count: int, serve: Callable[[], None]) -> int:
    """Run `serve` in `count` processes forked from this one until SIGTERM or SIGINT, which
    each of them hears as SIGTERM (a second signal as a second SIGTERM, which forces them).
    If one ends by itself, the others are stopped and the exit code is 1: the service
    manager then restarts the whole, rather than this loop restarting a process that may
    fail again at once. Returns 0 when every process stopped cleanly when asked."""
    processes: list[multiprocessing.process.BaseProcess] = []
    stops = 0

    def stop_all(number: int = signal.SIGTERM, frame: FrameType | None = None) -> None:
        nonlocal stops
        stops += 1
        for process in processes:
            if process.pid is not None and process.is_alive():
                os.kill(process.pid, signal.SIGTERM)

    previous = {number: signal.signal(number, stop_all) for number in _STOP_SIGNALS}
    ended_by_itself: int | None = None
    try:
        forked = multiprocessing.get_context("fork")
        processes += [
            forked.Process(target=_child, args=(serve,), name=f"newsletter-web-{n + 1}")
            for n in range(count)
        ]
        # A stop signal while forking waits until every process is started (and has its
        # own handlers), so that it reaches them all.
        signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            for process in processes:
                process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
        while alive := [p for p in processes if p.is_alive()]:
            multiprocessing.connection.wait([p.sentinel for p in alive], timeout=1)
            if stops or ended_by_itself is not None:
                continue
            ended = next((p for p in processes if p.exitcode is not None), None)
            if ended is not None:
                ended_by_itself = ended.exitcode
                log_event(
                    log,
                    logging.ERROR,
                    f"A web process ended by itself (exit code {ended.exitcode}); "
                    "stopping the others.",
                    "worker_process_ended",
                )
                stop_all()
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    if ended_by_itself is not None:
        return 1
    # Ended by the SIGTERM itself: it came before that process had started serving, so
    # nothing was under way in it.
    return 0 if all(p.exitcode in (0, -signal.SIGTERM) for p in processes) else 1


def _child(serve: Callable[[], None]) -> None:
    # The parent's handlers were copied by the fork: its SIGTERM is this process's stop,
    # and Ctrl-C's SIGINT (sent to the whole process group) reaches it through the parent.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)  # blocked while forking
    from newsletter.cli.app import reporting_errors  # the CLI's app imports this module

    reporting_errors(serve)
