"""`fleetbeat simulate` as a capacity tool: its CPU per message over UDP, MQTT and HTTP.

Runs the simulator's real schedule (`simulate.Fleet.run`) for SECONDS per transport
and reports messages/s offered and sent, what was dropped, and the CPU this process
used (the scheduler and the transport's threads) as a share of one core and per
message; every figure beside UDP's from the same run (the machine is shared: the
ratio means more than the absolute figure):

1. UDP, 100,000 devices at a 10 s interval, to a loopback socket nobody reads,
   unsigned and signed (`--key-dir`), against a bare loop sending as many same-sized
   datagrams through the same kind of socket.
2. MQTT, the same fleet, to a real mosquitto with no subscriber (the broker reads and
   discards, as the UDP sink's kernel does): one connection, QoS 0.
3. HTTP to a real collector's HTTP ingest (`http_ingest_listen`), one request in
   flight per connection: 2,000 devices (200 POSTs/s) on 2 connections, then 10,000
   (1,000/s) on 2 and on 4. Each message is a request and its answer, the collector
   shares the machine, and what arrives while every connection waits for its answer
   is dropped as `busy` (the agent's rule), so the drops measure the round trip.

Run: .venv/bin/python benchmarks/simulate.py [devices] [seconds] [http_devices]
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from fleetbeat import simulate, simulate_send
from mqtt_output import free_port, start_broker

DEVICES = 100_000
HTTP_DEVICES = 10_000
INTERVAL = 10.0


def sink() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    return s  # never read: the kernel drops what overflows, the sender never waits


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 20
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def start_collector(tmp: Path, n: int) -> tuple[subprocess.Popen[bytes], int]:
    ingest, http = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_STREAM)
    (tmp / "c.toml").write_text(f"""[collector]
udp_listen = "127.0.0.1:{free_port(socket.SOCK_DGRAM)}"
http_listen = "127.0.0.1:{http}"
http_ingest_listen = "127.0.0.1:{ingest}"
state_dir = "{tmp / "state"}"
max_devices = {n + 100}
log_level = "warning"
""")
    with open(tmp / "c.log", "w") as log:
        cmd = [sys.executable, "-m", "fleetbeat", "collector", "-c", str(tmp / "c.toml")]
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    wait_port(http, proc, "the collector")
    urllib.request.urlopen(f"http://127.0.0.1:{http}/healthz", timeout=5).close()
    return proc, ingest


def measure(fleet: simulate.Fleet, transport: simulate.Transport, seconds: float) -> dict[str, Any]:
    """Run `fleet` through `transport` for `seconds`: what it sent and the CPU it used."""
    transport.start()
    deadline = time.monotonic() + 10
    while not transport.ready():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{transport.name}: not connected in 10 s")
        time.sleep(0.01)
    cpu0 = time.process_time()
    fleet.run(transport, seconds=seconds)
    cpu = time.process_time() - cpu0
    transport.close()
    snap = transport.snapshot()
    offered = snap["sent"] + snap["dropped"]
    return {"cpu": cpu, "offered": offered, "us": 1e6 * cpu / max(offered, 1), **snap,
            "size": len(fleet.heartbeat(fleet.devices[0], time.time()))}  # fmt: skip


def bare_loop(count: int, size: int) -> float:
    rx = sink()
    send = simulate_send.UdpTransport("127.0.0.1", rx.getsockname()[1]).sock.send
    payload = b"x" * size
    cpu0 = time.process_time()
    for _ in range(count):
        with contextlib.suppress(OSError):  # as the simulator counts a full buffer: lost
            send(payload)
    cpu = time.process_time() - cpu0
    rx.close()
    return cpu


def line(label: str, r: dict[str, Any], seconds: float, udp_us: float, extra: str = "") -> str:
    drops = ", ".join(f"{k} {v:,}" for k, v in sorted(r["by_reason"].items())) or "none"
    offered, sent = r["offered"] / seconds, r["sent"] / seconds
    return (f"{label:13s} {offered:8,.0f} msg/s offered, {sent:8,.0f} "
            f"sent ({r['size']} B), dropped: {drops}; CPU {100 * r['cpu'] / seconds:5.1f}% of one "
            f"core, {r['us']:6.2f} us a message = {r['us'] / udp_us:5.2f}x UDP{extra}")  # fmt: skip


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else DEVICES
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 30.0
    n_http = int(sys.argv[3]) if len(sys.argv) > 3 else HTTP_DEVICES
    print(f"{n:,} devices every {INTERVAL:g} s = {n / INTERVAL:,.0f} heartbeats/s "
          f"(HTTP: {n_http:,} = {n_http / INTERVAL:,.0f}/s), {seconds:g} s per run")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        keys = str(tmp / "keys")
        rx = sink()
        rx_port = rx.getsockname()[1]
        udp = measure(simulate.Fleet(n, interval=INTERVAL, seed=1),
                      simulate_send.UdpTransport("127.0.0.1", rx_port), seconds)  # fmt: skip
        base = 1e6 * bare_loop(udp["sent"], udp["size"]) / max(udp["sent"], 1)
        print(line("udp", udp, seconds, udp["us"], f"; bare send loop {base:.2f} us "
                   f"(ratio {udp['us'] / base:.2f})"))  # fmt: skip
        signed = measure(simulate.Fleet(n, interval=INTERVAL, seed=1, key_dir=keys),
                         simulate_send.UdpTransport("127.0.0.1", rx_port), seconds)  # fmt: skip
        print(line("udp signed", signed, seconds, udp["us"]))
        rx.close()

        broker, port = start_broker(tmp)
        try:
            for label, key_dir in (("mqtt", None), ("mqtt signed", keys)):
                r = measure(simulate.Fleet(n, interval=INTERVAL, seed=1, key_dir=key_dir),
                            simulate_send.MqttTransport("127.0.0.1", port), seconds)  # fmt: skip
                print(line(label, r, seconds, udp["us"]))
        finally:
            broker.terminate()
            broker.wait(5)

        collector, ingest = start_collector(tmp, n_http)
        try:
            # a fifth of the size first: where one request in flight per connection
            # keeps up; then the full size, on 2 and 4 connections
            for size, conns in ((n_http // 5, 2), (n_http, 2), (n_http, 4)):
                fleet = simulate.Fleet(size, interval=INTERVAL, seed=1)
                url = f"http://127.0.0.1:{ingest}/ingest"
                r = measure(fleet, simulate_send.HttpTransport(url, connections=conns), seconds)
                print(line(f"http x{conns}", r, seconds, udp["us"]))
        finally:
            collector.terminate()
            collector.wait(10)


if __name__ == "__main__":
    main()
