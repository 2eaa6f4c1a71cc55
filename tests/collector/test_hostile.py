"""A hostile sender on the network: forged liveness, floods, clock steps, bad stored rows."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from fleetbeat import wire
from fleetbeat.collector.config import CollectorSection
from fleetbeat.collector.events import MAX_EVENTS_IN_MEMORY
from fleetbeat.collector.fleet import Fleet
from fleetbeat.collector.rows import ROW_COLUMNS, row_of
from fleetbeat.config import frozen as dataclasses
from helpers import FakeClock

RUN = "0123456789abcdef"
FORGED = "fedcba9876543210"


def make(**config: Any) -> tuple[Fleet, FakeClock, FakeClock]:
    """A fleet with separate injected wall and monotonic clocks."""
    wall = FakeClock(1_800_000_000.0)
    mono = FakeClock(1000.0)
    fleet = Fleet(dataclasses.replace(CollectorSection(), **config), clock=wall, monotonic=mono)
    return fleet, wall, mono


def msg(seq: int, kind: str = "hb", dev: str = "d", run: str = RUN, **kw: Any) -> bytes:
    m: dict[str, Any] = {"v": 1, "k": kind, "dev": dev, "run": run, "seq": seq,
                         "ts": 1_800_000_000.0}  # fmt: skip
    if kind == "hb":
        m["int"] = 1.0
    m.update(kw)
    return json.dumps(m).encode()


def tick(fleet: Fleet, wall: FakeClock, mono: FakeClock, seconds: float) -> None:
    wall.now += seconds
    mono.now += seconds
    fleet.check()


def state(fleet: Fleet, dev: str = "d") -> str:
    d = fleet.device(dev)
    assert d is not None
    return str(d["state"])


def test_forged_bye_of_an_unseen_run_changes_nothing() -> None:
    """A bye with a run the collector never saw is rejected; real heartbeats keep flowing."""
    fleet, wall, mono = make()
    for seq in range(3):
        fleet.receive(msg(seq), ("10.0.0.1", 1))
        tick(fleet, wall, mono, 1.0)
    fleet.receive(msg(0, "bye", run=FORGED), ("10.6.6.6", 1))
    assert state(fleet) == "up"
    assert fleet.stats()["rejected"] == {"unknown_run": 1}
    fleet.receive(msg(3), ("10.0.0.1", 1))
    d = fleet.device("d")
    assert d is not None
    assert (d["state"], d["run"], d["received"], d["restarts"]) == ("up", RUN, 4, 0)


def test_bye_of_an_unknown_device_is_rejected() -> None:
    """A bye from an id never heard from creates no device and is counted."""
    fleet, _, _ = make()
    fleet.receive(msg(0, "bye", dev="ghost"), ("10.6.6.6", 1))
    assert len(fleet) == 0
    assert fleet.stats()["rejected"] == {"unknown_run": 1}


def test_bye_of_the_tracked_run_still_takes_a_device_offline() -> None:
    """The agent's own bye (the run being tracked) makes the device offline."""
    fleet, _, _ = make()
    fleet.receive(msg(0), ("10.0.0.1", 1))
    fleet.receive(msg(1, "bye"), ("10.0.0.1", 1))
    assert state(fleet) == "offline"


def test_infinite_interval_cannot_keep_a_dead_device_up() -> None:
    """A heartbeat with int=1e308 is rejected, so the device still goes down on time."""
    fleet, wall, mono = make(down_after=3.0)
    fleet.receive(msg(0), ("10.0.0.1", 1))
    fleet.receive(msg(1, int=1e308), ("10.6.6.6", 1))
    assert fleet.stats()["rejected"] == {"bad_field": 1}
    tick(fleet, wall, mono, 3.0)
    assert state(fleet) == "down"


