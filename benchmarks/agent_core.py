"""Agent core benchmarks: RSS, system-sensor CPU, heartbeat send cost, idle wake-ups.

Each figure is printed with a ratio to a baseline measured in the same run (this
machine is shared and noisy: one absolute time means little).

    .venv/bin/python benchmarks/agent_core.py [--idle-seconds 60]

Targets (issue #2): RSS <= 18 MB and <= 1.35x a bare interpreter importing psutil,
json and socket; system sensor CPU per cycle <= 1.3x a bare loop of the same psutil
calls; heartbeat encode+send <= 5x socket.send of pre-encoded bytes; idle agent at
default config <= 20 voluntary context switches per minute.
"""

from __future__ import annotations

import argparse
import glob
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src")}


HEAVY = (
    "ssl",
    "asyncio",
    "paho",
    "serial",
    "hashlib",
    "sqlite3",
    "dataclasses",
    "inspect",
    "random",
    "pynmea2",
    "prometheus_client",
)
# Builds and starts an agent in a fresh interpreter, then lists the heavy modules loaded.
PROBE = f"""
import sys
from fleetbeat.agent.runtime import Agent
from fleetbeat.cli import build_parser
from fleetbeat.agent.config import parse_agent_config
agent = Agent(parse_agent_config({{"outputs": {{"udp": [{{"port": 9}}]}}}}, "probe"))
agent.start()
agent.send_heartbeat()
agent.shutdown()
print(sorted(m for m in {HEAVY!r} if m in sys.modules))
"""


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def voluntary_switches(pid: int) -> int:
    total = 0
    for status in glob.glob(f"/proc/{pid}/task/*/status"):
        with open(status) as f:
            for line in f:
                if line.startswith("voluntary_ctxt_switches:"):
                    total += int(line.split()[1])
    return total


def start_agent(config: str, tmp: str) -> subprocess.Popen[bytes]:
    path = os.path.join(tmp, "agent.toml")
    with open(path, "w") as f:
        f.write(config)
    cmd = [sys.executable, "-m", "fleetbeat", "agent", "-c", path]
    quiet = subprocess.DEVNULL
    return subprocess.Popen(cmd, env=ENV, stdout=quiet, stderr=quiet)


def bench_rss(tmp: str) -> None:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    port = rx.getsockname()[1]
    config = f"""
[agent]
heartbeat_interval = "0.5s"
jitter = 0
[sensors.system]
interval = "0.5s"
[[outputs.udp]]
host = "127.0.0.1"
port = {port}
"""
    agent = start_agent(config, tmp)
    bare = "import psutil, json, socket, time; time.sleep(60)"
    base = subprocess.Popen([sys.executable, "-c", bare], env=ENV)
    try:
        time.sleep(6.0)  # a dozen cycles: steady state
        a, b = rss_mb(agent.pid), rss_mb(base.pid)
        received = 0
        rx.setblocking(False)
        try:
            while rx.recv(65535):
                received += 1
        except BlockingIOError:
            pass
        print(
            f"RSS  agent (UDP only, {received} datagrams sent): {a:.1f} MB; bare interpreter "
            f"importing psutil+json+socket: {b:.1f} MB; ratio {a / b:.2f}  "
            "(target <= 18 MB, <= 1.35)"
        )
        probe = subprocess.run(
            [sys.executable, "-c", PROBE], env=ENV, capture_output=True, text=True, check=True
        ).stdout.strip()
        print(f"     heavy modules a running UDP-only agent has imported: {probe}")
    finally:
        agent.terminate()
        base.terminate()
        agent.wait()
        base.wait()
        rx.close()


def drain_socket(rx: socket.socket) -> None:
    """Read and drop whatever a receiving socket holds."""
    rx.setblocking(False)
    try:
        while True:
            rx.recv(65535)
    except BlockingIOError:
        pass


def best_of(fn, repeat: int = 7) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return min(times)


