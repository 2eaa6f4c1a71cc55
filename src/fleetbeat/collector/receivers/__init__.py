"""Receivers feed the fleet, one module each, named in `fleetbeat.registry.RECEIVERS`.

`udp` (a thread doing blocking `recvfrom`, always on), `mqtt_subscribe` (paho's
network thread, with `[collector.mqtt]`), `kafka_consume` (a consumer group
member, with `[collector.kafka]`), `amqp_consume` (a no-ack consumer, with
`[collector.amqp]`) and `http_ingest` (`POST /ingest` on a listener of its own,
with `http_ingest_listen`). The contract a receiver meets is `base.ReceiverClass`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fleetbeat import registry
from fleetbeat.collector.receivers.base import FleetInput, Receiver

if TYPE_CHECKING:  # the config imports receiver modules (their sections): no cycle at run time
    from fleetbeat.collector.config import CollectorSection


def start_receivers(fleet: FleetInput, config: CollectorSection) -> list[Receiver]:
    """Build and start every configured receiver; on failure close what was started."""
    started: list[Receiver] = []
    try:
        for name in registry.RECEIVERS:
            cls = registry.receiver_class(name)
            if cls.enabled(config):
                receiver = cls(fleet=fleet, config=config)
                started.append(receiver)
                receiver.start()
    except BaseException:
        for r in started:
            r.close()
        raise
    return started
