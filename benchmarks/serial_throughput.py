"""Serial sensor throughput: kv lines written to a pty -> parse -> sample -> encode -> UDP.

Two measurements over the same pty in the same run, each repeated `--rounds` times:

- baseline: a bare pyserial read loop (read(1) + read(in_waiting), counting newlines);
- sensor only: a `SerialSensor` reading and parsing the lines, emitting to a counter
  (where the serial code's own cost ends and the shared pipeline's begins);
- end to end: a real `Agent` with one serial sensor (format kv, no sampling, so every
  line becomes one wire v1 datagram) and one UDP output to a loopback receiver.

The process doing the reading (and, end to end, parsing, encoding and sending) is pinned
to one core; the "device" (pty writer) and the UDP receiver run in a child process pinned
to another core when there is one. Prints lines/s for both and their ratio.

Usage: .venv/bin/python benchmarks/serial_throughput.py [--lines 100000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import socket
import statistics
import threading
import time
import tty
from typing import Any

from fleetbeat.agent.config import parse_agent_config

CHUNK_LINES = 500


def line(i: int) -> bytes:
    return f"temp={20 + i % 10}.5 hum={40 + i % 7} n={i}\n".encode()


def pin(cpu: int) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpus[cpu % len(cpus)]})


def device(master: int, n: int, receive: bool, conn: Any) -> None:
    """The child: write n lines on the pty master; optionally count UDP datagrams."""
    pin(1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:  # SO_RCVBUFFORCE (33) passes rmem_max when root: the receiver must not be the limit
        sock.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), 32 << 20)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 << 20)
    sock.bind(("127.0.0.1", 0))
    conn.send(sock.getsockname()[1])
    conn.recv()  # go
    chunks = [b"".join(line(i) for i in range(s, min(n, s + CHUNK_LINES)))
              for s in range(0, n, CHUNK_LINES)]  # fmt: skip

    def write() -> None:
        for chunk in chunks:
            view = memoryview(chunk)
            while view:
                view = view[os.write(master, view) :]

    t0 = time.perf_counter()
    writer = threading.Thread(target=write)
    writer.start()
    received, last = 0, t0
    if receive:
        sock.settimeout(1.0)
        try:
            while received < n:
                sock.recv(2048)
                received += 1
                last = time.perf_counter()
        except socket.timeout:
            pass
    writer.join()
    conn.send((received, last - t0, time.perf_counter() - t0))


def start_device(master: int, n: int, receive: bool) -> tuple[Any, Any, int]:
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=device, args=(master, n, receive, child), daemon=True)
    proc.start()
    return proc, parent, parent.recv()


def bare_read(path: str, master: int, n: int) -> float:
    """Lines/s of a bare pyserial loop reading n lines from the pty."""
    import serial

    proc, conn, _ = start_device(master, n, receive=False)
    port = serial.Serial(path, timeout=0.2)
    seen = 0
    conn.send("go")
    t0 = time.perf_counter()
    while seen < n:
        data = port.read(1)
        if data:
            waiting = port.in_waiting
            if waiting:
                data += port.read(waiting)
            seen += data.count(b"\n")
        elif time.perf_counter() - t0 > 30:
            raise RuntimeError(f"bare read stalled at {seen} lines")
    elapsed = time.perf_counter() - t0
    port.close()
    conn.recv()
    proc.join(5)
    return n / elapsed


def sensor_only(path: str, master: int, n: int) -> float:
    """Lines/s of the serial sensor alone: read, split, decode, parse; emit to a counter."""
    from fleetbeat.sensors.serial_port import SerialConfig, SerialSensor

    proc, conn, _ = start_device(master, n, receive=False)
    sensor = SerialSensor(SerialConfig(name="bench", port=path))
    emitted = [0]

    def emit(metrics: dict[str, float]) -> None:
        emitted[0] += 1

    sensor.start(emit)
    wait_open(sensor)
    conn.send("go")
    t0 = time.perf_counter()
    while emitted[0] < n and time.perf_counter() - t0 < 60:
        time.sleep(0.001)
    elapsed = time.perf_counter() - t0
    sensor.stop()
    conn.recv()
    proc.join(5)
    return emitted[0] / elapsed


def wait_open(sensor: Any) -> None:
    deadline = time.monotonic() + 5
    while sensor.state != "open" and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)  # past the sensor's mid-line guard window after opening


def end_to_end(path: str, master: int, n: int) -> tuple[float, int, int]:
    """Lines/s from pty to received datagram through a real Agent; also lines and drops."""
    from fleetbeat.agent.runtime import Agent

    proc, conn, rx_port = start_device(master, n, receive=True)
    doc = {
        "agent": {"device_id": "bench", "heartbeat_interval": "1h", "jitter": 0},
        "sensors": {
            "system": {"enabled": False},
            "serial": [{"name": "bench", "port": path, "format": "kv", "max_line": 4096}],
        },
        "outputs": {"udp": [{"host": "127.0.0.1", "port": rx_port}]},
    }
    agent = Agent(parse_agent_config(doc, "<benchmark>"))
    agent.start()
    sensor = agent.sensors[0]
    wait_open(sensor)
    conn.send("go")
    received, elapsed, _ = conn.recv()
    lines = sensor.lines
    agent.shutdown()
    proc.join(5)
    if received == 0:
        raise RuntimeError(f"no datagram received; sensor errors: {sensor.errors.by_reason}")
    return received / elapsed, lines, n - received


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    pin(0)
    master, slave = os.openpty()
    tty.setraw(slave)
    path = os.ttyname(slave)
    bare: list[float] = []
    alone: list[float] = []
    e2e: list[float] = []
    try:
        for r in range(args.rounds):
            bare.append(bare_read(path, master, args.lines))
            alone.append(sensor_only(path, master, args.lines))
            rate, lines, lost = end_to_end(path, master, args.lines)
            e2e.append(rate)
            print(f"round {r + 1}: bare pyserial {bare[-1]:,.0f}; sensor only {alone[-1]:,.0f}; "
                  f"end to end {rate:,.0f} lines/s ({lines:,} lines read, {lost:,} not "
                  "received)")  # fmt: skip
    finally:
        os.close(slave)
        os.close(master)
    b, a, e = statistics.median(bare), statistics.median(alone), statistics.median(e2e)
    print(f"lines per round: {args.lines:,}; cpus: {os.cpu_count()}; reader pinned to one core")
    print(f"bare pyserial read loop : {b:12,.0f} lines/s (median of {args.rounds})")
    print(f"sensor only (parse)     : {a:12,.0f} lines/s (median of {args.rounds})")
    print(f"end to end kv -> UDP    : {e:12,.0f} lines/s (median of {args.rounds})")
    print(f"ratio sensor only / bare: {a / b:12.3f}")
    print(f"ratio end to end / bare : {e / b:12.3f}")
    print(f"target >= 20,000 lines/s: {'met' if e >= 20_000 else 'NOT met'}")


if __name__ == "__main__":
    main()
