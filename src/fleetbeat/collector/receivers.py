"""Receivers feed the fleet: UDP datagrams and, when configured, MQTT messages.

UDP runs in a dedicated thread doing blocking `recvfrom`: one system call per
datagram and no event-loop wake-ups, several times what an asyncio
DatagramProtocol reaches. MQTT uses paho's network thread (paho is imported
only when `[collector.mqtt]` is configured).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from typing import Any, Optional

from fleetbeat.collector.amqp_consume import AmqpConsumer
from fleetbeat.collector.config import MqttSection, split_hostport
from fleetbeat.collector.fleet import Fleet
from fleetbeat.collector.kafka_consume import KafkaReceiver
from fleetbeat.errors import FleetbeatError
from fleetbeat.logutil import RateLimitedLog

log = logging.getLogger(__name__)
_limited = RateLimitedLog(log)

RECV_SIZE = 65536  # a whole UDP datagram, whatever max_payload says: oversize is counted


class ReceiverError(FleetbeatError):
    """A receiver cannot start (address in use, bad certificate files...)."""


def bind_udp(listen: str, receive_buffer: int = 0) -> socket.socket:
    """A blocking UDP socket bound to "host:port" or "[v6]:port" (dual-stack for "[::]")."""
    parsed = split_hostport(listen)
    if parsed is None:
        raise ReceiverError(f"bad UDP listen address {listen!r}")
    host, port = parsed
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        if receive_buffer > 0:
            # the kernel caps this at net.core.rmem_max; a bigger buffer rides out bursts
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ReceiverError(f"cannot listen on UDP {listen}: {exc.strerror or exc}") from exc
    return sock


def kernel_drops(inode: int, proc: str = "/proc") -> Optional[int]:
    """The kernel's drop count for the UDP socket with this inode, or None when not listed.

    The last column of /proc/net/udp and udp6 (the socket's `sk_drops`): datagrams
    the kernel threw away, mostly because the receive buffer was full. Read when
    someone asks (a scrape), so the recvfrom loop pays nothing.
    """
    wanted = str(inode)
    for name in ("udp", "udp6"):
        try:
            with open(os.path.join(proc, "net", name)) as f:
                next(f, None)  # the header
                for line in f:
                    fields = line.split()
                    if len(fields) >= 13 and fields[9] == wanted:
                        return int(fields[12])
        except (OSError, ValueError):
            continue
    return None


class UdpReceiver:
    """Reads datagrams in its own thread and hands each to `fleet.receive`.

    Args:
        fleet: what every datagram is handed to.
        sock: a bound UDP socket (`bind_udp`).
        proc: where /proc is, for the kernel's drop counter (tests point it elsewhere).
    """

    def __init__(self, fleet: Fleet, sock: socket.socket, *, proc: str = "/proc") -> None:
        self.fleet = fleet
        self.sock = sock
        self.address: tuple[Any, ...] = sock.getsockname()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="udp-receiver", daemon=True)
        self._inode = os.fstat(sock.fileno()).st_ino
        self._proc = proc
        self._drops = 0
        fleet.watch_kernel_drops("udp", self.kernel_drops)

    def kernel_drops(self) -> int:
        """Datagrams the kernel dropped on this socket (the last count once it is closed)."""
        n = kernel_drops(self._inode, self._proc)
        if n is not None:
            self._drops = n
        return self._drops

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        recvfrom = self.sock.recvfrom
        receive = self.fleet.receive
        while True:
            try:
                data, addr = recvfrom(RECV_SIZE)
            except OSError as exc:
                if self._stopping:
                    return
                _limited.log(logging.WARNING, "recv", "UDP receive failed: %s", exc)
                continue
            if self._stopping:
                return
            try:
                receive(data, addr, "udp")
            except Exception as exc:  # a bug must not stop reception; logged, rate-limited
                _limited.log(logging.ERROR, "bug", "error handling a datagram: %r", exc)

    def close(self, timeout: float = 2.0) -> None:
        self._stopping = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocking recvfrom
        self._thread.join(timeout)
        self.sock.close()


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
        if fleet.config.kafka is not None:
            started.append(KafkaReceiver(fleet, fleet.config.kafka))
            started[-1].start()
        if fleet.config.http_ingest_listen:  # off while empty
            from fleetbeat.collector.http_ingest import HttpIngest

            started.append(HttpIngest(fleet, fleet.config))
            started[-1].start()
        if fleet.config.amqp is not None:
            started.append(AmqpConsumer(fleet, fleet.config.amqp))
            started[-1].start()
    except BaseException:
        for r in started:
            r.close()
        raise
    return started
