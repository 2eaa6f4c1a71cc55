"""AMQP (RabbitMQ): publish cost, agent RSS and collector ingest, each beside a baseline.

1. Cost of `AmqpOutput.send` per message (Basic.Publish + header + body written
   to the socket) as a ratio to `UdpOutput.send` in the same run (target <= 10),
   interleaved rounds, medians.
2. Steady-state RSS of a real `fleetbeat agent` with one AMQP output (target
   <= 22 MB), beside the same agent with one UDP output.
3. Collector ingest through the broker: MESSAGES heartbeats from 10,000 simulated
   devices are queued first (a named, bounded queue), then the collector's real
   `AmqpConsumer` feeding a real `Fleet` drains it; messages per wall-clock second
   and per CPU second of this process (target >= 30,000/s).

Starts a private RabbitMQ node (tests/brokers.py). Run:
    .venv/bin/python benchmarks/amqp_output.py [--seconds 8] [--messages 3000] [--ingest 200000]
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests"), str(ROOT / "benchmarks")]

from brokers import RabbitMQ  # noqa: E402 - after the path set-up
from fleetbeat import wire  # noqa: E402
from fleetbeat.collector.config import CollectorSection  # noqa: E402
from fleetbeat.collector.fleet import Fleet  # noqa: E402
from fleetbeat.collector.receivers.amqp_consume import AmqpConsumer, AmqpSection  # noqa: E402
from fleetbeat.outputs import amqp_frames as f  # noqa: E402
from fleetbeat.outputs.amqp_publish import AmqpConfig, AmqpOutput  # noqa: E402
from fleetbeat.outputs.amqp_session import connect, parse_url  # noqa: E402
from fleetbeat.outputs.base import Identity  # noqa: E402
from mqtt_output import agent_rss, compare_with_udp, free_port  # noqa: E402 - measured alike

DEVICES = 10_000


def send_cost(url: str, messages: int, rounds: int) -> tuple[float, float, dict[str, int]]:
    """Median microseconds per send for UDP and AMQP, measured in interleaved rounds."""
    ident = Identity(dev="bench", run="0" * 16, boot_time=0, version="0", tags={})
    amqp = AmqpOutput(AmqpConfig(url=url, exchange="bench-cost"), identity=ident)
    amqp.start()
    deadline = time.monotonic() + 10
    while not amqp.connects:
        if time.monotonic() > deadline:
            raise RuntimeError("AMQP output did not connect")
        time.sleep(0.01)
    return compare_with_udp(amqp, messages, rounds, settle=0.1)


def queue_depth(rabbitmq: RabbitMQ, queue: str) -> int:
    for line in rabbitmq.ctl("list_queues", "name", "messages", "--no-table-headers").splitlines():
        name, _, count = line.partition("\t")
        if name == queue:
            return int(count)
    return 0


class NullFleet:
    """Counts what it is handed: the baseline, the broker's delivery and our framing alone."""

    def __init__(self) -> None:
        self.n = 0

    def receive(self, data: bytes, addr: object, transport: str, topic_dev: object = None) -> None:
        self.n += 1

    def reject(self, reason: str, transport: str) -> None:
        self.n += 1


def fill(url: str, section: AmqpSection, messages: int) -> None:
    """Queue `messages` heartbeats from DEVICES devices (seq counting up per device)."""
    session = connect(parse_url(url), "guest", tls=None, heartbeat=0, timeout=10, capabilities={})
    run = "0123456789abcdef"
    props = {dev: f.basic_properties("application/json", {"dev": dev}, None)
             for dev in (f"sim-{i:05d}" for i in range(DEVICES))}  # fmt: skip
    batch: list[bytes] = []
    for n in range(messages):
        seq, dev = divmod(n, DEVICES)
        name = f"sim-{dev:05d}"
        body = wire.dumps({"v": 1, "k": "hb", "dev": name, "run": run, "seq": seq,
                           "ts": time.time(), "int": 10, "bt": 1764150000, "ver": "0.1.0",
                           "drop": 0, "m": {"cpu": 3.5, "mem": 41.2, "temp": 48.3}})  # fmt: skip
        method = f.publish_method(1, section.exchange, f"fleetbeat.{name}.hb")
        batch.append(f.publish(1, method, props[name], body))
        if len(batch) == 1000:
            session.sock.sendall(b"".join(batch))
            batch.clear()
    session.sock.sendall(b"".join(batch))
    session.call(f.connection_close(200, "done"), f.CLOSE_OK)
    session.sock.close()


