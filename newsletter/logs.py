"""Log lines that can never cost what they report: a failing log sink (a full disk, a broken
handler) loses the line, never the outcome or the pass it describes."""

from __future__ import annotations

import contextlib
import logging


def log_event(
    logger: logging.Logger, level: int, message: str, action: str, *, exc_info: bool = False
) -> None:
    """`action` is the stable key of the event (`extra={"action": …}`), for log searches;
    `exc_info` adds the traceback of the exception being handled."""
    with contextlib.suppress(Exception):
        logger.log(level, message, extra={"action": action}, exc_info=exc_info)
