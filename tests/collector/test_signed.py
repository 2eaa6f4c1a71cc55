"""Signed heartbeats end to end: real agents and collectors, a relay that captures and replays.

Nobody without the device's key can say anything in its name: unsigned and wrongly signed
messages are rejected and counted, a captured datagram replayed (same run, an old run,
after a collector restart) is rejected as `replay`, and a forged bye changes nothing.
"""

from __future__ import annotations

import json
import signal
import socket
import threading
from pathlib import Path
from typing import Any, Callable

import pytest
from collector_helpers import CollectorProcess, Sender

from fleetbeat import keys, wire
from fleetbeat.hmac_sha256 import HmacSha256
from helpers import AgentProcess, run_cli, wait_until


class Relay:
    """Forwards every datagram from the agent to the collector and keeps a copy."""

    def __init__(self, to_port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.dest = ("127.0.0.1", to_port)
        self.captured: list[bytes] = []
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop:
            try:
                data = self.sock.recv(65535)
            except socket.timeout:
                continue
            self.captured.append(data)
            self.out.sendto(data, self.dest)

    def replay(self, data: bytes) -> None:
        self.out.sendto(data, self.dest)

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        self.sock.close()
        self.out.close()


def _agent_toml(port: int, key_file: str, device: str = "pi-1") -> str:
    return f"""
[agent]
device_id = "{device}"
heartbeat_interval = "0.1s"
jitter = 0
key_file = "{key_file}"
[sensors.system]
enabled = false
[[outputs.udp]]
host = "127.0.0.1"
port = {port}
"""


@pytest.fixture
def keydir(tmp_path: Path) -> Path:
    d = tmp_path / "keys"
    d.mkdir()
    return d


def _newkey(path: Path) -> bytes:
    hexkey = keys.new_key()
    keys.write_key_file(str(path), hexkey)
    return bytes.fromhex(hexkey)


def _device(col: CollectorProcess, dev: str) -> Any:
    found = [d for d in col.api("/api/devices")["devices"] if d["id"] == dev]
    return found[0] if found else None


def _rejected(col: CollectorProcess) -> dict[str, int]:
    return col.api("/api/stats")["stats"]["rejected"]  # type: ignore[no-any-return]


def _auth(keydir: Path, extra: str = "") -> str:
    return f'[collector.auth]\nkeys_dir = "{keydir}"\n{extra}'


def test_a_signed_device_is_up_and_forgeries_in_its_name_are_counted(
    tmp_path: Path, keydir: Path, start_collector: Callable[..., CollectorProcess],
    start_agent: Callable[..., AgentProcess], make_sender: Callable[..., Sender],
) -> None:  # fmt: skip
    """With pi-1's key in keys_dir, its agent is up; an unsigned heartbeat, one signed with
    another key, and an unsigned bye in its name are rejected and change nothing."""
    key = _newkey(keydir / "pi-1")
    (tmp_path / "agent-key").write_text(key.hex() + "\n")
    col = start_collector(extra=_auth(keydir))
    start_agent(_agent_toml(col.udp_port, str(tmp_path / "agent-key")))
    wait_until(lambda: (_device(col, "pi-1") or {}).get("state") == "up", timeout=10)
    run = _device(col, "pi-1")["run"]
    forger = make_sender(col.udp_port, dev="pi-1", run=run)
    forger.send(10**6)  # unsigned
    forger.send_raw(wire.sign(wire.dumps(forger.message(10**6 + 1)), HmacSha256(b"x" * 32)))
    forger.send(10**6 + 2, kind="bye")  # unsigned bye
    wait_until(lambda: _rejected(col).get("unsigned", 0) >= 2)
    wait_until(lambda: _rejected(col).get("bad_signature", 0) >= 1)
    assert _device(col, "pi-1")["state"] == "up"


def test_replays_are_rejected_also_after_a_collector_restart(
    tmp_path: Path, keydir: Path, start_collector: Callable[..., CollectorProcess],
    start_agent: Callable[..., AgentProcess],
) -> None:  # fmt: skip
    """A captured signed heartbeat sent again (same run) is a replay, before and after the
    collector restarts; so is one from the agent's previous run once it restarted."""
    key = _newkey(keydir / "pi-1")
    (tmp_path / "agent-key").write_text(key.hex() + "\n")
    state = tmp_path / "state"
    col = start_collector(extra=_auth(keydir), state_dir=state)
    relay = Relay(col.udp_port)
    try:
        agent = start_agent(_agent_toml(relay.port, str(tmp_path / "agent-key")))
        wait_until(lambda: len(relay.captured) >= 5, timeout=10)
        old = relay.captured[2]
        relay.replay(old)
        wait_until(lambda: _rejected(col).get("replay", 0) == 1)
        # the agent restarts: a new run; the old run's datagrams are replays now
        agent.signal(signal.SIGKILL)
        agent.wait()
        agent2 = start_agent(_agent_toml(relay.port, str(tmp_path / "agent-key")))
        first_run = json.loads(old)["run"]
        wait_until(lambda: (_device(col, "pi-1") or {}).get("run") not in (None, first_run),
                   timeout=10)  # fmt: skip
        relay.replay(old)
        relay.replay(relay.captured[3])
        wait_until(lambda: _rejected(col).get("replay", 0) == 3)
        assert _device(col, "pi-1")["run"] != first_run
        # and after a collector restart, with what it stored
        agent2.signal(signal.SIGSTOP)
        wait_until(lambda: _device(col, "pi-1")["run_expected"]
                   == json.loads(relay.captured[-1])["seq"] + 1)  # fmt: skip
        current = relay.captured[-1]
        col.terminate()
        col2 = start_collector(extra=_auth(keydir), state_dir=state, udp_port=col.udp_port,
                               name="collector2")  # fmt: skip
        relay.replay(current)
        relay.replay(old)
        wait_until(lambda: _rejected(col2).get("replay", 0) == 2)
        agent2.signal(signal.SIGCONT)
    finally:
        relay.close()


def test_a_fleet_key_signs_for_every_device_and_a_device_key_wins(
    tmp_path: Path, keydir: Path, start_collector: Callable[..., CollectorProcess],
    start_agent: Callable[..., AgentProcess],
) -> None:  # fmt: skip
    """pi-2 signs with the fleet key; pi-1 has its own key, so the fleet key is not enough
    for it."""
    _newkey(tmp_path / "fleet.key")
    _newkey(keydir / "pi-1")
    col = start_collector(extra=_auth(keydir, f'fleet_key_file = "{tmp_path / "fleet.key"}"'))
    start_agent(_agent_toml(col.udp_port, str(tmp_path / "fleet.key"), device="pi-2"))
    start_agent(_agent_toml(col.udp_port, str(tmp_path / "fleet.key"), device="pi-1"))
    wait_until(lambda: (_device(col, "pi-2") or {}).get("state") == "up", timeout=10)
    wait_until(lambda: _rejected(col).get("bad_signature", 0) >= 2)
    assert _device(col, "pi-1") is None


def test_keygen_then_sighup_admits_a_new_device_without_a_restart(
    tmp_path: Path, keydir: Path, start_collector: Callable[..., CollectorProcess],
    start_agent: Callable[..., AgentProcess],
) -> None:  # fmt: skip
    """With require_signed, a device without a key is refused (unknown_key) until keygen's
    file is put in keys_dir and the collector reloads; then it is up."""
    _newkey(keydir / "pi-1")
    col = start_collector(extra=_auth(keydir, "require_signed = true"))
    made = run_cli("keygen", "--device", "pi-9", "--out", str(tmp_path / "pi-9"))
    assert made.returncode == 0 and "keys_dir" in made.stdout, made.stderr
    start_agent(_agent_toml(col.udp_port, str(tmp_path / "pi-9"), device="pi-9"))
    wait_until(lambda: _rejected(col).get("unknown_key", 0) >= 2, timeout=10)
    (keydir / "pi-9").write_bytes((tmp_path / "pi-9").read_bytes())
    col.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: (_device(col, "pi-9") or {}).get("state") == "up", timeout=10)


