"""Line parsers for serial sensors: one text line in, `{metric: number}` out; and the
framing of bytes into lines (`LineAssembler`).

Each parser is a small callable `parse(line) -> (metrics, skipped)`: `metrics` holds
the finite numbers found, `skipped` the reasons of the fields that were left out
(a value that is not a number, a token that is not `key=value`). A line that
cannot be read at all raises `LineError(reason)`. Reasons are counted in the
sensor's errors, so garbage is never sent and never silent.

- `kv`: `temp=21.5 hum=40` or `temp:21.5,hum:40` (separators: space, tab, `,`, `;`);
- `csv`: cells named by `fields` (an empty name skips a column), same count or the
  line is refused; with `skip_header` a line without any number is a header, skipped;
- `json`: one object per line, nested keys joined with `.`, true/false as 1/0;

Metric names are words of letters, digits, `_` and `-` joined by `.`, starting with
a letter or `_`, up to 128 characters; other names are skipped as `bad_field`.
- `nmea`: GGA and RMC sentences via pynmea2, checksum required and verified;
- `regex`: a pattern with named groups, each group a metric.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Any, Callable

from fleetbeat.errors import InputError

Parsed = tuple[dict[str, float], list[str]]
LineParser = Callable[[str], Parsed]

FORMATS = ("kv", "csv", "json", "nmea", "regex")
KNOTS_TO_MS = 1852.0 / 3600.0
# dot-separated words of letters, digits, _ and -, 1-128 characters
METRIC_NAME = r"(?=.{1,128}\Z)[A-Za-z_][A-Za-z0-9_\-]*(?:\.[A-Za-z0-9_\-]+)*"
_METRIC_NAME = re.compile(METRIC_NAME)


class LineError(InputError):
    """A line that gives no reading at all; `reason` is counted in the heartbeat."""


def to_number(text: str) -> float | None:
    """A finite float from text, or None (NaN, inf, empty and words are not numbers)."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


# --- kv ----------------------------------------------------------------------------

_KV_SPLIT = re.compile(r"[\s,;]+")


def parse_kv(line: str) -> Parsed:
    """`temp=21.5 hum=40` or `temp:21.5,hum:40`."""
    metrics: dict[str, float] = {}
    skipped: list[str] = []
    for token in _KV_SPLIT.split(line.strip()):
        if not token:
            continue
        key, sep, value = token.partition("=")
        if not sep:
            key, sep, value = token.partition(":")
        if not sep or not _METRIC_NAME.fullmatch(key):
            skipped.append("bad_field")
            continue
        number = to_number(value)
        if number is None:
            skipped.append("not_numeric")
        else:
            metrics[key] = number
    if not metrics and not skipped:
        raise LineError("empty_line")
    if not metrics and "bad_field" in skipped:
        raise LineError("bad_line", "no key=value pair")
    return metrics, skipped


# --- csv ---------------------------------------------------------------------------


class CsvParser:
    """Cells named by `fields`, split on `delimiter`; `""` in fields skips a column."""

    def __init__(self, fields: Sequence[str], *, delimiter: str = ",", skip_header: bool = False):
        self.fields = tuple(fields)
        self.delimiter = delimiter
        self.skip_header = skip_header

    def __call__(self, line: str) -> Parsed:
        cells = line.strip().split(self.delimiter)
        if len(cells) != len(self.fields):
            if self.skip_header and _is_header(cells):
                raise LineError("header")
            raise LineError("wrong_field_count", f"{len(cells)} cells, {len(self.fields)} fields")
        metrics: dict[str, float] = {}
        skipped: list[str] = []
        for name, cell in zip(self.fields, cells):
            if not name:
                continue
            number = to_number(cell)
            if number is None:
                skipped.append("not_numeric")
            else:
                metrics[name] = number
        if not metrics and self.skip_header and _is_header(cells):
            raise LineError("header")
        return metrics, skipped


def _is_header(cells: list[str]) -> bool:
    return all(to_number(c) is None and c.strip() for c in cells)


# --- json --------------------------------------------------------------------------


def parse_json(line: str) -> Parsed:
    """One JSON object per line; nested objects flattened with `.`."""
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError) as exc:
        raise LineError("bad_json", str(exc)[:80]) from exc
    if not isinstance(obj, dict):
        raise LineError("bad_json", "not an object")
    metrics: dict[str, float] = {}
    skipped: list[str] = []
    _flatten(obj, "", metrics, skipped)
    return metrics, skipped


def _flatten(obj: dict[str, Any], prefix: str, out: dict[str, float], skipped: list[str]) -> None:
    for key, value in obj.items():
        name = prefix + key
        if not _METRIC_NAME.fullmatch(name):
            skipped.append("bad_field")  # a name no receiver could take as a metric
        elif value is True or value is False:
            out[name] = int(value)
        elif isinstance(value, (int, float)):
            if math.isfinite(value):
                out[name] = value
            else:
                skipped.append("not_numeric")
        elif isinstance(value, dict):
            _flatten(value, name + ".", out, skipped)
        elif isinstance(value, str) and to_number(value) is not None:
            out[name] = float(value)  # firmware that quotes its numbers
        else:
            skipped.append("not_numeric")


# --- nmea --------------------------------------------------------------------------


