"""Memory a hostile sender can make a real collector hold is bounded by a stated formula.

The README's bound (section "Memory"): a device costs at most
DEVICE_BYTES + 1.25 x (max_metric_bytes + max_tag_bytes) of RSS, plus a fixed base.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Callable

from collector_helpers import CollectorProcess, stored_events

from fleetbeat.collector.budget import metrics_cost, tags_cost
from fleetbeat.collector.config import CollectorSection
from helpers import wait_until

DEVICE_BYTES = 1400  # one device with its loss state, address and strings, measured (RSS)
SLACK = 16 << 20  # allocator arenas and first use of code paths, not per device


def device_bound(config: CollectorSection) -> float:
    """RSS one device may cost at most, from the documented formula."""
    return DEVICE_BYTES + 1.25 * (config.max_metric_bytes + config.max_tag_bytes)


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def at_the_bounds(i: int, config: CollectorSection) -> tuple[dict[str, float], dict[str, str]]:
    """Metric names and tags unique to device i, as many as the bounds let through."""
    names: list[str] = []
    while len(names) < config.max_metrics:
        if metrics_cost((*names, f"m{i:06d}{len(names):03d}")) > config.max_metric_bytes:
            break
        names.append(f"m{i:06d}{len(names):03d}")
    tags: dict[str, str] = {}
    while len(tags) < config.max_tags:
        more = {**tags, f"t{i:06d}{len(tags):02d}": f"v{i:08d}"}
        if tags_cost(more) > config.max_tag_bytes:
            break
        tags = more
    return {n: i + 0.5 for n in names}, tags


def hb(i: int, seq: int, run: str, metrics: dict[str, float], tags: dict[str, str]) -> bytes:
    return json.dumps({"v": 1, "k": "hb", "dev": f"dev-{i:05d}", "run": run, "seq": seq,
                       "ts": 1.8e9, "int": 10, "bt": 1.7e9, "ver": "0.1.0", "drop": 0,
                       "tags": tags, "m": metrics}).encode()  # fmt: skip


def blast(col: CollectorProcess, payloads: list[bytes], total: int, burst: int = 100) -> None:
    """Send in bursts the receive buffer holds, waiting on the collector's received count."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for start in range(0, len(payloads), burst):
            for p in payloads[start : start + burst]:
                sock.sendto(p, ("127.0.0.1", col.udp_port))
            done = total + start + len(payloads[start : start + burst])
            wait_until(lambda d=done: col.api("/api/stats")["stats"]["received"]["udp"] >= d, 20)
    finally:
        sock.close()


def test_thousand_devices_with_60kb_of_metrics_stay_within_the_formula(
    start_collector: Callable[..., CollectorProcess], tmp_path: Path
) -> None:
    """1,000 devices x 60 KB of metrics, then at the bounds: RSS within the formula, restart too."""
    config = CollectorSection()
    col = start_collector()
    wait_until(col.http_url)
    base = rss(col.proc.pid)
    n = 1000
    huge = [hb(i, 0, f"{i:016x}", {f"k{j:05d}" + "x" * 40: 1.5 for j in range(1000)}, {})
            for i in range(n)]  # fmt: skip
    assert all(len(p) > 50_000 for p in huge)
    blast(col, huge, 0, burst=2)  # 60 KB each: the kernel caps the buffer (rmem_max)
    bounded = []
    for i in range(n):
        metrics, tags = at_the_bounds(i, config)
        bounded += [hb(i, s, f"{i:016x}", metrics, tags) for s in (0, 1)]
    blast(col, bounded, n)
    stats = col.api("/api/stats")["stats"]
    assert stats["rejected"] == {"metrics_limit": n}
    assert stats["devices_known"] == n
    limit = n * device_bound(config) + SLACK
    grown = rss(col.proc.pid) - base
    assert grown <= limit, f"RSS grew {grown} bytes, the formula allows {limit:.0f}"
    assert col.terminate() == 0
    again = start_collector(state_dir=col.state_dir, name="again")
    assert f"{n} devices reloaded" in again.log()
    assert rss(again.proc.pid) - base <= limit


def test_a_new_run_per_datagram_keeps_memory_and_event_rows_bounded(
    start_collector: Callable[..., CollectorProcess],
) -> None:
    """A restart flood (a new run per datagram) stores at most the per-minute events per device."""
    col = start_collector()
    wait_until(col.http_url)
    base = rss(col.proc.pid)
    devices, runs = 10, 2000
    flood = [hb(i, 0, f"{r:08x}{i:08x}", {"cpu": 1.0}, {}) for r in range(runs)
             for i in range(devices)]  # fmt: skip
    blast(col, flood, 0)
    stats = col.api("/api/stats")["stats"]
    assert stats["devices_known"] == devices
    per_minute = CollectorSection().max_events_per_minute
    assert stats["events_suppressed"] >= devices * (runs - 1 - per_minute)
    grown = rss(col.proc.pid) - base
    assert grown <= devices * device_bound(CollectorSection()) + SLACK, grown
    assert col.terminate() == 0
    events = stored_events(col.state_dir)
    assert len(events) <= devices * (per_minute + 1)
    assert {e["reason"] for e in events} == {"first_seen", "restart", "flapping"}
