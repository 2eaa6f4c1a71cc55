"""The collector under systemd: READY, watchdog pings from its loop, STATUS, SIGHUP reload, STOPPING."""

from __future__ import annotations

import json
import signal
import socket
import statistics
import subprocess
import time
from pathlib import Path

from helpers import fleetbeat_cmd, free_port, subprocess_env, wait_until

WATCHDOG_USEC = 400_000


def collector_config(tmp_path: Path, port: int, late_after: float = 1.5, extra: str = "") -> str:
    return f"""
[collector]
udp_listen = "127.0.0.1:{port}"
http_listen = "127.0.0.1:0"
state_dir = "{tmp_path / "state"}"
check_interval = "0.05s"
late_after = {late_after}
{extra}
"""


def heartbeat(seq: int) -> bytes:
    return json.dumps({"v": 1, "k": "hb", "dev": "pi-1", "run": "0123456789abcdef", "seq": seq,
                       "ts": time.time(), "int": 10, "bt": 1700000000}).encode()  # fmt: skip


def test_collector_notifies_and_reloads(tmp_path, notify_socket):
    """READY once, pings every WATCHDOG_USEC/2, STATUS counts devices, SIGHUP reloads, STOPPING."""
    port = free_port()
    cfg = tmp_path / "collector.toml"
    cfg.write_text(collector_config(tmp_path, port))
    log = tmp_path / "collector.log"
    env = subprocess_env(NOTIFY_SOCKET=notify_socket.address, WATCHDOG_USEC=str(WATCHDOG_USEC))
    with open(log, "w") as out:
        proc = subprocess.Popen(fleetbeat_cmd("collector", "-c", str(cfg)), stdout=out,
                                stderr=subprocess.STDOUT, env=env)  # fmt: skip
    try:
        notify_socket.wait_for(lambda: notify_socket.times("READY", "1"))
        assert notify_socket.values("STATUS")[0] == "0 devices"
        t_ready = notify_socket.times("READY")[0]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(heartbeat(0), ("127.0.0.1", port))
        notify_socket.collect(1.5)
        pings = [t for t in notify_socket.times("WATCHDOG", "1") if t >= t_ready]
        gaps = [b - a for a, b in zip(pings, pings[1:])]
        assert 0.15 <= statistics.median(gaps) <= 0.3
        assert max(gaps) < WATCHDOG_USEC / 1e6
        assert "1 devices: 1 up" in notify_socket.values("STATUS")

        cfg.write_text(collector_config(tmp_path, port, late_after=2.5))
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "reload: configuration applied" in log.read_text())
        cfg.write_text(collector_config(tmp_path, port, extra="late_afterr = 3"))
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "reload rejected" in log.read_text())
        assert 'collector.late_afterr: unknown key; did you mean "late_after"?' in log.read_text()
        notify_socket.poll(0.1)
        kinds = notify_socket.kinds()
        assert sum("RELOADING" in k for k in kinds) == 2
        assert sum("READY" in k for k in kinds) == 3  # start, and after each reload
        assert proc.poll() is None  # an invalid reload does not stop it

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        notify_socket.wait_for(lambda: notify_socket.times("STOPPING", "1"))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
