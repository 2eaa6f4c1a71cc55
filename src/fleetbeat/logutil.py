"""Logging helpers: a rate limiter so a failing network or sensor cannot flood the log."""

from __future__ import annotations

import logging
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
