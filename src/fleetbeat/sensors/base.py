"""What every sensor provides (the Protocols below) and the error tally each one keeps.

A sensor module holds its frozen `Config` record and its class. The agent builds
every sensor the same way, `cls(config, clock=..., wall=..., sysfs_root=...)`,
and runs it one of two ways: a polled sensor (`interval` in seconds) is read by
the agent's scheduler; a streaming sensor (`interval` None, e.g. serial) reads in
its own thread between `start(emit)` and `stop()`. Its `sampling` table is not
part of its Config: the agent parses it for every sensor alike. Logs name a
sensor by its `name` (the readings' `src`); across a reload it keeps running
while its type, Config and sampling table compare equal (`agent.reload`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable, Optional, Protocol, runtime_checkable

from fleetbeat.logutil import RateLimitedLog

if TYPE_CHECKING:
    from typing import TypeGuard  # novermin - read by mypy only

Emit = Callable[[dict[str, float]], None]
Clock = Callable[[], float]
Row = tuple[str, str, str]  # (metric or port, value, note): one line of `fleetbeat sensors`


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


class SensorConfig(Protocol):
    """A sensor's frozen config record (`fleetbeat.config.frozen.dataclass`)."""

    @property
    def name(self) -> str:
        """The readings' `src`: unique among the agent's sensors; names it in logs."""
        ...


@runtime_checkable  # for tests/test_registry.py; the agent never isinstance()s it
class Sensor(Protocol):
    """What the agent asks of every sensor, polled or streaming."""

    name: str
    interval: Optional[float]  # seconds between reads; None: it emits by itself
    errors: SensorErrors

    def report(self) -> list[Row]:
        """What it can read now, what it cannot and why (`fleetbeat sensors`)."""
        ...


@runtime_checkable  # for tests/test_registry.py; the agent never isinstance()s it
class PolledSensor(Sensor, Protocol):
    def read(self) -> dict[str, float]:
        """Read now; metrics that fail are skipped and counted in `errors`."""
        ...


@runtime_checkable  # for tests/test_registry.py; the agent never isinstance()s it
class StreamingSensor(Sensor, Protocol):
    def start(self, emit: Emit) -> None:
        """Begin reading in the background; call `emit` with each reading. Never blocks."""
        ...

    def stop(self) -> None:
        """Stop the background reader (within about a second)."""
        ...


class SensorClass(Protocol):
    """A sensor class as the registry names it: its Config record and its constructor."""

    @property
    def Config(self) -> type[SensorConfig]: ...

    def __call__(self, config: Any, *, clock: Clock, wall: Clock, sysfs_root: str) -> Sensor: ...


def is_streaming(sensor: Sensor) -> TypeGuard[StreamingSensor]:
    """True for a sensor that reads in its own thread (`interval` None)."""
    return sensor.interval is None


def is_polled(sensor: Sensor) -> TypeGuard[PolledSensor]:
    return sensor.interval is not None
