"""Config records for alerts: `[collector.alerts]` with its rules, `[[collector.notify]]`,
`[[collector.maintenance]]` and `[collector.self_check]`.

What alerts and how notifications are grouped:

```toml
[collector.alerts]
on = ["down", "missing", "flapping", "reboot"]  # also "offline", "restart", "loss", "rule"
group_by = ["site"]          # tag keys; devices without them form one group
group_wait = "30s"           # changes within this go out as one notification
group_interval = "5m"        # a group's later changes at most this often
repeat_interval = "4h"       # a reminder while an alert lasts
send_resolved = true
loss_above = 20.0            # recent heartbeat loss, %, when "loss" is in `on`
loss_for = "10m"
flapping = 6                 # more than this many up/down changes...
flapping_window = "10m"      # ...within this: one "flapping" alert instead
parent_tag = "parent"        # a device tagged parent = "gw-barn" is quiet while gw-barn is down

[[collector.alerts.rule]]
name = "undervoltage"
metric = "undervoltage"
above = 0
severity = "critical"

[[collector.alerts.rule]]
name = "hot"
metric = "temp"
above = 80.0
for = "5m"                   # held this long before it alerts
severity = "warning"         # "critical", "warning" or "info"
match = { tag = "site:barn" }
```

Kinds: `down` (missed heartbeats), `missing` (an `expected_devices` id never heard from
for `missing_after`, or a device down because it stayed silent through a collector
restart), `offline` (a `bye` or the MQTT Last Will), `flapping`, `reboot` and
`restart` (one-off: notified once, never resolved), `loss`, and `rule`. Rules alert whenever
`[[collector.alerts.rule]]` tables exist (writing one is the intent); "rule" in `on` is allowed.

A `match` (rules, notifiers, maintenance windows, silences) is one vocabulary everywhere:
`device` (an id or a glob such as "pi-barn-*") and `tag` ("key:value", or an array of them,
all of which must hold). An absent `match` matches every device.

Where notifications go: see `fleetbeat.collector.notifiers` (each `[[collector.notify]]`
table's `type` and keys). Maintenance windows: see `fleetbeat.collector.suppress`. The dead
man's switch: see `fleetbeat.collector.self_check`.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Optional, TypeVar

from fleetbeat.config.frozen import dataclass
from fleetbeat.config.schema import (
    INVALID,
    Parser,
    Problems,
    array,
    boolean,
    describe,
    did_you_mean,
    duration,
    integer,
    load_table,
    number,
    option,
    string,
    table,
)

if TYPE_CHECKING:
    from fleetbeat.collector.notifiers.base import NotifierConfig

T = TypeVar("T")
KINDS = ("down", "missing", "offline", "flapping", "reboot", "restart", "loss", "rule")
DEFAULT_ON = ("down", "missing", "flapping", "reboot")
SEVERITIES = ("info", "warning", "critical")  # in rising order: a filter keeps this and above
_TAG_KEY = r"[A-Za-z0-9_.-]{1,64}"
_NAME = r"[A-Za-z0-9_.:-]{1,64}"


def load_required(cls: type[T], value: Any, path: str, problems: Problems) -> T:
    """`load_table`, and a problem for each of the record's `REQUIRED` keys that is absent."""
    if isinstance(value, Mapping):
        for key in getattr(cls, "REQUIRED", ()):
            if key not in value:
                problems.add(f"{path}.{key}", "is required")
    return load_table(cls, value, path, problems)


def required_table(cls: type[Any]) -> Parser:
    """A parser for a table of `cls` whose REQUIRED keys must be present."""

    def parse(value: Any, path: str, problems: Problems) -> Any:
        return load_required(cls, value, path, problems)

    return parse


def _tags(value: Any, path: str, problems: Problems) -> Any:
    """ "key:value" or an array of them -> a tuple of "key:value" strings."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        return problems.expected(path, '"key:value" or an array of them', value)
    for i, item in enumerate(items):
        key, sep, val = item.partition(":") if isinstance(item, str) else ("", "", "")
        if not sep or not key or not val:
            where = path if isinstance(value, str) else f"{path}[{i}]"
            return problems.expected(where, 'a tag as "key:value", such as "site:barn"', item)
    return tuple(items)


@dataclass(frozen=True)
class Match:
    """Which devices something applies to; empty matches every device."""

    device: str = option("", string(allow_empty=True, what='a device id or a glob ("pi-*")'))
    tag: tuple[str, ...] = option((), _tags)  # "key:value", all of which must hold

    def __bool__(self) -> bool:
        return bool(self.device or self.tag)

    def matches(self, device: str, tags: Mapping[str, str]) -> bool:
        if self.device and not (device == self.device or fnmatch.fnmatchcase(device, self.device)):
            return False
        for pair in self.tag:
            key, _, value = pair.partition(":")
            if tags.get(key) != value:
                return False
        return True

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.device:
            out["device"] = self.device
        if self.tag:
            out["tag"] = self.tag[0] if len(self.tag) == 1 else list(self.tag)
        return out


def parse_match(data: Any, path: str, problems: Problems) -> Match:
    """A Match from a TOML table or an API request's JSON object (problems recorded)."""
    return load_table(Match, data, path, problems)


