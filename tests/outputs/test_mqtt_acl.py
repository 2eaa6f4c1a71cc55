"""The broker-side protection signatures do not give: with the README's mosquitto ACL, a
device publishes only under its own id and cannot forge another device's Last Will."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable

import paho.mqtt.client as mqtt
from mqtt_helpers import Broker, Subscriber

from helpers import wait_until

# The ACL the README documents: per-device users named after the device id.
ACL = """\
user collector
topic read fleetbeat/#

pattern write fleetbeat/%u/#
"""

USERS = {"pi-a": "pw-a", "pi-b": "pw-b", "collector": "pw-c"}


def _broker(make_broker: Callable[..., Broker], tmp_path: Path) -> Broker:
    acl = tmp_path / "acl"
    acl.write_text(ACL)
    return make_broker(users=USERS, conf=f"acl_file {acl}")


class Device:
    """A paho client logged in as one device user, optionally with a Last Will."""

    def __init__(self, port: int, user: str, will: tuple[str, bytes] | None = None) -> None:
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{user}-test")
        self.client.username_pw_set(user, USERS[user])
        if will:
            self.client.will_set(will[0], will[1], qos=0)
        self.connected = threading.Event()
        self.refused: list[Any] = []

        def on_connect(client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
            if rc.is_failure:
                self.refused.append(rc)
            self.connected.set()

        self.client.on_connect = on_connect
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        assert self.connected.wait(5)

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=0).wait_for_publish(5)

    def die(self) -> None:
        """Drop the TCP connection without DISCONNECT: the broker must act on the Will."""
        self.client.loop_stop()
        sock = self.client.socket()
        if sock is not None:
            sock.close()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_a_device_cannot_publish_under_another_devices_id(
    make_broker: Callable[..., Broker], subscribe: Callable[..., Subscriber], tmp_path: Path
) -> None:
    """pi-a's heartbeats and status under fleetbeat/pi-b/ never reach the collector; its own do."""
    broker = _broker(make_broker, tmp_path)
    seen = subscribe(broker.port, "fleetbeat/#", username="collector", password=USERS["collector"])
    a = Device(broker.port, "pi-a")
    try:
        a.publish("fleetbeat/pi-b/hb", b'{"forged":1}')
        a.publish("fleetbeat/pi-b/status", b"offline")
        a.publish("fleetbeat/pi-a/hb", b'{"own":1}')  # after the forged ones, same connection
        wait_until(lambda: seen.on("fleetbeat/pi-a/hb"))
        assert seen.on("fleetbeat/pi-b/hb") == [] and seen.on("fleetbeat/pi-b/status") == []
    finally:
        a.close()


def test_a_device_cannot_forge_another_devices_last_will(
    make_broker: Callable[..., Broker], subscribe: Callable[..., Subscriber], tmp_path: Path
) -> None:
    """A Will naming pi-b's status topic, set by pi-a, is refused or never published."""
    broker = _broker(make_broker, tmp_path)
    seen = subscribe(broker.port, "fleetbeat/#", username="collector", password=USERS["collector"])
    forger = Device(broker.port, "pi-a", will=("fleetbeat/pi-b/status", b"offline"))
    control = Device(broker.port, "pi-b", will=("fleetbeat/pi-b/hb", b"control-will"))
    assert control.refused == []
    forger.die()
    control.die()
    wait_until(lambda: seen.on("fleetbeat/pi-b/hb") == [b"control-will"], timeout=10)
    assert seen.on("fleetbeat/pi-b/status") == []
