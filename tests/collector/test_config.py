"""The collector's configuration: defaults, validation, the example file, the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetbeat.collector.config import (
    CollectorSection,
    MqttSection,
    load_collector_config,
    parse_collector_config,
    split_hostport,
)
from fleetbeat.config import frozen as dataclasses
from fleetbeat.config.loader import parse_toml, read_toml
from fleetbeat.errors import ConfigError
from helpers import ROOT, run_cli

EXAMPLE = ROOT / "examples" / "collector.toml"


def test_embedded_defaults() -> None:
    """Without a file the collector listens on UDP 9746 and serves HTTP on loopback 9747."""
    c = load_collector_config().collector
    assert c.udp_listen == "0.0.0.0:9746"
    assert c.http_listen == "127.0.0.1:9747"
    assert (c.late_after, c.down_after, c.max_down_after) == (1.5, "auto", 10.0)
    assert c.max_devices == 40_000
    assert c.mqtt is None
    assert c.state_dir


def test_state_dir_follows_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    """systemd's $STATE_DIRECTORY is the default state directory."""
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/fleetbeat")
    assert load_collector_config().collector.state_dir == "/var/lib/fleetbeat"


def test_example_documents_every_key() -> None:
    """examples/collector.toml parses and sets, with a comment, every key there is."""
    data = read_toml(str(EXAMPLE))
    config = parse_collector_config(data, str(EXAMPLE))
    assert config.collector.mqtt is not None
    commented = {"notify", "maintenance", "self_check", "kafka", "amqp"}  # off by default
    mqtt_commented = {"password_file", "tls"}  # unset by default: shown in comments
    for cls, table in ((CollectorSection, {**data["collector"], **dict.fromkeys(commented)}),
                       (MqttSection, {**data["collector"]["mqtt"],
                                      **dict.fromkeys(mqtt_commented)})):  # fmt: skip
        assert {f.name for f in dataclasses.fields(cls)} == set(table)
    assert all(f"[collector.{k}]" in EXAMPLE.read_text() for k in commented)
    assert "# password_file = " in EXAMPLE.read_text()
    assert "# [collector.mqtt.tls]" in EXAMPLE.read_text()
    lines = EXAMPLE.read_text().splitlines()
    for i, line in enumerate(lines):
        if "=" in line and not line.startswith("#"):
            assert lines[i - 1].startswith("#"), f"no comment above {line!r}"


def test_example_values_are_the_defaults() -> None:
    """The example shows the defaults (apart from state_dir and the optional mqtt table)."""
    example = parse_collector_config(read_toml(str(EXAMPLE)), "x").collector
    default = load_collector_config().collector
    assert dataclasses.replace(example, state_dir=default.state_dir, mqtt=None) == default
    assert example.mqtt == MqttSection()


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0.0.0.0:9746", ("0.0.0.0", 9746)), ("[::]:9746", ("::", 9746)),
     ("[::1]:0", ("::1", 0)), (":9746", ("0.0.0.0", 9746)), ("9746", None),
     ("[::]9746", None), ("host:99999", None)],
)  # fmt: skip
def test_listen_addresses(text: str, expected: object) -> None:
    """Listen addresses are host:port, with IPv6 hosts in brackets."""
    assert split_hostport(text) == expected


def test_every_problem_at_once() -> None:
    """Bad keys, types and ranges are all reported with their key paths."""
    data = {
        "collector": {
            "udp_listen": "9746",
            "late_afterr": 2,
            "down_after": "sometimes",
            "max_devices": 0,
            "mqtt": {"port": "x", "tls": {"key_file": "/c.key"}},
        }
    }
    with pytest.raises(ConfigError) as err:
        parse_collector_config(data, "c.toml")
    text = "\n".join(err.value.problems)
    assert 'c.toml: collector.udp_listen: expected an address such as "0.0.0.0:9746"' in text
    assert 'collector.late_afterr: unknown key; did you mean "late_after"?' in text
    assert 'collector.down_after: expected "auto" or a number of intervals above 1' in text
    assert "collector.max_devices: expected an integer from 1 to 2147483647, got 0" in text
    assert "collector.mqtt.port: expected an integer" in text
    assert "collector.mqtt.tls.key_file: needs cert_file" in text