@pytest.mark.parametrize("step", [3600.0, -3600.0])
def test_wall_clock_step_changes_no_state_and_delays_nothing(step: float) -> None:
    """A wall-clock step of an hour either way neither downs the fleet nor delays a death."""
    fleet, wall, mono = make(down_after=3.0)
    for dev in ("a", "b"):
        for seq in (0, 1):
            fleet.receive(msg(seq, dev=dev), ("10.0.0.1", 1))
    wall.now += step  # NTP steps the wall clock; the monotonic one goes on
    tick(fleet, wall, mono, 0.5)
    assert (state(fleet, "a"), state(fleet, "b")) == ("up", "up")
    events = len(fleet.events(since=-math.inf))
    for seq in range(2, 8):  # a lives on, b died
        fleet.receive(msg(seq, dev="a"), ("10.0.0.1", 1))
        tick(fleet, wall, mono, 0.5)
    assert (state(fleet, "a"), state(fleet, "b")) == ("up", "down")
    new = fleet.events(since=-math.inf)[events:]
    assert [(e["device"], e["to"]) for e in new] == [("b", "late"), ("b", "down")]
    assert all(abs(e["time"] - wall.now) < 5 for e in new)  # events carry wall time


def test_run_flood_becomes_one_flapping_event() -> None:
    """A new run per datagram: restarts are counted, events stop at the per-minute bound."""
    fleet, wall, mono = make(max_events_per_minute=10)
    fleet.receive(msg(0), ("10.0.0.1", 1))
    for i in range(5000):
        fleet.receive(msg(0, run=f"{i + 1:016x}"), ("10.6.6.6", 1))
    d = fleet.device("d")
    assert d is not None
    assert d["restarts"] == 5000
    reasons = [e["reason"] for e in fleet.events()]
    assert reasons == ["first_seen"] + ["restart"] * 9 + ["flapping"]
    assert fleet.stats()["events_suppressed"] == 5000 - 9
    rows, events = fleet.take_changes()
    assert (len(rows), len(events)) == (1, 11)
    tick(fleet, wall, mono, 60.0)  # a new minute: events again
    fleet.receive(msg(0, run="f" * 16), ("10.0.0.1", 1))
    assert fleet.events()[-1]["reason"] == "restart"


def test_junk_ids_filling_max_devices_do_not_lock_out_a_real_device() -> None:
    """Ids heard once are evicted, oldest first, to admit a new device; confirmed ones stay."""
    fleet, _, _ = make(max_devices=100)
    for seq in (0, 1):
        fleet.receive(msg(seq, dev="real-old"), ("10.0.0.1", 1))
    for i in range(500):
        fleet.receive(msg(0, dev=f"junk-{i}"), ("10.6.6.6", 1))
    assert len(fleet) == 100
    fleet.receive(msg(0, dev="real-new"), ("10.0.0.2", 1))
    fleet.receive(msg(1, dev="real-new"), ("10.0.0.2", 1))
    ids = {d["id"] for d in fleet.devices()}
    assert {"real-old", "real-new"} <= ids
    assert "junk-0" not in ids and "junk-499" in ids
    s = fleet.stats()
    assert s["evicted"] == {"unconfirmed": 402, "silent": 0}
    assert s["rejected"] == {}
    rows, events = fleet.take_changes()  # junk never reaches the store or the event log
    assert sorted(r[0] for r in rows) == ["real-new", "real-old"]
    assert {e["device"] for e in events} == {"real-new", "real-old"}


def test_long_silent_device_is_evicted_when_full() -> None:
    """With no unconfirmed device, the longest-silent one past evict_after makes room."""
    fleet, wall, mono = make(max_devices=2, evict_after=3600.0)
    for dev in ("gone", "alive"):
        for seq in (0, 1):
            fleet.receive(msg(seq, dev=dev), ("10.0.0.1", 1))
    fleet.receive(msg(0, dev="new"), ("10.0.0.1", 1))
    assert fleet.stats()["rejected"] == {"max_devices": 1}  # nobody silent long enough
    tick(fleet, wall, mono, 3000.0)
    fleet.receive(msg(2, dev="alive"), ("10.0.0.1", 1))
    tick(fleet, wall, mono, 1000.0)
    fleet.receive(msg(0, dev="new"), ("10.0.0.1", 1))
    assert sorted(d["id"] for d in fleet.devices()) == ["alive", "new"]
    assert fleet.stats()["evicted"]["silent"] == 1
    assert fleet.take_forgotten() == ["gone"]


