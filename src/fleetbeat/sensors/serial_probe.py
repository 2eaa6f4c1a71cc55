"""`fleetbeat sensors` for a serial port: is it there, can it be opened, what does it say.

Apart from the reader (`serial_port`): the agent never runs this. When the agent
is not reading the port, the probe opens it, listens up to PROBE_SECONDS for one
line and shows it with its metrics and the errors counted.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Callable

from fleetbeat import wire
from fleetbeat.sensors.base import Row

if TYPE_CHECKING:
    from fleetbeat.sensors.serial_port import SerialSensor

PROBE_SECONDS = 2.0  # `fleetbeat sensors` listens this long for a line


def probe(sensor: SerialSensor) -> list[Row]:
    """Port present or not, and the last line seen (listening up to ~2 s if needed)."""
    cfg = sensor.config
    rows: list[Row] = []
    is_url = "://" in cfg.port
    if not is_url and not os.path.exists(cfg.port):
        rows.append(("port", cfg.port, "absent"))
    elif sensor.running:
        rows.append(("port", cfg.port, sensor.state))
    else:
        port = sensor.open_port()
        if port is None:
            rows.append(("port", cfg.port, f"present, cannot open: {sensor.state}"))
        else:
            rows.append(("port", cfg.port, "present" if not is_url else "reachable"))
            try:
                sensor.pump(port, _first_line(sensor), PROBE_SECONDS)
            finally:
                sensor.close_port(port)
            if sensor.last_line is None:
                rows.append(("last line", "-", f"none within {PROBE_SECONDS:g} s"))
    if sensor.last_line is not None:
        shown = sensor.last_line if len(sensor.last_line) <= 60 else sensor.last_line[:57] + "..."
        rows.append(("last line", repr(shown), f"format {cfg.format}"))
        for name, value in sorted(wire.clean_metrics(sensor.last_metrics or {}).items()):
            rows.append((name, f"{value:.10g}", ""))
    rows += [(reason, "-", f"error x{n}") for reason, n in sorted(sensor.errors.by_reason.items())]
    return rows


def _first_line(sensor: SerialSensor) -> Callable[[bytes], bool]:
    """A line handler that parses one line (for its metrics and errors), then stops."""

    def on_line(raw: bytes) -> bool:
        sensor.parse_line(raw)
        return True

    return on_line