def test_fixed_down_after_must_exceed_late_after() -> None:
    """A fixed down_after at or below late_after is refused."""
    with pytest.raises(ConfigError, match=r"collector.down_after: must be above late_after"):
        parse_collector_config({"collector": {"down_after": 1.5}}, "c.toml")
    ok = parse_collector_config({"collector": {"down_after": 4}}, "c.toml")
    assert ok.collector.down_after == 4.0


def test_check_config_handles_a_collector_file(tmp_path: Path) -> None:
    """`fleetbeat check-config` on a collector file prints its effective config, secrets masked."""
    path = tmp_path / "c.toml"
    (tmp_path / "pw").write_text("hunter2\n")
    path.write_text('[collector]\nlate_after = 2\n[collector.mqtt]\nusername = "c"\n'
                    f'password_file = "{tmp_path}/pw"\n')  # fmt: skip
    result = run_cli("check-config", str(path))
    assert result.returncode == 0, result.stderr
    assert "[collector]" in result.stdout
    assert "late_after = 2.0" in result.stdout
    assert "[collector.mqtt]" in result.stdout
    assert "hunter2" not in result.stdout


def test_bad_collector_file_exits_78(tmp_path: Path) -> None:
    """A bad collector file stops both check-config and the collector with status 78."""
    path = tmp_path / "c.toml"
    path.write_text('[collector]\nhttp_listen = "everywhere"\n')
    for args in (("check-config", str(path)), ("collector", "-c", str(path))):
        result = run_cli(*args)
        assert result.returncode == 78
        assert "collector.http_listen: expected an address" in result.stderr


def test_collector_help() -> None:
    """`fleetbeat collector --help` explains the embedded defaults."""
    result = run_cli("collector", "--help")
    assert result.returncode == 0
    assert "UDP 0.0.0.0:9746" in " ".join(result.stdout.split())


@pytest.mark.parametrize(
    ("text", "expected"),
    [('password = "hunter2"', 'collector.mqtt.password: a password is not written in the config: '
      'put it in a file only the collector can read and set password_file = '),
     ("tls = true", "collector.mqtt.tls: TLS is a table now: write [collector.mqtt.tls]"),
     ('ca_file = "/ca.pem"', "collector.mqtt.ca_file: moved into the [collector.mqtt.tls] table"),
     ('cert_file = "/c.pem"', "collector.mqtt.cert_file: moved into the [collector.mqtt.tls] table")],
)  # fmt: skip
def test_retired_mqtt_keys_say_what_to_write(text: str, expected: str) -> None:
    """The collector's old MQTT keys are refused with the agent's vocabulary to use instead."""
    with pytest.raises(ConfigError) as err:
        parse_collector_config(parse_toml(f"[collector.mqtt]\n{text}\n", "c.toml"), "c.toml")
    assert expected in "\n".join(err.value.problems)
    assert "hunter2" not in str(err.value)


def test_mqtt_takes_the_agents_vocabulary() -> None:
    """password_file and a [collector.mqtt.tls] table parse as the agent's; TLS moves the port."""
    doc = ('[collector.mqtt]\nusername = "c"\npassword_file = "/etc/fleetbeat/mqtt-password"\n'
           '[collector.mqtt.tls]\nca_file = "/etc/fleetbeat/ca.pem"\n')  # fmt: skip
    mqtt = parse_collector_config(parse_toml(doc, "c.toml"), "c.toml").collector.mqtt
    assert mqtt is not None and mqtt.tls is not None
    assert (mqtt.password_file, mqtt.tls.ca_file, mqtt.port) == (
        "/etc/fleetbeat/mqtt-password", "/etc/fleetbeat/ca.pem", 8883)  # fmt: skip


def test_mqtt_password_file_needs_a_username() -> None:
    """As for the agent: MQTT sends no password without a user name."""
    with pytest.raises(ConfigError, match=r"collector.mqtt.password_file: needs username"):
        parse_collector_config({"collector": {"mqtt": {"password_file": "/pw"}}}, "c.toml")
