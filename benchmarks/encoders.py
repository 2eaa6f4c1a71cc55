"""Encoding throughput of each encoder for a typical system reading and heartbeat.

Run: .venv/bin/python benchmarks/encoders.py [--seconds 0.5] [--repeat 5]

Prints messages encoded per second for every encoder and its ratio to the JSON
encoder (wire v1) measured in the same run: on a shared machine only the ratios
mean anything. Rounds interleave the encoders; the best of `--repeat` is kept.
"""

from __future__ import annotations

import argparse
import functools
import time
from typing import Any, Callable

from fleetbeat.outputs.base import Identity, Outgoing
from fleetbeat.registry import ENCODERS, encoder_class

IDENTITY = Identity(
    dev="pi-kitchen",
    run="9f1c2a7b3d4e5f60",
    boot_time=1764150000,
    version="0.1.0",
    tags={"site": "kitchen", "rack": "2"},
)

# What the system sensor reports on a Raspberry Pi with wired and wireless networking.
SYSTEM_READING = {
    "cpu": 3.5,
    "load1": 0.42,
    "load5": 0.31,
    "load15": 0.25,
    "mem": 41.2,
    "mem_avail": 2231943168,
    "swap": 0.0,
    "disk.root": 37.9,
    "net.eth0.rx": 1532.4,
    "net.eth0.tx": 812.9,
    "net.eth0.rx_err": 0,
    "net.eth0.tx_err": 0,
    "net.wlan0.rx": 12.5,
    "net.wlan0.tx": 3.25,
    "net.wlan0.rx_err": 0,
    "net.wlan0.tx_err": 0,
    "temp": 48.3,
    "uptime": 10000.12,
    "procs": 173,
    "throttled": 0,
    "undervoltage": 0,
    "freq_capped": 0,
    "throttling": 0,
    "soft_temp_limit": 0,
    "undervoltage_seen": 0,
}


def messages() -> dict[str, Outgoing]:
    return {
        "reading": Outgoing("rd", ts=1764160000.123, src="system", metrics=SYSTEM_READING),
        "heartbeat": Outgoing(
            "hb",
            ts=1764160000.123,
            interval=10.0,
            drop=0,
            metrics={"cpu": 3.5, "mem": 41.2, "temp": 48.3},
        ),
    }


def calibrate(encode: Callable[[], Any], seconds: float) -> int:
    """How many calls take about `seconds`."""
    n = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(n):
            encode()
        took = time.perf_counter() - t0
        if took >= seconds / 5:
            return max(1, int(n * seconds / took))
        n *= 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.3, help="length of one timing")
    parser.add_argument("--repeat", type=int, default=7, help="rounds (best kept per encoder)")
    args = parser.parse_args()
    seq = iter(range(1 << 62)).__next__
    names = list(ENCODERS)  # json first: the baseline
    print(f"{len(SYSTEM_READING)}-metric system reading, 3-metric heartbeat, 2 tags, limit 1432")
    print(
        f"{'kind':<10} {'encoder':<10} {'msgs/s':>10} {'vs json':>8} {'datagrams':>9} {'bytes':>6}"
    )
    for kind, msg in messages().items():
        calls: dict[str, tuple[Callable[[], Any], int]] = {}
        best = dict.fromkeys(names, 0.0)
        shape: dict[str, tuple[int, int]] = {}
        for name in names:
            encoder = encoder_class(name)(IDENTITY, prefix="fleetbeat")
            payloads, too_large = encoder.encode(msg, seq, 1432)
            assert too_large == 0
            shape[name] = (len(payloads), sum(len(p) for p in payloads))
            call = functools.partial(encoder.encode, msg, seq, 1432)
            calls[name] = (call, calibrate(call, args.seconds))
        # rounds interleave the encoders, so a change in machine load hits them all alike
        for _ in range(args.repeat):
            for name, (call, n) in calls.items():
                t0 = time.perf_counter()
                for _ in range(n):
                    call()
                best[name] = max(best[name], n / (time.perf_counter() - t0))
        for name in names:
            count, size = shape[name]
            ratio = best[name] / best["json"]
            print(f"{kind:<10} {name:<10} {best[name]:>10,.0f} {ratio:>7.2f}x {count:>9} {size:>6}")


if __name__ == "__main__":
    main()
