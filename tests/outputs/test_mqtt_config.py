"""[[outputs.mqtt]] configuration: validation, secrets, examples, and paho loaded only when used."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fleetbeat.agent.config import parse_agent_config
from fleetbeat.config.loader import parse_toml, read_toml
from fleetbeat.config.secrets import TlsConfig
from fleetbeat.errors import ConfigError
from fleetbeat.outputs import mqtt_publish
from fleetbeat.outputs.base import Identity
from fleetbeat.outputs.mqtt_publish import MqttConfig, MqttOutput
from helpers import ROOT, UdpReceiver, agent_toml, fleetbeat_cmd, run_cli, subprocess_env

IDENTITY = Identity(dev="pi-1", run="0" * 16, boot_time=0, version="0", tags={})


def mqtt_config(body: str) -> MqttConfig:
    cfg = parse_agent_config(parse_toml(f"[[outputs.mqtt]]\n{body}"), "agent.toml")
    config: MqttConfig = cfg.outputs[0].config
    return config


def problems(body: str) -> list[str]:
    with pytest.raises(ConfigError) as err:
        mqtt_config(body)
    return err.value.problems


def test_defaults():
    """Without keys: localhost:1883, client id from the device, prefix fleetbeat, 3.1.1, 30 s."""
    cfg = mqtt_config("")
    assert (cfg.host, cfg.port, cfg.protocol, cfg.keepalive) == ("127.0.0.1", 1883, "3.1.1", 30.0)
    out = MqttOutput(cfg, identity=IDENTITY, environ={})
    assert out.hb_topic == "fleetbeat/pi-1/hb"
    assert out.status_topic == "fleetbeat/pi-1/status"
    assert out._client._client_id == b"fleetbeat-pi-1"
    out.close(timeout=0.1)


def test_reconnect_backoff_doubles_is_capped_and_jittered():
    """Waits double from reconnect_min to reconnect_max, each jittered to 50-100 %."""
    cfg = mqtt_config('reconnect_min = "1s"\nreconnect_max = "8s"')
    low = MqttOutput(cfg, identity=IDENTITY, environ={}, rng=lambda: 0.0)
    high = MqttOutput(cfg, identity=IDENTITY, environ={}, rng=lambda: 0.999999)
    assert [low._backoff(n) for n in range(6)] == [0.5, 0.5, 1.0, 2.0, 4.0, 4.0]
    assert [round(high._backoff(n), 3) for n in range(6)] == [1.0, 1.0, 2.0, 4.0, 8.0, 8.0]
    low.close(timeout=0.1)
    high.close(timeout=0.1)


def test_tls_table_switches_the_default_port_to_8883():
    """A [tls] table, even empty, turns TLS on and makes 8883 the default port."""
    assert mqtt_config("[outputs.mqtt.tls]").port == 8883
    assert mqtt_config("port = 1884\n[outputs.mqtt.tls]").port == 1884


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("keepalive = 0", "outputs.mqtt[0].keepalive: expected a duration at least 1 s, got 0"),
        ('keepalive = "0s"', "outputs.mqtt[0].keepalive: expected a duration"),
        ('protocol = "3"', 'outputs.mqtt[0].protocol: expected one of "3.1.1", "5", got "3"'),
        ('message_expiry = "1m"', 'outputs.mqtt[0].message_expiry: needs protocol = "5"'),
        ('password_file = "/x"', "outputs.mqtt[0].password_file: needs username"),
        ('topic_prefix = "a/#"', "outputs.mqtt[0].topic_prefix: expected topic levels of"),
        ('topic_prefix = "a//b"', "outputs.mqtt[0].topic_prefix: expected topic levels of"),
        ('client_id = "has space"', "outputs.mqtt[0].client_id: expected 1-128 characters"),
        ('reconnect_min = "1m"\nreconnect_max = "1s"', "reconnect_min: must not exceed"),
        ("port = 0", "outputs.mqtt[0].port: expected an integer from 1 to 65535, got 0"),
        ('passwrd_file = "/x"',
         'outputs.mqtt[0].passwrd_file: unknown key; did you mean "password_file"?'),
        ('[outputs.mqtt.tls]\nkey_file = "/k"', "outputs.mqtt[0].tls.key_file: needs cert_file"),
        ('[outputs.mqtt.tls]\ninsecure = "yes"',
         "outputs.mqtt[0].tls.insecure: expected true or false"),
    ],
)  # fmt: skip
def test_invalid_keys_are_named(body, expected):
    """Every invalid key is reported with its path and what was expected."""
    assert any(expected in p for p in problems(body)), problems(body)


def test_missing_password_file_stops_the_agent_with_exit_78(tmp_path):
    """A password_file that cannot be read is a config error naming its key: exit 78, at once."""
    config = tmp_path / "agent.toml"
    config.write_text(f'[[outputs.mqtt]]\nusername = "u"\npassword_file = "{tmp_path}/nope"\n')
    for command in ("agent", "check-config"):
        args = (command, "-c", str(config)) if command == "agent" else (command, str(config))
        res = run_cli(*args)
        assert res.returncode == 78
        assert (
            f"{config}: outputs.mqtt[0].password_file: expected a readable file, "
            f'got "{tmp_path}/nope" (no such file)'
        ) in res.stderr


def test_missing_tls_files_are_reported_together_by_check_config(tmp_path):
    """Every missing TLS file and password file is named with its key path, all at once."""
    config = tmp_path / "agent.toml"
    config.write_text(
        f'[[outputs.mqtt]]\nusername = "u"\npassword_file = "{tmp_path}/pw"\n'
        f'[outputs.mqtt.tls]\nca_file = "{tmp_path}/ca.pem"\ncert_file = "{tmp_path}/c.pem"\n'
    )
    res = run_cli("check-config", str(config))
    assert res.returncode == 78
    assert "4 config errors" not in res.stderr  # three problems, not more
    for key in ("password_file", "tls.ca_file", "tls.cert_file"):
        assert f"outputs.mqtt[0].{key}: expected a readable file" in res.stderr


def test_unloadable_tls_files_stop_the_agent_with_exit_78(tmp_path):
    """A CA file that exists but holds no certificate is a config error (exit 78) naming tls."""
    (tmp_path / "ca.pem").write_text("not a certificate\n")
    config = tmp_path / "agent.toml"
    config.write_text(f'[[outputs.mqtt]]\n[outputs.mqtt.tls]\nca_file = "{tmp_path}/ca.pem"\n')
    res = run_cli("agent", "-c", str(config))
    assert res.returncode == 78
    assert "tls: cannot load the certificates" in res.stderr


def test_password_sources_in_order(tmp_path):
    """password_file wins over FLEETBEAT_MQTT_PASSWORD, which wins over the systemd credential."""
    (tmp_path / "pw").write_text("from-file\n")
    (tmp_path / "mqtt-password").write_text("from-credential")
    env = {"FLEETBEAT_MQTT_PASSWORD": "from-env", "CREDENTIALS_DIRECTORY": str(tmp_path)}
    with_file = mqtt_config(f'username = "u"\npassword_file = "{tmp_path}/pw"')
    plain = mqtt_config('username = "u"')
    read = mqtt_publish.read_password
    assert read(with_file, name="m", environ=env) == "from-file"
    assert read(plain, name="m", environ=env) == "from-env"
    assert read(plain, name="m", environ={"CREDENTIALS_DIRECTORY": str(tmp_path)}) == (
        "from-credential"
    )
    assert read(plain, name="m", environ={}) is None
    (tmp_path / "empty").write_text("\n")
    empty = mqtt_config(f'username = "u"\npassword_file = "{tmp_path}/empty"')
    with pytest.raises(ConfigError, match="is empty"):
        read(empty, name="m", environ={})


def test_check_config_never_prints_the_password(tmp_path):
    """check-config shows the password file's path, never the password from any source."""
    (tmp_path / "pw").write_text("hunter2-file")
    config = tmp_path / "agent.toml"
    config.write_text(f'[[outputs.mqtt]]\nusername = "u"\npassword_file = "{tmp_path}/pw"\n')
    res = subprocess.run(
        fleetbeat_cmd("check-config", str(config)), capture_output=True, text=True, check=False,
        env=subprocess_env(FLEETBEAT_MQTT_PASSWORD="hunter2-env"), timeout=30,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert f'password_file = "{tmp_path}/pw"' in res.stdout
    assert "hunter2" not in res.stdout + res.stderr


def test_example_file_sets_every_key():
    """examples/agent-mqtt.toml is valid and sets every [[outputs.mqtt]] and tls key."""
    path = ROOT / "examples" / "agent-mqtt.toml"
    data = read_toml(str(path))
    cfg = parse_agent_config(data, str(path), check_files=False)  # /etc/fleetbeat/*.pem
    assert [c.type for c in cfg.outputs] == ["mqtt"]
    table = data["outputs"]["mqtt"][0]
    assert set(table) == set(MqttConfig.__dataclass_fields__)
    assert set(table["tls"]) == set(TlsConfig.__dataclass_fields__)


def test_commented_block_in_agent_toml_parses():
    """The commented [[outputs.mqtt]] block in examples/agent.toml is valid once uncommented."""
    text = (ROOT / "examples" / "agent.toml").read_text()
    block = text[text.index("# [[outputs.mqtt]]") :]
    lines = [ln[2:] for ln in block.splitlines() if ln.startswith("# ") and "= " in ln]
    lines = [ln for ln in lines if not ln.lstrip().startswith("#")]
    cfg = parse_agent_config(parse_toml("[[outputs.mqtt]]\n" + "\n".join(lines)), "agent.toml")
    assert cfg.outputs[0].config.username == "pi-kitchen"


# Runs `python -m fleetbeat agent ...` and writes sys.modules at exit (after the bye).
_DUMP_MODULES = """
import atexit, runpy, sys
out = sys.argv.pop(1)
atexit.register(lambda: open(out, "w").write("\\n".join(sorted(sys.modules))))
sys.argv[0] = "fleetbeat"
runpy.run_module("fleetbeat", run_name="__main__")
"""


def _imported_modules(tmp_path: Path, config: str) -> set[str]:
    """Modules a real `fleetbeat agent` process had loaded after sending a few heartbeats."""
    rx = UdpReceiver()
    path = tmp_path / "agent.toml"
    path.write_text(config.replace("PORT", str(rx.port)))
    dump = tmp_path / "modules.txt"
    proc = subprocess.Popen(
        [sys.executable, "-c", _DUMP_MODULES, str(dump), "agent", "-c", str(path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=subprocess_env(),
    )  # fmt: skip
    try:
        rx.wait_for(lambda ms: sum(m["k"] == "hb" for m in ms) >= 2)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(5)
        rx.close()
    return set(dump.read_text().split())


def test_agent_without_mqtt_never_imports_paho_or_ssl(tmp_path):
    """An agent with only UDP outputs never loads paho or ssl; one with MQTT does."""
    without = _imported_modules(tmp_path, agent_toml(0).replace("port = 0", "port = PORT"))
    assert "fleetbeat.outputs.udp" in without
    assert not {m for m in without if m.startswith("paho") or m in ("ssl", "_ssl")}
    mqtt = '\n[[outputs.mqtt]]\nport = 1\nreconnect_min = "1s"\n'
    with_mqtt = _imported_modules(tmp_path, agent_toml(0).replace("port = 0", "port = PORT") + mqtt)
    assert "paho.mqtt.client" in with_mqtt and "ssl" in with_mqtt
