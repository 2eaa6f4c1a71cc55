"""`fleetbeat simulate` drives a real collector over UDP, MQTT and HTTP: devices appear, the
dead go down, the stopped go offline, loss shows; its transports drop rather than wait."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import threading
import urllib.request
from pathlib import Path
from typing import Any, Callable

import psutil
import pytest
from collector_helpers import Broker, CollectorProcess

from fleetbeat import cli, simulate, simulate_send, wire
from fleetbeat.collector.liveness import STATES
from fleetbeat.hmac_sha256 import HmacSha256
from helpers import ROOT, fleetbeat_cmd, free_port, subprocess_env, wait_until

EVERY_STATE = set(STATES)  # with "missing": the demo's expected_devices lists two silent ids


class Recorder:
    """A transport that keeps what it is handed, with the fake clock's time."""

    name = "recorder"

    def __init__(self, clock: list[float]) -> None:
        self.clock = clock
        self.sent: list[tuple[float, str, bytes]] = []

    def start(self) -> None:
        pass

    def ready(self) -> bool:
        return True

    def send(self, dev: str, payload: bytes) -> None:
        self.sent.append((self.clock[0], dev, payload))

    def snapshot(self) -> dict[str, Any]:
        return {"sent": len(self.sent), "dropped": 0, "by_reason": {}}

    def close(self) -> None:
        pass


def run_fake(fleet: simulate.Fleet, seconds: float) -> Recorder:
    """Run `fleet` for `seconds` of a fake clock; what it sent."""
    clock = [0.0]

    def sleep(s: float) -> None:
        clock[0] += s

    rec = Recorder(clock)
    fleet.run(rec, seconds=seconds, sleep=sleep, monotonic=lambda: clock[0])
    return rec


def test_every_device_is_scheduled_once_per_interval() -> None:
    """Over three intervals each device sends three heartbeats, in offset order, no burst."""
    fleet = simulate.Fleet(200, interval=1.0, clock=lambda: 1_700_000_000.0)
    sent = [(t, payload) for t, _, payload in run_fake(fleet, 3.0).sent]
    assert len(sent) == 600
    times = [t for t, _ in sent]
    assert times == sorted(times)
    per_device: dict[str, list[int]] = {}
    for _, payload in sent:
        msg = wire.parse(payload)
        per_device.setdefault(msg.dev, []).append(msg.seq)
    assert len(per_device) == 200 and all(s == [0, 1, 2] for s in per_device.values())


def test_signed_devices_get_keys_the_collector_can_use(tmp_path: Path) -> None:
    """--key-dir creates one key file per device and every heartbeat verifies with it."""
    from fleetbeat import keys

    fleet = simulate.Fleet(3, interval=1.0, key_dir=str(tmp_path / "keys"))
    for d in fleet.devices:
        body, tag = wire.split_signed(fleet.heartbeat(d, 1.0))
        mac = HmacSha256(keys.read_key_file(str(tmp_path / "keys" / d.dev)))
        assert tag is not None and wire.tag_matches(body, tag, mac)


@pytest.mark.slow
def test_a_simulated_fleet_against_a_real_collector(
    start_collector: Callable[..., CollectorProcess],
) -> None:
    """20 devices over 3 sites appear; 2 dead ones go down; each lossy device's loss as the
    collector measures it matches what the simulator withheld, within 1 point, over 2,000
    heartbeats."""
    col = start_collector(extra="down_after = 3\nlate_after = 1.5")
    fleet = simulate.Fleet(20, interval=0.01, loss=0.1, dead=2, sites=("a", "b", "c"), seed=7)
    udp = simulate_send.UdpTransport("127.0.0.1", col.udp_port)
    runner = threading.Thread(target=fleet.run, args=(udp,), kwargs={"seconds": 24.0})
    runner.start()
    wait_until(lambda: len(col.api("/api/devices")["devices"]) == 20, timeout=10)
    runner.join(60)
    devices = {d["id"]: d for d in col.api("/api/devices")["devices"]}
    dead = [d.dev for d in fleet.devices if d.dead_at != float("inf")]
    assert len(dead) == 2
    wait_until(lambda: all(col.api(f"/api/devices/{x}")["device"]["state"] == "down" for x in dead))
    assert {d["tags"]["site"] for d in devices.values()} == {"a", "b", "c"}
    checked = 0
    for d in fleet.devices:
        if d.dev in dead or d.seq < 2000:
            continue
        got = devices[d.dev]
        assert got["run_expected"] >= 1990
        simulated = 100.0 * d.withheld / d.seq
        assert abs(got["loss_pct"] - simulated) <= 1.0, (d.dev, got["loss_pct"], simulated)
        checked += 1
    assert checked >= 15
    assert any(devices[d.dev]["loss_pct"] > 5 for d in fleet.devices if d.dev not in dead)


