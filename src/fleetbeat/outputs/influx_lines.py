"""InfluxDB line protocol encoder, for InfluxDB, Telegraf and VictoriaMetrics over UDP.

One line per reading, measurement `{src}`, tags `device` and `[agent] tags`
(sorted by key), the metrics as fields, and a timestamp:

    system,device=pi-kitchen,site=kitchen cpu=3.5,load1=0.42,procs=173i 1764160000123000000
    fleetbeat_heartbeat,device=pi-kitchen,site=kitchen seq=42i,up=1i,interval=10.0,...

Heartbeats go to the measurement `{prefix}_heartbeat` (`fleetbeat_heartbeat`)
with the fields listed in `fleetbeat.outputs.lines` (`seq`, `up`, `interval`,
`uptime`, `drop`, `drop_<reason>`, `errors`, the heartbeat metrics). A `bye` is a
point with `seq` and `up=0i`. VictoriaMetrics names series `{measurement}_{field}`:
`system_cpu{device="pi-kitchen"}`, `fleetbeat_heartbeat_seq`.

`seq`: one is drawn per message, not per datagram or line: the heartbeat's `seq`
field counts heartbeats and byes sent on this output (a jump means lost
heartbeats); readings use their own stream, which this format does not show.

Timestamps are in nanoseconds (the precision UDP listeners of InfluxDB, Telegraf
and VictoriaMetrics assume), with millisecond resolution.

Types: Python ints (and booleans, as 0/1) are integers with the `i` suffix; an
int outside the signed 64-bit range is written as a float. Floats are written
in their shortest exact form (`3.5`, `1e-07`). No string fields are sent
(VictoriaMetrics would store them as 0).

Escaping, per the line protocol reference: in the measurement, commas and
spaces; in tag keys, tag values and field keys, commas, equals signs and spaces;
each with a backslash. A backslash itself is written `\\\\`, which the reference
(and VictoriaMetrics, tested) reads as one backslash; older parsers may keep
both. Line protocol cannot carry a newline: `\\n` and `\\r` become spaces. A tag
with an empty value is left out (InfluxDB rejects it); a tag named `device`
gives way to the device id; an empty name becomes `_`, and so does a leading `#`
in a measurement (a line starting with `#` is a comment) and a double quote in a
field key (VictoriaMetrics would read it as the start of a string and store 0).

A reading whose line would exceed `max_datagram` is split into several lines
(same measurement, tags and timestamp: InfluxDB merges them into one point);
a field too large for a line of its own is dropped and counted as `too_large`.
Lines are packed into datagrams, never split across two.

```toml
[[outputs.udp]]
host = "127.0.0.1"
port = 8089              # InfluxDB/Telegraf UDP listener, VictoriaMetrics -influxListenAddr
format = "influx"
prefix = "fleetbeat"     # heartbeats go to the measurement {prefix}_heartbeat
max_datagram = 1432      # lines are packed into datagrams up to this size
```
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Callable, Optional

from fleetbeat.outputs.base import Identity, Outgoing
from fleetbeat.outputs.lines import MAX_SEQ_TEXT, Number, group_units, heartbeat_fields, pack_lines

DEFAULT_PREFIX = "fleetbeat"
_CACHE_MAX = 4096  # names remembered; cleared when full so memory stays flat
_INT64 = 2**63

_NEWLINE = {"\n": "\\ ", "\r": "\\ "}  # a newline becomes an (escaped) space
_MEASUREMENT = str.maketrans({"\\": "\\\\", ",": "\\,", " ": "\\ ", **_NEWLINE})
_KEY = str.maketrans({"\\": "\\\\", ",": "\\,", "=": "\\=", " ": "\\ ", **_NEWLINE})
# VictoriaMetrics reads a lone " in a field key as the start of a string value and
# stores 0: a double quote in a field key is written as _ instead.
_FIELD_KEY = str.maketrans({"\\": "\\\\", ",": "\\,", "=": "\\=", " ": "\\ ", '"': "_", **_NEWLINE})


def escape_measurement(name: str) -> str:
    if name.startswith("#"):  # a line starting with # is a comment
        name = "_" + name[1:]
    return name.translate(_MEASUREMENT) or "_"


def escape_key(text: str) -> str:
    """A tag key or tag value."""
    return text.translate(_KEY) or "_"


def escape_field_key(text: str) -> str:
    return text.translate(_FIELD_KEY) or "_"


def field_value(value: Number) -> Optional[str]:
    """`42i` for an int, `3.5` for a float; None if a float cannot hold it."""
    if type(value) is int:
        if -_INT64 <= value < _INT64:
            return f"{value}i"
        try:
            return repr(float(value))
        except OverflowError:
            return None
    return repr(value)


class InfluxEncoder:
    """Readings and heartbeats as InfluxDB line protocol, several lines per datagram."""

    def __init__(self, identity: Identity, *, prefix: str = DEFAULT_PREFIX) -> None:
        self.identity = identity
        tags = {k: v for k, v in identity.tags.items() if k != "device" and v}
        tags["device"] = identity.dev
        self._tags = "".join(f",{escape_key(k)}={escape_key(tags[k])}" for k in sorted(tags))
        self._heads: dict[str, bytes] = {}
        self._hb_head = (escape_measurement(f"{prefix}_heartbeat") + self._tags + " ").encode()
        self._fields: dict[str, bytes] = {}

    def _head(self, src: str) -> bytes:
        head = self._heads.get(src)
        if head is None:
            if len(self._heads) >= _CACHE_MAX:
                self._heads.clear()
            head = self._heads[src] = (escape_measurement(src) + self._tags + " ").encode()
        return head

    def _key(self, name: str) -> bytes:
        key = self._fields.get(name)
        if key is None:
            if len(self._fields) >= _CACHE_MAX:
                self._fields.clear()
            key = self._fields[name] = (escape_field_key(name) + "=").encode()
        return key

    def encode(
        self, msg: Outgoing, next_seq: Callable[[], int], limit: int
    ) -> tuple[list[bytes], int]:
        tail = b" %d" % (round(msg.ts * 1000) * 1_000_000)
        items: Iterable[tuple[str, Number]]
        if msg.kind == "rd":
            head = self._head(msg.src or "readings")
            items = msg.metrics.items()
        else:
            head = self._hb_head
            items = heartbeat_fields(msg, self.identity)
        # escaped key -> "key=value": names that escape alike (rare) keep the last value
        written: dict[bytes, bytes] = {}
        unwritable = 0
        keys = self._fields
        for name, value in items:
            key = keys.get(name) or self._key(name)
            if type(value) is float:  # the common case, inlined: this runs per metric
                written[key] = key + repr(value).encode()
                continue
            text = field_value(value)
            if text is None:
                unwritable += 1
            else:
                written[key] = key + text.encode()
        parts = list(written.values())
        room = limit - len(head) - len(tail)
        if msg.kind != "rd":
            parts.insert(0, b"seq=" + MAX_SEQ_TEXT.encode() + b"i")
        if not any(len(p) <= room for p in parts):
            return [], len(parts) + unwritable
        seq = next_seq()  # one per message: keeps `seq` meaning "messages sent"
        if msg.kind != "rd":
            parts[0] = b"seq=%di" % seq
        # fields spread over several lines of the same point when they do not fit in one
        field_sets, too_large = group_units(parts, room)
        lines = [head + b",".join(fields) + tail for fields in field_sets]
        payloads, too_large_lines = pack_lines(lines, limit)
        return payloads, unwritable + too_large + too_large_lines


if TYPE_CHECKING:  # mypy checks the class against the encoder contract
    from fleetbeat.outputs.base import EncoderClass

    _: EncoderClass = InfluxEncoder
