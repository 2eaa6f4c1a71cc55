"""The agent's configuration: `[agent]`, `[sensors.*]` and `[outputs.*]`.

With no file at all the agent runs on embedded defaults: heartbeats and system
readings every 10 s, as wire v1 JSON over UDP to 127.0.0.1:9746.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Mapping
from typing import Any, Optional

from fleetbeat import wire
from fleetbeat.config.frozen import dataclass
from fleetbeat.config.loader import read_toml
from fleetbeat.config.schema import (
    Problems,
    array,
    did_you_mean,
    duration,
    load_table,
    mapping,
    option,
    option_factory,
    scalar_text,
    string,
    suggest,
)
from fleetbeat.errors import ConfigError
from fleetbeat.outputs import OUTPUTS
from fleetbeat.outputs import load as load_class
from fleetbeat.sensors import SENSORS

DEFAULT_HEARTBEAT_METRICS = ("cpu", "mem", "temp")
TAG_KEY = r"[A-Za-z_][A-Za-z0-9_.-]{0,63}"


def default_device_id() -> str:
    """The hostname, cut to what a device id may hold."""
    name = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname().split(".")[0])[:64]
    return name or "device"


def _heartbeat_metric(value: Any, path: str, problems: Problems) -> Any:
    from fleetbeat.sensors.system import FIXED_METRICS, metric_group

    parsed = string(what="a system metric name")(value, path, problems)
    if isinstance(parsed, str) and metric_group(parsed) is None:
        names = [m for ms in FIXED_METRICS.values() for m in ms] + ["disk.<mount>", "net.<if>.rx"]
        problems.add(path, f'unknown system metric "{parsed}"{suggest(parsed, names)}')
        return None
    return parsed


@dataclass(frozen=True)
class AgentSection:
    device_id: str = option_factory(
        default_device_id,
        string(pattern=wire.DEVICE_ID.pattern, what="1-64 characters of A-Z a-z 0-9 . _ -"),
    )
    heartbeat_interval: float = option(10.0, duration(min=0.01, max=86400.0))
    jitter: float = option(10.0, duration(allow_zero=True, max=86400.0))
    tags: Mapping[str, str] = option_factory(
        dict, mapping(scalar_text(), key_pattern=TAG_KEY, what="letters, digits, _ . -")
    )
    heartbeat_metrics: tuple[str, ...] = option(DEFAULT_HEARTBEAT_METRICS, array(_heartbeat_metric))
    log_level: str = option("info", string(choices=("debug", "info", "warning", "error")))


@dataclass(frozen=True)
class Component:
    """One configured sensor or output: its registry type, TOML path and config."""

    type: str
    path: str
    config: Any


@dataclass(frozen=True)
class AgentConfig:
    agent: AgentSection
    sensors: tuple[Component, ...]
    outputs: tuple[Component, ...]
    source: str = "<defaults>"

    def sensor_configs(self, type_: str) -> list[Any]:
        return [c.config for c in self.sensors if c.type == type_]


def load_agent_config(path: Optional[str] = None) -> AgentConfig:
    """Load and validate an agent config file; None gives the embedded defaults."""
    if path is None:
        return parse_agent_config({}, "<defaults>")
    return parse_agent_config(read_toml(path), path)


def parse_agent_config(
    data: Mapping[str, Any], source: str, *, check_files: bool = True
) -> AgentConfig:
    """Validate a TOML document; raise ConfigError listing every problem.

    With `check_files`, files the agent reads at start (passwords, certificates)
    must exist and be readable now; documentation samples are checked without.
    """
    problems = Problems(source)
    for key in data:
        if key not in ("agent", "sensors", "outputs"):
            problems.add(key, "unknown key" + suggest(key, ["agent", "sensors", "outputs"]))
    agent = load_table(AgentSection, data.get("agent", {}), "agent", problems)
    sensors = _components(data.get("sensors", {}), "sensors", SENSORS, "sensor", problems)
    if not any(c.type == "system" for c in sensors):
        from fleetbeat.sensors.system import SystemConfig

        sensors = (Component("system", "sensors.system", SystemConfig()), *sensors)
    outputs = _components(data.get("outputs", {}), "outputs", OUTPUTS, "output", problems)
    if not outputs and "outputs" not in data:
        from fleetbeat.outputs.udp import UdpConfig

        outputs = (Component("udp", "outputs.udp[0]", UdpConfig()),)
    elif not outputs and not problems:
        problems.add("outputs", "no output configured: add an [[outputs.udp]] table")
    systems = [c for c in sensors if c.type == "system"]
    if len(systems) > 1:
        problems.add("sensors.system", "expected one [sensors.system] table, got an array")
    named = [c for c in sensors if c.type != "system"]
    for comp in named:
        if comp.config.name == "system":
            problems.add(f"{comp.path}.name", '"system" is the system sensor\'s name: pick another')
    names = [c.config.name for c in named]
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.add("sensors", f'two sensors are named "{name}": names must be unique')
    if systems and not problems:
        _check_heartbeat_metrics(agent, systems[0].config, problems)
    if check_files:
        for comp in (*sensors, *outputs):
            files = getattr(comp.config, "check_files", None)
            if files is not None:
                files(comp.path, problems)
    brokers = [
        (c.config.host, c.config.port, c.config.client_id or "")
        for c in outputs
        if c.type == "mqtt"
    ]
    for host, port, client_id in sorted({b for b in brokers if brokers.count(b) > 1}):
        who = f'client_id "{client_id}"' if client_id else "the default client_id"
        problems.add("outputs.mqtt", f"two outputs connect to {host}:{port} with {who}: "
                     "the broker would keep disconnecting one for the other")  # fmt: skip
    if problems:
        raise ConfigError(problems.items)
    return AgentConfig(agent=agent, sensors=sensors, outputs=outputs, source=source)


def _check_heartbeat_metrics(agent: AgentSection, system: Any, problems: Problems) -> None:
    """A heartbeat metric must be one the system sensor, as configured, will read."""
    from fleetbeat.sensors.system import disk_metric, metric_group

    disks = {disk_metric(m): m for m in system.disks}
    for i, name in enumerate(agent.heartbeat_metrics):
        path = f"agent.heartbeat_metrics[{i}]"
        group = metric_group(name)
        if group == "disk" and name not in disks:
            known = ", ".join(sorted(disks)) or "none"
            problems.add(path, f'"{name}" is not a configured disk (sensors.system.disks '
                         f"gives: {known})")  # fmt: skip
        elif group == "net" and not re.fullmatch(r"net\.[^.]+\.(rx|tx|rx_err|tx_err)", name):
            problems.add(
                path, f'expected net.<interface>.rx, .tx, .rx_err or .tx_err, got "{name}"'
            )


def _components(
    section: Any, path: str, registry: Mapping[str, str], what: str, problems: Problems
) -> tuple[Component, ...]:
    if not isinstance(section, Mapping):
        problems.expected(path, "a table", section)
        return ()
    found: list[Component] = []
    for type_, body in section.items():
        if type_ not in registry:
            valid = ", ".join(sorted(registry))
            hint = did_you_mean(type_, list(registry))
            problems.add(f"{path}.{type_}", f"unknown {what} type{hint}; valid types: {valid}")
            continue
        cls = load_class(registry[type_])
        tables = body if isinstance(body, list) else [body]
        for i, item in enumerate(tables):
            item_path = f"{path}.{type_}[{i}]" if isinstance(body, list) else f"{path}.{type_}"
            found.append(
                Component(type_, item_path, load_table(cls.Config, item, item_path, problems))
            )
    return tuple(found)
