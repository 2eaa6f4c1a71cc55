"""A fleet with a past, for the dashboard's pictures: a real Fleet and a real Store (SQLite)
behind the real HTTP server, fed wire v1 on a fake clock that ends at the present, so the
history routes (which read the store and judge "now" by the wall clock) see days of it.

And the headless-Chromium helpers the dashboard tests share.
"""

from __future__ import annotations

import random
import re
import shutil
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, Optional

from fleetbeat import wire
from fleetbeat.collector import http
from fleetbeat.collector.config import parse_collector_config
from fleetbeat.collector.fleet import Fleet
from fleetbeat.collector.store import Store
from helpers import FakeClock

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
RUN = "0123456789abcdef"

# What a device does at a step of the past: send a heartbeat, stay silent, or say bye.
Behaviour = Callable[[float, random.Random], str]


class PastFleet:
    """A real Fleet + Store + HTTP server; `play` runs the past up to the present."""

    def __init__(self, tmp_path: Path, *, start: float, down_after: float = 3.0) -> None:
        self.clock = FakeClock(start)
        self.config = parse_collector_config(
            {"collector": {"http_listen": "127.0.0.1:0", "down_after": down_after,
                           "state_dir": str(tmp_path), "max_devices": 20_000}}, "test"
        )  # fmt: skip
        c = self.config.collector
        self.fleet = Fleet(c, clock=self.clock, monotonic=self.clock)
        self.store = Store(c.state_dir, retention=c.event_retention, clock=self.clock)
        self.server = http.start(self.fleet, self.config, store_path=self.store.path)
        self.url = self.server.url
        self.seq: dict[str, int] = {}
        self.sent = 0

    def hb(self, dev: str, *, interval: float, tags: Optional[Mapping[str, str]] = None,
           kind: str = "hb", lost: bool = False) -> None:  # fmt: skip
        """A heartbeat (or `bye`) from `dev`; `lost`: its seq is used up, nothing arrives."""
        seq = self.seq.get(dev, 0)
        self.seq[dev] = seq + 1
        if lost:
            return
        msg: dict[str, Any] = {"v": 1, "k": kind, "dev": dev, "run": RUN, "seq": seq,
                               "ts": self.clock.now}  # fmt: skip
        if kind == "hb":
            msg.update(int=interval, bt=1_764_000_000, ver="0.1.0", drop=0,
                       m={"cpu": round(1 + seq % 7 * 0.3, 1), "temp_c": 41.5})  # fmt: skip
            if tags:
                msg["tags"] = dict(tags)
        self.fleet.receive(wire.dumps(msg), (f"10.0.0.{1 + sum(dev.encode()) % 250}", 40000))
        self.sent += 1

    def flush(self) -> None:
        """What the service's flush does: changed rows and new events into the store."""
        rows, events = self.fleet.take_changes()
        self.store.write(rows, events)

    def play(
        self,
        devices: Mapping[str, tuple[Behaviour, Mapping[str, str]]],
        *,
        interval: float,
        until: Optional[float] = None,
        seed: int = 7,
    ) -> None:
        """Every `interval` s from the clock to `until` (default: now), each device does what
        its behaviour says; the fleet is judged and flushed at every step."""
        rnd = random.Random(seed)
        end = time.time() if until is None else until
        said_bye: set[str] = set()
        while self.clock.now < end:
            for dev, (behaviour, tags) in devices.items():
                what = behaviour(end - self.clock.now, rnd)  # seconds before the end
                if what == "bye":
                    if dev not in said_bye:
                        self.hb(dev, interval=interval, kind="bye")
                        said_bye.add(dev)
                    continue
                said_bye.discard(dev)
                if what in ("hb", "lost"):
                    self.hb(dev, interval=interval, tags=tags, lost=what == "lost")
            for _ in range(2):  # judged twice an interval, as the service's tick judges often
                self.clock.now = min(end, self.clock.now + interval / 2)
                self.fleet.check()
            self.flush()

    def close(self) -> None:
        self.server.close()
        self.store.close()


# --- behaviours: given the seconds before the end of the past, what to do now -------------


def steady(loss: float = 0.0) -> Behaviour:
    return lambda left, rnd: "lost" if rnd.random() < loss else "hb"


