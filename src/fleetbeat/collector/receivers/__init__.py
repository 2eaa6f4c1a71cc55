"""Receivers feed the fleet, one module each, named in `fleetbeat.registry.RECEIVERS`.

`udp` (a thread doing blocking `recvfrom`, always on) and `mqtt_subscribe`
(paho's network thread, when `[collector.mqtt]` is set). The contract a receiver
meets is `base.ReceiverClass`.
"""

from __future__ import annotations

from fleetbeat import registry
from fleetbeat.collector.config import CollectorSection
from fleetbeat.collector.receivers.base import FleetInput, Receiver


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
