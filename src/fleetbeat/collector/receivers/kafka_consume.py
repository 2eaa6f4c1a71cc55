"""Kafka receiver: a consumer group member reading `{prefix}.hb` and `{prefix}.rd`, at most once.

Commits before processing, explicitly: each batch that `consume()` returns is
committed synchronously (the offsets after its last message per partition),
and only then handed to the fleet. A batch whose commit fails (a rebalance took
its partitions, the broker is gone) is dropped and counted (`commit_failed`):
the partition's new owner reads it from the last commit, and no message is ever
judged twice. Auto-commit was not chosen because it commits on a timer, after
processing: a collector that dies between the two would make its successor (or
itself, restarted) process up to `auto.commit.interval.ms` of messages again.
One commit round trip per batch (up to `batch` messages) keeps the cost small.
A group with no committed offset starts at the end (`latest`): old heartbeats
say nothing about now.

Several collectors in one `group_id` split the partitions, and with the device
id as the message key, the devices. The range assignor gives each member the
same partition numbers of both topics (create them with the same partition
count), so a device's heartbeats and readings reach the same collector. On a
rebalance, a collector that loses a partition releases the devices it heard on
it (`release`): they leave its fleet, its store and its dashboard without an
event, so it never calls them down; the member that gains the partition learns
each device from its next heartbeat (a new device to it: `first_seen` at the
second one).

```toml
[collector.kafka]
brokers = ["kafka1.lan:9092"]     # bootstrap brokers, "host:port"
topic_prefix = "fleetbeat"        # reads {prefix}.hb and {prefix}.rd
group_id = "fleetbeat-collector"  # collectors in one group split the devices
session_timeout = "10s"           # a collector silent this long loses its partitions
batch = 1000                      # messages per consume() and per offset commit

[collector.kafka.security]        # optional; the same table as the agent's
security_protocol = "sasl_ssl"    # "plaintext", "ssl", "sasl_plaintext", "sasl_ssl"
sasl_mechanism = "SCRAM-SHA-512"  # "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"
username = "collector"            # SASL user
password_file = "/etc/fleetbeat/kafka-password"  # or $FLEETBEAT_KAFKA_PASSWORD, or a credential
ca_file = "/etc/fleetbeat/kafka-ca.pem"  # CA bundle that signed the brokers' certificates
```
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Callable, Optional

from fleetbeat.collector.receivers.base import ReceiverError
from fleetbeat.config import kafka
from fleetbeat.config.frozen import dataclass
from fleetbeat.config.schema import Problems, duration, integer, option, string, table
from fleetbeat.logutil import RateLimitedLog

if TYPE_CHECKING:  # the fleet imports the collector's config, which imports this module
    from fleetbeat.collector.config import CollectorSection
    from fleetbeat.collector.fleet import Fleet

log = logging.getLogger(__name__)
_limited = RateLimitedLog(log)


@dataclass(frozen=True)
class KafkaSection:
    brokers: tuple[str, ...] = kafka.brokers_option()
    topic_prefix: str = kafka.topic_prefix_option()
    group_id: str = option(
        "fleetbeat-collector", string(pattern=r"[A-Za-z0-9._-]{1,200}", what="a group id")
    )
    session_timeout: float = option(10.0, duration(min=1.0, max=3600.0))
    batch: int = option(1000, integer(min=1, max=100_000))
    security: Optional[kafka.KafkaSecurity] = option(None, table(kafka.KafkaSecurity))

    def check(self, path: str, problems: Problems) -> None:
        kafka.check_client(path, problems)


def release(fleet: Fleet, dev_ids: Iterable[str]) -> int:
    """Forget devices another collector judges now: no event, never down; the store drops them.

    `Fleet.release`; a parameter of the receiver so tests can watch it. Returns how
    many were known.
    """
    return fleet.release(dev_ids)


def consumer_settings(config: KafkaSection, *, environ: Mapping[str, str]) -> dict[str, Any]:
    """librdkafka settings: explicit commits before processing, the range assignor."""
    session_ms = round(config.session_timeout * 1000)
    return {
        **kafka.client_settings(
            config.brokers, config.security, name="collector.kafka", environ=environ
        ),
        "group.id": config.group_id,
        "client.id": f"fleetbeat-collector-{os.uname().nodename}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "latest",
        "partition.assignment.strategy": "range",  # same partitions of .hb and .rd together
        "session.timeout.ms": session_ms,
        "heartbeat.interval.ms": max(100, session_ms // 10),  # rebalances noticed quickly
        "queued.max.messages.kbytes": 16384,  # librdkafka's prefetch, bounded (16 MiB)
    }


class KafkaReceiver:
    """Consumes the device topics in its own thread and hands each message to the fleet."""

    log_name = "kafka"

    def __init__(
        self,
        *,
        fleet: Fleet,
        config: CollectorSection,
        environ: Mapping[str, str] = os.environ,
        release: Callable[[Fleet, Iterable[str]], int] = release,
    ) -> None:
        section = config.kafka
        if section is None:
            raise ReceiverError("collector.kafka: not configured")
        client = kafka.load_client("collector.kafka")
        self.fleet = fleet
        self.config = section
        self.name = f"kafka {','.join(section.brokers)} group {section.group_id}"
        self.topics = [f"{section.topic_prefix}.hb", f"{section.topic_prefix}.rd"]
        self._release = release
        self._client = client
        self._settings = {
            **consumer_settings(section, environ=environ),
            "error_cb": self._client_error,
            "logger": kafka.DebugLog(log),
        }
        self._consumer: Any = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kafka-receiver", daemon=True)
        self.assigned = threading.Event()  # set once this member owns partitions
        self._owned: set[int] = set()  # partitions of the .hb topic this member owns
        self._heard: dict[int, set[str]] = {}  # .hb partition -> device ids heard on it
        self._counts = {"received": 0, "commit_failed": 0, "rebalances": 0, "released": 0}

    @staticmethod
    def enabled(config: CollectorSection) -> bool:
        return config.kafka is not None

    def start(self) -> None:
        """Create the consumer and join the group in the background; never waits for a broker."""
        try:
            self._consumer = self._client.Consumer(self._settings)
        except self._client.KafkaException as exc:
            raise ReceiverError(f"collector.kafka: {exc}") from exc
        self._consumer.subscribe(self.topics, on_assign=self._assign, on_revoke=self._revoke,
                                 on_lost=self._revoke)  # fmt: skip
        self._thread.start()
        log.info("%s: consuming %s", self.name, ", ".join(self.topics))

    def stats(self) -> dict[str, int]:
        """Messages received, batches dropped because their commit failed, rebalances, devices
        released to other members, partitions owned now."""
        return {**self._counts, "partitions": len(self._owned)}

    # --- the consumer thread (rebalance callbacks run inside consume()) ----------------

    def _run(self) -> None:
        consumer = self._consumer
        hb_topic = self.topics[0]
        batch = self.config.batch
        receive = self.fleet.receive
        topic_partition = self._client.TopicPartition
        while not self._stop.is_set():
            try:
                msgs = consumer.consume(batch, 0.2)
            except Exception as exc:  # a closed or failing client: say so, go on until stopped
                _limited.log(logging.WARNING, "consume", "%s: consume failed: %s", self.name, exc)
                self._stop.wait(1.0)
                continue
            if not msgs:
                continue
            good = []
            ends: dict[tuple[str, int], int] = {}
            for m in msgs:
                err = m.error()
                if err is not None:
                    _limited.log(logging.WARNING, "error", "%s: %s", self.name, err.str())
                    continue
                good.append(m)
                ends[(m.topic(), m.partition())] = m.offset() + 1
            if not good:
                continue
            try:  # at most once: committed before a message is judged
                consumer.commit(offsets=[topic_partition(t, p, o) for (t, p), o in ends.items()],
                                asynchronous=False)  # fmt: skip
            except Exception as exc:
                self._counts["commit_failed"] += len(good)
                _limited.log(logging.WARNING, "commit", "%s: %d message(s) dropped: offset "
                             "commit failed (%s)", self.name, len(good), exc)  # fmt: skip
                continue
            self._counts["received"] += len(good)
            heard = self._heard
            for m in good:
                key = m.key()
                dev = key.decode("utf-8", "replace") if key else None
                partition = m.partition()
                topic = m.topic()
                if dev is not None and topic == hb_topic:
                    devs = heard.get(partition)
                    if devs is None:
                        devs = heard[partition] = set()
                    devs.add(dev)
                try:
                    receive(m.value() or b"", f"kafka:{topic}[{partition}]", "kafka",
                            topic_dev=dev)  # fmt: skip
                except Exception as exc:  # a bug must not stop reception
                    _limited.log(logging.ERROR, "bug", "error handling a Kafka message: %r", exc)

    def _assign(self, consumer: Any, partitions: list[Any]) -> None:
        hb_topic = self.topics[0]
        now = {tp.partition for tp in partitions if tp.topic == hb_topic}
        lost = self._owned - now
        self._owned = now
        self._counts["rebalances"] += 1
        gone: set[str] = set()
        for p in lost:
            gone |= self._heard.pop(p, set())
        released = self._release(self.fleet, gone) if gone else 0
        self._counts["released"] += released
        log.info("%s: assigned %d partition(s) of %s: %s; released %d device(s) of %d "
                 "partition(s) now read by another collector", self.name, len(now), hb_topic,
                 sorted(now), released, len(lost))  # fmt: skip
        if now:
            self.assigned.set()

    def _revoke(self, consumer: Any, partitions: list[Any]) -> None:
        # Eager protocol: everything is revoked, then assigned again; `_assign` tells which
        # partitions really moved. Nothing to commit: offsets are committed before processing.
        self.assigned.clear()

    def _client_error(self, err: Any) -> None:
        _limited.log(logging.WARNING, str(err.code()), "%s: %s", self.name, err.str())

    def close(self, *, timeout: float = 2.0) -> None:
        """Leave the group (the others take the partitions at once) and stop the thread."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self._consumer is not None:
            try:
                self._consumer.close()
            except Exception as exc:
                log.debug("%s: closing the consumer failed: %r", self.name, exc)
            self._consumer = None