def test_metrics_and_tags_beyond_the_bounds_are_rejected_whole() -> None:
    """A heartbeat with too many or too big metrics or tags is rejected and changes nothing
    (name and tag sets are a device's own here: the fleet-wide pool for shared ones is 0)."""
    fleet, _, _ = make(max_metrics=4, max_metric_bytes=400, max_tags=2, max_tag_bytes=600)
    fleet = Fleet(fleet.config, clock=fleet._clock, monotonic=fleet._mono, shared_pool=0)
    fleet.receive(msg(0, m={"a": 1.0}), ("10.0.0.1", 1))
    before = fleet.device("d")
    for fields in ({"m": {f"m{i}": 1.0 for i in range(5)}}, {"m": {"x" * 120: 1.0, "y" * 120: 2}},
                   {"tags": {"a": "1", "b": "2", "c": "3"}},
                   {"tags": {"a": "v" * 120, "b": "w" * 120}}):  # fmt: skip
        fleet.receive(msg(1, **fields), ("10.0.0.1", 1))
    assert fleet.stats()["rejected"] == {"metrics_limit": 2, "tags_limit": 2}
    assert fleet.device("d") == before
    fleet.receive(msg(1, m={"a": 2.0, "b": 3.0}, tags={"k": "v"}), ("10.0.0.1", 1))
    d = fleet.device("d")
    assert d is not None
    assert (d["metrics"], d["tags"]) == ({"a": 2.0, "b": 3.0}, {"k": "v"})


def test_shared_name_and_tag_sets_do_not_count_against_a_device() -> None:
    """The first device with a set the fleet shares is admitted while the pool has room;
    once junk has used the pool up, a new big set is the device's own and is refused."""
    fleet, _, _ = make(max_metric_bytes=400, max_tag_bytes=600)
    fleet = Fleet(fleet.config, clock=fleet._clock, monotonic=fleet._mono, shared_pool=3000)
    big = {"m": {"x" * 120: 1.0, "y" * 120: 2.0}, "tags": {"a": "v" * 120, "b": "w" * 120}}
    for dev in ("first", "second"):
        fleet.receive(msg(0, dev=dev, **big), ("10.0.0.1", 1))
    assert fleet.stats()["rejected"] == {} and len(fleet) == 2
    for i in range(10):  # unique sets until the pool is spent
        fleet.receive(msg(0, dev=f"junk{i}", m={f"{i}" * 120: 1.0, "z" * 120: 2.0}),
                      ("10.0.0.1", 1))  # fmt: skip
    assert fleet.stats()["rejected"].get("metrics_limit", 0) > 0
    fleet.receive(msg(0, dev="third", **big), ("10.0.0.1", 1))  # already shared: still fine
    assert fleet.device("third") is not None


def test_requeue_is_bounded_and_says_what_it_dropped() -> None:
    """A store that never writes cannot grow memory: pending events are capped, newest kept."""
    fleet, _, _ = make(max_events_per_minute=100_000)
    fleet.receive(msg(0), ("10.0.0.1", 1))
    dropped = 0
    for i in range(30):
        for j in range(1000):
            fleet.receive(msg(0, run=f"{i * 1000 + j + 1:016x}"), ("10.0.0.1", 1))
        rows, events = fleet.take_changes()
        dropped += fleet.requeue(rows, events)
    rows, events = fleet.take_changes()
    assert len(rows) == 1
    assert len(events) == MAX_EVENTS_IN_MEMORY
    assert dropped == 30_001 - MAX_EVENTS_IN_MEMORY
    assert fleet.stats()["events_unsaved"] == dropped
    assert events[-1]["reason"] == "restart" and events[0]["reason"] == "restart"


def good_row() -> tuple[Any, ...]:
    fleet, _, _ = make()
    for seq in (0, 1):
        fleet.receive(msg(seq, m={"cpu": 1.5}, tags={"s": "x"}), ("10.0.0.1", 1))
    rows, _ = fleet.take_changes()
    return rows[0]


BAD = {
    "metrics": ['{"x": ' + "1" * 400 + "}", '{"x": Infinity}', '{"x": NaN}', '{"x": "a"}',
                "[" * 100000 + "]" * 100000, '{"\\ud800": 1}'],
    "tags": ['{"k": 1}', "nope", '{"\\udfff": "v"}'],
    "version": ["\ud800", 7],
    "state_since": [float("inf"), "x", 10**400],
    "last_seen": [None, float("nan")],
    "interval": [0.0, 1e308, -1.0],
    "agent_drops": [2**70, -1, 1.5],
    "counters": ["garbage", "[1, 1, " + "9" * 400 + "]", "[]", "[1.5]"],
    "id": ["bad id!", None],
    "clock_skew": [float("inf")],
}  # fmt: skip


