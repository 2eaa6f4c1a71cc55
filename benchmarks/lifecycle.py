"""What the device lifecycle costs: reading expected_devices, missing devices on the read
side, and the forget_after scan, on a real Fleet fed real wire v1 heartbeats.

Reported: read_expected for 40,000 and 1,000,000 lines (with tags); Fleet.devices() and
stats() with N tracked devices and 40,000 missing ones, beside the same without; the
check() that runs a forget_after scan finding nothing, and one forgetting 1,000 devices
(each holds the fleet's lock). Injected clocks stand for time passing; the work is timed
for real. On a shared VM expect noise.
Run: .venv/bin/python benchmarks/lifecycle.py [devices]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from typing import Any, Callable

from fleetbeat import wire
from fleetbeat.collector.config import CollectorSection
from fleetbeat.collector.expected import read_expected
from fleetbeat.collector.fleet import Fleet
from fleetbeat.config import frozen as dataclasses

MISSING = 40_000


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def timed(what: str, work: Callable[[], Any]) -> Any:
    t = time.perf_counter()
    out = work()
    print(f"{what:<58} {time.perf_counter() - t:8.3f} s")
    return out


def bench_file(lines: int) -> None:
    data = b"".join(b"pi-%d site=s%d room=r%d\n" % (i, i % 3, i % 7) for i in range(lines))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "expected")
        with open(path, "wb") as f:
            f.write(data)
        timed(f"read_expected, {lines:,} lines ({len(data) >> 10:,} KiB)",
              lambda: read_expected(path, max_devices=lines, max_tags=16,
                                    max_tag_bytes=512))  # fmt: skip


def main(devices: int) -> None:
    bench_file(40_000)
    bench_file(1_000_000)
    wall, mono = Clock(1.7e9), Clock(1000.0)
    section = dataclasses.replace(CollectorSection(), max_devices=devices, forget_after=3600.0,
                                  down_after=3.0)  # fmt: skip
    fleet = Fleet(section, clock=wall, monotonic=mono)
    for i in range(devices):
        for seq in (0, 1):
            msg = {"v": 1, "k": "hb", "dev": f"pi-{i}", "run": "0123456789abcdef", "seq": seq,
                   "ts": wall.now, "int": 10.0, "tags": {"site": f"s{i % 3}"}}  # fmt: skip
            fleet.receive(wire.dumps(msg), ("10.0.0.1", 4000))
    timed(f"Fleet.devices(), {devices:,} tracked", fleet.devices)
    fleet.expect({f"exp-{i}": {"site": "barn"} for i in range(MISSING)})
    timed(f"Fleet.devices(), {devices:,} tracked + {MISSING:,} missing", fleet.devices)
    timed(f"Fleet.stats(), {devices:,} tracked + {MISSING:,} missing", fleet.stats)
    wall.now += 100
    mono.now += 100
    fleet.check()  # every one down; the first scan
    fleet.take_changes()  # the flushes in between: what waits for the store is small
    wall.now += 3000
    mono.now += 3000
    fleet._life._scan_at = 0.0  # the next check scans (as it would a minute later)
    timed(f"check() with a forget_after scan forgetting none of {devices:,}", fleet.check)
    wall.now += 600
    mono.now += 600
    fleet._life._scan_at = 0.0
    timed(f"check() with a scan forgetting 1,000 of {devices:,}", fleet.check)
    print(f"devices left: {len(fleet):,}; forgotten: {fleet.stats()['forgotten']}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
