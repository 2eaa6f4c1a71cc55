"""The AMQP output against a real RabbitMQ node: routing, flow control, stalls, restarts, config."""

from __future__ import annotations

import json
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any, Callable

import pika
import pytest

from brokers import RabbitMQ
from fleetbeat.agent.config import parse_agent_config
from fleetbeat.config.loader import parse_toml
from fleetbeat.errors import ConfigError
from fleetbeat.outputs.amqp_publish import AmqpConfig, AmqpOutput
from fleetbeat.outputs.amqp_session import read_password
from fleetbeat.outputs.base import Identity, Outgoing
from helpers import free_port, wait_until

DEV = "test-dev"
IDENTITY = Identity(dev=DEV, run="0" * 16, boot_time=0, version="t", tags={})


class Tap:
    """A pika consumer on a fresh exclusive queue bound to an exchange: what reached the broker."""

    def __init__(self, rabbitmq: RabbitMQ, exchange: str, key: str = "#") -> None:
        self.conn = pika.BlockingConnection(pika.URLParameters(rabbitmq.url))
        ch = self.conn.channel()
        ch.exchange_declare(exchange, "topic")  # as the agent declares it: non-durable
        queue = ch.queue_declare("", exclusive=True).method.queue
        ch.queue_bind(queue, exchange, key)
        self.got: list[tuple[str, Any, dict[str, Any]]] = []
        ch.basic_consume(queue, self._on, auto_ack=True)

    def _on(self, ch: Any, method: Any, props: Any, body: bytes) -> None:
        self.got.append((method.routing_key, props, json.loads(body)))

    def wait_for(self, pred: Callable[[list[Any]], Any], timeout: float = 10.0) -> Any:
        deadline = time.monotonic() + timeout
        while not pred(self.got):
            assert time.monotonic() < deadline, f"not seen within {timeout} s: {len(self.got)} got"
            self.conn.process_data_events(time_limit=0.05)
        return pred(self.got)

    def on(self, key: str) -> list[dict[str, Any]]:
        return [m for k, _, m in self.got if k == key]

    def close(self) -> None:
        if self.conn.is_open:
            self.conn.close()


@pytest.fixture
def tap(rabbitmq: RabbitMQ) -> Iterator[Callable[..., Tap]]:
    """Make taps on the session broker; closed at teardown."""
    made: list[Tap] = []

    def make(exchange: str, key: str = "#") -> Tap:
        made.append(Tap(rabbitmq, exchange, key))
        return made[-1]

    yield make
    for t in made:
        t.close()


def unique(prefix: str = "ex") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def amqp_toml(port: int, exchange: str, *, interval: str = "0.1s", copies: int = 1,
              extra: str = "", system: str = 'interval = "0.1s"\ninclude = ["cpu"]',
              udp: int = 0, agent: str = "") -> str:  # fmt: skip
    """An agent config with `copies` AMQP outputs to the loopback broker (and a UDP witness)."""
    out = f"""
[[outputs.amqp]]
url = "amqp://guest@127.0.0.1:{port}/%2F"
exchange = "{exchange}"
reconnect_min = "0.1s"
reconnect_max = "1s"
{extra}
"""
    witness = f'\n[[outputs.udp]]\nhost = "127.0.0.1"\nport = {udp}\n' if udp else ""
    return f"""
[agent]
device_id = "{DEV}"
heartbeat_interval = "{interval}"
jitter = 0
{agent}

[sensors.system]
{system}
{out * copies}{witness}"""


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


HB, RD = f"fleetbeat.{DEV}.hb", f"fleetbeat.{DEV}.rd.system"