@dataclass(frozen=True)
class RuleSection:
    REQUIRED: ClassVar[tuple[str, ...]] = ("name", "metric")

    name: str = option("", string(pattern=_NAME, what="a rule name of A-Z a-z 0-9 _ . : -"))
    metric: str = option("", string(what="a heartbeat metric name"))
    above: Optional[float] = option(None, number())
    below: Optional[float] = option(None, number())
    severity: str = option("warning", string(choices=SEVERITIES))
    match: Match = option(Match(), table(Match))
    hold: float = option(0.0, duration(allow_zero=True), key="for")  # `for`: a Python keyword

    def check(self, path: str, problems: Problems) -> None:
        if (self.above is None) == (self.below is None):
            problems.add(path, "set exactly one of above or below")

    def breached(self, value: float) -> bool:
        if self.above is not None:
            return value > self.above
        return self.below is not None and value < self.below


@dataclass(frozen=True)
class AlertsSection:
    on: tuple[str, ...] = option(DEFAULT_ON, array(string(choices=KINDS)))
    group_by: tuple[str, ...] = option(("site",), array(string(pattern=_TAG_KEY, what="a tag key")))
    group_wait: float = option(30.0, duration(allow_zero=True))
    group_interval: float = option(300.0, duration())
    repeat_interval: float = option(4 * 3600.0, duration())
    send_resolved: bool = option(True, boolean())
    loss_above: float = option(20.0, number(min=0.0, max=100.0))
    loss_for: float = option(600.0, duration(allow_zero=True))
    flapping: int = option(6, integer(min=2, max=1000))
    flapping_window: float = option(600.0, duration())
    parent_tag: str = option("parent", string(pattern=_TAG_KEY, what="a tag key"))
    rule: tuple[RuleSection, ...] = option((), array(required_table(RuleSection)))

    def check(self, path: str, problems: Problems) -> None:
        seen: set[str] = set()
        for i, r in enumerate(self.rule):
            if r.name in seen:
                problems.add(f"{path}.rule[{i}].name", f'"{r.name}" names two rules')
            seen.add(r.name)
        if self.repeat_interval < self.group_interval:
            problems.add(
                f"{path}.repeat_interval",
                f"must be at least group_interval ({self.group_interval:g} s)",
            )

    def alerts_on(self, kind: str) -> bool:
        return kind in self.on or (kind == "rule" and bool(self.rule))


def _cron(value: Any, path: str, problems: Problems) -> Any:
    from fleetbeat.collector.cron import Cron, CronError

    if not isinstance(value, str):
        return problems.expected(path, 'a cron expression such as "0 2 * * sun"', value)
    try:
        Cron(value)
    except CronError as exc:
        problems.add(path, f"{exc} (in {describe(value)})")
        return INVALID
    return value


def _timezone(value: Any, path: str, problems: Problems) -> Any:
    if not isinstance(value, str):
        return problems.expected(path, 'a time zone such as "Europe/Berlin"', value)
    if value:
        import zoneinfo

        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            return problems.expected(path, 'a time zone such as "Europe/Berlin"', value)
    return value


@dataclass(frozen=True)
class MaintenanceSection:
    REQUIRED: ClassVar[tuple[str, ...]] = ("name", "match", "start", "duration")

    name: str = option("", string(pattern=_NAME, what="a window name of A-Z a-z 0-9 _ . : -"))
    match: Match = option(Match(), table(Match))
    start: str = option("", _cron)
    duration: float = option(0.0, duration())
    timezone: str = option("", _timezone)  # "" is the collector's local time
    comment: str = option("", string(allow_empty=True))


def _url(value: Any, path: str, problems: Problems) -> Any:
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        return problems.expected(path, "an http:// or https:// URL", value)
    return value


def url() -> Any:
    """A parser for http:// and https:// URLs."""
    return _url


def readable_file(value: Any, path: str, problems: Problems) -> Any:
    """A path to a file the collector can read (secrets live in files, not in the config);
    "" is unset."""
    if not isinstance(value, str):
        return problems.expected(path, "a file path", value)
    if value and not os.access(value, os.R_OK):
        problems.add(path, f"cannot read {describe(value)}")
        return INVALID
    return value


@dataclass(frozen=True)
class SelfCheckSection:
    REQUIRED: ClassVar[tuple[str, ...]] = ("url",)

    url: str = option("", _url)
    every: float = option(60.0, duration(min=1.0))
    timeout: float = option(10.0, duration())


def _notifier(value: Any, path: str, problems: Problems) -> Any:
    """One `[[collector.notify]]` table, checked against its type's Config record."""
    from fleetbeat.registry import NOTIFIERS, notifier_class

    if not isinstance(value, Mapping):
        return problems.expected(path, "a table", value)
    kind = value.get("type")
    if kind not in NOTIFIERS:
        names = ", ".join(f'"{n}"' for n in NOTIFIERS)
        hint = did_you_mean(kind, list(NOTIFIERS)) if isinstance(kind, str) else ""
        problems.add(f"{path}.type", f"expected one of {names}, got {describe(kind)}{hint}")
        return INVALID
    return load_required(notifier_class(kind).Config, value, path, problems)


def _notifiers(value: Any, path: str, problems: Problems) -> Any:
    found = array(_notifier)(value, path, problems)
    if found is INVALID:
        return INVALID
    seen: set[str] = set()
    for i, n in enumerate(found):
        if n.label in seen:
            problems.add(f"{path}[{i}].name", f'two notifiers are named "{n.label}": name each')
        seen.add(n.label)
    return found


def notify_tables() -> Any:
    """The parser of `[[collector.notify]]`: every table valid, every name unique."""
    return _notifiers


def maintenance_tables() -> Parser:
    """The parser of `[[collector.maintenance]]`."""
    return array(required_table(MaintenanceSection))


NOTIFY_DEFAULT: tuple[NotifierConfig, ...] = ()
