"""The device lifecycle on a real Fleet with fake clocks: expected -> missing -> alerted
after missing_after -> speaks -> up; forgetting (at once, by forget_after), and what the
store and the alerts see of it."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Optional

import pytest
from alert_helpers import alerts_config
from collector_helpers import stored_devices, stored_events

from fleetbeat import wire
from fleetbeat.collector.alerts import Alerts
from fleetbeat.collector.config import CollectorConfig, CollectorSection
from fleetbeat.collector.expected import Rereader
from fleetbeat.collector.fleet import Fleet
from fleetbeat.collector.service import Collector
from fleetbeat.collector.store import Store
from fleetbeat.config import frozen as dataclasses
from helpers import FakeClock

T0 = 1_764_000_000.0
DAY = 86400.0
RUN_A = "0123456789abcdef"
RUN_B = "fedcba9876543210"
BARN = {"site": "barn"}


class World:
    """A real Fleet whose wall and monotonic clocks the test moves (`advance`)."""

    def __init__(self, **section: Any) -> None:
        self.wall = FakeClock(T0)
        self.mono = FakeClock(1000.0)
        self.section = dataclasses.replace(CollectorSection(), **{"down_after": 3.0, **section})
        self.fleet = Fleet(self.section, clock=self.wall, monotonic=self.mono)

    def hb(self, dev: str, seq: int, *, run: str = RUN_A, tags: Optional[dict[str, str]] = None,
           kind: str = "hb") -> None:  # fmt: skip
        msg: dict[str, Any] = {"v": 1, "k": kind, "dev": dev, "run": run, "seq": seq,
                               "ts": self.wall.now}  # fmt: skip
        if kind == "hb":
            msg.update({"int": 10.0, "bt": 1_763_000_000})
            if tags is not None:
                msg["tags"] = tags
        self.fleet.receive(wire.dumps(msg), ("127.0.0.1", 4000))

    def speaks(self, dev: str, tags: Optional[dict[str, str]] = None, run: str = RUN_A) -> None:
        """Two heartbeats: a confirmed device."""
        self.hb(dev, 0, run=run, tags=tags)
        self.hb(dev, 1, run=run, tags=tags)

    def advance(self, seconds: float, *, wall: Optional[float] = None) -> None:
        """Both clocks move (the wall clock by `wall` if given: a step), then the check."""
        self.wall.now += seconds if wall is None else wall
        self.mono.now += seconds
        self.fleet.check()

    def state(self, dev: str) -> Optional[str]:
        d = self.fleet.device(dev)
        return None if d is None else str(d["state"])

    def ids(self) -> list[str]:
        return [d["id"] for d in self.fleet.devices()]


def test_an_expected_id_never_heard_is_a_missing_device_with_the_files_tags() -> None:
    """Expected ids the fleet never heard are in devices(), device() and the counts as
    "missing" since they were expected, with the file's tags and every key a device has."""
    w = World()
    w.speaks("pi-heard")
    w.wall.now += 5
    assert w.fleet.expect({"pi-barn-01": BARN, "pi-barn-02": {}, "pi-heard": {}}) == (3, 0)
    devices = w.fleet.devices()
    assert [(d["id"], d["state"]) for d in devices] == [
        ("pi-barn-01", "missing"), ("pi-barn-02", "missing"), ("pi-heard", "up")]  # fmt: skip
    missing = devices[0]
    assert set(missing) == set(devices[2])  # the same contract keys as a tracked device
    assert missing["tags"] == BARN and missing["state_since"] == T0 + 5
    assert missing["last_seen"] is None and missing["interval"] is None
    assert missing["listed"] is True and missing["confirmed"] is False
    assert w.fleet.device("pi-barn-01") == missing
    assert devices[2]["listed"] is True  # expected and known: simply a device
    stats = w.fleet.stats()
    assert stats["devices"] == {"up": 1, "late": 0, "down": 0, "offline": 0, "missing": 2}
    assert (stats["devices_known"], stats["devices_expected"]) == (1, 3)
    assert w.fleet.device("pi-nobody") is None


