"""Receivers feed the fleet: UDP datagrams and, when configured, MQTT messages.

One module each: `udp` (a thread doing blocking `recvfrom`) and `mqtt_subscribe`
(paho's network thread; paho is imported only when `[collector.mqtt]` is set).
"""

from __future__ import annotations

from typing import Any, Optional

from fleetbeat.collector.config import MqttSection
from fleetbeat.collector.fleet import Fleet
from fleetbeat.collector.receivers.mqtt_subscribe import MqttReceiver
from fleetbeat.collector.receivers.udp import UdpReceiver, bind_udp


def start_receivers(fleet: Fleet, udp_listen: str, receive_buffer: int,
                    mqtt: Optional[MqttSection]) -> list[Any]:  # fmt: skip
    """Bind and start every configured receiver; on failure close what was started."""
    started: list[Any] = []
    try:
        udp = UdpReceiver(fleet, bind_udp(udp_listen, receive_buffer))
        udp.start()
        started.append(udp)
        if mqtt is not None:
            m = MqttReceiver(fleet, mqtt)
            m.start()
            started.append(m)
    except BaseException:
        for r in started:
            r.close()
        raise
    return started
