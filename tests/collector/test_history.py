"""History arithmetic on constructed event sequences: segments, availability, hours, buckets."""

from __future__ import annotations

import random

import pytest

from fleetbeat.collector import history as h
from helpers import FakeClock

DAY = 86400.0
NOW = 1_800_000_000.0


def ev(t: float, frm: str | None, to: str, reason: str = "x") -> h.Event:
    return (t, frm, to, reason)


def avail(events: list[h.Event], now: float, *, prior: h.Event | None = None,
          current: tuple[str, float] | None = None) -> dict[str, float | None]:  # fmt: skip
    start = now - h.LONGEST
    after = [e for e in events if e[0] > start]
    return h.availability(h.tally(h.segments(after, start, now, now, prior=prior,
                                             current=current), now))  # fmt: skip


def test_segments_follow_the_events_and_the_open_one_is_the_current_state() -> None:
    """Each event starts a segment in its `to` state; the last runs to now in the current state."""
    events = [ev(100, None, "up", "first_seen"), ev(200, "up", "late", "late"),
              ev(250, "late", "down", "missed_heartbeats"), ev(400, "down", "up", "heartbeat")]  # fmt: skip
    segs = h.segments(events, 0, 1000, 500, current=("up", 400))
    assert segs == [(100, 200, "up", "first_seen"), (200, 250, "late", "late"),
                    (250, 400, "down", "missed_heartbeats"), (400, 500, "up", "heartbeat")]  # fmt: skip


def test_a_change_not_stored_yet_comes_from_the_current_state() -> None:
    """When the device changed after its last stored event, the open segment splits there."""
    segs = h.segments([ev(100, None, "up", "first_seen")], 0, 1000, 500, current=("down", 450))
    assert segs == [(100, 450, "up", "first_seen"), (450, 500, "down", "unknown")]


def test_a_window_starting_mid_state_takes_the_state_before_it() -> None:
    """The state before the window is the last event before it, clipped to the window."""
    prior = ev(50, "up", "down", "missed_heartbeats")
    segs = h.segments([ev(300, "down", "up", "heartbeat")], 200, 400, 1000, prior=prior)
    assert segs == [(200, 300, "down", "missed_heartbeats"), (300, 400, "up", "heartbeat")]


def test_without_an_event_before_the_window_the_oldest_kept_from_state_is_used() -> None:
    """Older history pruned: the oldest kept event's `from` fills the window's start, as far
    back as the store pruned (`pruned_to`) and no further; not at all if it never pruned."""
    events = [ev(300, "late", "up", "heartbeat")]
    segs = h.segments(events, 200, 400, 1000, pruned_to=100)
    assert segs == [(200, 300, "late", "unknown"), (300, 400, "up", "heartbeat")]
    segs = h.segments(events, 200, 400, 1000, pruned_to=250)
    assert segs == [(250, 300, "late", "unknown"), (300, 400, "up", "heartbeat")]
    assert h.segments(events, 200, 400, 1000) == [(300, 400, "up", "heartbeat")]


def test_a_first_seen_or_forgotten_oldest_event_opens_nothing_before_it() -> None:
    """A device's `first_seen` had nothing before it, and a `forgotten` event opens no state
    before or after it: neither `from` is stretched back, whatever the store pruned."""
    first = [ev(300, "missing", "up", "first_seen")]
    assert h.segments(first, 0, 400, 1000, pruned_to=0) == [(300, 400, "up", "first_seen")]
    gone = [ev(300, "down", "forgotten", "forgotten"), ev(350, None, "up", "first_seen")]
    assert h.segments(gone, 0, 400, 1000, pruned_to=0) == [(350, 400, "up", "first_seen")]
    tally = h.tally(h.segments(gone, 0, 1000, 1000, pruned_to=0, current=("up", 350)), 1000)
    assert tally[0] == 350 and tally[5:] == (650, 650)  # up since it came back, no down


def test_forgotten_and_unknown_states_are_no_state() -> None:
    """A `forgotten` or unknown `to` leaves a gap until the next event."""
    events = [ev(100, None, "up"), ev(200, "up", "forgotten"), ev(300, None, "up"),
              ev(400, "up", "exploded"), ev(450, "exploded", "down")]  # fmt: skip
    segs = h.segments(events, 0, 500, 500)
    assert [(a, b, s) for a, b, s, _ in segs] == [(100, 200, "up"), (300, 400, "up"),
                                                 (450, 500, "down")]  # fmt: skip


