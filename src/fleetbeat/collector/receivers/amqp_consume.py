"""The collector's AMQP receiver (RabbitMQ): a no-ack consumer on a bounded, transient queue.

At most once on this side too: `no_ack` (the broker forgets a message once it is
written to us), and the queue is bounded by `max_length` with `x-overflow =
drop-head` and by `message_ttl`: a slow or absent collector loses the oldest
heartbeats, never memory. A message lost here is measured like any other loss
(seq gaps).

Topology: the agents publish to the topic exchange `exchange` with routing keys
`{topic_prefix}.{dev}.hb` and `{topic_prefix}.{dev}.rd.{sensor}`. By default the
collector's queue is server-named, exclusive and auto-deleted (it lives as long
as the connection), bound with `binding_key` (default `{topic_prefix}.#`). A named
`queue` outlives a collector restart (bounded as above). With `consistent_hash =
true` the topic exchange is bound to an `x-consistent-hash` exchange
(`hash_exchange`, RabbitMQ's rabbitmq_consistent_hash_exchange plugin) that
hashes the `dev` header every fleetbeat message carries, and each collector binds
its own queue to it with `hash_weight`: several collectors split the devices,
each device's messages all go to one of them.

The frames are `fleetbeat.outputs.amqp_frames`, the handshake is
`fleetbeat.outputs.amqp_session.connect`: the agent's own code, so there is no client
library to install. pika would do, but its pure-Python frame decoding costs
more per message than this loop (BROKERS.md: it also pulls asyncio in), and the
collector must read 30,000 messages/s.

```toml
[collector.amqp]
url = "amqp://collector@broker.lan:5672/%2F"  # amqps:// with [collector.amqp.tls]
password_file = "/etc/fleetbeat/amqp-password"  # or FLEETBEAT_AMQP_PASSWORD, or a credential
exchange = "fleetbeat"            # the agents' topic exchange (declared if missing)
topic_prefix = "fleetbeat"        # the agents' routing-key prefix
queue = ""                        # "": server-named, exclusive, auto-delete; or a name
binding_key = ""                  # "": "{topic_prefix}.#"
max_length = 100000               # messages the queue keeps; past it the oldest are dropped
message_ttl = "60s"               # and none older than this
consistent_hash = false           # true: split devices across collectors (see above)
hash_exchange = ""                # "": "{exchange}.hash"
hash_weight = 10                  # this collector's share of the hash ring
heartbeat = "30s"                 # AMQP heartbeat
```
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import socket
import threading
import time
from typing import TYPE_CHECKING, Any, Optional

from fleetbeat.collector.receivers.base import ReceiverError
from fleetbeat.config.frozen import dataclass
from fleetbeat.config.schema import boolean, duration, integer, option, string
from fleetbeat.logutil import RateLimitedLog
from fleetbeat.netaddr import hostport
from fleetbeat.outputs import amqp_frames as f
from fleetbeat.outputs.amqp_session import (
    NAME,
    PEER_ERRORS,
    AmqpClosed,
    AmqpConnection,
    Session,
    backoff,
    connect,
    parse_url,
    read_password,
)

if TYPE_CHECKING:
    from fleetbeat.collector.config import CollectorSection
    from fleetbeat.collector.fleet import Fleet

log = logging.getLogger(__name__)
CHANNEL = 1
ROUTING = r"[A-Za-z0-9_.*#-]{1,255}"
MAX_KEYS = 1 << 17  # routing keys whose device id is remembered (about 2 per device)


@dataclass(frozen=True)
class AmqpSection(AmqpConnection):
    """The connection keys (`amqp_session.AmqpConnection`), and the queue's."""

    queue: str = option("", string(allow_empty=True, pattern=f"|{NAME}", what="a queue name"))
    binding_key: str = option("", string(allow_empty=True, pattern=f"|{ROUTING}", what="a key"))
    max_length: int = option(100_000, integer(min=1))
    message_ttl: float = option(60.0, duration(min=0.001, max=86400.0 * 49))
    consistent_hash: bool = option(False, boolean())
    hash_exchange: str = option("", string(allow_empty=True, pattern=f"|{NAME}", what="a name"))
    hash_weight: int = option(10, integer(min=1, max=10_000))


