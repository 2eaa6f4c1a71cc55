"""Fleet state: every device's liveness, loss and last report, and the event log.

THE CONTRACT (read by the HTTP side; kept stable). Every read method is
thread-safe and returns plain JSON-ready data (dicts, lists, str, int, float,
bool, None) that the caller may keep or mutate:

- `Fleet.devices() -> list[dict]`, sorted by id. Each dict has:
    id, state ("up" | "late" | "down" | "offline"), state_since (epoch s),
    last_seen (epoch s of the last message received), addr ("host:port" or
    the MQTT topic prefix + id), transport ("udp" | "mqtt"), run (16 hex),
    boot_time (epoch s or None), interval (s), version (agent version or None),
    tags (dict str -> str), metrics (dict str -> float, from the last
    heartbeat), clock_skew (sender clock minus collector clock at receipt, s),
    restarts, reboots (counted events), agent_drops (the agent's own count
    of messages it dropped locally, from the last heartbeat),
    received, expected, lost, duplicates, reordered (heartbeat stream, all
    runs since the device was first seen: lifetime), loss_pct (lifetime, %),
    recent_loss_pct (over the last few hundred expected heartbeats, %),
    run_received, run_expected, run_lost (the current run only),
    readings_received, readings_lost (the readings stream, lifetime),
    down_after_effective (missed intervals after which the device is called
    down: the configured number, or the loss-aware "auto" value).
  Each dict is consistent; the list is read in chunks of devices, so it is not
  one atomic picture of a big fleet (a device may change between two chunks).
- `Fleet.device(dev_id) -> dict | None`: the same dict for one device.
- `Fleet.events(since=0.0, limit=1000) -> list[dict]`: transitions and
  restarts with time > since, oldest first, at most `limit` (the newest
  ones when more match). Each: time (epoch s), device, from (state or None
  for a new device), to (state), reason (a short label: "first_seen",
  "heartbeat", "late", "missed_heartbeats", "bye", "last_will", "restart",
  "reboot", "silent_through_restart").
- `Fleet.stats() -> dict`: received {"udp": n, "mqtt": n} (datagrams /
  messages that reached the collector, valid or not), accepted {"udp": n,
  "mqtt": n}, rejected {reason: n} (wire reasons from `wire.parse`, plus
  "max_devices", "seq_jump", "topic_mismatch"), devices {state: n for
  every state}, devices_known, max_devices, started_at (epoch s).
- The config object given to `fleetbeat.collector.http.start(fleet, config)`
  is a `CollectorConfig`; `config.http_listen` is the "host:port" to bind.

Loss follows RFC 3550's logic with 64-bit `seq`: within one run, expected =
highest - first + 1, lost = expected - distinct received; a late arrival
lowers `lost`, a duplicate does not count twice (a 128-seq window tells them
apart; an arrival older than that is counted as reordered). A new `run`
starts a new count; lifetime figures add up every run.

Liveness: `up` -> `late` once `late_after` intervals pass without a heartbeat,
-> `down` after `down_after` intervals; `offline` after `bye` or the MQTT
Last Will. `down_after = "auto"` picks, per device, the smallest k >= 3 with
p^k < 1e-6, p being the device's recent loss rate (smoothed), capped by
`max_down_after`: a lossy link gets more patience instead of flapping.
"""

from __future__ import annotations

import collections
import json
import math
import sys
import threading
import time
from typing import Any, Callable, Optional

from fleetbeat import wire
from fleetbeat.collector.config import CollectorSection

STATES = ("up", "late", "down", "offline")
MAX_PLAIN_JUMP = 1000  # seq jumps beyond this (and beyond the time elapsed) are suspect
SEQ_WINDOW = 128  # seqs behind the highest in which a duplicate is told from a late arrival
_WINDOW_MASK = (1 << SEQ_WINDOW) - 1
RECENT_BUCKET = 128  # expected heartbeats per recent-loss bucket (two buckets kept)
FALSE_DOWN_ODDS = 1e-6  # how rarely an alive device may be called down, per interval
MIN_DOWN_AFTER = 3
REBOOT_TOLERANCE = 5.0  # s: boot_time jitter (clock steps) that is not a reboot
MAX_EVENTS_IN_MEMORY = 10_000
LOCK_CHUNK = 500  # devices read per lock hold (~10 ms), so receivers never wait long

