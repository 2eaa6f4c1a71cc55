"""Every device's availability from sums SQLite makes, plus each device's open segment.

The same arithmetic as `history.tally(history.segments(...))` (the rules are in
`collector.history`), split for speed at 10,000 devices and 900,000 events: each
stored event knows when it ended (`ends`, the time of the device's next event, set
when that one is written), so SQLite sums the ended spans clipped to each window in
one pass over a covering index (`store_reader.StoreReader.spans`), and Python adds per
device only what the sums cannot know: the open segment after its latest event (in
its current state, see `history.segments`) and, when its older history is pruned, the
time before its oldest event back to the store's `pruned_to` (in that event's `from`
state; never before a `first_seen` or a `forgotten` event, never before `pruned_to`,
nothing if the store never pruned). See
`benchmarks/history.py` for how it compares with folding every row in Python.
tests/collector/test_http_history.py checks it against the general path on a real
store.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Optional

from fleetbeat.collector.history import (
    COUNTED,
    GOOD,
    LONGEST,
    WINDOWS,
    Tally,
    segments,
    tally,
)


def fleet_tallies(
    spans: Sequence[tuple[Any, ...]],
    open_events: Mapping[str, tuple[float, str]],
    first_from: Mapping[str, tuple[float, str]],
    current: Mapping[str, tuple[str, float]],
    now: float,
    *,
    pruned_to: Optional[float] = None,
) -> Iterator[tuple[str, Tally]]:
    """(device, tally) for every device in `current` (the fleet's state and state_since).

    `spans`: `StoreReader.spans(now)`; `open_events`: each device's latest stored event
    (time, to); `first_from`: (time, from) of the oldest stored event of the devices
    whose older history is gone, filled back to `pruned_to` (None: not filled). Devices
    not in `current` (no longer known) are left out.
    """
    w30 = now - LONGEST
    sums = {row[0]: row for row in spans}
    for dev, cur in current.items():
        opened = open_events.get(dev)
        if opened is None:  # nothing stored: its current state since state_since
            yield dev, tally(segments((), w30, now, now, current=cur), now)
            continue
        row = sums.get(dev)
        acc = [math.inf, *(float(x or 0.0) for x in row[1:7])] if row else [math.inf] + [0.0] * 6
        if row and row[7] is not None:
            acc[0] = row[7]
        pieces: list[tuple[float, float, Optional[str]]] = []
        fill = first_from.get(dev) if pruned_to is not None else None
        if fill is not None and pruned_to is not None:
            pieces.append((pruned_to, fill[0], fill[1]))
        t_open, s_open = opened
        state, state_since = cur
        if state_since > t_open:  # a change not stored yet
            pieces.append((t_open, min(state_since, now), s_open))
            pieces.append((state_since, now, state))
        else:
            pieces.append((t_open, now, state))
        yield dev, _add(acc, pieces, now)


class TallyTable(Mapping[str, Tally]):
    """The fleet's tallies, kept compact for the minute they are cached: seven doubles a
    device in one array (56 bytes, against about 270 for a tuple of floats), and the
    index of each id (the id strings are the fleet's own)."""

    def __init__(self, items: Iterable[tuple[str, Tally]]) -> None:
        self._index: dict[str, int] = {}
        self._values = array("d")
        for dev, t in items:
            self._index[dev] = len(self._index)
            self._values.extend((math.nan if t[0] is None else t[0], *t[1:]))

    def __getitem__(self, dev: str) -> Tally:
        at = self._index[dev] * 7
        since, *rest = self._values[at : at + 7]
        return (None if math.isnan(since) else since, *rest)  # type: ignore[return-value]

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)


def _add(acc: list[float], pieces: list[tuple[float, float, Optional[str]]],
         now: float) -> Tally:  # fmt: skip
    w24, w7, w30 = (now - w for _, w in WINDOWS)
    for a_, b_, s in pieces:
        a, b = max(a_, w30), min(b_, now)
        if s not in COUNTED or not b > a:
            continue
        acc[0] = min(acc[0], a)
        good = s in GOOD
        for i, w in ((5, w30), (3, w7), (1, w24)):
            span = max(0.0, b - max(a, w))
            acc[i + 1] += span
            if good:
                acc[i] += span
    since = acc[0] if acc[0] != math.inf else None
    return (since, acc[1], acc[2], acc[3], acc[4], acc[5], acc[6])
