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
  for a new device), to (state), reason (a short label: "first_seen" (at
  the second message: a device heard once leaves no event), "heartbeat",
  "late", "missed_heartbeats", "bye", "last_will", "restart", "reboot",
  "silent_through_restart", "flapping": the device passed
  `max_events_per_minute`; its other events of that minute are only counted).
- `Fleet.stats() -> dict`: received {"udp": n, "mqtt": n} (datagrams /
  messages that reached the collector, valid or not), accepted {"udp": n,
  "mqtt": n}, rejected {reason: n} (wire reasons from `wire.parse_fields`:
  oversize, not_json, too_deep, bad_text, not_object, bad_version, bad_kind,
  bad_device_id, bad_run, bad_seq, bad_field; plus the fleet's: max_devices,
  seq_jump, old_run, unknown_run (a bye or reading of a run never seen),
  unknown_device (a reading from an id never heard), metrics_limit,
  tags_limit, topic_mismatch, bad_topic), devices {state: n for every state},
  devices_known, devices_unconfirmed, max_devices, evicted {"unconfirmed": n,
  "silent": n}, events_suppressed (past max_events_per_minute),
  events_unsaved (dropped by `requeue` while the store could not write),
  rows_skipped (stored devices and events `restore` could not read),
  kernel_drops {"udp": n} (datagrams the kernel dropped on the receive
  socket: a full buffer), started_at (epoch s).
- The config object given to `fleetbeat.collector.http.start(fleet, config)`
  is a `CollectorConfig`; `config.http_listen` is the "host:port" to bind.

Loss follows RFC 3550's logic with 64-bit `seq`: within one run, expected =
highest - first + 1, lost = expected - distinct received; a late arrival
lowers `lost`, a duplicate does not count twice (a 128-seq window tells them
apart; an arrival older than that is counted as reordered). A new `run`
starts a new count; lifetime figures add up every run.

Liveness: `up` -> `late` once `late_after` intervals pass without a heartbeat,
-> `down` after `down_after` intervals, judged on the monotonic clock (wall
time is for display, events and the store; a restored device's silence is
converted once); `offline` after a `bye` of the run being tracked (a bye
never starts a run: only a heartbeat does) or the MQTT Last Will of a device
whose run reports over MQTT. `down_after = "auto"` picks, per device, the smallest k >= 3 with
p^k < 1e-6, p being the device's recent loss rate (smoothed), capped by
`max_down_after`: a lossy link gets more patience instead of flapping.

