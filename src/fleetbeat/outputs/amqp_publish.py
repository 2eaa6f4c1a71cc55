"""AMQP 0-9-1 output (RabbitMQ): transient publishes without confirms, written at once or dropped.

Routing keys on a topic exchange: `{topic_prefix}.{device_id}.hb` (heartbeats and
the bye) and `{topic_prefix}.{device_id}.rd.{sensor}` (readings). Every message is
`delivery_mode = 1` (transient), carries `expiration` (a per-message TTL, so a
queue nobody reads does not hold old heartbeats) and the header `dev` (the
device id: a consistent-hash exchange hashes on it, so one collector gets all of
a device's messages). No publisher confirms, no mandatory flag.

How it keeps the delivery rules: pika's publish blocks (21.8 s on a stalled
broker) or buffers every write in user space (BROKERS.md), so this output owns
a non-blocking socket (`amqp_link`) and writes Basic.Publish + content header +
body with one `send()`, only while connected, not blocked and with nothing of
an earlier message unwritten; otherwise it drops the message as `not_connected`,
`blocked` (between the broker's connection.blocked and connection.unblocked),
`backpressure` or `too_large` (over the negotiated frame_max). A message the
socket took in part has only its end kept, finished before any other byte.
Connecting, the handshake, declaring the exchange (a non-durable topic exchange,
unless `declare = false`) and heartbeats happen in the background thread, with
capped exponential backoff and jitter between attempts; nothing is replayed.
RabbitMQ sends connection.blocked only when a blocked connection next
publishes, so the first message after a memory alarm may still go out.

The password comes from `password_file`, else `FLEETBEAT_AMQP_PASSWORD`, else
`$CREDENTIALS_DIRECTORY/amqp-password` (systemd `LoadCredential=`); read once,
never logged. No user in the URL means RabbitMQ's `guest` (password `guest`,
loopback only).

```toml
[[outputs.amqp]]
url = "amqps://pi-1@broker.lan:5671/%2F"  # amqp:// without TLS; vhost %2F is "/"
password_file = "/etc/fleetbeat/amqp-password"  # optional; see above for the other sources
exchange = "fleetbeat"           # a topic exchange
declare = true                   # declare it (non-durable) if missing; false: it must exist
topic_prefix = "fleetbeat"       # routing keys {prefix}.{device_id}.hb and .rd.{sensor}
expiration = "60s"               # per-message TTL in queues
heartbeat = "30s"                # AMQP heartbeat; a silent broker is left after two
connect_timeout = "10s"          # TCP connect + TLS + AMQP handshake, in the background
reconnect_min = "1s"             # first wait before reconnecting; doubles per failure ...
reconnect_max = "30s"            # ... up to this, each wait jittered down to half
format = "json"                  # wire v1 for the collector; or statsd, influx

[outputs.amqp.tls]               # with amqps://: CA, client certificate, host name check
ca_file = "/etc/fleetbeat/ca.pem"
```
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Callable, Optional

from fleetbeat.config.frozen import dataclass
from fleetbeat.config.schema import Problems, boolean, duration, option
from fleetbeat.config.secrets import check_readable
from fleetbeat.outputs import amqp_frames as frames
from fleetbeat.outputs.amqp_link import AmqpLink
from fleetbeat.outputs.amqp_session import (
    FRAME_MAX,
    AmqpConnection,
    Session,
    parse_url,
    read_password,
    uniform,
)
from fleetbeat.outputs.base import Identity, Outgoing, Tally

log = logging.getLogger(__name__)

CHANNEL = 1


@dataclass(frozen=True)
class AmqpConfig(AmqpConnection):
    """The connection keys (`amqp_session.AmqpConnection`), and what only a publisher sets."""

    declare: bool = option(True, boolean())
    expiration: float = option(60.0, duration(allow_zero=True, max=86400.0 * 49))

    def target(self) -> str:
        return parse_url(self.url).target()

    def check_files(self, path: str, problems: Problems) -> None:
        check_readable(self.password_file, f"{path}.password_file", problems)
        if self.tls is not None:
            self.tls.check_files(f"{path}.tls", problems)

    @classmethod
    def check_together(cls, configs: Sequence[Any], path: str, problems: Problems) -> None:
        """Several AMQP outputs are several connections: any number may coexist."""


class AmqpOutput:
    """Publishes each payload to the exchange at once, or drops and counts it."""

    Config = AmqpConfig

    def __init__(
        self,
        config: AmqpConfig,
        *,
        identity: Identity,
        name: str = "",
        environ: Mapping[str, str] = os.environ,
        rng: Callable[[], float] = uniform,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.name = name or f"amqp {config.target()}"
        self.tally = Tally(self.name, log)
        endpoint = parse_url(config.url)
        password = read_password(config.password_file, endpoint.user, name=self.name,
                                 environ=environ)  # fmt: skip
        base = f"{config.topic_prefix}.{identity.dev}"
        self._hb = frames.publish_method(CHANNEL, config.exchange, f"{base}.hb")
        self._rd_base = f"{base}.rd."
        self._rd: dict[Optional[str], bytes] = {}
        expiration = round(config.expiration * 1000)
        # identical for every message: JSON for the collector, text for the line formats
        self._props: dict[bool, bytes] = {
            json: frames.basic_properties(
                "application/json" if json else "text/plain", {"dev": identity.dev}, expiration
            )
            for json in (True, False)
        }
        self._link = AmqpLink(endpoint, password, tls=config.tls,
                              heartbeat=round(config.heartbeat), timeout=config.connect_timeout,
                              reconnect=(config.reconnect_min, config.reconnect_max),
                              setup=self._declare, rng=rng, clock=clock)  # fmt: skip
        # the largest body one frame holds (encoders split readings to fit); set per connection
        self.max_payload = FRAME_MAX - frames.FRAME_OVERHEAD
        self._link.name = self.name
        self._link.tally = self.tally

    @property
    def connects(self) -> int:
        return self._link.connects

    def _declare(self, session: Session) -> None:
        self.max_payload = session.frame_max - frames.FRAME_OVERHEAD
        if self.config.declare:
            request = frames.exchange_declare(CHANNEL, self.config.exchange, "topic")
            session.call(request, frames.EXCHANGE_DECLARE_OK)

    def start(self) -> None:
        self._link.start()

    def send(self, payload: bytes, msg: Optional[Outgoing] = None) -> None:
        try:
            if msg is not None and msg.kind == "rd":
                head = self._rd.get(msg.src)
                if head is None:
                    key = self._rd_base + (msg.src or "unknown")
                    head = self._rd[msg.src] = frames.publish_method(CHANNEL, self.config.exchange,
                                                                     key)  # fmt: skip
            else:
                head = self._hb
            if len(payload) > self.max_payload:
                reason: Optional[str] = "too_large"
            else:
                props = self._props[payload[:1] == b"{"]
                reason = self._link.write(frames.publish(CHANNEL, head, props, payload))
        except Exception as exc:  # an output never raises into the loop
            log.debug("%s: publish failed", self.name, exc_info=True)
            reason = f"error: {type(exc).__name__}"
        if reason is None:
            self.tally.sent += 1
        else:
            self.tally.drop(reason)

    def close(self, *, timeout: float = 1.0) -> None:
        """Let the last message (the bye) out, close the connection cleanly, stop the thread."""
        self._link.stop(time.monotonic() + timeout, time.monotonic)


if TYPE_CHECKING:  # mypy checks the class against the output contract
    from fleetbeat.outputs.base import OutputClass

    _: OutputClass = AmqpOutput
