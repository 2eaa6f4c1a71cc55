"""The store's events, in order: what a batch inserts, and what a recreated file is given.

Pure (no SQLite): `store.Store.write` and `service.Collector.flush` call these.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def chain(
    events: Sequence[dict[str, Any]], latest: dict[Any, float]
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The event rows to insert, each with its `ends` (the time of the same device's next
    event in the batch; None for its last), and per device (its first time in the batch,
    id): where the device's open stored event ends.

    A device's events are stored in time order: one stamped before the device's previous
    event (`latest`: its newest stored one; a wall clock stepped back) is stored at the
    previous one's time, so its spans never overlap and no time is counted twice."""
    rows: list[tuple[Any, ...]] = []
    last: dict[Any, int] = {}  # device -> index in rows of its latest event so far
    closes = []
    for e in events:
        dev = e["device"]
        at = last.get(dev)
        t = e["time"]
        before = latest.get(dev, -math.inf) if at is None else rows[at][0]
        if type(t) in (int, float) and t < before:
            t = before
        if at is None:
            closes.append((t, dev))
        else:
            rows[at] = (*rows[at][:5], t)
        last[dev] = len(rows)
        rows.append((t, dev, e["from"], e["to"], e["reason"], None))
    return rows, closes


def rewrite(
    kept: list[dict[str, Any]], taken: list[dict[str, Any]], stored: dict[str, float]
) -> list[dict[str, Any]]:
    """The events to write into a recreated database: those in memory (`kept`, oldest
    first) newer than the file's newest of their device (`stored`), and the unwritten
    ones (`taken`) not among them; none twice."""
    out = [e for e in kept if e["time"] > stored.get(e["device"], -math.inf)]
    have = {_key(e) for e in out}
    out.extend(e for e in taken if _key(e) not in have)
    return out


def _key(e: dict[str, Any]) -> tuple[Any, ...]:
    return (e["time"], e["device"], e["from"], e["to"], e["reason"])