def test_a_window_in_the_past_is_not_extended_by_the_current_state() -> None:
    """Segments stop at `until`; the current state only shapes time after the last event."""
    events = [ev(100, None, "up"), ev(600, "up", "down")]
    assert h.segments(events, 0, 300, 1000, current=("down", 600)) == [(100, 300, "up", "x")]


def test_a_device_younger_than_the_window_is_judged_over_its_own_life() -> None:
    """Availability counts from the device's first counted moment; `since` says when."""
    clock = FakeClock(NOW)
    born = clock.now - 2 * DAY
    events = [ev(born, None, "up", "first_seen"), ev(born + DAY, "up", "down"),
              ev(born + DAY + 0.25 * DAY, "down", "up")]  # fmt: skip
    a = avail(events, clock.now, current=("up", born + 1.25 * DAY))
    assert a["since"] == born
    assert a["7d"] == a["30d"] == pytest.approx(100 * 1.75 / 2, abs=0.01)
    assert a["24h"] == 75.0  # the last day: down for its first 6 hours


def test_offline_and_missing_time_is_not_counted() -> None:
    """An offline gap (a planned stop) and missing time neither raise nor lower availability."""
    t0 = NOW - 10 * DAY
    events = [ev(t0, "missing", "up", "first_seen"), ev(t0 + DAY, "up", "offline", "bye"),
              ev(t0 + 5 * DAY, "offline", "up", "heartbeat"), ev(NOW - DAY, "up", "down"),
              ev(NOW - 0.5 * DAY, "down", "up")]  # fmt: skip
    a = avail(events, NOW, prior=ev(t0 - DAY, None, "missing"), current=("up", NOW - 0.5 * DAY))
    assert a["24h"] == 50.0
    # 7 d from t0 + 3 d: offline 2 d (left out), then up 4.5 d and down 0.5 d
    assert a["7d"] == pytest.approx(100 * (5 - 0.5) / 5, abs=0.01)
    assert a["30d"] == pytest.approx(100 * (6 - 0.5) / 6, abs=0.01)
    assert a["since"] == t0


def test_a_window_with_no_counted_time_is_null() -> None:
    """A device offline for the whole 24 h has no 24 h availability (null), yet a 7 d one."""
    events = [ev(NOW - 3 * DAY, None, "up"), ev(NOW - 2 * DAY, "up", "offline", "bye")]
    a = avail(events, NOW, current=("offline", NOW - 2 * DAY))
    assert a["24h"] is None
    assert a["7d"] == a["30d"] == 100.0
    assert avail([], NOW, current=("offline", NOW - DAY)) == {
        "24h": None, "7d": None, "30d": None, "since": None,
    }  # fmt: skip


def test_history_older_than_every_window_counts_from_the_window_start() -> None:
    """A device down since before 30 days (only the prior event kept) is 0 % since now-30d."""
    a = avail([], NOW, prior=ev(NOW - 40 * DAY, "up", "down"), current=("down", NOW - 40 * DAY))
    assert a == {"24h": 0.0, "7d": 0.0, "30d": 0.0, "since": NOW - 30 * DAY}
    b = avail([], NOW, current=("up", NOW - 90 * DAY))  # no events kept at all
    assert b == {"24h": 100.0, "7d": 100.0, "30d": 100.0, "since": NOW - 30 * DAY}


def test_availability_is_a_percentage_with_two_decimals() -> None:
    """One second down in a day of up is 99.999 %, shown as 100.0; 10 minutes is 99.31."""
    events = [ev(NOW - DAY, None, "up"), ev(NOW - 1000, "up", "down"), ev(NOW - 400, "down", "up")]
    assert avail(events, NOW, current=("up", NOW - 400))["24h"] == 99.31


def test_hourly_counts_are_differences_of_lifetime_totals() -> None:
    """An hour's counts are its totals minus the previous stored row's (a first row's, from
    zero); a reset (a negative difference) and more than an hour can hold at the device's
    interval are bases, counted nowhere: never lifetime totals as one hour."""
    rows = [(7200.0, 100, 110), (10800.0, 150, 170), (18000.0, 20, 25), (21600.0, 380, 385),
            (25200.0, 5000, 5005), (28800.0, 5300, 5310)]  # fmt: skip
    base = {"received": None, "expected": None, "base": True}
    got = h.hourly(rows, (3600.0, 40, 45), interval=10.0)
    assert got == [{"hour": 7200.0, "received": 60, "expected": 65},
                   {"hour": 10800.0, "received": 50, "expected": 60},
                   {"hour": 18000.0, **base},  # a reset
                   {"hour": 21600.0, "received": 360, "expected": 360},
                   {"hour": 25200.0, **base},  # 4,620 in an hour of 360 at most: piled up
                   {"hour": 28800.0, "received": 300, "expected": 305}]  # fmt: skip
    assert h.hourly(rows[:1]) == [{"hour": 7200.0, **base}]  # no row before, no interval
    first = h.hourly(rows[:1], interval=10.0)  # a device's first hour: counted from zero
    assert first == [{"hour": 7200.0, "received": 100, "expected": 110}]
    assert h.hourly(rows[4:5], interval=10.0) == [{"hour": 25200.0, **base}]  # older rows gone


