"""The SQLite store: devices and events survive a collector restart."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from fleetbeat import wire
from fleetbeat.collector.config import CollectorSection
from fleetbeat.collector.fleet import Fleet
from fleetbeat.collector.store import Store, StoreError
from helpers import FakeClock

RUN = "0" * 15 + "1"


def hb(dev: str, seq: int, **kw: Any) -> bytes:
    msg = {"v": 1, "k": "hb", "dev": dev, "run": RUN, "seq": seq, "ts": 0.0, "int": 1.0,
           "bt": 1000.0, "tags": {"site": "x"}, "m": {"cpu": 2.5}}  # fmt: skip
    msg.update(kw)
    return wire.dumps(msg)


def persist(fleet: Fleet, store: Store) -> None:
    rows, events = fleet.take_changes()
    store.write(rows, events)


def reload(tmp_path: Path, clock: FakeClock) -> tuple[Fleet, Store]:
    store = Store(str(tmp_path), retention=86400.0)
    fleet = Fleet(CollectorSection(), clock=clock, monotonic=clock)
    rows, events = store.load(clock.now)
    fleet.restore(rows, events)
    return fleet, store


def test_devices_and_events_survive_a_restart(tmp_path: Path) -> None:
    """After a reload every device and event is back with the same figures."""
    clock = FakeClock(1_800_000_000.0)
    fleet, store = reload(tmp_path, clock)
    for seq in (0, 1, 3, 3, 2, 5):
        clock.now += 1
        fleet.receive(hb("a", seq), ("10.0.0.7", 5000))
        fleet.receive(hb("b", seq, run="2" * 16), ("::1", 5001, 0, 0))
    before = fleet.devices()
    events = fleet.events()
    persist(fleet, store)
    store.close()
    again, store = reload(tmp_path, clock)
    assert again.devices() == before
    assert again.events() == events
    assert before[0]["lost"] == 1
    assert before[0]["duplicates"] == 1
    assert before[1]["addr"] == "[::1]:5001"
    store.close()


def test_silent_device_is_down_after_restart(tmp_path: Path) -> None:
    """A device silent through a collector restart is judged down from its stored last-seen."""
    clock = FakeClock(1_800_000_000.0)
    fleet, store = reload(tmp_path, clock)
    for seq in range(5):
        clock.now += 1
        fleet.receive(hb("quiet", seq), ("10.0.0.7", 5000))
    last_seen = clock.now
    persist(fleet, store)
    store.close()
    clock.now += 60
    again, store = reload(tmp_path, clock)
    dev = again.device("quiet")
    assert dev is not None
    assert (dev["state"], dev["last_seen"]) == ("down", last_seen)
    assert again.events()[-1] == {"time": clock.now, "device": "quiet", "from": "up",
                                  "to": "down", "reason": "silent_through_restart"}  # fmt: skip
    store.close()


def test_gap_while_collector_was_away_is_not_network_loss(tmp_path: Path) -> None:
    """Heartbeats sent while the collector was stopped do not count as lost."""
    clock = FakeClock(1_800_000_000.0)
    fleet, store = reload(tmp_path, clock)
    for seq in range(5):
        clock.now += 1
        fleet.receive(hb("a", seq), ("10.0.0.7", 5000))
    persist(fleet, store)
    store.close()
    clock.now += 10
    again, store = reload(tmp_path, clock)
    for seq in (15, 16, 18):
        clock.now += 1
        again.receive(hb("a", seq), ("10.0.0.7", 5000))
    dev = again.device("a")
    assert dev is not None
    assert (dev["expected"], dev["received"], dev["lost"]) == (9, 8, 1)
    assert dev["state"] == "up"
    store.close()


def test_only_changed_devices_are_written(tmp_path: Path) -> None:
    """A flush writes the devices that changed since the last one, in one batch."""
    clock = FakeClock(1_800_000_000.0)
    fleet, store = reload(tmp_path, clock)
    for dev in ("a", "b", "c"):
        for seq in (0, 1):  # confirmed: a device heard once is not stored
            fleet.receive(hb(dev, seq), ("10.0.0.7", 5000))
    rows, events = fleet.take_changes()
    assert (len(rows), len(events)) == (3, 3)
    store.write(rows, events)
    fleet.receive(hb("b", 2), ("10.0.0.7", 5000))
    rows, events = fleet.take_changes()
    assert ([r[0] for r in rows], events) == (["b"], [])
    store.close()


def test_old_events_are_pruned(tmp_path: Path) -> None:
    """Events older than the retention are deleted and not reloaded."""
    clock = FakeClock(1_800_000_000.0)
    fleet, store = reload(tmp_path, clock)
    for seq in (0, 1):  # confirmed: a device heard once is not stored
        fleet.receive(hb("old", seq), ("10.0.0.7", 5000))
    clock.now += 90_000
    for seq in (0, 1):
        fleet.receive(hb("new", seq), ("10.0.0.7", 5000))
    persist(fleet, store)
    assert store.prune(clock.now) == 1
    rows, events = store.load(clock.now)
    assert [e["device"] for e in events] == ["new"]
    assert sorted(r[0] for r in rows) == ["new", "old"]
    store.close()


def test_unreadable_rows_are_skipped(tmp_path: Path) -> None:
    """A damaged device row is skipped; the others load."""
    clock = FakeClock(1_800_000_000.0)
    fleet, store = reload(tmp_path, clock)
    for seq in (0, 1):  # confirmed: a device heard once is not stored
        fleet.receive(hb("good", seq), ("10.0.0.7", 5000))
        fleet.receive(hb("bad", seq), ("10.0.0.7", 5000))
    persist(fleet, store)
    store.close()
    db = sqlite3.connect(tmp_path / "fleetbeat.db")
    db.execute("UPDATE devices SET counters = 'garbage' WHERE id = 'bad'")
    db.commit()
    db.close()
    again, store = reload(tmp_path, clock)
    assert [d["id"] for d in again.devices()] == ["good"]
    store.close()


def test_wal_mode(tmp_path: Path) -> None:
    """The database runs in WAL mode, so readers never block the collector's writes."""
    store = Store(str(tmp_path), retention=60.0)
    db = sqlite3.connect(tmp_path / "fleetbeat.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()
    store.close()


def test_unusable_state_dir_is_a_clear_error(tmp_path: Path) -> None:
    """A state_dir that cannot be created stops the collector with the path in the error."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StoreError, match=r"state database .*file/sub/fleetbeat.db"):
        Store(str(blocker / "sub"), retention=60.0)


def test_failed_write_is_retried(tmp_path: Path) -> None:
    """When the store cannot be written the collector keeps running and writes later."""
    from collector_helpers import Sender, stored_devices

    from fleetbeat.collector.config import CollectorConfig
    from fleetbeat.collector.service import Collector
    from fleetbeat.config import frozen as dataclasses
    from helpers import free_port, wait_until

    port = free_port()
    section = dataclasses.replace(CollectorSection(), udp_listen=f"127.0.0.1:{port}",
                                  http_listen="127.0.0.1:0", state_dir=str(tmp_path))  # fmt: skip
    collector = Collector(CollectorConfig(section))
    collector.start()
    sender = Sender(port, dev="retry-1")
    try:
        sender.send(0)
        sender.send(1)  # confirmed: a device heard once is not stored
        wait_until(lambda: (collector.fleet.device("retry-1") or {}).get("received") == 2)
        assert collector.store is not None
        collector.store._db.close()  # the corner a real disk cannot reach on demand: writes fail
        collector.flush()  # logged, not raised
        collector.store = Store(str(tmp_path), retention=60.0)
        collector.flush()
        assert "retry-1" in stored_devices(tmp_path)
    finally:
        sender.close()
        collector.close()