def test_require_signed_rejects_every_unsigned_message(
    keydir: Path, start_collector: Callable[..., CollectorProcess],
    make_sender: Callable[..., Sender],
) -> None:  # fmt: skip
    """require_signed = true: an unsigned heartbeat from a device with no key is `unsigned`."""
    _newkey(keydir / "pi-1")
    col = start_collector(extra=_auth(keydir, "require_signed = true"))
    s = make_sender(col.udp_port, dev="stranger")
    s.send(0)
    s.send(1)
    wait_until(lambda: _rejected(col).get("unsigned", 0) == 2)
    assert _device(col, "stranger") is None


def test_signed_over_mqtt_and_a_forgery_through_the_broker_is_refused(
    tmp_path: Path, start_collector: Callable[..., CollectorProcess],
    start_agent: Callable[..., AgentProcess], start_broker: Callable[..., Any],
    make_sender: Callable[..., Sender],
) -> None:  # fmt: skip
    """An agent signing over MQTT is up; an unsigned heartbeat published in its name on its
    own topic (an anonymous broker: no ACL) is rejected as unsigned."""
    import paho.mqtt.client as mqtt

    broker = start_broker()
    keydir = tmp_path / "keys"
    keydir.mkdir()
    key = _newkey(keydir / "pi-m")
    (tmp_path / "agent-key").write_text(key.hex() + "\n")
    col = start_collector(extra=f"{_auth(keydir)}\n[collector.mqtt]\nport = {broker.port}\n")
    start_agent(f"""
[agent]
device_id = "pi-m"
heartbeat_interval = "0.1s"
jitter = 0
key_file = "{tmp_path / "agent-key"}"
[sensors.system]
enabled = false
[[outputs.mqtt]]
host = "127.0.0.1"
port = {broker.port}
""")
    wait_until(lambda: (_device(col, "pi-m") or {}).get("transport") == "mqtt", timeout=15)
    assert _device(col, "pi-m")["state"] == "up"
    forger = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    forger.connect("127.0.0.1", broker.port)
    forger.loop_start()
    try:
        msg = make_sender(col.udp_port, dev="pi-m", run=_device(col, "pi-m")["run"]).message(10**6)
        forger.publish("fleetbeat/pi-m/hb", wire.dumps(msg), qos=0).wait_for_publish(5)
        wait_until(lambda: _rejected(col).get("unsigned", 0) >= 1)
    finally:
        forger.loop_stop()
        forger.disconnect()
