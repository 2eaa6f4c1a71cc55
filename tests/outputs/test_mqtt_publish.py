"""The MQTT output against a real mosquitto: topics, Will, reconnects, no buffering, TLS, auth."""

from __future__ import annotations

import json
import signal
import socket
import time

import pytest
from mqtt_helpers import mqtt_toml

from fleetbeat import wire
from helpers import free_port, subprocess_env, wait_until

DEV = "test-dev"
HB = f"fleetbeat/{DEV}/hb"
STATUS = f"fleetbeat/{DEV}/status"
RD_SYSTEM = f"fleetbeat/{DEV}/rd/system"


def kinds_on(sub, topic):
    return [json.loads(p)["k"] for p in sub.on(topic)]


def status_payloads(sub):
    return [p for t, p, _ in sub.snapshot() if t == STATUS]


def retained_status(subscribe, port, **kw):
    """What a new subscriber gets as the retained status: (payload, retained flag)."""
    sub = subscribe(port, STATUS, **kw)
    sub.wait_for(lambda ms: ms)
    _, payload, retained = sub.snapshot()[0]
    return payload, retained


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_heartbeats_and_readings_arrive_on_their_topics(broker, subscribe, start_agent):
    """Heartbeats go to .../hb, readings to .../rd/<sensor> (wire v1); status is retained online."""
    sub = subscribe(broker.port)
    start_agent(mqtt_toml(broker.port))
    sub.wait_for(lambda ms: len(sub.on(HB)) >= 3 and len(sub.on(RD_SYSTEM)) >= 2)
    hbs = [wire.parse(p) for p in sub.on(HB)]
    rds = [wire.parse(p) for p in sub.on(RD_SYSTEM)]
    assert {m.kind for m in hbs} == {"hb"} and {m.dev for m in hbs} == {DEV}
    assert {m.kind for m in rds} == {"rd"} and {m.src for m in rds} == {"system"}
    assert "cpu" in rds[0].metrics
    assert [m.seq for m in hbs] == sorted(m.seq for m in hbs)
    assert {t for t, _, _ in sub.snapshot()} <= {HB, RD_SYSTEM, STATUS}
    assert retained_status(subscribe, broker.port) == (b"online", True)


def test_agent_started_before_the_broker_connects_when_it_appears(
    make_broker, subscribe, start_agent
):
    """With no broker the agent keeps its schedule, counts drops, and publishes once one appears."""
    broker = make_broker(start=False)
    agent = start_agent(mqtt_toml(broker.port))
    time.sleep(1.5)
    assert agent.proc.poll() is None
    broker.start()
    appeared = time.monotonic()
    sub = subscribe(broker.port, HB)
    sub.wait_for(lambda ms: ms, timeout=5)
    assert time.monotonic() - appeared < 3.0
    first = json.loads(sub.on(HB)[0])
    assert first["seq"] >= 8  # heartbeats kept their 0.1 s schedule while there was no broker
    assert first["drop_by"]["not_connected"] >= 8
    assert "cannot connect to 127.0.0.1" in agent.log()
    assert retained_status(subscribe, broker.port) == (b"online", True)


def test_sigkill_lets_the_broker_publish_the_retained_offline_will(broker, subscribe, start_agent):
    """A killed agent's Last Will sets status to retained offline (at once: the kernel closes TCP)."""
    sub = subscribe(broker.port, STATUS)
    agent = start_agent(mqtt_toml(broker.port))
    sub.wait_for(lambda ms: b"online" in status_payloads(sub))
    agent.signal(signal.SIGKILL)
    killed = time.monotonic()
    sub.wait_for(lambda ms: status_payloads(sub)[-1] == b"offline", timeout=3 * 1.5)
    assert time.monotonic() - killed <= 3.0  # keepalive is 2 s
    assert retained_status(subscribe, broker.port) == (b"offline", True)


def test_a_vanished_agent_is_declared_offline_after_the_keepalive(broker, subscribe, start_agent):
    """A frozen agent (no TCP close, as on power loss) gets its Will once 1.5 keepalives pass."""
    sub = subscribe(broker.port, STATUS)
    agent = start_agent(mqtt_toml(broker.port, keepalive="1s"))
    sub.wait_for(lambda ms: b"online" in status_payloads(sub))
    agent.signal(signal.SIGSTOP)
    try:
        frozen = time.monotonic()
        sub.wait_for(lambda ms: status_payloads(sub)[-1] == b"offline", timeout=10)
        waited = time.monotonic() - frozen
        # never before 1.5 keepalives; mosquitto 2.0 looks at keepalives every few seconds
        assert 1.5 <= waited <= 1.5 + 6.0, waited
    finally:
        agent.signal(signal.SIGCONT)


