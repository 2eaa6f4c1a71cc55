"""The history routes over a real Fleet and a real store: the cache, the fleet-wide pass."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from fleetbeat import wire
from fleetbeat.collector import history as h
from fleetbeat.collector.config import CollectorSection
from fleetbeat.collector.fleet import Fleet
from fleetbeat.collector.http_history import Cached, HistoryApi
from fleetbeat.collector.store import Store
from fleetbeat.collector.store_reader import StoreReader
from helpers import FakeClock

RUN = "0" * 15 + "1"


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
