"""`fleetbeat simulate` as a capacity tool: 100,000 devices at a 10 s interval on one core.

Runs the simulator's real schedule (`simulate.Fleet.run`) for SECONDS against a
loopback UDP sink and reports the CPU it used, as a share of one core and per
heartbeat, against a bare loop that sends the same number of same-sized datagrams
through the same kind of socket, measured in the same run (the machine is shared:
the ratio means more than the absolute figure). Signed (`--key-dir`) is measured too.
Run: .venv/bin/python benchmarks/simulate.py [devices] [seconds]
"""

from __future__ import annotations

import contextlib
import socket
import sys
import tempfile
import time

from fleetbeat import simulate, simulate_send

DEVICES = 100_000
INTERVAL = 10.0


def sink() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    return s  # never read: the kernel drops what overflows, the sender never waits


def run_simulator(n: int, seconds: float, key_dir: str | None) -> tuple[float, int, int]:
    rx = sink()
    fleet = simulate.Fleet(n, interval=INTERVAL, key_dir=key_dir, seed=1)
    udp = simulate_send.UdpTransport("127.0.0.1", rx.getsockname()[1])
    cpu0 = time.process_time()
    fleet.run(udp, seconds=seconds)
    cpu = time.process_time() - cpu0
    size = len(fleet.heartbeat(fleet.devices[0], time.time()))
    rx.close()
    return cpu, udp.snapshot()["sent"], size


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


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else DEVICES
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 30.0
    print(f"{n:,} devices every {INTERVAL:g} s = {n / INTERVAL:,.0f} heartbeats/s, "
          f"{seconds:g} s per run")  # fmt: skip
    with tempfile.TemporaryDirectory() as keys:
        for label, key_dir in (("unsigned", None), ("signed", keys)):
            cpu, sent, size = run_simulator(n, seconds, key_dir)
            base = bare_loop(sent, size)
            print(f"{label:9s} sent {sent:,} ({size} B each): CPU {cpu:.2f} s = "
                  f"{100 * cpu / seconds:.1f}% of one core, {1e6 * cpu / max(sent, 1):.2f} us "
                  f"a heartbeat; bare send loop {1e6 * base / max(sent, 1):.2f} us "
                  f"(ratio {cpu / max(base, 1e-9):.2f})")  # fmt: skip


if __name__ == "__main__":
    main()
