"""An agent with a key signs every JSON message it sends; check-config says so, never the key."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from fleetbeat import keys, wire
from fleetbeat.hmac_sha256 import HmacSha256
from helpers import AgentProcess, UdpReceiver, run_cli, subprocess_env


def _config(port: int, key_file: str, extra: str = "") -> str:
    return f"""
[agent]
device_id = "signed-dev"
heartbeat_interval = "0.05s"
jitter = 0
key_file = "{key_file}"

[sensors.system]
interval = "0.05s"

[[outputs.udp]]
host = "127.0.0.1"
port = {port}
max_datagram = 400
{extra}
"""


def _key(tmp_path: Path) -> tuple[Path, bytes]:
    path = tmp_path / "key"
    hexkey = keys.new_key()
    keys.write_key_file(str(path), hexkey)
    return path, bytes.fromhex(hexkey)


def test_every_message_is_signed_within_max_datagram(
    tmp_path: Path, udp_receiver: UdpReceiver, start_agent: Callable[..., AgentProcess]
) -> None:
    """Heartbeats, readings (split to fit) and the bye all verify with the device's key,
    and the signature never pushes a datagram past max_datagram."""
    path, key = _key(tmp_path)
    agent = start_agent(_config(udp_receiver.port, str(path)))
    udp_receiver.wait_for(lambda ms: {"hb", "rd"} <= {m["k"] for m in ms}, timeout=10)
    agent.signal(15)
    assert agent.wait(5) == 0
    udp_receiver.wait_for(lambda ms: any(m["k"] == "bye" for m in ms))
    mac = HmacSha256(key)
    for data in udp_receiver.datagrams:
        assert len(data) <= 400
        body, tag = wire.split_signed(data)
        assert tag is not None, data
        assert wire.tag_matches(body, tag, mac)
        wire.parse(body)  # and what was signed is valid wire v1
    assert "signing: on (key from key_file" in agent.log()


def test_the_systemd_credential_is_the_key_when_no_key_file_is_set(
    tmp_path: Path, udp_receiver: UdpReceiver, start_agent: Callable[..., AgentProcess]
) -> None:
    """With key_file empty, $CREDENTIALS_DIRECTORY/fleetbeat-key signs (LoadCredential=)."""
    creds = tmp_path / "creds"
    creds.mkdir()
    hexkey = keys.new_key()
    keys.write_key_file(str(creds / keys.CREDENTIAL), hexkey)
    agent = start_agent(
        _config(udp_receiver.port, ""), env=subprocess_env(CREDENTIALS_DIRECTORY=str(creds))
    )
    udp_receiver.wait_for(lambda ms: len(ms) >= 3, timeout=10)
    body, tag = wire.split_signed(udp_receiver.datagrams[0])
    assert tag is not None and wire.tag_matches(body, tag, HmacSha256(bytes.fromhex(hexkey)))
    assert "systemd credential fleetbeat-key" in agent.log()


def test_check_config_says_signing_is_on_and_never_prints_the_key(tmp_path: Path) -> None:
    """check-config names where the key comes from; the key's hex appears nowhere."""
    path, key = _key(tmp_path)
    cfg = tmp_path / "agent.toml"
    cfg.write_text(_config(9, str(path)))
    proc = run_cli("check-config", str(cfg))
    assert proc.returncode == 0, proc.stderr
    assert f"# signing: on (key from key_file {path})" in proc.stdout
    assert key.hex() not in proc.stdout + proc.stderr


def test_a_key_file_that_is_not_a_key_is_a_config_error(tmp_path: Path) -> None:
    """A broken or missing key file stops the agent before it starts, naming agent.key_file."""
    bad = tmp_path / "bad"
    bad.write_text("not a key\n")
    for path in (bad, tmp_path / "missing"):
        cfg = tmp_path / "agent.toml"
        cfg.write_text(_config(9, str(path)))
        proc = run_cli("check-config", str(cfg))
        assert proc.returncode == 78
        assert "agent.key_file" in proc.stderr and str(path) in proc.stderr


def test_without_a_key_messages_go_unsigned(
    udp_receiver: UdpReceiver, start_agent: Callable[..., AgentProcess]
) -> None:
    """No key_file and no credential: plain wire v1, and the log says signing is off."""
    env = {k: v for k, v in subprocess_env().items() if k != "CREDENTIALS_DIRECTORY"}
    agent = start_agent(_config(udp_receiver.port, ""), env=env)
    udp_receiver.wait_for(lambda ms: len(ms) >= 2, timeout=10)
    assert all(wire.split_signed(d)[1] is None for d in udp_receiver.datagrams)
    assert "signing: off" in agent.log()


def test_an_empty_credential_means_unsigned(
    tmp_path: Path, udp_receiver: UdpReceiver, start_agent: Callable[..., AgentProcess]
) -> None:
    """The unit always loads fleetbeat-key; install.sh's empty file means: do not sign."""
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / keys.CREDENTIAL).write_bytes(b"")
    agent = start_agent(
        _config(udp_receiver.port, ""), env=subprocess_env(CREDENTIALS_DIRECTORY=str(creds))
    )
    udp_receiver.wait_for(lambda ms: len(ms) >= 2, timeout=10)
    assert all(wire.split_signed(d)[1] is None for d in udp_receiver.datagrams)
    assert "signing: off" in agent.log()