def test_offline_devices_say_bye_and_rebooting_ones_come_back_as_a_new_run() -> None:
    """--offline: heartbeats, one bye, then nothing; --reboot: a bye, 1-3 silent intervals,
    then heartbeats of a new run from seq 0 with a new boot time."""
    fleet = simulate.Fleet(2, interval=1.0, reboot=1, offline=1, seed=3)
    rebooting = next(d for d in fleet.devices if d.next_reboot != simulate.NEVER)
    stopping = next(d for d in fleet.devices if d.offline_at != simulate.NEVER)
    per_device: dict[str, list[Any]] = {}
    for _, dev, payload in run_fake(fleet, 70.0).sent:
        per_device.setdefault(dev, []).append(wire.parse(payload))
    said = [m.kind for m in per_device[stopping.dev]]
    assert said == ["hb"] * int(stopping.offline_at) + ["bye"]
    msgs = per_device[rebooting.dev]
    byes = [i for i, m in enumerate(msgs) if m.kind == "bye"]
    assert byes, "no reboot in 70 intervals"
    before, after = msgs[byes[0]], msgs[byes[0] + 1]
    assert after.kind == "hb" and after.run != before.run and after.seq == 0
    assert (after.ts - before.ts) >= 2.0  # at least one interval silent while it boots
    assert after.bt != before.bt


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (
            ["--transport", "http", "--to", "127.0.0.1:9748"],
            "--to: --transport http takes the ingest URL",
        ),
        (["--to", "http://127.0.0.1:9748/ingest"], "is a URL, which only --transport http takes"),
        (["--transport", "mqtt", "--to", "broker.lan"], "--to: expected HOST:PORT"),
        (["--to", "127.0.0.1:70000"], "--to: port 70000 is not in 1-65535"),
        (
            ["--transport", "http", "--to", "ftp://h/ingest"],
            "--to: expected an http:// or https:// URL",
        ),
        (["--transport", "http", "--to", "http://u:pw@h/ingest"], "no credentials in the URL"),
        (["--connections", "3"], "--connections is for --transport http, not udp"),
        (["--transport", "http", "--connections", "100"], "--connections: 1 to 16"),
        (["--topic-prefix", "fb"], "--topic-prefix is for --transport mqtt, not udp"),
        (["--transport", "mqtt", "--topic-prefix", "a/#"], "--topic-prefix: topic levels"),
        (["--devices", "0"], "--devices: 1 to 1,000,000"),
        (["--devices", "10000000000"], "--devices: 1 to 1,000,000"),
        (["--interval", "nan"], "--interval: 0.01 to 86400"),
        (["--loss", "inf"], "--loss: a share from 0 to 1"),
        (["--seconds", "nan"], "--seconds: more than 0"),
        (["--dead", "-1"], "--dead: cannot be negative"),
        (["--devices", "3", "--dead", "2", "--offline", "2"], "is more than --devices"),
        (["--tags", "site="], "--tags: expected KEY=V1,V2"),
    ],
)
def test_bad_command_lines_are_usage_errors_naming_the_option(
    argv: list[str], complaint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad option, or options that do not go together, exit 2 with a message naming the
    option, before anything is sent."""
    code = cli.main(["simulate", "--seconds", "1", *argv] if "--seconds" not in argv else
                    ["simulate", *argv])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and complaint in err, err
    assert "simulating" not in capsys.readouterr().out


def test_a_key_dir_that_cannot_be_made_is_an_error_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--key-dir under a regular file: exit 1, the message names --key-dir, nothing is sent."""
    (tmp_path / "file").write_text("")
    bad = str(tmp_path / "file" / "keys")
    assert cli.main(["simulate", "--devices", "2", "--seconds", "1", "--key-dir", bad]) == 1
    captured = capsys.readouterr()
    assert f"--key-dir {bad}: " in captured.err and "simulating" not in captured.out


def test_mqtt_drops_while_there_is_no_broker_and_never_waits() -> None:
    """With no broker, every message is dropped as not_connected at once; nothing is kept."""
    mqtt = simulate_send.MqttTransport("127.0.0.1", free_port(socket.SOCK_STREAM))
    mqtt.start()
    try:
        for i in range(1000):
            mqtt.send(f"d-{i}", b'{"v":1}')
        assert mqtt.snapshot() == {"sent": 0, "dropped": 1000,
                                   "by_reason": {"not_connected": 1000}}  # fmt: skip
    finally:
        mqtt.close()


def test_http_keeps_one_request_in_flight_per_connection_and_drops_the_rest() -> None:
    """Against a server that accepts and never answers, 2 connections carry 2 requests;
    the other messages are dropped as busy, at once."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    port = server.getsockname()[1]
    http = simulate_send.HttpTransport(f"http://127.0.0.1:{port}/ingest", connections=2,
                                       timeout=30.0)  # fmt: skip
    http.start()
    peers = [server.accept()[0] for _ in range(2)]
    try:
        wait_until(http.ready)
        for i in range(50):
            http.send(f"d-{i}", b'{"v":1,"k":"hb"}')
        snap = http.snapshot()
        assert snap == {"sent": 0, "dropped": 48, "by_reason": {"busy": 48}}
        for peer in peers:  # each connection wrote one whole request and nothing more
            peer.settimeout(2)
            got = b""
            while b'"hb"}' not in got:
                got += peer.recv(4096)
            assert got.count(b"POST /ingest ") == 1
    finally:
        http.close()
        for peer in peers:
            peer.close()
        server.close()


def _sim(transport: str, to: str, key_dir: Path, *extra: str) -> subprocess.Popen[str]:
    """`fleetbeat simulate` as a real subprocess: 12 signed devices, 1 dead, 1 stopping."""
    return subprocess.Popen(
        fleetbeat_cmd("simulate", "--transport", transport, "--to", to, "--devices", "12",
                      "--interval", "0.2", "--dead", "1", "--offline", "1", "--seed", "5",
                      "--key-dir", str(key_dir), "--tags", "site=a,b", *extra),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=subprocess_env(),
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["mqtt", "http"])
def test_signed_simulated_devices_over_mqtt_and_http_reach_a_real_collector(
    transport: str, tmp_path: Path, start_broker: Callable[..., Broker],
    start_collector: Callable[..., CollectorProcess],
) -> None:  # fmt: skip
    """`fleetbeat simulate --transport mqtt|http --key-dir` against a real collector that
    requires signatures (on a real mosquitto, or its HTTP ingest): all 12 devices appear
    with that transport, the dead one goes down, the stopped one offline, the rest stay
    up, and the simulator reports what it sent with nothing dropped."""
    key_dir = tmp_path / "keys"
    simulate.Fleet(12, interval=0.2, key_dir=str(key_dir))  # the same ids: sim-01..sim-12
    auth = f'[collector.auth]\nkeys_dir = "{key_dir}"\nrequire_signed = true\n'
    if transport == "mqtt":
        broker = start_broker()
        col = start_collector(
            extra=f"down_after = 3\n{auth}[collector.mqtt]\nport = {broker.port}\n"
        )
        wait_until(lambda: "MQTT subscriptions confirmed" in col.log(), timeout=10)
        to = f"127.0.0.1:{broker.port}"
    else:
        ingest = free_port(socket.SOCK_STREAM)
        col = start_collector(
            extra=f'down_after = 3\nhttp_ingest_listen = "127.0.0.1:{ingest}"\n{auth}'
        )
        to = f"http://127.0.0.1:{ingest}/ingest"
    sim = _sim(transport, to, key_dir, "--seconds", "8")
    try:

        def settled() -> dict[str, Any]:
            devices = {d["id"]: d for d in col.api("/api/devices")["devices"]}
            states = sorted(d["state"] for d in devices.values())
            return devices if states == ["down", "offline"] + ["up"] * 10 else {}

        devices = wait_until(settled, timeout=20, every=0.1)
        assert {d["transport"] for d in devices.values()} == {transport}
        assert {d["tags"]["site"] for d in devices.values()} == {"a", "b"}
        out, _ = sim.communicate(timeout=20)
    finally:
        if sim.poll() is None:
            sim.kill()
            sim.communicate()
    assert sim.returncode == 0, out
    assert f"to {to if transport == 'http' else 'mqtt://' + to}" in out
    summary = out.strip().splitlines()[-1]
    # MQTT on an idle loopback connection drops nothing; HTTP may drop as busy when three
    # messages fall within one request's round trip (never more than one in flight each)
    dropped = r", dropped 0," if transport == "mqtt" else r", dropped (0|[\d,]+ \(busy [\d,]+\)),"
    assert summary.startswith("sent ") and re.search(dropped, summary), out
    assert "unsigned" not in col.log() and "bad_signature" not in col.log()


def _default_sigint() -> None:
    """In the child: SIGINT as a terminal's Ctrl-C finds it, even if our parent ignores it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
def test_scripts_run_demo_shows_every_state_and_ctrl_c_stops_it_all(tmp_path: Path) -> None:
    """`scripts/run --demo` as a real subprocess prints its dashboard URL; within two
    minutes its collector's /api/devices has >= 50 devices and has shown every state (up,
    late, down, offline, and missing where the collector has it), with at least one down;
    SIGINT then ends the script, its collector, agent and simulator (no process left) and
    removes its temporary directory."""
    http, udp = free_port(socket.SOCK_STREAM), free_port()
    log_path = tmp_path / "demo.log"
    env = subprocess_env(FLEETBEAT_DEMO_HTTP=f"127.0.0.1:{http}", FLEETBEAT_DEMO_UDP=str(udp),
                         TMPDIR=str(tmp_path))  # fmt: skip
    with open(log_path, "w") as log:
        proc = subprocess.Popen(["bash", str(ROOT / "scripts" / "run"), "--demo"], stdout=log,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                preexec_fn=_default_sigint)  # noqa: PLW1509 - only signal() runs there  # fmt: skip
    children: list[psutil.Process] = []
    try:
        url = f"http://127.0.0.1:{http}/"
        # the first run may install the package into the venv (scripts/setup.sh)
        wait_until(lambda: f"Dashboard: {url}" in log_path.read_text() or proc.poll() is not None,
                   timeout=300, every=0.2)  # fmt: skip
        assert proc.poll() is None, log_path.read_text()
        children = psutil.Process(proc.pid).children(recursive=True)
        commands = sorted(" ".join(c.cmdline()[2:3]) for c in children)
        assert commands == ["agent", "collector", "simulate"], commands
        seen: set[str] = set()

        def every_state() -> bool:
            with urllib.request.urlopen(url + "api/devices", timeout=5) as resp:  # noqa: S310
                devices = json.loads(resp.read())["devices"]
            states = {d["state"] for d in devices}
            seen.update(states)
            return len(devices) >= 51 and "down" in states and seen >= EVERY_STATE

        wait_until(every_state, timeout=120, every=0.25)
        os.kill(proc.pid, signal.SIGINT)
        assert proc.wait(30) == 130, log_path.read_text()
        wait_until(lambda: not any(c.is_running() for c in children), timeout=5)
        assert list(tmp_path.glob("fleetbeat-demo.*")) == []
        out = log_path.read_text()
        assert "sent " in out and "withheld" in out  # the simulator stopped cleanly, saying so
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        for c in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                c.kill()
