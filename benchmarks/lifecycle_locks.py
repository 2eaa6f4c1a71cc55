"""How long a receiver waits for the fleet's lock while a big expected list is installed
(`Fleet.expect`: the first, then one half replaced), counted (`stats()`) and read
(`devices()`), N ids expected and never heard. A probe thread takes the lock every 0.5 ms
and records its longest wait. On a shared VM expect noise.
Run: .venv/bin/python benchmarks/lifecycle_locks.py [N]   (default 1,000,000)
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, Callable

from fleetbeat.collector.config import CollectorSection
from fleetbeat.collector.fleet import Fleet
from fleetbeat.config import frozen


def held(fleet: Fleet, name: str, work: Callable[[], Any]) -> None:
    lock = fleet._lock  # what the receivers wait for
    worst = [0.0]
    stop = threading.Event()

    def probe() -> None:
        while not stop.is_set():
            t = time.perf_counter()
            with lock:
                pass
            worst[0] = max(worst[0], time.perf_counter() - t)
            time.sleep(0.0005)

    th = threading.Thread(target=probe)
    th.start()
    t = time.perf_counter()
    work()
    took = time.perf_counter() - t
    stop.set()
    th.join()
    print(f"{name:<28} {took:7.3f} s in all, longest lock wait {worst[0] * 1000:6.0f} ms")


def main(n: int) -> None:
    first = {f"pi-{i:07d}": {"site": f"s{i % 3}"} for i in range(n)}
    second = {f"pi-{i:07d}": {"site": "x"} for i in range(n // 2, n + n // 2)}
    fleet = Fleet(frozen.replace(CollectorSection(), max_devices=n))
    print(f"{n:,} expected ids, never heard:")
    held(fleet, "expect (the first list)", lambda: fleet.expect(first))
    held(fleet, "expect (half replaced)", lambda: fleet.expect(second))
    held(fleet, "stats()", fleet.stats)
    held(fleet, "devices()", fleet.devices)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
