"""The store's history: the hourly loss table, the version-1 migration, the threads' reader."""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from fleetbeat import wire
from fleetbeat.collector import history as h
from fleetbeat.collector.config import CollectorSection
from fleetbeat.collector.fleet import Fleet
from fleetbeat.collector.rows import ROW_COLUMNS
from fleetbeat.collector.store import Store
from fleetbeat.collector.store_reader import StoreReader, StoreUnavailable
from helpers import FakeClock

RUN = "0" * 15 + "1"
T0 = 1_800_000_000.0  # an hour boundary
V1_COLUMNS = ROW_COLUMNS[: ROW_COLUMNS.index("hb_received")]


def hb(dev: str, seq: int) -> bytes:
    return wire.dumps({"v": 1, "k": "hb", "dev": dev, "run": RUN, "seq": seq, "ts": 0.0,
                       "int": 1.0, "tags": {"site": "x"}, "m": {"cpu": 1.0}})  # fmt: skip


def feed(fleet: Fleet, clock: FakeClock, dev: str, seqs: Any) -> None:
    for seq in seqs:
        clock.now += 1
        fleet.receive(hb(dev, seq), ("10.0.0.7", 5000))


def flush(fleet: Fleet, store: Store) -> None:
    rows, events = fleet.take_changes()
    store.write(rows, events)


def hours(path: str, dev: str) -> list[tuple[float, int, int]]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT hour, received, expected FROM hours WHERE device = ?"
                          " ORDER BY hour", (dev,)).fetchall()  # fmt: skip


def test_each_flush_upserts_the_hour_with_lifetime_totals(tmp_path: Path) -> None:
    """Every write keeps one row per device and hour: its lifetime totals at the last flush."""
    clock = FakeClock(T0)
    store = Store(str(tmp_path), retention=31 * 86400.0, clock=clock)
    fleet = Fleet(CollectorSection(), clock=clock, monotonic=clock)
    feed(fleet, clock, "a", range(0, 5))
    flush(fleet, store)
    feed(fleet, clock, "a", (6, 7))  # seq 5 lost
    flush(fleet, store)
    clock.now = T0 + 3600
    feed(fleet, clock, "a", (8, 9))
    flush(fleet, store)
    assert hours(store.path, "a") == [(T0, 7, 8), (T0 + 3600, 9, 10)]
    assert h.hourly(hours(store.path, "a")) == [
        {"hour": T0, "received": None, "expected": None, "base": True},  # no interval
        {"hour": T0 + 3600, "received": 2, "expected": 2},
    ]
    store.forget(["a"])
    assert hours(store.path, "a") == []
    store.close()


def test_prune_deletes_old_hours_but_keeps_each_devices_newest_row(tmp_path: Path) -> None:
    """Rows older than loss_history (plus the base hour) go; a silent device keeps its last."""
    clock = FakeClock(T0)
    store = Store(str(tmp_path), retention=31 * 86400.0, loss_history=2 * 3600.0, clock=clock)
    fleet = Fleet(CollectorSection(), clock=clock, monotonic=clock)
    for hour in range(6):
        clock.now = T0 + hour * 3600
        feed(fleet, clock, "busy", (2 * hour, 2 * hour + 1))
        if hour == 0:
            feed(fleet, clock, "quiet", (0, 1))
        flush(fleet, store)
    store.prune(T0 + 5 * 3600 + 10)
    assert [r[0] for r in hours(store.path, "busy")] == [T0 + k * 3600 for k in (2, 3, 4, 5)]
    assert [r[0] for r in hours(store.path, "quiet")] == [T0]
    store.close()


