"""A streaming sensor for the reload tests (the serial sensor lives on another branch).

It records start() and stop() calls; reload must stop the old one and start the new one.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Optional

from fleetbeat.config.frozen import dataclass
from fleetbeat.config.schema import option, string
from fleetbeat.sensors.base import SensorErrors

EVENTS: list[tuple[str, str]] = []  # ("start" | "stop", sensor name)


@dataclass(frozen=True)
class StreamStubConfig:
    name: str = option("stub", string())
    port: str = option("/dev/ttyUSB0", string())


class StreamStub:
    Config = StreamStubConfig

    def __init__(self, config: StreamStubConfig, **injected: Any) -> None:
        self.config = config
        self.name = config.name
        self.interval: Optional[float] = None
        self.errors = SensorErrors(self.name, logging.getLogger(__name__))
        self.emit: Optional[Callable[[dict[str, float]], None]] = None

    def start(self, emit: Callable[[dict[str, float]], None]) -> None:
        EVENTS.append(("start", self.name))
        self.emit = emit

    def stop(self) -> None:
        EVENTS.append(("stop", self.name))

    def read(self) -> dict[str, float]:
        return {}

    def report(self) -> list[tuple[str, str, Any]]:
        return []