def test_agent_reconnects_by_itself_after_a_broker_restart(broker, subscribe, start_agent):
    """After the broker restarts, the agent reconnects on its own and status is online again."""
    agent = start_agent(mqtt_toml(broker.port))
    sub = subscribe(broker.port, HB)
    sub.wait_for(lambda ms: ms)
    broker.stop()
    time.sleep(0.5)
    broker.start()
    sub = subscribe(broker.port, "#")
    sub.wait_for(lambda ms: len(sub.on(HB)) >= 3, timeout=5)
    assert retained_status(subscribe, broker.port) == (b"online", True)
    assert agent.proc.poll() is None
    assert "connection lost" in agent.log()


@pytest.mark.slow
def test_frozen_broker_drops_instead_of_buffering(broker, subscribe, start_agent):
    """A broker frozen 20 s: RSS grows < 1 MB, drops are counted, publishing resumes after it."""
    agent = start_agent(big_heartbeats_toml(broker.port))
    sub = subscribe(broker.port, HB)
    sub.wait_for(lambda ms: len(ms) >= 100, timeout=10)
    time.sleep(1.0)  # steady state
    before = rss_kib(agent.pid)
    broker.freeze()
    peak = before
    for _ in range(40):
        time.sleep(0.5)
        peak = max(peak, rss_kib(agent.pid))
    broker.thaw()
    resumed = time.monotonic()

    def recent_hb():
        ms = [json.loads(p) for p in sub.on(HB)]
        return [m for m in ms if m["ts"] > time.time() - 1.0 and m.get("drop_by")]

    fresh = sub.wait_for(lambda ms: recent_hb(), timeout=10)
    assert time.monotonic() - resumed < 10
    assert peak - before < 1024, f"RSS grew by {peak - before} KiB while the broker was frozen"
    drop_by = recent_hb()[-1]["drop_by"]
    print(f"RSS growth while frozen: {peak - before} KiB; drops: {drop_by}")
    assert drop_by.get("backpressure", 0) > 100, drop_by
    assert fresh
    agent.signal(signal.SIGTERM)
    assert agent.wait(5) == 0
    assert "backpressure" in agent.log()
    assert "malformed" not in broker.log().lower()


def big_heartbeats_toml(port):
    """~40 KB heartbeats 100 times a second: they fill the kernel's socket buffers in seconds."""
    tags = ", ".join(f't{i} = "{"x" * 128}"' for i in range(300))  # 128: wire's longest tag
    return mqtt_toml(port, interval="0.01s", agent_extra=f"tags = {{ {tags} }}",
                     system="enabled = false", keepalive="10s")  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
def test_short_stall_keeps_the_stream_intact(make_broker, tls_files, subscribe, start_agent, tls):
    """Messages cut by a full socket are finished first: after a stall the broker parses all."""
    broker = make_broker(tls=tls_files if tls else None)
    config = big_heartbeats_toml(broker.port)
    if tls:
        config += f'[outputs.mqtt.tls]\nca_file = "{tls_files["ca"]}"\n'
    agent = start_agent(config)
    sub = subscribe(broker.port, HB, ca=tls_files["ca"] if tls else None)
    sub.wait_for(lambda ms: len(ms) >= 50, timeout=10)
    broker.freeze()
    time.sleep(5)
    broker.thaw()
    thawed = time.time()
    sub.wait_for(lambda ms: any(json.loads(p)["ts"] > thawed + 0.5 for p in sub.on(HB)), timeout=10)
    for payload in sub.on(HB):
        wire.parse(payload, max_size=1 << 20)
    last = json.loads(sub.on(HB)[-1])
    assert last["drop_by"].get("backpressure", 0) > 0, last["drop_by"]
    assert "connection lost" not in agent.log()
    assert "malformed" not in broker.log().lower() and "protocol" not in broker.log().lower()


