"""Liveness: up -> late -> down, offline, restarts, and the loss-aware down_after."""

from __future__ import annotations

import math
from typing import Any

import pytest

from fleetbeat import wire
from fleetbeat.collector.config import CollectorSection
from fleetbeat.collector.fleet import Fleet
from fleetbeat.collector.loss import auto_down_after
from fleetbeat.config import frozen as dataclasses
from helpers import FakeClock

RUN = "0" * 15 + "1"


def make(**config: Any) -> tuple[Fleet, FakeClock]:
    clock = FakeClock(1_800_000_000.0)
    return Fleet(
        dataclasses.replace(CollectorSection(), **config), clock=clock, monotonic=clock
    ), clock


def send(fleet: Fleet, seq: int, kind: str = "hb", run: str = RUN, interval: float = 1.0) -> None:
    msg: dict[str, Any] = {"v": 1, "k": kind, "dev": "d", "run": run, "seq": seq, "ts": 0.0}
    if kind == "hb":
        msg["int"] = interval
    fleet.receive(wire.dumps(msg), ("127.0.0.1", 4000))


def state(fleet: Fleet) -> str:
    dev = fleet.device("d")
    assert dev is not None
    return str(dev["state"])


def run_heartbeats(fleet: Fleet, clock: FakeClock, count: int, lose_every: int = 0) -> None:
    for seq in range(count):
        clock.now += 1.0
        if lose_every and seq % lose_every == lose_every - 1:
            continue
        send(fleet, seq)
        fleet.check()


def test_up_late_down_at_the_thresholds() -> None:
    """Silence makes a device late after late_after intervals and down after down_after."""
    fleet, clock = make(down_after=4.0)
    run_heartbeats(fleet, clock, 10)
    last = clock.now
    clock.now = last + 1.49
    fleet.check()
    assert state(fleet) == "up"
    clock.now = last + 1.5
    fleet.check()
    assert state(fleet) == "late"
    clock.now = last + 3.99
    fleet.check()
    assert state(fleet) == "late"
    clock.now = last + 4.0
    fleet.check()
    assert state(fleet) == "down"
    ev = fleet.events()[-2:]
    assert [(e["from"], e["to"], e["reason"]) for e in ev] == [
        ("up", "late", "late"), ("late", "down", "missed_heartbeats")]  # fmt: skip
    assert [e["time"] for e in ev] == [last + 1.5, last + 4.0]


def test_heartbeat_brings_a_device_back_up() -> None:
    """A heartbeat from a late or down device makes it up again, as an event."""
    fleet, clock = make(down_after=3.0)
    run_heartbeats(fleet, clock, 3)
    clock.now += 10
    fleet.check()
    assert state(fleet) == "down"
    send(fleet, 3)
    assert state(fleet) == "up"
    assert fleet.events()[-1]["from"] == "down"
    assert fleet.events()[-1]["reason"] == "heartbeat"


def test_a_big_jump_in_time_goes_straight_to_down() -> None:
    """A check long after the last heartbeat moves up to down in one event, not two."""
    fleet, clock = make(down_after=3.0)
    run_heartbeats(fleet, clock, 3)
    clock.now += 100
    fleet.check()
    assert [(e["from"], e["to"]) for e in fleet.events()[1:]] == [("up", "down")]


def test_bye_is_offline_not_down() -> None:
    """A bye makes the device offline; silence afterwards never makes it down."""
    fleet, clock = make()
    run_heartbeats(fleet, clock, 3)
    send(fleet, 3, kind="bye")
    assert state(fleet) == "offline"
    clock.now += 1000
    fleet.check()
    assert state(fleet) == "offline"
    assert fleet.events()[-1]["reason"] == "bye"


def test_last_will_is_offline() -> None:
    """The broker's Last Will makes a device that reports over MQTT offline."""
    fleet, _ = make()
    for seq in range(3):
        msg = {"v": 1, "k": "hb", "dev": "d", "run": RUN, "seq": seq, "ts": 0.0, "int": 1.0}
        fleet.receive(wire.dumps(msg), "mqtt:d", "mqtt", topic_dev="d")
    fleet.mark_offline("d", "last_will")
    assert state(fleet) == "offline"
    assert fleet.events()[-1]["reason"] == "last_will"


def test_last_will_does_not_touch_a_udp_device() -> None:
    """A Last Will (no run id) for a device whose run reports over UDP changes nothing."""
    fleet, clock = make()
    run_heartbeats(fleet, clock, 3)
    fleet.mark_offline("d", "last_will")
    assert state(fleet) == "up"


def test_restart_is_an_event_not_a_down() -> None:
    """A restart within down_after is a restart event; the device never goes down."""
    fleet, clock = make()
    run_heartbeats(fleet, clock, 20)
    clock.now += 1.0  # one interval of silence while the agent restarts
    fleet.check()
    send(fleet, 0, run="2" * 16)
    fleet.check()
    reasons = [e["reason"] for e in fleet.events()]
    assert reasons == ["first_seen", "restart"]
    assert state(fleet) == "up"


@pytest.mark.parametrize(("lost", "expected", "k"), [
    (0, 1_000_000, 3),  # no loss: the floor of 3
    (1, 100, 4),        # p ~ 2%: 0.0196^4 = 1.5e-7
    (20, 100, 9),       # p ~ 21%: 8 would leave 3.7e-6
    (50, 100, 10),      # p ~ 50%: would need 20, capped by max_down_after
    (0, 0, 10),         # nothing known yet: p = 0.5 by smoothing, so patient
])  # fmt: skip
def test_auto_down_after(lost: int, expected: int, k: int) -> None:
    """Auto down_after is the smallest k >= 3 with p^k < 1e-6, capped by max_down_after."""
    assert auto_down_after(lost, expected, 10.0) == k
    p = (lost + 1) / (expected + 2)
    if 3 < k < 10:
        assert p**k < 1e-6 <= p ** (k - 1)


def test_auto_down_after_follows_measured_loss() -> None:
    """A lossless device gets down_after 3; one losing 20% gets 9 and does not flap to down."""
    clean, clock = make()
    run_heartbeats(clean, clock, 300)
    dev = clean.device("d")
    assert dev is not None
    assert dev["down_after_effective"] == 3
    lossy, clock = make()
    run_heartbeats(lossy, clock, 1000, lose_every=5)
    dev = lossy.device("d")
    assert dev is not None
    assert dev["recent_loss_pct"] == pytest.approx(20, abs=1)
    assert dev["down_after_effective"] == math.ceil(math.log(1e-6) / math.log(0.2))
    assert "down" not in {e["to"] for e in lossy.events()}


def test_fixed_down_after_is_used_as_is() -> None:
    """A configured number of intervals replaces the auto value."""
    fleet, clock = make(down_after=7.5)
    run_heartbeats(fleet, clock, 50, lose_every=2)
    dev = fleet.device("d")
    assert dev is not None
    assert dev["down_after_effective"] == 7.5


def test_interval_comes_from_the_heartbeat() -> None:
    """Each device is judged by its own interval."""
    fleet, clock = make(down_after=3.0)
    send(fleet, 0, interval=60.0)
    clock.now += 89
    fleet.check()
    assert state(fleet) == "up"
    clock.now += 2
    fleet.check()
    assert state(fleet) == "late"