def device_of(routing_key: str, prefix: str) -> Optional[str]:
    """The device id in `{prefix}.{dev}.hb` or `{prefix}.{dev}.rd.{sensor}`, else None.

    Device ids may hold dots: the first `.rd.` ends one (an id containing `.rd.`
    cannot be told apart from a sensor name, so such ids are not for AMQP).
    """
    if not routing_key.startswith(prefix) or routing_key[len(prefix) : len(prefix) + 1] != ".":
        return None
    rest = routing_key[len(prefix) + 1 :]
    cut = rest.find(".rd.")
    if cut > 0:
        return rest[:cut]
    return rest[:-3] if rest.endswith(".hb") and len(rest) > 3 else None


class AmqpConsumer:
    """Consumes `[collector.amqp]` with no-ack in its own thread; hands each body to the fleet."""

    def __init__(self, *, fleet: Fleet, config: CollectorSection) -> None:
        section = config.amqp
        if section is None:
            raise ReceiverError("collector.amqp: not configured")
        self.fleet = fleet
        self.config = section
        self.endpoint = parse_url(section.url)
        self.name = f"amqp {hostport(self.endpoint.host, self.endpoint.port)}"
        self._password = read_password(section.password_file, self.endpoint.user,
                                       name="collector.amqp", environ=os.environ)  # fmt: skip
        self.connected = threading.Event()
        self.queue = ""  # the queue consumed now (the server's name for a server-named one)
        self.connects = 0
        self.delivered = 0
        self._sock: Optional[socket.socket] = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="amqp-consumer", daemon=True)
        self._news = RateLimitedLog(log, every=60.0)

    @staticmethod
    def enabled(config: CollectorSection) -> bool:
        return config.amqp is not None

    def start(self) -> None:
        self._thread.start()

    def stats(self) -> dict[str, int]:
        """Connected now (0 or 1), connections made, messages delivered since start."""
        return {"connected": int(self.connected.is_set()), "connects": self.connects,
                "delivered": self.delivered}  # fmt: skip

    def close(self, *, timeout: float = 2.0) -> None:
        self._stop.set()
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.sendall(f.connection_close(200, "collector stopping"))
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes the blocking recv
        if self._thread.is_alive():  # closing a receiver that never started is fine
            self._thread.join(timeout)

    # --- the thread ------------------------------------------------------------------------

    def _run(self) -> None:
        c = self.config
        failures = 0
        while not self._stop.is_set():
            connects = self.connects
            try:
                session = connect(self.endpoint, self._password, tls=c.tls,
                                  heartbeat=round(c.heartbeat), timeout=c.connect_timeout,
                                  capabilities={"authentication_failure_close": True,
                                                "consumer_cancel_notify": True})  # fmt: skip
            except PEER_ERRORS as exc:
                self._problem("cannot connect to %s: %s", self.endpoint.target(), exc)
            else:
                self._sock = session.sock
                try:
                    self._subscribe(session)
                    self._consume(session)
                except PEER_ERRORS as exc:
                    if not self._stop.is_set():
                        self._problem("connection to %s lost: %s", self.endpoint.target(), exc)
                except Exception:  # a bug must not end reception: log it and reconnect
                    log.exception("AMQP consumer: unexpected error")
                finally:
                    self.connected.clear()
                    self._sock = None
                    session.sock.close()
            failures = 0 if self.connects > connects else failures + 1
            self._stop.wait(backoff(failures, c.reconnect_min, c.reconnect_max, random.random))

    def _subscribe(self, s: Session) -> None:
        c = self.config
        s.call(f.exchange_declare(CHANNEL, c.exchange, "topic"), f.EXCHANGE_DECLARE_OK)
        key = c.binding_key or f"{c.topic_prefix}.#"
        source = c.exchange
        if c.consistent_hash:
            source = c.hash_exchange or f"{c.exchange}.hash"
            declare = f.exchange_declare(CHANNEL, source, "x-consistent-hash",
                                         arguments={"hash-header": "dev"})  # fmt: skip
            s.call(declare, f.EXCHANGE_DECLARE_OK)
            s.call(f.exchange_bind(CHANNEL, source, c.exchange, key), f.EXCHANGE_BIND_OK)
            key = str(c.hash_weight)  # a consistent-hash binding's key is its weight
        bounds = {"x-max-length": c.max_length, "x-overflow": "drop-head",
                  "x-message-ttl": round(c.message_ttl * 1000)}  # fmt: skip
        own = not c.queue  # server-named: gone with the connection
        declare = f.queue_declare(CHANNEL, c.queue, exclusive=own, auto_delete=own,
                                  arguments=bounds)  # fmt: skip
        self.queue = f.parse_declare_ok(s.call(declare, f.QUEUE_DECLARE_OK))
        s.call(f.queue_bind(CHANNEL, self.queue, source, key), f.QUEUE_BIND_OK)
        s.call(f.basic_consume(CHANNEL, self.queue, "fleetbeat-collector"), f.CONSUME_OK)
        self.connects += 1
        self.connected.set()
        log.info("AMQP: consuming %s from %s (%s, key %s)", self.queue, self.endpoint.target(),
                 source, key)  # fmt: skip

    def _consume(self, s: Session) -> None:
        """Read deliveries until the connection ends; heartbeats both ways."""
        sock, beat = s.sock, s.heartbeat
        sock.settimeout(beat / 2 if beat else 1.0)
        fleet, prefix = self.fleet, self.config.topic_prefix
        reader = f.Deliveries(s.frame_max)
        pending = b"".join(f.frame(*fr) for fr in s.frames) + bytes(s.buf)  # read at set-up
        devs: dict[bytes, Optional[str]] = {}  # routing key -> device id, bounded below
        last_read = last_beat = time.monotonic()
        while not self._stop.is_set():
            for key, body in reader.feed(pending):
                self.delivered += 1
                dev = devs.get(key, "")
                if dev == "":
                    if len(devs) >= MAX_KEYS:
                        devs.clear()
                    dev = devs[key] = device_of(str(key, "utf-8", "replace"), prefix)
                try:
                    if dev is None:
                        fleet.reject("bad_topic", "amqp")
                    else:
                        fleet.receive(body, f"amqp:{dev}", "amqp", topic_dev=dev)
                except Exception as exc:  # a bug must not stop reception
                    self._news.log(logging.ERROR, "bug", "AMQP: error handling a message: %r",
                                   exc)  # fmt: skip
            for frame in reader.others:
                ids = f.method_ids(frame.payload)
                if ids == f.CANCEL:  # consumer_cancel_notify: the queue was deleted
                    raise AmqpClosed("the broker cancelled the consumer (queue deleted)")
                if ids in (f.CLOSE, f.CHANNEL_CLOSE):
                    code, text = f.parse_close(frame.payload)
                    with contextlib.suppress(OSError):
                        sock.sendall(f.close_ok(frame.channel))
                    raise AmqpClosed(f"closed by the broker: {code} {text}")
            reader.others.clear()
            try:
                pending = sock.recv(1 << 18)
            except socket.timeout:
                pending = b""
            else:
                if not pending:
                    raise AmqpClosed("closed by the broker")
            now = time.monotonic()
            if pending:
                last_read = now
            if beat and now - last_beat >= beat / 2:
                sock.sendall(f.HEARTBEAT_FRAME)
                last_beat = now
            if beat and now - last_read > 2 * beat:
                raise AmqpClosed(f"nothing from the broker for {2 * beat} s")

    def _problem(self, fmt: str, *args: Any) -> None:
        text = fmt % args
        self._news.log(logging.WARNING, text, "AMQP: %s; retrying in the background", text)
