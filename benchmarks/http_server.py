"""The collector's HTTP server against the stdlib ThreadingHTTPServer it replaced, same run.

    .venv/bin/python benchmarks/http_server.py [--seconds S] [--idle N]

For each server: GET /healthz over one keep-alive connection for S seconds
(requests/s, median and 99th-percentile latency), first with nothing else
connected, then with N idle connections held open; and the threads the process
runs while they are held. The stdlib server answers the same JSON from a
minimal handler, so its figures are a ceiling for what the old http.py did.

On the 2-core build machine (shared), 1,000 idle connections:

    server      idle    req/s  p50 ms  p99 ms threads
    Stdlib         0       24   44.00   47.96       3
    Stdlib      1000       24   44.01   48.03    1003
    Fleetbeat      0     2752    0.35    0.71       6
    Fleetbeat   1000     3204    0.27    1.57       6

The stdlib's 44 ms is Nagle's algorithm meeting the client's delayed ACK: it
writes the headers and the body in two sends, as the old http.py did (23.5
requests/s on main); BoundedServer sends an answer in one.
"""

from __future__ import annotations

import argparse
import http.client
import json
import resource
import socket
import statistics
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from fleetbeat.collector import http as collector_http
from fleetbeat.collector.config import parse_collector_config
from fleetbeat.collector.fleet import Fleet

BODY = json.dumps({"status": "ok"}).encode()


class StdlibHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Stdlib:
    def __init__(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), StdlibHandler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Fleetbeat:
    def __init__(self) -> None:
        config = parse_collector_config({"collector": {"http_listen": "127.0.0.1:0"}}, "bench")
        self.server = collector_http.start(Fleet(config.collector), config)
        self.port = self.server.port

    def close(self) -> None:
        self.server.close()


def poll(port: int, seconds: float) -> tuple[float, float, float]:
    """(requests/s, median ms, p99 ms) of GET /healthz on one keep-alive connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    lat = []
    end = time.perf_counter() + seconds
    while (t0 := time.perf_counter()) < end:
        conn.request("GET", "/healthz", headers={"Host": "localhost"})
        resp = conn.getresponse()
        resp.read()
        lat.append(time.perf_counter() - t0)
    conn.close()
    lat.sort()
    return len(lat) / seconds, statistics.median(lat) * 1e3, lat[int(len(lat) * 0.99)] * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--idle", type=int, default=1000)
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 2 * args.idle + 512)), hard))
    print(f"{'server':10} {'idle':>5} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'threads':>7}")
    for cls in (Stdlib, Fleetbeat):
        server = cls()
        for idle in (0, args.idle):
            held = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(idle)]
            time.sleep(0.5)  # let the server accept them (and the stdlib start its threads)
            rate, p50, p99 = poll(server.port, args.seconds)
            threads = threading.active_count()
            print(f"{cls.__name__:10} {idle:5d} {rate:8.0f} {p50:7.2f} {p99:7.2f} {threads:7d}")
            for sock in held:
                sock.close()
        server.close()


if __name__ == "__main__":
    main()
