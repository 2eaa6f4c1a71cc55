"""The Kafka output: topics and keys, a bounded queue that drops by reason, a missing client."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import tty

import pytest

from fleetbeat.agent.config import parse_agent_config
from fleetbeat.config.kafka import KafkaSecurity, client_settings, load_client
from fleetbeat.config.loader import read_toml
from fleetbeat.errors import ConfigError
from fleetbeat.outputs.base import Identity, Outgoing
from fleetbeat.outputs.kafka_produce import KafkaConfig, KafkaOutput, producer_settings
from helpers import ROOT, free_port, subprocess_env, wait_until
from kafka_helpers import Reader, kafka_agent_toml, rss_kib, topics, unique

DEV = "test-dev"  # helpers.agent_toml's


def identity(dev: str = DEV) -> Identity:
    return Identity(dev=dev, run="0123456789abcdef", boot_time=0.0, version="t", tags={})


def unreachable_output(**kw: object) -> KafkaOutput:
    config = KafkaConfig(brokers=(f"127.0.0.1:{free_port(1)}",), **kw)  # type: ignore[arg-type]
    out = KafkaOutput(config, identity=identity())
    out.start()
    return out


@pytest.fixture
def reader_for(kafka):
    made = []

    def make(names):
        r = Reader(kafka, names)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


def seqs(msgs, kind="hb"):
    return [m["seq"] for m in msgs if m["k"] == kind]


def test_heartbeats_readings_and_bye_reach_their_topics_keyed_by_device(
    kafka, reader_for, start_agent
):
    """Heartbeats go to {prefix}.hb, readings to {prefix}.rd, keyed by the device id, seq contiguous; SIGTERM sends the bye to .hb."""
    prefix = unique("fb")
    hb, rd = topics(kafka, prefix)
    reader = reader_for([hb, rd])
    agent = start_agent(kafka_agent_toml(kafka.bootstrap_servers, prefix))
    reader.wait_for(lambda ms: len(seqs(ms)) >= 20 and len(seqs(ms, "rd")) >= 10)
    agent.signal(signal.SIGTERM)
    assert agent.wait(5) == 0
    got = reader.wait_for(lambda ms: [m for m in ms if m["k"] == "bye"] and ms, hb)
    with reader._lock:
        records = list(reader.records)
    assert {key for _, key, _, _ in records} == {DEV.encode()}
    assert {t for t, _, m, _ in records if m["k"] == "rd"} == {rd}
    stream = [m["seq"] for m in got if m["k"] in ("hb", "bye")]
    assert stream == list(range(stream[0], stream[0] + len(stream))), stream
    assert got[-1]["k"] == "bye"
    rd_seqs = seqs(reader.snapshot(rd), "rd")
    assert rd_seqs == list(range(rd_seqs[0], rd_seqs[0] + len(rd_seqs)))


def test_a_full_queue_drops_as_backpressure_and_unsent_messages_time_out():
    """With no broker, `burst` messages wait in the queue, the next is dropped as backpressure, and the waiting ones become timeout drops."""
    out = unreachable_output(burst=2, message_timeout=0.2)
    msg = Outgoing("hb", ts=time.time())
    for _ in range(3):
        out.send(b"{}", msg)
    assert out.tally.sent == 2
    assert out.tally.by_reason == {"backpressure": 1}

    def timed_out():
        out.send(b"{}", msg)  # poll(0) before produce serves the delivery reports
        return out.tally.by_reason.get("timeout", 0) >= 2

    wait_until(timed_out, timeout=5)
    assert out.tally.sent <= 2, "a timed-out message was still counted as sent"
    t0 = time.monotonic()
    out.close(timeout=0.5)
    assert time.monotonic() - t0 < 1.0
    closed = out.tally.by_reason.get("closed", 0)  # what close() purged from the queue
    out.send(b"{}", msg)
    assert out.tally.by_reason["closed"] == closed + 1
    assert out.tally.dropped == sum(out.tally.by_reason.values())


def test_send_before_start_drops_as_not_connected():
    """An output not started yet has no producer: a message is dropped as not_connected, nothing raises."""
    out = KafkaOutput(KafkaConfig(), identity=identity())
    out.send(b"{}", Outgoing("hb", ts=0.0))
    assert out.tally.by_reason == {"not_connected": 1}


def test_producer_settings_are_at_most_once_and_bounded():
    """acks=0, no retries, no idempotence, linger 0, a queue of `burst` messages and 64 KiB."""
    s = producer_settings(KafkaConfig(burst=7, message_timeout=3.0), client_id="x")
    assert (s["acks"], s["retries"], s["enable.idempotence"], s["linger.ms"]) == (0, 0, False, 0)
    assert s["queue.buffering.max.messages"] == 7
    assert s["queue.buffering.max.kbytes"] == 64
    assert s["message.timeout.ms"] == 3000
    assert s["socket.send.buffer.bytes"] == 65536


def test_security_table_becomes_librdkafka_settings_with_the_password_file(tmp_path):
    """SASL over TLS: protocol, mechanism, user, the password from password_file and the CA."""
    (tmp_path / "pw").write_text("s3cret\n")
    sec = KafkaSecurity(security_protocol="sasl_ssl", sasl_mechanism="SCRAM-SHA-512",
                        username="pi", password_file=str(tmp_path / "pw"), ca_file="/ca.pem")  # fmt: skip
    s = client_settings(("a:9092", "b:9092"), sec, name="kafka", environ={})
    assert s == {
        "bootstrap.servers": "a:9092,b:9092", "security.protocol": "sasl_ssl",
        "ssl.ca.location": "/ca.pem", "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "pi", "sasl.password": "s3cret",
    }  # fmt: skip
    s = client_settings(("a:9092",), sec.__class__(security_protocol="sasl_plaintext", username="pi"),
                        name="kafka", environ={"FLEETBEAT_KAFKA_PASSWORD": "from-env"})  # fmt: skip
    assert s["sasl.password"] == "from-env"


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ({"brokers": ["no-port"]}, "outputs.kafka[0].brokers[0]"),
        ({"brokers": []}, "outputs.kafka[0].brokers"),
        ({"topic_prefix": "a b"}, "outputs.kafka[0].topic_prefix"),
        ({"security": {"security_protocol": "sasl_ssl"}}, "outputs.kafka[0].security.username"),
        ({"burst": 0}, "outputs.kafka[0].burst"),
    ],
)
def test_invalid_keys_are_named(table, expected):
    """A bad broker address, an empty list, a bad prefix, SASL without a user or a zero burst names its key."""
    with pytest.raises(ConfigError) as err:
        parse_agent_config({"outputs": {"kafka": [table]}}, "agent.toml")
    assert expected in str(err.value)


def test_a_missing_client_is_a_config_error_naming_the_extra(monkeypatch):
    """Without confluent-kafka, a Kafka output is a config error that says to install fleetbeat[kafka] (or Debian's package on 32-bit ARM)."""
    monkeypatch.setitem(sys.modules, "confluent_kafka", None)
    monkeypatch.setitem(sys.modules, "confluent_kafka.cimpl", None)
    with pytest.raises(ConfigError) as err:
        parse_agent_config({"outputs": {"kafka": [{}]}}, "agent.toml")
    assert 'pip install "fleetbeat[kafka]"' in str(err.value)
    assert "python3-confluent-kafka" in str(err.value)
    with pytest.raises(ConfigError, match="fleetbeat"):
        load_client("kafka")


def test_the_client_loads_without_asyncio_or_ssl():
    """A Kafka output loads librdkafka's module without the package's serializers: no asyncio, no ssl (7 MiB of RSS)."""
    code = (
        "import sys; from fleetbeat.config.kafka import load_client; c = load_client('k'); "
        "c.Producer({'bootstrap.servers': '127.0.0.1:1'}); "
        "print(sorted(m for m in sys.modules if m in ('asyncio', 'ssl', 'confluent_kafka')))"
    )
    done = subprocess.run([sys.executable, "-c", code], env=subprocess_env(), capture_output=True,
                          text=True, timeout=30, check=True)  # fmt: skip
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


@pytest.fixture
def fast_serial(tmp_path):
    """A pty whose other end a thread writes ~1,000 kv lines a second to, until teardown."""
    master, slave = os.openpty()
    tty.setraw(slave)
    stop = threading.Event()

    def write():
        n = 0
        next_at = time.monotonic()
        while not stop.is_set():
            os.write(master, b"".join(b"t=%d\n" % (n + i) for i in range(10)))
            n += 10
            next_at += 0.01
            stop.wait(max(0.0, next_at - time.monotonic()))

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    yield os.ttyname(slave)
    stop.set()
    writer.join(5)
    os.close(master)
    os.close(slave)


@pytest.mark.slow
def test_a_stalled_broker_costs_no_memory_and_the_cadence_holds(
    kafka, reader_for, start_agent, udp_receiver, fast_serial
):
    """Broker frozen 20 s with the agent at ~1,000 messages/s (a fast serial sensor): RSS grows < 512 KiB, heartbeats keep their cadence (seen over UDP), drops are counted by reason, producing resumes."""
    prefix = unique("stall")
    names = topics(kafka, prefix, partitions=1)
    reader = reader_for(names)
    serial = f'[[sensors.serial]]\nname = "fast"\nport = "{fast_serial}"\nformat = "kv"\n'
    agent = start_agent(kafka_agent_toml(kafka.bootstrap_servers, prefix, interval="0.05s",
                                         system=f"enabled = false\n{serial}",
                                         udp_port=udp_receiver.port))  # fmt: skip
    reader.wait_for(lambda ms: len(ms) >= 2000, timeout=30)
    udp_receiver.poll()
    time.sleep(1.0)  # steady state: librdkafka's buffers are allocated
    before = peak = rss_kib(agent.pid)
    kafka.pause()
    paused_at = time.time()
    deadline = time.monotonic() + 20
    try:
        while time.monotonic() < deadline:
            udp_receiver.poll(0.05)  # drained as it comes: 1,000 datagrams/s overflow a buffer
            peak = max(peak, rss_kib(agent.pid))
    finally:
        kafka.resume()
    resumed_at = time.time()
    hbs = [m for m in udp_receiver.messages() if m["k"] == "hb"]
    stall_hb = [m for m in hbs if paused_at <= m["ts"] <= resumed_at]
    gaps = [b["ts"] - a["ts"] for a, b in zip(stall_hb, stall_hb[1:])]
    assert len(stall_hb) > 0.8 * 20 / 0.05, f"only {len(stall_hb)} heartbeats in 20 s"
    assert max(gaps) < 0.5, f"the sampling loop stalled for {max(gaps):.2f} s"
    rate = sum(paused_at <= m["ts"] <= resumed_at for m in udp_receiver.messages()) / 20
    assert rate > 700, f"only {rate:.0f} messages/s while stalled"

    def after_resume(ms):
        return [m for m in ms if m["ts"] > resumed_at + 1 and m["k"] == "hb" and m.get("drop_by")]

    fresh = reader.wait_for(after_resume, names[0], timeout=20)
    drop_by = fresh[-1]["drop_by"]
    print(f"\nRSS growth while stalled: {peak - before} KiB at {rate:.0f} msg/s; drops: {drop_by}")
    assert peak - before < 512, f"RSS grew by {peak - before} KiB while the broker was stalled"
    assert sum(drop_by.values()) > 0.5 * 20 * rate, drop_by
    assert set(drop_by) <= {"backpressure", "timeout", "not_connected"}, drop_by
    assert agent.proc.poll() is None


@pytest.mark.slow
def test_broker_down_at_start_then_restarted_never_stalls_nor_replays(
    kafka, reader_for, start_agent, udp_receiver
):
    """An agent started with the broker down, and kept through a broker restart: heartbeats keep their cadence, and nothing older than message_timeout reaches the broker afterwards."""
    kafka.stop()
    prefix = unique("down")
    agent = start_agent(
        kafka_agent_toml(kafka.bootstrap_servers, prefix, udp_port=udp_receiver.port)
    )
    udp_receiver.wait_for(lambda ms: len(ms) >= 30, timeout=10)  # 3 s of heartbeats, broker down
    for _ in range(2):  # first the broker down at start, then a restart
        kafka.start()
        up_at = time.time()
        names = topics(kafka, prefix, partitions=1)  # memory storage: a restart has no topics
        reader = reader_for(names)
        got = reader.wait_for(lambda ms: len(seqs(ms)) >= 10 and ms, names[0], timeout=30)
        oldest = min(m["ts"] for m in got)
        assert oldest >= up_at - 2.0 - 0.5, f"a message {up_at - oldest:.1f} s old was replayed"
        kafka.stop()
        down_at = time.time()
        udp_receiver.wait_for(lambda ms, t=down_at: sum(m["ts"] > t for m in ms) >= 20, timeout=10)
    ts = [m["ts"] for m in udp_receiver.messages() if m["k"] == "hb"]
    assert max(b - a for a, b in zip(ts, ts[1:])) < 0.5, "the agent stalled"
    hb = [m for m in udp_receiver.messages() if m["k"] == "hb"][-1]
    assert hb.get("drop_by") is None  # the UDP output's own drops: none
    assert agent.proc.poll() is None


def test_example_file_sets_every_key():
    """examples/agent-kafka.toml is valid and sets every [[outputs.kafka]] and security key."""
    path = ROOT / "examples" / "agent-kafka.toml"
    data = read_toml(str(path))
    cfg = parse_agent_config(data, str(path), check_files=False)  # /etc/fleetbeat/* files
    assert [c.type for c in cfg.outputs] == ["kafka"]
    table = data["outputs"]["kafka"][0]
    assert set(table) - {"format"} == set(KafkaConfig.__dataclass_fields__)
    assert set(table["security"]) == set(KafkaSecurity.__dataclass_fields__)
