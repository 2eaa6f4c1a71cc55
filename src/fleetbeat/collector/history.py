"""Fleet history, pure: state segments from stored events, availability, hourly loss, buckets.

No I/O and no clock: the callers (`collector.http_history`) read the store
(`collector.store_reader`) and pass `now`. Times are epoch seconds.

Segments. A device's events (time, from, to, reason), oldest first, cut its time into
segments, each in the event's `to` state from its time to the next event's. The state
before the first event is the one the last event before the window left (`prior`).
When none is kept, the oldest kept event's `from` state held back to `pruned_to` (the
store's prune deleted only events at or before it, so none came in between), and no
further; before that, no state. It is not stretched back at all when the store never
pruned (`pruned_to` None), when the read of the events was truncated at its limit
(the caller passes None: older events exist, unread), when the oldest event is the
device's `first_seen` (nothing came before it), or when it is a `forgotten` one (a
forgotten device opens nothing, before or after). After the last
event the device is in its current state (`current`: the fleet's state and
state_since, so a change not yet written to the store is already there). A `to` of
"forgotten" (a device removed) or of any state this collector does not know means no
state: no segment until the next event. Segments are clipped to [since, min(until,
now)]; a segment whose starting event is not known has the reason "unknown".

Availability over a window W (24h, 7d, 30d): seconds in up or late / seconds in up,
late or down, within [now - W, now]. Offline, missing and no-state time are not
counted, so a planned stop does not lower it and a device younger than the window is
judged over its own life: `since` is the start of its counted time. None when
nothing was counted.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Optional

STATES = ("up", "late", "down", "offline", "missing")  # every state a segment can be in
GOOD = frozenset(("up", "late"))
COUNTED = frozenset(("up", "late", "down"))
# worst first, for the fleet's buckets: a device counts once per bucket, in its worst state
SEVERITY = ("offline", "up", "late", "missing", "down")
_RANK = {s: i for i, s in enumerate(SEVERITY)}
WINDOWS = (("24h", 86400.0), ("7d", 7 * 86400.0), ("30d", 30 * 86400.0))
LONGEST = WINDOWS[-1][1]
HOUR = 3600.0
SLACK = 1.1  # an hour may hold this many times HOUR / interval heartbeats (jitter, flushes)
UNKNOWN = "unknown"
FORGOTTEN = "forgotten"  # an event's `to` when a device was removed: no state
FIRST_SEEN = "first_seen"  # the reason of a device's first event: nothing before it

# (time, from state or None, to state, reason), as stored
Event = tuple[float, Optional[str], str, str]
# (from, to, state, reason)
Segment = tuple[float, float, str, str]
# (since or None, good24, counted24, good7d, counted7d, good30d, counted30d): seconds
Tally = tuple[Optional[float], float, float, float, float, float, float]
NO_TALLY: Tally = (None, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


def state_of(name: Optional[str]) -> Optional[str]:
    """The state an event's `to` (or `from`) names; None for "forgotten" and the unknown."""
    return name if name in _RANK else None


def opens_before(e: Event) -> bool:
    """Whether an oldest kept event's `from` state tells what came before it."""
    return e[2] != FORGOTTEN and e[3] != FIRST_SEEN and state_of(e[1]) is not None


def segments(
    events: Sequence[Event],
    since: float,
    until: float,
    now: float,
    *,
    prior: Optional[Event] = None,
    current: Optional[tuple[str, float]] = None,
    pruned_to: Optional[float] = None,
) -> list[Segment]:
    """The device's segments within [since, min(until, now)] (see the module docstring).

    `events`: every kept event after `since` (not only those before `until`: the open
    segment begins at the very last one), oldest first, ties in stored order. `prior`:
    the last event at or before `since`, if kept. `current`: (state, state_since) when
    the device is known now. `pruned_to`: how far back the oldest event's `from` state
    may be stretched when there is no `prior` (None: not at all).
    """
    end = min(until, now)
    if not end > since:
        return []
    # (start, state or None, reason): each holds until the next one starts
    points: list[tuple[float, Optional[str], Optional[str]]] = []
    if prior is not None:
        points.append((prior[0], state_of(prior[2]), prior[3]))
    elif events and pruned_to is not None and opens_before(events[0]):
        points.append((min(pruned_to, events[0][0]), state_of(events[0][1]), UNKNOWN))
    for t, _from, to, reason in events:
        points.append((t, state_of(to), reason))
    if current is not None:
        now_state, state_since = current
        last = points[-1][0] if points else -math.inf
        if state_since > last:  # its change is not in the store yet (or was not kept)
            points.append((state_since, state_of(now_state), UNKNOWN))
        else:
            points[-1] = (points[-1][0], state_of(now_state), points[-1][2])
    out: list[Segment] = []
    for i, (t, state, why) in enumerate(points):
        a = max(t, since)
        b = min(points[i + 1][0], end) if i + 1 < len(points) else end
        if state is not None and b > a:
            out.append((a, b, state, why if isinstance(why, str) else UNKNOWN))
    return out


