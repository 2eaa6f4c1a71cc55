"""Every plugin by its TOML name: sensors, encoders, outputs, receivers and notifiers.

One explicit line per plugin, "module:Class", imported only when configured (an
agent without MQTT never loads paho). What a plugin must provide is its kind's
Protocol: `sensors.base.SensorClass`, `outputs.base.EncoderClass`,
`outputs.base.OutputClass`, `collector.receivers.base.ReceiverClass`,
`collector.notifiers.base.Notifier`; `tests/test_registry.py` checks every line
here against it. Adding a plugin is one module plus one line below.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from fleetbeat.errors import FleetbeatError

if TYPE_CHECKING:  # the Protocols; the plugin modules themselves are imported lazily
    from fleetbeat.collector.notifiers.base import Notifier
    from fleetbeat.collector.receivers.base import ReceiverClass
    from fleetbeat.outputs.base import EncoderClass, OutputClass
    from fleetbeat.sensors.base import SensorClass

SENSORS: dict[str, str] = {  # [sensors.<name>]
    "system": "fleetbeat.sensors.system:SystemSensor",
    "serial": "fleetbeat.sensors.serial_port:SerialSensor",
}

ENCODERS: dict[str, str] = {  # format = "<name>" in any output
    "json": "fleetbeat.outputs.json_wire:JsonEncoder",
    "statsd": "fleetbeat.outputs.statsd_lines:StatsdEncoder",
    "dogstatsd": "fleetbeat.outputs.statsd_lines:DogStatsdEncoder",
    "influx": "fleetbeat.outputs.influx_lines:InfluxEncoder",
}

OUTPUTS: dict[str, str] = {  # [[outputs.<name>]]
    "udp": "fleetbeat.outputs.udp:UdpOutput",
    "mqtt": "fleetbeat.outputs.mqtt_publish:MqttOutput",
    "kafka": "fleetbeat.outputs.kafka_produce:KafkaOutput",
    "http": "fleetbeat.outputs.http_post:HttpOutput",
    "amqp": "fleetbeat.outputs.amqp_publish:AmqpOutput",
}

RECEIVERS: dict[str, str] = {  # [collector.<name>]; UDP's keys are [collector]'s own
    "udp": "fleetbeat.collector.receivers.udp:UdpReceiver",
    "mqtt": "fleetbeat.collector.receivers.mqtt_subscribe:MqttReceiver",
    "kafka": "fleetbeat.collector.receivers.kafka_consume:KafkaReceiver",
    "http": "fleetbeat.collector.receivers.http_ingest:HttpIngest",  # [collector] http_ingest_*
    "amqp": "fleetbeat.collector.receivers.amqp_consume:AmqpConsumer",
}

NOTIFIERS: dict[str, str] = {  # [[collector.notify]] type = "<name>"
    "webhook": "fleetbeat.collector.notifiers.webhook:WebhookNotifier",
    "command": "fleetbeat.collector.notifiers.command:CommandNotifier",
    "apprise": "fleetbeat.collector.notifiers.apprise_notify:AppriseNotifier",
    "alertmanager": "fleetbeat.collector.notifiers.alertmanager:AlertmanagerNotifier",
}


class UnknownPlugin(FleetbeatError):
    """A name that is not in its registry; the message lists the valid ones."""


def load(registry: Mapping[str, str], name: str, what: str = "plugin") -> Any:
    """The class registered as `name`, imported now."""
    spec = registry.get(name)
    if spec is None:
        raise UnknownPlugin(f'unknown {what} "{name}"; valid: {", ".join(sorted(registry))}')
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


def sensor_class(name: str) -> SensorClass:
    cls: SensorClass = load(SENSORS, name, "sensor type")
    return cls


def encoder_class(name: str) -> EncoderClass:
    cls: EncoderClass = load(ENCODERS, name, "format")
    return cls


def output_class(name: str) -> OutputClass:
    cls: OutputClass = load(OUTPUTS, name, "output type")
    return cls


def receiver_class(name: str) -> ReceiverClass:
    cls: ReceiverClass = load(RECEIVERS, name, "receiver")
    return cls


def notifier_class(name: str) -> type[Notifier]:
    cls: type[Notifier] = load(NOTIFIERS, name, "notifier type")
    return cls
