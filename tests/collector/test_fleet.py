"""Fleet state from real datagrams: loss, duplicates, reordering, restarts, the contract."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from collector_helpers import Sender

from fleetbeat import wire
from fleetbeat.collector.config import CollectorSection
from fleetbeat.collector.fleet import Fleet
from fleetbeat.collector.receivers import start_receivers
from fleetbeat.collector.view import FleetView
from fleetbeat.config import frozen as dataclasses
from helpers import FakeClock, free_port, wait_until

CONTRACT_KEYS = {
    "id", "state", "last_seen", "addr", "run", "boot_time", "interval", "tags", "metrics",
    "clock_skew", "restarts", "reboots", "agent_drops", "received", "expected", "lost",
    "duplicates", "reordered", "loss_pct", "recent_loss_pct", "down_after_effective",
    "transport",
}  # fmt: skip


@pytest.fixture
def udp_fleet() -> Iterator[tuple[Fleet, Sender]]:
    """A fleet fed by a real UDP receiver thread on loopback, and a sender aimed at it."""
    port = free_port()
    fleet = Fleet(CollectorSection(udp_listen=f"127.0.0.1:{port}", udp_receive_buffer=1 << 20))
    receivers = start_receivers(fleet, fleet.config)
    sender = Sender(port)
    yield fleet, sender
    sender.close()
    for r in receivers:
        r.close()


def send_all(fleet: Fleet, sender: Sender, seqs: list[int]) -> dict[str, Any]:
    before = fleet.stats()["received"]["udp"]
    for seq in seqs:
        sender.send(seq)
    wait_until(lambda: fleet.stats()["received"]["udp"] == before + len(seqs))
    dev = fleet.device(sender.dev)
    assert dev is not None
    return dev


def test_skips_dups_and_reordering_give_exact_figures(
    udp_fleet: tuple[Fleet, Sender],
) -> None:
    """Seqs skipped, sent twice and out of order over real UDP give exact loss figures."""
    fleet, sender = udp_fleet
    # 6 and 7 never sent; 5 sent three times; 3 and 8 arrive after higher seqs
    dev = send_all(fleet, sender, [0, 1, 2, 4, 5, 3, 5, 5, 9, 8, 10])
    assert dev["expected"] == 11
    assert dev["received"] == 9
    assert dev["lost"] == 2
    assert dev["duplicates"] == 2
    assert dev["reordered"] == 2
    assert dev["loss_pct"] == pytest.approx(100 * 2 / 11, abs=0.001)
    assert dev["state"] == "up"
    assert dev["addr"].startswith("127.0.0.1:")
    assert dev["transport"] == "udp"


def test_late_arrival_lowers_loss(udp_fleet: tuple[Fleet, Sender]) -> None:
    """A message that arrives after its successors is no longer counted as lost."""
    fleet, sender = udp_fleet
    assert send_all(fleet, sender, [0, 1, 3])["lost"] == 1
    dev = send_all(fleet, sender, [2])
    assert (dev["lost"], dev["received"], dev["reordered"]) == (0, 4, 1)


def test_device_dict_is_the_contract(udp_fleet: tuple[Fleet, Sender]) -> None:
    """devices() and device() return JSON-ready dicts with every contract key."""
    fleet, sender = udp_fleet
    dev = send_all(fleet, sender, [0])
    assert set(dev) >= CONTRACT_KEYS
    assert fleet.devices() == [dev]
    assert dev["tags"] == {"site": "lab"}
    assert dev["metrics"] == {"cpu": 1.5}
    assert dev["boot_time"] == 1764150000
    assert fleet.device("nobody") is None
    stats = fleet.stats()
    assert stats["devices"] == {"up": 1, "late": 0, "down": 0, "offline": 0, "missing": 0}
    assert stats["received"] == {"udp": 1, "mqtt": 0, "http": 0, "amqp": 0, "kafka": 0}
    assert stats["devices_known"] == 1
    assert stats["max_devices"] == 40_000


def feed(fleet: Fleet, clock: FakeClock, msgs: list[dict[str, Any]], step: float = 1.0) -> None:
    for m in msgs:
        clock.now += step
        fleet.receive(wire.dumps(m), ("127.0.0.1", 4000))


def hb(seq: int, run: str = "0" * 15 + "1", bt: float = 1000.0, **kw: Any) -> dict[str, Any]:
    msg = {"v": 1, "k": "hb", "dev": "d", "run": run, "seq": seq, "ts": 0.0, "int": 1.0, "bt": bt}
    msg.update(kw)
    return msg


def test_new_run_restarts_counting_and_keeps_lifetime() -> None:
    """A new run is a restart event; the run's count starts again, lifetime adds up."""
    clock = FakeClock(1_800_000_000.0)
    fleet = Fleet(CollectorSection(), clock=clock, monotonic=clock)
    feed(fleet, clock, [hb(0), hb(1), hb(3)])  # one lost in run 1
    feed(fleet, clock, [hb(0, run="2" * 16), hb(1, run="2" * 16)])
    dev = fleet.device("d")
    assert dev is not None
    assert (dev["run_expected"], dev["run_received"], dev["run_lost"]) == (2, 2, 0)
    assert (dev["expected"], dev["received"], dev["lost"]) == (6, 5, 1)
    assert (dev["restarts"], dev["reboots"], dev["state"]) == (1, 0, "up")
    assert [e["reason"] for e in fleet.events()] == ["first_seen", "restart"]


