"""`fleetbeat simulate`: a fleet of N devices from one process, for demos and capacity tests.

One socket and one schedule, no thread per device: every device has a fixed offset
within the interval (like the agent's jitter), the devices are sorted by it, and the
loop walks that list cycle after cycle, sleeping until the next due time. Each
heartbeat is wire v1 as the agent sends it (signed with the device's key when
`--key-dir` is given), so the collector cannot tell a simulated device from a real
one. Faults are drawn once per device at start, from `--seed`:

- `--loss P`: each device loses heartbeats with its own probability, drawn uniformly
  from [0, 2P] (so the fleet's mean is P); a lost heartbeat consumes its seq, as a
  message lost on the network does.
- `--dead K`: K devices fall silent for good after 3 to 10 intervals.
- `--flaky K`: K devices repeatedly drop out for 3 to 8 intervals, then come back
  (same run: a network outage, not a restart).
- `--reboot K`: K devices reboot every 20 to 40 intervals (a new run and boot time).
"""

from __future__ import annotations

import os
import random
import socket
import time
from typing import Any, Callable, Optional

from fleetbeat import keys, wire
from fleetbeat.hmac_sha256 import HmacSha256

VERSION = "sim"


class SimDevice:
    """One simulated device: its identity, its faults and its seq stream."""

    __slots__ = ("boot_time", "dead_at", "dev", "down_until", "flaky", "loss", "mac",
                 "next_reboot", "offset", "prefix", "run", "seq", "static", "tags",
                 "withheld")  # fmt: skip

    def __init__(self, dev: str, tags: dict[str, str], rng: random.Random, interval: float) -> None:
        self.dev = dev
        self.tags = tags
        self.offset = rng.random() * interval
        self.loss = 0.0
        self.dead_at = float("inf")  # cycle after which it never sends again
        self.flaky = False
        self.down_until = -1  # cycle before which a flaky device is silent
        self.next_reboot = float("inf")
        self.mac: Optional[HmacSha256] = None
        self.seq = 0
        self.withheld = 0  # heartbeats of this run drawn and then lost on purpose (--loss)
        self.run = ""
        self.boot_time = 0
        self.prefix = b""
        self.static = b""

    def new_run(self, rng: random.Random, interval: float, now: float) -> None:
        """A (re)start: a new run id, seq from 0, and on a reboot a new boot time."""
        self.run = f"{rng.getrandbits(64):016x}"
        self.seq = 0
        self.withheld = 0
        self.boot_time = int(now) - rng.randrange(60, 600)
        dev = wire.dumps_str(self.dev)
        self.prefix = f'{{"v":1,"k":"hb","dev":{dev},"run":"{self.run}","seq":'.encode()
        fixed = wire.dumps_str({"int": interval, "bt": self.boot_time, "ver": VERSION,
                                "drop": 0, "tags": self.tags})[1:-1]  # fmt: skip
        self.static = ("," + fixed).encode()


