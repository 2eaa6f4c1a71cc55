"""The broker fixtures give real, working brokers: what the AMQP and Kafka tests stand on."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import confluent_kafka
import pika
import pytest

from brokers import RabbitMQ, Tansu
from brokers_conftest import broker_unavailable
from helpers import wait_until

DEVICES = [f"pi-{i:02d}" for i in range(40)]

# The producer settings BROKERS.md measured as bounded and at most once.
AT_MOST_ONCE_PRODUCER = {
    "acks": 0,
    "retries": 0,
    "enable.idempotence": False,
    "linger.ms": 0,
    "queue.buffering.max.messages": 64,
    "queue.buffering.max.kbytes": 64,
    "message.timeout.ms": 2000,
    "socket.send.buffer.bytes": 65536,
}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_missing_broker_skips_here_and_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    """A broker that cannot run skips its tests on a developer's machine and fails them under CI."""
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="not installed"):
        broker_unavailable("RabbitMQ is not installed")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="not installed"):
        broker_unavailable("RabbitMQ is not installed")


# ---------------------------------------------------------------- RabbitMQ


@pytest.fixture
def amqp(rabbitmq: RabbitMQ) -> Iterator[Any]:
    """A pika connection to the session's RabbitMQ, closed at teardown."""
    conn = pika.BlockingConnection(pika.URLParameters(rabbitmq.url))
    yield conn
    if conn.is_open:
        conn.close()


def consume(
    conn: Any, queues: list[str], count: int, timeout: float = 10.0
) -> dict[str, list[Any]]:
    """Consume with no-ack from `queues` until `count` messages came: {queue: [(key, body)]}."""
    channel = conn.channel()
    got: dict[str, list[Any]] = {q: [] for q in queues}
    for q in queues:
        channel.basic_consume(
            q, lambda ch, method, props, body, q=q: got[q].append((method.routing_key, body)),
            auto_ack=True,
        )  # fmt: skip
    deadline = time.monotonic() + timeout
    while sum(map(len, got.values())) < count:
        assert time.monotonic() < deadline, f"{count} messages not consumed in {timeout} s: {got}"
        conn.process_data_events(time_limit=0.05)
    channel.close()
    return got


def test_rabbitmq_topic_exchange_and_bounded_queue(rabbitmq: RabbitMQ, amqp: Any) -> None:
    """A topic exchange routes transient messages to a drop-head queue that keeps only the newest x-max-length."""
    ch = amqp.channel()
    exchange = unique("fleet")
    ch.exchange_declare(exchange, exchange_type="topic", durable=False)
    queue = ch.queue_declare(
        "", exclusive=True, auto_delete=True,
        arguments={"x-max-length": 5, "x-message-ttl": 60_000, "x-overflow": "drop-head"},
    ).method.queue  # fmt: skip
    ch.queue_bind(queue, exchange, routing_key="fleet.#")
    transient = pika.BasicProperties(delivery_mode=1, expiration="60000")
    for seq in range(10):
        ch.basic_publish(exchange, "fleet.pi-01.hb", json.dumps({"seq": seq}), transient)
    ch.basic_publish(exchange, "other.pi-01.hb", b"not bound", transient)

    got = consume(amqp, [queue], 5)[queue]

    assert [json.loads(body)["seq"] for _, body in got] == [5, 6, 7, 8, 9]
    assert {key for key, _ in got} == {"fleet.pi-01.hb"}


def test_rabbitmq_queue_ttl_expires_messages(rabbitmq: RabbitMQ, amqp: Any) -> None:
    """A queue's x-message-ttl drops a message nobody consumed in time."""
    ch = amqp.channel()
    queue = ch.queue_declare("", exclusive=True, arguments={"x-message-ttl": 50}).method.queue
    ch.basic_publish("", queue, b"stale soon")

    def depth() -> int:
        return int(ch.queue_declare(queue, passive=True).method.message_count)

    wait_until(lambda: depth() == 0, timeout=5)


