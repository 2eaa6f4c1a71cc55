"""Real peers for the line-format encoders: etsy statsd (npm) and VictoriaMetrics (Debian).

A missing peer fails the test with how to install it: these tests are the proof
that the formats are right, so they are never skipped.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import pytest

from helpers import ROOT, free_port, wait_until

STATSD_DIR = ROOT / ".deps" / "node_modules" / "statsd"
STATSD_INSTALL = (
    "run scripts/test, which installs it, or: sudo apt-get install nodejs && "
    "mkdir -p .deps && (cd .deps && npm install statsd@0.9.0)"
)
VM_INSTALL = "run scripts/test, which installs it, or: sudo apt-get install victoria-metrics"
_INSPECT_ENTRY = re.compile(r"(?:'([^']*)'|([A-Za-z_$][\w$]*)): ([^,\n}]+)")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class StatsdDaemon:
    """The reference StatsD daemon: UDP in, gauges read through its TCP admin interface."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, mgmt_port: int, log: Path):
        self.proc = proc
        self.host = "127.0.0.1"
        self.port = port
        self.mgmt_port = mgmt_port
        self.log = log

    def admin(self, command: str) -> str:
        """Send one admin command; return the reply up to its END marker."""
        with socket.create_connection((self.host, self.mgmt_port), timeout=5) as s:
            s.sendall(command.encode() + b"\n")
            reply = b""
            while b"END\n" not in reply:
                chunk = s.recv(65536)
                if not chunk:
                    break
                reply += chunk
        return reply.decode()

    def gauges(self) -> dict[str, float]:
        """The daemon's gauges (its own `statsd.*` left out), from util.inspect output."""
        text = self.admin("gauges").split("END")[0]
        out: dict[str, float] = {}
        for quoted, bare, value in _INSPECT_ENTRY.findall(text):
            name = quoted or bare
            if not name.startswith("statsd."):
                out[name] = float(value)
        return out

    def counter(self, name: str) -> float:
        text = self.admin("counters").split("END")[0]
        for quoted, bare, value in _INSPECT_ENTRY.findall(text):
            if (quoted or bare) == name:
                return float(value)
        raise AssertionError(f"no counter {name} in {text}")


@pytest.fixture
def statsd_daemon(tmp_path: Path) -> Iterator[StatsdDaemon]:
    """etsy statsd on free loopback ports, gauges kept, no backend, no flush during a test."""
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        pytest.fail(f"node (nodejs) is not installed: {STATSD_INSTALL}")
    if not (STATSD_DIR / "stats.js").exists():
        pytest.fail(f"npm statsd is not installed in {STATSD_DIR}: {STATSD_INSTALL}")
    port = free_port()
    mgmt_port = free_port(socket.SOCK_STREAM)
    config = {
        "address": "127.0.0.1",
        "port": port,
        "mgmt_address": "127.0.0.1",
        "mgmt_port": mgmt_port,
        "flushInterval": 3_600_000,
        "deleteGauges": False,
        "backends": [],
        "automaticConfigReload": False,
    }
    config_path = tmp_path / "statsd-config.js"
    config_path.write_text(json.dumps(config))
    log = tmp_path / "statsd.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [node, str(STATSD_DIR / "stats.js"), str(config_path)],
            cwd=STATSD_DIR,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    daemon = StatsdDaemon(proc, port, mgmt_port, log)
    try:
        wait_until(lambda: proc.poll() is not None or "server is up" in log.read_text(), 15)
        if proc.poll() is not None:
            pytest.fail(f"statsd exited with {proc.returncode}: {log.read_text()}")
        wait_until(lambda: _health(daemon), 5)
        yield daemon
    finally:
        _stop(proc)


def _health(daemon: StatsdDaemon) -> bool:
    try:
        with socket.create_connection((daemon.host, daemon.mgmt_port), timeout=1) as s:
            s.sendall(b"health\n")
            return b"up" in s.recv(100)
    except OSError:
        return False


class VictoriaMetrics:
    """VictoriaMetrics with an InfluxDB line protocol listener on a UDP port."""

    def __init__(self, proc: subprocess.Popen[bytes], influx_port: int, http_port: int):
        self.proc = proc
        self.host = "127.0.0.1"
        self.influx_port = influx_port
        self.http = f"http://127.0.0.1:{http_port}"

    def send(self, payload: bytes) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(payload, (self.host, self.influx_port))

    def export(self, match: str = '{__name__=~".+"}') -> list[dict[str, Any]]:
        """Every stored sample of the series matching `match` (/api/v1/export)."""
        query = urllib.parse.urlencode({"match[]": match})
        url = f"{self.http}/api/v1/export?{query}"
        with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - our loopback URL
            body = resp.read().decode()
        return [json.loads(line) for line in body.splitlines() if line.strip()]

    def series(self, match: str = '{__name__=~".+"}') -> dict[tuple[tuple[str, str], ...], Any]:
        """label set (sorted, __name__ included) -> list of (timestamp ms, value)."""
        out = {}
        for row in self.export(match):
            key = tuple(sorted(row["metric"].items()))
            out[key] = list(zip(row["timestamps"], row["values"]))
        return out

    def wait_for(self, samples: int, match: str = '{__name__=~".+"}', timeout: float = 10.0) -> Any:
        """The matching series once they hold `samples` samples, or as they are after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            # without a forced flush new series take several seconds to become searchable
            with urllib.request.urlopen(f"{self.http}/internal/force_flush", timeout=5):  # noqa: S310
                pass
            series = self.series(match)
            if sum(map(len, series.values())) >= samples or time.monotonic() > deadline:
                return series
            time.sleep(0.2)


def _vm_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=1) as resp:  # noqa: S310 - loopback
            return bool(resp.read().strip() == b"OK")
    except OSError:
        return False


@pytest.fixture
def victoria_metrics(tmp_path: Path) -> Iterator[VictoriaMetrics]:
    """VictoriaMetrics on free loopback ports with a throwaway storage directory."""
    binary = shutil.which("victoria-metrics") or "/usr/bin/victoria-metrics"
    if not Path(binary).exists():
        pytest.fail(f"victoria-metrics is not installed: {VM_INSTALL}")
    proc: Optional[subprocess.Popen[bytes]] = None
    for _ in range(3):  # the influx port must be free for TCP as well as UDP
        influx_port, http_port = free_port(), free_port(socket.SOCK_STREAM)
        log = tmp_path / "vm.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [
                    binary,
                    f"-influxListenAddr=127.0.0.1:{influx_port}",
                    f"-httpListenAddr=127.0.0.1:{http_port}",
                    f"-storageDataPath={tmp_path / 'vm-data'}",
                    "-search.latencyOffset=0",
                    "-search.disableCache",
                    "-memory.allowedBytes=64MiB",
                    "-loggerLevel=ERROR",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        url = f"http://127.0.0.1:{http_port}"
        deadline = time.monotonic() + 15
        while proc.poll() is None and not _vm_ready(url) and time.monotonic() < deadline:
            time.sleep(0.05)
        if proc.poll() is None and _vm_ready(url):
            break
        _stop(proc)
    else:
        pytest.fail(f"victoria-metrics did not start: {log.read_text()[-2000:]}")
    assert proc is not None
    try:
        yield VictoriaMetrics(proc, influx_port, http_port)
    finally:
        _stop(proc)