def test_new_boot_time_is_a_reboot() -> None:
    """A new run with a different boot time counts as a reboot, not a restart."""
    clock = FakeClock(1_800_000_000.0)
    fleet = Fleet(CollectorSection(), clock=clock, monotonic=clock)
    feed(fleet, clock, [hb(0), hb(1)])
    feed(fleet, clock, [hb(0, run="3" * 16, bt=5000.0)])
    dev = fleet.device("d")
    assert dev is not None
    assert (dev["restarts"], dev["reboots"], dev["boot_time"]) == (0, 1, 5000.0)
    assert fleet.events()[-1] == {"time": clock.now, "device": "d", "from": "up", "to": "up",
                                  "reason": "reboot"}  # fmt: skip


def test_straggler_from_previous_run_is_not_a_restart() -> None:
    """A late message of the run before is rejected as old_run, not taken for a restart."""
    clock = FakeClock(1_800_000_000.0)
    fleet = Fleet(CollectorSection(), clock=clock, monotonic=clock)
    feed(fleet, clock, [hb(0), hb(1), hb(0, run="2" * 16), hb(2), hb(1, run="2" * 16)])
    dev = fleet.device("d")
    assert dev is not None
    assert (dev["restarts"], dev["run_received"]) == (1, 2)
    assert fleet.stats()["rejected"] == {"old_run": 1}


def test_absurd_seq_jump_is_rejected_until_confirmed() -> None:
    """A huge seq jump is rejected; if the sender continues from it, counting resyncs."""
    clock = FakeClock(1_800_000_000.0)
    fleet = Fleet(CollectorSection(), clock=clock, monotonic=clock)
    feed(fleet, clock, [hb(0), hb(1), hb(10**15), hb(2)])
    dev = fleet.device("d")
    assert dev is not None
    assert (dev["expected"], dev["received"], dev["lost"]) == (3, 3, 0)
    assert fleet.stats()["rejected"] == {"seq_jump": 1}
    feed(fleet, clock, [hb(2**64 - 3), hb(2**64 - 2), hb(2**64 - 1)])
    dev = fleet.device("d")
    assert dev is not None
    assert (dev["expected"], dev["received"], dev["lost"]) == (5, 5, 0)
    assert fleet.stats()["rejected"] == {"seq_jump": 2}


def test_long_silence_allows_a_long_gap() -> None:
    """After a long outage a big seq gap is real loss, not an absurd jump."""
    clock = FakeClock(1_800_000_000.0)
    fleet = Fleet(CollectorSection(), clock=clock, monotonic=clock)
    feed(fleet, clock, [hb(0)])
    clock.now += 5000  # 5000 intervals of silence: the device kept sending into the void
    feed(fleet, clock, [hb(5000)])
    dev = fleet.device("d")
    assert dev is not None
    assert (dev["expected"], dev["lost"]) == (5001, 4999)
    assert fleet.stats()["rejected"] == {}


