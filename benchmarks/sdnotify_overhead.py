"""What systemd supervision costs the agent's loop, against the loop itself.

Baseline: one pass of the scheduler (`run_due` with a due no-op job). Then the
same pass plus `Supervision.tick()`: without $NOTIFY_SOCKET (the no-op case off
systemd), under systemd between pings (the usual case), and pinging on every
pass (worst case: one WATCHDOG=1 datagram to a real AF_UNIX socket each time).

    .venv/bin/python benchmarks/sdnotify_overhead.py
"""

from __future__ import annotations

import os
import socket
import time
from typing import Callable

from fleetbeat.agent.scheduler import Scheduler
from fleetbeat.sdnotify import Notifier, Supervision

N = 200_000


def per_call(fn: Callable[[], object], n: int = N) -> float:
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t0) / n)
    return best * 1e6  # microseconds


def main() -> None:
    sched = Scheduler(time.monotonic)
    sched.add("job", 1e-9, lambda: None, first=0.0)  # due on every pass
    status = "123 messages sent, 0 dropped; no sensor errors"

    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    addr = f"@fleetbeat-bench-{os.getpid()}"
    rx.bind("\0" + addr[1:])
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    rx.setblocking(False)

    def drain() -> None:
        try:
            while True:
                rx.recv(64)
        except BlockingIOError:
            pass

    off = Supervision(Notifier(env={}), lambda: status)
    quiet = Supervision(Notifier(env={"NOTIFY_SOCKET": addr, "WATCHDOG_USEC": "30000000"}),
                        lambda: status)  # fmt: skip
    quiet.ready()
    eager = Supervision(Notifier(env={"NOTIFY_SOCKET": addr, "WATCHDOG_USEC": "1"}),
                        lambda: status)  # fmt: skip

    def eager_pass() -> None:
        sched.run_due()
        eager.tick()
        drain()  # keep the receive buffer from filling (its cost is counted: pessimistic)

    base = per_call(lambda: (sched.run_due(), None))  # same call overhead as the rows below
    rows = [
        ("scheduler pass (baseline)", base),
        ("+ tick(), no NOTIFY_SOCKET", per_call(lambda: (sched.run_due(), off.tick()))),
        ("+ tick(), between pings", per_call(lambda: (sched.run_due(), quiet.tick()))),
        ("+ tick(), ping every pass", per_call(eager_pass, N // 4)),
    ]
    print(f"{'':32} {'us/pass':>8} {'ratio':>6}")
    for name, us in rows:
        print(f"{name:32} {us:8.3f} {us / base:6.2f}")
    print("At the default 30 s WatchdogSec the agent pings once per 15 s: the 'between pings'"
          " row is the steady-state cost per loop pass.")  # fmt: skip
    rx.close()


if __name__ == "__main__":
    main()