def test_a_missing_device_that_speaks_is_new_with_its_own_tags_filled_in_by_the_files() -> None:
    """Its first_seen says from "missing"; its heartbeat's tags win, the file's fill in the
    keys they lack (in the API), and the store keeps the heartbeat's own."""
    w = World()
    w.fleet.expect({"pi-barn-01": {"site": "barn", "room": "loft"}})
    w.advance(30)
    w.speaks("pi-barn-01", tags={"room": "cellar", "rack": "3"})
    d = w.fleet.device("pi-barn-01")
    assert d is not None and d["state"] == "up" and d["confirmed"]
    assert d["tags"] == {"room": "cellar", "rack": "3", "site": "barn"}
    (ev,) = w.fleet.events()
    assert (ev["from"], ev["to"], ev["reason"]) == ("missing", "up", "first_seen")
    assert w.fleet.stats()["devices"]["missing"] == 0
    rows, _ = w.fleet.take_changes()
    assert '"site"' not in rows[0][11]  # the stored tags: the heartbeat's only


def test_a_listed_device_heard_once_is_tracked_and_junk_cannot_evict_it() -> None:
    """An expected id heard once is tracked (up), and not the first to go: a junk id
    arriving when the fleet is full is rejected (max_devices) instead."""
    w = World(max_devices=1)
    w.fleet.expect({"pi-1": {}})
    w.hb("pi-1", 0)
    assert w.state("pi-1") == "up"
    w.hb("junk-1", 0)
    assert w.state("pi-1") == "up" and w.state("junk-1") is None
    assert w.fleet.stats()["rejected"]["max_devices"] == 1


def test_a_silent_listed_device_is_never_evicted_and_its_down_alert_stays() -> None:
    """max_devices full, a listed device and an unlisted one both silent past evict_after:
    a new id evicts the unlisted one; the next is rejected (max_devices) rather than the
    listed device evicted, which stays down (not missing), its stored history kept, and
    its down alert firing, never told "back up"."""
    w = World(max_devices=2, evict_after=60.0)
    w.fleet.expect({"pi-a": BARN})
    w.speaks("pi-a")
    w.speaks("other")
    a = Alerts(alerts_config(group_wait="0s", group_interval="1m"), missing_after=600.0)
    w.advance(100)  # both down, then silent past evict_after
    a.observe(w.fleet.take_changes()[1], w.wall.now)
    a.evaluate(w.fleet.devices(), w.wall.now)
    told = _notes(a, w.wall.now, w.wall.now + 1)
    assert sorted(x["device"] for n in told for x in n.alerts) == ["other", "pi-a"]
    w.speaks("new-1")
    assert w.state("other") is None and w.state("new-1") == "up"
    w.speaks("new-2")
    assert w.state("new-2") is None and w.fleet.stats()["rejected"]["max_devices"] == 2
    d = w.fleet.device("pi-a")
    assert d is not None and d["state"] == "down" and d["received"] == 2
    assert w.fleet.take_forgotten() == ["other"]  # the store deletes the evicted one only
    t = w.wall.now
    for step in range(0, 600, 20):
        a.evaluate(w.fleet.devices(), t + step)
        for n in _notes(a, t + step, t + step + 19):
            assert "back up" not in n.summary, n.summary
    assert ("down", "pi-a") in {(x["kind"], x["device"]) for x in a.active(t + 600)}


