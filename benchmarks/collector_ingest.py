"""Collector ingest: heartbeats fully processed per second on one core, against bare recvfrom.

A sender in another process (pinned to another CPU when there is one) sends
realistic wire v1 heartbeats from DEVICES devices, seq counting up per device, as
fast as it can to a loopback UDP port. In the same run we measure:

- baseline: a bare `recvfrom` loop that only counts datagrams;
- collector: the real `UdpReceiver` thread feeding a real `Fleet` (parse,
  validate, update state, loss), the work `fleetbeat collector` does per datagram;
- old validation: the same, with wire.parse_fields as it was before issue 10's
  stricter checks (read from git at OLD_WIRE) swapped in, for the cost of the checks.

Both phases alternate (ROUNDS times) and the best of each is reported with the
ratio, per wall-clock second and per CPU second of the receiving process (the
machine is shared: CPU time is what "on one core" means when other processes
take turns on it). Run: .venv/bin/python benchmarks/collector_ingest.py [seconds-per-phase]
"""

from __future__ import annotations

import multiprocessing as mp
import os
import socket
import subprocess
import sys
import time
import types
from typing import Any, Callable, Optional

from fleetbeat import wire
from fleetbeat.collector.config import CollectorSection
from fleetbeat.collector.fleet import Fleet
from fleetbeat.collector.receivers.udp import UdpReceiver, bind_udp

DEVICES = 1000
ROUNDS = 3
TARGET = 80_000


OLD_WIRE = "3b25ec4"  # the commit before issue 10's stricter checks (wire.py as it was)


def old_parse_fields() -> Optional[Callable[..., dict[str, Any]]]:
    """wire.parse_fields as it was at OLD_WIRE, read from git; None outside a checkout."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        source = subprocess.run(
            ["git", "-C", root, "show", f"{OLD_WIRE}:src/fleetbeat/wire.py"],
            capture_output=True, check=True, text=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None
    old = types.ModuleType("old_wire")
    exec(compile(source, "old_wire.py", "exec"), old.__dict__)  # noqa: S102 - our own file
    old.json_parser()
    old.__dict__["WireError"] = wire.WireError  # so Fleet.receive counts its rejections
    return old.parse_fields  # type: ignore[no-any-return]


def pin(cpu: int) -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {cpu % (os.cpu_count() or 1)})


def sender(port: int, stop: Any) -> None:
    """Blast heartbeats: seq goes up by one per device per round."""
    pin(1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    templates = []
    for i in range(DEVICES):
        msg = {"v": 1, "k": "hb", "dev": f"pi-{i:05d}", "run": f"{i:016x}", "seq": 999999999,
               "ts": time.time(), "int": 10, "bt": 1764150000, "ver": "0.1.0", "drop": 0,
               "tags": {"site": f"site-{i % 20}", "rack": str(i % 7)},
               "m": {"cpu": 3.5 + i % 50, "mem": 41.2, "temp": 48.3}}  # fmt: skip
        head, tail = wire.dumps(msg).split(b"999999999")
        templates.append((head, tail))
    dest = ("127.0.0.1", port)
    sendto = sock.sendto
    seq = 0
    while not stop.is_set():
        s = str(seq).encode()
        for head, tail in templates:
            try:  # noqa: SIM105 - contextlib.suppress would cost more per datagram
                sendto(head + s + tail, dest)
            except OSError:
                pass
        seq += 1


Rate = tuple[float, float]  # (per wall-clock second, per CPU second of this process)


def bare(sock: socket.socket, seconds: float) -> Rate:
    """Datagrams per second a loop that does nothing but recvfrom reaches."""
    recvfrom = sock.recvfrom
    n = 0
    end = time.perf_counter() + seconds
    start, cpu = time.perf_counter(), time.process_time()
    while True:
        recvfrom(65536)
        n += 1
        if n & 1023 == 0 and time.perf_counter() >= end:
            break
    return n / (time.perf_counter() - start), n / (time.process_time() - cpu)


def collector(
    port: int, seconds: float, parser: str, old: Optional[Callable[..., Any]] = None
) -> tuple[Rate, Fleet]:
    """Heartbeats per second the collector's receiver thread + Fleet fully process."""
    wire._fast_loads = wire._std_loads if parser == "json" else None
    assert wire.json_parser() == parser
    new_parse = wire.parse_fields
    if old is not None:
        old.__globals__["_fast_loads"] = wire._fast_loads  # the same JSON parser
        wire.parse_fields = old  # Fleet.receive looks it up at every call
    try:
        return _collector(port, seconds)
    finally:
        wire.parse_fields = new_parse


