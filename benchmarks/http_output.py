"""HTTP output benchmarks: agent RSS, sampling-side send() cost, worker CPU per message.

Each figure comes with its baseline from the same run (this machine is shared
and noisy: one absolute time means little):

- RSS of a real agent with one UDP output, with a UDP plus an HTTP output (to a
  local server), and with a UDP plus an https output, after the same warm-up;
- the sampling side's `send()`: an HTTP hand-over (connected, nothing pending)
  against a UDP `send()` of the same payload; target <= 20x;
- the worker thread's CPU per message (its own /proc task counters), posting to
  a local BoundedServer answering 204.

    .venv/bin/python benchmarks/http_output.py [--messages 5000]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from fleetbeat.collector.httpserver import BoundedServer, Response  # noqa: E402
from fleetbeat.config.schema import Problems, load_table  # noqa: E402
from fleetbeat.outputs.base import Identity  # noqa: E402
from fleetbeat.outputs.http_post import HttpConfig, HttpOutput  # noqa: E402
from fleetbeat.outputs.udp import UdpConfig, UdpOutput  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
IDENTITY = Identity(dev="bench", run="0" * 16, boot_time=0, version="b", tags={})
PAYLOAD = (
    b'{"v":1,"k":"hb","dev":"pi-kitchen","run":"9f1c2a7b3d4e5f60","seq":42,"ts":1764160000.123,'
    b'"int":10,"bt":1764150000,"ver":"0.1.0","drop":0,"tags":{"site":"kitchen"},'
    b'"m":{"cpu":3.5,"mem":41.2,"temp":48.3}}'
)


def serve() -> BoundedServer:
    return BoundedServer(lambda req: Response(204), host="127.0.0.1", port=0, name="bench")


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def agent_rss(config: str, settle: float) -> int:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "agent.toml"
        path.write_text(config)
        cmd = [sys.executable, "-m", "fleetbeat", "agent", "-c", str(path)]
        proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(settle)  # a fixed warm-up on purpose: both agents get the same one
            return rss_kib(proc.pid)
        finally:
            proc.kill()
            proc.wait()


def http_output(url: str) -> HttpOutput:
    problems = Problems("bench")
    out = HttpOutput(load_table(HttpConfig, {"url": url}, "http", problems), identity=IDENTITY)
    out.start()
    return out


def wait_ready(out: HttpOutput) -> None:
    while not out.ready():
        time.sleep(0)  # yield the GIL to the worker


def task_cpu(tid: int) -> float:
    """CPU seconds (user + system) of one thread of this process."""
    with open(f"/proc/self/task/{tid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--settle", type=float, default=5.0)
    args = parser.parse_args()

    server = serve()
    url = f"http://127.0.0.1:{server.port}/ingest"
    base = ('[agent]\njitter = 0\nheartbeat_interval = "1s"\n[sensors.system]\ninterval = "1s"\n'
            '[[outputs.udp]]\nport = 9\n')  # fmt: skip
    udp_only = agent_rss(base, args.settle)
    with_http = agent_rss(base + f'[[outputs.http]]\nurl = "{url}"\n', args.settle)
    # https loads ssl (a refused port: the import happens at start, before any connect)
    with_https = agent_rss(base + '[[outputs.http]]\nurl = "https://127.0.0.1:9/"\n', args.settle)
    print(f"agent RSS: UDP only {udp_only / 1024:.1f} MiB; UDP + HTTP {with_http / 1024:.1f} MiB "
          f"(+{(with_http - udp_only) / 1024:.2f} MiB); UDP + HTTPS {with_https / 1024:.1f} MiB "
          f"(+{(with_https - udp_only) / 1024:.2f} MiB)")  # fmt: skip

    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    udp = UdpOutput(UdpConfig(port=sink.getsockname()[1]), identity=IDENTITY)
    out = http_output(url)
    wait_ready(out)
    worker = next(t for t in threading.enumerate() if t.name.startswith("http 127"))
    tid = worker.native_id
    assert tid is not None
    udp_times, http_times = [], []
    cpu_before = task_cpu(tid)
    clock = time.perf_counter
    for i in range(args.messages):
        t0 = clock()
        udp.send(PAYLOAD)
        t1 = clock()
        udp_times.append(t1 - t0)
        if i % 64 == 0:
            while True:  # keep the sink from filling (then UDP would drop, faster)
                try:
                    sink.recv(65536, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    break
        wait_ready(out)
        t0 = clock()
        out.send(PAYLOAD)
        t1 = clock()
        http_times.append(t1 - t0)
    wait_ready(out)
    cpu = task_cpu(tid) - cpu_before
    assert out.tally.sent == args.messages, out.tally.snapshot()
    udp_med = statistics.median(udp_times)
    http_med = statistics.median(http_times)
    print(f"send() on the sampling side, median of {args.messages}: UDP {udp_med * 1e6:.1f} us, "
          f"HTTP hand-over {http_med * 1e6:.1f} us: {http_med / udp_med:.1f}x (target <= 20x); "
          f"slowest HTTP {max(http_times) * 1e3:.2f} ms")  # fmt: skip
    print(f"worker CPU per message: {cpu / args.messages * 1e6:.0f} us "
          f"({cpu:.2f} s for {args.messages} POSTs, 204 each, one keep-alive connection, "
          f"{out.connects} connect(s))")  # fmt: skip
    out.close()
    udp.close()
    sink.close()
    server.close()


if __name__ == "__main__":
    main()
