"""MQTT output: QoS 0 publishes, written to the socket at once or dropped, never buffered.

Topics: `{topic_prefix}/{device_id}/hb` (heartbeats and the bye),
`{topic_prefix}/{device_id}/rd/{sensor}` (readings) and
`{topic_prefix}/{device_id}/status`: retained `online` on every connect,
retained `offline` as the Last Will and on a graceful stop. Payloads are wire v1.

Packet framing is `mqtt_packets` (pure functions); the password and the `[tls]`
table are `fleetbeat.config.secrets`, shared with other connection-based plugins.

How it keeps the delivery rules with paho (whose QoS 0 packets wait in an
unbounded deque while the socket cannot take them, and whose `loop_start`
thread writes them later):
- the sending thread builds the QoS 0 PUBLISH and writes it to the socket
  itself, only while connected and while nothing earlier is unwritten (paho's
  `want_write()` is false and no message of ours is partly out); otherwise the
  message is dropped as `not_connected` or `backpressure`. A packet the socket
  does not take at all is dropped; of one it took in part, only the end is kept
  and finished before any other byte. Memory stays flat while a broker stalls.
- paho does the rest (CONNECT, keepalive, reading, Will, TLS, auth) through its
  external-loop API (`loop_read` / `loop_write` / `loop_misc`), driven by our own
  background thread; one lock keeps writers apart. Connecting, TLS handshakes
  and name lookups happen only there, with capped exponential backoff and
  jitter; the sampling path never waits for them. A connection that takes no
  byte for two keepalives is dropped and made again.
- QoS is 0, always: paho replays QoS 1 on reconnect, which is buffering.
- paho is imported only when an MQTT output is configured.

The password comes from `password_file`, else the `FLEETBEAT_MQTT_PASSWORD`
environment variable, else `$CREDENTIALS_DIRECTORY/mqtt-password` (systemd's
`LoadCredential=mqtt-password:/etc/fleetbeat/mqtt-password`). It is read once at
start, never logged, and never printed by `check-config`.

```toml
[[outputs.mqtt]]
host = "broker.lan"              # broker host name or IP address
port = 8883                      # default 1883, or 8883 when [tls] is set
client_id = "fleetbeat-pi-1"     # default "fleetbeat-{device_id}"
topic_prefix = "fleetbeat"       # topics: {prefix}/{device_id}/hb, .../rd/{sensor}, .../status
protocol = "3.1.1"               # "3.1.1" or "5"
keepalive = "30s"                # at least 1 s: the broker's Last Will fires after ~1.5 of it
username = "pi-1"                # optional
password_file = "/etc/fleetbeat/mqtt-password"  # optional; see above for the other sources
max_payload = 262144             # bytes; larger readings are split into several messages
reconnect_min = "1s"             # first wait before reconnecting; doubles per failure ...
reconnect_max = "10s"            # ... up to this, each wait jittered down to half
connect_timeout = "10s"          # TCP connect + TLS handshake, in the background
# message_expiry = "5m"          # MQTT 5 only: the broker drops what it could not deliver by then

[outputs.mqtt.tls]               # present (even empty): TLS, checked against the system CAs
ca_file = "/etc/fleetbeat/ca.pem"  # CA bundle that signed the broker's certificate
cert_file = "/etc/fleetbeat/client.pem"  # client certificate, for brokers that require one
key_file = "/etc/fleetbeat/client.key"   # its private key
insecure = false                 # true: skip the host name check (never in production)
```
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Callable, Optional

from fleetbeat.config.frozen import dataclass
from fleetbeat.config.schema import Problems, duration, integer, option, string, table
from fleetbeat.config.secrets import (
    MQTT_CREDENTIAL,
    MQTT_PASSWORD_ENV,
    PATH,
    TlsConfig,
    check_readable,
    read_secret,
    set_tls,
)
from fleetbeat.errors import ConfigError
from fleetbeat.netaddr import hostport
from fleetbeat.outputs.base import Identity, Outgoing, Tally
from fleetbeat.outputs.mqtt_link import MqttLink, describe_os_error
from fleetbeat.outputs.mqtt_packets import (
    properties,
    publish_head,
    topic_level,
)

if TYPE_CHECKING:  # paho is imported at run time only when an MQTT output is built
    from paho.mqtt.client import Client

log = logging.getLogger(__name__)

PASSWORD_ENV = MQTT_PASSWORD_ENV  # shared with the collector (config.secrets)
CREDENTIAL_NAME = MQTT_CREDENTIAL
TOPIC_PREFIX = r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*"
CLIENT_ID = r"[A-Za-z0-9_.:-]{1,128}"


@dataclass(frozen=True)
class MqttConfig:
    host: str = option("127.0.0.1", string(what="a host name or IP address"))
    port: Optional[int] = option(None, integer(min=1, max=65535))
    client_id: Optional[str] = option(
        None, string(pattern=CLIENT_ID, what="1-128 characters of A-Z a-z 0-9 _ . : -")
    )
    topic_prefix: str = option(
        "fleetbeat",
        string(pattern=TOPIC_PREFIX, what="topic levels of A-Z a-z 0-9 _ . - joined by /"),
    )
    protocol: str = option("3.1.1", string(choices=("3.1.1", "5")))
    keepalive: float = option(30.0, duration(min=1.0, max=65535.0))
    username: Optional[str] = option(None, string(what="a user name"))
    password_file: Optional[str] = option(None, string(what=PATH))
    tls: Optional[TlsConfig] = option(None, table(TlsConfig))
    message_expiry: Optional[float] = option(None, duration(min=1.0, max=4294967295.0))
    max_payload: int = option(262144, integer(min=256, max=268435455))
    reconnect_min: float = option(1.0, duration(min=0.05))
    reconnect_max: float = option(10.0, duration(min=0.05))
    connect_timeout: float = option(10.0, duration(min=0.1))

    def __post_init__(self) -> None:
        if self.port is None:  # the default depends on TLS: fill it in so it shows everywhere
            object.__setattr__(self, "port", 8883 if self.tls is not None else 1883)

    def check(self, path: str, problems: Problems) -> None:
        if self.message_expiry is not None and self.protocol != "5":
            problems.add(
                f"{path}.message_expiry", 'needs protocol = "5" (MQTT 3.1.1 has no expiry)'
            )
        if self.password_file is not None and self.username is None:
            problems.add(f"{path}.password_file", "needs username (MQTT sends no password alone)")

    def target(self) -> str:
        return hostport(self.host, self.port)

    def check_files(self, path: str, problems: Problems) -> None:
        """The files the agent reads at start exist and are readable (not for examples)."""
        check_readable(self.password_file, f"{path}.password_file", problems)
        if self.tls is not None:
            self.tls.check_files(f"{path}.tls", problems)
        if self.reconnect_min > self.reconnect_max:
            problems.add(f"{path}.reconnect_min", "must not exceed reconnect_max")

    @classmethod
    def check_together(cls, configs: Sequence[Any], path: str, problems: Problems) -> None:
        """Two sessions with one broker and client id: the broker keeps dropping one."""
        brokers = [(c.host, c.port, c.client_id or "") for c in configs]
        for host, port, client_id in sorted({b for b in brokers if brokers.count(b) > 1}):
            who = f'client_id "{client_id}"' if client_id else "the default client_id"
            problems.add(path, f"two outputs connect to {host}:{port} with {who}: "
                         "the broker would keep disconnecting one for the other")  # fmt: skip


def read_password(config: MqttConfig, *, name: str, environ: Mapping[str, str]) -> Optional[str]:
    """The password from password_file, the environment or a systemd credential; or None."""
    return read_secret(config.password_file, env_var=PASSWORD_ENV, credential=CREDENTIAL_NAME,
                       name=name, environ=environ)  # fmt: skip


class MqttOutput(MqttLink):
    """Publishes each payload at QoS 0 at once, or drops and counts it."""

    Config = MqttConfig

    def __init__(
        self,
        config: MqttConfig,
        *,
        identity: Identity,
        name: str = "",
        environ: Mapping[str, str] = os.environ,
        rng: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.config = config
        self.name = name or f"mqtt {config.target()}"
        self.tally = Tally(self.name, log)
        self.max_payload = config.max_payload
        dev = identity.dev
        base = f"{config.topic_prefix}/{dev}"
        self.hb_topic = f"{base}/hb"
        self.status_topic = f"{base}/status"
        self._rd_base = f"{base}/rd/"

        v5 = config.protocol == "5"
        # MQTT 5 PUBLISH carries a property block (empty, or the message expiry)
        props = self._props = properties(v5, config.message_expiry)
        self._status_head = publish_head(self.status_topic, properties(v5, None))
        self._hb_head = publish_head(self.hb_topic, props)
        self._rd_heads: dict[Optional[str], bytes] = {}

        password = read_password(config, name=self.name, environ=environ)
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=config.client_id or f"fleetbeat-{dev}",
            clean_session=None if v5 else True,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        )
        if config.username is not None:
            client.username_pw_set(config.username, password)
        elif password is not None and config.password_file is None:
            log.info("%s: a password is available but no username is set: not using it", self.name)
        keepalive = max(1, round(config.keepalive))
        reconnect = (config.reconnect_min, config.reconnect_max)
        super().__init__(client, where=config.target(), keepalive=keepalive, reconnect=reconnect,
                         ok=mqtt.MQTT_ERR_SUCCESS, rng=rng, clock=clock)  # fmt: skip
        self._offline_sent = False
        if config.tls is not None:
            self._set_tls(client, config.tls)
        client.will_set(self.status_topic, b"offline", qos=0, retain=True)
        client.connect_timeout = config.connect_timeout
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        port = config.port or 1883  # always set by MqttConfig.__post_init__
        if v5:
            client.connect_async(config.host, port, self._keepalive, clean_start=True)
        else:
            client.connect_async(config.host, port, self._keepalive)

    def _set_tls(self, client: Client, tls: TlsConfig) -> None:
        import ssl

        try:
            set_tls(client, tls)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            raise ConfigError(
                [f"{self.name}: tls: cannot load the certificates: {describe_os_error(exc)}"]
            ) from None
        # a TLS socket that cannot write says so with this; the record must be retried whole
        self._want_write = (BlockingIOError, ssl.SSLWantWriteError)

    # --- the sending path (any thread; never blocks) -----------------------------------

    def send(self, payload: bytes, msg: Optional[Outgoing] = None) -> None:
        kind = msg.kind if msg is not None else "hb"
        if kind == "rd":
            src = msg.src if msg is not None else None
            head = self._rd_heads.get(src)
            if head is None:
                head = self._rd_heads[src] = self._rd_head(src)
        else:
            head = self._hb_head
        with self._lock:  # the network thread corrects `sent` when a message's end is lost
            try:
                if kind == "bye" and self._connected:
                    # the retained status first, so `offline` is set when the bye is seen
                    self._offline_sent = (
                        self._publish(self._status_head, b"offline", retain=True) is None
                    )
                reason = self._publish(head, payload)
            except Exception as exc:  # an output never raises into the loop
                log.debug("%s: publish failed", self.name, exc_info=True)
                reason = f"error: {type(exc).__name__}"
            if reason is None:
                self.tally.sent += 1
            else:
                self.tally.drop(reason)

    def _rd_head(self, src: Optional[str]) -> bytes:
        return publish_head(self._rd_base + topic_level(src), self._props)

    def _publish(self, head: bytes, payload: bytes, *, retain: bool = False) -> Optional[str]:
        """Write one PUBLISH now; None when the socket took it, else the drop reason.

        Called with the lock held. The packet is built and written here rather than by
        paho's publish(), which would keep it in its deque when the socket is full:
        here a packet the socket does not take at all is dropped, and only the end
        of one the socket took in part is kept, to be finished before anything else.
        """
        if not self._connected or self._closing:
            return "not_connected"
        return self._write(head, payload, retain)

    # --- paho callbacks (called with self._lock held) ---------------------------------

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if not self._connack(reason, props):
            return
        # Encoders size messages by max_payload: keep it under the broker's packet limit,
        # so a reading is split and a heartbeat sheds its extras instead of being dropped.
        overhead = 5 + 2 + len(self._rd_base) + 128 + len(self._props)  # header, topic, props
        self.max_payload = max(256, min(self.config.max_payload, self._max_packet - overhead))
        tls = ", TLS" if self.config.tls is not None else ""
        self._news.log(logging.INFO, "connected", "%s: connected (MQTT %s%s)", self.name,
                       self.config.protocol, tls)  # fmt: skip
        if not self._closing:
            self._tail = None
            self._connected = True
            self._publish(self._status_head, b"online", retain=True)

    # --- stopping -----------------------------------------------------------------------

    def close(self, *, timeout: float = 1.0) -> None:
        """Let `offline` and the bye reach the socket, disconnect cleanly, stop the thread.

        If the socket cannot take them within `timeout`, the connection is dropped
        without a DISCONNECT, so the broker publishes the Will (`offline`) itself.
        """
        deadline = time.monotonic() + timeout
        client = self._client
        clean = False
        with self._lock:
            was_connected = self._connected
            self._closing = True
        while was_connected:
            with self._lock:
                if client.socket() is None:
                    break
                if not self._offline_sent and self._connected:
                    # a clean DISCONNECT suppresses the Will: `offline` must be out first
                    self._offline_sent = self._write(self._status_head, b"offline", True) is None
                if self._offline_sent and self._flush():
                    self._connected = False
                    client.disconnect()  # DISCONNECT written now; paho then closes the socket
                    clean = True
                    break
            if time.monotonic() >= deadline:
                break
            time.sleep(0.01)
        if was_connected and not clean:
            log.warning(
                "%s: the broker did not take the last messages within %.1f s; closing "
                "without DISCONNECT so it publishes the Will",
                self.name,
                timeout,
            )
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
            if self._thread.is_alive():  # still inside a blocking connect: it is a daemon
                log.debug("%s: background thread still connecting; leaving it", self.name)
                return
        with self._lock:
            sock = client.socket()
            if sock is not None and not clean:
                sock.close()
        self._wake_r.close()
        self._wake_w.close()


if TYPE_CHECKING:  # mypy checks the class against the output contract
    from fleetbeat.outputs.base import OutputClass

    _: OutputClass = MqttOutput
