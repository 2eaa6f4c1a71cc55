"""`fleetbeat simulate`: a fleet of N devices from one process, for demos and capacity tests.

One schedule and one connection, no thread per device: every device has a fixed
offset within the interval (like the agent's jitter), the devices are sorted by it,
and the loop walks that list cycle after cycle, sleeping until the next due time,
handing each message to a `Transport` (`simulate_send`: UDP, MQTT or HTTP), which
sends it at once or drops and counts it, as the agent's outputs do. Each message is
wire v1 as the agent sends it (signed with the device's key when `--key-dir` is
given), so the collector cannot tell a simulated device from a real one. Faults are
drawn once per device at start, from `--seed`:

- `--loss P`: each device loses heartbeats with its own probability, drawn uniformly
  from [0, 2P] (so the fleet's mean is P); a lost heartbeat consumes its seq, as a
  message lost on the network does.
- `--dead K`: K devices fall silent for good after 3 to 10 intervals.
- `--flaky K`: K devices repeatedly drop out for 3 to 8 intervals, then come back
  (same run: a network outage, not a restart).
- `--reboot K`: K devices reboot every 20 to 40 intervals: a `bye` (the agent's on
  shutdown, so the device is `offline`), 1 to 3 intervals of silence, then a new run
  and boot time.
- `--offline K`: K devices stop cleanly after 3 to 10 intervals: a `bye`, then
  silence (`offline`, a planned stop, not `down`).

A `bye` is never withheld by `--loss` (which loses heartbeats only); a transport may
still drop it.
"""

from __future__ import annotations

import os
import random
import time
from typing import Any, Callable, Optional, Protocol

from fleetbeat import keys, wire
from fleetbeat.hmac_sha256 import HmacSha256

VERSION = "sim"
NEVER = float("inf")


class Transport(Protocol):
    """Where the simulated fleet's messages go (`simulate_send` has UDP, MQTT and HTTP)."""

    name: str

    def start(self) -> None:
        """Begin connecting (in the background); never blocks."""

    def ready(self) -> bool:
        """True once messages can go out (UDP: at once; MQTT, HTTP: once connected)."""

    def send(self, dev: str, payload: bytes) -> None:
        """Send `dev`'s message now, or drop and count it; never blocks, never raises."""

    def snapshot(self) -> dict[str, Any]:
        """{"sent": n, "dropped": n, "by_reason": {reason: n}} so far."""

    def close(self) -> None:
        """Stop; what has not reached the socket by then is dropped."""


class SimDevice:
    """One simulated device: its identity, its faults and its seq stream."""

    __slots__ = ("boot_time", "booting_until", "dead_at", "dev", "down_until", "flaky", "gone",
                 "loss", "mac", "next_reboot", "offline_at", "offset", "prefix", "run", "seq",
                 "static", "tags", "withheld")  # fmt: skip

    def __init__(self, dev: str, tags: dict[str, str], rng: random.Random, interval: float) -> None:
        self.dev = dev
        self.tags = tags
        self.offset = rng.random() * interval
        self.loss = 0.0
        self.dead_at = NEVER  # cycle after which it never sends again
        self.offline_at = NEVER  # cycle at which it says bye and stops (--offline)
        self.gone = False  # it said that bye
        self.flaky = False
        self.down_until = -1  # cycle before which a flaky device is silent
        self.next_reboot = NEVER
        self.booting_until = -1  # cycle before which a rebooting device is silent
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
                 flaky: int = 0, reboot: int = 0, offline: int = 0,
                 sites: tuple[str, ...] = (), tag_key: str = "site",
                 key_dir: Optional[str] = None, seed: int = 0, prefix: str = "sim",
                 clock: Callable[[], float] = time.time) -> None:  # fmt: skip
        if min(dead, flaky, reboot, offline) < 0:
            raise ValueError("--dead, --flaky, --reboot and --offline cannot be negative")
        if dead + flaky + reboot + offline > n:
            raise ValueError("--dead + --flaky + --reboot + --offline is more than --devices")
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
        faulty = iter(self.rng.sample(range(n), dead + flaky + reboot + offline))
        for _ in range(dead):
            self.devices[next(faulty)].dead_at = self.rng.randint(3, 10)
        for _ in range(flaky):
            self.devices[next(faulty)].flaky = True
        for _ in range(reboot):
            self.devices[next(faulty)].next_reboot = self.rng.randint(20, 40)
        for _ in range(offline):
            self.devices[next(faulty)].offline_at = self.rng.randint(3, 10)
        if key_dir is not None:
            self._load_keys(key_dir)
        self.devices.sort(key=lambda d: d.offset)
        self.withheld = 0  # not sent on purpose (--loss, dead, flaky, offline, rebooting)

    def _load_keys(self, key_dir: str) -> None:
        """Each device's key from key_dir/<id>, created (0600) when missing."""
        os.makedirs(key_dir, mode=0o700, exist_ok=True)
        for d in self.devices:
            path = os.path.join(key_dir, d.dev)
            if not os.path.exists(path):
                keys.write_key_file(path, keys.new_key())
            d.mac = HmacSha256(keys.read_key_file(path))

    def heartbeat(self, d: SimDevice, ts: float, *, kind: bytes = b"hb") -> bytes:
        """The device's next heartbeat (or `bye`), its seq drawn, signed when it has a key."""
        rng = self.rng
        prefix = d.prefix if kind == b"hb" else d.prefix.replace(b'"k":"hb"', b'"k":"bye"', 1)
        body = b"%s%d,\"ts\":%.3f%s,\"m\":{\"cpu\":%.1f,\"mem\":%.1f,\"temp\":%.1f}}" % (
            prefix, d.seq, ts, d.static, rng.random() * 30, 30 + rng.random() * 20,
            40 + rng.random() * 15,
        )  # fmt: skip
        d.seq += 1
        return wire.sign(body, d.mac) if d.mac is not None else body

    def due(self, d: SimDevice, cycle: int, ts: float) -> Optional[bytes]:
        """What `d` sends at `cycle`: a heartbeat, a bye, or None when it stays silent."""
        if cycle >= d.dead_at or d.gone:
            return None
        if cycle >= d.offline_at:  # a planned stop: bye, then silence for good
            d.gone = True
            return self.heartbeat(d, ts, kind=b"bye")
        if cycle >= d.next_reboot:
            if d.booting_until < 0:  # shutting down: the agent's bye, then silent while it boots
                d.booting_until = cycle + self.rng.randint(1, 3)
                return self.heartbeat(d, ts, kind=b"bye")
            if cycle < d.booting_until:
                return None
            d.booting_until = -1
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

    def run(self, transport: Transport, *, seconds: float,
            sleep: Callable[[float], Any] = time.sleep,
            monotonic: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        """Send on schedule for `seconds` (until a KeyboardInterrupt when infinite)."""
        send = transport.send
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
                    self.withheld += 1
                else:
                    send(d.dev, payload)
            cycle += 1
            # behind by more than a whole cycle (a slow machine): skip, as the agent does
            behind = int((monotonic() - start) / self.interval) - cycle
            if behind > 0:
                cycle += behind
