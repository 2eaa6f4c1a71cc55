"""The simulator's transports: one UDP socket, one MQTT connection, or a few HTTP ones.

Each is a `simulate.Transport`: `send(dev, payload)` puts the message on its way at
once or drops and counts it by reason, never waits and never keeps a message,
under the agent's at-most-once rules (DESIGN.md) and mostly with the agent's own code:

- `UdpTransport`: one connected, non-blocking socket; a full buffer is `buffer_full`.
- `MqttTransport`: one paho connection (`outputs.mqtt_link.MqttLink`, the agent's),
  every device's messages on `{topic_prefix}/{dev}/hb` at QoS 0, each PUBLISH
  written to the socket at once, or dropped as `not_connected` / `backpressure`
  while the broker is away or the socket has not taken the previous one. What it
  does not simulate: one session per device, so no per-device Last Will (a dead
  device goes `down`, never `offline` by its Will) and no retained `online`
  status; readings (`rd`) are not sent at all.
- `HttpTransport`: a few of the agent's HTTP outputs (`outputs.http_post`), each one
  keep-alive connection with its own worker thread and at most one request in
  flight (`max_pending = 1`). A message goes to an idle connection; when none is
  idle it is dropped as `busy` (or as why the connection is down). A message counts
  as sent once the collector has answered 2xx.
"""

from __future__ import annotations

import logging
import random
import socket
import time
from typing import Any, Optional

from fleetbeat.netaddr import hostport
from fleetbeat.outputs.base import Identity, Tally
from fleetbeat.outputs.mqtt_link import MqttLink
from fleetbeat.outputs.mqtt_packets import publish_head

log = logging.getLogger(__name__)


class UdpTransport:
    """A connected, non-blocking UDP socket to `host:port`."""

    def __init__(self, host: str, port: int) -> None:
        self.name = f"udp {hostport(host, port)}"
        self.tally = Tally(self.name, log)
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
        sock = self.sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        sock.connect(addr)
        sock.setblocking(False)
        self._send = sock.send

    def start(self) -> None:
        """Nothing to connect."""

    def ready(self) -> bool:
        return True

    def send(self, dev: str, payload: bytes) -> None:
        try:
            self._send(payload)
        except BlockingIOError:  # a full socket buffer: lost, as on a real network
            self.tally.drop("buffer_full")
            return
        except ConnectionRefusedError:  # an ICMP port unreachable for an earlier datagram
            self.tally.drop("refused")
            return
        except OSError as exc:
            self.tally.drop("os_error", str(exc))
            return
        self.tally.sent += 1

    def snapshot(self) -> dict[str, Any]:
        return self.tally.snapshot()

    def close(self) -> None:
        self.sock.close()


class MqttTransport(MqttLink):
    """One MQTT 3.1.1 connection publishing every device's heartbeats at QoS 0."""

    def __init__(self, host: str, port: int, *, topic_prefix: str = "fleetbeat",
                 username: Optional[str] = None, password: Optional[str] = None,
                 keepalive: int = 30) -> None:  # fmt: skip
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        where = hostport(host, port)
        self.name = f"mqtt {where}"
        self.tally = Tally(self.name, log)
        client_id = f"fleetbeat-simulate-{random.getrandbits(32):08x}"  # two runs never collide
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                             clean_session=True, protocol=mqtt.MQTTv311)  # fmt: skip
        if username is not None:
            client.username_pw_set(username, password)
        super().__init__(client, where=where, keepalive=keepalive, reconnect=(0.5, 5.0),
                         ok=mqtt.MQTT_ERR_SUCCESS, rng=random.random,
                         clock=time.monotonic)  # fmt: skip
        self._prefix = topic_prefix
        self._heads: dict[str, bytes] = {}  # device id -> its PUBLISH head ({prefix}/{dev}/hb)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.connect_async(host, port, keepalive)

    def ready(self) -> bool:
        return self._connected

    def send(self, dev: str, payload: bytes) -> None:
        head = self._heads.get(dev)
        if head is None:
            head = self._heads[dev] = publish_head(f"{self._prefix}/{dev}/hb", b"")
        with self._lock:  # the network thread corrects `sent` when a message's end is lost
            if not self._connected or self._closing:
                reason: Optional[str] = "not_connected"
            else:
                try:
                    reason = self._write(head, payload, False)
                except Exception as exc:  # a transport never raises into the schedule
                    reason = f"error: {type(exc).__name__}"
            if reason is None:
                self.tally.sent += 1
            else:
                self.tally.drop(reason)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return self.tally.snapshot()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if not self._connack(reason, props):
            return
        if not self._closing:
            self._tail = None
            self._connected = True

    def close(self, *, timeout: float = 1.0) -> None:
        """Let the last PUBLISH out (within `timeout`), DISCONNECT, stop the thread."""
        deadline = time.monotonic() + timeout
        with self._lock:
            self._closing = True
        while True:
            with self._lock:
                if not self._connected or self._client.socket() is None:
                    break
                if self._flush():
                    self._connected = False
                    self._client.disconnect()
                    break
            if time.monotonic() >= deadline:
                break
            time.sleep(0.01)
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(max(0.1, deadline - time.monotonic()))
        with self._lock:
            sock = self._client.socket()
            if sock is not None:
                sock.close()


class HttpTransport:
    """`connections` keep-alive connections POSTing to `url`, one request in flight on each."""

    def __init__(self, url: str, *, connections: int = 2, timeout: float = 2.0) -> None:
        from fleetbeat.outputs.http_post import HttpConfig, HttpOutput

        self.name = f"http {url}"
        config = HttpConfig(url=url, timeout=timeout, max_pending=1, reconnect_max=5.0)
        who = Identity(dev="simulate", run="0" * 16, boot_time=0, version="sim", tags={})
        self.outputs = [
            HttpOutput(config, identity=who, name=f"{self.name} #{i + 1}")
            for i in range(connections)
        ]
        self._next = 0

    def start(self) -> None:
        for out in self.outputs:
            out.start()

    def ready(self) -> bool:
        return all(out.ready() for out in self.outputs)

    def send(self, dev: str, payload: bytes) -> None:
        outputs = self.outputs
        n = len(outputs)
        first = self._next
        for i in range(n):
            out = outputs[(first + i) % n]
            if out.ready():
                self._next = (first + i + 1) % n
                out.send(payload)
                return
        # none idle: the next in turn drops and counts it (busy, or why it is down)
        self._next = (first + 1) % n
        outputs[first].send(payload)

    def snapshot(self) -> dict[str, Any]:
        """The connections' tallies added up."""
        sent = dropped = 0
        by_reason: dict[str, int] = {}
        for out in self.outputs:
            snap = out.tally.snapshot()
            sent += snap["sent"]
            dropped += snap["dropped"]
            for reason, n in snap["by_reason"].items():
                by_reason[reason] = by_reason.get(reason, 0) + n
        return {"sent": sent, "dropped": dropped, "by_reason": by_reason}

    def close(self) -> None:
        for out in self.outputs:
            out.close(timeout=1.0)