def test_missing_devices_take_no_place_and_junk_cannot_remove_them() -> None:
    """max_devices counts the devices heard: three missing ones block no real device, and
    a flood of junk ids (each heard once) never takes a missing one off the list."""
    w = World(max_devices=2)
    w.fleet.expect({f"pi-{i}": BARN for i in range(3)})
    w.speaks("real-a")
    w.speaks("real-b")
    assert w.state("real-a") == "up" and w.state("real-b") == "up"
    for i in range(200):
        w.hb(f"junk-{i}", 0)
    assert w.fleet.stats()["rejected"]["max_devices"] == 200
    assert [w.state(f"pi-{i}") for i in range(3)] == ["missing"] * 3
    assert w.fleet.stats()["devices"]["missing"] == 3


def test_a_big_expected_list_is_never_read_whole_under_the_fleets_lock() -> None:
    """With 50,000 ids expected and one heard: stats() counts the missing ones without
    reading the list, and devices() and a new list (expect) read and sort it with the
    fleet's lock released, so receivers never wait for it."""
    w = World(max_devices=100_000)
    lock = w.fleet._lock

    class Watched(dict):  # type: ignore[type-arg]
        """A dict that counts the times it was read whole while the fleet's lock was held."""

        locked = 0

        def __iter__(self) -> Any:
            Watched.locked += lock.locked()
            return super().__iter__()

        def items(self) -> Any:
            Watched.locked += lock.locked()
            return super().items()

        def keys(self) -> Any:
            Watched.locked += lock.locked()
            return super().keys()

    w.speaks("pi-000007")
    w.fleet.expect(Watched({f"pi-{i:06d}": BARN for i in range(50_000)}))
    life = w.fleet._life
    life._expected = Watched(life._expected)  # the list as installed, watched too
    assert w.fleet.stats()["devices"]["missing"] == 49_999
    devices = w.fleet.devices()
    assert len(devices) == 50_000 and devices[7]["state"] == "up"
    assert Watched.locked == 0


def test_a_reload_keeps_the_since_of_ids_kept_and_drops_the_ids_removed() -> None:
    """A new list (SIGHUP): ids kept stay missing since they were first expected; new
    ones since now; removed ones are no longer shown."""
    w = World()
    w.fleet.expect({"a": {}, "b": {}})
    w.advance(100)
    assert w.fleet.expect({"b": {"site": "x"}, "c": {}}) == (1, 1)
    assert {d["id"]: d["state_since"] for d in w.fleet.devices()} == {"b": T0, "c": T0 + 100}
    assert w.fleet.device("b")["tags"] == {"site": "x"}  # type: ignore[index]
    assert w.fleet.device("a") is None


def test_forget_removes_a_device_and_its_events_and_records_it() -> None:
    """forget(): the device leaves devices() and the counts, its events leave events(),
    one event says it was forgotten (from its state); a second forget is False, and so
    is forgetting an unknown or a missing id."""
    w = World()
    w.fleet.expect({"pi-missing": {}})
    w.speaks("pi-1")
    w.speaks("pi-2")
    w.hb("pi-1", 2, run=RUN_B)  # a restart: an event of pi-1's
    w.advance(100)  # both down
    assert w.fleet.forget("pi-1")
    assert w.ids() == ["pi-2", "pi-missing"]
    assert w.fleet.stats()["devices"]["down"] == 1
    assert w.fleet.stats()["forgotten"] == {"forgotten": 1, "forget_after": 0}
    mine = [e for e in w.fleet.events() if e["device"] == "pi-1"]
    assert mine == [{"time": T0 + 100, "device": "pi-1", "from": "down", "to": "forgotten",
                     "reason": "forgotten"}]  # fmt: skip
    assert [e["device"] for e in w.fleet.events()].count("pi-2") == 2  # first_seen, down
    assert not w.fleet.forget("pi-1")
    assert not w.fleet.forget("pi-nobody")
    assert not w.fleet.forget("pi-missing") and w.state("pi-missing") == "missing"


