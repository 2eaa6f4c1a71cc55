"""The collector's AMQP consumer against a real RabbitMQ node, and agents publishing to it."""

from __future__ import annotations

import re
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from collector_helpers import CollectorProcess

from brokers import RabbitMQ
from fleetbeat import wire
from fleetbeat.collector.config import parse_collector_config
from fleetbeat.collector.receivers.amqp_consume import device_of
from fleetbeat.errors import ConfigError
from fleetbeat.outputs import amqp_frames as f
from fleetbeat.outputs.amqp_session import connect, parse_url
from helpers import wait_until

RUN = "0123456789abcdef"


def unique(prefix: str = "ex") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def amqp_section(rabbitmq: RabbitMQ, exchange: str, extra: str = "") -> str:
    return f"""
[collector.amqp]
url = "amqp://guest@127.0.0.1:{rabbitmq.port}/%2F"
exchange = "{exchange}"
reconnect_min = "0.1s"
{extra}
"""


def start_consuming(
    start_collector: Any, rabbitmq: RabbitMQ, exchange: str, name: str, state_dir: Path,
    *, extra: str = ""
) -> CollectorProcess:  # fmt: skip
    c = start_collector(extra=amqp_section(rabbitmq, exchange, extra), name=name,
                        state_dir=state_dir / name)  # fmt: skip
    wait_until(lambda: "AMQP: consuming" in c.log(), timeout=10)
    return c


def devices(c: CollectorProcess) -> dict[str, dict[str, Any]]:
    return {d["id"]: d for d in c.api("/api/devices")["devices"]}


def test_agent_to_rabbitmq_to_collector(rabbitmq, start_collector, start_agent, tmp_path):
    """An agent's heartbeats and readings through RabbitMQ make an amqp device, up, with no loss; its bye takes it offline."""
    exchange = unique()
    c = start_consuming(start_collector, rabbitmq, exchange, "collector", tmp_path)
    agent = start_agent(f"""
[agent]
device_id = "pi-amqp"
heartbeat_interval = "0.1s"
jitter = 0

[sensors.system]
interval = "0.1s"
include = ["cpu"]

[[outputs.amqp]]
url = "amqp://guest@127.0.0.1:{rabbitmq.port}/%2F"
exchange = "{exchange}"
""")
    d = wait_until(lambda: devices(c).get("pi-amqp", {}).get("readings_received", 0) >= 5 and
                   devices(c)["pi-amqp"]["received"] >= 10 and devices(c)["pi-amqp"], timeout=15)  # fmt: skip
    assert (d["state"], d["transport"], d["addr"]) == ("up", "amqp", "amqp:pi-amqp")
    assert d["lost"] == 0 and d["readings_lost"] == 0 and d["duplicates"] == 0
    agent.signal(signal.SIGTERM)
    assert agent.wait(5) == 0
    wait_until(lambda: devices(c)["pi-amqp"]["state"] == "offline", timeout=10)
    assert devices(c)["pi-amqp"]["lost"] == 0


def publish_fleet(rabbitmq: RabbitMQ, exchange: str, devs: list[str], seqs: int) -> None:
    """Publish `seqs` heartbeats per device as the agent frames them, from one connection."""
    session = connect(parse_url(f"amqp://guest@127.0.0.1:{rabbitmq.port}/"), "guest", tls=None,
                      heartbeat=0, timeout=5, capabilities={})  # fmt: skip
    try:
        session.call(f.exchange_declare(1, exchange, "topic"), f.EXCHANGE_DECLARE_OK)
        for seq in range(seqs):
            for dev in devs:
                body = wire.dumps({"v": 1, "k": "hb", "dev": dev, "run": RUN, "seq": seq,
                                   "ts": time.time(), "int": 5, "m": {"cpu": 1.0}})  # fmt: skip
                method = f.publish_method(1, exchange, f"fleetbeat.{dev}.hb")
                props = f.basic_properties("application/json", {"dev": dev}, 60000)
                session.sock.sendall(f.publish(1, method, props, body))
        session.call(f.connection_close(200, "done"), f.CLOSE_OK)
    finally:
        session.sock.close()


def test_two_collectors_split_the_fleet_with_the_consistent_hash_exchange(
    rabbitmq, start_collector, tmp_path
):
    """Through an x-consistent-hash exchange on the dev header, each of 40 devices is judged by exactly one of two collectors."""
    exchange = unique()
    hashed = "consistent_hash = true"
    both = [
        start_consuming(start_collector, rabbitmq, exchange, f"c{i}", tmp_path, extra=hashed)
        for i in range(2)
    ]
    devs = [f"pi-{i:02d}" for i in range(40)]
    publish_fleet(rabbitmq, exchange, devs, seqs=3)

    def split() -> Any:
        a, b = map(devices, both)
        return len(a) + len(b) >= 40 and (a, b)

    a, b = wait_until(split)
    assert set(a) | set(b) == set(devs) and not set(a) & set(b)
    assert a and b, "one collector got every device"
    every = list(a.values()) + list(b.values())
    wait_until(lambda: all(d["received"] == 3 for c in both for d in devices(c).values()))
    assert {d["state"] for d in every} == {"up"} and {d["lost"] for d in every} == {0}
    print(f"split {len(a)}/{len(b)}")


