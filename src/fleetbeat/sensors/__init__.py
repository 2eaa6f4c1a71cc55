"""Sensors: what a device can read. Each maps a TOML name to "module:Class".

A polled sensor has `interval` and `read() -> {metric: number}`; a streaming
sensor (serial) has `interval = None` and `start(emit)` / `stop()`, calling
`emit(metrics)` from its own thread. Modules import their libraries lazily.
"""

from __future__ import annotations

SENSORS: dict[str, str] = {
    "system": "fleetbeat.sensors.system:SystemSensor",
    "serial": "fleetbeat.sensors.serial_port:SerialSensor",
}
