"""Agent configuration: defaults, durations, and errors that name the key and stop everything."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from fleetbeat.agent.config import load_agent_config, parse_agent_config
from fleetbeat.config.loader import parse_toml
from fleetbeat.config.schema import parse_duration
from fleetbeat.errors import ConfigError
from helpers import ROOT, UdpReceiver, run_cli


def test_no_file_gives_embedded_defaults():
    """Without a file: heartbeats and system readings every 10 s, JSON over UDP to 127.0.0.1:9746."""
    cfg = load_agent_config(None)
    assert cfg.agent.heartbeat_interval == 10.0
    [system] = cfg.sensor_configs("system")
    assert system.enabled and system.interval == 10.0
    [out] = cfg.outputs
    assert (out.type, out.config.host, out.config.port, out.format) == (
        "udp",
        "127.0.0.1",
        9746,
        "json",
    )
    assert re.fullmatch(r"[A-Za-z0-9._-]{1,64}", cfg.agent.device_id)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("10s", 10.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1d", 86400.0),
        ("0.05s", 0.05),
        (" 2 s ", 2.0),
        (3, 3.0),
        (0.5, 0.5),
        ("10", 10.0),
        ("ten", None),
        ("10x", None),
        ("-1s", None),
        (True, None),
        ([1], None),
    ],
)
def test_durations(text, seconds):
    """Durations are "250ms"/"10s"/"5m"/"1h"/"1d" or numbers of seconds, fractions allowed."""
    assert parse_duration(text) == seconds


def test_examples_agent_toml_parses_with_every_key():
    """examples/agent.toml is valid, safe to install on every device, and shows every key."""
    path = ROOT / "examples" / "agent.toml"
    cfg = load_agent_config(str(path))
    assert cfg.agent.device_id == load_agent_config(None).agent.device_id  # the hostname
    assert [c.type for c in cfg.sensors] == ["system"]
    assert [(c.type, c.config.host) for c in cfg.outputs] == [("udp", "127.0.0.1")]
    text = path.read_text()
    from fleetbeat.agent.config import AgentSection, Encoding
    from fleetbeat.config.frozen import fields
    from fleetbeat.outputs.udp import UdpConfig
    from fleetbeat.sensors.system import SystemConfig

    for cls in (AgentSection, SystemConfig, UdpConfig, Encoding):
        for f in fields(cls):
            assert re.search(rf"^#? ?{f.name} = ", text, re.M), f"{cls.__name__}.{f.name}"


# (TOML text, fragments every one of which must appear in the error output)
BAD_CONFIGS = [
    ("[agent\n", ["invalid TOML"]),
    ('[agent]\nheartbeat_intervall = "10s"\n', ['agent.heartbeat_intervall: unknown key; did you mean "heartbeat_interval"?']),
    ("[agent]\nheartbeat_interval = 0\n", ["agent.heartbeat_interval: expected a duration"]),
    ('[agent]\nheartbeat_interval = "-5s"\n', ['agent.heartbeat_interval: expected a duration', 'got "-5s"']),
    ('[agent]\nheartbeat_interval = "fast"\n', ['agent.heartbeat_interval: expected a duration such as "250ms"', 'got "fast"']),
    ('[agent]\ndevice_id = "has space"\n', ['agent.device_id: expected 1-64 characters', 'got "has space"']),
    ("[agent]\ntags = [1]\n", ["agent.tags: expected a table, got an array"]),
    ('[agent]\nheartbeat_metrics = ["cpu", "cpux"]\n', ['agent.heartbeat_metrics[1]: unknown system metric "cpux"; did you mean "cpu"?']),
    ("[sensors.system]\ninterval = 0\n", ["sensors.system.interval: expected a duration"]),
    ('[sensors.system]\ninclude = ["cpu", "gpu"]\n', ['sensors.system.include[1]: expected one of "cpu"', 'got "gpu"']),
    ('[sensors.sistem]\ninterval = "1s"\n', ['sensors.sistem: unknown sensor type; did you mean "system"?; valid types: serial, system']),
    ("[sensors.system.sampling]\nrate = 0\n", ["sensors.system.sampling.rate: expected a number above 0"]),
    ("[sensors.system.sampling]\nrate = 1.5\n", ["sensors.system.sampling.rate: expected a number above 0", "at most 1"]),
    ('[sensors.system.sampling]\nreduce = "mean"\n', ["sensors.system.sampling.every: reduce and every go together"]),
    ('[sensors.system.sampling]\nreduce = "median"\nevery = "10s"\n', ['sensors.system.sampling.reduce: expected one of "mean"', 'got "median"']),
    ("[sensors.system.sampling]\ndeadband = 1\ndeadband_pct = 2\n", ["set deadband or deadband_pct, not both"]),
    ('[[outputs.udpp]]\nhost = "x"\n', ['outputs.udpp: unknown output type; did you mean "udp"?']),
    ('[[outputs.udp]]\nport = "9746x"\n', ['outputs.udp[0].port: expected an integer from 1 to 65535, got "9746x"']),
    ("[[outputs.udp]]\nport = 70000\n", ["outputs.udp[0].port: expected an integer from 1 to 65535, got 70000"]),
    ('[[outputs.udp]]\nformat = "jsn"\n', ['outputs.udp[0].format: expected one of "json"', 'did you mean "json"?']),
    ("[[outputs.udp]]\nmax_datagram = 10\n", ["outputs.udp[0].max_datagram: expected an integer from 256 to 65507"]),
    ('[[outputs.udp]]\nhots = "a"\n', ['outputs.udp[0].hots: unknown key; did you mean "host"?']),
    ("outputs = []\n", ["outputs: expected a table, got an array"]),
    ("[colector]\n", ['colector: unknown key; valid keys: agent, outputs, sensors']),
    ('[agent]\njitter = "30d"\n', ['agent.jitter: expected a duration of at most 86400 s, got "30d"']),
    ("[[sensors.system]]\n[[sensors.system]]\n", ["sensors.system: expected one [sensors.system] table, got an array"]),
    ('[[sensors.serial]]\nname = "system"\nport = "/dev/ttyUSB0"\n', ['sensors.serial[0].name: "system" is the system sensor\'s name']),
    ('[[sensors.serial]]\nname = "a"\nport = "/dev/ttyUSB0"\n[[sensors.serial]]\nname = "a"\nport = "/dev/ttyUSB1"\n', ['sensors: two sensors are named "a"']),
    ('[agent]\nheartbeat_metrics = ["disk.boot"]\n', ['agent.heartbeat_metrics[0]: "disk.boot" is not a configured disk (sensors.system.disks gives: disk.root)']),
    ('[agent]\nheartbeat_metrics = ["net.eth0.rxx"]\n', ['expected net.<interface>.rx, .tx, .rx_err or .tx_err, got "net.eth0.rxx"']),
    ('[[outputs.mqtt]]\nhost = "b"\n[[outputs.mqtt]]\nhost = "b"\n', ["outputs.mqtt: two outputs connect to b:1883 with the default client_id"]),
]  # fmt: skip


@pytest.mark.parametrize(("text", "fragments"), BAD_CONFIGS, ids=[t for t, _ in BAD_CONFIGS])
def test_bad_config_is_reported_with_file_and_key(tmp_path: Path, text, fragments):
    """check-config exits 78 and names the file, the key path, what was expected and found."""
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_agent_config(str(path))
    message = str(err.value)
    assert message.startswith(str(path))
    for fragment in fragments:
        assert fragment in message


def test_every_problem_is_reported_at_once():
    """Several mistakes in one file give one error per mistake, not only the first."""
    data = parse_toml(
        '[agent]\nheartbeat_interval = 0\njiter = 1\n[[outputs.udp]]\nport = "x"\nformat = "xml"\n'
    )
    with pytest.raises(ConfigError) as err:
        parse_agent_config(data, "a.toml")
    assert len(err.value.problems) == 4
    assert [p.split(":")[1].strip() for p in err.value.problems] == [
        "agent.heartbeat_interval",
        "agent.jiter",
        "outputs.udp[0].port",
        "outputs.udp[0].format",
    ]


def test_check_config_exits_78_on_error(tmp_path: Path):
    """`fleetbeat check-config` prints every problem on stderr and exits with EX_CONFIG (78)."""
    path = tmp_path / "bad.toml"
    path.write_text("[agent]\nheartbeat_interval = -1\n[[outputs.udp]]\nport = 0\n")
    result = run_cli("check-config", str(path))
    assert result.returncode == 78
    assert "2 config errors" in result.stderr
    assert "agent.heartbeat_interval" in result.stderr
    assert "outputs.udp[0].port" in result.stderr


def test_check_config_missing_file_exits_78(tmp_path: Path):
    """A config file that does not exist is a config error naming it."""
    result = run_cli("check-config", str(tmp_path / "nope.toml"))
    assert result.returncode == 78
    assert "nope.toml: file not found" in result.stderr


def test_check_config_prints_effective_config(tmp_path: Path):
    """A valid file is echoed back as TOML with defaults filled in, and it parses again."""
    path = tmp_path / "ok.toml"
    path.write_text('[agent]\ndevice_id = "pi-1"\n[[outputs.udp]]\nhost = "::1"\n')
    result = run_cli("check-config", str(path))
    assert result.returncode == 0, result.stderr
    assert 'device_id = "pi-1"' in result.stdout
    assert "heartbeat_interval = 10.0" in result.stdout
    assert 'host = "::1"' in result.stdout
    again = tmp_path / "again.toml"
    again.write_text(result.stdout)
    cfg = load_agent_config(str(again))
    assert cfg.agent.device_id == "pi-1"
    assert cfg.outputs[0].config.host == "::1"


def test_agent_with_bad_config_starts_nothing(tmp_path: Path):
    """An agent given an invalid config exits 78 before sending anything."""
    rx = UdpReceiver()
    try:
        path = tmp_path / "bad.toml"
        path.write_text(
            f'[agent]\njitter = 0\nheartbeat_interval = "0.05s"\nbogus = 1\n'
            f"[[outputs.udp]]\nport = {rx.port}\n"
        )
        result = run_cli("agent", "-c", str(path))
        assert result.returncode == 78
        assert "agent.bogus: unknown key" in result.stderr
        time.sleep(0.2)
        assert rx.poll() == []
    finally:
        rx.close()