def test_a_forgotten_device_that_speaks_again_is_new() -> None:
    """Its counters start again from nothing, and its first_seen has no from state."""
    w = World()
    w.speaks("pi-1")
    w.hb("pi-1", 5, run=RUN_B)  # a restart
    assert w.fleet.device("pi-1")["restarts"] == 1  # type: ignore[index]
    w.fleet.forget("pi-1")
    w.advance(10)
    w.speaks("pi-1", run=RUN_B)
    d = w.fleet.device("pi-1")
    assert d is not None and (d["restarts"], d["received"], d["state"]) == (0, 2, "up")
    assert d["state_since"] == T0 + 10
    assert [(e["from"], e["to"], e["reason"]) for e in w.fleet.events()] == [
        ("up", "forgotten", "forgotten"), (None, "up", "first_seen")]  # fmt: skip


def test_an_expected_device_forgotten_is_missing_again_from_then() -> None:
    """Forgetting an expected device that spoke leaves it missing, since the forget."""
    w = World()
    w.fleet.expect({"pi-1": BARN})
    w.speaks("pi-1", tags={"room": "loft"})
    w.advance(3600)
    assert w.fleet.forget("pi-1")
    d = w.fleet.device("pi-1")
    assert d is not None and d["state"] == "missing" and d["state_since"] == T0 + 3600
    assert d["tags"] == BARN  # the file's only: what it said of itself is forgotten


def test_forget_after_forgets_devices_down_or_offline_that_long_but_never_expected_ones() -> None:
    """After forget_after down (or offline) a device is forgotten (reason forget_after),
    at the once-a-minute scan; an up device, and an expected one down as long, are not."""
    w = World(forget_after=30 * DAY)
    w.fleet.expect({"pi-kept": {}})
    for dev in ("pi-down", "pi-offline", "pi-kept", "pi-up"):
        w.speaks(dev)
    w.hb("pi-offline", 2, kind="bye")
    w.advance(100)  # pi-down, pi-kept down; pi-up is heard all along, below
    w.speaks("pi-up", run=RUN_B)
    for _ in range(30):
        w.advance(DAY - 10)
        w.hb("pi-up", 1000 + _, run=RUN_B)
    assert set(w.ids()) == {"pi-down", "pi-offline", "pi-kept", "pi-up"}  # 30 d - 300 s
    w.advance(600)
    assert set(w.ids()) == {"pi-kept", "pi-up"}
    assert w.state("pi-kept") == "down"
    gone = [
        (e["device"], e["from"], e["reason"]) for e in w.fleet.events() if e["to"] == "forgotten"
    ]
    assert sorted(gone) == [("pi-down", "down", "forget_after"),
                            ("pi-offline", "offline", "forget_after")]  # fmt: skip
    assert w.fleet.stats()["forgotten"] == {"forgotten": 0, "forget_after": 2}


