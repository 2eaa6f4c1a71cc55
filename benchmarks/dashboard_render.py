"""The dashboard's first render at 10,000 devices in headless Chromium, against an empty fleet.

    .venv/bin/python benchmarks/dashboard_render.py [--devices N] [--runs R]

A real Fleet and Store behind the real HTTP server, N devices (each heard twice, 10 % of
them down, with tags), and one with none. Chromium runs headless in real time (no
virtual-time budget, which stops the page's clock while it works) and is driven over
`--remote-debugging-pipe` (the DevTools protocol on fds 3 and 4, stdlib only). For each
run a fresh tab opens the page; the figures are the page's own `performance.now()` (ms
since navigation began) when the device table was first drawn (`data-first-render`: the
page, the /api/devices answer parsed, sorted, the counts and 100 rows drawn) and when
the rows' 24 h strips were first drawn (`data-strips-render`). Medians of R runs, and
the ratio to the empty fleet's.

On the 2-core build machine (shared with three other jobs at the time), two runs of 5:

             fleet  table ms  strips ms   (median of 5 runs)
         0 devices  107..125   122..155
    10,000 devices  385..455   513..614
             ratio  3.60..3.64 3.95..4.22
    first render at 10,000 devices: median 385..455 ms, worst 681..729 ms
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fleetbeat import wire
from fleetbeat.collector import http
from fleetbeat.collector.config import parse_collector_config
from fleetbeat.collector.fleet import Fleet
from fleetbeat.collector.store import Store

RUN = "0123456789abcdef"


class Browser:
    """Headless Chromium spoken to over the DevTools pipe."""

    def __init__(self, profile: str) -> None:
        read_end, self._send = os.pipe()
        self._recv, write_end = os.pipe()
        # above any fd the shell moves, so that putting them on 3 and 4 closes neither
        to_child = fcntl.fcntl(read_end, fcntl.F_DUPFD, 20)
        from_child = fcntl.fcntl(write_end, fcntl.F_DUPFD, 20)
        os.close(read_end)
        os.close(write_end)

        chromium = os.environ.get("CHROMIUM", "chromium")
        # the pipe protocol: Chromium reads fd 3 and writes fd 4; bash puts them there
        redirect = f'exec "$0" "$@" 3<&{to_child} 4>&{from_child} {to_child}<&- {from_child}>&-'
        self.proc = subprocess.Popen(
            ["bash", "-c", redirect, chromium, "--headless", "--no-sandbox", "--disable-gpu",
             "--remote-debugging-pipe", f"--user-data-dir={profile}", "--window-size=1400,1000",
             "about:blank"],
            pass_fds=(to_child, from_child),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        os.close(to_child)
        os.close(from_child)
        self._buf = b""
        self._id = 0

    def call(self, method: str, session: str = "", **params: Any) -> dict[str, Any]:
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        os.write(self._send, json.dumps(msg).encode() + b"\0")
        while True:
            while b"\0" not in self._buf:
                chunk = os.read(self._recv, 1 << 16)
                if not chunk:
                    raise RuntimeError("Chromium closed the pipe")
                self._buf += chunk
            raw, self._buf = self._buf.split(b"\0", 1)
            answer = json.loads(raw)
            if answer.get("id") == self._id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer["result"]

    def first_render(self, url: str, timeout: float = 60.0) -> tuple[float, float]:
        """(ms to the table, ms to the strips) of a fresh tab opening `url`."""
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Page.navigate", session, url=url)
        deadline = time.monotonic() + timeout
        expr = (
            "[document.documentElement.dataset.firstRender, "
            "document.documentElement.dataset.stripsRender]"
        )
        while time.monotonic() < deadline:
            got = self.call("Runtime.evaluate", session, expression=expr, returnByValue=True)
            table, strips = got["result"].get("value") or [None, None]
            if table and strips:
                self.call("Target.closeTarget", targetId=target)
                return float(table), float(strips)
            time.sleep(0.02)
        raise RuntimeError(f"{url}: no render within {timeout} s")

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, OSError):
            self.call("Browser.close")
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._send)
        os.close(self._recv)


def served_fleet(devices: int, state_dir: str) -> tuple[Any, Store]:
    """The real HTTP server over a real Fleet and Store holding `devices` devices."""
    clock = [time.time() - 1200.0]
    config = parse_collector_config(
        {"collector": {"http_listen": "127.0.0.1:0", "down_after": 3.0, "state_dir": state_dir,
                       "max_devices": max(1000, devices * 2)}}, "bench"
    )  # fmt: skip
    c = config.collector
    fleet = Fleet(c, clock=lambda: clock[0], monotonic=lambda: clock[0])
    store = Store(c.state_dir, retention=c.event_retention, clock=lambda: clock[0])
    for seq in range(3):
        for i in range(devices):
            if i % 10 == 0 and seq == 2:
                continue  # these go quiet: down
            msg = {"v": 1, "k": "hb", "dev": f"dev-{i:05d}", "run": RUN, "seq": seq,
                   "ts": clock[0], "int": 60.0, "tags": {"site": f"site-{i % 7}"},
                   "m": {"cpu": 1.0}}  # fmt: skip
            fleet.receive(wire.dumps(msg), ("10.0.0.1", 40000))
        clock[0] += 60.0
    clock[0] = time.time()
    fleet.check()
    rows, events = fleet.take_changes()
    store.write(rows, events)
    server = http.start(fleet, config, store_path=store.path)
    return server, store


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--devices", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        big, big_store = served_fleet(args.devices, str(Path(tmp) / "big"))
        empty, empty_store = served_fleet(0, str(Path(tmp) / "empty"))
        browser = Browser(str(Path(tmp) / "profile"))
        try:
            browser.first_render(empty.url + "/")  # warm up: Chromium's own first start
            results: dict[str, list[tuple[float, float]]] = {"empty": [], "big": []}
            for _ in range(args.runs):  # interleaved, so the machine's load hits both alike
                results["empty"].append(browser.first_render(empty.url + "/"))
                results["big"].append(browser.first_render(big.url + "/"))
        finally:
            browser.close()
            for server, store in ((big, big_store), (empty, empty_store)):
                server.close()
                store.close()
    med = {k: (statistics.median(t for t, _ in v), statistics.median(s for _, s in v))
           for k, v in results.items()}  # fmt: skip
    print(f"{'fleet':>14} {'table ms':>9} {'strips ms':>10}   (median of {args.runs} runs)")
    print(f"{'0 devices':>14} {med['empty'][0]:9.0f} {med['empty'][1]:10.0f}")
    print(f"{args.devices:>6,} devices {med['big'][0]:9.0f} {med['big'][1]:10.0f}")
    ratio = (med["big"][0] / med["empty"][0], med["big"][1] / med["empty"][1])
    print(f"{'ratio':>14} {ratio[0]:9.2f} {ratio[1]:10.2f}")
    worst = max(t for t, _ in results["big"])
    over = "" if med["big"][0] < 1000 else "  (over the 1 s goal)"
    print(f"first render at {args.devices:,} devices: median {med['big'][0]:.0f} ms, "
          f"worst {worst:.0f} ms{over}")  # fmt: skip
    sys.stdout.flush()


if __name__ == "__main__":
    main()