def test_fleet_buckets_count_a_moment_down_as_down_and_otherwise_the_longest_state() -> None:
    """A device down for a moment in a bucket counts as down there, and only once; one
    late for a few seconds of a bucket it was otherwise up in counts as up."""
    b = h.Buckets(0, 3600, 900)
    b.add([(0, 1000, "up", ""), (1000, 1001, "down", ""), (1001, 3600, "up", "")])
    b.add([(0, 3600, "offline", "")])
    b.add([(1800, 3600, "late", "")])  # no state before 1800
    b.add([(0, 2000, "up", ""), (2000, 2005, "late", ""), (2005, 2600, "up", ""),
           (2600, 3600, "late", "")])  # fmt: skip
    got = [(x["time"], x["up"], x["down"], x["late"], x["offline"]) for x in b.result()]
    assert got == [(0, 2, 0, 0, 1), (900, 1, 1, 0, 1), (1800, 2, 0, 1, 1), (2700, 1, 0, 2, 1)]


def test_fleet_buckets_match_a_per_bucket_count_on_random_sequences() -> None:
    """The range-and-edges counting equals a plain per-bucket count, on random data."""
    rng = random.Random(16)
    since, until, step = 1000.0, 1000.0 + 96 * 900, 900.0
    fast = h.Buckets(since, until, step)
    plain = [dict.fromkeys(h.SEVERITY, 0) for _ in range(96)]
    for _ in range(200):
        t, events = since - 5000, []
        while t < until:
            t += rng.expovariate(1 / 3000)
            events.append(ev(t, None, rng.choice([*h.STATES, "forgotten"])))
        segs = h.segments(events, since, until, until + 1)
        fast.add(segs)
        for i in range(96):
            lo, hi = since + i * step, since + (i + 1) * step
            held = dict.fromkeys(h.SEVERITY, 0.0)
            for a, b, s, _ in segs:
                if a < hi and b > lo:
                    held[s] += min(b, hi) - max(a, lo)
            if held["down"] > 0:
                plain[i]["down"] += 1
            elif any(held.values()):
                longest = max(held.values())
                plain[i][[s for s in h.SEVERITY if held[s] == longest][-1]] += 1
    assert [{s: x[s] for s in h.SEVERITY} for x in fast.result()] == plain


def test_group_availability_is_time_weighted() -> None:
    """A group's availability weighs each device by its counted time; untagged devices form
    the "" group; the worst list is by 7-day availability."""
    long_up = h.tally([(NOW - 7 * DAY, NOW, "up", "")], NOW)
    short_down = h.tally([(NOW - DAY, NOW, "down", "")], NOW)
    half = h.tally([(NOW - 2 * DAY, NOW - DAY, "up", ""), (NOW - DAY, NOW, "down", "")], NOW)
    tallies = {"a": long_up, "b": short_down, "c": half}
    devices = [("a", {"site": "barn"}), ("b", {"site": "barn"}), ("c", {})]
    out = h.groups(devices, tallies, ["site"])
    assert out["groups"] == [
        {"tags": {"site": ""}, "devices": 1, "availability": {"24h": 0.0, "7d": 50.0,
                                                               "30d": 50.0}},
        {"tags": {"site": "barn"}, "devices": 2, "availability": {"24h": 50.0, "7d": 87.5,
                                                                  "30d": 87.5}},
    ]  # fmt: skip
    assert [w["id"] for w in out["worst"]] == ["b", "c", "a"]


def test_the_cached_table_gives_back_each_tally() -> None:
    """The compact table of the cache returns every tally as it was given, None included."""
    from fleetbeat.collector.availability import TallyTable

    tallies = {"a": (5.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0), "b": h.NO_TALLY}
    table = TallyTable(tallies.items())
    assert dict(table) == tallies and len(table) == 2 and table.get("c") is None
