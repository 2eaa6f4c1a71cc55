"""The history API against a store of 10,000 devices, with baselines in the same run.

    .venv/bin/python benchmarks/history.py [--devices N] [--days D] [--per-day E] [--repeat R]

The store (a temporary directory) holds N devices, D days of events (E per device per
day on average, state changes up/late/down/offline chained as the fleet writes them)
and 7 days of hourly loss rows; the fleet holds the same N devices. Figures (best of
R, seconds):
  select_1        a bare `SELECT 1` on a reader connection (the floor of any read)
  device_row      reading one device row by id (the floor of a per-device read)
  device_history  one device's 7-day history: segments, hours, 30-day availability
                  (target < 50 ms); http_history: the same over loopback HTTP
  scan_floor      reading the 30 days of event rows into Python and doing nothing with
                  them: the floor of any pass that folds the events in Python
  fleet_avail     every device's availability as the 60 s cache computes it: SQLite's
                  sums over the ended spans, then each device's open segment
                  (`availability.fleet_tallies`; target < 1 s)
  fleet_general   the same through the general path (segments, then tally per device)
  fleet_buckets   the fleet's 24 h in 15-minute buckets (uncached)
  groups          availability by site, from the cached tallies
  http_devices    GET /api/devices, availability from the cache (one dashboard refresh)
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from typing import Any, Callable

from fleetbeat import wire
from fleetbeat.collector import history as h
from fleetbeat.collector import http
from fleetbeat.collector.config import parse_collector_config
from fleetbeat.collector.fleet import Fleet
from fleetbeat.collector.http_history import HistoryApi
from fleetbeat.collector.store import Store
from fleetbeat.collector.store_reader import StoreReader

DAY = 86400.0
CHANGES = {"up": ("late", "down", "offline"), "late": ("up", "down"), "down": ("up",),
           "offline": ("up",)}  # fmt: skip


def build_fleet(n: int) -> Fleet:
    config = parse_collector_config({"collector": {"max_devices": n + 10}}, "bench")
    fleet = Fleet(config.collector)
    for i in range(n):
        for seq in range(2):
            msg = {"v": 1, "k": "hb", "dev": f"pi-{i:06d}", "run": "0123456789abcdef",
                   "seq": seq, "ts": time.time(), "int": 10, "tags": {"site": f"site-{i % 50}"},
                   "m": {"cpu": 1.5}}  # fmt: skip
            fleet.receive(wire.dumps(msg), ("127.0.0.1", 40000 + i % 20000))
    return fleet


def events(n: int, days: float, per_day: float, now: float) -> Iterator[tuple[Any, ...]]:
    """Rows as `Store.write` leaves them: each ends where the device's next one starts."""
    rng = random.Random(16)
    for i in range(n):
        dev = f"pi-{i:06d}"
        t = now - days * DAY
        state = "up"
        row: tuple[Any, ...] = (t, dev, None, "up", "first_seen")
        while True:
            t += rng.expovariate(per_day / DAY)
            if t >= now:
                break
            yield (*row, t)
            new = rng.choice(CHANGES[state])
            row = (t, dev, state, new, "heartbeat" if new == "up" else "late")
            state = new
        yield (*row, None)


def hours(n: int, now: float) -> Iterator[tuple[Any, ...]]:
    first = Store.hour_of(now) - 7 * 24 * 3600.0
    for i in range(n):
        received = expected = 0
        for k in range(7 * 24 + 1):
            expected += 360
            received += 355
            yield (f"pi-{i:06d}", first + k * 3600.0, received, expected)


def best(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), result


def fetch(url: str) -> bytes:
    req = urllib.request.Request(url, headers={"Accept-Encoding": "gzip"})  # noqa: S310
    with urllib.request.urlopen(req, timeout=60) as resp:  # noqa: S310 - loopback
        return bytes(resp.read())


