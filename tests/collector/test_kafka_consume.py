"""The collector's Kafka receiver: commit before processing, a group that splits the devices."""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

import confluent_kafka
import pytest
from collector_helpers import CollectorProcess, Sender

from fleetbeat import wire
from fleetbeat.collector.config import CollectorSection, parse_collector_config
from fleetbeat.collector.fleet import Fleet
from fleetbeat.collector.receivers.kafka_consume import (
    KafkaReceiver,
    KafkaSection,
    consumer_settings,
    release,
)
from helpers import wait_until
from kafka_helpers import kafka_agent_toml, topics, unique

DEVICES = [f"pi-{i:02d}" for i in range(40)]


def kafka_table(bootstrap: str, prefix: str, group: str, session: str = "6s") -> str:
    return f"""
[collector.kafka]
brokers = ["{bootstrap}"]
topic_prefix = "{prefix}"
group_id = "{group}"
session_timeout = "{session}"
"""


def device(collector: CollectorProcess, dev_id: str) -> dict[str, Any]:
    """The device as /api/devices shows it, or {} while it is unknown."""
    return next((d for d in collector.api("/api/devices")["devices"] if d["id"] == dev_id), {})


def up_ids(collector: CollectorProcess) -> set[str]:
    return {d["id"] for d in collector.api("/api/devices")["devices"] if d["state"] == "up"}


class FleetSender:
    """Heartbeats of many simulated devices through a real producer, keyed by device id."""

    def __init__(self, bootstrap: str, topic: str, devices: list[str], interval: float = 0.5):
        self.producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "acks": 0,
                                                  "linger.ms": 0, "partitioner": "murmur2_random"})  # fmt: skip
        self.senders = [Sender(0, dev=d, interval=interval) for d in devices]
        self.topic = topic
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        seq = 0
        while not self._stop.is_set():
            for s in self.senders:
                self.producer.produce(self.topic, wire.dumps(s.message(seq)), s.dev.encode())
            self.producer.poll(0)
            seq += 1
            self._stop.wait(self.interval)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.producer.flush(2)
        for s in self.senders:
            s.close()


class FakeMessage:
    def __init__(self, topic: str, partition: int, offset: int, value: bytes, key: bytes) -> None:
        self._t, self._p, self._o, self._v, self._k = topic, partition, offset, value, key

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._t

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def value(self) -> bytes:
        return self._v

    def key(self) -> bytes:
        return self._k


class FakeConsumer:
    """Hands out one batch, records commits and receives in one order, fails commits if told."""

    def __init__(self, batch: list[FakeMessage], order: list[Any], fail: bool) -> None:
        self.batch, self.order, self.fail = batch, order, fail

    def consume(self, n: int, timeout: float) -> list[FakeMessage]:
        batch, self.batch = self.batch, []
        if not batch:
            time.sleep(0.01)
        return batch

    def commit(self, offsets: list[Any], asynchronous: bool) -> None:
        assert asynchronous is False
        self.order.append(("commit", sorted((tp.topic, tp.partition, tp.offset) for tp in offsets)))
        if self.fail:
            raise confluent_kafka.KafkaException(confluent_kafka.KafkaError(27))  # rebalancing


def fake_receiver(fail: bool) -> tuple[KafkaReceiver, list[Any], Fleet]:
    fleet = Fleet(CollectorSection())
    order: list[Any] = []
    real_receive = fleet.receive

    def receive(data: bytes, addr: Any, transport: str = "udp", topic_dev: Any = None) -> None:
        order.append(("receive", topic_dev))
        real_receive(data, addr, transport, topic_dev)

    fleet.receive = receive  # type: ignore[method-assign]
    rx = KafkaReceiver(fleet=fleet, config=CollectorSection(kafka=KafkaSection(topic_prefix="t")))
    s = Sender(0, dev="pi-1")
    batch = [FakeMessage("t.hb", 2, 10 + i, wire.dumps(s.message(i)), b"pi-1") for i in range(3)]
    batch.append(FakeMessage("t.rd", 2, 7, wire.dumps(s.message(0, "rd")), b"pi-1"))
    rx._consumer = FakeConsumer(batch, order, fail)
    rx._thread.start()
    return rx, order, fleet


def test_a_batch_is_committed_before_any_message_of_it_is_processed():
    """At most once: the offsets after a batch's last message per partition are committed (synchronously) before the fleet sees the first."""
    rx, order, fleet = fake_receiver(fail=False)
    wait_until(lambda: len(order) == 5)
    rx._stop.set()
    assert order[0] == ("commit", [("t.hb", 2, 13), ("t.rd", 2, 8)])
    assert [o[0] for o in order[1:]] == ["receive"] * 4
    assert fleet.device("pi-1")["transport"] == "kafka"
    assert rx.stats()["received"] == 4


def test_a_batch_whose_commit_fails_is_dropped_and_counted():
    """A commit that fails (its partitions moved in a rebalance) drops the batch unprocessed: its new owner reads it."""
    rx, order, fleet = fake_receiver(fail=True)
    wait_until(lambda: rx.stats()["commit_failed"] == 4)
    rx._stop.set()
    assert [o[0] for o in order] == ["commit"]
    assert fleet.device("pi-1") is None


