"""The MQTT receiver against a real mosquitto broker."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import paho.mqtt.client as mqtt
import pytest
from collector_helpers import Broker, CollectorProcess, stored_devices
from paho.mqtt.enums import CallbackAPIVersion

from fleetbeat import wire
from fleetbeat.collector.config import CollectorSection, MqttSection
from fleetbeat.collector.fleet import Fleet
from fleetbeat.collector.receivers.base import ReceiverError
from fleetbeat.collector.receivers.mqtt_subscribe import MqttReceiver
from fleetbeat.config.secrets import TlsConfig
from fleetbeat.errors import ConfigError
from helpers import free_port, wait_until

RUN = "0123456789abcdef"


def hb(dev: str, seq: int) -> bytes:
    return wire.dumps({"v": 1, "k": "hb", "dev": dev, "run": RUN, "seq": seq,
                       "ts": time.time(), "int": 0.2, "m": {"cpu": 1.0}})  # fmt: skip


@pytest.fixture
def client() -> Iterator[Callable[..., mqtt.Client]]:
    """Connected paho clients standing in for agents; disconnected at teardown."""
    made: list[mqtt.Client] = []

    def make(port: int, **will: Any) -> mqtt.Client:
        c = mqtt.Client(CallbackAPIVersion.VERSION2)
        if will:
            c.will_set(**will)
        c.connect("127.0.0.1", port)
        c.loop_start()
        made.append(c)
        return c

    yield make
    for c in made:
        c.disconnect()
        c.loop_stop()


def receiver(fleet: Fleet, port: int, **kw: Any) -> MqttReceiver:
    r = MqttReceiver(fleet=fleet, config=CollectorSection(mqtt=MqttSection(port=port, **kw)))
    r.start()
    assert r.connected.wait(10), "not connected to the broker"
    assert r.subscribed.wait(10), "no SUBACK from the broker"
    return r


def test_heartbeats_over_mqtt(start_broker: Callable[..., Broker],
                              client: Callable[..., mqtt.Client]) -> None:  # fmt: skip
    """Heartbeats published to {prefix}/{dev}/hb make an mqtt device with exact loss figures."""
    broker = start_broker()
    fleet = Fleet(CollectorSection())
    r = receiver(fleet, broker.port, topic_prefix="site/fleet")
    try:
        pub = client(broker.port)
        for seq in (0, 1, 3, 4):
            pub.publish("site/fleet/m-1/hb", hb("m-1", seq), qos=0).wait_for_publish(5)
        wait_until(lambda: (fleet.device("m-1") or {}).get("received") == 4)
        dev = fleet.device("m-1")
        assert dev is not None
        assert (dev["transport"], dev["addr"], dev["lost"], dev["state"]) == (
            "mqtt", "mqtt:m-1", 1, "up")  # fmt: skip
        assert fleet.stats()["received"]["mqtt"] == 4
    finally:
        r.close()


def test_last_will_is_offline(start_broker: Callable[..., Broker],
                              client: Callable[..., mqtt.Client]) -> None:  # fmt: skip
    """When an agent's connection dies, its Last Will (status offline) makes it offline."""
    broker = start_broker()
    fleet = Fleet(CollectorSection())
    r = receiver(fleet, broker.port)
    try:
        agent = client(broker.port, topic="fleetbeat/m-2/status", payload="offline", retain=True)
        for seq in (0, 1):  # confirmed: a device heard once leaves no events
            agent.publish("fleetbeat/m-2/hb", hb("m-2", seq)).wait_for_publish(5)
        wait_until(lambda: (fleet.device("m-2") or {}).get("received") == 2)
        agent.socket().close()  # an abrupt end: the broker sends the will
        wait_until(lambda: (fleet.device("m-2") or {}).get("state") == "offline", timeout=10)
        assert fleet.events()[-1]["reason"] == "last_will"
    finally:
        r.close()


def test_topic_and_payload_must_agree(start_broker: Callable[..., Broker],
                                      client: Callable[..., mqtt.Client]) -> None:  # fmt: skip
    """A payload naming another device than its topic, or garbage, is counted, not applied."""
    broker = start_broker()
    fleet = Fleet(CollectorSection())
    r = receiver(fleet, broker.port)
    try:
        pub = client(broker.port)
        pub.publish("fleetbeat/m-3/hb", hb("someone-else", 0)).wait_for_publish(5)
        pub.publish("fleetbeat/m-3/rd/x", b"\x00garbage").wait_for_publish(5)
        wait_until(lambda: fleet.stats()["received"]["mqtt"] == 2)
        assert fleet.stats()["rejected"] == {"topic_mismatch": 1, "not_json": 1}
        assert len(fleet) == 0
    finally:
        r.close()