def test_heartbeats_readings_and_bye_arrive_on_their_routing_keys(rabbitmq, tap, start_agent):
    """Heartbeats and the bye go to {prefix}.{dev}.hb, readings to .rd.{sensor}: transient, with a TTL and the dev header."""
    exchange = unique()
    t = tap(exchange)
    agent = start_agent(amqp_toml(rabbitmq.port, exchange))
    t.wait_for(lambda got: len(t.on(HB)) >= 5 and len(t.on(RD)) >= 2)
    agent.signal(signal.SIGTERM)
    assert agent.wait(5) == 0
    t.wait_for(lambda got: any(m["k"] == "bye" for m in t.on(HB)))
    assert {k for k, _, _ in t.got} == {HB, RD}
    hbs = t.on(HB)
    first = hbs[0]["seq"]  # those sent before the connection was up are dropped, not queued
    assert [m["seq"] for m in hbs] == list(range(first, first + len(hbs)))  # bye included
    assert hbs[-1]["k"] == "bye" and {m["k"] for m in hbs[:-1]} == {"hb"}
    assert "cpu" in t.on(RD)[0]["m"]
    props = t.got[0][1]
    assert (props.delivery_mode, props.expiration, props.headers) == (1, "60000", {"dev": DEV})
    assert props.content_type == "application/json"
    assert "connected (heartbeat 30 s)" in agent.log()


def test_flow_control_drops_as_blocked_and_resumes(rabbitmq, tap, start_agent):
    """While the broker's memory alarm blocks publishers, messages are dropped as `blocked`; they flow again after."""
    exchange = unique()
    t = tap(exchange)
    agent = start_agent(amqp_toml(rabbitmq.port, exchange, interval="0.05s"))
    t.wait_for(lambda got: len(t.on(HB)) >= 3)
    try:
        rabbitmq.ctl("set_vm_memory_high_watermark", "0")
        wait_until(lambda: "blocked publishing" in agent.log(), timeout=10)
        blocked_at = time.time()
        wait_until(lambda: agent.log().count("(blocked)") >= 1, timeout=10)
    finally:
        rabbitmq.ctl("set_vm_memory_high_watermark", "0.4")
    wait_until(lambda: "unblocked publishing" in agent.log(), timeout=10)
    fresh = t.wait_for(
        lambda got: [m for m in t.on(HB) if m["ts"] > blocked_at + 1.0 and m.get("drop_by")]
    )
    assert fresh[-1]["drop_by"].get("blocked", 0) >= 5, fresh[-1]
    assert agent.proc.poll() is None


def test_broker_down_at_start_and_restarted_never_stalls_nor_replays(
    rabbitmq, tap, start_agent, udp_receiver
):
    """With the broker down the agent keeps its schedule and drops; it reconnects after start and restart, replaying nothing."""
    exchange = unique()
    rabbitmq.stop()
    agent = start_agent(amqp_toml(rabbitmq.port, exchange, udp=udp_receiver.port))
    udp_receiver.wait_for(lambda ms: sum(m["k"] == "hb" for m in ms) >= 15)  # 1.5 s of schedule
    assert agent.proc.poll() is None
    rabbitmq.start()
    t = tap(exchange)
    first = t.wait_for(lambda got: t.on(HB), timeout=15)[0]
    assert first["seq"] >= 15 and first["drop_by"]["not_connected"] >= 15, first
    before_restart = len(t.on(HB))
    t.close()
    rabbitmq.stop()
    stopped = time.time()
    rabbitmq.start()
    t = tap(exchange)
    after = t.wait_for(lambda got: t.on(HB), timeout=15)
    assert (
        before_restart > 0 and after[0]["ts"] > stopped
    )  # nothing sent before the restart comes back
    assert after[0]["drop_by"]["not_connected"] > first["drop_by"]["not_connected"]
    udp = [m for m in udp_receiver.messages() if m["k"] == "hb"]
    gaps = [b["ts"] - a["ts"] for a, b in zip(udp, udp[1:])]
    assert max(gaps) < 1.0, f"the heartbeat schedule stalled for {max(gaps):.2f} s"
    assert "cannot connect to amqp://guest@127.0.0.1" in agent.log()