def test_tls_with_a_generated_ca(make_broker, tls_files, subscribe, start_agent):
    """With [tls] ca_file the agent publishes over TLS; a certificate from another CA is refused."""
    broker = make_broker(tls=tls_files)
    sub = subscribe(broker.port, HB, ca=tls_files["ca"])
    good = start_agent(
        mqtt_toml(broker.port, tls=f'[outputs.mqtt.tls]\nca_file = "{tls_files["ca"]}"')
    )
    sub.wait_for(lambda ms: len(ms) >= 2)
    assert "connected (MQTT 3.1.1, TLS)" in good.log()
    bad = start_agent(
        mqtt_toml(
            broker.port,
            device="other",
            tls=f'[outputs.mqtt.tls]\nca_file = "{tls_files["other_ca"]}"',
        )
    )
    wait_until(lambda: "cannot connect to 127.0.0.1" in bad.log(), timeout=5)
    assert "TLS: self-signed certificate in certificate chain" in bad.log()
    assert bad.proc.poll() is None
    assert not any(json.loads(p)["dev"] == "other" for p in sub.on(HB))


@pytest.mark.parametrize("source", ["password_file", "env", "systemd_credential"])
def test_username_and_password(make_broker, subscribe, start_agent, tmp_path, source):
    """The password comes from password_file, FLEETBEAT_MQTT_PASSWORD or $CREDENTIALS_DIRECTORY."""
    broker = make_broker(users={"pi": "s3cret-pw", "watcher": "w"})
    sub = subscribe(broker.port, HB, username="watcher", password="w")
    extra = 'username = "pi"'
    env = subprocess_env()
    env.pop("FLEETBEAT_MQTT_PASSWORD", None)
    if source == "password_file":
        (tmp_path / "pw").write_text("s3cret-pw\n")
        extra += f'\npassword_file = "{tmp_path / "pw"}"'
    elif source == "env":
        env["FLEETBEAT_MQTT_PASSWORD"] = "s3cret-pw"
    else:
        creds = tmp_path / "creds"
        creds.mkdir()
        (creds / "mqtt-password").write_text("s3cret-pw")
        env["CREDENTIALS_DIRECTORY"] = str(creds)
    agent = start_agent(mqtt_toml(broker.port, extra=extra), "--log-level", "debug", env=env)
    sub.wait_for(lambda ms: len(ms) >= 2)
    assert "s3cret-pw" not in agent.log()


def test_wrong_password_is_logged_and_sampling_goes_on(make_broker, udp_receiver, start_agent):
    """A refused login logs why once, and heartbeats to other outputs keep their schedule."""
    broker = make_broker(users={"pi": "right"})
    udp = f'[[outputs.udp]]\nhost = "127.0.0.1"\nport = {udp_receiver.port}'
    env = subprocess_env(FLEETBEAT_MQTT_PASSWORD="wrong")
    agent = start_agent(mqtt_toml(broker.port, extra='username = "pi"', outputs=udp), env=env)
    udp_receiver.wait_for(lambda ms: sum(m["k"] == "hb" for m in ms) >= 15, timeout=5)
    log = agent.log()
    assert "broker refused the connection: Not authorized" in log
    assert log.count("refused the connection") == 1  # rate-limited, not once per attempt
    assert "wrong" not in log
    assert agent.proc.poll() is None


def test_sigterm_publishes_offline_then_bye_and_disconnects_cleanly(broker, subscribe, start_agent):
    """On SIGTERM the subscriber sees retained offline, then the bye, then a clean disconnect."""
    sub = subscribe(broker.port)
    agent = start_agent(mqtt_toml(broker.port))
    sub.wait_for(lambda ms: len(sub.on(HB)) >= 2)
    agent.signal(signal.SIGTERM)
    assert agent.wait(3) == 0
    sub.wait_for(lambda ms: "bye" in kinds_on(sub, HB))
    order = [(t, p) for t, p, _ in sub.snapshot() if t == STATUS or b'"bye"' in p]
    assert order[-2:] == [(STATUS, b"offline"), (HB, order[-1][1])]
    assert json.loads(order[-1][1])["k"] == "bye"
    assert retained_status(subscribe, broker.port) == (b"offline", True)
    wait_until(lambda: f"Client fleetbeat-{DEV} disconnected." in broker.log(), timeout=2)


