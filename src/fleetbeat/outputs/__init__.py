"""Outputs (where payloads go) and encoders (how messages become payloads).

Each registry maps the name used in the TOML to "module:Class". Modules are
imported only when configured, so an agent without MQTT never loads paho.
"""

from __future__ import annotations

import importlib
from typing import Any

OUTPUTS: dict[str, str] = {
    "udp": "fleetbeat.outputs.udp:UdpOutput",
    "mqtt": "fleetbeat.outputs.mqtt_publish:MqttOutput",
}

ENCODERS: dict[str, str] = {
    "json": "fleetbeat.outputs.json_wire:JsonEncoder",
    "statsd": "fleetbeat.outputs.statsd_lines:StatsdEncoder",
    "dogstatsd": "fleetbeat.outputs.statsd_lines:DogStatsdEncoder",
    "influx": "fleetbeat.outputs.influx_lines:InfluxEncoder",
}


def load(spec: str) -> Any:
    """The class named by a registry entry "package.module:Class"."""
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)