Clock = Callable[[], float]


def auto_down_after(lost: int, expected: int, cap: float) -> int:
    """Smallest k >= 3 with p^k < 1e-6, p the smoothed loss rate, at most `cap`."""
    # Laplace smoothing: a device we know little about gets the benefit of the doubt.
    p = (lost + 1) / (expected + 2)
    if p <= 0.0:
        return MIN_DOWN_AFTER
    k = MIN_DOWN_AFTER if p >= 1.0 else math.floor(math.log(FALSE_DOWN_ODDS) / math.log(p)) + 1
    return int(max(MIN_DOWN_AFTER, min(k, cap)))


class SeqTracker:
    """Loss, duplicates and reordering of one seq stream within one run."""

    __slots__ = (
        "duplicates", "expected", "highest", "probe", "received", "reordered", "resync", "seen",
    )  # fmt: skip

    def __init__(self, seq: int) -> None:
        self.highest = seq
        self.seen = 1  # bit i: highest - i was received
        self.received = 1
        self.expected = 1
        self.duplicates = 0
        self.reordered = 0
        self.resync = False
        self.probe = -1  # a seq rejected as an absurd jump; its successor confirms the jump

    def plausible(self, seq: int, elapsed_intervals: float) -> bool:
        """False for an absurd jump (RFC 3550's MAX_DROPOUT idea), unless it is confirmed.

        Forward jumps up to 1000 seqs or twice the intervals elapsed are plausible;
        anything else, and a jump back beyond the duplicate window, is rejected until
        the next seq follows it: then the sender really jumped and counting resyncs.
        """
        jump = seq - self.highest
        if jump > 0:
            if jump <= MAX_PLAIN_JUMP + 2 * elapsed_intervals:
                return True
        elif jump > -SEQ_WINDOW:
            return True
        if self.probe >= 0 and seq == self.probe + 1:
            self.highest = seq - 1
            self.seen = 0
            self.resync = True
            self.probe = -1
            return True
        self.probe = seq
        return False

    def add(self, seq: int) -> int:
        """Count one arrival; return the number of newly expected seqs (0 for old ones).

        -1 means a duplicate.
        """
        gap = seq - self.highest
        if gap > 0:
            if self.resync:  # first arrival after a collector restart: the gap is not network loss
                self.resync = False
                gap = 1
                self.seen = 1
            else:
                self.seen = ((self.seen << gap) | 1) & _WINDOW_MASK if gap < SEQ_WINDOW else 1
            self.highest = seq
            self.expected += gap
            self.received += 1
            return gap
        off = -gap
        if off < SEQ_WINDOW:
            bit = 1 << off
            if self.seen & bit:
                self.duplicates += 1
                return -1
            self.seen |= bit
        self.received += 1
        self.reordered += 1
        return 0

    @property
    def lost(self) -> int:
        return max(0, self.expected - self.received)

    def figures(self) -> tuple[int, int, int, int]:
        return self.received, self.expected, self.duplicates, self.reordered