def test_shared_group_splits_the_load(start_broker: Callable[..., Broker],
                                      client: Callable[..., mqtt.Client]) -> None:  # fmt: skip
    """Two collectors in one shared group each get part of the messages, none twice."""
    broker = start_broker()
    fleets = [Fleet(CollectorSection()) for _ in range(2)]
    rs = [receiver(f, broker.port, shared_group="collectors") for f in fleets]
    try:
        pub = client(broker.port)
        for i in range(40):
            pub.publish(f"fleetbeat/s-{i}/hb", hb(f"s-{i}", 0)).wait_for_publish(5)
        wait_until(lambda: sum(f.stats()["received"]["mqtt"] for f in fleets) == 40)
        time.sleep(0.2)
        counts = [len(f) for f in fleets]
        assert sum(counts) == 40
        assert all(c > 0 for c in counts)
    finally:
        for r in rs:
            r.close()


def test_broker_down_at_start_is_not_fatal(start_broker: Callable[..., Broker],
                                           client: Callable[..., mqtt.Client]) -> None:  # fmt: skip
    """A collector whose broker is down keeps running and subscribes once it is up."""
    port = free_port()
    fleet = Fleet(CollectorSection())
    r = MqttReceiver(fleet=fleet, config=CollectorSection(mqtt=MqttSection(port=port)))
    r.start()
    try:
        time.sleep(0.5)
        assert not r.connected.is_set()
        start_broker(port=port)
        assert r.connected.wait(15)
        assert r.subscribed.wait(10)
        client(port).publish("fleetbeat/late-1/hb", hb("late-1", 0)).wait_for_publish(5)
        wait_until(lambda: fleet.device("late-1") is not None)
    finally:
        r.close()


def test_collector_process_with_mqtt(tmp_path: Path, start_broker: Callable[..., Broker],
                                     start_collector: Callable[..., CollectorProcess],
                                     client: Callable[..., mqtt.Client]) -> None:  # fmt: skip
    """`fleetbeat collector` with a [collector.mqtt] table receives over MQTT and UDP at once."""
    broker = start_broker()
    col = start_collector(extra=f"[collector.mqtt]\nport = {broker.port}\n")
    wait_until(lambda: "MQTT subscriptions confirmed" in col.log(), timeout=10)
    publisher = client(broker.port)
    for seq in (0, 1):  # confirmed: a device heard once is not stored
        publisher.publish("fleetbeat/both-1/hb", hb("both-1", seq)).wait_for_publish(5)
    wait_until(lambda: "both-1" in stored_devices(col.state_dir))
    assert stored_devices(col.state_dir)["both-1"]["transport"] == "mqtt"


def built(tmp_path: Path, environ: dict[str, str], **kw: Any) -> MqttReceiver:
    """A receiver built (not started) for user "c" with the given environment."""
    section = MqttSection(username="c", **kw)
    return MqttReceiver(fleet=Fleet(CollectorSection()), config=CollectorSection(mqtt=section),
                        environ=environ)  # fmt: skip


def test_password_sources_in_the_agents_order(tmp_path: Path) -> None:
    """password_file wins over FLEETBEAT_MQTT_PASSWORD, which wins over the systemd credential."""
    (tmp_path / "pw").write_text("from-file\n")
    (tmp_path / "creds").mkdir()
    (tmp_path / "creds" / "mqtt-password").write_text("from-credential\n")
    env = {"FLEETBEAT_MQTT_PASSWORD": "from-env", "CREDENTIALS_DIRECTORY": str(tmp_path / "creds")}
    assert built(tmp_path, env, password_file=str(tmp_path / "pw")).client.password == "from-file"
    assert built(tmp_path, env).client.password == "from-env"
    del env["FLEETBEAT_MQTT_PASSWORD"]
    assert built(tmp_path, env).client.password == "from-credential"
    assert built(tmp_path, {}).client.password is None


def test_unreadable_password_file_names_its_key(tmp_path: Path) -> None:
    """A password_file that cannot be read stops the receiver with the key in the message."""
    with pytest.raises(ConfigError, match=r'collector.mqtt: password_file: cannot read ".*/nope"'):
        built(tmp_path, {}, password_file=str(tmp_path / "nope"))


def test_bad_tls_files_stop_the_receiver(tmp_path: Path) -> None:
    """A [collector.mqtt.tls] table naming a missing CA file is an error at start, not later."""
    with pytest.raises(ReceiverError, match=r"collector.mqtt.tls: cannot load the certificates"):
        built(tmp_path, {}, tls=TlsConfig(ca_file=str(tmp_path / "missing.pem")))