class NmeaParser:
    """GPS sentences: GGA gives `lat`, `lon` (signed decimal degrees), `alt` (m), `fix`
    (quality 0-8), `sats`, `hdop`; RMC gives `speed` (m/s), `course` (degrees true) and
    `fix_valid` (0/1). Other sentence types are ignored; a wrong or missing checksum is
    the reason `bad_checksum`."""

    def __init__(self) -> None:
        import pynmea2  # only when a serial sensor reads NMEA

        self._nmea = pynmea2

    def __call__(self, line: str) -> Parsed:
        nmea = self._nmea
        try:
            msg = nmea.parse(line.strip(), check=True)
        except nmea.ChecksumError as exc:
            raise LineError("bad_checksum") from exc
        except nmea.SentenceTypeError:
            return {}, []  # a valid sentence of a type we do not read
        except (nmea.ParseError, ValueError, TypeError, IndexError) as exc:
            raise LineError("bad_nmea", str(exc)[:80]) from exc
        kind = getattr(msg, "sentence_type", "")
        try:
            if kind == "GGA":
                return _gga(msg)
            if kind == "RMC":
                return _rmc(msg)
        except (ValueError, TypeError, AttributeError) as exc:
            raise LineError("bad_nmea", f"{kind}: {exc}"[:80]) from exc
        return {}, []


def _nmea_number(out: dict[str, float], skipped: list[str], name: str, text: Any) -> None:
    if text in (None, ""):
        return  # an empty field: the receiver does not know it yet
    number = to_number(str(text))
    if number is None:
        skipped.append("not_numeric")
    else:
        out[name] = number


def _degrees(value: str, hemisphere: str, width: int) -> float:
    """NMEA `ddmm.mmmm` (latitude, width 2) or `dddmm.mmmm` (longitude, width 3)."""
    if len(value) < width + 2 or hemisphere not in ("N", "S", "E", "W"):
        raise ValueError(f"bad coordinate {value!r} {hemisphere!r}")
    degrees = int(value[:width]) + float(value[width:]) / 60.0
    return -degrees if hemisphere in ("S", "W") else degrees


def _gga(msg: Any) -> Parsed:
    out: dict[str, float] = {}
    skipped: list[str] = []
    _nmea_number(out, skipped, "fix", msg.gps_qual)
    _nmea_number(out, skipped, "sats", msg.num_sats)
    if out.get("fix", 0) > 0 and msg.lat and msg.lon:
        out["lat"] = round(_degrees(msg.lat, msg.lat_dir, 2), 7)
        out["lon"] = round(_degrees(msg.lon, msg.lon_dir, 3), 7)
        _nmea_number(out, skipped, "alt", msg.altitude)
        _nmea_number(out, skipped, "hdop", msg.horizontal_dil)
    return out, skipped


def _rmc(msg: Any) -> Parsed:
    out: dict[str, float] = {"fix_valid": 1 if msg.status == "A" else 0}
    skipped: list[str] = []
    if out["fix_valid"]:
        _nmea_number(out, skipped, "speed", msg.spd_over_grnd)
        if "speed" in out:
            out["speed"] = round(out["speed"] * KNOTS_TO_MS, 3)
        _nmea_number(out, skipped, "course", msg.true_course)
    return out, skipped


# --- regex -------------------------------------------------------------------------


class RegexParser:
    """Each named group of `pattern` (searched anywhere in the line) is a metric."""

    def __init__(self, pattern: str) -> None:
        self.pattern = re.compile(pattern)
        if not self.pattern.groupindex:
            raise ValueError("the pattern has no named group, e.g. (?P<temp>[-\\d.]+)")
        for name in self.pattern.groupindex:
            if not _METRIC_NAME.fullmatch(name):
                raise ValueError(f"group name {name!r} is not a metric name (A-Z a-z 0-9 _)")

    def __call__(self, line: str) -> Parsed:
        m = self.pattern.search(line)
        if m is None:
            raise LineError("no_match")
        metrics: dict[str, float] = {}
        skipped: list[str] = []
        for name, text in m.groupdict().items():
            if text is None:
                continue  # an optional group that did not take part
            number = to_number(text)
            if number is None:
                skipped.append("not_numeric")
            else:
                metrics[name] = number
        return metrics, skipped


def make_parser(
    fmt: str,
    *,
    fields: Sequence[str] = (),
    delimiter: str = ",",
    skip_header: bool = False,
    pattern: str = "",
) -> LineParser:
    """The parser for a `format` name and its options."""
    if fmt == "kv":
        return parse_kv
    if fmt == "csv":
        return CsvParser(fields, delimiter=delimiter, skip_header=skip_header)
    if fmt == "json":
        return parse_json
    if fmt == "nmea":
        return NmeaParser()
    if fmt == "regex":
        return RegexParser(pattern)
    raise ValueError(f"unknown line format {fmt!r}; valid: {', '.join(FORMATS)}")


class LineAssembler:
    """Bytes in, complete lines out; CR, LF and CRLF end a line; empty lines vanish.

    A line longer than `max_line` is dropped (counted `line_too_long`) together with
    the rest of it up to its terminator, so memory stays bounded whatever arrives.
    """

    def __init__(self, max_line: int, count: Callable[[str], None]) -> None:
        self.max_line = max_line
        self._count = count
        self._buf = b""
        self._discarding = False

    @property
    def pending(self) -> int:
        """Bytes of an unfinished line held now."""
        return len(self._buf)

    def reset(self, *, sync: bool = False) -> None:
        """Forget the unfinished line; `sync` also drops everything up to the next end."""
        self._buf = b""
        self._discarding = sync

    def feed(self, data: bytes) -> list[bytes]:
        parts = data.replace(b"\r", b"\n").split(b"\n")
        tail = parts.pop()
        if parts:
            if self._discarding:
                self._discarding = False
                parts[0] = b""
            else:
                parts[0] = self._buf + parts[0]
            self._buf = b""
        elif self._discarding:
            return []
        self._buf += tail
        if len(self._buf) > self.max_line:
            self._count("line_too_long")
            self._buf = b""
            self._discarding = True
        lines = []
        for line in parts:
            if len(line) > self.max_line:
                self._count("line_too_long")
            elif line:
                lines.append(line)
        return lines
