"""The agent's configuration and composition root: `[agent]`, `[sensors.*]`, `[outputs.*]`.

Each `[sensors.<type>]` / `[[outputs.<type>]]` table is looked up in
`fleetbeat.registry` and validated by that plugin's `Config` record, except the
keys every plugin of a kind takes alike, which are parsed here into the
component record: a sensor's `[... .sampling]` table, an output's `format` and
`prefix`. Checks across plugins are the plugins' own hooks, called from here:
`SystemConfig.check_heartbeat_metrics`, each output Config's `check_files` and
`check_together`.

With no file at all the agent runs on embedded defaults: heartbeats and system
readings every 10 s, as wire v1 JSON over UDP to 127.0.0.1:9746.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Optional, Union

from fleetbeat import keys, registry, wire
from fleetbeat.agent.heartbeat import (
    DEFAULT_HEARTBEAT_METRICS,
    check_heartbeat_metrics,
    heartbeat_metric,
)
from fleetbeat.agent.sampling import SamplingConfig
from fleetbeat.config.frozen import dataclass, field
from fleetbeat.config.loader import read_toml
from fleetbeat.config.render import table_lines
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
from fleetbeat.hmac_sha256 import HmacSha256
from fleetbeat.outputs.base import OutputConfig
from fleetbeat.sensors.base import SensorConfig

TAG_KEY = r"[A-Za-z_][A-Za-z0-9_.-]{0,63}"
METRIC_PREFIX = r"[A-Za-z0-9_.-]+"


def default_device_id() -> str:
    """The hostname, cut to what a device id may hold."""
    name = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname().split(".")[0])[:64]
    return name or "device"


@dataclass(frozen=True)
class AgentSection:
    device_id: str = option_factory(
        default_device_id,
        string(pattern=wire.DEVICE_ID.pattern, what="1-64 characters of A-Z a-z 0-9 . _ -"),
    )
    heartbeat_interval: float = option(10.0, duration(min=0.01, max=86400.0))
    jitter: float = option(10.0, duration(allow_zero=True, max=86400.0))
    tags: Mapping[str, str] = option_factory(
        # as long as the collector takes (wire.MAX_TEXT): longer would be refused there
        dict,
        mapping(
            scalar_text(max_len=wire.MAX_TEXT), key_pattern=TAG_KEY, what="letters, digits, _ . -"
        ),
    )
    heartbeat_metrics: tuple[str, ...] = option(DEFAULT_HEARTBEAT_METRICS, array(heartbeat_metric))
    log_level: str = option("info", string(choices=("debug", "info", "warning", "error")))
    # the signing key (`fleetbeat keygen`); empty: the systemd credential fleetbeat-key if
    # there is one, else messages go unsigned
    key_file: str = option("", string(allow_empty=True, what="a file path"))

    def signing_key(self) -> tuple[Optional[bytes], str]:
        """The key that signs every JSON message, and where it came from (for the log).

        Raises keys.KeyFileError naming the file when it cannot be read.
        """
        path = self.key_file or keys.credential_path()
        if not path or (not self.key_file and os.path.getsize(path) == 0):
            return None, ""  # no key, or the unit's empty credential (install.sh makes one)
        where = f"key_file {path}" if self.key_file else f"systemd credential {keys.CREDENTIAL}"
        return keys.read_key_file(path), where


@dataclass(frozen=True)
class Encoding:
    """The keys every output takes: which encoder (`fleetbeat.registry.ENCODERS`), its prefix."""

    format: str = option("json", string(choices=tuple(registry.ENCODERS)))
    prefix: str = option("fleetbeat", string(pattern=METRIC_PREFIX, what="a metric prefix"))


@dataclass(frozen=True)
class SensorComponent:
    """One configured sensor: its registry type, TOML path, Config and sampling table."""

    type: str
    path: str
    config: SensorConfig
    sampling: SamplingConfig = field(default_factory=SamplingConfig)


@dataclass(frozen=True)
class OutputComponent:
    """One configured output: its registry type, TOML path, Config and encoding."""

    type: str
    path: str
    config: OutputConfig
    encoding: Encoding = field(default_factory=Encoding)

    @property
    def format(self) -> str:
        return self.encoding.format

    def name(self) -> str:
        """How logs and `--show` name it: "udp 127.0.0.1:9746 (json)"."""
        return f"{self.type} {self.config.target()} ({self.encoding.format})"

    def key(self) -> tuple[str, str, str]:
        """Same key across a reload: the same output, whose seq streams continue."""
        return (self.type, self.config.target(), self.encoding.format)


@dataclass(frozen=True)
class AgentConfig:
    agent: AgentSection
    sensors: tuple[SensorComponent, ...]
    outputs: tuple[OutputComponent, ...]
    source: str = "<defaults>"

    def sensor_configs(self, type_: str) -> list[Any]:
        return [c.config for c in self.sensors if c.type == type_]


def signing_mac(section: AgentSection) -> Optional[HmacSha256]:
    """The HMAC state of the agent's signing key, or None when messages go unsigned."""
    key, _ = section.signing_key()
    return HmacSha256(key) if key is not None else None