def general(api: HistoryApi, fleet: Fleet) -> dict[str, Any]:
    """Every device's tally through `history.segments` and `history.tally`."""
    now = time.time()
    current = {d["id"]: (d["state"], d["state_since"]) for d in fleet.devices()}
    return {dev: h.tally(segs, now)
            for dev, segs in api._each_device(current, now - h.LONGEST, now, now)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--days", type=float, default=30.0)
    parser.add_argument("--per-day", type=float, default=3.0)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    n = args.devices

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        now = time.time()
        fleet = build_fleet(n)
        store = Store(tmp, retention=31 * DAY)
        rows, _ = fleet.take_changes()
        store.write(rows, [])
        with sqlite3.connect(store.path) as db:
            db.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?)",
                           events(n, args.days, args.per_day, now))  # fmt: skip
            db.executemany("INSERT OR REPLACE INTO hours VALUES (?, ?, ?, ?)", hours(n, now))
            n_events = db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
            n_hours = db.execute("SELECT COUNT(*) FROM hours").fetchone()[0]
        size = os.path.getsize(store.path) / 1e6
        print(f"{n} devices, {n_events} events over {args.days:g} d, {n_hours} hourly rows; "
              f"{size:.0f} MB; built in {time.perf_counter() - t0:.1f} s")  # fmt: skip

        reader = StoreReader(store.path)
        api = HistoryApi(fleet, reader)
        db = reader._db()
        dev = f"pi-{n // 2:06d}"
        figures: dict[str, float] = {}
        figures["select_1"], _ = best(lambda: db.execute("SELECT 1").fetchone(), args.repeat)
        figures["device_row"], _ = best(
            lambda: db.execute("SELECT * FROM devices WHERE id = ?", (dev,)).fetchone(),
            args.repeat,
        )
        figures["device_history"], body = best(lambda: api.device_history(dev, {}), args.repeat)
        since = time.time() - 30 * DAY
        few = max(1, args.repeat // 2)
        rows = ("SELECT device, time, from_state, to_state FROM events INDEXED BY events_device"
                " WHERE time > ? ORDER BY device, time")  # fmt: skip
        figures["scan_floor"], _ = best(lambda: sum(1 for _ in db.execute(rows, (since,))), few)
        figures["fleet_avail"], tallies = best(api._compute_tallies, few)
        figures["fleet_general"], _ = best(lambda: general(api, fleet), few)
        api.tallies()  # the cache, for the routes that read it
        api._fleet.ttl = 0.0  # uncached: its keys are rounded to the minute now
        figures["fleet_buckets"], _ = best(
            lambda: api.fleet_history({"step": ["900"]}), max(1, args.repeat // 2)
        )
        figures["groups"], _ = best(lambda: api.groups({"by": [str(time.time())]}), args.repeat)
        server = http.HttpServer(fleet, host="127.0.0.1", port=0, store_path=store.path)
        try:
            path = f"/api/devices/{dev}/history"
            figures["http_history"], _ = best(lambda: fetch(server.url + path), args.repeat)
            fetch(server.url + "/api/devices")  # fills the server's own cache once
            figures["http_devices"], _ = best(lambda: fetch(server.url + "/api/devices"),
                                              args.repeat)  # fmt: skip
        finally:
            server.close()
        reader.close()
        store.close()
    _, history = body
    print(f"one device: {len(history['segments'])} segments, {len(history['hours'])} hours; "
          f"fleet: {len(tallies)} tallies")  # fmt: skip
    print(f"{'figure':<15} {'seconds':>9} {'x select_1':>11} {'x device_row':>13} "
          f"{'x scan_floor':>13}")  # fmt: skip
    for name, secs in figures.items():
        ratios = (secs / figures[k] for k in ("select_1", "device_row", "scan_floor"))
        print(f"{name:<15} {secs:>9.4f} " + "{:>11.0f} {:>13.0f} {:>13.2f}".format(*ratios))


if __name__ == "__main__":
    main()