def v1_database(tmp_path: Path, clock: FakeClock) -> tuple[list[dict[str, Any]], list[Any]]:
    """A version-1 database (no hours, no lifetime columns) with two devices and their events."""
    fleet = Fleet(CollectorSection(), clock=clock, monotonic=clock)
    feed(fleet, clock, "old-1", range(0, 6))
    feed(fleet, clock, "old-2", (0, 1, 3))
    clock.now += 100  # both silent: down, a second event each
    fleet.check()
    rows, events = fleet.take_changes()
    cols = ", ".join(V1_COLUMNS)
    with sqlite3.connect(tmp_path / "fleetbeat.db") as db:
        db.executescript(f"""
            CREATE TABLE devices ({cols}, PRIMARY KEY (id));
            CREATE TABLE events (time REAL NOT NULL, device TEXT NOT NULL, from_state TEXT,
                to_state TEXT NOT NULL, reason TEXT NOT NULL);
            CREATE INDEX events_time ON events (time);
            PRAGMA user_version = 1;
        """)  # fmt: skip
        marks = ", ".join("?" * len(V1_COLUMNS))
        db.executemany(f"INSERT INTO devices VALUES ({marks})",  # noqa: S608
                       [r[: len(V1_COLUMNS)] for r in rows])  # fmt: skip
        db.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?)",
                       [(e["time"], e["device"], e["from"], e["to"], e["reason"])
                        for e in events])  # fmt: skip
    return fleet.devices(), fleet.events()