class Device:
    """One device's state. Slots, not dicts: 100,000 of these must fit in 100 MB."""

    __slots__ = (
        "addr", "agent_drops", "boot_time", "clock_skew", "cur_exp", "cur_lost", "deadline",
        "down_k", "hb", "id", "interval", "last_seen", "metric_names", "metric_values",
        "prev_run", "prior", "rd", "rd_prior", "reboots", "recent_exp", "recent_lost",
        "restarts", "run", "state", "state_since", "tags", "transport", "version",
    )  # fmt: skip

    def __init__(self, dev_id: str, now: float) -> None:
        self.id = dev_id
        self.state = "up"
        self.state_since = now
        self.last_seen = now
        self.addr: Any = ""  # the socket address tuple as received (formatted when read)
        self.transport = "udp"
        self.run = ""
        self.prev_run = ""
        self.boot_time: Optional[float] = None
        self.interval = 10.0
        self.version: Optional[str] = None
        self.tags: dict[str, str] = _NO_TAGS
        self.metric_names: tuple[str, ...] = ()
        self.metric_values: tuple[float, ...] = ()
        self.clock_skew = 0.0
        self.restarts = 0
        self.reboots = 0
        self.agent_drops = 0
        self.hb: Optional[SeqTracker] = None
        self.rd: Optional[SeqTracker] = None
        # lifetime figures of finished runs: received, expected, duplicates, reordered
        self.prior: tuple[int, int, int, int] = _ZERO4
        self.rd_prior: tuple[int, int] = _ZERO2  # readings: received, expected
        # recent loss: lost and expected in the current bucket, and both buckets together
        # (small ints, cached by CPython: four slots cost less than one list)
        self.cur_lost = 0
        self.cur_exp = 0
        self.recent_lost = 0
        self.recent_exp = 0
        self.down_k: float = MIN_DOWN_AFTER  # an int when "auto": small ints are shared
        self.deadline = math.inf  # next time the liveness check has something to do

    def snapshot(self) -> dict[str, Any]:
        hb = self.hb
        run = hb.figures() if hb is not None else (0, 0, 0, 0)
        received, expected, dups, reordered = (a + b for a, b in zip(self.prior, run))
        lost = max(0, expected - received)
        rd_received, rd_expected = self.rd_prior
        if self.rd is not None:
            rd_received += self.rd.received
            rd_expected += self.rd.expected
        return {
            "id": self.id,
            "state": self.state,
            "state_since": self.state_since,
            "last_seen": self.last_seen,
            "addr": _addr_text(self.addr),
            "transport": self.transport,
            "run": self.run,
            "boot_time": self.boot_time,
            "interval": self.interval,
            "version": self.version,
            "tags": dict(self.tags),
            "metrics": dict(zip(self.metric_names, self.metric_values)),
            "clock_skew": self.clock_skew,
            "restarts": self.restarts,
            "reboots": self.reboots,
            "agent_drops": self.agent_drops,
            "received": received,
            "expected": expected,
            "lost": lost,
            "duplicates": dups,
            "reordered": reordered,
            "loss_pct": _pct(lost, expected),
            "recent_loss_pct": _pct(self.recent_lost, self.recent_exp),
            "run_received": run[0],
            "run_expected": run[1],
            "run_lost": max(0, run[1] - run[0]),
            "readings_received": rd_received,
            "readings_lost": max(0, rd_expected - rd_received),
            "down_after_effective": self.down_k,
        }


_NO_TAGS: dict[str, str] = {}


def _addr_text(addr: Any) -> str:
    """ "host:port" from a socket address ("[v6]:port" for IPv6); text as it is."""
    if isinstance(addr, tuple) and len(addr) >= 2:
        host = str(addr[0])
        return f"[{host}]:{addr[1]}" if ":" in host else f"{host}:{addr[1]}"
    return str(addr)


_ZERO4 = (0, 0, 0, 0)
_ZERO2 = (0, 0)


def _pct(part: int, whole: int) -> float:
    return round(100.0 * part / whole, 3) if whole > 0 else 0.0