def test_rabbitmq_memory_alarm_blocks_and_unblocks(rabbitmq: RabbitMQ, amqp: Any) -> None:
    """set_vm_memory_high_watermark 0 makes the broker send connection.blocked on the next publish; resetting it sends connection.unblocked."""
    events: list[str] = []
    amqp.add_on_connection_blocked_callback(lambda *_: events.append("blocked"))
    amqp.add_on_connection_unblocked_callback(lambda *_: events.append("unblocked"))
    ch = amqp.channel()

    def until(event: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while event not in events:
            assert time.monotonic() < deadline, f"no connection.{event} in {timeout} s: {events}"
            amqp.process_data_events(time_limit=0.05)

    try:
        rabbitmq.ctl("set_vm_memory_high_watermark", "0")
        # The broker tells a connection it is blocked when that connection publishes.
        ch.basic_publish("", "nowhere", b"while the alarm is on")
        until("blocked")
    finally:
        rabbitmq.ctl("set_vm_memory_high_watermark", "0.4")
    until("unblocked")
    assert events == ["blocked", "unblocked"]


def test_rabbitmq_consistent_hash_splits_devices(rabbitmq: RabbitMQ, amqp: Any) -> None:
    """The consistent-hash exchange splits 40 devices' routing keys over two queues, each key always to the same queue."""
    ch = amqp.channel()
    exchange = unique("fleet-hash")
    ch.exchange_declare(exchange, exchange_type="x-consistent-hash", durable=False)
    queues = []
    for _ in range(2):
        q = ch.queue_declare("", exclusive=True, auto_delete=True).method.queue
        ch.queue_bind(q, exchange, routing_key="1")  # the routing key of a binding is its weight
        queues.append(q)
    for _ in range(2):  # twice, so a key that went to both queues would show
        for dev in DEVICES:
            ch.basic_publish(exchange, f"fleet.{dev}.hb", dev.encode())

    got = consume(amqp, queues, 2 * len(DEVICES))

    a, b = ({body.decode() for _, body in got[q]} for q in queues)
    assert a and b, f"one queue got everything: {len(a)}/{len(b)}"
    assert a.isdisjoint(b)
    assert a | b == set(DEVICES)
    print(f"\n[brokers] consistent hash: {len(a)}/{len(b)} of {len(DEVICES)} devices")


def test_rabbitmq_pause_stalls_and_resume_recovers(rabbitmq: RabbitMQ) -> None:
    """pause() freezes the node so the protocol header goes unanswered; resume() brings it back."""
    rabbitmq.pause()
    try:
        assert not rabbitmq.answers(0.5)
    finally:
        rabbitmq.resume()
    wait_until(rabbitmq.answers, timeout=10)


@pytest.mark.slow
def test_rabbitmq_restarts_on_the_same_port(rabbitmq: RabbitMQ) -> None:
    """stop() ends the node and start() brings it back on the same port and node name."""
    port = rabbitmq.port
    rabbitmq.stop()
    assert not rabbitmq.running and not rabbitmq.answers(0.5)
    rabbitmq.start()
    print(f"\n[brokers] rabbitmq restart: {rabbitmq.start_seconds:.2f} s")
    assert rabbitmq.port == port
    assert rabbitmq.node in rabbitmq.ctl("status")


# ---------------------------------------------------------------- Kafka (Tansu)


def consumer(kafka: Tansu, group: str, **extra: Any) -> Any:
    return confluent_kafka.Consumer({
        "bootstrap.servers": kafka.bootstrap_servers,
        "group.id": group,
        "auto.offset.reset": "earliest",
        # With the defaults Tansu's first join hung past 10 s; with 6 s it takes about 3 s.
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,  # a member learns of a rebalance at its next heartbeat
        **extra,
    })  # fmt: skip


def produce_devices(kafka: Tansu, topic: str, rounds: int = 1) -> Any:
    """`rounds` messages per device, keyed by its id, with the at-most-once settings.

    Returns the producer: keep it until the messages were consumed. Tansu answers acks=0
    requests, and a producer closed right after flush() lost 30 of 40 messages here (with
    acks=1, or 0.2 s later, none): Tansu drops what it had not yet read when the client
    closes with those answers unread.
    """
    producer = confluent_kafka.Producer(
        {"bootstrap.servers": kafka.bootstrap_servers, **AT_MOST_ONCE_PRODUCER}
    )
    for seq in range(rounds):  # a round fits the bounded queue (64): a full one raises BufferError
        for dev in DEVICES:
            producer.poll(0)
            producer.produce(topic, key=dev.encode(), value=json.dumps({"seq": seq}).encode())
        assert producer.flush(10) == 0, "messages still queued after 10 s"
    return producer


def test_kafka_keyed_produce_and_group_consume(kafka: Tansu) -> None:
    """Messages produced with acks=0 and keyed by device id reach a consumer group, each device in one partition."""
    topic = unique("fleet.hb")
    kafka.create_topic(topic, partitions=4)
    producer = produce_devices(kafka, topic, rounds=2)
    c = consumer(kafka, unique("collectors"))
    c.subscribe([topic])
    partitions: dict[str, list[int]] = {}
    try:
        deadline = time.monotonic() + 30
        while sum(map(len, partitions.values())) < 2 * len(DEVICES):
            assert time.monotonic() < deadline, f"only {len(partitions)} devices in 30 s"
            msg = c.poll(0.2)
            if msg is None or msg.error():
                continue
            partitions.setdefault(msg.key().decode(), []).append(msg.partition())
    finally:
        c.close()
        del producer
    assert set(partitions) == set(DEVICES)
    assert all(len(p) == 2 and p[0] == p[1] for p in partitions.values()), partitions
    assert len({p[0] for p in partitions.values()}) > 1, "every key in one partition"


def test_kafka_group_members_split_partitions(kafka: Tansu) -> None:
    """A second member of a consumer group takes half of the four partitions, and each device's messages reach one member."""
    topic = unique("fleet.hb")
    kafka.create_topic(topic, partitions=4)
    group = unique("collectors")
    first, second = consumer(kafka, group), consumer(kafka, group)
    members = (first, second)
    seen: tuple[dict[str, int], dict[str, int]] = ({}, {})

    def poll_all(timeout: float, done: Any) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, (
                f"not done in {timeout} s: {[len(m.assignment()) for m in members]} partitions,"
                f" {[len(s) for s in seen]} devices"
            )
            for member, got in zip(members, seen):
                msg = member.poll(0.05)
                if msg is not None and not msg.error():
                    got[msg.key().decode()] = msg.partition()

    try:
        first.subscribe([topic])
        t0 = time.monotonic()
        poll_all(30, lambda: len(first.assignment()) == 4)
        joined = time.monotonic() - t0
        second.subscribe([topic])
        t0 = time.monotonic()
        poll_all(30, lambda: [len(m.assignment()) for m in members] == [2, 2])
        split = time.monotonic() - t0
        print(f"\n[brokers] group: first join {joined:.2f} s, split after the second {split:.2f} s")
        a, b = ({tp.partition for tp in m.assignment()} for m in members)
        assert a.isdisjoint(b) and a | b == {0, 1, 2, 3}

        producer = produce_devices(kafka, topic)
        poll_all(30, lambda: len(seen[0]) + len(seen[1]) >= len(DEVICES))
        del producer
    finally:
        for member in members:
            member.close()
    assert set(seen[0]).isdisjoint(seen[1])
    assert set(seen[0]) | set(seen[1]) == set(DEVICES)
    assert set(seen[0].values()) <= a and set(seen[1].values()) <= b


def test_kafka_pause_stop_and_start(kafka: Tansu) -> None:
    """pause() leaves ApiVersions unanswered until resume(); stop() and start() give a fresh broker on the same port."""
    kafka.pause()
    try:
        assert not kafka.answers(0.5)
    finally:
        kafka.resume()
    wait_until(kafka.answers, timeout=5)

    port = kafka.port
    kafka.stop()
    assert not kafka.running and not kafka.answers(0.5)
    kafka.start()
    assert kafka.port == port and kafka.answers(0.5)
    kafka.create_topic(unique("after-restart"), partitions=1)
