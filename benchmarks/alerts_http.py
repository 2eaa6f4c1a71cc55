"""A site going dark under a real collector: does HTTP still answer within 100 ms?

A real `fleetbeat collector` subprocess hears 10,000 devices of one site (wire v1 over UDP
from this process, 1 s interval, spread over the second), then every device stops in the
same second. From then until 2 s after the webhook had the notification, a client polls
`/healthz`, `/api/stats`, `/api/alerts` and `/` in turn (one request at a time, keep-alive
off: what a dashboard and a monitoring check do). Reported: each route's median, p99 and
worst latency in that window, when the collector had judged every device down, and when
the webhook had its notifications (target: one, within group_wait + 1 s of the last down).
Run: .venv/bin/python benchmarks/alerts_http.py [devices]
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

from alerts import webhook  # benchmarks/alerts.py: the same local webhook
from fleetbeat import wire

GROUP_WAIT = 5.0
INTERVAL = 1.0
ROUTES = ("/healthz", "/api/stats", "/api/alerts", "/")


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def main(n: int) -> None:
    hook_url, arrived = webhook()
    to_wall = time.time() - time.perf_counter()
    udp, web = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM)
    state = tempfile.mkdtemp(prefix="fleetbeat-bench-")
    config = os.path.join(state, "collector.toml")
    with open(config, "w") as f:
        f.write(f"""[collector]
udp_listen = "127.0.0.1:{udp}"
http_listen = "127.0.0.1:{web}"
state_dir = "{state}"
down_after = 3
max_events_per_minute = 100
[collector.alerts]
group_wait = "{GROUP_WAIT}s"
[[collector.notify]]
type = "webhook"
url = "{hook_url}"
""")
    log = open(os.path.join(state, "collector.log"), "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "fleetbeat", "collector", "-c", config],
                            stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                get(web, "/healthz")
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("the collector did not start") from None
                time.sleep(0.05)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        ids = [f"pi-barn-{i:05d}" for i in range(n)]
        for cycle in range(4):  # four heartbeats each: confirmed, tags read
            start = time.monotonic()
            for i, dev in enumerate(ids):
                msg = {"v": 1, "k": "hb", "dev": dev, "run": "0123456789abcdef", "seq": cycle,
                       "ts": time.time(), "int": INTERVAL, "bt": 1764000000, "ver": "bench",
                       "drop": 0, "tags": {"site": "barn"}, "m": {"cpu": 1.0}}  # fmt: skip
                sock.sendto(wire.dumps(msg), ("127.0.0.1", udp))
                if i % 500 == 499:  # spread over the interval, as real agents are
                    time.sleep(max(0.0, start + INTERVAL * (i + 1) / n - time.monotonic()))
            time.sleep(max(0.0, start + INTERVAL - time.monotonic()))
        stopped = time.time()
        up = json.loads(get(web, "/api/stats")[1])["stats"]["devices"]
        print(f"{n} devices heard ({up}); all stop now")
        times: dict[str, list[float]] = {r: [] for r in ROUTES}
        all_down = None
        end = None
        while end is None or time.time() < end:
            for route in ROUTES:
                t0 = time.perf_counter()
                status, body = get(web, route)
                times[route].append(time.perf_counter() - t0)
                assert status == 200, (route, status)
                if (
                    route == "/api/stats"
                    and all_down is None
                    and (json.loads(body)["stats"]["devices"]["down"] == n)
                ):
                    all_down = time.time()
            got = [(t + to_wall, json.loads(body)) for t, body in arrived]
            if got and end is None:
                end = got[0][0] + 2.0
            if time.time() - stopped > 60:
                raise SystemExit("no notification within 60 s")
        firing = [b for _, b in got if b["status"] == "firing"]
        print(f"all {n} down {all_down - stopped:.2f} s after the stop" if all_down else
              "not all down")  # fmt: skip
        downs = [a["started"] for b in firing for a in b["alerts"]]
        print(f"notifications: {len(got)} ({len(firing)} firing, {len(downs)} alerts), the "
              f"first {got[0][0] - min(downs):.2f} s after the first device went down, "
              f"{got[0][0] - max(downs):.2f} s after the last "
              f"(group_wait {GROUP_WAIT:g} s)")  # fmt: skip
        print(f"HTTP while it happened ({len(times['/healthz'])} rounds):")
        for route, ts in times.items():
            ts.sort()
            p99 = ts[min(len(ts) - 1, int(len(ts) * 0.99))]
            print(f"  {route:12} median {ts[len(ts) // 2] * 1000:6.1f} ms  p99 "
                  f"{p99 * 1000:6.1f} ms  max {ts[-1] * 1000:6.1f} ms")  # fmt: skip
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000)