@pytest.mark.slow
def test_stalled_broker_costs_no_memory_and_keeps_the_heartbeat_cadence(
    rabbitmq, tap, start_agent, udp_receiver
):
    """A broker frozen 20 s under ~1,000 messages/s: RSS grows < 512 KiB, heartbeats keep time, drops are counted, publishing resumes."""
    exchange = unique()
    t = tap(exchange)
    # 5 outputs x (100 heartbeats + 100 readings) a second; 4 KB heartbeats fill the
    # kernel's socket buffers (about 2.7 MB a connection) within the stall
    tags = ", ".join(f't{i} = "{"x" * 120}"' for i in range(32))
    agent = start_agent(amqp_toml(rabbitmq.port, exchange, interval="0.01s", copies=5,
                                  system='interval = "0.01s"\ninclude = ["cpu"]',
                                  udp=udp_receiver.port, agent=f"tags = {{ {tags} }}"))  # fmt: skip
    t.wait_for(lambda got: len(got) >= 2000, timeout=20)
    start = time.monotonic()
    rate_from = len(t.got)
    t.wait_for(lambda got: time.monotonic() - start >= 2.0)
    rate = (len(t.got) - rate_from) / (time.monotonic() - start)
    udp_receiver.poll()
    before = rss_kib(agent.pid)
    paused = time.time()
    rabbitmq.pause()
    peak = before
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        udp_receiver.poll(0.5)  # also the wait between samples
        peak = max(peak, rss_kib(agent.pid))
    rabbitmq.resume()
    resumed = time.time()
    during = [m for m in udp_receiver.messages() if m["k"] == "hb" and paused <= m["ts"] <= resumed]
    gaps = [b["ts"] - a["ts"] for a, b in zip(during, during[1:])]
    fresh = t.wait_for(lambda got: [m for m in t.on(HB) if m["ts"] > resumed + 0.5], timeout=30)
    drop_by = max((m.get("drop_by", {}) for m in fresh[-10:]), key=lambda d: sum(d.values()))
    print(
        f"{rate:.0f} msg/s; RSS growth {peak - before} KiB; drops {drop_by}; UDP hb gap {max(gaps):.3f} s"
    )
    assert rate >= 600, f"only {rate:.0f} messages/s reached the broker before the stall"
    assert peak - before < 512, f"RSS grew by {peak - before} KiB while the broker was frozen"
    assert len(during) >= 20 / 0.01 * 0.5 and max(gaps) < 0.5, (len(during), max(gaps))
    assert drop_by.get("backpressure", 0) + drop_by.get("not_connected", 0) > 1000, drop_by
    assert agent.proc.poll() is None


def test_not_connected_and_too_large_are_dropped_at_once():
    """Before any connection a publish is dropped as not_connected; a payload over frame_max as too_large."""
    out = AmqpOutput(AmqpConfig(url=f"amqp://127.0.0.1:{free_port()}/"), identity=IDENTITY)
    t0 = time.perf_counter()
    out.send(b"{}", Outgoing("hb", ts=0))
    out.send(b"x" * (out.max_payload + 1), Outgoing("rd", ts=0, src="s"))
    assert time.perf_counter() - t0 < 0.05
    assert out.tally.by_reason == {"not_connected": 1, "too_large": 1}
    out.close(timeout=0.1)


def config_problems(table: str) -> list[str]:
    try:
        parse_agent_config(parse_toml(table, "t.toml"), "t.toml", check_files=False)
    except ConfigError as exc:
        return exc.problems
    return []


def test_config_checks_the_url_and_never_echoes_a_password():
    """A password in the URL, a wrong scheme and [tls] without amqps:// are config errors; the secret is not repeated."""
    problems = config_problems('[[outputs.amqp]]\nurl = "amqp://u:hunter2@h/"\n')
    assert len(problems) == 1 and "password_file" in problems[0] and "hunter2" not in problems[0]
    assert "amqp://" in config_problems('[[outputs.amqp]]\nurl = "http://h/"\n')[0]
    assert (
        "amqps://"
        in config_problems('[[outputs.amqp]]\nurl = "amqp://h/"\n[outputs.amqp.tls]\n')[0]
    )
    assert (
        config_problems('[[outputs.amqp]]\nurl = "amqps://pi@h:5671/fleet"\n[outputs.amqp.tls]\n')
        == []
    )
    assert AmqpConfig(url="amqps://pi@h/fleet").target() == "amqps://pi@h:5671/fleet"
    assert AmqpConfig(url="amqp://h").target() == "amqp://guest@h:5672/%2F"


def test_password_from_file_environment_or_guest(tmp_path):
    """The password comes from password_file, else FLEETBEAT_AMQP_PASSWORD; RabbitMQ's guest defaults to "guest"."""
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    assert read_password(str(secret), "pi", name="t", environ={}) == "s3cret"
    assert read_password(None, "pi", name="t", environ={"FLEETBEAT_AMQP_PASSWORD": "env"}) == "env"
    assert read_password(None, "guest", name="t", environ={}) == "guest"
    assert read_password(None, "pi", name="t", environ={}) == ""


