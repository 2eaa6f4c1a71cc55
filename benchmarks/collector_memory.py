"""Collector memory per device at 100,000 devices (target: at most 1 KB each).

Feeds a Fleet realistic heartbeats (3 metrics, 2 tags from a few dozen sets,
a distinct source address per device, some loss) from DEVICES devices, two
heartbeats each, and measures what the fleet holds with tracemalloc (Python
heap, the figure the target is about) and, in a separate pass without
tracemalloc, the growth of the process RSS (allocator overhead included). The
in-memory event log is capped at 10,000 events whatever the fleet size.
Baseline in the same run: a naive collector that keeps each device's last
parsed message as a dict. Then the worst case a hostile fleet can reach: every
device with metric names and tags of its own, as many as the default bounds
(max_metric_bytes, max_tag_bytes) let through, against the README's formula
1,400 + 1.25 x (max_metric_bytes + max_tag_bytes) bytes of RSS per device.
Run: .venv/bin/python benchmarks/collector_memory.py [devices]
"""

from __future__ import annotations

import gc
import sys
import time
import tracemalloc
from typing import Any

from fleetbeat import wire
from fleetbeat.collector.budget import METRIC_VALUE_COST, tags_cost
from fleetbeat.collector.config import CollectorSection
from fleetbeat.collector.fleet import Fleet

DEVICES = 100_000
TARGET = 1024


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def heartbeat(i: int, seq: int) -> bytes:
    return wire.dumps({
        "v": 1, "k": "hb", "dev": f"pi-{i:06d}", "run": f"{i:016x}", "seq": seq,
        "ts": time.time(), "int": 10, "bt": 1764150000 + i, "ver": "0.1.0", "drop": i % 3,
        "tags": {"site": f"site-{i % 40}", "rack": str(i % 7)},
        "m": {"cpu": 3.5 + i % 50, "mem": 41.2 + i % 13, "temp": 48.3 + i % 9},
    })  # fmt: skip


def addr(i: int) -> tuple[str, int]:
    return (f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 40000 + i % 20000)


def measure(build: Any, n: int) -> tuple[float, float]:
    """(Python heap bytes per device by tracemalloc, RSS growth per device without it)."""
    gc.collect()
    r0 = rss()
    holder = build(n)
    gc.collect()
    rss_per = (rss() - r0) / n
    del holder
    gc.collect()
    tracemalloc.start()
    holder = build(n)
    gc.collect()
    heap = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del holder
    gc.collect()
    return heap / n, rss_per


def fleet_of(n: int) -> Fleet:
    fleet = Fleet(CollectorSection(max_devices=max(n, 1)))
    for seq in (0, 2):  # seq 1 lost: every device carries loss state
        for i in range(n):
            fleet.receive(heartbeat(i, seq), addr(i))
    fleet.take_changes()  # what a flush leaves behind, not the pending-write set
    assert len(fleet) == n
    return fleet


def naive_of(n: int) -> dict[str, Any]:
    last: dict[str, Any] = {}
    for seq in (0, 2):
        for i in range(n):
            msg = wire.parse_fields(heartbeat(i, seq))
            last[msg["dev"]] = (msg, addr(i))
    return last


def worst_of(n: int) -> Fleet:
    """Devices whose names and tags are all their own, filling the default bounds."""
    config = CollectorSection(max_devices=max(n, 1))
    fleet = Fleet(config)
    # names of 10 characters: sys.getsizeof 59 each, plus METRIC_VALUE_COST per value
    per_name = sys.getsizeof("m000000000") + METRIC_VALUE_COST
    count = min(config.max_metrics, config.max_metric_bytes // per_name)
    for i in range(n):
        tags: dict[str, str] = {}
        for j in range(config.max_tags):
            more = dict(tags, **{f"t{i:06d}{j:02d}": f"v{i:08d}"})
            if tags_cost(more) > config.max_tag_bytes:
                break
            tags = more
        metrics = {f"m{i:06d}{j:03d}": i + j / 8 for j in range(count)}
        for seq in (0, 1):
            msg = {"v": 1, "k": "hb", "dev": f"pi-{i:06d}", "run": f"{i:016x}", "seq": seq,
                   "ts": time.time(), "int": 10, "tags": tags, "m": metrics}  # fmt: skip
            fleet.receive(wire.dumps(msg), addr(i))
    fleet.take_changes()
    assert len(fleet) == n and not fleet.stats()["rejected"], fleet.stats()["rejected"]
    return fleet


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else DEVICES
    # the baseline first: RSS grows only when the heap does, so the order is fair to the fleet
    naive_heap, naive_rss = measure(naive_of, n)
    heap, rss_per = measure(fleet_of, n)
    print(f"{n:,} devices, 3 metrics and 2 tags each, distinct addresses")
    print(f"fleet:    {heap:7.0f} B/device Python heap (tracemalloc), {rss_per:7.0f} B/device RSS")
    print(f"baseline: {naive_heap:7.0f} B/device Python heap for the last message as a dict, "
          f"{naive_rss:7.0f} B/device RSS")  # fmt: skip
    print(f"ratio fleet / baseline (heap): {heap / naive_heap:.2f}")
    print(f"target {TARGET} B/device: {'met' if heap <= TARGET else 'NOT met'}")
    c = CollectorSection()
    bound = 1400 + 1.25 * (c.max_metric_bytes + c.max_tag_bytes)
    worst_heap, worst_rss = measure(worst_of, n)
    print(f"worst case at the default bounds: {worst_heap:7.0f} B/device heap, "
          f"{worst_rss:7.0f} B/device RSS; the README's bound {bound:.0f} B/device: "
          + ("holds" if worst_rss <= bound else "EXCEEDED"))  # fmt: skip


if __name__ == "__main__":
    main()