def coarsen(segs: Iterable[Segment], resolution: float) -> list[Segment]:
    """Segments for a strip that draws nothing finer than `resolution` seconds: neighbours
    each shorter than it (and the gaps between them shorter than it) are merged into one
    run in the worst state among them (SEVERITY), reason "merged" when it holds more than
    one. A run ends when it reaches `resolution` or a longer segment or gap comes, so a
    strip over T seconds has at most about 2 * T / resolution + 1 segments."""
    out: list[Segment] = []
    run: Optional[list[Any]] = None  # [from, to, state, reason]
    for seg in segs:
        a, b, state, why = seg
        if run is not None and (a - run[1] >= resolution or run[1] - run[0] >= resolution
                                or b - a >= resolution):  # fmt: skip
            out.append((run[0], run[1], run[2], run[3]))
            run = None
        if b - a >= resolution:
            out.append(seg)
        elif run is None:
            run = [a, b, state, why]
        else:
            run[1] = b
            run[3] = "merged"
            if _RANK.get(state, -1) > _RANK.get(run[2], -1):
                run[2] = state
    if run is not None:
        out.append((run[0], run[1], run[2], run[3]))
    return out


def tally(segs: Iterable[Segment], now: float) -> Tally:
    """Seconds good and counted in each window of WINDOWS, and when counting began."""
    since: Optional[float] = None
    g24 = c24 = g7 = c7 = g30 = c30 = 0.0
    w24, w7, w30 = now - WINDOWS[0][1], now - WINDOWS[1][1], now - WINDOWS[2][1]
    for a, b_, state, _ in segs:
        if state not in COUNTED:
            continue
        b = min(b_, now)
        a30 = max(a, w30)
        if b <= a30:
            continue
        if since is None:
            since = a30
        good = state in GOOD
        span = b - a30
        c30 += span
        g30 += span if good else 0.0
        span = max(0.0, b - max(a, w7))
        c7 += span
        g7 += span if good else 0.0
        span = max(0.0, b - max(a, w24))
        c24 += span
        g24 += span if good else 0.0
    return (since, g24, c24, g7, c7, g30, c30)


def percent(good: float, counted: float) -> Optional[float]:
    """Availability in percent with 2 decimals; None when nothing was counted."""
    return round(100.0 * good / counted, 2) if counted > 0 else None


def availability(t: Tally) -> dict[str, Optional[float]]:
    """The JSON of a tally: {"24h": %, "7d": %, "30d": %, "since": epoch s} (None: nothing)."""
    since, g24, c24, g7, c7, g30, c30 = t
    return {"24h": percent(g24, c24), "7d": percent(g7, c7), "30d": percent(g30, c30),
            "since": since}  # fmt: skip


def ratios(t: Tally) -> list[tuple[str, float]]:
    """(window, 0..1) for each window with counted time (for `/metrics`)."""
    _, g24, c24, g7, c7, g30, c30 = t
    return [(w, g / c) for (w, _), g, c in zip(WINDOWS, (g24, g7, g30), (c24, c7, c30)) if c > 0]


def hourly(
    rows: Sequence[tuple[float, int, int]],
    prior: Optional[tuple[float, int, int]] = None,
    *,
    interval: Optional[float] = None,
    no_base_before: Optional[float] = None,
) -> list[dict[str, Any]]:
    """Each hour's heartbeats received and expected, from stored lifetime totals.

    `rows`: (hour, lifetime received, lifetime expected), oldest first; `prior`: the
    device's stored row before the first. An hour's counts are the difference with the
    stored row before it: the heartbeats between the last flush of that row's hour and
    the last flush of this one. A row with no row before it counts from zero (a
    device's first hour). Any count larger than the heartbeats one hour can hold at the
    device's `interval` (the totals of a device whose older rows are pruned or were
    never in a recreated database; hours that could not be written, piled into the
    next), or a negative one (the counters were reset: a new device of the same id),
    makes the row a base: {"hour", "received": None, "expected": None, "base": True},
    counted nowhere (the dashboard leaves the hour blank). Without an `interval`, every
    row with no row before it is a base, and so is one before `no_base_before` (the
    base row the migration of a database older than the hours table wrote).
    """
    most = math.inf if not interval or interval <= 0 else HOUR / interval * SLACK + 10
    out: list[dict[str, Any]] = []
    prev = prior
    for row in rows:
        hour, received, expected = row
        if prev is not None:
            dr, de = received - prev[1], expected - prev[2]
        else:
            first = most < math.inf and (no_base_before is None or hour >= no_base_before)
            dr, de = (received, expected) if first else (-1, -1)
        if 0 <= dr <= most and 0 <= de <= most:
            out.append({"hour": hour, "received": dr, "expected": de})
        else:
            out.append({"hour": hour, "received": None, "expected": None, "base": True})
        prev = row
    return out


