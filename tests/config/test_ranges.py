"""Every number a config accepts is bounded: what passes check-config never fails later."""

from __future__ import annotations

import importlib
import pkgutil
import socket
import subprocess
import sys
from typing import Any

import pytest

import fleetbeat
from fleetbeat.config import frozen
from fleetbeat.config.loader import MAX_DEPTH, parse_toml
from fleetbeat.config.schema import INVALID, MAX_DURATION, MAX_INTEGER, Problems
from fleetbeat.errors import ConfigError

# Keys whose size is a threshold compared with readings, never a timeout, a count or a
# buffer: any finite value is harmless there.
MAGNITUDE_FREE = {
    "deadband",
    "deadband_pct",
    "scale",
    "offset",
    "above",
    "below",
}  # alert rule thresholds (collector.alerts_config)
# Keys bounded by their protocol's own field, beyond a year: sent, never waited on.
PROTOCOL_BOUNDED = {"message_expiry": 4294967295}  # MQTT 5's u32 Message Expiry Interval

ABSURD = ("200000d", 10**7 * 86400, 2**31, 2**63, 1e308)


def _config_classes() -> list[type[Any]]:
    found: dict[str, type[Any]] = {}
    for info in pkgutil.walk_packages(fleetbeat.__path__, "fleetbeat."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and value.__module__ == info.name
                and frozen.is_dataclass(value)
            ):
                fields = frozen.fields(value)
                if any("parse" in f.metadata for f in fields):
                    found[f"{info.name}.{value.__qualname__}"] = value
    return [found[k] for k in sorted(found)]


CONFIG_CLASSES = _config_classes()


def test_the_walk_finds_the_config_records() -> None:
    """The sweep below covers the agent's, every plugin's and the collector's records."""
    names = {c.__name__ for c in CONFIG_CLASSES}
    assert {"CollectorSection", "MqttSection", "SamplingConfig"} <= names
    assert len(CONFIG_CLASSES) >= 8


@pytest.mark.parametrize("cls", CONFIG_CLASSES, ids=lambda c: f"{c.__module__}.{c.__name__}")
def test_no_numeric_key_takes_an_absurd_value(cls: type[Any]) -> None:
    """A duration past a year or an integer past a C int is a config error for every key."""
    for f in frozen.fields(cls):  # type: ignore[arg-type]
        parse = f.metadata.get("parse")
        if parse is None or f.name in MAGNITUDE_FREE:
            continue
        for value in ABSURD:
            if f.name in PROTOCOL_BOUNDED and _seconds(value) <= PROTOCOL_BOUNDED[f.name]:
                continue
            problems = Problems("t.toml")
            out = parse(value, f.name, problems)
            numeric = isinstance(out, (int, float)) and not isinstance(out, bool)
            assert out is INVALID or not numeric, f"{cls.__name__}.{f.name} took {value!r}"


def _seconds(value: Any) -> float:
    return 200000 * 86400.0 if value == "200000d" else float(value)


def test_the_default_bounds_are_what_the_docs_say() -> None:
    """A year for durations, a C int for integers."""
    assert MAX_DURATION == 366 * 86400
    assert MAX_INTEGER == 2**31 - 1


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        (
            '[[outputs.udp]]\nhost = "h"\nresolve_every = "200000d"\n',
            "outputs.udp[0].resolve_every",
        ),
        (
            '[[sensors.serial]]\nname = "s"\nport = "/dev/x"\nreopen_delay = "200000d"\n',
            "reopen_delay",
        ),
        ('[[sensors.serial]]\nname = "s"\nport = "/dev/x"\nreopen_max = "200000d"\n', "reopen_max"),
        (
            '[[sensors.serial]]\nname = "s"\nport = "/dev/x"\nencoding = "rot13"\n',
            "unknown text encoding",
        ),
        (
            '[[sensors.serial]]\nname = "s"\nport = "/dev/x"\nencoding = "base64"\n',
            "unknown text encoding",
        ),
    ],
)
def test_agent_keys_that_used_to_fail_later_are_config_errors(
    toml: str, needle: str, tmp_path: Any
) -> None:
    """Values that once passed check-config and then killed a thread are refused, by key."""
    path = tmp_path / "agent.toml"
    path.write_text(toml)
    proc = subprocess.run(
        [sys.executable, "-m", "fleetbeat", "check-config", str(path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 78, proc.stdout
    assert needle in proc.stderr


@pytest.mark.parametrize(
    "toml",
    [
        "[collector]\nudp_receive_buffer = 2147483648\n",
        '[collector]\nevent_retention = "200000d"\n',
        "[collector.mqtt]\nkeepalive = 70000\n",
        "[collector]\nmax_devices = 9223372036854775808\n",
    ],
)
def test_collector_keys_that_used_to_fail_later_are_config_errors(toml: str) -> None:
    """An oversized receive buffer, retention or keepalive is refused by the loader."""
    from fleetbeat.collector.config import parse_collector_config

    with pytest.raises(ConfigError):
        parse_collector_config(parse_toml(toml), "c.toml")


def test_the_largest_receive_buffer_accepted_can_be_set() -> None:
    """udp_receive_buffer at its maximum is a value setsockopt takes (the kernel caps it)."""
    from fleetbeat.collector.config import parse_collector_config
    from fleetbeat.collector.receivers.udp import bind_udp

    cfg = parse_collector_config(
        parse_toml(
            f'[collector]\nudp_listen = "127.0.0.1:0"\nudp_receive_buffer = {MAX_INTEGER}\n'
        ),
        "c.toml",
    )
    sock = bind_udp(cfg.collector.udp_listen, cfg.collector.udp_receive_buffer)
    try:
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) > 0
    finally:
        sock.close()


@pytest.mark.parametrize(
    "text",
    [
        "a = " + "[" * 2000 + "]" * 2000,  # the parser itself would recurse too deep
        "a = " + "[" * (MAX_DEPTH + 2) + "]" * (MAX_DEPTH + 2),  # parses, but too deep for us
        "a = " + "{x=" * 1000 + "1" + "}" * 1000,
    ],
)
def test_deep_nesting_is_a_config_error(text: str) -> None:
    """Deeply nested arrays and tables give a ConfigError that says so, not a RecursionError."""
    with pytest.raises(ConfigError) as err:
        parse_toml(text, "deep.toml")
    assert f"nested more than {MAX_DEPTH} deep" in str(err.value)


def test_deep_nesting_in_a_file_exits_78_without_a_traceback(tmp_path: Any) -> None:
    """check-config on a deeply nested file names the file and exits with EX_CONFIG."""
    path = tmp_path / "deep.toml"
    path.write_text("[agent]\ntags = " + "[" * 3000 + "]" * 3000 + "\n")
    proc = subprocess.run(
        [sys.executable, "-m", "fleetbeat", "check-config", str(path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 78
    assert str(path) in proc.stderr and "nested more than" in proc.stderr
    assert "Traceback" not in proc.stderr
