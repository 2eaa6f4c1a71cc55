"""Independent readers of what the encoders write, from the protocol references.

Written from the InfluxDB line protocol reference and etsy statsd's source, not
from the encoders: a test that checks an encoder against these checks it against
the protocol, not against itself.
"""

from __future__ import annotations

import math
import re
from typing import Union

Number = Union[int, float]
Point = tuple[str, tuple[tuple[str, str], ...], dict[str, Number], int]


class LineError(ValueError):
    pass


# --- InfluxDB line protocol --------------------------------------------------------


def _read(s: str, i: int, stops: str, escapable: str) -> tuple[str, int]:
    """Read up to an unescaped char of `stops`; a backslash escapes one of `escapable`."""
    out = []
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s) and s[i + 1] in escapable:
            out.append(s[i + 1])
            i += 2
            continue
        if c in stops:
            break
        out.append(c)
        i += 1
    return "".join(out), i


def parse_influx_line(line: str) -> Point:
    """(measurement, sorted tags, fields, timestamp) of one line; LineError if malformed."""
    if not line or line.startswith("#") or "\n" in line:
        raise LineError(f"not a point: {line!r}")
    measurement, i = _read(line, 0, ", ", ",\\ ")
    if not measurement:
        raise LineError("empty measurement")
    tags: list[tuple[str, str]] = []
    while i < len(line) and line[i] == ",":
        key, i = _read(line, i + 1, "=, ", ",= \\")
        if i >= len(line) or line[i] != "=":
            raise LineError(f"tag {key!r} without a value")
        value, i = _read(line, i + 1, ", =", ",= \\")
        if not key or not value:
            raise LineError("empty tag key or value")
        tags.append((key, value))
    if i >= len(line) or line[i] != " ":
        raise LineError("no field set")
    fields: dict[str, Number] = {}
    i += 1
    while True:
        key, i = _read(line, i, "=, ", ",= \\")
        if i >= len(line) or line[i] != "=" or not key:
            raise LineError(f"bad field {key!r}")
        raw, i = _read(line, i + 1, ", ", "")
        if key in fields:
            raise LineError(f"field {key!r} twice")
        fields[key] = _influx_number(raw)
        if i < len(line) and line[i] == ",":
            i += 1
            continue
        break
    if i >= len(line) or line[i] != " ":
        raise LineError("no timestamp")
    ts = line[i + 1 :]
    if not re.fullmatch(r"-?[0-9]+", ts):
        raise LineError(f"bad timestamp {ts!r}")
    if tags != sorted(tags):
        raise LineError("tags not sorted by key")
    return measurement, tuple(tags), fields, int(ts)


def _influx_number(raw: str) -> Number:
    if re.fullmatch(r"-?[0-9]+i", raw):
        value = int(raw[:-1])
        if not -(2**63) <= value < 2**63:
            raise LineError(f"integer out of range: {raw}")
        return value
    if not re.fullmatch(r"-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?", raw):
        raise LineError(f"not a number: {raw!r}")
    value = float(raw)
    if not math.isfinite(value):
        raise LineError(f"not finite: {raw}")
    return value


def influx_points(payloads: list[bytes]) -> list[Point]:
    return [parse_influx_line(line) for p in payloads for line in p.decode().split("\n")]


# --- StatsD / DogStatsD --------------------------------------------------------------

_STATSD_LINE = re.compile(r"([^:|#\n]+):([^|]+)\|(g|c|ms|s)(?:\|@([0-9.]+))?(?:\|#([^|]*))?")


def parse_statsd_line(line: str) -> tuple[str, str, str, tuple[str, ...]]:
    """(name, value text, type, tags) of one line; LineError if it has a sample rate."""
    m = _STATSD_LINE.fullmatch(line)
    if m is None:
        raise LineError(f"not a statsd line: {line!r}")
    name, value, kind, rate, tags = m.groups()
    if rate is not None:
        raise LineError(f"sample rate on a {kind}: {line!r}")
    return name, value, kind, tuple(tags.split(",")) if tags else ()


def apply_gauges(payloads: list[bytes], gauges: dict[tuple[str, tuple[str, ...]], float]) -> None:
    """Update `gauges` as etsy statsd does: a value with a leading sign adds to the gauge."""
    for payload in payloads:
        for line in payload.decode().split("\n"):
            name, value, kind, tags = parse_statsd_line(line)
            assert kind == "g", line
            key = (name, tags)
            if value[0] in "+-" and gauges.get(key):
                gauges[key] += float(value)
            else:
                gauges[key] = float(value)