def test_a_version_1_database_is_migrated_and_keeps_its_devices(tmp_path: Path) -> None:
    """Opening a version-1 file adds the columns and tables, keeps every device and event, and
    its devices' first stored hour is a base, not an hour holding their whole past."""
    clock = FakeClock(T0 + 60)
    devices, events = v1_database(tmp_path, clock)
    store = Store(str(tmp_path), retention=31 * 86400.0, clock=clock)
    with sqlite3.connect(store.path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 2
        assert {"hb_received", "hb_expected"} <= {r[1] for r in db.execute(
            "PRAGMA table_info(devices)")}  # fmt: skip
        # each old event ends where its device's next one starts; the latest stays open
        spans = db.execute("SELECT device, time, ends FROM events ORDER BY device, time")
        by_dev: dict[str, list[tuple[float, Any]]] = {}
        for dev, t, ends in spans:
            by_dev.setdefault(dev, []).append((t, ends))
        assert [len(found) for found in by_dev.values()] == [2, 2]
        for found in by_dev.values():
            assert [e for _, e in found] == [t for t, _ in found[1:]] + [None]
    rows, stored_events = store.load(clock.now)
    fleet = Fleet(CollectorSection(), clock=lambda: 0.0, monotonic=lambda: 0.0)
    fleet.restore(rows, stored_events)
    assert fleet.devices() == devices
    assert fleet.events() == events
    again = Fleet(CollectorSection(), clock=clock, monotonic=clock)
    again.restore(rows, stored_events)
    clock.now = T0 + 3600 + 5
    feed(again, clock, "old-1", (6, 7))
    flush(again, store)
    clock.now = T0 + 2 * 3600 + 5
    feed(again, clock, "old-1", (8, 9, 11))
    flush(again, store)
    reader = StoreReader(store.path)
    before, found = reader.hours("old-1", T0, T0 + 3 * 3600)
    assert (before, found) == ((T0 - 3600, 6, 6), [(T0 + 3600, 8, 8), (T0 + 7200, 11, 12)])
    got = h.hourly(found, before)
    assert got == [{"hour": T0 + 3600, "received": 2, "expected": 2},
                   {"hour": T0 + 7200, "received": 3, "expected": 4}]  # fmt: skip
    before, found = reader.hours("old-2", T0 - 7200, T0 + 3 * 3600)  # the base is no hour
    assert (before, found) == (None, [(T0 - 3600, 3, 4)])
    base = [{"hour": T0 - 3600, "received": None, "expected": None, "base": True}]
    assert h.hourly(found, before) == base
    assert reader.no_base_before() == T0  # small totals, yet the migration's base
    assert h.hourly(found, before, interval=10.0, no_base_before=reader.no_base_before()) == base
    reader.close()
    store.close()
    Store(str(tmp_path), retention=1.0).close()  # opened again: version 2 as it is


def test_the_reader_has_a_connection_per_thread_and_survives_a_recreated_file(
    tmp_path: Path,
) -> None:
    """Reads from other threads work; a deleted file is StoreUnavailable; the recreated one
    is read again without restarting anything."""
    clock = FakeClock(T0)
    store = Store(str(tmp_path), retention=31 * 86400.0, clock=clock)
    fleet = Fleet(CollectorSection(), clock=clock, monotonic=clock)
    feed(fleet, clock, "a", range(3))
    flush(fleet, store)
    reader = StoreReader(store.path)
    seen: list[Any] = []

    def read() -> None:
        seen.append(reader.events("a", 0.0))

    threads = [threading.Thread(target=read) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [(found[0], len(found[1]), found[2]) for found in seen] == [(None, 1, False)] * 3
    store.close()
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(store.path + suffix):
            os.unlink(store.path + suffix)
    with pytest.raises(StoreUnavailable):
        reader.events("a", 0.0)
    store.reopen()
    assert reader.events("a", 0.0) == (None, [], False)
    flush_all = Fleet(CollectorSection(), clock=clock, monotonic=clock)
    feed(flush_all, clock, "b", range(2))
    flush(flush_all, store)
    assert [e[2] for e in reader.events("b", 0.0)[1]] == ["up"]
    assert reader.priors(clock.now)["b"][3] == "first_seen"
    assert [(dev, len(evs)) for dev, evs in reader.scan(0.0)] == [("b", 1)]
    reader.close()
    store.close()


def test_a_flapping_device_is_read_up_to_a_limit_newest_first(tmp_path: Path) -> None:
    """Past `limit` events only the newest are read, oldest first, with no prior: the oldest
    read one's `from` then stands for what came before, and the caller is told."""
    store = Store(str(tmp_path), retention=31 * 86400.0, clock=FakeClock(T0))
    flaps = [{"time": T0 + i, "device": "f", "from": "up" if i % 2 else "down",
              "to": "down" if i % 2 else "up", "reason": "x"} for i in range(30)]  # fmt: skip
    store.write([], flaps)
    reader = StoreReader(store.path)
    prior, events, cut = reader.events("f", T0 + 5, limit=10)
    assert (prior, [e[0] for e in events], cut) == (None, [T0 + i for i in range(20, 30)], True)
    prior, events, cut = reader.events("f", T0 + 19, limit=10)
    assert (prior, len(events), cut) == ((T0 + 19, "up", "down", "x"), 10, False)
    reader.close()
    store.close()


def test_the_stored_events_are_bounded_oldest_first(tmp_path: Path) -> None:
    """A flood of events past max_events is cut back to it by the write that goes 10% past
    (the oldest first), and by the prune; `pruned_to` moves up to the newest deleted, so
    no older `from` state is stretched over what went; forget keeps the count right."""
    store = Store(str(tmp_path), retention=31 * 86400.0, max_events=1000, clock=FakeClock(T0))
    flood = [{"time": T0 + i, "device": f"f{i % 50}", "from": "up", "to": "down",
              "reason": "x"} for i in range(1099)]  # fmt: skip
    store.write([], flood)

    def count() -> int:
        with sqlite3.connect(store.path) as db:
            return int(db.execute("SELECT count(*) FROM events").fetchone()[0])

    assert count() == 1099  # within the 10%: left to the prune
    store.write([], [{**flood[0], "time": T0 + 2000.0}, {**flood[0], "time": T0 + 2001.0}])
    assert count() == 1000
    reader = StoreReader(store.path)
    assert reader.pruned_to() == T0 + 100  # the newest of the 101 deleted
    with sqlite3.connect(store.path) as db:
        assert db.execute("SELECT MIN(time) FROM events").fetchone()[0] == T0 + 101
    store.max_events = 900
    assert store.prune(T0 + 3000) == 100 and count() == 900
    assert reader.pruned_to() == T0 + 200
    store.forget(["f1"])
    assert store._count == count() < 900
    store.max_events = 10**6
    assert store.prune(T0 + 3000) == 0
    reader.close()
    store.close()
