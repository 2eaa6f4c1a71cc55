"""The history under faults a reviewer reproduced (issue 16): a wall clock stepped back, a
read truncated at its limit, a database replaced by an older copy under the collector."""

from __future__ import annotations

import os
import socket
import sqlite3
import tempfile
import time
from pathlib import Path

import pytest
from collector_helpers import CollectorProcess

from fleetbeat import wire
from fleetbeat.collector import history as h
from fleetbeat.collector.config import CollectorSection
from fleetbeat.collector.fleet import Fleet
from fleetbeat.collector.http_history import HistoryApi
from fleetbeat.collector.http_params import BadRequest
from fleetbeat.collector.store import Store, StoreError
from fleetbeat.collector.store_reader import StoreReader
from helpers import FakeClock, wait_until

RUN = "0" * 15 + "1"
T0 = 1_800_000_000.0
DAY = 86400.0


def hb(dev: str, seq: int, interval: float = 10.0) -> bytes:
    return wire.dumps({"v": 1, "k": "hb", "dev": dev, "run": RUN, "seq": seq,
                       "ts": time.time(), "int": interval})  # fmt: skip


def test_a_clock_stepped_back_counts_no_time_twice_and_both_paths_agree(tmp_path: Path) -> None:
    """The collector's wall clock steps back 2 h between a `down` and the next `up`: the up
    event is stored at the down one's time (its spans cannot overlap), so the time counted
    is at most the wall time since the first event, and the fleet pass (/api/devices) and
    the device's own history give the same availability."""
    wall, mono = FakeClock(T0), FakeClock(1000.0)
    store = Store(str(tmp_path), retention=31 * DAY, clock=wall)
    fleet = Fleet(CollectorSection(), clock=wall, monotonic=mono)
    seq = 0

    def send() -> None:
        nonlocal seq
        fleet.receive(hb("pi", seq), ("10.0.0.1", 1))
        seq += 1

    def tick() -> None:
        wall.now += 10
        mono.now += 10
        fleet.check()

    send()
    for _ in range(360):  # up 1 h
        tick()
        send()
    for _ in range(360):  # silent 1 h: late, then down
        tick()
    store.write(*fleet.take_changes())
    wall.now -= 7200  # NTP steps the clock back 2 h
    send()
    for _ in range(3 * 360):
        tick()
        send()
    store.write(*fleet.take_changes())
    with sqlite3.connect(store.path) as db:
        times = [t for (t,) in db.execute("SELECT time FROM events ORDER BY rowid")]
    assert times == sorted(times) and len(times) == 4
    api = HistoryApi(fleet, StoreReader(store.path), clock=wall)
    tally = api.tallies()["pi"]
    assert tally[0] is not None and tally[2] <= wall.now - tally[0]
    assert tally[6] <= wall.now - T0
    assert api.device_history("pi", {})[1]["availability"] == h.availability(tally)
    store.close()


def test_a_truncated_read_shows_no_state_before_the_oldest_event_read(tmp_path: Path) -> None:
    """A device that flapped all day (more events than a read takes): its history and its
    strip start at the oldest event read, with nothing stretched back before it, and both
    answers say so ("truncated")."""
    clock = FakeClock(T0)
    store = Store(str(tmp_path), retention=31 * DAY, clock=clock)
    fleet = Fleet(CollectorSection(), clock=clock, monotonic=clock)
    for q in (0, 1):
        fleet.receive(hb("pi", q), ("10.0.0.1", 1))
    store.write(*fleet.take_changes())
    store.prune(T0)  # the store has pruned: a `from` could otherwise be stretched back
    events, t, state = [], T0 + 60, "up"
    while t < T0 + DAY:  # down 11.4 s, up 0.6 s: 10 events a minute
        new = "down" if state == "up" else "up"
        events.append({"time": t, "device": "pi", "from": state, "to": new, "reason": "x"})
        state = new
        t += 11.4 if new == "down" else 0.6
    store.write([], events)
    clock.now = t
    api = HistoryApi(fleet, StoreReader(store.path), clock=clock)
    body = api.device_history("pi", {"since": [str(clock.now - DAY)]})[1]
    oldest_read = events[-10_000]["time"]
    assert body["truncated"] is True
    assert body["segments"][0]["from"] == oldest_read
    assert body["availability"]["since"] == oldest_read
    assert body["availability"]["24h"] < 10  # not the 34 % of an `up` stretched back
    strips = api.timelines({"id": ["pi"]})
    assert strips["truncated"] == ["pi"]
    assert strips["devices"]["pi"][0][0] == events[-1000]["time"]
    store.close()


