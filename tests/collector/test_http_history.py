"""The history routes over a real Fleet and a real store: the cache, the fleet-wide pass."""

from __future__ import annotations

import os
import random
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from fleetbeat import wire
from fleetbeat.collector import history as h
from fleetbeat.collector.config import CollectorSection
from fleetbeat.collector.fleet import Fleet
from fleetbeat.collector.http_history import CACHED_KEYS, Cached, HistoryApi
from fleetbeat.collector.store import Store
from fleetbeat.collector.store_events import rewrite
from fleetbeat.collector.store_reader import StoreReader
from helpers import FakeClock

RUN = "0" * 15 + "1"
DAY = 86400.0


def test_a_burst_computes_once_and_a_stale_answer_is_served_while_recomputing() -> None:
    """Eight threads asking at once cause one computation; once stale, the others get the old
    value at once while one thread computes the new one."""
    clock = FakeClock(0.0)
    cache = Cached(60.0, clock=clock)
    calls: list[int] = []
    release = threading.Event()

    def slow() -> int:
        calls.append(1)
        release.wait(5)
        return len(calls)

    got: list[int] = []
    threads = [threading.Thread(target=lambda: got.append(cache.get("k", slow))) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(0.05)
    release.set()
    for t in threads:
        t.join()
    assert (calls, got) == ([1], [1] * 8)
    clock.now = 61.0
    release.clear()
    worker = threading.Thread(target=lambda: got.append(cache.get("k", slow)))
    worker.start()
    while len(calls) < 2:
        time.sleep(0.01)
    assert cache.get("k", slow) == 1  # the stale one, without waiting
    release.set()
    worker.join()
    assert got[-1] == 2 and cache.get("k", slow) == 2


def test_a_slow_answer_makes_only_its_own_key_wait_and_the_keys_are_bounded() -> None:
    """While one key's computation is slow, another key is computed and answered at once
    (no wait, no Busy); a request for the slow key waits for it; no more than CACHED_KEYS
    answers are kept."""
    cache = Cached(60.0, clock=FakeClock(0.0))
    release = threading.Event()
    got: list[Any] = []
    slow = threading.Thread(target=lambda: got.append(cache.get("a", lambda: release.wait(5))))
    slow.start()
    time.sleep(0.05)
    started = time.monotonic()
    assert cache.get("b", lambda: "b") == "b"
    assert time.monotonic() - started < 0.5
    waiter = threading.Thread(target=lambda: got.append(cache.get("a", lambda: "again")))
    waiter.start()
    release.set()
    slow.join()
    waiter.join()
    assert got == [True, True]  # the waiter had the first computation's answer
    for k in range(100):
        cache.get(k, lambda: 0)
    assert len(cache._values) == CACHED_KEYS and not cache._locks


def test_respelled_ranges_are_one_cached_answer(tmp_path: Path) -> None:
    """/api/fleet/history keys its cache by the values, rounded to the minute: `since=100`,
    `since=100.000` and `since=130` (and `by=b,a` against `by=a,b`) are one computation."""
    clock = FakeClock(1_800_000_000.0)
    store = Store(str(tmp_path), retention=31 * 86400.0, clock=clock)
    fleet = Fleet(CollectorSection(), clock=clock, monotonic=clock)
    api = HistoryApi(fleet, StoreReader(store.path), clock=clock)
    computed: list[int] = []
    each = api._each_device

    def counting(*args: Any) -> Any:
        computed.append(1)
        return each(*args)

    api._each_device = counting  # type: ignore[method-assign]
    base = clock.now - 86400 + 1
    for text in (f"{base:.0f}", f"{base:.0f}.000", f"{base + 30:.0f}", f"{base:.0f}e0"):
        body = api.fleet_history({"since": [text], "step": ["900"]})
        assert body["since"] == (base // 60) * 60
    assert len(computed) == 1
    assert api.groups({"by": ["b,a"]}) is api.groups({"by": ["a", "b"]})
    store.close()


def hb(dev: str, seq: int) -> bytes:
    return wire.dumps({"v": 1, "k": "hb", "dev": dev, "run": RUN, "seq": seq, "ts": 0.0,
                       "int": 10.0, "tags": {"site": dev[0]}})  # fmt: skip


def test_the_fleet_pass_gives_each_device_the_availability_of_its_own_history(
    tmp_path: Path,
) -> None:
    """The cached fleet-wide tallies (two SQL passes) equal each device's own history
    availability, and the fleet buckets count every device once per bucket."""
    clock = FakeClock(1_800_000_000.0)
    store = Store(str(tmp_path), retention=31 * 86400.0, clock=clock)
    fleet = Fleet(CollectorSection(), clock=clock, monotonic=clock)
    seqs = dict.fromkeys(("a1", "a2", "b1", "c1"), 0)
    for step in range(40):
        for dev in seqs:
            if (step + len(dev) + ord(dev[0])) % (3 + ord(dev[0]) % 4) == 0:
                continue  # this one is silent for a while now and then: late, down
            fleet.receive(hb(dev, seqs[dev]), ("10.0.0.1", 1))
            seqs[dev] += 1
        for _ in range(6):
            clock.now += 10
            fleet.check()
        rows, events = fleet.take_changes()
        store.write(rows, events)
    api = HistoryApi(fleet, StoreReader(store.path), clock=clock)
    tallies = api.tallies()
    assert sorted(tallies) == sorted(seqs)
    states = set()
    for dev in seqs:
        status, body = api.device_history(dev, {})
        assert status == 200
        assert h.availability(tallies[dev]) == body["availability"]
        states.update(s["state"] for s in body["segments"])
    assert {"up", "late", "down"} <= states
    buckets = api.fleet_history({"step": ["600"]})["buckets"]
    assert all(sum(b[s] for s in h.SEVERITY) <= len(seqs) for b in buckets)
    assert sum(buckets[-1][s] for s in h.SEVERITY) == len(seqs)
    groups = api.groups({"by": ["site"]})
    assert [(g["tags"]["site"], g["devices"]) for g in groups["groups"]] == [
        ("a", 2), ("b", 1), ("c", 1),
    ]  # fmt: skip
    page = api.devices_page({"limit": ["2"], "offset": ["1"], "fields": ["id,availability"]})
    assert page["total"] == 4 and [d["id"] for d in page["devices"]] == ["a2", "b1"]
    assert page["devices"][0] == {"id": "a2", "availability": h.availability(tallies["a2"])}
    store.close()


def test_a_forgotten_device_that_speaks_again_has_no_made_up_history(tmp_path: Path) -> None:
    """A device forgotten while down and heard again: its kept history starts with the
    forgotten event, and neither its own history nor the fleet-wide pass stretches that
    event's `from` (down) back to the window's start: no state before the forget, counted
    from its first heartbeat after it (100 %, since then)."""
    now = 1_800_000_000.0
    clock = FakeClock(now - 3 * DAY)
    store = Store(str(tmp_path), retention=31 * DAY, clock=clock)
    fleet = Fleet(CollectorSection(), clock=clock, monotonic=clock)
    fleet.receive(hb("pi", 0), ("10.0.0.1", 1))
    fleet.receive(hb("pi", 1), ("10.0.0.1", 1))
    clock.now += 600
    fleet.check()  # late, down

    def flush() -> None:  # as `service.Collector.flush` does
        rows, events = fleet.take_changes()
        store.forget(fleet.take_forgotten())
        store.write(rows, events)

    flush()
    assert fleet.forget("pi")
    flush()
    flush()  # the delete comes a flush later, before the forgotten event is written
    clock.now += 60
    back = clock.now
    fleet.receive(hb("pi", 0), ("10.0.0.1", 1))
    fleet.receive(hb("pi", 1), ("10.0.0.1", 1))
    flush()
    clock.now = now
    reader = StoreReader(store.path)
    _, events, _ = reader.events("pi", now - h.LONGEST)
    assert [e[2] for e in events] == ["forgotten", "up"]
    api = HistoryApi(fleet, reader, clock=clock)
    status, body = api.device_history("pi", {"since": [str(now - 7 * DAY)]})
    assert status == 200
    assert [(s["from"], s["state"]) for s in body["segments"]] == [(back, "up")]
    assert body["availability"] == {"24h": 100.0, "7d": 100.0, "30d": 100.0, "since": back}
    assert h.availability(api.tallies()["pi"]) == body["availability"]
    reader.close()
    store.close()


class Current:
    """The fleet's read side reduced to what the availability pass reads: states now."""

    def __init__(self, states: dict[str, tuple[str, float]]) -> None:
        self.states = states

    def devices(self) -> list[dict[str, Any]]:
        return [{"id": d, "state": s, "state_since": t} for d, (s, t) in self.states.items()]


def test_the_fleet_pass_equals_each_devices_segments_on_random_histories(
    tmp_path: Path,
) -> None:
    """SQLite's span sums plus each device's open segment give exactly the tally of the
    device's own segments: windows cut mid-state, pruned older history (filled back to the
    prune, no further), forgotten, first_seen and unknown states, changes not stored yet,
    devices with no events, young devices, wall-clock steps backwards (events stamped
    before earlier ones), a database replaced by an older copy and written again, and a
    read truncated at its limit (nothing before the oldest event read). Counted time
    never exceeds the time since counting began, and no event is stored twice."""
    rng = random.Random(16)
    now = 1_800_000_000.0
    clock = FakeClock(now - 40 * DAY)
    store = Store(str(tmp_path), retention=20 * DAY, clock=clock)
    fleet = Fleet(CollectorSection(max_devices=1000), clock=clock, monotonic=clock)
    names = [f"r{i:03d}" for i in range(150)] + ["flap"]
    for dev in names:
        fleet.receive(hb(dev, 0), ("10.0.0.1", 1))
        fleet.receive(hb(dev, 1), ("10.0.0.1", 1))
    rows, _ = fleet.take_changes()
    store.write(rows, [])
    states = [*h.STATES, "forgotten", "weird"]
    timeline: list[dict[str, Any]] = []
    last: dict[str, tuple[float, str]] = {}
    for n, dev in enumerate(names[:140]):  # r140 to r149 have no events at all
        t = now - rng.choice([1, 5, 20, 35, 40]) * DAY
        state: str | None = None if rng.random() < 0.5 else "up"
        stepped = n % 5 == 0  # this one's collector clock steps back now and then
        first = True
        while True:
            t += rng.expovariate(1 / (rng.choice([0.1, 1, 4]) * DAY))
            if t >= now - 60:
                break
            # one in five starts with a forget (its older history deleted): nothing before it
            new = "forgotten" if first and n % 5 == 1 else rng.choice(states)
            first = False
            why = rng.choice(["x", "x", "first_seen"])
            stamp = t - rng.uniform(0, 3 * 3600) if stepped and rng.random() < 0.3 else t
            timeline.append({"time": stamp, "device": dev, "from": state, "to": new,
                             "reason": why, "order": t})  # fmt: skip
            state = new
            last[dev] = (t, new)
    for k in range(1500):  # flapping through the last day: more than the read limit below
        t = now - DAY + k * 50.0
        up = k % 2 == 0
        timeline.append({"time": t, "device": "flap", "from": "down" if up else "up",
                         "to": "up" if up else "down", "reason": "x", "order": t})  # fmt: skip
    last["flap"] = (now - DAY + 1499 * 50.0, "down")
    timeline.sort(key=lambda e: e["order"])  # written in the order they happened
    for e in timeline:
        del e["order"]
    batches = [timeline[i : i + 97] for i in range(0, len(timeline), 97)]
    backup = str(tmp_path / "backup.db")
    for n, batch in enumerate(batches):  # flushes of interleaved devices
        store.write([], batch)
        if n == len(batches) // 2:
            copy = sqlite3.connect(backup)
            with sqlite3.connect(store.path) as src:
                src.backup(copy)
            copy.close()
        if n == len(batches) * 3 // 4:  # an older copy restored under the collector
            os.replace(backup, store.path)
            assert store.replaced() == "replaced"
            store.reopen()
            written = [e for b in batches[: n + 1] for e in b]
            store.write([], rewrite(written, [], store.latest_events()))  # as flush does
    store.prune(now)  # older than 20 d: gone, so some windows start with the oldest `from`
    current = {}
    for dev in names:
        t_last = last.get(dev, (now - 3 * DAY, "up"))[0]
        since = rng.choice([t_last - 10, t_last + 600, now - 50 * DAY])
        current[dev] = (rng.choice(h.STATES), since)
    reader = StoreReader(store.path)
    with sqlite3.connect(store.path) as db:
        stored = db.execute("SELECT time, device, from_state, to_state, reason FROM events")
        rows = stored.fetchall()
    assert len(rows) == len(set(rows)) == len(timeline) - sum(e["time"] <= now - 20 * DAY
                                                               for e in timeline)  # fmt: skip
    api = HistoryApi(Current(current), reader, clock=lambda: now)  # type: ignore[arg-type]
    got = api._compute_tallies()
    w30 = now - h.LONGEST
    pruned = reader.pruned_to()
    assert pruned == now - 20 * DAY
    assert sorted(got) == sorted(names)
    filled = 0
    for dev in names:
        prior, events, cut = reader.events(dev, w30)
        assert not cut
        want = h.tally(h.segments(events, w30, now, now, prior=prior, current=current[dev],
                                  pruned_to=pruned), now)  # fmt: skip
        assert (got[dev][0] is None) == (want[0] is None), dev
        assert got[dev][0] == pytest.approx(want[0]), dev
        assert got[dev][1:] == pytest.approx(want[1:], abs=1e-3), dev
        if want[0] is not None:
            assert want[6] <= now - want[0] + 1e-3 and want[2] <= DAY + 1e-3, dev
        if events and want[0] is not None and want[0] < events[0][0]:
            assert want[0] >= pruned, dev  # nothing stretched back past the prune
            filled += want[0] == pruned
    assert filled >= 3  # the fill back to the prune was exercised
    prior, events, cut = reader.events("flap", w30, limit=1000)
    assert (prior, cut) == (None, True)
    trunc = h.tally(h.segments(events, w30, now, now, current=current["flap"]), now)
    assert trunc[0] == events[0][0] > now - DAY  # no state before the oldest one read
    reader.close()
    store.close()