class Fleet:
    """The simulated fleet and its schedule."""

    def __init__(self, n: int, *, interval: float, loss: float = 0.0, dead: int = 0,
                 flaky: int = 0, reboot: int = 0, sites: tuple[str, ...] = (),
                 tag_key: str = "site", key_dir: Optional[str] = None, seed: int = 0,
                 prefix: str = "sim", clock: Callable[[], float] = time.time) -> None:  # fmt: skip
        if dead + flaky + reboot > n:
            raise ValueError("--dead + --flaky + --reboot is more than --devices")
        self.interval = interval
        self.rng = random.Random(seed)
        self.clock = clock
        width = len(str(n))
        self.devices: list[SimDevice] = []
        now = clock()
        for i in range(n):
            tags = {tag_key: sites[i % len(sites)]} if sites else {}
            d = SimDevice(f"{prefix}-{i + 1:0{width}d}", tags, self.rng, interval)
            d.loss = min(1.0, self.rng.uniform(0, 2 * loss)) if loss > 0 else 0.0
            d.new_run(self.rng, interval, now)
            self.devices.append(d)
        faulty = self.rng.sample(range(n), dead + flaky + reboot)
        for i in faulty[:dead]:
            self.devices[i].dead_at = self.rng.randint(3, 10)
        for i in faulty[dead : dead + flaky]:
            self.devices[i].flaky = True
        for i in faulty[dead + flaky :]:
            self.devices[i].next_reboot = self.rng.randint(20, 40)
        if key_dir is not None:
            self._load_keys(key_dir)
        self.devices.sort(key=lambda d: d.offset)
        self.sent = 0  # handed to the socket
        self.lost = 0  # dropped on purpose (--loss, flaky, dead)

    def _load_keys(self, key_dir: str) -> None:
        """Each device's key from key_dir/<id>, created (0600) when missing."""
        os.makedirs(key_dir, mode=0o700, exist_ok=True)
        for d in self.devices:
            path = os.path.join(key_dir, d.dev)
            if not os.path.exists(path):
                keys.write_key_file(path, keys.new_key())
            d.mac = HmacSha256(keys.read_key_file(path))

    def heartbeat(self, d: SimDevice, ts: float) -> bytes:
        """The device's next heartbeat (its seq drawn), signed when it has a key."""
        rng = self.rng
        body = b"%s%d,\"ts\":%.3f%s,\"m\":{\"cpu\":%.1f,\"mem\":%.1f,\"temp\":%.1f}}" % (
            d.prefix, d.seq, ts, d.static, rng.random() * 30, 30 + rng.random() * 20,
            40 + rng.random() * 15,
        )  # fmt: skip
        d.seq += 1
        return wire.sign(body, d.mac) if d.mac is not None else body

    def due(self, d: SimDevice, cycle: int, ts: float) -> Optional[bytes]:
        """What `d` sends at `cycle`: a heartbeat, or None when it stays silent."""
        if cycle >= d.dead_at:
            return None
        if cycle >= d.next_reboot:
            d.new_run(self.rng, self.interval, ts)
            d.next_reboot = cycle + self.rng.randint(20, 40)
        if d.flaky:
            if cycle < d.down_until:
                return None
            if self.rng.random() < 0.05:  # about every 20 intervals, an outage
                d.down_until = cycle + self.rng.randint(3, 8)
                return None
        payload = self.heartbeat(d, ts)
        if d.loss and self.rng.random() < d.loss:
            d.withheld += 1
            return None
        return payload

    def run(self, send: Callable[[bytes], Any], *, seconds: float,
            sleep: Callable[[float], Any] = time.sleep,
            monotonic: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        """Send on schedule for `seconds` (until a KeyboardInterrupt when infinite)."""
        start = monotonic()
        end = start + seconds
        wall0 = self.clock() - start
        cycle = 0
        while True:
            base = start + cycle * self.interval
            for d in self.devices:
                due = base + d.offset
                if due >= end:
                    return
                wait = due - monotonic()
                if wait > 0.001:
                    sleep(wait)
                payload = self.due(d, cycle, wall0 + due)
                if payload is None:
                    self.lost += 1
                    continue
                try:
                    send(payload)
                    self.sent += 1
                except OSError:
                    self.lost += 1  # a full socket buffer: lost like on a real network
            cycle += 1
            # behind by more than a whole cycle (a slow machine): skip, as the agent does
            behind = int((monotonic() - start) / self.interval) - cycle
            if behind > 0:
                cycle += behind


def udp_sender(target: str) -> Callable[[bytes], Any]:
    """A connected, non-blocking UDP socket's send for "host:port" or "[v6]:port"."""
    host, _, port = target.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit():
        raise ValueError(f"--to: expected HOST:PORT, got {target!r}")
    family, kind, proto, _, addr = socket.getaddrinfo(host, int(port), type=socket.SOCK_DGRAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    sock.connect(addr)
    sock.setblocking(False)
    return sock.send