class Buckets:
    """The fleet's devices by state per `step` seconds, each device once per bucket:
    `down` if it was down at any moment in it (a short outage must show), otherwise in
    the state it held longest there (a heartbeat late by a few seconds does not make a
    quarter of an hour "late": on lossy links nearly every device is late for a moment
    in every bucket). Ties go to the worse state (SEVERITY).

    `add` takes one device's segments; its cost is per segment, not per bucket: a
    bucket inside a segment can belong to no other segment of that device, so those
    are counted as a range (a difference array), and only the buckets where a segment
    starts or ends need the worst state worked out.
    """

    def __init__(self, since: float, until: float, step: float) -> None:
        self.since = since
        self.step = step
        self.n = max(0, math.ceil((until - since) / step))
        self._diff = [[0] * (self.n + 1) for _ in SEVERITY]
        self._edges = [[0] * self.n for _ in SEVERITY]

    def add(self, segs: Iterable[Segment]) -> None:
        edges: dict[int, list[float]] = {}  # bucket -> seconds in each state (SEVERITY)
        last, since, step = self.n - 1, self.since, self.step
        for a, b, state, _ in segs:
            rank = _RANK.get(state)
            if rank is None or b <= a:
                continue
            b0 = max(0, int((a - since) // step))
            b1 = min(last, math.ceil((b - since) / step) - 1)
            if b1 < b0:
                continue
            if b1 - b0 >= 2:
                diff = self._diff[rank]
                diff[b0 + 1] += 1
                diff[b1] -= 1
            for k in {b0, b1}:
                lo = since + k * step
                overlap = min(b, lo + step) - max(a, lo)
                if overlap > 0:
                    edges.setdefault(k, [0.0] * len(SEVERITY))[rank] += overlap
        down = _RANK["down"]
        for k, held in edges.items():
            if held[down] > 0:
                self._edges[down][k] += 1
            else:  # the longest; on a tie the worse (the later in SEVERITY)
                longest = max(zip(held, range(len(held))))[1]
                self._edges[longest][k] += 1

    def result(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = [
            {"time": self.since + i * self.step, **dict.fromkeys(SEVERITY[::-1], 0)}
            for i in range(self.n)
        ]
        for rank, state in enumerate(SEVERITY):
            running = 0
            diff, edges = self._diff[rank], self._edges[rank]
            for i in range(self.n):
                running += diff[i]
                out[i][state] = running + edges[i]
        return out


def groups(
    devices: Iterable[tuple[str, Mapping[str, str]]],
    tallies: Mapping[str, Tally],
    by: Sequence[str],
    worst: int = 10,
) -> dict[str, Any]:
    """Availability per group of tag values, time-weighted (the seconds of all its devices).

    `devices`: (id, tags); a device without one of the `by` tags is in the group
    whose value for it is "". Also the `worst` devices by 7-day availability.
    """
    sums: dict[tuple[str, ...], list[float]] = {}
    ranked: list[tuple[float, str]] = []
    for dev_id, tags in devices:
        key = tuple(str(tags.get(k, "")) for k in by)
        t = tallies.get(dev_id, NO_TALLY)
        acc = sums.setdefault(key, [0.0] * 7)
        acc[0] += 1
        for i in range(1, 7):
            acc[i] += t[i]  # type: ignore[operator]
        if t[4] > 0:
            ranked.append((t[3] / t[4], dev_id))
    out = []
    for key in sorted(sums):
        n, g24, c24, g7, c7, g30, c30 = sums[key]
        out.append({"tags": dict(zip(by, key)), "devices": int(n),
                    "availability": {"24h": percent(g24, c24), "7d": percent(g7, c7),
                                     "30d": percent(g30, c30)}})  # fmt: skip
    ranked.sort()
    return {
        "by": list(by),
        "groups": out,
        "worst": [
            {"id": dev_id, "availability": availability(tallies[dev_id])}
            for _, dev_id in ranked[:worst]
        ],
    }
