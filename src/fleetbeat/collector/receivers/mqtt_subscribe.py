"""MQTT receiver: QoS 0 subscriptions on paho's network thread.

Subscribes to `{prefix}/+/hb`, `{prefix}/+/rd/#` and `{prefix}/+/status` (the
agents' retained status and Last Will). With `shared_group`, collectors in one
group split the broker's messages between them (`$share/{group}/...`). paho is
imported only when `[collector.mqtt]` is configured.

The password comes from `password_file`, else the `FLEETBEAT_MQTT_PASSWORD`
environment variable, else `$CREDENTIALS_DIRECTORY/mqtt-password` (systemd's
`LoadCredential=`), as for the agent's MQTT output; it is read once at start and
never logged. A plaintext `password` key is refused.

```toml
[collector.mqtt]
host = "broker.lan"              # broker host name or IP address
port = 8883                      # default 1883, or 8883 when [tls] is set
topic_prefix = "fleetbeat"       # the agents' topic_prefix
shared_group = "collectors"      # optional: split the load across collectors
client_id = "collector-1"        # optional; default: one the broker picks
keepalive = "30s"
username = "collector"           # optional
password_file = "/etc/fleetbeat/mqtt-password"  # optional; see above for the other sources

# The agent's [outputs.mqtt.tls] keys (ca_file, cert_file, key_file, insecure):
[collector.mqtt.tls]             # present (even empty): TLS, checked against the system CAs
ca_file = "/etc/fleetbeat/ca.pem"  # the CA that signed the broker's certificate
```
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from typing import Any

from fleetbeat.collector.config import CollectorSection
from fleetbeat.collector.receivers.base import FleetInput, ReceiverError
from fleetbeat.config.secrets import MQTT_CREDENTIAL, MQTT_PASSWORD_ENV, read_secret, set_tls
from fleetbeat.logutil import RateLimitedLog
from fleetbeat.netaddr import hostport

log = logging.getLogger(__name__)
_limited = RateLimitedLog(log)


class MqttReceiver:
    """Subscribes to `{prefix}/+/hb`, `{prefix}/+/rd/#` and `{prefix}/+/status` at QoS 0."""

    def __init__(self, *, fleet: FleetInput, config: CollectorSection,
                 environ: Mapping[str, str] = os.environ) -> None:  # fmt: skip
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        mq = config.mqtt
        if mq is None:
            raise ReceiverError("collector.mqtt: not configured")
        self.fleet = fleet
        self.config = mq
        self.name = f"mqtt {hostport(mq.host, mq.port)}"
        self.connected = threading.Event()
        self.subscribed = threading.Event()  # the broker acknowledged every subscription
        prefix = mq.topic_prefix.rstrip("/")
        self._prefix_parts = len(prefix.split("/"))
        share = f"$share/{mq.shared_group}/" if mq.shared_group else ""
        self.topics = [
            f"{share}{prefix}/+/hb",
            f"{share}{prefix}/+/rd/#",
            f"{share}{prefix}/+/status",
        ]
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=mq.client_id,
            clean_session=True,
        )
        if mq.username:
            password = read_secret(mq.password_file, env_var=MQTT_PASSWORD_ENV,
                                   credential=MQTT_CREDENTIAL, name="collector.mqtt",
                                   environ=environ)  # fmt: skip
            self.client.username_pw_set(mq.username, password)
        if mq.tls is not None:
            try:
                set_tls(self.client, mq.tls)
            except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                raise ReceiverError(
                    f"collector.mqtt.tls: cannot load the certificates: {exc}"
                ) from None
        self.client.reconnect_delay_set(1, 60)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe

    @staticmethod
    def enabled(config: CollectorSection) -> bool:
        return config.mqtt is not None

    def stats(self) -> dict[str, int]:
        return {"connected": int(self.connected.is_set())}

    def start(self) -> None:
        c = self.config
        # connect_async: the first connect happens in paho's thread, so a broker that
        # is down at start delays nothing; paho keeps reconnecting with backoff.
        port = c.port or 1883  # always set by MqttSection.__post_init__
        self.client.connect_async(c.host, port, keepalive=int(c.keepalive))
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

    def _on_subscribe(self, client: Any, userdata: Any, mid: Any, codes: Any, props: Any) -> None:
        if not self.subscribed.is_set():
            log.info("MQTT subscriptions confirmed by %s", self.name)
        self.subscribed.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        self.connected.clear()
        self.subscribed.clear()
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

    def close(self, *, timeout: float = 2.0) -> None:
        self.client.disconnect()
        self.client.loop_stop()