def _collector(port: int, seconds: float) -> tuple[Rate, Fleet]:
    fleet = Fleet(CollectorSection())
    rx = UdpReceiver(fleet=fleet, config=fleet.config,
                     sock=bind_udp(f"127.0.0.1:{port}", 4 << 20))  # fmt: skip
    rx.start()
    time.sleep(0.5)  # warm up: every device known
    a0, t0, c0 = fleet.stats()["accepted"]["udp"], time.perf_counter(), time.process_time()
    time.sleep(seconds)
    a1, t1, c1 = fleet.stats()["accepted"]["udp"], time.perf_counter(), time.process_time()
    rx.close()
    return ((a1 - a0) / (t1 - t0), (a1 - a0) / (c1 - c0)), fleet


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 3.0
    pin(0)  # the receiving side gets one core
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    stop = mp.Event()
    proc = mp.Process(target=sender, args=(port, stop), daemon=True)
    parsers = ["orjson", "json"] if wire.json_parser() == "orjson" else ["json"]
    bare_rates: list[Rate] = []
    col_rates: dict[str, list[Rate]] = {p: [] for p in parsers}
    old_rates: dict[str, list[Rate]] = {p: [] for p in parsers}
    old = old_parse_fields()
    fleet = None
    try:
        proc.start()
        for _ in range(ROUNDS):
            sock = bind_udp(f"127.0.0.1:{port}", 4 << 20)
            bare(sock, 0.3)
            bare_rates.append(bare(sock, seconds))
            sock.close()
            for parser in parsers:
                rate, fleet = collector(port, seconds, parser)
                col_rates[parser].append(rate)
                if old is not None:
                    old_rates[parser].append(collector(port, seconds, parser, old)[0])
    finally:
        stop.set()
        proc.join(5)
        if proc.is_alive():
            proc.kill()
    print(f"{DEVICES} devices; {ROUNDS} rounds of {seconds} s per phase")
    for label, i in (("per wall-clock second", 0), ("per CPU second (one core)", 1)):
        b = max(r[i] for r in bare_rates)
        print(f"{label}:")
        print(
            f"  bare recvfrom loop:        {b:>9,.0f} datagrams/s  (rounds: "
            + ", ".join(f"{r[i]:,.0f}" for r in bare_rates)
            + ")"
        )
        for parser, rates in col_rates.items():
            c = max(r[i] for r in rates)
            print(
                f"  collector, {parser:6s} parser: {c:>9,.0f} heartbeats/s (rounds: "
                + ", ".join(f"{r[i]:,.0f}" for r in rates)
                + ")"
            )
            ratio_old = ""
            if old_rates[parser]:
                o = max(r[i] for r in old_rates[parser])
                print(
                    f"    old validation: {o:>9,.0f} heartbeats/s (rounds: "
                    + ", ".join(f"{r[i]:,.0f}" for r in old_rates[parser])
                    + ")"
                )
                ratio_old = f"; to the old validation: {c / o:.2f}"
            print(
                f"    ratio to bare: {c / b:.2f}{ratio_old}; target {TARGET:,}/s "
                + ("met" if c >= TARGET else "NOT met")
            )
    if fleet is not None:
        s = fleet.stats()
        print(f"last round: {s['devices_known']} devices, rejected {s['rejected'] or 'none'}")


if __name__ == "__main__":
    main()