def test_a_reload_of_an_empty_list_is_refused_and_the_protection_stays(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SIGHUP with the expected_devices file emptied (or all comments): refused, logged
    as an error naming the file and how to clear the list; the device down for 45 days
    stays listed and is not forgotten. Clearing it on purpose (expected_devices = "")
    works."""
    path = tmp_path / "expected"
    path.write_text("pi-seasonal site=barn\n")
    section = dataclasses.replace(CollectorSection(), state_dir=str(tmp_path),
                                  expected_devices=str(path), forget_after=30 * DAY)  # fmt: skip
    w = World(forget_after=30 * DAY)
    reload = Rereader(w.fleet)  # what SIGHUP runs (`Collector._apply_file`), in this thread
    reload.now(section, str(path))
    w.speaks("pi-seasonal")
    for _ in range(45):
        w.advance(DAY)
    for text in ("", "# nothing here yet\n\n"):
        path.write_text(text)
        with caplog.at_level(logging.ERROR):
            reload.now(section, str(path))
        (err,) = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert str(path) in err and "lists none of the 1 expected devices" in err
        assert 'expected_devices = ""' in err
        caplog.clear()
        w.advance(61)
        d = w.fleet.device("pi-seasonal")
        assert d is not None and d["listed"] and d["state"] == "down"
    reload.now(dataclasses.replace(section, expected_devices=""), str(path))
    assert w.fleet.stats()["devices_expected"] == 0


def test_a_device_that_leaves_the_list_is_forgotten_only_forget_after_later() -> None:
    """A listed device long down, taken out of the list (the list still has others): not
    forgotten at the next scans, but once forget_after has passed since it left."""
    w = World(forget_after=30 * DAY)
    w.fleet.expect({"pi-old": {}, "pi-other": {}})
    w.speaks("pi-old")
    for _ in range(40):
        w.advance(DAY)
    w.fleet.expect({"pi-other": {}}, "expected")
    w.advance(61)
    w.advance(29 * DAY)
    assert w.state("pi-old") == "down"
    w.advance(DAY)
    w.advance(61)
    assert w.state("pi-old") is None
    (ev,) = [e for e in w.fleet.events() if e["to"] == "forgotten"]
    assert (ev["device"], ev["reason"]) == ("pi-old", "forget_after")


def test_forget_after_scans_once_a_minute_and_zero_never_forgets() -> None:
    """A device that crosses forget_after just after a scan waits for the next one (a
    minute later); with forget_after 0 nothing is ever forgotten."""
    w = World(forget_after=3600.0)
    w.speaks("pi-1")
    w.advance(100)  # judged down at this check (T0+100); the first scan ran here too
    w.advance(3590)  # a scan: down 3590 s, not yet
    assert w.ids() == ["pi-1"]
    w.advance(20)  # down past an hour, but the next scan is due 60 s after the last
    assert w.ids() == ["pi-1"]
    w.advance(45)
    assert w.ids() == []
    never = World(forget_after=0.0)
    never.speaks("pi-1")
    never.advance(10 * 365 * DAY)
    assert never.ids() == ["pi-1"]


def test_a_wall_clock_step_alone_forgets_nothing() -> None:
    """A device down for a minute when the wall clock jumps 60 days is kept: forgetting
    needs that long on the monotonic clock too."""
    w = World(forget_after=30 * DAY)
    w.speaks("pi-1")
    w.advance(100)
    w.advance(61, wall=60 * DAY)
    assert w.state("pi-1") == "down"


def test_forget_after_forgets_at_most_a_thousand_a_scan_the_oldest_first() -> None:
    """1,500 devices past forget_after: 1,000 go at one scan (the longest down first, not
    the first heard), the rest at the next, so one flush never carries a huge delete."""
    w = World(forget_after=3600.0)
    for i in range(500):
        w.speaks(f"later-{i:03d}")
    for i in range(1000):
        w.speaks(f"early-{i:04d}")
    w.advance(50)  # every one down
    for i in range(500):
        w.hb(f"later-{i:03d}", 2)
        w.hb(f"later-{i:03d}", 3)
    w.advance(100)  # the later ones down again, 100 s after the early ones
    w.advance(3600)
    assert w.ids() == [f"later-{i:03d}" for i in range(500)]
    w.advance(61)
    assert w.ids() == []


def test_restored_devices_long_down_are_forgotten_at_the_first_scan() -> None:
    """A device stored as down 40 days ago is forgotten once the collector is back: the
    stored state_since counts, and the monotonic clock is set back by its silence."""
    old = World()
    old.speaks("pi-old")
    old.speaks("pi-new")
    old.advance(100)
    rows, _ = old.fleet.take_changes()
    w = World(forget_after=30 * DAY)
    w.wall.now += 40 * DAY
    w.fleet.restore(rows, [])
    w.speaks("pi-new", run=RUN_B)
    w.advance(1)
    assert w.ids() == ["pi-new"]


def _collector(tmp_path: Path, wall: FakeClock) -> Collector:  # wall: now (the store reads)
    """A real Collector with its real store and flush, not started (no sockets)."""
    section = dataclasses.replace(CollectorSection(), state_dir=str(tmp_path))
    col = Collector(CollectorConfig(collector=section), clock=wall)
    col.store = Store(str(tmp_path), retention=60 * DAY)
    return col


def test_the_store_deletes_a_forgotten_device_and_keeps_only_the_event(tmp_path: Path) -> None:
    """After forget and a flush or two, the store has no row and no old event of the
    device, only the event that it was forgotten; the other devices are untouched."""
    wall = FakeClock(time.time())
    col = _collector(tmp_path, wall)
    try:
        for dev in ("pi-1", "pi-2"):
            for seq in range(2):
                col.fleet.receive(wire.dumps({"v": 1, "k": "hb", "dev": dev, "run": RUN_A,
                                              "seq": seq, "ts": wall.now, "int": 10.0}), ("h", 1))  # fmt: skip
        assert col.flush()
        assert set(stored_devices(tmp_path)) == {"pi-1", "pi-2"}
        wall.now += 60
        assert col.fleet.forget("pi-1")
        assert col.flush() and col.flush()
        assert set(stored_devices(tmp_path)) == {"pi-2"}
        assert [(e["device"], e["to"]) for e in stored_events(tmp_path)] == [
            ("pi-2", "up"), ("pi-1", "forgotten")]  # fmt: skip
    finally:
        col.close()


def test_a_forget_racing_a_flush_neither_revives_the_row_nor_loses_the_event(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A device forgotten right after the flush took its changed row (the HTTP thread
    between take_changes and take_forgotten): the row is written, then deleted at the next
    flush, before the forgotten event is written. Nothing of it comes back."""
    wall = FakeClock(time.time())
    col = _collector(tmp_path, wall)
    fleet = col.fleet
    try:
        for seq in range(2):
            fleet.receive(wire.dumps({"v": 1, "k": "hb", "dev": "pi-1", "run": RUN_A,
                                      "seq": seq, "ts": wall.now, "int": 10.0}), ("h", 1))  # fmt: skip
        take = fleet.take_changes

        def racing(*args: Any) -> Any:
            taken = take(*args)
            monkeypatch.undo()
            assert fleet.forget("pi-1")  # after this batch was taken
            return taken

        monkeypatch.setattr(fleet, "take_changes", racing)
        assert col.flush()
        assert "pi-1" in stored_devices(tmp_path)  # the batch taken before the forget
        assert col.flush()
        assert stored_devices(tmp_path) == {}
        assert [(e["from"], e["to"]) for e in stored_events(tmp_path)] == [("up", "forgotten")]
    finally:
        col.close()


def test_a_failed_write_requeued_after_a_forget_does_not_bring_back_old_events() -> None:
    """Events taken for a write that fails come back, except those of a device forgotten
    meanwhile (the store deletes its events): its forgotten event stays."""
    w = World()
    w.speaks("pi-1")
    w.speaks("pi-2")
    _, taken = w.fleet.take_changes()
    w.advance(1)
    w.fleet.forget("pi-1")
    w.fleet.requeue([], taken)
    _, again = w.fleet.take_changes()
    assert [(e["device"], e["to"]) for e in again] == [("pi-2", "up"), ("pi-1", "forgotten")]


def test_a_device_heard_once_and_forgotten_leaves_no_event() -> None:
    """Junk heard once left no trace; forgetting it leaves none either."""
    w = World()
    w.hb("junk", 0)
    assert w.fleet.forget("junk")
    assert w.fleet.events() == [] and w.fleet.take_changes() == ([], [])
    assert w.fleet.take_forgotten() == []  # never stored: nothing to delete


def _notes(a: Alerts, start: float, end: float) -> list[Any]:
    out = []
    t = start
    while t <= end:
        out.extend(a.tick(t))
        t += 1.0
    return out


def test_missing_devices_alert_after_missing_after_grouped_and_resolve_when_they_speak() -> None:
    """The alert engine reading a real fleet: nothing before missing_after; then one
    notification "3 devices missing at site=barn"; a device that speaks is told back."""
    w = World()
    w.fleet.expect({f"pi-barn-0{i}": BARN for i in (1, 2, 3)})
    a = Alerts(alerts_config(group_wait="0s", group_interval="1m"), missing_after=600.0)
    for t in range(0, 600, 60):
        a.evaluate(w.fleet.devices(), T0 + t)
        assert _notes(a, T0 + t, T0 + t + 59) == []
    a.evaluate(w.fleet.devices(), T0 + 600)
    (n,) = _notes(a, T0 + 600, T0 + 601)
    assert n.summary == "3 devices missing at site=barn: pi-barn-01, pi-barn-02, pi-barn-03"
    assert {x["started"] for x in n.alerts} == {T0}
    w.wall.now = T0 + 700
    w.speaks("pi-barn-02")
    _, events = w.fleet.take_changes()
    a.observe(events, T0 + 700)
    (back,) = _notes(a, T0 + 700, T0 + 700 + 61)
    assert back.summary == "1 device back at site=barn: pi-barn-02"
    assert sorted(x["device"] for x in a.active(T0 + 800)) == ["pi-barn-01", "pi-barn-03"]


def test_a_forgotten_devices_alert_resolves_as_forgotten_and_an_expected_one_comes_back_missing(
) -> None:  # fmt: skip
    """A down device forgotten: its told alert resolves, told once as "forgotten" (not
    "back up"); an expected one is missing again, and alerts as such (a new alert) only
    after missing_after from the forget."""
    w = World()
    w.fleet.expect({"pi-barn-01": BARN})
    w.speaks("pi-barn-01")
    w.speaks("pi-other")
    w.advance(100)
    a = Alerts(alerts_config(group_wait="0s", group_interval="1m"), missing_after=600.0)
    a.observe(w.fleet.take_changes()[1], w.wall.now)
    told = _notes(a, w.wall.now, w.wall.now + 1)
    assert [x["kind"] for n in told for x in n.alerts] == ["down", "down"]
    w.fleet.forget("pi-barn-01")
    w.fleet.forget("pi-other")
    t = w.wall.now
    a.observe(w.fleet.take_changes()[1], t)
    a.evaluate(w.fleet.devices(), t)
    (gone,) = _notes(a, t + 1, t + 300)
    assert gone.status == "resolved" and a.active(t + 300) == []
    assert gone.summary == "2 devices forgotten (no site tag): pi-barn-01, pi-other"
    assert {(x["device"], x["resolved_reason"]) for x in gone.alerts} == {
        ("pi-barn-01", "forgotten"), ("pi-other", "forgotten")}  # fmt: skip
    a.evaluate(w.fleet.devices(), t + 600)
    (n,) = _notes(a, t + 600, t + 601)
    assert n.summary == "1 device missing at site=barn: pi-barn-01"
    assert [x["started"] for x in n.alerts] == [t]


def test_a_listed_down_device_forgotten_is_told_forgotten_even_if_seen_missing_first() -> None:
    """The alerts read the fleet (the device now missing) before they hear its forgotten
    event: its down alert still resolves as "forgotten", never "back up"."""
    w = World()
    w.fleet.expect({"pi-barn-01": BARN})
    w.speaks("pi-barn-01")
    w.advance(100)
    a = Alerts(alerts_config(group_wait="0s", group_interval="1m"), missing_after=600.0)
    a.evaluate(w.fleet.devices(), w.wall.now)
    a.observe(w.fleet.take_changes()[1], w.wall.now)
    assert [n.summary for n in _notes(a, w.wall.now, w.wall.now + 1)] == [
        "1 device down at site=barn: pi-barn-01"]  # fmt: skip
    w.fleet.forget("pi-barn-01")
    t = w.wall.now
    a.evaluate(w.fleet.devices(), t + 2)
    a.observe(w.fleet.take_changes()[1], t + 3)
    assert [n.summary for n in _notes(a, t + 3, t + 300)] == [
        "1 device forgotten at site=barn: pi-barn-01"]  # fmt: skip


def test_a_missing_alert_resolves_when_the_id_leaves_the_list_and_comes_back_new() -> None:
    """A told missing alert whose id is taken out of expected_devices resolves, told as
    "no longer expected"; with send_resolved off it goes untold; the id listed again
    later raises a new alert after missing_after, from the new listing."""
    for send_resolved in (True, False):
        w = World()
        w.fleet.expect({"pi-typo": BARN})
        a = Alerts(alerts_config(group_wait="0s", group_interval="1m",
                                 send_resolved=send_resolved), missing_after=600.0)  # fmt: skip
        a.evaluate(w.fleet.devices(), T0 + 600)
        (n,) = _notes(a, T0 + 600, T0 + 601)
        assert n.summary == "1 device missing at site=barn: pi-typo"
        w.wall.now = T0 + 700
        w.fleet.expect({})
        a.evaluate(w.fleet.devices(), T0 + 700)
        told = _notes(a, T0 + 700, T0 + 4 * 3600)
        assert a.active(T0 + 4 * 3600) == []
        if send_resolved:
            (back,) = told
            assert back.summary == "1 device no longer expected at site=barn: pi-typo"
            assert back.alerts[0]["resolved_reason"] == "no longer expected"
        else:
            assert told == []
        w.wall.now = T0 + 5 * 3600
        w.fleet.expect({"pi-typo": BARN})
        a.evaluate(w.fleet.devices(), w.wall.now + 599)
        assert _notes(a, w.wall.now + 599, w.wall.now + 599) == []
        a.evaluate(w.fleet.devices(), w.wall.now + 600)
        (again,) = _notes(a, w.wall.now + 600, w.wall.now + 601)
        assert again.summary == "1 device missing at site=barn: pi-typo"
        assert again.alerts[0]["started"] == w.wall.now


def test_a_told_missing_alert_survives_a_restart_within_missing_after() -> None:
    """After a collector restart a device is missing anew (since the start): the alert
    told before the restart is neither resolved nor told again."""
    a = Alerts(alerts_config(group_wait="0s"), missing_after=600.0)
    told = [{"kind": "missing", "device": "pi-1", "name": "missing", "severity": "critical",
             "tags": BARN, "started": T0 - DAY, "value": None}]  # fmt: skip
    assert a.restore(told, T0) == 1
    w = World()
    w.fleet.expect({"pi-1": BARN})
    a.evaluate(w.fleet.devices(), T0 + 5)
    assert _notes(a, T0, T0 + 700) == []
    assert [x["kind"] for x in a.active(T0 + 700)] == ["missing"]


def test_the_collectors_alerting_takes_missing_after_and_its_reload(tmp_path: Path) -> None:
    """Alerting built from the [collector] section alerts on a missing device once
    missing_after is over, and a reload's new missing_after applies to the next look."""
    from fleetbeat.collector.alerting import Alerting
    from fleetbeat.collector.config import parse_collector_config

    def section(after: str) -> CollectorSection:
        doc = {"collector": {"state_dir": str(tmp_path), "missing_after": after}}
        return parse_collector_config(doc, "t").collector

    w = World()
    w.wall.now = time.time()
    w.fleet.expect({"pi-barn-01": BARN})
    alerting = Alerting(section("1h"), w.fleet, healthy=lambda: True)
    try:
        alerting.turn()
        assert alerting.alerts.active(time.time()) == []
        alerting.apply(section("0s"))
        alerting._next_evaluate = -1e300  # the next turn reads the fleet again
        alerting.turn()
        (a,) = alerting.alerts.active(time.time())
        assert (a["kind"], a["device"], a["tags"]) == ("missing", "pi-barn-01", BARN)
    finally:
        alerting.close()