class Fleet:
    """The state of every device, fed by receivers, read by the HTTP side and the store.

    Args:
        config: the `[collector]` section.
        clock: wall clock (epoch seconds); injected by tests.
    """

    def __init__(self, config: CollectorSection, *, clock: Clock = time.time) -> None:
        self.config = config
        self._clock = clock
        self._lock = threading.Lock()
        self._devices: dict[str, Device] = {}
        self._events: collections.deque[dict[str, Any]] = collections.deque(
            maxlen=MAX_EVENTS_IN_MEMORY
        )
        self._new_events: list[dict[str, Any]] = []  # not yet handed to the store
        self._dirty: set[str] = set()
        self._received = {"udp": 0, "mqtt": 0}
        self._rejected_from = {"udp": 0, "mqtt": 0}
        self._rejected: dict[str, int] = {}
        self._fixed_down: Optional[float] = (
            None if config.down_after == "auto" else float(config.down_after)
        )
        self._late_after = config.late_after
        self._max_devices = config.max_devices
        self._max_payload = config.max_payload
        self._max_down_after = config.max_down_after
        self._tag_cache: dict[tuple[tuple[str, str], ...], dict[str, str]] = {}
        self._names_cache: dict[tuple[str, ...], tuple[str, ...]] = {}
        self.started_at = clock()

    # --- ingest (receiver threads) ----------------------------------------------

    def receive(
        self, data: bytes, addr: Any, transport: str = "udp", topic_dev: Optional[str] = None
    ) -> None:
        """Parse one datagram or MQTT payload and apply it; bad input is counted, never raised.

        `topic_dev`: the device id in the MQTT topic, which must match the payload's.
        """
        try:
            msg = wire.parse_fields(data, max_size=self._max_payload)
        except wire.WireError as err:
            with self._lock:
                self._received[transport] += 1
                self._reject(err.reason, transport)
            return
        with self._lock:
            self._received[transport] += 1
            if topic_dev is not None and topic_dev != msg["dev"]:
                self._reject("topic_mismatch", transport)
                return
            self._apply(msg, addr, transport)

    def reject(self, reason: str, transport: str = "udp") -> None:
        """Count a payload a receiver turned away before parsing (e.g. an MQTT topic)."""
        with self._lock:
            self._received[transport] += 1
            self._reject(reason, transport)

    def mark_offline(self, dev_id: str, reason: str = "last_will") -> None:
        """The broker says the device is gone (MQTT Last Will / retained `offline`)."""
        with self._lock:
            d = self._devices.get(dev_id)
            if d is not None and d.state != "offline":
                self._transition(d, "offline", reason, self._clock())
                d.deadline = math.inf

    def _reject(self, reason: str, transport: str) -> None:
        self._rejected[reason] = self._rejected.get(reason, 0) + 1
        # accepted = received - rejected, per transport: one counter less on the hot path
        self._rejected_from[transport] += 1

    def _apply(self, msg: dict[str, Any], addr: Any, transport: str) -> None:
        now = self._clock()
        dev_id: str = msg["dev"]
        d = self._devices.get(dev_id)
        kind: str = msg["k"]
        if d is None:
            if len(self._devices) >= self._max_devices:
                self._reject("max_devices", transport)
                return
            if kind == "rd":  # a device is known by its heartbeats; a reading alone proves little
                self._reject("unknown_device", transport)
                return
            d = Device(dev_id, now)
            self._devices[dev_id] = d
            d.run = msg["run"]
            if kind == "bye":
                d.state = "offline"
            self._event(now, dev_id, None, d.state, "first_seen")
        elif msg["run"] != d.run and not self._new_run(d, msg, now, transport):
            return
        seq: int = msg["seq"]
        tracker = d.rd if kind == "rd" else d.hb
        if (
            tracker is not None
            and not 0 < seq - tracker.highest <= MAX_PLAIN_JUMP  # the usual case, quickly
            and not tracker.plausible(seq, (now - d.last_seen) / d.interval)
        ):
            self._reject("seq_jump", transport)
            return
        self._dirty.add(dev_id)
        d.last_seen = now
        if d.addr != addr:
            d.addr = addr
        if d.transport is not transport:
            d.transport = transport
        if kind == "rd":
            if tracker is None:
                d.rd = SeqTracker(seq)
            else:
                tracker.add(seq)
            return
        hb = tracker
        if hb is None:
            d.hb = SeqTracker(seq)
            gap = 1
        else:
            gap = hb.add(seq)
            if gap < 0:  # duplicate: it says nothing new
                return
        if gap > 0:
            d.cur_exp += gap
            d.recent_exp += gap
            if gap > 1:
                d.cur_lost += gap - 1
                d.recent_lost += gap - 1
            if d.cur_exp >= RECENT_BUCKET:  # the older bucket goes; the current one stays
                d.recent_exp = d.cur_exp
                d.recent_lost = d.cur_lost
                d.cur_exp = d.cur_lost = 0
        elif d.recent_lost > 0:  # a late arrival: one fewer lost
            d.recent_lost -= 1
            if d.cur_lost > 0:
                d.cur_lost -= 1
        if gap == 0:  # an old heartbeat: loss figures only
            return
        d.clock_skew = msg["ts"] - now
        if kind == "bye":
            if d.state != "offline":
                self._transition(d, "offline", "bye", now)
            d.deadline = math.inf
            return
        interval: float = msg["int"]
        d.interval = interval
        get = msg.get
        bt = get("bt")
        if bt is not None:
            d.boot_time = bt
        ver = get("ver")
        if ver is not None and ver != d.version:
            d.version = sys.intern(ver) if len(ver) < 40 else ver
        drop = get("drop")
        if drop is not None:
            d.agent_drops = drop
        tags = get("tags")
        if tags is not None and tags != d.tags:
            d.tags = self._shared_tags(tags)
        m = get("m")
        if m:
            names = tuple(m)
            if names != d.metric_names:  # most of a fleet shares a few sets of names
                if len(self._names_cache) > 10_000:
                    self._names_cache.clear()
                d.metric_names = self._names_cache.setdefault(names, names)
            d.metric_values = tuple(m.values())
        if d.state != "up":
            self._transition(d, "up", "heartbeat", now)
        d.deadline = now + self._late_after * interval

    def _new_run(self, d: Device, msg: dict[str, Any], now: float, transport: str) -> bool:
        """A message from a new run: restart or reboot. False when it is a stale old-run one."""
        if msg["run"] == d.prev_run:  # a straggler from the run before: not a restart
            self._reject("old_run", transport)
            return False
        d.prev_run = d.run
        # Fold the finished run into the lifetime figures.
        if d.hb is not None:
            p, f = d.prior, d.hb.figures()
            d.prior = (p[0] + f[0], p[1] + f[1], p[2] + f[2], p[3] + f[3])
        if d.rd is not None:
            d.rd_prior = (d.rd_prior[0] + d.rd.received, d.rd_prior[1] + d.rd.expected)
        d.hb = None
        d.rd = None
        d.run = msg["run"]
        bt = msg.get("bt")
        rebooted = (
            bt is not None and d.boot_time is not None and abs(bt - d.boot_time) > REBOOT_TOLERANCE
        )
        if rebooted:
            d.reboots += 1
            reason = "reboot"
        else:
            d.restarts += 1
            reason = "restart"
        to = "offline" if msg["k"] == "bye" else "up"
        self._event(now, d.id, d.state, to, reason)
        if d.state != to:
            d.state = to
            d.state_since = now
        d.deadline = math.inf if to == "offline" else now + self._late_after * d.interval
        self._dirty.add(d.id)
        return True

    def _shared_tags(self, tags: dict[str, str]) -> dict[str, str]:
        # Most of a fleet shares a handful of tag sets: keep one copy of each.
        key = tuple(tags.items())
        if len(self._tag_cache) > 10_000:
            self._tag_cache.clear()
        return self._tag_cache.setdefault(key, tags)

    # --- liveness (the main loop's tick) ----------------------------------------

    def check(self, now: Optional[float] = None) -> int:
        """Move silent devices to late or down; return how many changed state."""
        changed = 0
        with self._lock:
            now = self._clock() if now is None else now
            for d in self._devices.values():
                if d.deadline <= now:
                    changed += self._judge(d, now, "missed_heartbeats")
        return changed

    def _down_after(self, d: Device) -> float:
        """The device's down_after now (computed when needed, not at every heartbeat)."""
        if self._fixed_down is not None:
            k = self._fixed_down
        else:
            k = auto_down_after(d.recent_lost, d.recent_exp, self._max_down_after)
        d.down_k = k
        return k

    def _judge(self, d: Device, now: float, down_reason: str) -> int:
        self._down_after(d)
        silent = (now - d.last_seen) / d.interval
        if d.state in ("up", "late") and silent >= d.down_k:
            self._transition(d, "down", down_reason, now)
            d.deadline = math.inf
            return 1
        if d.state == "up" and silent >= self._late_after:
            self._transition(d, "late", "late", now)
            d.deadline = d.last_seen + d.down_k * d.interval
            return 1
        if d.state == "late":
            d.deadline = d.last_seen + d.down_k * d.interval
        elif d.state == "up":
            d.deadline = d.last_seen + self._late_after * d.interval
        return 0

    def _transition(self, d: Device, to: str, reason: str, now: float) -> None:
        self._event(now, d.id, d.state, to, reason)
        d.state = to
        d.state_since = now
        self._dirty.add(d.id)

    def _event(self, now: float, dev_id: str, from_: Optional[str], to: str, reason: str) -> None:
        ev = {"time": now, "device": dev_id, "from": from_, "to": to, "reason": reason}
        self._events.append(ev)
        self._new_events.append(ev)

    # --- reads (the contract) ---------------------------------------------------

    def devices(self) -> list[dict[str, Any]]:
        """Every device as a JSON-ready dict, sorted by id.

        Built in chunks, releasing the lock between them: each dict is consistent,
        and a big fleet's snapshot never stalls the receivers for long.
        """
        with self._lock:
            ids = sorted(self._devices)
        out: list[dict[str, Any]] = []
        for i in range(0, len(ids), LOCK_CHUNK):
            with self._lock:
                for k in ids[i : i + LOCK_CHUNK]:
                    d = self._devices.get(k)
                    if d is not None:
                        out.append(self._snapshot(d))
        return out

    def device(self, dev_id: str) -> Optional[dict[str, Any]]:
        """One device as a JSON-ready dict, or None when unknown."""
        with self._lock:
            d = self._devices.get(dev_id)
            return self._snapshot(d) if d is not None else None

    def _snapshot(self, d: Device) -> dict[str, Any]:
        self._down_after(d)
        return d.snapshot()

    def events(self, since: float = 0.0, limit: int = 1000) -> list[dict[str, Any]]:
        """Events with time > since, oldest first; the newest `limit` when more match."""
        with self._lock:
            found = [dict(e) for e in self._events if e["time"] > since]
        return found[-limit:] if limit > 0 else []

    def apply_limits(self, config: CollectorSection) -> None:
        """Take new judgement settings (late_after, down_after, limits) from a reload."""
        with self._lock:
            self.config = config
            self._fixed_down = None if config.down_after == "auto" else float(config.down_after)
            self._late_after = config.late_after
            self._max_devices = config.max_devices
            self._max_payload = config.max_payload
            self._max_down_after = config.max_down_after

    def stats(self) -> dict[str, Any]:
        """Counters for /metrics and the dashboard header."""
        with self._lock:
            by_state = dict.fromkeys(STATES, 0)
            for d in self._devices.values():
                by_state[d.state] += 1
            return {
                "received": dict(self._received),
                "accepted": {t: n - self._rejected_from[t] for t, n in self._received.items()},
                "rejected": dict(self._rejected),
                "devices": by_state,
                "devices_known": len(self._devices),
                "max_devices": self._max_devices,
                "started_at": self.started_at,
            }

    def __len__(self) -> int:
        return len(self._devices)

    # --- persistence (the store) ------------------------------------------------

    def take_changes(
        self, chunk: int = LOCK_CHUNK
    ) -> tuple[list[tuple[Any, ...]], list[dict[str, Any]]]:
        """Rows of the devices changed and the events added since the last call (for the store).

        Built in chunks, releasing the lock between them, so a big fleet's flush
        never stalls the receivers for long.
        """
        with self._lock:
            dirty, self._dirty = self._dirty, set()
            events, self._new_events = self._new_events, []
        ids = list(dirty)
        rows: list[tuple[Any, ...]] = []
        tags_json: dict[int, str] = {}
        for i in range(0, len(ids), chunk):
            with self._lock:
                for k in ids[i : i + chunk]:
                    d = self._devices.get(k)
                    if d is not None:
                        self._down_after(d)
                        rows.append(_row(d, tags_json))
        return rows, events

    def requeue(self, rows: list[tuple[Any, ...]], events: list[dict[str, Any]]) -> None:
        """Give back what a failed store write took, so the next flush tries again."""
        with self._lock:
            self._dirty.update(row[0] for row in rows)
            self._new_events[:0] = events

    def restore(self, rows: list[tuple[Any, ...]], events: list[dict[str, Any]]) -> int:
        """Load stored devices and events at start; judge the silent ones at once.

        Returns how many devices were loaded; rows that cannot be read are skipped.
        """
        with self._lock:
            now = self._clock()
            for ev in events:
                self._events.append(ev)
            for row in rows:
                d = _revive(row)
                if d is None or d.id in self._devices:
                    continue
                self._devices[d.id] = d
                if d.state in ("up", "late"):
                    self._judge(d, now, "silent_through_restart")
            return len(self._devices)


