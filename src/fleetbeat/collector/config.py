"""The collector's configuration: `[collector]` and the optional `[collector.mqtt]`.

With no file at all the collector runs on embedded defaults: wire v1 over UDP on
0.0.0.0:9746, HTTP on 127.0.0.1:9747, state in `$STATE_DIRECTORY` (systemd),
else `$XDG_STATE_HOME/fleetbeat`, else `~/.local/state/fleetbeat`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any, Optional, Union

from fleetbeat.collector.alerts_config import (
    AlertsSection,
    MaintenanceSection,
    SelfCheckSection,
    maintenance_tables,
    notify_tables,
    required_table,
)
from fleetbeat.collector.notifiers.base import NotifierConfig
from fleetbeat.collector.receivers.amqp_consume import AmqpSection
from fleetbeat.collector.receivers.kafka_consume import KafkaSection
from fleetbeat.config.frozen import dataclass
from fleetbeat.config.loader import read_toml
from fleetbeat.config.schema import (
    INVALID,
    Problems,
    boolean,
    describe,
    duration,
    integer,
    load_table,
    number,
    option,
    option_factory,
    string,
    suggest,
    table,
)
from fleetbeat.config.secrets import PATH, TlsConfig
from fleetbeat.errors import ConfigError

_HOSTPORT = re.compile(
    r"^(?:\[(?P<v6>[0-9A-Fa-f:.%a-zA-Z0-9]+)\]|(?P<host>[^:\[\]]*)):(?P<port>\d{1,5})$"
)


def split_hostport(text: str) -> Optional[tuple[str, int]]:
    """("0.0.0.0", 9746) from "0.0.0.0:9746", ("::", 9746) from "[::]:9746"; None if invalid."""
    m = _HOSTPORT.match(text)
    if not m:
        return None
    port = int(m.group("port"))
    if not 0 <= port <= 65535:
        return None
    host = m.group("v6") if m.group("v6") is not None else m.group("host")
    return (host or "0.0.0.0"), port


def listen_address(*, allow_empty: bool = False) -> Any:
    """A "host:port" or "[ipv6]:port" string; port 0 lets the kernel pick one ("": off)."""

    def parse(value: Any, path: str, problems: Problems) -> Any:
        if allow_empty and value == "":
            return value
        if not isinstance(value, str) or split_hostport(value) is None:
            return problems.expected(
                path, 'an address such as "0.0.0.0:9746" or "[::]:9746"', value
            )
        return value

    return parse


def _down_after(value: Any, path: str, problems: Problems) -> Any:
    if value == "auto":
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 1 < value <= 1000:
        problems.add(
            path, f'expected "auto" or a number of intervals above 1, got {describe(value)}'
        )
        return INVALID
    return float(value)


def default_state_dir() -> str:
    """Where devices and events are kept when `state_dir` is not set."""
    if os.environ.get("STATE_DIRECTORY"):  # systemd StateDirectory=
        return os.environ["STATE_DIRECTORY"].split(":")[0]
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return os.path.join(base, "fleetbeat")


@dataclass(frozen=True)
class MqttSection:
    """`[collector.mqtt]`: the agent's MQTT vocabulary (`outputs.mqtt_publish`), for subscribing.

    The password comes from `password_file`, else `$FLEETBEAT_MQTT_PASSWORD`, else the
    systemd credential `mqtt-password` (`config.secrets.read_secret`); TLS is the
    `[collector.mqtt.tls]` table (present, even empty: TLS, checked against the system
    CAs). See `collector.receivers.mqtt_subscribe` for a sample.
    """

    host: str = option("127.0.0.1", string(what="a host name or IP address"))
    port: Optional[int] = option(None, integer(min=1, max=65535))  # 1883, or 8883 with TLS
    username: str = option("", string(allow_empty=True))  # "": anonymous
    password_file: Optional[str] = option(None, string(what=PATH))
    tls: Optional[TlsConfig] = option(None, table(TlsConfig))
    topic_prefix: str = option(
        "fleetbeat", string(pattern=r"[^#+\s]+", what="a topic prefix without + # or spaces")
    )
    shared_group: str = option(
        "",
        string(
            allow_empty=True, pattern=r"[A-Za-z0-9_.-]*", what="a group name of A-Z a-z 0-9 _ . -"
        ),
    )
    client_id: str = option("", string(allow_empty=True))
    keepalive: float = option(30.0, duration(min=5.0, max=65535.0))  # MQTT: 16 bits

    def __post_init__(self) -> None:
        if self.port is None:  # as the agent's: the default depends on TLS
            object.__setattr__(self, "port", 8883 if self.tls is not None else 1883)

    def check(self, path: str, problems: Problems) -> None:
        if self.password_file is not None and not self.username:
            problems.add(f"{path}.password_file", "needs username (MQTT sends no password alone)")


# Keys [collector.mqtt] took before it spoke the agent's vocabulary: what to write instead.
_RETIRED_MQTT_KEYS = {
    "password": "a password is not written in the config: put it in a file only the "
    'collector can read and set password_file = "/etc/fleetbeat/mqtt-password" (or set '
    "FLEETBEAT_MQTT_PASSWORD, or the systemd credential mqtt-password)",
    "tls": "TLS is a table now: write [collector.mqtt.tls] (present, even empty: TLS) "
    "with ca_file, cert_file, key_file and insecure as needed",
    "ca_file": "moved into the [collector.mqtt.tls] table",
    "cert_file": "moved into the [collector.mqtt.tls] table",
    "key_file": "moved into the [collector.mqtt.tls] table",
}


def _mqtt_table(value: Any, path: str, problems: Problems) -> Any:
    """`[collector.mqtt]`, with a message saying what to write for each retired key."""
    if isinstance(value, Mapping):
        rest = dict(value)
        for key, instead in _RETIRED_MQTT_KEYS.items():
            if key in rest and not (key == "tls" and isinstance(rest[key], Mapping)):
                problems.add(f"{path}.{key}", instead)
                del rest[key]
        value = rest
    return load_table(MqttSection, value, path, problems)


@dataclass(frozen=True)
class AuthSection:
    """`[collector.auth]`: who may speak for a device (signed messages, wire.sign).

    ```toml
    [collector.auth]
    keys_dir = "/etc/fleetbeat/keys"        # one key file per device, named after its id
    fleet_key_file = ""                     # one key for every device (simpler, weaker)
    require_signed = false                  # true: every unsigned message is rejected
    ```
    """

    keys_dir: str = option("", string(allow_empty=True, what="a directory path"))
    fleet_key_file: str = option("", string(allow_empty=True, what="a file path"))
    require_signed: bool = option(False, boolean())

    def check(self, path: str, problems: Problems) -> None:
        if self.require_signed and not (self.keys_dir or self.fleet_key_file):
            problems.add(f"{path}.require_signed", "needs keys_dir or fleet_key_file: with "
                         "no key every message would be rejected")  # fmt: skip


@dataclass(frozen=True)
class CollectorSection:
    udp_listen: str = option("0.0.0.0:9746", listen_address())
    http_listen: str = option("127.0.0.1:9747", listen_address())
    # HTTP ingest (collector/receivers/http_ingest.py): off while empty; a listener of its own
    http_ingest_listen: str = option("", listen_address(allow_empty=True))
    http_ingest_max_body: int = option(1 << 20, integer(min=256, max=64 << 20))
    state_dir: str = option_factory(default_state_dir, string(what="a directory path"))
    # the bearer token every write to the HTTP API needs; "" is {state_dir}/api-token
    api_token_file: str = option("", string(allow_empty=True, what="a file path"))
    late_after: float = option(1.5, number(min=1.0, max=100.0))
    down_after: Union[str, float] = option("auto", _down_after)
    max_down_after: float = option(10.0, number(min=3.0, max=1000.0))
    # 40,000: at the worst case per device below, plus what a /metrics scrape holds
    # (about 6 KB a device), that fits the unit's MemoryMax=512M (README, "Memory")
    max_devices: int = option(40_000, integer(min=1))
    # Bounds on what one device can make the collector keep (README, "Memory"): a
    # heartbeat past one is rejected whole (metrics_limit, tags_limit). The byte bounds
    # are Python memory (`budget.metrics_cost`, `budget.tags_cost`); names and tag sets
    # shared with other devices are kept once and cost nothing more. A device costs at
    # most about 1,400 + 1.25 x (max_metric_bytes + max_tag_bytes) bytes of RSS: with
    # the defaults 4 KB: 40,000 devices take 160 MB, 400 MB while /metrics is scraped.
    # max_events_per_minute: per device; past it one "flapping" event, the rest counted.
    # evict_after: how long a device must be silent before a newcomer may evict it.
    max_metrics: int = option(64, integer(min=0, max=10_000))
    max_metric_bytes: int = option(1536, integer(min=0, max=1 << 24))
    max_tags: int = option(16, integer(min=0, max=1000))
    max_tag_bytes: int = option(512, integer(min=0, max=1 << 24))
    max_events_per_minute: int = option(10, integer(min=1, max=100_000))
    evict_after: float = option(7 * 86400.0, duration(min=60.0, max=10 * 365 * 86400.0))
    # The lifecycle (collector/lifecycle.py): a file of the ids expected, one a line with
    # optional tags ("" none), never heard ones shown "missing", alerted on after
    # missing_after; devices down or offline for forget_after are forgotten ("0": never).
    expected_devices: str = option("", string(allow_empty=True, what="a file path"))
    missing_after: float = option(600.0, duration(allow_zero=True, max=10 * 365 * 86400.0))
    forget_after: float = option(30 * 86400.0, duration(allow_zero=True, max=10 * 365 * 86400.0))
    max_payload: int = option(65507, integer(min=256, max=65507))
    udp_receive_buffer: int = option(4 << 20, integer(min=0))
    # 31 days: the 30-day availability needs the state before its window
    event_retention: float = option(31 * 86400.0, duration(min=60.0))
    # stored events at most, the oldest deleted first (about 320 bytes each at 64-char ids)
    max_stored_events: int = option(1_000_000, integer(min=1000, max=10**9))
    # hourly heartbeat loss rows kept (the history API's "hours"; ~24 rows a device a day)
    loss_history: float = option(7 * 86400.0, duration(min=3600.0, max=400 * 86400.0))
    flush_interval: float = option(5.0, duration(min=0.05))
    check_interval: float = option(0.25, duration(min=0.001, max=60.0))
    log_level: str = option("info", string(choices=("debug", "info", "warning", "error")))
    # None unless a [collector.mqtt] table is present: MQTT is off by default.
    mqtt: Optional[MqttSection] = option(None, _mqtt_table)
    kafka: Optional[KafkaSection] = option(None, table(KafkaSection))  # [collector.kafka]
    amqp: Optional[AmqpSection] = option(None, table(AmqpSection))  # [collector.amqp]
    alerts: AlertsSection = option(AlertsSection(), table(AlertsSection))
    notify: tuple[NotifierConfig, ...] = option((), notify_tables())
    maintenance: tuple[MaintenanceSection, ...] = option((), maintenance_tables())
    self_check: Optional[SelfCheckSection] = option(None, required_table(SelfCheckSection))
    auth: AuthSection = option(AuthSection(), table(AuthSection))

    def check(self, path: str, problems: Problems) -> None:
        if isinstance(self.down_after, float) and self.down_after <= self.late_after:
            problems.add(f"{path}.down_after", f"must be above late_after ({self.late_after:g})")
        if 0 < self.forget_after < 60:  # the scan for them runs once a minute
            problems.add(f"{path}.forget_after", '"0" (never) or a duration of at least 1m')


@dataclass(frozen=True)
class CollectorConfig:
    collector: CollectorSection
    source: str = "<defaults>"

    @property
    def http_listen(self) -> str:
        return self.collector.http_listen


def api_token_path(section: CollectorSection) -> str:
    """Where the API token is: `api_token_file`, else `{state_dir}/api-token`."""
    return section.api_token_file or os.path.join(section.state_dir, "api-token")


def is_collector_document(data: Mapping[str, Any]) -> bool:
    """A TOML document with a top-level `[collector]` table is a collector config."""
    return "collector" in data


def load_collector_config(path: Optional[str] = None) -> CollectorConfig:
    """Load and validate a collector config file; None gives the embedded defaults."""
    if path is None:
        return parse_collector_config({}, "<defaults>")
    return parse_collector_config(read_toml(path), path)


def parse_collector_config(data: Mapping[str, Any], source: str) -> CollectorConfig:
    """Validate a TOML document; raise ConfigError listing every problem."""
    problems = Problems(source)
    for key in data:
        if key != "collector":
            problems.add(key, "unknown key" + suggest(key, ["collector"]))
    section = load_table(CollectorSection, data.get("collector", {}), "collector", problems)
    if problems:
        raise ConfigError(problems.items)
    return CollectorConfig(collector=section, source=source)