def dead_for(seconds: float) -> Behaviour:
    """Sends until `seconds` before the end, then nothing: down."""
    return lambda left, rnd: "hb" if left > seconds else "silent"


def silent_between(*spans: tuple[float, float], loss: float = 0.0) -> Behaviour:
    """Silent while `left` is within any (from, to) of seconds before the end."""
    inner = steady(loss)
    return lambda left, rnd: "silent" if any(b < left <= a for a, b in spans) else inner(left, rnd)


def bye_for(seconds: float) -> Behaviour:
    """Says bye `seconds` before the end: offline from then on."""
    return lambda left, rnd: "hb" if left > seconds else "bye"


def flaky(period: float, down: float, loss: float = 0.0) -> Behaviour:
    """Silent for `down` s out of every `period` s."""
    inner = steady(loss)
    return lambda left, rnd: "silent" if left % period < down else inner(left, rnd)


# --- headless Chromium --------------------------------------------------------------------


def chromium(args: list[str], tmp_path: Path, budget_ms: int = 6000) -> str:
    """Run headless Chromium with `args` (a URL last) under a virtual-time budget; stdout."""
    done = subprocess.run(
        [CHROMIUM or "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--user-data-dir={tmp_path / 'chromium'}", f"--virtual-time-budget={budget_ms}", *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def dump_dom(url: str, tmp_path: Path, budget_ms: int = 6000) -> str:
    """The page's DOM after its scripts ran."""
    return chromium(["--dump-dom", url], tmp_path, budget_ms)


def screenshot(url: str, path: Path, tmp_path: Path, size: str = "1400,1000",
               budget_ms: int = 6000) -> Path:  # fmt: skip
    """A PNG of the page's first `size` pixels (width,height), after its scripts ran."""
    chromium([f"--screenshot={path}", f"--window-size={size}", url], tmp_path, budget_ms)
    assert path.stat().st_size > 10_000, "an empty picture"
    return path


def strip_of(dom: str, dev: str) -> list[str]:
    """The states of the segments in `dev`'s table row strip, left to right."""
    row = dom[dom.index(f'data-id="{dev}"') :]
    row = row[: row.index("</tr>")]
    return re.findall(r'<rect class="s-\w+"[^>]*data-state="(\w+)"', row)


# --- the demo-like fleet of the README's picture ------------------------------------------

DEMO_INTERVAL = 300.0
DEMO_DAYS = 2


def demo_fleet(tmp_path: Path) -> PastFleet:
    """~50 devices across barn, shed and house over the last DEMO_DAYS days: most up with a
    little loss, three lossy, two flaky, the shed dark for an hour last night, two dead, one
    late now, two offline (said bye), three expected but never heard (missing)."""
    now = time.time()
    past = PastFleet(tmp_path, start=now - DEMO_DAYS * 86400)
    devices: dict[str, tuple[Behaviour, Mapping[str, str]]] = {}
    special: dict[str, Behaviour] = {
        "pi-barn-03": steady(0.12), "pi-house-07": steady(0.18), "pi-shed-11": steady(0.09),
        "pi-barn-05": flaky(6 * 3600, 2400, 0.01), "pi-house-02": flaky(9 * 3600, 3000),
        "pi-barn-09": dead_for(5 * 3600), "pi-house-12": dead_for(1500),
        "pi-shed-04": dead_for(500),  # late: one and a half intervals silent
        "pi-house-05": bye_for(3 * 3600), "pi-barn-14": bye_for(26 * 3600),
    }  # fmt: skip
    for site, n in (("barn", 17), ("shed", 15), ("house", 15)):
        for i in range(1, n + 1):
            dev = f"pi-{site}-{i:02d}"
            outage = ((9 * 3600, 8 * 3600),) if site == "shed" else ()
            behaviour = special.get(dev) or silent_between(*outage, loss=0.004)
            devices[dev] = (behaviour, {"site": site})
    past.fleet.expect({"pi-shed-16": {"site": "shed"}, "pi-shed-17": {"site": "shed"},
                       "pi-house-16": {"site": "house"}})  # fmt: skip
    past.play(devices, interval=DEMO_INTERVAL, until=now)
    return past