ROW_COLUMNS = (
    "id", "state", "state_since", "last_seen", "addr", "transport", "run", "prev_run",
    "boot_time", "interval", "version", "tags", "metrics", "clock_skew", "restarts", "reboots",
    "agent_drops", "down_k", "counters",
)  # fmt: skip
"""The columns of a stored device row, in order (see `store`)."""


def _row(d: Device, tags_json: dict[int, str]) -> tuple[Any, ...]:
    tags = tags_json.get(id(d.tags))
    if tags is None:
        tags = tags_json[id(d.tags)] = json.dumps(d.tags)
    hb, rd = d.hb, d.rd
    counters = [
        *((hb.highest, hb.received, hb.expected, hb.duplicates, hb.reordered) if hb else ()),
        *((rd.highest, rd.received, rd.expected) if rd else ()),
    ]
    return (
        d.id, d.state, d.state_since, d.last_seen, _addr_text(d.addr), d.transport, d.run,
        d.prev_run, d.boot_time, d.interval, d.version, tags,
        json.dumps(dict(zip(d.metric_names, d.metric_values))), d.clock_skew, d.restarts,
        d.reboots, d.agent_drops, d.down_k,
        json.dumps([int(hb is not None), int(rd is not None), *counters, *d.prior, *d.rd_prior,
                    d.cur_lost, d.cur_exp, d.recent_lost, d.recent_exp]),
    )  # fmt: skip


