"""StatsD and DogStatsD encoders: every metric and heartbeat field as a gauge.

StatsD (`format = "statsd"`), the device is part of the name:

    {prefix}.{dev}.{src}.{metric}:{value}|g      fleetbeat.pi-kitchen.system.cpu:3.5|g
    {prefix}.{dev}.heartbeat.{field}:{value}|g   fleetbeat.pi-kitchen.heartbeat.seq:42|g

DogStatsD (`format = "dogstatsd"`), the device and `[agent] tags` are tags:

    {prefix}.{src}.{metric}:{value}|g|#device:{dev},{tag}:{value},...
    fleetbeat.system.cpu:3.5|g|#device:pi-kitchen,site:kitchen
    fleetbeat.heartbeat.seq:42|g|#device:pi-kitchen,site:kitchen

Heartbeat fields (`seq`, `up`, `interval`, `uptime`, `drop`, `drop_<reason>`,
`errors`, the heartbeat metrics) are listed in `fleetbeat.outputs.lines`. A `bye`
sets `heartbeat.seq` and `heartbeat.up` = 0. StatsD servers keep repeating a
gauge's last value at every flush: to see a silent device go quiet, set
`deleteGauges: true` in the etsy statsd config and alert on `heartbeat.seq` not
changing (or on its absence).

`seq`: one is drawn per message, not per datagram: the `heartbeat.seq` gauge
counts heartbeats and byes sent on this output (a jump means lost heartbeats);
readings use their own stream, which these formats do not show.

Names. StatsD: in each part, every character other than `A-Z a-z 0-9 _ - .`
becomes `_`; in the device id and sensor name `.` becomes `_` too (each is one
level of the Graphite tree); in a metric name runs of dots become one dot and
leading or trailing dots are removed (`net.eth0.rx` stays three levels); an
empty part becomes `_`. DogStatsD follows Datadog's rules: metric names keep only
`A-Z a-z 0-9 _ .` (the rest, `-` included, becomes `_`); tag values keep letters,
digits and `_ - : . /` (the rest becomes `_`); tags with an empty value are left
out, and a tag named `device` gives way to the device id. Different names can
thus meet (`a b` and `a_b`); keep metric names plain to avoid it.

Values are gauges without `@rate` (a sample rate applies to counters and timers
only). A leading `-` makes a StatsD gauge a relative change, so a negative value
is sent as two lines in one datagram, `name:0|g` then `name:-5|g`: whether the
server reads the second as "set" or as "add to 0", the gauge is -5.

```toml
[[outputs.udp]]
host = "127.0.0.1"
port = 8125
format = "statsd"        # or "dogstatsd"
prefix = "fleetbeat"     # first part of every metric name
max_datagram = 1432      # lines are packed into datagrams up to this size
```
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Callable

from fleetbeat.outputs.base import Identity, Outgoing
from fleetbeat.outputs.lines import MAX_SEQ_TEXT, Number, heartbeat_fields, pack_lines

DEFAULT_PREFIX = "fleetbeat"
_CACHE_MAX = 4096  # names remembered; cleared when full so memory stays flat

_NOT_STATSD = re.compile(r"[^A-Za-z0-9_.-]")
_NOT_DATADOG_NAME = re.compile(r"[^A-Za-z0-9_.]")
_NOT_DATADOG_TAG = re.compile(r"[^\w:./-]")  # \w: Unicode letters and digits, and _
_DOTS = re.compile(r"\.{2,}")


def clean_name(text: str, *, dots: bool = True, bad: re.Pattern[str] = _NOT_STATSD) -> str:
    """One part of a metric name, sanitised as the module docstring says."""
    name = bad.sub("_", text)
    name = _DOTS.sub(".", name).strip(".") if dots else name.replace(".", "_")
    return name or "_"


def clean_tag_value(text: str) -> str:
    """A DogStatsD tag value: letters, digits and `_ - : . /`; the rest becomes `_`."""
    return _NOT_DATADOG_TAG.sub("_", text)


def gauge_value(value: Number) -> str:
    """The shortest text that reads back as `value` (zero without a sign)."""
    if value == 0:
        return "0"
    return str(value) if type(value) is int else repr(float(value))


class _GaugeEncoder:
    """Shared by both flavours: subclasses say how a name and the line's tail are built."""

    _suffix = "|g"

    def __init__(self, identity: Identity, *, prefix: str = DEFAULT_PREFIX) -> None:
        self.identity = identity
        self.prefix = prefix
        self._names: dict[tuple[str, str], str] = {}

    def _full_name(self, group: str, metric: str) -> str:
        raise NotImplementedError

    def _name(self, group: str, metric: str) -> str:
        key = (group, metric)
        name = self._names.get(key)
        if name is None:
            if len(self._names) >= _CACHE_MAX:
                self._names.clear()
            name = self._names[key] = self._full_name(group, metric)
        return name

    def _gauge(self, name: str, value: Number) -> bytes:
        text = gauge_value(value)
        tail = self._suffix
        if text[0] == "-":
            return f"{name}:0{tail}\n{name}:{text}{tail}".encode()
        return f"{name}:{text}{tail}".encode()

    def encode(
        self, msg: Outgoing, next_seq: Callable[[], int], limit: int
    ) -> tuple[list[bytes], int]:
        name = self._name
        gauge = self._gauge
        if msg.kind == "rd":
            src = msg.src or "readings"
            names = self._names
            tail = self._suffix
            units = []
            for metric, value in msg.metrics.items():  # runs per metric: kept lean
                full = names.get((src, metric)) or name(src, metric)
                if value and value > 0:
                    text = repr(value) if type(value) is float else str(value)
                    units.append(f"{full}:{text}{tail}".encode())
                else:
                    units.append(gauge(full, value))
            if not any(len(u) <= limit for u in units):
                return [], len(units)
            next_seq()  # one per message: keeps `seq` meaning "messages sent"
            return pack_lines(units, limit)
        units = [gauge(name("heartbeat", f), v) for f, v in heartbeat_fields(msg, self.identity)]
        seq_name = name("heartbeat", "seq")
        longest_seq = len(seq_name) + len(MAX_SEQ_TEXT) + len(self._suffix.encode()) + 1
        if longest_seq > limit and not any(len(u) <= limit for u in units):
            return [], len(units) + 1
        units.insert(0, gauge(seq_name, next_seq()))
        return pack_lines(units, limit)