def test_recent_loss_forgets_old_loss() -> None:
    """The recent window forgets loss a few hundred heartbeats ago; lifetime keeps it."""
    clock = FakeClock(1_800_000_000.0)
    fleet = Fleet(CollectorSection(), clock=clock, monotonic=clock)
    feed(fleet, clock, [hb(s) for s in range(0, 100, 2)])  # every other one lost
    dev = fleet.device("d")
    assert dev is not None
    assert dev["recent_loss_pct"] == pytest.approx(50, abs=1.5)
    feed(fleet, clock, [hb(s) for s in range(100, 500)])
    dev = fleet.device("d")
    assert dev is not None
    assert dev["recent_loss_pct"] == 0.0
    assert dev["lost"] == 50  # 1, 3, ..., 99


def test_readings_have_their_own_stream() -> None:
    """Readings are counted on their own seq stream; from an unknown device they are rejected."""
    clock = FakeClock(1_800_000_000.0)
    fleet = Fleet(CollectorSection(), clock=clock, monotonic=clock)
    rd = {"v": 1, "k": "rd", "dev": "d", "run": "0" * 15 + "1", "ts": 0.0, "src": "s", "m": {}}
    feed(fleet, clock, [{**rd, "seq": 0}])
    assert fleet.stats()["rejected"] == {"unknown_device": 1}
    feed(fleet, clock, [hb(0), {**rd, "seq": 0}, {**rd, "seq": 3}, hb(1)])
    dev = fleet.device("d")
    assert dev is not None
    assert (dev["readings_received"], dev["readings_lost"]) == (2, 2)
    assert (dev["expected"], dev["lost"]) == (2, 0)


def test_mqtt_topic_must_name_the_device() -> None:
    """An MQTT payload whose device differs from its topic's is rejected as topic_mismatch."""
    fleet = Fleet(CollectorSection())
    fleet.receive(wire.dumps(hb(0)), "mqtt:other", "mqtt", topic_dev="other")
    fleet.receive(wire.dumps(hb(0)), "mqtt:d", "mqtt", topic_dev="d")
    assert fleet.stats()["rejected"] == {"topic_mismatch": 1}
    dev = fleet.device("d")
    assert dev is not None
    assert (dev["transport"], dev["addr"]) == ("mqtt", "mqtt:d")


def test_events_since_and_limit() -> None:
    """events(since, limit) returns the newest matching events, oldest first."""
    clock = FakeClock(1_800_000_000.0)
    fleet = Fleet(CollectorSection(), clock=clock, monotonic=clock)
    for i in range(5):
        feed(fleet, clock, [{**hb(0), "dev": f"d{i}"}, {**hb(1), "dev": f"d{i}"}])
    times = [e["time"] for e in fleet.events()]
    assert len(times) == 5
    assert [e["device"] for e in fleet.events(since=times[1])] == ["d2", "d3", "d4"]
    assert [e["device"] for e in fleet.events(limit=2)] == ["d3", "d4"]


def test_max_devices_rejects_newcomers_only() -> None:
    """Past max_devices new ids are rejected and counted; confirmed devices keep working."""
    clock = FakeClock(1_800_000_000.0)
    config = dataclasses.replace(CollectorSection(), max_devices=2)
    fleet = Fleet(config, clock=clock, monotonic=clock)
    feed(fleet, clock, [{**hb(s), "dev": n} for s in (0, 1) for n in ("a", "b")])
    feed(fleet, clock, [{**hb(0), "dev": n} for n in ("c", "d")])
    feed(fleet, clock, [{**hb(2), "dev": "a"}])
    assert [d["id"] for d in fleet.devices()] == ["a", "b"]
    assert fleet.stats()["rejected"] == {"max_devices": 2}
    a = fleet.device("a")
    assert a is not None
    assert a["received"] == 3


def test_the_fleet_provides_the_read_contract() -> None:
    """Fleet is a FleetView: what the HTTP API, /metrics and the alerts read."""
    assert isinstance(Fleet(CollectorSection()), FleetView)


def test_every_documented_device_field_is_served() -> None:
    """Each key a device dict carries is named in FleetView.devices' docstring."""
    fleet = Fleet(CollectorSection())
    fleet.receive(wire.dumps({"v": 1, "k": "hb", "dev": "d", "run": "0" * 16, "seq": 0,
                              "ts": 0.0, "int": 10}), ("127.0.0.1", 1))  # fmt: skip
    doc = FleetView.devices.__doc__ or ""
    missing = [k for k in fleet.devices()[0] if k not in doc]
    assert missing == []
