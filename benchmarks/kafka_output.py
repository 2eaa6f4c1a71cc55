"""Kafka: publish cost, agent RSS and collector ingest, against a real broker (Tansu).

1. Cost of `KafkaOutput.send` per message (poll(0) + produce into librdkafka's
   bounded queue) as a ratio to `UdpOutput.send` in the same run (target <= 15),
   interleaved rounds, medians; rounds small enough for the 64 KiB queue, so it
   is the publish path that is timed, not the drop path (timed apart).
2. Steady-state RSS of a real `fleetbeat agent` with one Kafka output (target
   <= 30 MB), beside the same agent with one UDP output.
3. Collector ingest through the broker: heartbeats of 10,000 simulated devices
   produced into `{prefix}.hb` (4 partitions), then read by one `KafkaReceiver`
   into a `Fleet` (commit before processing, as in production): messages/s from
   its first message to its last (target >= 30,000).

Needs Tansu (scripts/test installs it, or FLEETBEAT_TANSU=/path/to/tansu).
Run: .venv/bin/python benchmarks/kafka_output.py [--devices 10000] [--rounds 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

import confluent_kafka  # noqa: E402 - after the path set-up above

from brokers import Tansu  # noqa: E402
from fleetbeat import wire  # noqa: E402
from fleetbeat.outputs.base import Identity, Outgoing  # noqa: E402
from helpers import UdpReceiver  # noqa: E402
from mqtt_output import agent_rss  # noqa: E402 - the same agent, measured the same way

PAYLOAD = (
    b'{"v":1,"k":"hb","dev":"bench","run":"0000000000000000","seq":1,"ts":1.0,'
    b'"int":10,"bt":1,"ver":"0.1.0","drop":0,"m":{"cpu":3.5,"mem":41.2,"temp":48.3}}'
)


def send_cost(broker: Tansu, messages: int, rounds: int) -> dict[str, float]:
    """Median microseconds per send: UDP, Kafka (queued) and Kafka (dropped, queue full)."""
    from fleetbeat.outputs.kafka_produce import KafkaConfig, KafkaOutput
    from fleetbeat.outputs.udp import UdpConfig, UdpOutput

    ident = Identity(dev="bench", run="0" * 16, boot_time=0, version="0", tags={})
    sink = UdpReceiver()
    udp = UdpOutput(UdpConfig(host="127.0.0.1", port=sink.port))
    prefix = "bench-cost"
    broker.create_topic(f"{prefix}.hb", 1)
    out = KafkaOutput(KafkaConfig(brokers=(broker.bootstrap_servers,), topic_prefix=prefix,
                                  burst=messages), identity=ident)  # fmt: skip
    full = KafkaOutput(KafkaConfig(brokers=("127.0.0.1:1",), burst=1), identity=ident)
    out.start()
    full.start()
    msg = Outgoing("hb", ts=1.0)
    full.send(PAYLOAD, msg)  # fills its queue of one: every later send is a drop
    results: dict[str, list[float]] = {"udp": [], "kafka": [], "kafka_drop": []}

    for _ in range(rounds):
        for name, o in (("udp", udp), ("kafka", out), ("kafka_drop", full)):
            t0 = time.perf_counter()
            for _ in range(messages):
                o.send(PAYLOAD, msg)
            results[name].append((time.perf_counter() - t0) / messages * 1e6)
            sink.poll()  # drained, so UDP never drops on a full buffer
            time.sleep(0.05)  # librdkafka writes the round out; the queue is empty again
    print(f"  drops: udp {udp.tally.by_reason}, kafka {out.tally.by_reason}")
    out.close(timeout=1)
    full.close(timeout=0.2)
    udp.close()
    sink.close()
    return {k: statistics.median(v) for k, v in results.items()}


def ingest(broker: Tansu, devices: int, rounds: int) -> tuple[int, float]:
    """(messages, messages/s) one KafkaReceiver took from the broker into a Fleet."""
    from fleetbeat.collector.config import CollectorSection
    from fleetbeat.collector.fleet import Fleet
    from fleetbeat.collector.receivers.kafka_consume import KafkaReceiver, KafkaSection

    prefix = f"bench-ingest-{os.getpid()}"
    topic = f"{prefix}.hb"
    for t in (topic, f"{prefix}.rd"):
        broker.create_topic(t, 4)
    producer = confluent_kafka.Producer({"bootstrap.servers": broker.bootstrap_servers,
                                         "linger.ms": 20, "acks": 1})  # fmt: skip
    ids = [f"dev-{i:05d}" for i in range(devices)]
    t0 = time.monotonic()
    for seq in range(rounds):
        for dev in ids:
            body = {"v": 1, "k": "hb", "dev": dev, "run": "0123456789abcdef", "seq": seq,
                    "ts": time.time(), "int": 10, "bt": 1764150000, "ver": "0.1.0",
                    "drop": 0, "tags": {"site": "lab"}, "m": {"cpu": 3.5, "mem": 41.2}}  # fmt: skip
            while True:
                try:
                    producer.produce(topic, wire.dumps(body), dev.encode())
                    break
                except BufferError:
                    producer.poll(0.05)
        producer.poll(0)
    producer.flush(60)
    total = devices * rounds
    print(f"  produced {total} heartbeats in {time.monotonic() - t0:.1f} s")
    group = f"bench-{os.getpid()}"
    # The receiver's group starts at the end when it has no offsets: commit the start.
    setter = confluent_kafka.Consumer({"bootstrap.servers": broker.bootstrap_servers,
                                       "group.id": group})  # fmt: skip
    setter.commit(offsets=[confluent_kafka.TopicPartition(topic, p, 0) for p in range(4)],
                  asynchronous=False)  # fmt: skip
    setter.close()

    kafka = KafkaSection(brokers=(broker.bootstrap_servers,), topic_prefix=prefix,
                         group_id=group, session_timeout=6.0)  # fmt: skip
    section = CollectorSection(max_devices=devices * 2, kafka=kafka)
    fleet = Fleet(section)
    rx = KafkaReceiver(fleet=fleet, config=section)
    rx.start()
    first = None
    deadline = time.monotonic() + 300
    while rx.stats()["received"] < total and time.monotonic() < deadline:
        if first is None and rx.stats()["received"] > 0:
            first = (time.monotonic(), rx.stats()["received"])
        time.sleep(0.005)
    end = time.monotonic()
    got = rx.stats()["received"]
    rx.close()
    assert first is not None, "nothing received"
    stats = fleet.stats()
    lost = sum(d["lost"] for d in fleet.devices())
    print(f"  fleet: {stats['devices_known']} devices, accepted {stats['accepted']['kafka']}, "
          f"lost {lost}, commit_failed {rx.stats()['commit_failed']}")  # fmt: skip
    return got, (got - first[1]) / (end - first[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=8.0, help="agent run time per RSS sample")
    ap.add_argument("--messages", type=int, default=200, help="sends per round (fit 64 KiB)")
    ap.add_argument("--cost-rounds", type=int, default=15)
    ap.add_argument("--devices", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=20, help="heartbeats per simulated device")
    args = ap.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, load {os.getloadavg()[0]:.2f},"
          f" confluent-kafka {confluent_kafka.version()[0]}, librdkafka "
          f"{confluent_kafka.libversion()[0]}")  # fmt: skip
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        broker = Tansu(tmp / "tansu").start()
        try:
            costs = send_cost(broker, args.messages, args.cost_rounds)
            print(f"UdpOutput.send   (baseline):    {costs['udp']:6.2f} us/message")
            print(f"KafkaOutput.send (queued):      {costs['kafka']:6.2f} us/message  "
                  f"ratio {costs['kafka'] / costs['udp']:.2f} (target <= 15)")  # fmt: skip
            print(f"KafkaOutput.send (queue full):  {costs['kafka_drop']:6.2f} us/message  "
                  f"ratio {costs['kafka_drop'] / costs['udp']:.2f}")  # fmt: skip
            udp_out = '[[outputs.udp]]\nhost = "127.0.0.1"\nport = 9\n'
            kafka_out = f'[[outputs.kafka]]\nbrokers = ["{broker.bootstrap_servers}"]\n'
            rss_udp = agent_rss(tmp, udp_out, args.seconds)
            rss_kafka = agent_rss(tmp, kafka_out, args.seconds)
            print(f"agent RSS, one UDP output (baseline): {rss_udp:6.1f} MiB")
            print(f"agent RSS, one Kafka output:          {rss_kafka:6.1f} MiB"
                  f"  (+{rss_kafka - rss_udp:.1f} MiB; target <= 30 MB)")  # fmt: skip
            got, rate = ingest(broker, args.devices, args.rounds)
            print(f"collector ingest through the broker: {got} messages from {args.devices} "
                  f"devices, {rate:,.0f} messages/s (target >= 30,000)")  # fmt: skip
        finally:
            broker.stop()


if __name__ == "__main__":
    main()