def test_the_consumer_reconnects_after_a_broker_restart(rabbitmq, start_collector, tmp_path):
    """A collector whose broker restarts declares its queue again and goes on receiving."""
    exchange = unique()
    c = start_consuming(start_collector, rabbitmq, exchange, "collector", tmp_path)
    publish_fleet(rabbitmq, exchange, ["before"], seqs=1)
    wait_until(lambda: "before" in devices(c))
    rabbitmq.stop()
    rabbitmq.start()
    wait_until(lambda: c.log().count("AMQP: consuming") >= 2, timeout=15)
    publish_fleet(rabbitmq, exchange, ["after"], seqs=1)
    wait_until(lambda: "after" in devices(c))
    assert "connection to amqp://guest@127.0.0.1" in c.log()


def test_a_deleted_queue_is_declared_again(rabbitmq, start_collector, tmp_path):
    """When its queue is deleted under it (Basic.Cancel), the consumer reconnects, declares it again and receives."""
    exchange = unique()
    c = start_consuming(
        start_collector, rabbitmq, exchange, "collector", tmp_path, extra='queue = "q-del"'
    )
    rabbitmq.ctl("delete_queue", "q-del")
    wait_until(lambda: c.log().count("AMQP: consuming") >= 2, timeout=10)
    assert "cancelled the consumer" in c.log()
    publish_fleet(rabbitmq, exchange, ["after"], seqs=1)
    wait_until(lambda: "after" in devices(c))


def test_the_queue_is_bounded_drop_head_and_transient(rabbitmq, start_collector, tmp_path):
    """The collector's server-named queue carries x-max-length, x-message-ttl and x-overflow=drop-head, and is exclusive."""
    exchange = unique()
    start_consuming(
        start_collector, rabbitmq, exchange, "collector", tmp_path, extra="max_length = 500"
    )
    listed = rabbitmq.ctl(
        "list_queues", "name", "arguments", "exclusive", "durable", "--no-table-headers"
    )
    line = next(x for x in listed.splitlines() if x.startswith("amq.gen-") and "500" in x)
    assert "drop-head" in line and "60000" in line and "true" in line.split("\t")[2]
    assert line.split("\t")[3] == "false"


def test_routing_keys_name_the_device():
    """The device id is read from {prefix}.{dev}.hb and {prefix}.{dev}.rd.{sensor}, dots included; other keys are none."""
    assert device_of("fleetbeat.pi-1.hb", "fleetbeat") == "pi-1"
    assert device_of("fleetbeat.pi.kitchen.rd.weather", "fleetbeat") == "pi.kitchen"
    assert device_of("fleetbeat.pi.rd.a.hb", "fleetbeat") == "pi"
    assert device_of("a.b.pi.hb", "a.b") == "pi"
    for key in ("fleetbeat.hb", "fleetbeatx.pi.hb", "other.pi.hb", "fleetbeat.pi.status"):
        assert device_of(key, "fleetbeat") is None, key


def test_collector_amqp_config():
    """[collector.amqp] takes the agent's URL vocabulary; a password in the URL or [tls] without amqps:// is refused."""
    ok = parse_collector_config({"collector": {"amqp": {"consistent_hash": True}}}, "c.toml")
    assert ok.collector.amqp is not None and ok.collector.amqp.max_length == 100_000
    assert parse_collector_config({}, "c.toml").collector.amqp is None
    for bad, words in [({"url": "amqp://u:pw@h/"}, "password_file"),
                       ({"url": "amqp://h/", "tls": {}}, "amqps://"),
                       ({"max_length": 0}, "max_length")]:  # fmt: skip
        with pytest.raises(ConfigError) as err:
            parse_collector_config({"collector": {"amqp": bad}}, "c.toml")
        assert words in str(err.value) and "pw@" not in str(err.value)


def test_collector_example_block_names_every_key():
    """The commented [collector.amqp] block in examples/collector.toml parses once uncommented and shows every key but tls."""
    from fleetbeat.collector.receivers.amqp_consume import AmqpSection
    from fleetbeat.config import frozen
    from fleetbeat.config.loader import parse_toml
    from helpers import ROOT

    text = (ROOT / "examples" / "collector.toml").read_text()
    block = text[text.index("# [collector.amqp]") : text.index("# Alerts:")]
    keys = [line[2:] for line in block.splitlines() if re.match(r"# [a-z_]+ = ", line)]
    table = parse_toml("[collector.amqp]\n" + "\n".join(keys), "block")
    section = parse_collector_config(table, "block").collector.amqp
    assert section is not None and section.password_file == "/etc/fleetbeat/amqp-password"
    assert frozen.replace(section, password_file=None) == AmqpSection()  # the rest: defaults
    assert set(table["collector"]["amqp"]) == set(AmqpSection.__dataclass_fields__) - {"tls"}
