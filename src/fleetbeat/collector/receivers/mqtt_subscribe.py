"""MQTT receiver: QoS 0 subscriptions on paho's network thread.

paho is imported only when `[collector.mqtt]` is configured.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from fleetbeat.collector.config import MqttSection
from fleetbeat.collector.fleet import Fleet
from fleetbeat.collector.receivers.base import ReceiverError
from fleetbeat.logutil import RateLimitedLog

log = logging.getLogger(__name__)
_limited = RateLimitedLog(log)


class MqttReceiver:
    """Subscribes to `{prefix}/+/hb`, `{prefix}/+/rd/#` and `{prefix}/+/status` at QoS 0."""

    def __init__(self, fleet: Fleet, config: MqttSection) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.fleet = fleet
        self.config = config
        self.connected = threading.Event()
        prefix = config.topic_prefix.rstrip("/")
        self._prefix_parts = len(prefix.split("/"))
        share = f"$share/{config.shared_group}/" if config.shared_group else ""
        self.topics = [
            f"{share}{prefix}/+/hb",
            f"{share}{prefix}/+/rd/#",
            f"{share}{prefix}/+/status",
        ]
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=config.client_id,
            clean_session=True,
        )
        if config.username:
            self.client.username_pw_set(config.username, config.password or None)
        if config.tls:
            try:
                self.client.tls_set(
                    ca_certs=config.ca_file or None,
                    certfile=config.cert_file or None,
                    keyfile=config.key_file or None,
                )
            except (OSError, ValueError) as exc:
                raise ReceiverError(f"collector.mqtt TLS: {exc}") from exc
        self.client.reconnect_delay_set(1, 60)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

    def start(self) -> None:
        c = self.config
        # connect_async: the first connect happens in paho's thread, so a broker that
        # is down at start delays nothing; paho keeps reconnecting with backoff.
        self.client.connect_async(c.host, c.port, keepalive=int(c.keepalive))
        self.client.loop_start()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        if rc.is_failure:
            _limited.log(logging.WARNING, "connect", "MQTT connect to %s:%d refused: %s",
                         self.config.host, self.config.port, rc)  # fmt: skip
            return
        log.info("MQTT connected to %s:%d; subscribing to %s", self.config.host, self.config.port,
                 ", ".join(self.topics))  # fmt: skip
        client.subscribe([(t, 0) for t in self.topics])
        self.connected.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        self.connected.clear()
        _limited.log(logging.WARNING, "disconnect", "MQTT disconnected (%s); reconnecting", rc)

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        try:
            parts = message.topic.split("/")[self._prefix_parts :]
            if len(parts) < 2:
                self.fleet.reject("bad_topic", "mqtt")
                return
            dev, leaf = parts[0], parts[1]
            if leaf == "status":
                payload = bytes(message.payload).strip()
                if payload == b"offline":
                    self.fleet.mark_offline(dev, "last_will")
                # "online" (retained) says nothing a heartbeat will not say better
                return
            self.fleet.receive(bytes(message.payload), f"mqtt:{dev}", "mqtt", topic_dev=dev)
        except Exception as exc:  # paho would swallow it silently; say so instead
            _limited.log(logging.ERROR, "bug", "error handling an MQTT message: %r", exc)

    def close(self, timeout: float = 2.0) -> None:
        self.client.disconnect()
        self.client.loop_stop()
