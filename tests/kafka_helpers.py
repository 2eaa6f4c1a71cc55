"""Helpers for the Kafka tests: agent configs, and a reader of what reached the broker."""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any, Callable

import confluent_kafka

from brokers import Tansu
from helpers import agent_toml


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def kafka_output(bootstrap: str, prefix: str, extra: str = "") -> str:
    return f"""
[[outputs.kafka]]
brokers = ["{bootstrap}"]
topic_prefix = "{prefix}"
{extra}
"""


def kafka_agent_toml(bootstrap: str, prefix: str, *, udp_port: int = 9, **agent: Any) -> str:
    """An agent sending to `{prefix}.hb` / `{prefix}.rd` (and over UDP to `udp_port`)."""
    return agent_toml(udp_port, **agent) + kafka_output(bootstrap, prefix)


def topics(kafka: Tansu, prefix: str, partitions: int = 4) -> list[str]:
    """Create `{prefix}.hb` and `{prefix}.rd` as an operator would; return their names."""
    names = [f"{prefix}.hb", f"{prefix}.rd"]
    for name in names:
        try:
            kafka.create_topic(name, partitions)
        except AssertionError as exc:  # a producer got there first: the broker auto-created it
            if "exist" not in str(exc).lower():
                raise
    return names


class Reader:
    """A consumer of its own group reading `topics` from the start, in a thread of its own."""

    def __init__(self, kafka: Tansu, names: list[str]) -> None:
        self.consumer = confluent_kafka.Consumer({
            "bootstrap.servers": kafka.bootstrap_servers,
            "group.id": unique("reader"),
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 500,
        })  # fmt: skip
        self.consumer.subscribe(names)
        self.records: list[tuple[str, bytes, dict[str, Any], float]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            msg = self.consumer.poll(0.1)
            if msg is None or msg.error():
                continue
            record = (msg.topic(), msg.key(), json.loads(msg.value()), time.time())
            with self._lock:
                self.records.append(record)

    def snapshot(self, topic: str = "") -> list[dict[str, Any]]:
        """The messages read so far (of one topic, if given), in arrival order."""
        with self._lock:
            return [m for t, _, m, _ in self.records if not topic or t == topic]

    def wait_for(self, pred: Callable[[list[dict[str, Any]]], Any], topic: str = "",
                 timeout: float = 20.0) -> Any:  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:
            got = pred(self.snapshot(topic))
            if got:
                return got
            if time.monotonic() > deadline:
                raise AssertionError(f"not read within {timeout} s: {len(self.snapshot())} read")
            time.sleep(0.05)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.consumer.close()


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")
