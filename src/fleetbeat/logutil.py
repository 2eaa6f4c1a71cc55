"""Logging helpers: a rate limiter so a failing network or sensor cannot flood the log."""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable


class RateLimitedLog:
    """Logs each key at most once per `every` seconds, saying how many were suppressed."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        every: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._every = every
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def log(self, level: int, key: str, msg: str, *args: Any) -> None:
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self._every:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        self._last[key] = now
        hidden = self._suppressed.pop(key, 0)
        if hidden:
            msg += " (%d more like this since the last report)"
            args = (*args, hidden)
        self._logger.log(level, msg, *args)


# syslog priorities journald reads from a "<N>" line prefix (sd-daemon.h)
_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


def syslog_priority(levelno: int) -> int:
    """The syslog priority of a logging level (levels between two round down)."""
    for level in (logging.CRITICAL, logging.ERROR, logging.WARNING, logging.INFO):
        if levelno >= level:
            return _PRIORITY[level]
    return 7


class JournalFormatter(logging.Formatter):
    """`<N>logger: message` with no timestamp: journald adds the time and reads the priority.

    Every line of a multi-line record (a traceback) carries the prefix, because
    journald makes each line an entry of its own.
    """

    def __init__(self) -> None:
        super().__init__("%(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{syslog_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).splitlines())


def is_journal_stream(stream: Any) -> bool:
    """True if `stream` is the journald stream systemd connected (`$JOURNAL_STREAM`).

    systemd sets JOURNAL_STREAM=device:inode of the stream it gave the service;
    comparing it with the stream's own fstat tells a redirected stderr (a child
    process, `2>file`) from the real journal connection.
    """
    value = os.environ.get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    try:
        st = os.fstat(stream.fileno())
        return (st.st_dev, st.st_ino) == (int(dev), int(ino))
    except (OSError, ValueError, AttributeError):
        return False
