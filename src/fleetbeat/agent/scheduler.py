"""A monotonic-clock scheduler: jobs at fixed intervals, missed ticks skipped.

The loop sleeps until the next deadline (no polling). A job that falls behind
(a slow read, a suspended process) resumes at its next future tick: it never
runs several times in a burst to catch up.
"""

from __future__ import annotations

import logging
import math
from typing import Callable

log = logging.getLogger(__name__)


class Job:
    __slots__ = ("due", "fn", "interval", "name", "runs", "skipped")

    def __init__(self, name: str, interval: float, fn: Callable[[], None], due: float) -> None:
        self.name = name
        self.interval = interval
        self.fn = fn
        self.due = due
        self.runs = 0
        self.skipped = 0


class Scheduler:
    """Runs jobs when due. Not thread-safe: only the agent's loop touches it."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.jobs: list[Job] = []

    def add(self, name: str, interval: float, fn: Callable[[], None], *, first: float) -> Job:
        """Schedule `fn` every `interval` seconds, the first time at monotonic `first`."""
        job = Job(name, interval, fn, first)
        self.jobs.append(job)
        return job

    def run_due(self) -> float:
        """Run every due job once; return the monotonic time of the next deadline."""
        now = self._clock()
        for job in list(self.jobs):
            if job.due > now:
                continue
            try:
                job.fn()
            except Exception:  # a job never kills the loop
                log.exception("job %s failed", job.name)
            job.runs += 1
            job.due += job.interval
            now = self._clock()
            if job.due <= now:
                missed = math.floor((now - job.due) / job.interval) + 1
                job.skipped += missed
                job.due += missed * job.interval
                log.debug("job %s: skipped %d missed tick(s)", job.name, missed)
        return min((j.due for j in self.jobs), default=now + 3600.0)