def ingest(rabbitmq: RabbitMQ, url: str, messages: int, fleet: Any,
           count: Callable[[], int]) -> tuple[float, float, int]:  # fmt: skip
    """(messages/s wall, messages/s CPU, messages processed) for the consumer draining a queue."""
    section = AmqpSection(url=url, exchange="bench-ingest", queue="bench-ingest",
                          max_length=messages * 2, message_ttl=3600.0)  # fmt: skip
    config = CollectorSection(amqp=section)
    declare = AmqpConsumer(fleet=NullFleet(), config=config)  # type: ignore[arg-type]
    declare.start()  # declares and binds the named queue, which outlives it
    declare.connected.wait(10)
    declare.close()
    fill(url, section, messages)
    deadline = time.monotonic() + 120
    while queue_depth(rabbitmq, section.queue) < messages and time.monotonic() < deadline:
        time.sleep(0.5)
    consumer = AmqpConsumer(fleet=fleet, config=config)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    consumer.start()
    deadline = time.monotonic() + 120
    while count() < messages and time.monotonic() < deadline:
        time.sleep(0.01)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    done = count()
    consumer.close()
    return done / wall, done / cpu, done


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=8.0, help="agent run time per RSS sample")
    ap.add_argument("--messages", type=int, default=3000, help="sends per round")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--ingest", type=int, default=200_000, help="messages for the ingest run")
    args = ap.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, load {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        rabbitmq = RabbitMQ(tmp / "rabbitmq").start()
        url = f"amqp://guest@127.0.0.1:{rabbitmq.port}/%2F"
        try:
            udp_us, amqp_us, drops = send_cost(url, args.messages, args.rounds)
            print(f"UdpOutput.send  (baseline): {udp_us:6.2f} us/message")
            print(f"AmqpOutput.send:            {amqp_us:6.2f} us/message  "
                  f"ratio {amqp_us / udp_us:.2f} (target <= 10)")  # fmt: skip
            print(f"drops during the cost runs: {drops}")
            udp_out = (
                f'[[outputs.udp]]\nhost = "127.0.0.1"\nport = {free_port(socket.SOCK_DGRAM)}\n'
            )
            amqp_out = f'[[outputs.amqp]]\nurl = "{url}"\n'
            rss_udp = agent_rss(tmp, udp_out, args.seconds)
            rss_amqp = agent_rss(tmp, amqp_out, args.seconds)
            print(f"agent RSS, one UDP output (baseline): {rss_udp:6.1f} MiB")
            print(f"agent RSS, one AMQP output:           {rss_amqp:6.1f} MiB"
                  f"  (+{rss_amqp - rss_udp:.1f} MiB; target <= 22 MB)")  # fmt: skip
            null = NullFleet()
            wall0, cpu0, _ = ingest(rabbitmq, url, args.ingest, null, lambda: null.n)
            print(f"baseline, the consumer into a counter: {wall0:,.0f}/s wall, "
                  f"{cpu0:,.0f}/s per CPU second")  # fmt: skip
            fleet = Fleet(CollectorSection(max_devices=DEVICES * 2))
            wall, cpu, done = ingest(rabbitmq, url, args.ingest, fleet,
                                     lambda: fleet.stats()["received"]["amqp"])  # fmt: skip
            print(f"collector ingest through RabbitMQ, {DEVICES} devices, {done} messages: "
                  f"{wall:,.0f}/s wall, {cpu:,.0f}/s per CPU second "
                  "(target >= 30,000/s)")  # fmt: skip
        finally:
            rabbitmq.stop()


if __name__ == "__main__":
    main()
