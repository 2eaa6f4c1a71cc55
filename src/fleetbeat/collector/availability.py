"""Every device's availability in one pass over the stored events, pure and fast.

The same arithmetic as `history.tally(history.segments(...))` (the rules are in
`collector.history`), written for the fleet-wide pass: the events of the last 30 days
arrive as one stream of rows ordered by device and time, and each row is folded into
its device's tally at once, without building segments or per-device lists. At 10,000
devices and 900,000 events this is about 3 times faster than the general path
(`benchmarks/history.py`), and what it keeps is one tally per device.
tests/collector/test_history.py checks it against the general path on random sequences.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Optional

from fleetbeat.collector.history import (
    COUNTED,
    GOOD,
    LONGEST,
    WINDOWS,
    Event,
    Tally,
    segments,
    tally,
)

# (device, time, from state, to state), ordered by device, then time
Row = tuple[str, float, Optional[str], str]


def fleet_tallies(
    rows: Iterable[Row],
    priors: Mapping[str, Event],
    current: Mapping[str, tuple[str, float]],
    now: float,
) -> Iterator[tuple[str, Tally]]:
    """(device, tally) for every device in `current` (the fleet's state and state_since).

    `rows`: every stored event after now - 30 d; `priors`: each device's last event at
    or before it. Devices of `rows` not in `current` (no longer known) are left out.
    """
    w30 = now - LONGEST
    w7 = now - WINDOWS[1][1]
    w24 = now - WINDOWS[0][1]
    counted, good = COUNTED, GOOD
    done = set()
    dev: Optional[str] = None
    acc = [math.inf] + [0.0] * 6  # since (inf: none yet), g24, c24, g7, c7, g30, c30
    seg_t = w30
    seg_s: Optional[str] = None
    for d, t_, f, to in rows:
        t = t_ if t_ < now else now  # a stored time past now (a clock step): no later than now
        if d != dev:
            if dev is not None and dev in current:
                done.add(dev)
                yield dev, _finish(acc, seg_t, seg_s, current[dev], now, w24=w24, w7=w7)
            dev = d
            acc = [math.inf] + [0.0] * 6
            prior = priors.get(d)
            seg_t, seg_s = w30, (prior[2] if prior is not None else f)
        if seg_s in counted and t > seg_t:  # close the segment [seg_t, t]
            span = t - seg_t
            if acc[0] == math.inf:
                acc[0] = seg_t
            acc[6] += span
            if seg_s in good:
                acc[5] += span
            if t > w7:
                span = t - max(seg_t, w7)
                acc[4] += span
                if seg_s in good:
                    acc[3] += span
                if t > w24:
                    span = t - max(seg_t, w24)
                    acc[2] += span
                    if seg_s in good:
                        acc[1] += span
        seg_t, seg_s = max(t, w30), to
    if dev is not None and dev in current:
        done.add(dev)
        yield dev, _finish(acc, seg_t, seg_s, current[dev], now, w24=w24, w7=w7)
    for d, cur in current.items():  # no event in 30 days: the general path, cheap here
        if d not in done:
            yield d, tally(segments((), w30, now, now, prior=priors.get(d), current=cur), now)


def _finish(acc: list[float], seg_t: float, seg_s: Optional[str], cur: tuple[str, float],
            now: float, *, w24: float, w7: float) -> Tally:  # fmt: skip
    """Add the open segment (after the last event: the current state, see `segments`)."""
    state, state_since = cur
    tail: list[tuple[float, float, Optional[str]]] = [(seg_t, now, state)]
    if state_since > seg_t:  # a change not stored yet
        tail = [(seg_t, min(state_since, now), seg_s), (state_since, now, state)]
    for a, b, s in tail:
        if s not in COUNTED or not b > a:
            continue
        if acc[0] == math.inf:
            acc[0] = a
        good = s in GOOD
        for i, w in ((5, -math.inf), (3, w7), (1, w24)):
            span = max(0.0, b - max(a, w))
            acc[i + 1] += span
            if good:
                acc[i] += span
    since = acc[0] if acc[0] != math.inf else None
    return (since, acc[1], acc[2], acc[3], acc[4], acc[5], acc[6])