def signing_line(section: AgentSection) -> str:
    """What check-config and the start log say about signing (never the key itself)."""
    try:
        key, where = section.signing_key()
    except keys.KeyFileError as err:
        return f"signing: broken ({err})"
    return f"signing: on (key from {where})" if key is not None else "signing: off"


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
    sensors = _sensors(data.get("sensors", {}), problems)
    if not any(c.type == "system" for c in sensors):
        system_cfg = registry.sensor_class("system").Config()
        sensors = (SensorComponent("system", "sensors.system", system_cfg), *sensors)
    outputs = _outputs(data.get("outputs", {}), problems)
    if not outputs and "outputs" not in data:
        outputs = (OutputComponent("udp", "outputs.udp[0]", registry.output_class("udp").Config()),)
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
        check_heartbeat_metrics(agent.heartbeat_metrics, systems[0].config, problems)
    if check_files:
        try:
            agent.signing_key()
        except keys.KeyFileError as err:
            problems.add("agent.key_file", str(err))
        for out in outputs:
            out.config.check_files(out.path, problems)
    for type_ in dict.fromkeys(c.type for c in outputs):
        same = [c.config for c in outputs if c.type == type_]
        type(same[0]).check_together(same, f"outputs.{type_}", problems)
    if problems:
        raise ConfigError(problems.items)
    return AgentConfig(agent=agent, sensors=sensors, outputs=outputs, source=source)


def component_lines(comp: Union[SensorComponent, OutputComponent]) -> list[str]:
    """One component as TOML (check-config): its table, with the generic keys in place."""
    name = comp.path.split("[")[0]  # an array element keeps its [[...]] header
    header = f"[[{name}]]" if "[" in comp.path else f"[{name}]"
    lines = table_lines(header, comp.config)
    if isinstance(comp, OutputComponent):  # before any sub-table, so they stay in this one
        return [lines[0], *table_lines(header, comp.encoding)[1:], *lines[1:]]
    return [*lines, "", *table_lines(f"[{name}.sampling]", comp.sampling)]


def _tables(
    section: Any, path: str, kind: Mapping[str, str], what: str, problems: Problems
) -> Iterator[tuple[str, str, Any]]:
    """(type, TOML path, table) for each table of a `[sensors]` or `[outputs]` section."""
    if not isinstance(section, Mapping):
        problems.expected(path, "a table", section)
        return
    for type_, body in section.items():
        if type_ not in kind:
            valid = ", ".join(sorted(kind))
            hint = did_you_mean(type_, list(kind))
            problems.add(f"{path}.{type_}", f"unknown {what} type{hint}; valid types: {valid}")
            continue
        tables = body if isinstance(body, list) else [body]
        for i, item in enumerate(tables):
            item_path = f"{path}.{type_}[{i}]" if isinstance(body, list) else f"{path}.{type_}"
            yield type_, item_path, item


def _split(table: Any, keys: Sequence[str]) -> tuple[Any, dict[str, Any]]:
    """The plugin's own keys and the generic ones (`keys`) of one table."""
    if not isinstance(table, Mapping):
        return table, {}
    own = {k: v for k, v in table.items() if k not in keys}
    return own, {k: v for k, v in table.items() if k in keys}


def _sensors(section: Any, problems: Problems) -> tuple[SensorComponent, ...]:
    found = []
    for type_, path, table in _tables(section, "sensors", registry.SENSORS, "sensor", problems):
        own, generic = _split(table, ("sampling",))
        cls = registry.sensor_class(type_)
        config = load_table(cls.Config, own, path, problems, also=("sampling",))
        sampling = SamplingConfig()
        if "sampling" in generic:
            sampling = load_table(SamplingConfig, generic["sampling"], f"{path}.sampling", problems)
        found.append(SensorComponent(type_, path, config, sampling))
    return tuple(found)


def _outputs(section: Any, problems: Problems) -> tuple[OutputComponent, ...]:
    found = []
    generic_keys = ("format", "prefix")
    for type_, path, table in _tables(section, "outputs", registry.OUTPUTS, "output", problems):
        own, generic = _split(table, generic_keys)
        cls = registry.output_class(type_)
        config = load_table(cls.Config, own, path, problems, also=generic_keys)
        found.append(
            OutputComponent(type_, path, config, load_table(Encoding, generic, path, problems))
        )
    return tuple(found)