def test_a_restored_older_copy_gets_no_event_twice(tmp_path: Path) -> None:
    """A real collector; an older copy of its database is put back under it: it reopens the
    file and writes the events newer than the copy's own, none twice (and none lost), so
    the stored spans never add up to more than the device has existed."""
    col = CollectorProcess(tmp_path)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    seq = 0
    path = str(tmp_path / "state" / "fleetbeat.db")

    def flap(cycles: int) -> None:
        nonlocal seq
        for _ in range(cycles):
            for _ in range(10):  # 2 s up
                sock.sendto(hb("pi", seq, 0.2), ("127.0.0.1", col.udp_port))
                seq += 1
                time.sleep(0.2)
            time.sleep(1.5)  # silent: late, down

    def stored() -> int:
        with sqlite3.connect(path) as db:
            return int(db.execute("SELECT count(*) FROM events").fetchone()[0])

    try:
        start = time.time()
        flap(2)
        wait_until(lambda: stored() >= 4, timeout=10)
        backup = str(tmp_path / "backup.db")
        with sqlite3.connect(path) as src, sqlite3.connect(backup) as dst:
            src.backup(dst)
        flap(2)
        before = stored()
        os.replace(backup, path)
        wait_until(lambda: "was replaced under the running collector" in col.log(), timeout=10)
        flap(1)
        time.sleep(0.5)
        with sqlite3.connect(path) as db:
            rows = db.execute("SELECT time, from_state, to_state, reason FROM events").fetchall()
            now = time.time()
            (spans,) = db.execute(
                "SELECT SUM(MIN(COALESCE(ends, ?1), ?1) - time) FROM events"
                " WHERE to_state IN ('up', 'late', 'down')", (now,)
            ).fetchone()  # fmt: skip
        assert len(rows) == len(set(rows)) >= before > 4
        assert spans <= now - start
    finally:
        sock.close()
        col.stop()


def beat_hours(fleet: Fleet, clock: FakeClock, hours: int, seq: int, *,
               store: Store | None = None, mono: FakeClock | None = None) -> int:  # fmt: skip
    """`hours` hours of heartbeats every 10 s (flushed every 5 min when `store` is given)."""
    for _ in range(hours):
        for k in range(360):
            clock.now += 10
            if mono is not None:
                mono.now += 10
            fleet.receive(hb("pi", seq), ("10.0.0.1", 1))
            seq += 1
            fleet.check()
            if store is not None and k % 30 == 0:
                store.write(*fleet.take_changes())
        if store is not None:
            store.write(*fleet.take_changes())
    return seq


def test_an_hour_without_its_row_before_is_a_base_never_lifetime_totals(tmp_path: Path) -> None:
    """Ten days of heartbeats with 7 days of hourly rows kept, then the database deleted and
    recreated: the oldest kept row and the first of the new file hold the device's whole
    past, so they are bases (counted nowhere), and no hour counts more than its 360."""
    clock = FakeClock(T0)
    store = Store(str(tmp_path), retention=31 * DAY, loss_history=7 * DAY, clock=clock)
    fleet = Fleet(CollectorSection(), clock=clock, monotonic=clock)
    seq = 0
    for _ in range(10):
        seq = beat_hours(fleet, clock, 24, seq, store=store)
        store.prune(clock.now)
    api = HistoryApi(fleet, StoreReader(store.path), clock=clock)
    hours = api.device_history("pi", {"since": [str(clock.now - 9 * DAY)]})[1]["hours"]
    assert hours[0]["base"] is True and hours[0]["received"] is None
    assert all(x["received"] == 360 for x in hours[1:-1]) and len(hours) > 160
    store.close()
    os.remove(store.path)
    store.reopen()  # as the collector does when the file is deleted under it
    fleet.requeue([("pi",)], [])
    seq = beat_hours(fleet, clock, 1, seq, store=store)
    hours = api.device_history("pi", {"since": [str(clock.now - 1800)]})[1]["hours"]
    assert hours[0]["base"] is True and all(0 < x["received"] <= 360 for x in hours[1:])
    store.close()


