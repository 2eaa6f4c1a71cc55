"""What the line formats (StatsD, DogStatsD, InfluxDB) share: heartbeat fields, packing.

Heartbeat fields, in this order (names as a StatsD or Influx user sees them):

| name | value |
|---|---|
| `seq` | the heartbeat's sequence number: +1 per heartbeat or bye sent on this output |
| `up` | 1 in a heartbeat, 0 in the `bye` sent when the agent stops |
| `interval` | seconds until the next heartbeat is due |
| `uptime` | seconds since the device booted (`ts - bt`); left out if boot time is unknown |
| `drop` | messages this output dropped locally since the agent started |
| `drop_<reason>` | the same, by reason (`drop_buffer_full`, `drop_too_large`, ...) |
| `errors` | sensor errors since the agent started, all sensors and reasons |
| heartbeat metrics | `[agent] heartbeat_metrics` (`cpu`, `mem`, `temp`, ...) |

A `bye` carries only `seq` and `up` (0). A heartbeat metric named like one of
the fields above is left out: the field wins (`uptime` means the same in both).

Several lines share a datagram, separated by "\\n", up to the size limit. A datagram
is split only between lines; a line (or a group of lines that must arrive together)
longer than the limit is dropped and counted, never cut.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Union

from fleetbeat.outputs.base import Identity, Outgoing

Number = Union[int, float]
FIXED_FIELDS = frozenset({"seq", "up", "interval", "uptime", "drop", "errors"})
MAX_SEQ_TEXT = str(2**64 - 1)  # the longest seq: room reserved before one is drawn


def heartbeat_fields(msg: Outgoing, identity: Identity) -> list[tuple[str, Number]]:
    """A heartbeat's or bye's fields after `seq`, which the encoder adds once drawn."""
    if msg.kind != "hb":
        return [("up", 0)]
    fields: list[tuple[str, Number]] = [("up", 1)]
    if msg.interval is not None:
        fields.append(("interval", msg.interval))
    if identity.boot_time:
        fields.append(("uptime", round(msg.ts - identity.boot_time, 3)))
    fields.append(("drop", msg.drop))
    if msg.drop_by:
        fields.extend((f"drop_{reason}", n) for reason, n in sorted(msg.drop_by.items()))
    errors = msg.errors or {}
    fields.append(("errors", sum(n for by_reason in errors.values() for n in by_reason.values())))
    fields.extend(
        (name, value)
        for name, value in msg.metrics.items()
        if name not in FIXED_FIELDS and not name.startswith("drop_")
    )
    return fields


def pack_lines(units: Iterable[bytes], limit: int) -> tuple[list[bytes], int]:
    """Join `units` with newlines into payloads of at most `limit` bytes.

    A unit is one line, or several lines joined by "\\n" that must not be
    separated. Units keep their order. Returns the payloads and how many units
    were dropped because they alone exceed `limit`.
    """
    groups, too_large = group_units(units, limit)
    return [b"\n".join(g) for g in groups], too_large


def group_units(units: Iterable[bytes], limit: int) -> tuple[list[list[bytes]], int]:
    """Greedy groups of `units`, in order, each at most `limit` bytes once joined by a
    one-byte separator; and how many units were dropped because they alone exceed it."""
    groups: list[list[bytes]] = []
    too_large = 0
    current: list[bytes] = []
    size = -1  # bytes in `current` counting a separator before each unit but the first
    for unit in units:
        n = len(unit)
        if n > limit:
            too_large += 1
            continue
        if size + 1 + n > limit:
            groups.append(current)
            current = []
            size = -1
        current.append(unit)
        size += 1 + n
    if current:
        groups.append(current)
    return groups, too_large