def test_dead_silent_or_unreachable_broker_never_delays_udp_heartbeats(udp_receiver, start_agent):
    """MQTT outputs to a closed port, a mute peer and an unreachable one leave UDP on schedule."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)  # the kernel completes the handshake; nothing ever answers CONNECT
    unreachable = socket.socket()
    unreachable.bind(("127.0.0.1", 0))
    unreachable.listen(0)
    filler = socket.create_connection(unreachable.getsockname())  # queue full: SYNs dropped
    try:
        more = (f'[[outputs.mqtt]]\nhost = "127.0.0.1"\nport = {silent.getsockname()[1]}\n'
                f'client_id = "mute"\nreconnect_min = "0.1s"\nreconnect_max = "0.2s"\n'
                f'[[outputs.mqtt]]\nhost = "127.0.0.1"\nport = {unreachable.getsockname()[1]}\n'
                f'client_id = "unreachable"\nconnect_timeout = "5s"\n'
                f'[[outputs.udp]]\nhost = "127.0.0.1"\nport = {udp_receiver.port}')  # fmt: skip
        agent = start_agent(mqtt_toml(free_port(socket.SOCK_STREAM), interval="0.05s",
                                      outputs=more))  # fmt: skip
        msgs = udp_receiver.wait_for(lambda ms: sum(m["k"] == "hb" for m in ms) >= 60, timeout=6)
        hb_ts = [m["ts"] for m in msgs if m["k"] == "hb"]
        gaps = [b - a for a, b in zip(hb_ts, hb_ts[1:])]
        assert max(gaps) < 0.5, max(gaps)  # 0.05 s cadence; waiting on a connect takes 2-5 s
        assert agent.proc.poll() is None
        agent.signal(signal.SIGTERM)  # while one output is still inside a blocking connect
        stopping = time.monotonic()
        assert agent.wait(3) == 0
        assert time.monotonic() - stopping < 2.5  # each close() is bounded (0.5 s)
        assert any(m["k"] == "bye" for m in udp_receiver.messages())
    finally:
        filler.close()
        unreachable.close()
        silent.close()


def test_mqtt5_with_message_expiry(broker, start_agent):
    """With protocol 5, readings carry the configured Message Expiry Interval."""
    import paho.mqtt.client as mqtt

    got = []
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    sub.on_message = lambda c, u, m: got.append(m)
    sub.connect("127.0.0.1", broker.port)
    sub.subscribe(HB, 0)
    sub.loop_start()
    try:
        start_agent(mqtt_toml(broker.port, extra='protocol = "5"\nmessage_expiry = "1m"'))
        wait_until(lambda: len(got) >= 2)
        expiry = got[-1].properties.MessageExpiryInterval
        assert 0 < expiry <= 60
        assert wire.parse(got[-1].payload).kind == "hb"
    finally:
        sub.disconnect()
        sub.loop_stop()


def test_close_without_a_bye_still_sets_offline_before_disconnecting(broker, subscribe):
    """close() publishes offline itself when no bye did, since a clean DISCONNECT skips the Will."""
    from fleetbeat.outputs.base import Identity, Outgoing
    from fleetbeat.outputs.mqtt_publish import MqttConfig, MqttOutput

    ident = Identity(dev=DEV, run="0" * 16, boot_time=0, version="0", tags={})
    out = MqttOutput(MqttConfig(port=broker.port), identity=ident, environ={})
    out.start()
    sub = subscribe(broker.port)
    sub.wait_for(lambda ms: b"online" in status_payloads(sub))
    out.send(b'{"k":"hb"}', Outgoing("hb", ts=0.0))
    out.close(timeout=1.0)
    sub.wait_for(lambda ms: status_payloads(sub)[-1] == b"offline")
    assert sub.on(HB) == [b'{"k":"hb"}']
    assert out.tally.sent == 1
    wait_until(lambda: f"Client fleetbeat-{DEV} disconnected." in broker.log(), timeout=2)
    out.send(b"late", Outgoing("hb", ts=0.0))  # after close: dropped, never raised
    assert out.tally.by_reason == {"not_connected": 1}


def test_mqtt5_broker_packet_limit_is_respected(make_broker, subscribe, start_agent):
    """Under an MQTT 5 broker's maximum packet size, heartbeats shed their extras, never vanish."""
    broker = make_broker(conf="max_packet_size 2000")
    sub = subscribe(broker.port)
    tags = "tags = { " + ", ".join(f't{i} = "{"x" * 120}"' for i in range(25)) + " }"
    agent = start_agent(mqtt_toml(broker.port, extra='protocol = "5"', agent_extra=tags))
    sub.wait_for(lambda ms: len(sub.on(RD_SYSTEM)) >= 5 and len(sub.on(HB)) >= 5)
    hbs = [json.loads(p) for p in sub.on(HB)]
    assert all("tags" not in hb and hb["m"] == {} for hb in hbs)  # 3000 bytes of tags left out
    assert all(len(p) < 2000 for p in sub.on(HB) + sub.on(RD_SYSTEM))
    agent.signal(signal.SIGTERM)
    assert agent.wait(3) == 0
    log = agent.log()
    assert "connection lost" not in log
