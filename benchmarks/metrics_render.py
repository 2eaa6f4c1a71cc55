"""How long one `/metrics` scrape takes at 10,000 devices, against baselines in the same run.

    .venv/bin/python benchmarks/metrics_render.py [--devices N] [--repeat R]

Figures (best of R, seconds per scrape):
  snapshot     Fleet.devices() + stats(): reading the fleet, which any exposition must do
  api_json     the /api/devices body (json.dumps of the snapshot): what the dashboard costs
  fleetbeat    collector.metrics (hand-written text format): what /metrics runs
  fleetbeat_gz the same, gzip-compressed as the server does (Prometheus asks for gzip)
  promclient   the same families through a prometheus-client custom Collector + generate_latest
  promclient_om  the same, in OpenMetrics (what Prometheus negotiates first)
  http_metrics GET /metrics over loopback from the real server, gzip accepted
  http_api     GET /api/devices over loopback, gzip accepted (one dashboard refresh)
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.request
from collections.abc import Iterator
from typing import Any, Callable

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from fleetbeat import wire
from fleetbeat.collector import http
from fleetbeat.collector.config import parse_collector_config
from fleetbeat.collector.fleet import Fleet
from fleetbeat.collector.liveness import STATES
from fleetbeat.collector.metrics import DEVICE_COUNTERS, DEVICE_GAUGES, Exposition


def build_fleet(n: int) -> Fleet:
    config = parse_collector_config({"collector": {"max_devices": n + 10}}, "bench")
    fleet = Fleet(config.collector)
    for i in range(n):
        for seq in range(3):
            msg = {"v": 1, "k": "hb", "dev": f"pi-{i:06d}", "run": "0123456789abcdef",
                   "seq": seq, "ts": time.time(), "int": 10, "bt": 1764000000, "ver": "0.1.0",
                   "drop": 0, "tags": {"site": f"site-{i % 50}"},
                   "m": {"cpu": 1.5, "mem": 40.0}}  # fmt: skip
            fleet.receive(wire.dumps(msg), ("127.0.0.1", 40000 + i % 20000))
    return fleet


class PromClientCollector:
    """The same per-device families as collector.metrics, built with prometheus-client."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        devices = self.fleet.devices()
        self.fleet.stats()
        state = GaugeMetricFamily("fleetbeat_device_state", "state", labels=["device", "state"])
        for d in devices:
            for s in STATES:
                state.add_metric([d["id"], s], 1.0 if d["state"] == s else 0.0)
        yield state
        info = GaugeMetricFamily(
            "fleetbeat_device_info", "info", labels=["device", "version", "transport"]
        )
        for d in devices:
            info.add_metric([d["id"], str(d["version"] or ""), d["transport"]], 1.0)
        yield info
        for name, doc, field, scale in DEVICE_GAUGES:
            g = GaugeMetricFamily(name, doc, labels=["device"])
            for d in devices:
                if d.get(field) is not None:
                    g.add_metric([d["id"]], float(d[field]) * scale)
            yield g
        for name, doc, field in DEVICE_COUNTERS:
            c = CounterMetricFamily(name, doc, labels=["device"])
            for d in devices:
                c.add_metric([d["id"]], float(d[field]))
            yield c


def fetch(url: str) -> bytes:
    req = urllib.request.Request(url, headers={"Accept-Encoding": "gzip"})  # noqa: S310
    with urllib.request.urlopen(req, timeout=60) as resp:  # noqa: S310 - loopback
        return bytes(resp.read())


def best(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    times = []
    result = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    t0 = time.perf_counter()
    fleet = build_fleet(args.devices)
    print(f"{args.devices} devices built in {time.perf_counter() - t0:.2f} s")
    expo = Exposition(fleet)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PromClientCollector(fleet))

    figures = {}
    figures["snapshot"], _ = best(lambda: (fleet.devices(), fleet.stats()), args.repeat)
    figures["api_json"], _ = best(lambda: json.dumps({"d": fleet.devices()}), args.repeat)
    figures["fleetbeat"], body = best(lambda: expo.text().encode(), args.repeat)
    figures["fleetbeat_gz"], gz = best(lambda: http.compress(expo.text().encode()), args.repeat)
    figures["promclient"], prom = best(lambda: generate_latest(registry), args.repeat)
    figures["promclient_om"], _ = best(lambda: generate_openmetrics(registry), args.repeat)

    server = http.HttpServer(fleet, host="127.0.0.1", port=0)
    try:
        figures["http_metrics"], _ = best(lambda: fetch(server.url + "/metrics"), args.repeat)
        figures["http_api"], _ = best(lambda: fetch(server.url + "/api/devices"), args.repeat)
    finally:
        server.close()

    samples = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
    prom_samples = sum(1 for line in prom.splitlines() if line and not line.startswith(b"#"))
    print(f"/metrics: {samples} samples, {len(body) / 1e6:.1f} MB, {len(gz) / 1e6:.2f} MB "
          f"gzipped (prometheus-client baseline: {prom_samples} samples)")  # fmt: skip
    base = figures["fleetbeat"]
    print(f"{'figure':<14} {'s/scrape':>9} {'x snapshot':>11} {'x fleetbeat':>12}")
    for name, secs in figures.items():
        print(f"{name:<14} {secs:>9.3f} {secs / figures['snapshot']:>11.2f} {secs / base:>12.2f}")


if __name__ == "__main__":
    main()