class StatsdEncoder(_GaugeEncoder):
    """Gauges named `{prefix}.{dev}.{src}.{metric}`, several lines per datagram."""

    def __init__(self, identity: Identity, *, prefix: str = DEFAULT_PREFIX) -> None:
        super().__init__(identity, prefix=prefix)
        self._base = f"{clean_name(self.prefix)}.{clean_name(identity.dev, dots=False)}."

    def _full_name(self, group: str, metric: str) -> str:
        return f"{self._base}{clean_name(group, dots=False)}.{clean_name(metric)}"


class DogStatsdEncoder(_GaugeEncoder):
    """Gauges named `{prefix}.{src}.{metric}`, tagged with the device and `[agent] tags`."""

    def __init__(self, identity: Identity, *, prefix: str = DEFAULT_PREFIX) -> None:
        super().__init__(identity, prefix=prefix)
        self._base = clean_name(self.prefix, bad=_NOT_DATADOG_NAME) + "."
        tags = [f"device:{clean_tag_value(identity.dev)}"]
        for key, value in identity.tags.items():
            if key != "device" and value:
                tags.append(f"{clean_tag_value(key)}:{clean_tag_value(value)}")
        self._suffix = "|g|#" + ",".join(tags)

    def _full_name(self, group: str, metric: str) -> str:
        group = clean_name(group, dots=False, bad=_NOT_DATADOG_NAME)
        return f"{self._base}{group}.{clean_name(metric, bad=_NOT_DATADOG_NAME)}"


if TYPE_CHECKING:  # mypy checks the class against the encoder contract
    from fleetbeat.outputs.base import EncoderClass

    _: EncoderClass = StatsdEncoder
    _dog: EncoderClass = DogStatsdEncoder