def test_a_clock_stepped_back_never_rewrites_an_older_hour(tmp_path: Path) -> None:
    """The wall clock steps back 2 h: the hourly rows stay in the newest stored hour until it
    catches up, so no earlier hour gets newer totals, no difference goes negative, and the
    hours add up to the heartbeats received."""
    wall, mono = FakeClock(T0), FakeClock(1000.0)
    store = Store(str(tmp_path), retention=31 * DAY, clock=wall)
    fleet = Fleet(CollectorSection(), clock=wall, monotonic=mono)
    seq = beat_hours(fleet, wall, 5, 0, store=store, mono=mono)
    wall.now -= 2 * 3600
    seq = beat_hours(fleet, wall, 1, seq, store=store, mono=mono)
    wall.now += 3 * 3600
    api = HistoryApi(fleet, StoreReader(store.path), clock=wall)
    hours = api.device_history("pi", {"since": [str(T0 - 3600)]})[1]["hours"]
    assert [x["hour"] for x in hours] == sorted({x["hour"] for x in hours})
    assert not any(x.get("base") for x in hours)
    assert sum(x["received"] for x in hours) == seq == 2160
    store.close()


def test_hours_that_could_not_be_written_are_not_piled_into_one(tmp_path: Path) -> None:
    """A full disk for three hours: the writes are retried, and the first that succeeds holds
    those hours' heartbeats, more than an hour can hold at the device's interval: a base,
    not 1,440 heartbeats in one hour."""
    from test_store_faults import SmallDisk  # a real tmpfs, filled and freed

    disk = SmallDisk(tmp_path / "disk")
    try:
        clock = FakeClock(T0)
        store = Store(str(disk.path), retention=31 * DAY, clock=clock)
        fleet = Fleet(CollectorSection(), clock=clock, monotonic=clock)
        seq = 0
        for hour in range(5):
            if hour == 1:
                disk.fill()
            if hour == 4:
                disk.free()
            seq = beat_hours(fleet, clock, 1, seq)
            rows, events = fleet.take_changes()
            try:
                store.write(rows, events)
            except StoreError:
                assert 1 <= hour <= 3
                fleet.requeue(rows, events)
        api = HistoryApi(fleet, StoreReader(store.path), clock=clock)
        hours = api.device_history("pi", {"since": [str(T0)]})[1]["hours"]
        assert [(x["received"], x.get("base")) for x in hours] == [(360, None), (None, True)]
        store.close()
    finally:
        disk.unmount()


def test_a_strip_holds_no_more_segments_than_it_can_draw(tmp_path: Path) -> None:
    """A device that changed state 1,000 times in a day: its strip has at most 2 x 200 + 1
    segments (neighbours under 1/200 of the range merged, in their worst state), the strip
    still starts and ends where the unmerged one does, and a range over 7 days is a 400."""
    clock = FakeClock(T0)
    store = Store(str(tmp_path), retention=31 * DAY, clock=clock)
    fleet = Fleet(CollectorSection(), clock=clock, monotonic=clock)
    for q in (0, 1):
        fleet.receive(hb("pi", q), ("10.0.0.1", 1))
    store.write(*fleet.take_changes())
    events = [{"time": T0 + 60 + k * 80.0, "device": "pi", "from": "down" if k % 2 else "up",
               "to": "up" if k % 2 else "down", "reason": "x"} for k in range(999)]  # fmt: skip
    store.write([], events)
    clock.now = T0 + DAY
    api = HistoryApi(fleet, StoreReader(store.path), clock=clock)
    strip = api.timelines({"id": ["pi"]})["devices"]["pi"]
    assert len(strip) <= 401
    assert all(b > a for a, b, _, _ in strip)
    assert "down" in {s for _, _, s, r in strip if r == "merged"}  # the worst state shows
    assert strip[-1][1] == clock.now
    with pytest.raises(BadRequest, match="since: the range is at most 7 days"):
        api.timelines({"since": [str(clock.now - 8 * DAY)]})
    store.close()


def test_as_many_ids_as_allowed_fit_the_request_head() -> None:
    """MAX_IDS ids of 64 characters fit the HTTP server's 16 KiB request head; one more id
    is a 400 that names `id` (not a 431 for an oversized head)."""
    import urllib.error
    import urllib.request

    from fleetbeat.collector.http_params import MAX_IDS

    col = CollectorProcess(Path(tempfile.mkdtemp()))
    try:
        base = col.http_url()
        ids = [f"d{i:03d}-" + "x" * 59 for i in range(MAX_IDS + 1)]
        query = "&".join(f"id={d}" for d in ids[:MAX_IDS])
        with urllib.request.urlopen(f"{base}/api/timelines?{query}", timeout=10) as r:  # noqa: S310
            assert r.status == 200
        try:
            more = f"{base}/api/timelines?{query}&id={ids[-1]}"
            urllib.request.urlopen(more, timeout=10)  # noqa: S310 - loopback
            raise AssertionError("201 ids accepted")
        except urllib.error.HTTPError as err:
            assert err.code == 400 and b"id: at most 200" in err.read()
    finally:
        col.stop()
