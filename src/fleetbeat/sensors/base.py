"""The sensor interfaces and the error tally every sensor keeps."""

from __future__ import annotations

import logging
from typing import Callable, Optional, Protocol

from fleetbeat.logutil import RateLimitedLog

Emit = Callable[[dict[str, float]], None]


class SensorErrors:
    """Counts a sensor's errors by reason (for the heartbeat) and logs them rate-limited."""

    def __init__(self, sensor: str, logger: logging.Logger) -> None:
        self.sensor = sensor
        self.by_reason: dict[str, int] = {}
        self._log = RateLimitedLog(logger)

    def count(self, reason: str, detail: str = "") -> None:
        self.by_reason[reason] = self.by_reason.get(reason, 0) + 1
        self._log.log(
            logging.WARNING, reason, "sensor %s: %s%s", self.sensor, reason,
            f" ({detail})" if detail else "",
        )  # fmt: skip


class Sensor(Protocol):
    """A source of readings: `name` is the `src` of its messages."""

    name: str
    interval: Optional[float]  # None: the sensor emits by itself (start/stop)
    errors: SensorErrors

    def read(self) -> dict[str, float]:
        """Read now; metrics that fail are skipped and counted in `errors`."""
        ...

    def report(self) -> list[tuple[str, str, str]]:
        """(metric or port, value, note) rows for `fleetbeat sensors`."""
        ...


class StreamingSensor(Sensor, Protocol):
    def start(self, emit: Emit) -> None:
        """Begin reading in the background; call `emit` with each reading."""

    def stop(self) -> None:
        """Stop the background reader."""