def bench_system_cpu() -> None:
    from fleetbeat.sensors.system import SystemConfig, SystemSensor

    sensor = SystemSensor(SystemConfig())
    sensor.prime()
    sensor.read()

    # The bare loop makes exactly the psutil/sysfs calls the sensor makes on this
    # machine: groups it found unavailable (no swap, no thermal zone, not a Pi) are
    # skipped by both after the first read.
    def throttle() -> None:
        try:
            open("/sys/devices/platform/soc/soc:firmware/get_throttled").close()
        except OSError:
            glob.glob("/sys/class/hwmon/hwmon*")

    calls = {
        "cpu": [lambda: psutil.cpu_percent(None)],
        "load": [os.getloadavg],
        "mem": [psutil.virtual_memory],
        "swap": [psutil.swap_memory],
        "disk": [lambda: os.path.ismount("/"), lambda: psutil.disk_usage("/")],
        "net": [lambda: psutil.net_io_counters(pernic=True)],
        "temp": [psutil.sensors_temperatures, lambda: glob.glob("/sys/class/thermal/*")],
        "uptime": [time.time],
        "procs": [psutil.pids],
        "throttle": [throttle],
    }
    active = [fn for group, fns in calls.items() if group not in sensor.unavailable for fn in fns]
    print(f"     groups this machine provides: {[g for g in calls if g not in sensor.unavailable]}")

    def bare_cycle() -> None:
        for fn in active:
            fn()

    n = 200
    ours = best_of(lambda: [sensor.read() for _ in range(n)]) / n
    bare = best_of(lambda: [bare_cycle() for _ in range(n)]) / n
    print(
        f"CPU  system sensor cycle: {ours * 1e6:.0f} us; bare loop of the same psutil calls: "
        f"{bare * 1e6:.0f} us; ratio {ours / bare:.2f}  (target <= 1.3)"
    )


def bench_heartbeat_send() -> None:
    from fleetbeat.agent.config import parse_agent_config
    from fleetbeat.agent.runtime import Agent
    from fleetbeat.outputs.base import Outgoing

    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    port = rx.getsockname()[1]
    cfg = parse_agent_config(
        {"agent": {"tags": {"site": "kitchen"}}, "outputs": {"udp": [{"port": port}]}}, "bench"
    )
    agent = Agent(cfg)
    agent.system.prime()
    agent.system.read()
    agent.emitters[0].output.send(b"warm-up")
    hb = agent.emitters[0]
    payload_holder: list[bytes] = []
    hb._show = lambda name, p, d: payload_holder.append(p)
    agent.send_heartbeat()
    hb._show = None
    payload = payload_holder[0]
    raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    raw.setblocking(False)
    raw.connect(("127.0.0.1", port))

    def drain() -> None:
        drain_socket(rx)

    n = 2000
    emitter = agent.emitters[0]
    hb_msg = Outgoing(
        "hb",
        ts=time.time(),
        metrics=agent.heartbeat_metrics(),
        interval=cfg.agent.heartbeat_interval,
    )

    def encode_send() -> None:
        for _ in range(n):
            emitter.emit(hb_msg)
        drain()

    def full() -> None:
        for _ in range(n):
            agent.send_heartbeat()
        drain()

    def bare() -> None:
        for _ in range(n):
            raw.send(payload)
        drain()

    for _ in range(3):  # interleaved rounds: the same noise for all three
        a, f, b = best_of(encode_send) / n, best_of(full) / n, best_of(bare) / n
        print(
            f"SEND heartbeat encode+send: {a * 1e6:.1f} us ({len(payload)} bytes), with gathering"
            " "
            f"metrics/drops/errors: {f * 1e6:.1f} us; socket.send of the pre-encoded bytes: "
            f"{b * 1e6:.1f} us; ratios {a / b:.2f} and {f / b:.2f}  (target <= 5)"
        )
    raw.close()
    rx.close()


def bench_idle_wakeups(tmp: str, seconds: float) -> None:
    agent = start_agent("", tmp)  # embedded defaults: 10 s heartbeat and system sensor
    try:
        time.sleep(11.0)  # past the random start offset (jitter, up to 10 s)
        p = psutil.Process(agent.pid)
        c0, s0 = voluntary_switches(agent.pid), p.cpu_times()
        time.sleep(seconds)
        c1, s1 = voluntary_switches(agent.pid), p.cpu_times()
        per_min = (c1 - c0) * 60.0 / seconds
        cpu = (s1.user + s1.system - s0.user - s0.system) / seconds * 100
        print(
            f"IDLE agent at default config: {per_min:.1f} voluntary context switches/min "
            f"over {seconds:.0f} s, CPU {cpu:.3f} %  (target <= 20/min)"
        )
    finally:
        agent.terminate()
        agent.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument(
        "--only",
        nargs="+",
        default=["rss", "cpu", "send", "idle"],
        choices=["rss", "cpu", "send", "idle"],
    )
    args = parser.parse_args()
    print(f"Python {sys.version.split()[0]}, psutil {psutil.__version__}, {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        if "rss" in args.only:
            bench_rss(tmp)
        if "cpu" in args.only:
            bench_system_cpu()
        if "send" in args.only:
            bench_heartbeat_send()
        if "idle" in args.only:
            bench_idle_wakeups(tmp, args.idle_seconds)


if __name__ == "__main__":
    main()