@pytest.mark.parametrize(("column", "value"), [(c, v) for c, vs in BAD.items() for v in vs])
def test_restore_survives_any_row(column: str, value: Any) -> None:
    """A damaged stored row is skipped and counted, never fatal; the good rows load."""
    good = good_row()
    bad = list(good)
    bad[0] = "bad-one"
    bad[ROW_COLUMNS.index(column)] = value
    fleet, _, _ = make()
    loaded = fleet.restore([tuple(bad), good, ("short",), None], [])  # type: ignore[list-item]
    assert loaded == 1
    assert fleet.rows_skipped == 3
    assert fleet.stats()["rows_skipped"] == 3
    json.dumps(fleet.devices(), allow_nan=False)


def test_restore_skips_bad_events() -> None:
    """Stored events that cannot be served are skipped and counted."""
    fleet, _, _ = make()
    ok = {"time": 1.0, "device": "d", "from": None, "to": "up", "reason": "first_seen"}
    bad = [{**ok, "time": "x"}, {**ok, "time": float("nan")}, {"time": 1.0}, None]
    fleet.restore([], [ok, *bad])  # type: ignore[list-item]
    assert fleet.events(since=-1.0) == [ok]
    assert fleet.rows_skipped == 4


def test_restore_keeps_at_most_max_devices() -> None:
    """A store holding more devices than max_devices loads the most recently seen ones."""
    fleet, wall, mono = make()
    for i in range(5):
        for seq in (0, 1):
            fleet.receive(msg(seq, dev=f"d{i}"), ("10.0.0.1", 1))
        tick(fleet, wall, mono, 1.0)
    rows, _ = fleet.take_changes()
    small, _, _ = make(max_devices=3)
    assert small.restore(rows, []) == 3
    assert sorted(d["id"] for d in small.devices()) == ["d2", "d3", "d4"]
    assert small.rows_skipped == 2


def test_a_restored_device_is_judged_on_the_monotonic_clock() -> None:
    """On restore, wall-clock silence is converted once; later steps change nothing."""
    fleet, wall, _mono = make(down_after=3.0)
    for seq in (0, 1):
        fleet.receive(msg(seq), ("10.0.0.1", 1))
    rows, _ = fleet.take_changes()
    again, wall2, mono2 = make(down_after=3.0)
    wall2.now = wall.now + 1.0  # restarted one second later
    again.restore(rows, [])
    assert state(again) == "up"
    wall2.now += 86400  # a step after the restart
    again.check()
    assert state(again) == "up"
    mono2.now += 2.0
    again.check()
    assert state(again) == "down"


def test_row_codec_round_trips_extremes() -> None:
    """Values at the edges of the wire ranges are stored and revived unchanged."""
    fleet, _, _ = make(max_tag_bytes=4096)
    extreme = {"int": 86400, "bt": 4102444800, "drop": 2**63 - 1, "ver": "\U0001f600" * 128,
               "m": {"x" * 128: 2**64 - 1, "y": -1e300}, "tags": {"k" * 128: "v" * 128}}  # fmt: skip
    for seq in (2**64 - 3, 2**64 - 1):
        fleet.receive(msg(seq, **extreme), ("10.0.0.1", 1))
    fleet.receive(msg(2**64 - 2), ("10.0.0.1", 1))
    rows, _ = fleet.take_changes()
    assert rows, fleet.stats()
    again, _, _ = make()
    assert again.restore([_row_of(fleet)], []) == 1
    assert again.device("d") == fleet.device("d")


def _row_of(fleet: Fleet) -> tuple[Any, ...]:
    d = fleet._devices["d"]
    return row_of(d, {})


def test_wire_extremes_pass_through_the_fleet() -> None:
    """A heartbeat with every field at its range's edge is accepted whole."""
    fleet, _, _ = make()
    fleet.receive(wire.dumps({"v": 1, "k": "hb", "dev": "d", "run": RUN, "seq": 2**64 - 1,
                              "ts": 0, "int": 0.01, "drop": 2**63 - 1}), ("10.0.0.1", 1))  # fmt: skip
    assert fleet.stats()["rejected"] == {}