Eviction, when `max_devices` is full and a heartbeat comes from a new id:
first the device heard once and never again that arrived first, else the
device silent longest if silent for more than `evict_after`; else the
newcomer is rejected (max_devices). A device heard twice is never evicted by
junk; under a continuing flood of new ids a newcomer competes with the flood
until its second heartbeat.
"""

from __future__ import annotations

import collections
import math
import sys
import threading
import time
from typing import Any, Callable, Optional

from fleetbeat import wire
from fleetbeat.collector.budget import SHARED_POOL, SharedSets, metrics_cost, names_cost, tags_cost
from fleetbeat.collector.config import CollectorSection
from fleetbeat.collector.device import Device
from fleetbeat.collector.liveness import STATES
from fleetbeat.collector.loss import MAX_PLAIN_JUMP, RECENT_BUCKET, SeqTracker, auto_down_after
from fleetbeat.collector.rows import _event_ok, _revive, _row

REBOOT_TOLERANCE = 5.0  # s: boot_time jitter (clock steps) that is not a reboot
MAX_EVENTS_IN_MEMORY = 10_000
LOCK_CHUNK = 500  # devices read per lock hold (~10 ms), so receivers never wait long
SILENT_RESCAN = 10.0  # s between scans for long-silent devices to evict (O(devices) each)
MAX_FORGOTTEN = 10_000  # evicted ids kept for the store to delete

Clock = Callable[[], float]


class Fleet:
    """The state of every device, fed by receivers, read by the HTTP side and the store.

    Args:
        config: the `[collector]` section.
        clock: wall clock (epoch seconds): event times, last_seen, the store. Injected by tests.
        monotonic: the clock liveness deadlines are judged on, so a wall-clock step (NTP)
            neither calls the fleet down nor keeps a dead device up. Injected by tests.
        shared_pool: bytes for metric-name sets, and as many for tag sets, kept once for
            the whole fleet (see `SharedSets`).
    """

    def __init__(
        self,
        config: CollectorSection,
        *,
        clock: Clock = time.time,
        monotonic: Clock = time.monotonic,
        shared_pool: int = SHARED_POOL,
    ) -> None:
        self.config = config
        self._clock = clock
        self._mono = monotonic
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
        # devices heard once, oldest first: the first to go when max_devices is full
        self._unconfirmed: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._silent: list[str] = []  # long-silent ids found by the last scan, longest last
        self._silent_scan_at = -math.inf
        self._evicted = {"unconfirmed": 0, "silent": 0}
        self._forgotten: collections.deque[str] = collections.deque(maxlen=MAX_FORGOTTEN)
        self._events_suppressed = 0
        self._events_unsaved = 0
        self.rows_skipped = 0  # stored devices and events `restore` could not read
        self._kernel_drops: dict[str, Callable[[], int]] = {}
        self.apply_limits(config)
        self._tags = SharedSets(shared_pool)
        self._names = SharedSets(shared_pool)
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
        """The broker says the device is gone (MQTT Last Will / retained `offline`).

        It carries no run id, so it counts only for a device whose tracked run reports
        over MQTT; a heartbeat of that same run brings the device back up.
        """
        with self._lock:
            d = self._devices.get(dev_id)
            if d is not None and d.state != "offline" and d.transport == "mqtt":
                self._transition(d, "offline", reason, self._clock())
                d.deadline = math.inf

    def watch_kernel_drops(self, transport: str, read: Callable[[], int]) -> None:
        """Export a receiver's count of datagrams the kernel dropped (`stats()["kernel_drops"]`)."""
        with self._lock:
            self._kernel_drops[transport] = read

    def _reject(self, reason: str, transport: str) -> None:
        self._rejected[reason] = self._rejected.get(reason, 0) + 1
        # accepted = received - rejected, per transport: one counter less on the hot path
        self._rejected_from[transport] += 1

    def _apply(self, msg: dict[str, Any], addr: Any, transport: str) -> None:
        now = self._clock()
        mono = self._mono()
        dev_id: str = msg["dev"]
        d = self._devices.get(dev_id)
        kind: str = msg["k"]
        if kind == "hb":
            # the limits first: a message either applies whole or not at all
            get = msg.get
            m = get("m")
            names = tuple(m) if m else ()
            if (
                names
                and (d is None or names != d.metric_names)
                and (
                    len(names) > self._max_metrics
                    or metrics_cost(names, self._names.fits(names, names_cost(names)))
                    > self._max_metric_bytes
                )
            ):
                self._reject("metrics_limit", transport)
                return
            tags = get("tags")
            if (
                tags
                and (d is None or tags != d.tags)
                and (
                    len(tags) > self._max_tags
                    or (
                        tags_cost(tags) > self._max_tag_bytes
                        and not self._tags.fits(tuple(tags.items()), tags_cost(tags))
                    )
                )
            ):
                self._reject("tags_limit", transport)
                return
        if d is None:
            if kind != "hb":  # a device is known by its heartbeats; a reading or bye proves little
                self._reject("unknown_device" if kind == "rd" else "unknown_run", transport)
                return
            if len(self._devices) >= self._max_devices and not self._evict(mono):
                self._reject("max_devices", transport)
                return
            d = Device(dev_id, now, mono)
            self._devices[dev_id] = d
            self._unconfirmed[dev_id] = None
            d.run = msg["run"]
        elif msg["run"] != d.run:
            if kind != "hb":  # only a heartbeat starts a run: a forged bye cannot end one
                self._reject("old_run" if msg["run"] == d.prev_run else "unknown_run", transport)
                return
            if not self._new_run(d, msg, now, mono, transport):
                return
        seq: int = msg["seq"]
        tracker = d.rd if kind == "rd" else d.hb
        if (
            tracker is not None
            and not 0 < seq - tracker.highest <= MAX_PLAIN_JUMP  # the usual case, quickly
            and not tracker.plausible(seq, (mono - d.seen) / d.interval)
        ):
            self._reject("seq_jump", transport)
            return
        if not d.confirmed and tracker is not None:  # a second message: a real device
            self._confirm(d, now)
        self._dirty.add(dev_id)
        d.last_seen = now
        d.seen = mono
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
        bt = get("bt")
        if bt is not None:
            d.boot_time = bt
        ver = get("ver")
        if ver is not None and ver != d.version:
            d.version = sys.intern(ver) if len(ver) < 40 else ver
        drop = get("drop")
        if drop is not None:
            d.agent_drops = drop
        if tags is not None and tags != d.tags:
            d.tags = self._shared_tags(tags)
        if names:
            if names != d.metric_names:  # most of a fleet shares a few sets of names
                d.metric_names = self._names.shared(names, names, names_cost(names))
            d.metric_values = tuple(m.values())  # type: ignore[union-attr]
        if d.state != "up":
            self._transition(d, "up", "heartbeat", now)
        d.deadline = mono + self._late_after * interval

    def _confirm(self, d: Device, now: float) -> None:
        """A device heard a second time is real: it is stored and its events are kept."""
        d.confirmed = True
        self._unconfirmed.pop(d.id, None)
        self._event(now, d, None, d.state, "first_seen")

    def _evict(self, mono: float) -> bool:
        """Make room for a new device (max_devices is full); False when nothing may go.

        The policy: first the device heard once and never again that arrived first;
        else the device silent longest, if silent for more than `evict_after`.
        """
        if self._unconfirmed:
            dev_id, _ = self._unconfirmed.popitem(last=False)
            self._evicted["unconfirmed"] += 1
            del self._devices[dev_id]
            self._dirty.discard(dev_id)
            return True
        for rescan in (False, True):
            if rescan:
                if mono < self._silent_scan_at:
                    return False
                self._silent_scan_at = mono + SILENT_RESCAN  # one O(n) scan per 10 s at most
                found = [(d.seen, k) for k, d in self._devices.items()
                         if mono - d.seen > self._evict_after]  # fmt: skip
                found.sort(reverse=True)
                self._silent = [k for _, k in found]
            while self._silent:
                dev_id = self._silent.pop()
                d = self._devices.get(dev_id)
                if d is not None and mono - d.seen > self._evict_after:
                    self._evicted["silent"] += 1
                    del self._devices[dev_id]
                    self._dirty.discard(dev_id)
                    self._forgotten.append(dev_id)
                    return True
        return False

    def take_forgotten(self) -> list[str]:
        """Ids of stored devices evicted since the last call (the store may delete them)."""
        with self._lock:
            gone = list(self._forgotten)
            self._forgotten.clear()
        return gone

    def _new_run(
        self, d: Device, msg: dict[str, Any], now: float, mono: float, transport: str
    ) -> bool:
        """A heartbeat from a new run: restart or reboot. False when it is a stale old-run one."""
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
        if not d.confirmed:  # a second message, whatever its run
            self._confirm(d, now)
        self._event(now, d, d.state, "up", reason)
        if d.state != "up":
            d.state = "up"
            d.state_since = now
        d.deadline = mono + self._late_after * d.interval
        self._dirty.add(d.id)
        return True

    def _shared_tags(self, tags: dict[str, str]) -> dict[str, str]:
        # Most of a fleet shares a handful of tag sets: keep one copy of each.
        return self._tags.shared(tuple(tags.items()), tags, tags_cost(tags))  # type: ignore[no-any-return]

    # --- liveness (the main loop's tick) ----------------------------------------

    def check(self, now: Optional[float] = None) -> int:
        """Move silent devices to late or down; return how many changed state.

        `now` is a time on the monotonic clock (default: the clock given to the fleet).
        """
        changed = 0
        with self._lock:
            mono = self._mono() if now is None else now
            wall = self._clock()
            for d in self._devices.values():
                if d.deadline <= mono:
                    changed += self._judge(d, mono, wall, "missed_heartbeats")
        return changed

    def _down_after(self, d: Device) -> float:
        """The device's down_after now (computed when needed, not at every heartbeat)."""
        if self._fixed_down is not None:
            k = self._fixed_down
        else:
            k = auto_down_after(d.recent_lost, d.recent_exp, self._max_down_after)
        d.down_k = k
        return k

    def _judge(self, d: Device, mono: float, wall: float, down_reason: str) -> int:
        self._down_after(d)
        silent = (mono - d.seen) / d.interval
        if d.state in ("up", "late") and silent >= d.down_k:
            self._transition(d, "down", down_reason, wall)
            d.deadline = math.inf
            return 1
        if d.state == "up" and silent >= self._late_after:
            self._transition(d, "late", "late", wall)
            d.deadline = d.seen + d.down_k * d.interval
            return 1
        if d.state == "late":
            d.deadline = d.seen + d.down_k * d.interval
        elif d.state == "up":
            d.deadline = d.seen + self._late_after * d.interval
        return 0

    def _transition(self, d: Device, to: str, reason: str, now: float) -> None:
        self._event(now, d, d.state, to, reason)
        d.state = to
        d.state_since = now
        self._dirty.add(d.id)

    def _event(self, now: float, d: Device, from_: Optional[str], to: str, reason: str) -> None:
        if not d.confirmed:  # junk heard once leaves no trace in the event log
            return
        mono = self._mono()
        if mono - d.ev_start >= 60.0:
            d.ev_start = mono
            d.ev_count = 0
        d.ev_count += 1
        if d.ev_count > self._max_events_per_minute:
            self._events_suppressed += 1
            if d.ev_count > self._max_events_per_minute + 1:
                return
            reason = "flapping"  # one event says the rest of this minute's were left out
        ev = {"time": now, "device": d.id, "from": from_, "to": to, "reason": reason}
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
            self._max_metrics = config.max_metrics
            self._max_metric_bytes = config.max_metric_bytes
            self._max_tags = config.max_tags
            self._max_tag_bytes = config.max_tag_bytes
            self._max_events_per_minute = config.max_events_per_minute
            self._evict_after = config.evict_after

    def stats(self) -> dict[str, Any]:
        """Counters for /metrics and the dashboard header."""
        with self._lock:
            by_state = dict.fromkeys(STATES, 0)
            for d in self._devices.values():
                by_state[d.state] += 1
            readers = list(self._kernel_drops.items())
            out = {
                "received": dict(self._received),
                "accepted": {t: n - self._rejected_from[t] for t, n in self._received.items()},
                "rejected": dict(self._rejected),
                "devices": by_state,
                "devices_known": len(self._devices),
                "devices_unconfirmed": len(self._unconfirmed),
                "max_devices": self._max_devices,
                "evicted": dict(self._evicted),
                "events_suppressed": self._events_suppressed,
                "events_unsaved": self._events_unsaved,
                "rows_skipped": self.rows_skipped,
                "started_at": self.started_at,
            }
        out["kernel_drops"] = {t: read() for t, read in readers}  # reads /proc: not under the lock
        return out

    def __len__(self) -> int:
        return len(self._devices)

    # --- persistence (the store) ------------------------------------------------

    def take_changes(
        self, chunk: int = LOCK_CHUNK
    ) -> tuple[list[tuple[Any, ...]], list[dict[str, Any]]]:
        """Rows of the devices changed and the events added since the last call (for the store).

        Devices heard only once are not stored: a flood of junk ids never reaches the disk.
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
                    if d is not None and d.confirmed:
                        self._down_after(d)
                        rows.append(_row(d, tags_json))
        return rows, events

    def requeue(self, rows: list[tuple[Any, ...]], events: list[dict[str, Any]]) -> int:
        """Give back what a failed store write took, so the next flush tries again.

        Rows are one per device whatever happens; pending events are capped at
        MAX_EVENTS_IN_MEMORY, the newest kept. Returns how many events were dropped.
        """
        with self._lock:
            self._dirty.update(row[0] for row in rows)
            pending = events + self._new_events
            dropped = max(0, len(pending) - MAX_EVENTS_IN_MEMORY)
            self._new_events = pending[dropped:]
            self._events_unsaved += dropped
            return dropped

    def restore(self, rows: list[tuple[Any, ...]], events: list[dict[str, Any]]) -> int:
        """Load stored devices and events at start; judge the silent ones at once.

        Returns how many devices were loaded. A row or event that cannot be read, or a
        device beyond max_devices (the least recently seen go), is skipped and counted
        in `rows_skipped`; nothing in the store can stop a start.
        """
        with self._lock:
            wall, mono = self._clock(), self._mono()
            skipped = 0
            for ev in events:
                if _event_ok(ev):
                    self._events.append(ev)
                else:
                    skipped += 1
            revived = []
            for row in rows:
                d = _revive(row)
                if d is None or d.id in self._devices:
                    skipped += 1
                    continue
                # one copy of each name and tag set, as when the devices first reported
                d.metric_names = self._names.shared(d.metric_names, d.metric_names,
                                                    names_cost(d.metric_names))  # fmt: skip
                if d.tags:
                    d.tags = self._shared_tags(d.tags)
                # wall time converted once: how long ago, on the monotonic clock
                d.seen = mono - max(0.0, wall - d.last_seen)
                d.ev_start = mono
                self._devices[d.id] = d
                revived.append(d)
            over = len(self._devices) - self._max_devices
            if over > 0:
                revived.sort(key=lambda x: x.last_seen)
                for d in revived[:over]:
                    del self._devices[d.id]
                skipped += over
                revived = revived[over:]
            for d in revived:
                if d.state in ("up", "late"):
                    self._judge(d, mono, wall, "silent_through_restart")
            self.rows_skipped += skipped
            return len(self._devices)