def _revive(row: tuple[Any, ...]) -> Optional[Device]:
    """A device from a stored row; None when the row cannot be read."""
    try:
        (dev_id, state, state_since, last_seen, addr, transport, run, prev_run, boot_time,
         interval, version, tags, metrics, clock_skew, restarts, reboots, agent_drops, down_k,
         counters) = row  # fmt: skip
        d = Device(str(dev_id), float(state_since))
        d.state = state if state in STATES else "down"
        d.last_seen = float(last_seen)
        d.addr = str(addr)
        d.transport = str(transport)
        d.run = str(run)
        d.prev_run = str(prev_run)
        d.boot_time = None if boot_time is None else float(boot_time)
        d.interval = float(interval)
        if not d.interval > 0:
            return None
        d.version = None if version is None else str(version)
        d.tags = {str(k): str(v) for k, v in json.loads(tags).items()}
        m = json.loads(metrics)
        d.metric_names = tuple(m)
        d.metric_values = tuple(float(v) for v in m.values())
        d.clock_skew = float(clock_skew)
        d.restarts = int(restarts)
        d.reboots = int(reboots)
        d.agent_drops = int(agent_drops)
        d.down_k = int(down_k) if float(down_k).is_integer() else float(down_k)
        c = [int(x) for x in json.loads(counters)]
        has_hb, has_rd, c = c[0], c[1], c[2:]
        if has_hb:
            t = SeqTracker(c[0])
            t.received, t.expected, t.duplicates, t.reordered = c[1:5]
            t.resync = True  # what was sent while the collector was away is not network loss
            d.hb = t
            c = c[5:]
        if has_rd:
            t = SeqTracker(c[0])
            t.received, t.expected = c[1:3]
            t.resync = True
            d.rd = t
            c = c[3:]
        d.prior = (c[0], c[1], c[2], c[3])
        d.rd_prior = (c[4], c[5])
        d.cur_lost, d.cur_exp, d.recent_lost, d.recent_exp = c[6:10]
        if d.state in ("up", "late"):
            d.deadline = d.last_seen  # judged at once
    except (TypeError, ValueError, IndexError, AttributeError):
        return None
    return d
