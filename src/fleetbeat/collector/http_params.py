"""Query parameters of the history routes, each checked as an attacker would send it.

Every bad value is a `BadRequest` whose message names the parameter (a 400): numbers
must be finite, times from 0 to MAX_TIME epoch seconds, a range in order and at most
MAX_RANGE long (7 days for the strips), counts plain decimal digits within bounds,
device ids valid wire ids (MAX_IDS at most: what fits the 16 KiB request head), fields
known names,
tag keys at most MAX_BY of wire.MAX_TEXT characters. A repeated single-valued
parameter counts by its last value.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, Optional

from fleetbeat import wire
from fleetbeat.collector.device import Device
from fleetbeat.collector.liveness import STATES

MAX_RANGE = 31 * 86400.0
MAX_TIME = 1e11  # s: the year 5138
MAX_IDS = 200  # 200 ids of 64 characters (13.6 KB) fit the 16 KiB request head
MAX_BY = 8
# every key of a device's JSON (view.FleetView.devices), and the availability
FIELDS = frozenset((*Device("x", 0.0, 0.0).snapshot(), "availability"))
_COUNT = re.compile(r"[0-9]{1,9}")


class BadRequest(Exception):
    """A query parameter is invalid; the message goes back to the client with a 400."""


def filter_devices(
    devices: list[dict[str, Any]], states: list[str], tags: list[str]
) -> list[dict[str, Any]]:
    """Devices in any of `states` (all when empty) that carry every `key:value` in `tags`.

    A tag filter without a colon (`site`) matches devices that have that tag key.
    """
    wanted: set[str] = set()
    for item in states:
        wanted.update(s.strip() for s in item.split(",") if s.strip())
    unknown = sorted(wanted - set(STATES))
    if unknown:
        raise BadRequest(f"unknown state {unknown[0]!r}; expected one of {', '.join(STATES)}")
    pairs: list[tuple[str, Optional[str]]] = []
    for item in tags:
        key, sep, value = item.partition(":")
        if not key:
            raise BadRequest(f"tag filter {item!r}: expected KEY:VALUE or KEY")
        pairs.append((key, value if sep else None))

    def keep(dev: dict[str, Any]) -> bool:
        if wanted and dev.get("state") not in wanted:
            return False
        dev_tags = dev.get("tags") or {}
        for key, value in pairs:
            if key not in dev_tags or (value is not None and str(dev_tags[key]) != value):
                return False
        return True

    return [d for d in devices if keep(d)]


def _last(query: Mapping[str, list[str]], name: str) -> Optional[str]:
    values = query.get(name)
    return values[-1] if values else None


def number(query: Mapping[str, list[str]], name: str, default: float) -> float:
    text = _last(query, name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        raise BadRequest(f"{name}: expected a number, got {text[:40]!r}") from None
    if not math.isfinite(value):
        raise BadRequest(f"{name}: expected a finite number, got {text[:40]!r}")
    return value


def _epoch(query: Mapping[str, list[str]], name: str, default: float) -> float:
    """A time in epoch seconds, 0 to MAX_TIME (a year past 5000): past it, a time plus or
    minus a day is the same double, and `since` would be blamed for `until`."""
    value = number(query, name, default)
    if _last(query, name) is not None and not 0.0 <= value <= MAX_TIME:
        raise BadRequest(f"{name}: expected epoch seconds from 0 to {MAX_TIME:g}, got "
                         f"{_last(query, name) or value!r:.40}")  # fmt: skip
    return value


def time_range(
    query: Mapping[str, list[str]], default: float, now: float, *, longest: float = MAX_RANGE
) -> tuple[float, float]:
    """since and until: finite, since before until, at most `longest` apart."""
    until = _epoch(query, "until", now)
    since = _epoch(query, "since", until - default)
    if not since < until:
        raise BadRequest(f"since: must be before until ({since:g} is not before {until:g})")
    if until - since > longest:
        raise BadRequest(f"since: the range is at most {longest / 86400:g} days ({longest:g} s)"
                         f" long, got {until - since:g} s")  # fmt: skip
    return since, until


def count(query: Mapping[str, list[str]], name: str, most: int) -> Optional[int]:
    text = _last(query, name)
    if text is None:
        return None
    if not _COUNT.fullmatch(text) or int(text) > most:
        raise BadRequest(f"{name}: expected a whole number from 0 to {most}, got {text[:40]!r}")
    return int(text)


def field_names(query: Mapping[str, list[str]]) -> Optional[list[str]]:
    if "fields" not in query:
        return None
    names = [n.strip() for item in query["fields"] for n in item.split(",") if n.strip()]
    unknown = [n for n in names if n not in FIELDS]
    if unknown or not names:
        got = repr(unknown[0][:40]) if unknown else "nothing"
        raise BadRequest(f"fields: unknown field {got}; known: {', '.join(sorted(FIELDS))}")
    return list(dict.fromkeys(names))


def device_ids(query: Mapping[str, list[str]]) -> list[str]:
    ids: dict[str, None] = {}
    for item in query.get("id", ()):
        for dev_id in item.split(","):
            if not wire.DEVICE_ID.fullmatch(dev_id):
                raise BadRequest(f"id: {dev_id[:70]!r} is not a device id")
            ids[dev_id] = None
            if len(ids) > MAX_IDS:
                raise BadRequest(f"id: at most {MAX_IDS} devices per request")
    return list(ids)


def by_keys(query: Mapping[str, list[str]]) -> list[str]:
    keys: dict[str, None] = {}
    for item in query.get("by", ()):
        for part in item.split(","):
            key = part.strip()
            if not key or len(key) > wire.MAX_TEXT:
                raise BadRequest(f"by: expected tag keys of 1 to {wire.MAX_TEXT} characters, "
                                 f"comma-separated, got {item[:40]!r}")  # fmt: skip
            keys[key] = None
            if len(keys) > MAX_BY:
                raise BadRequest(f"by: at most {MAX_BY} tag keys")
    return list(keys)