def test_example_file_sets_every_key():
    """examples/agent-amqp.toml is valid and sets every [[outputs.amqp]] and tls key."""
    from fleetbeat.config.loader import read_toml
    from fleetbeat.config.secrets import TlsConfig
    from helpers import ROOT

    path = ROOT / "examples" / "agent-amqp.toml"
    data = read_toml(str(path))
    cfg = parse_agent_config(data, str(path), check_files=False)  # /etc/fleetbeat/*
    assert [c.type for c in cfg.outputs] == ["amqp"]
    table = data["outputs"]["amqp"][0]
    assert set(table) == set(AmqpConfig.__dataclass_fields__) | {"format"}
    assert set(table["tls"]) == set(TlsConfig.__dataclass_fields__)


def test_a_peer_that_is_not_amqp_is_retried_with_backoff(caplog):
    """A server that answers with something other than AMQP (or half of it) is logged and retried in the background; sends drop meanwhile."""
    import socket
    import threading

    server = socket.create_server(("127.0.0.1", 0))
    accepted = []

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            accepted.append(time.monotonic())
            # by turns: not AMQP at all, and a Connection.Start cut short
            truncated = b"\x01\x00\x00\x00\x00\x00\x05\x00\x0a\x00\x0a\x00\xce"
            conn.sendall(truncated if len(accepted) % 2 else b"HTTP/1.1 400 Bad Request\r\n\r\n")
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    url = f"amqp://127.0.0.1:{server.getsockname()[1]}/"
    out = AmqpOutput(AmqpConfig(url=url, reconnect_min=0.1, reconnect_max=0.2), identity=IDENTITY)
    out.start()
    try:
        wait_until(lambda: len(accepted) >= 3)
        out.send(b"{}", Outgoing("hb", ts=0))
        assert out.connects == 0 and out.tally.by_reason == {"not_connected": 1}
        assert "cannot connect to amqp://guest@127.0.0.1" in caplog.text
        assert all(
            b - a >= 0.05 for a, b in zip(accepted, accepted[1:])
        )  # backoff, jittered to half
    finally:
        out.close(timeout=0.5)
        server.close()


@pytest.mark.slow
def test_amqps_with_a_generated_ca(tmp_path, tls_files, start_agent):
    """Over amqps:// the output checks the broker's certificate against ca_file, and refuses one signed by another CA."""
    import socket

    from helpers import free_port as port_for

    node = RabbitMQ(tmp_path / "tls-rabbitmq", plugins=())
    tls_port = port_for(socket.SOCK_STREAM)
    (node.dir / "rabbitmq.conf").write_text(
        f"listeners.ssl.default = 127.0.0.1:{tls_port}\n"
        f"ssl_options.cacertfile = {tls_files['ca']}\n"
        f"ssl_options.certfile = {tls_files['cert']}\n"
        f"ssl_options.keyfile = {tls_files['key']}\n"
        "ssl_options.verify = verify_none\n"
        "ssl_options.fail_if_no_peer_cert = false\n"
        "loopback_users = none\n"
    )
    node.start()
    try:
        exchange = unique()
        t = Tap(node, exchange)
        good = start_agent(amqp_toml(0, exchange, extra=f'[outputs.amqp.tls]\nca_file = "{tls_files["ca"]}"')
                           .replace("amqp://guest@127.0.0.1:0/", f"amqps://guest@127.0.0.1:{tls_port}/"))  # fmt: skip
        t.wait_for(lambda got: len(t.on(HB)) >= 3)
        assert "heartbeat 30 s, TLS" in good.log()
        bad = start_agent(amqp_toml(0, exchange, extra=f'[outputs.amqp.tls]\nca_file = "{tls_files["other_ca"]}"')
                          .replace("amqp://guest@127.0.0.1:0/", f"amqps://guest@127.0.0.1:{tls_port}/"))  # fmt: skip
        wait_until(lambda: f"cannot connect to amqps://guest@127.0.0.1:{tls_port}" in bad.log())
        assert "TLS: " in bad.log() and "connected (heartbeat" not in bad.log()
        assert bad.proc.poll() is None
        t.close()
    finally:
        node.stop()
