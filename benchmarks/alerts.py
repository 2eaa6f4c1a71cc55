"""A site going dark: 10,000 devices of one site down in the same second.

A real Fleet (fed real wire v1 heartbeats) judges them down in one check; its events go to
the alert engine (`observe`), the devices to `evaluate`; `tick` at group_wait makes the
notification, which the Dispatcher writes to the outbox and a webhook on a local HTTP
server receives. Reported: the engine's time for observe + tick on 10,000 transitions,
the other steps, the notification count (one per group) and when the webhook had it,
counted from the second the devices went down (the target: within group_wait + 1 s).
An injected clock stands for the wall clock; the work itself is timed for real.
Also the engine's memory for the fleet before the outage (tracemalloc).
Run: .venv/bin/python benchmarks/alerts.py [devices]
"""

from __future__ import annotations

import http.server
import sys
import tempfile
import threading
import time
import tracemalloc
from typing import Any

from fleetbeat import wire
from fleetbeat.collector.alerts import Alerts
from fleetbeat.collector.alerts_config import AlertsSection, notify_tables
from fleetbeat.collector.config import parse_collector_config
from fleetbeat.collector.fleet import Fleet
from fleetbeat.collector.notifiers import build
from fleetbeat.collector.outbox import Dispatcher, Outbox
from fleetbeat.config.schema import Problems

GROUP_WAIT = 30.0


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def webhook() -> tuple[str, list[tuple[float, bytes]]]:
    """A local webhook; what it received: (perf_counter at arrival, body)."""
    got: list[tuple[float, bytes]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            got.append((time.perf_counter(), body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/hook", got


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    t0 = 1_764_000_000.0
    clock = Clock(t0)
    config = parse_collector_config({"collector": {"max_devices": n + 10, "down_after": 3}}, "b")
    fleet = Fleet(config.collector, clock=clock, monotonic=clock)
    for i in range(n):
        for seq in range(3):
            msg = {"v": 1, "k": "hb", "dev": f"pi-barn-{i:05d}", "run": "0123456789abcdef",
                   "seq": seq, "ts": t0, "int": 10, "tags": {"site": "barn"},
                   "m": {"cpu": 1.5, "temp": 45.0}}  # fmt: skip
            fleet.receive(wire.dumps(msg), ("127.0.0.1", 40000 + i % 20000))
    fleet.take_changes()
    devices = fleet.devices()
    tracemalloc.start()
    alerts = Alerts(AlertsSection(group_wait=GROUP_WAIT))
    alerts.evaluate(devices, t0)
    engine_bytes = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del devices

    url, got = webhook()
    problems = Problems("bench")
    (hook,) = notify_tables()([{"type": "webhook", "url": url}], "notify", problems)
    tmp = tempfile.mkdtemp(prefix="fb-alerts-")
    box = Outbox(tmp)
    dispatcher = Dispatcher([(hook, build(hook))], box, clock=clock)

    clock.now = down_at = t0 + 30  # three 10 s intervals of silence: all down in this check
    s = time.perf_counter()
    fleet.check()
    judged = time.perf_counter() - s
    _, events = fleet.take_changes()
    downs = [e for e in events if e["to"] == "down"]
    s = time.perf_counter()
    alerts.observe(events, clock.now)
    observed = time.perf_counter() - s
    s = time.perf_counter()
    alerts.evaluate(fleet.devices(), clock.now)
    evaluated = time.perf_counter() - s

    clock.now = down_at + GROUP_WAIT
    s = time.perf_counter()
    notes = alerts.tick(clock.now)
    ticked = time.perf_counter() - s
    s = time.perf_counter()
    for note in notes:
        dispatcher.submit(note)
    submitted = time.perf_counter() - s
    while not got:
        dispatcher.pump()
        time.sleep(0.001)
    delivered = got[0][0] - s
    dispatcher.pump()
    print(f"devices down in one check: {len(downs)} (judging took {judged * 1000:.0f} ms)")
    print(f"engine: observe {observed * 1000:.0f} ms + tick {ticked * 1000:.0f} ms = "
          f"{(observed + ticked) * 1000:.0f} ms for {len(downs)} transitions")  # fmt: skip
    print(f"fleet.devices() + evaluate ({n} devices): {evaluated * 1000:.0f} ms; "
          f"engine state before the outage: {engine_bytes / 1e6:.1f} MB")  # fmt: skip
    print(f"notifications: {len(notes)} (groups: 1); summary: {notes[0].summary[:90]}...")
    print(f"outbox write + hand-off: {submitted * 1000:.0f} ms; webhook had it "
          f"{delivered * 1000:.0f} ms after the tick "
          f"({len(got[0][1]) / 1e6:.1f} MB JSON)")  # fmt: skip
    work = judged + observed + evaluated + ticked + delivered
    print(f"down to delivered: group_wait ({GROUP_WAIT:g} s) + {work:.2f} s of work "
          f"(target: within group_wait + 1 s)")  # fmt: skip
    dispatcher.close()
    box.close()


if __name__ == "__main__":
    main()
