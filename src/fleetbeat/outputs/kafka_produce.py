"""Kafka output: acks=0 produce into librdkafka's bounded queue at once, or drop.

Topics `{topic_prefix}.hb` (heartbeats and the bye) and `{topic_prefix}.rd`
(readings), the device id as the message key: a device's messages stay in one
partition, so one collector of a consumer group judges it. Payloads are wire v1
(or any `format`).

How it keeps the delivery rules with confluent-kafka (librdkafka), which always
queues (BROKERS.md measured it bounded this way):
- acks=0, retries=0, no idempotence, linger 0: nothing waits for the broker and
  nothing is sent twice. A reconnect (librdkafka's own, with jittered backoff) is
  not a retry.
- the queue holds at most `burst` messages (one tick's burst: the heartbeat, one
  reading per sensor and the parts a reading over `max_payload` is split into)
  and 64 KiB; a message waits in it at most `message_timeout`, then is dropped
  (`timeout`). A full queue raises BufferError: dropped as `backpressure`.
- `send` calls `poll(0)` first, which serves the delivery reports (errors only)
  on the caller's thread: each failed delivery becomes a drop by reason (the
  librdkafka error code mapped to a name in `_REASONS`) and takes back its `sent`.
  No thread of ours; librdkafka's own threads connect, resolve and write.
- confluent-kafka is imported only when a Kafka output is configured; a missing
  client is a config error naming the extra (`fleetbeat.config.kafka`).

The password (SASL) comes from `password_file`, else `$FLEETBEAT_KAFKA_PASSWORD`,
else `$CREDENTIALS_DIRECTORY/kafka-password`; read once at start, never logged.

```toml
[[outputs.kafka]]
brokers = ["kafka1.lan:9092", "kafka2.lan:9092"]  # bootstrap brokers, "host:port"
topic_prefix = "fleetbeat"       # topics {prefix}.hb (heartbeats, bye) and {prefix}.rd
format = "json"                  # wire v1 for the collector, or "influx", "statsd"...
burst = 16                       # messages one tick can produce: 1 + sensors (+ splits)
max_payload = 16384              # bytes; larger readings are split into several messages
message_timeout = "2s"           # an unsent message is dropped after this long

[outputs.kafka.security]         # optional; without it, plaintext
security_protocol = "sasl_ssl"   # "plaintext", "ssl", "sasl_plaintext", "sasl_ssl"
sasl_mechanism = "SCRAM-SHA-512" # "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"
username = "pi-1"                # SASL user
password_file = "/etc/fleetbeat/kafka-password"  # optional; see above for the other sources
ca_file = "/etc/fleetbeat/kafka-ca.pem"  # CA bundle that signed the brokers' certificates
```
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Callable, Optional

from fleetbeat.config import kafka
from fleetbeat.config.frozen import dataclass
from fleetbeat.config.schema import Problems, duration, integer, option, table
from fleetbeat.logutil import RateLimitedLog
from fleetbeat.outputs.base import Identity, Outgoing, Tally

log = logging.getLogger(__name__)

QUEUE_KBYTES = 64  # delivery rule 1: a client's send queue holds at most 64 KiB
# A broker that answers acks=0 requests (Tansu does; Kafka does not) resets a connection
# closed with those answers unread, losing the last messages: let them be read first.
CLOSE_GRACE = 0.2

# librdkafka error names -> drop reason; any other error is dropped as "kafka_error"
_REASON_NAMES = {
    "_MSG_TIMED_OUT": "timeout",
    "_TIMED_OUT": "timeout",
    "REQUEST_TIMED_OUT": "timeout",
    "_QUEUE_FULL": "backpressure",
    "_TRANSPORT": "not_connected",
    "_ALL_BROKERS_DOWN": "not_connected",
    "MSG_SIZE_TOO_LARGE": "too_large",
    "_MSG_SIZE_TOO_LARGE": "too_large",
    "TOPIC_AUTHORIZATION_FAILED": "not_authorized",
    "CLUSTER_AUTHORIZATION_FAILED": "not_authorized",
    "SASL_AUTHENTICATION_FAILED": "not_authorized",
    "_AUTHENTICATION": "not_authorized",
    "UNKNOWN_TOPIC_OR_PART": "unknown_topic",
    "_UNKNOWN_TOPIC": "unknown_topic",
    "_UNKNOWN_PARTITION": "unknown_topic",
    "NOT_LEADER_FOR_PARTITION": "no_leader",
    "LEADER_NOT_AVAILABLE": "no_leader",
    "_PURGE_QUEUE": "closed",
    "_PURGE_INFLIGHT": "closed",
    "_DESTROY": "closed",
}


def drop_reasons(error_class: Any) -> dict[int, str]:
    """librdkafka error code -> drop reason, for the codes this client version has."""
    found = {}
    for attr, reason in _REASON_NAMES.items():
        code = getattr(error_class, attr, None)
        if isinstance(code, int):
            found[code] = reason
    return found


@dataclass(frozen=True)
class KafkaConfig:
    brokers: tuple[str, ...] = kafka.brokers_option()
    topic_prefix: str = kafka.topic_prefix_option()
    burst: int = option(16, integer(min=1, max=10_000))
    max_payload: int = option(16384, integer(min=256, max=QUEUE_KBYTES * 1024 - 1024))
    message_timeout: float = option(2.0, duration(min=0.1, max=300.0))
    security: Optional[kafka.KafkaSecurity] = option(None, table(kafka.KafkaSecurity))

    def check(self, path: str, problems: Problems) -> None:
        kafka.check_client(path, problems)

    def target(self) -> str:
        return f"{','.join(self.brokers)}/{self.topic_prefix}"

    def check_files(self, path: str, problems: Problems) -> None:
        if self.security is not None:
            self.security.check_files(f"{path}.security", problems)

    @classmethod
    def check_together(cls, configs: Sequence[Any], path: str, problems: Problems) -> None:
        """Several producers may write to the same topics: the collector tells them apart by seq."""


def producer_settings(config: KafkaConfig, *, client_id: str) -> dict[str, Any]:
    """librdkafka settings that bound the queue and keep delivery at most once (BROKERS.md)."""
    return {
        "client.id": client_id,
        "acks": 0,
        "retries": 0,
        "enable.idempotence": False,
        "linger.ms": 0,
        "queue.buffering.max.messages": config.burst,
        "queue.buffering.max.kbytes": QUEUE_KBYTES,
        "message.timeout.ms": round(config.message_timeout * 1000),
        "socket.send.buffer.bytes": 65536,
        "message.max.bytes": config.max_payload + 1024,  # the record's key and headers
        "partitioner": "murmur2_random",  # the Java client's: a device lands where it would
        "delivery.report.only.error": True,  # reports cost a callback: only failures matter
    }


class KafkaOutput:
    """Produces each payload with acks=0 at once, or drops and counts it."""

    Config = KafkaConfig

    def __init__(
        self,
        config: KafkaConfig,
        *,
        identity: Identity,
        name: str = "",
        environ: Mapping[str, str] = os.environ,
        producer_factory: Optional[Callable[[dict[str, Any]], Any]] = None,
    ) -> None:
        self.config = config
        self.name = name or f"kafka {config.target()}"
        self.tally = Tally(self.name, log)
        self.max_payload = config.max_payload
        self.hb_topic = f"{config.topic_prefix}.hb"
        self.rd_topic = f"{config.topic_prefix}.rd"
        self._key = identity.dev.encode()
        client = kafka.load_client(self.name)
        self._reasons = drop_reasons(client.KafkaError)
        self._factory = producer_factory or client.Producer
        self._settings = {
            **kafka.client_settings(
                config.brokers, config.security, name=self.name, environ=environ
            ),
            **producer_settings(config, client_id=f"fleetbeat-{identity.dev}"),
            "on_delivery": self._delivered,
            "error_cb": self._client_error,
            "logger": kafka.DebugLog(log),
        }
        self._producer: Any = None
        self._closed = False
        self._news = RateLimitedLog(log, every=60.0)

    def start(self) -> None:
        """Create the producer: librdkafka's threads resolve and connect; this does not wait."""
        if self._producer is None and not self._closed:
            self._producer = self._factory(self._settings)

    def send(self, payload: bytes, msg: Optional[Outgoing] = None) -> None:
        producer = self._producer
        if producer is None or self._closed:
            self.tally.drop("closed" if self._closed else "not_connected")
            return
        topic = self.rd_topic if msg is not None and msg.kind == "rd" else self.hb_topic
        try:
            producer.poll(0)  # delivery reports of earlier messages: their drops, counted now
            producer.produce(topic, payload, self._key)
        except BufferError:
            self.tally.drop("backpressure", f"{self.config.burst} messages or 64 KiB queued")
            return
        except Exception as exc:  # KafkaException and the rest: an output never raises
            self.tally.drop(self._reason_of(exc), str(exc))
            return
        self.tally.sent += 1

    def _reason_of(self, exc: Exception) -> str:
        err = exc.args[0] if exc.args else None
        code = getattr(err, "code", lambda: None)()
        return self._reasons.get(code, "kafka_error") if isinstance(code, int) else "error"

    def _delivered(self, err: Any, msg: Any) -> None:
        """librdkafka's report of a message it could not deliver (called inside poll)."""
        if err is None:
            return
        self.tally.sent -= 1
        self.tally.drop(self._reasons.get(err.code(), "kafka_error"), err.str())

    def _client_error(self, err: Any) -> None:
        self._news.log(logging.WARNING, str(err.code()), "%s: %s", self.name, err.str())

    def close(self, *, timeout: float = 1.0) -> None:
        """Let what is queued (the bye) reach the socket within `timeout`; drop the rest."""
        self._closed = True
        producer, self._producer = self._producer, None
        if producer is None:
            return
        deadline = time.monotonic() + timeout
        try:
            left = producer.flush(max(0.0, timeout - CLOSE_GRACE))
            if left == 0:
                producer.poll(min(CLOSE_GRACE, max(0.0, deadline - time.monotonic())))
            else:
                producer.purge()  # nothing outlives the output
                producer.poll(0)  # their reports: dropped as "closed"
        except Exception as exc:  # a failing client must not stop the agent stopping
            log.debug("%s: closing the producer failed: %r", self.name, exc)


if TYPE_CHECKING:  # mypy checks the class against the output contract
    from fleetbeat.outputs.base import OutputClass

    _: OutputClass = KafkaOutput