def test_release_forgets_devices_without_an_event_or_a_down():
    """Released devices leave the fleet quietly (no event, never down) and are handed to the store to delete."""
    fleet = Fleet(CollectorSection())
    for dev in ("a", "b"):
        s = Sender(0, dev=dev)
        for seq in range(2):
            fleet.receive(wire.dumps(s.message(seq)), "x", "kafka")
    of_a = [e for e in fleet.events() if e["device"] == "a"]
    assert release(fleet, ["a", "unknown"]) == 1
    assert [d["id"] for d in fleet.devices()] == ["b"]
    assert fleet.take_forgotten() == ["a"]
    assert fleet.check(time.monotonic() + 3600) == 1  # b is called down; a is not judged at all
    assert [e for e in fleet.events() if e["device"] == "a"] == of_a


def test_collector_kafka_table_and_consumer_settings():
    """[collector.kafka] parses with its defaults; the consumer commits by hand, starts at the end and uses the range assignor."""
    cfg = parse_collector_config({"collector": {"kafka": {"brokers": ["k:9092"]}}}, "c.toml")
    section = cfg.collector.kafka
    assert section is not None
    assert (section.group_id, section.topic_prefix, section.session_timeout) == (
        "fleetbeat-collector",
        "fleetbeat",
        10.0,
    )
    s = consumer_settings(section, environ={})
    assert s["enable.auto.commit"] is False and s["enable.auto.offset.store"] is False
    assert s["auto.offset.reset"] == "latest"
    assert s["partition.assignment.strategy"] == "range"
    assert s["bootstrap.servers"] == "k:9092"


def test_agent_through_kafka_to_the_collector(kafka, start_agent, tmp_path):
    """A real agent through the broker to a real collector: the device is up over "kafka", readings counted, no heartbeat lost, and its bye takes it offline."""
    prefix = unique("e2e")
    topics(kafka, prefix)
    col = CollectorProcess(
        tmp_path, extra=kafka_table(kafka.bootstrap_servers, prefix, unique("g"))
    )
    try:
        wait_until(lambda: "assigned 4 partition(s)" in col.log(), timeout=30)
        agent = start_agent(kafka_agent_toml(kafka.bootstrap_servers, prefix, device="kafka-e2e"))
        dev = wait_until(
            lambda: (d := device(col, "kafka-e2e")) and d.get("received", 0) >= 20 and d,
            timeout=20,
        )
        assert dev["state"] == "up" and dev["transport"] == "kafka"
        assert dev["readings_received"] > 0
        agent.signal(signal.SIGTERM)
        assert agent.wait(5) == 0
        dev = wait_until(
            lambda: (d := device(col, "kafka-e2e"))["state"] == "offline" and d, timeout=10
        )
        assert dev["run_lost"] == 0 and dev["lost"] == 0, dev
        assert dev["readings_lost"] == 0, dev
    finally:
        col.stop()


@pytest.mark.slow
@pytest.mark.parametrize("stop", ["terminate", "kill"])
def test_two_collectors_in_a_group_split_the_devices_and_take_them_over(kafka, tmp_path, stop):
    """40 devices: a second collector joining takes about half (released by the first, never called down there); each device is up in exactly one /api/devices; a stopped one's devices move to the other within the session timeout, a killed one's once the broker's session timeout (6 s) and a rebalance passed."""
    prefix = unique("group")
    hb, _ = topics(kafka, prefix)
    group = unique("collectors")
    # A rebalance pauses the whole group (eager protocol) while the broker rejoins its
    # members: 3.6 s on Tansu here. Heartbeats every 2 s, late after 3 of them: 6 s.
    table = "late_after = 3\n" + kafka_table(kafka.bootstrap_servers, prefix, group)
    a = CollectorProcess(tmp_path, extra=table, name="a", state_dir=tmp_path / "a")
    b = None
    sender = None
    try:
        wait_until(lambda: "assigned 4 partition(s)" in a.log(), timeout=30)
        sender = FleetSender(kafka.bootstrap_servers, hb, DEVICES, interval=2.0)
        wait_until(lambda: up_ids(a) == set(DEVICES), timeout=20)
        b = CollectorProcess(tmp_path, extra=table, name="b", state_dir=tmp_path / "b")

        def split() -> bool:
            ua, ub = up_ids(a), up_ids(b)
            return bool(ua and ub and ua.isdisjoint(ub) and ua | ub == set(DEVICES))

        wait_until(split, timeout=30)
        in_a = {d["id"] for d in a.api("/api/devices")["devices"]}
        in_b = {d["id"] for d in b.api("/api/devices")["devices"]}
        assert in_a.isdisjoint(in_b), "a device is judged by both collectors"
        print(f"\n[kafka] split {len(in_a)}/{len(in_b)} of {len(DEVICES)} devices")
        assert not [e for e in a.api("/api/events")["events"] if e["to"] in ("down", "late")]

        t0 = time.monotonic()
        if stop == "terminate":
            assert a.terminate() == 0  # leaves the group: the broker rebalances at once
        else:
            a.proc.kill()  # the broker notices after session_timeout
        wait_until(lambda: up_ids(b) == set(DEVICES), timeout=6 if stop == "terminate" else 6 + 6)
        print(f"[kafka] takeover after {stop}: {time.monotonic() - t0:.2f} s")
        assert not [e for e in b.api("/api/events")["events"] if e["to"] in ("down", "late")]
    finally:
        if sender is not None:
            sender.close()
        a.stop()
        if b is not None:
            b.stop()
