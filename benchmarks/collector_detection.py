"""Detection time: from an agent's last heartbeat to `down`, at the default settings.

A real collector and real agents on loopback. The defaults are scale-free
except `check_interval` (0.25 s at a 10 s heartbeat interval), so this runs
with a 0.1 s interval and check_interval scaled the same way (2.5 ms), and
reports in intervals and in seconds at the default 10 s interval. Two agents:
one killed young (20 heartbeats: little known about its loss, so "auto" is
patient), one killed after 300 (a clean link: down_after 3). Baseline in the
same run: the configured late_after threshold, when the device went late.
Run: .venv/bin/python benchmarks/collector_detection.py
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fleetbeat.collector.store import Store

INTERVAL = 0.1
SCALE = 10.0 / INTERVAL  # to the default 10 s interval


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent / "src"))
    with open(log, "w") as f:
        return subprocess.Popen([sys.executable, "-m", "fleetbeat", *args], stdout=f,
                                stderr=subprocess.STDOUT, env=env)  # fmt: skip


def events(state: Path) -> list[dict[str, object]]:
    store = Store(str(state), retention=86400.0)
    try:
        return store.load(time.time())[1]
    finally:
        store.close()


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="fb-detect-"))
    port, state = free_port(), tmp / "state"
    (tmp / "c.toml").write_text(f"""[collector]
udp_listen = "127.0.0.1:{port}"
http_listen = "127.0.0.1:0"
state_dir = "{state}"
check_interval = "{0.25 / SCALE}s"
flush_interval = "0.1s"
""")
    col = start(["collector", "-c", str(tmp / "c.toml")], tmp / "c.log")
    procs = [col]
    try:
        time.sleep(1.0)
        if col.poll() is not None:
            raise SystemExit((tmp / "c.log").read_text())
        agents = {}
        for name, beats in (("young", 20), ("seasoned", 300)):
            cfg = tmp / f"{name}.toml"
            cfg.write_text(f'[agent]\ndevice_id = "{name}"\nheartbeat_interval = "{INTERVAL}s"\n'
                           f'jitter = 0\n[sensors.system]\nenabled = false\n[[outputs.udp]]\n'
                           f'host = "127.0.0.1"\nport = {port}\n')  # fmt: skip
            agents[name] = (start(["agent", "-c", str(cfg)], tmp / f"{name}.log"), beats)
            procs.append(agents[name][0])
        t0 = time.time()
        for proc, beats in sorted(agents.values(), key=lambda a: a[1]):
            time.sleep(max(0.0, t0 + beats * INTERVAL - time.time()))
            proc.send_signal(signal.SIGKILL)
        time.sleep(12 * INTERVAL + 0.5)
        col.send_signal(signal.SIGTERM)
        col.wait(10)
        store = Store(str(state), retention=86400.0)
        rows, evs = store.load(time.time())
        store.close()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    last_seen = {r[0]: r[3] for r in rows}
    down_k = {r[0]: r[17] for r in rows}
    print(f"interval {INTERVAL} s, check_interval {0.25 / SCALE * 1000:.1f} ms (scaled defaults)")
    for name in ("young", "seasoned"):
        got = {e["to"]: e["time"] for e in evs if e["device"] == name}
        late = (got["late"] - last_seen[name]) / INTERVAL  # type: ignore[operator]
        down = (got["down"] - last_seen[name]) / INTERVAL  # type: ignore[operator]
        print(f"{name:9s} ({agents[name][1]} heartbeats): late after {late:.2f} intervals "
              f"(late_after 1.5), down after {down:.2f} intervals (down_after_effective "
              f"{down_k[name]:g}) = {down * 10:.1f} s at the default 10 s interval")  # fmt: skip


if __name__ == "__main__":
    main()
