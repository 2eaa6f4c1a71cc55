"""Fleet state: every device's liveness, loss and last report, and the event log.

Receivers feed it (`receive`, `reject`, `mark_offline`, `release`), the main loop
ticks it (`check`) and hands it the expected ids (`expect`), the API forgets devices
(`forget`), the store persists it (`take_changes`, `requeue`, `take_forgotten`,
`restore`); the rest reads THE CONTRACT, `view.FleetView` (`devices`, `device`,
`events`, `stats`; the fields and every rejection reason are listed there). Its parts,
one module each, held here under one lock: `loss`, `liveness`, `eviction`, `budget`,
`events`, `intake`, `device`, `rows` and `lifecycle` (expected, missing, forgotten).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterable
from typing import Any, Callable, Optional

from fleetbeat import wire
from fleetbeat.collector import liveness
from fleetbeat.collector.auth import Keyring
from fleetbeat.collector.budget import SHARED_POOL, Budget
from fleetbeat.collector.config import CollectorSection
from fleetbeat.collector.device import Device, replayed
from fleetbeat.collector.events import EventLog
from fleetbeat.collector.eviction import Eviction
from fleetbeat.collector.expected import Expected
from fleetbeat.collector.intake import Intake
from fleetbeat.collector.lifecycle import Lifecycle, Roster, merge
from fleetbeat.collector.loss import MAX_PLAIN_JUMP
from fleetbeat.collector.rows import row_of

LOCK_CHUNK = 500  # devices read per lock hold (~10 ms), so receivers never wait long

Clock = Callable[[], float]


class Fleet:
    """The state of every device, fed by receivers, read by the HTTP side and the store.

    Args:
        config: the `[collector]` section.
        clock: wall clock (epoch seconds): event times, last_seen, the store. Injected by tests.
        monotonic: the clock liveness deadlines are judged on, so a wall-clock step (NTP)
            neither calls the fleet down nor keeps a dead device up. Injected by tests.
        shared_pool: bytes for metric-name sets, and as many for tag sets, kept once for
            the whole fleet (see `budget.SharedSets`).
    """

    def __init__(
        self,
        config: CollectorSection,
        *,
        clock: Clock = time.time,
        monotonic: Clock = time.monotonic,
        shared_pool: int = SHARED_POOL,
    ) -> None:
        self._clock = clock
        self._mono = monotonic
        self._lock = threading.Lock()
        self._devices = Roster()
        self._dirty: set[str] = set()
        self._intake = Intake()
        self._eviction = Eviction(self._devices, config.evict_after)
        self._log = EventLog(config.max_events_per_minute)
        self._budget = Budget(config, shared_pool)
        self._life = Lifecycle(self._devices, self._eviction, self._log)
        self._keyring: Optional[Keyring] = None  # see use_keyring
        self.rows_skipped = 0  # stored devices and events `restore` could not read
        self._kernel_drops: dict[str, Callable[[], int]] = {}
        self.apply_limits(config)
        self.started_at = clock()

    # --- ingest (receiver threads) ----------------------------------------------

    def receive(
        self, data: bytes, addr: Any, transport: str = "udp", topic_dev: Optional[str] = None
    ) -> None:
        """Parse one datagram or MQTT payload and apply it; bad input is counted, never raised.
        `topic_dev`: the device id in the MQTT topic, which must match the payload's."""
        ring = self._keyring  # with keys, verified before anything in it is believed
        try:
            msg, signed = (
                ring.open(data, self._max_payload) if ring is not None
                else (wire.parse_fields(data, max_size=self._max_payload), False)
            )  # fmt: skip
        except wire.WireError as err:
            with self._lock:
                self._intake.received[transport] += 1
                self._intake.reject(err.reason, transport)
            return
        with self._lock:
            self._intake.received[transport] += 1
            if topic_dev is not None and topic_dev != msg["dev"]:
                self._intake.reject("topic_mismatch", transport)
                return
            self._apply(msg, addr, transport, signed)

    def use_keyring(self, ring: Optional[Keyring]) -> None:
        """Check signatures with `ring` from now on (None: no keys, nothing checked)."""
        self._keyring = ring if ring is not None and ring.enabled else None

    def watch_kernel_drops(self, transport: str, read: Callable[[], int]) -> None:
        """Export a receiver's count of datagrams the kernel dropped (`stats()["kernel_drops"]`)."""
        with self._lock:
            self._kernel_drops[transport] = read

    def reject(self, reason: str, transport: str = "udp") -> None:
        """Count a payload a receiver turned away before parsing (e.g. an MQTT topic)."""
        with self._lock:
            self._intake.received[transport] += 1
            self._intake.reject(reason, transport)

    def mark_offline(self, dev_id: str, reason: str = "last_will") -> None:
        """The broker says the device is gone (MQTT Last Will / retained `offline`): it has
        no run id, so it counts only for a device whose tracked run reports over MQTT."""
        with self._lock:
            d = self._devices.get(dev_id)
            if d is not None and d.state != "offline" and d.transport == "mqtt":
                self._transition(d, "offline", reason, self._clock())
                d.deadline = math.inf

    def _apply(self, msg: dict[str, Any], addr: Any, transport: str, signed: bool) -> None:
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
            tags = get("tags")
            over = self._budget.refuses(names, tags, d)
            if over:
                self._intake.reject(over, transport)
                return
        if signed and replayed(d, msg, now, self._log.gone):
            self._intake.reject("replay", transport)
            return
        if d is None:
            if kind != "hb":  # a device is known by its heartbeats; a reading or bye proves little
                self._intake.reject("unknown_device" if kind == "rd" else "unknown_run", transport)
                return
            if len(self._devices) >= self._max_devices:
                gone = self._eviction.make_room(mono)
                if gone is None:
                    self._intake.reject("max_devices", transport)
                    return
                self._dirty.discard(gone)
            d = Device(dev_id, now, mono)
            self._devices[dev_id] = d
            self._eviction.admit(dev_id)
            d.run = msg["run"]
        elif msg["run"] != d.run:
            if kind != "hb":  # only a heartbeat starts a run: a forged bye cannot end one
                self._intake.reject(
                    "old_run" if msg["run"] == d.prev_run else "unknown_run", transport
                )
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
            self._intake.reject("seq_jump", transport)
            return
        if not d.confirmed and tracker is not None:  # a second message: a real device
            self._life.confirm(d, now, self._mono())
        self._dirty.add(dev_id)
        d.heard(now, mono, addr, transport)
        gap = d.count_seq(kind, seq, tracker)
        if kind == "rd" or gap <= 0:  # a reading, a duplicate, an old heartbeat: counted only
            return
        d.clock_skew = msg["ts"] - now
        if kind == "bye":
            if d.state != "offline":
                self._transition(d, "offline", "bye", now)
            d.deadline = math.inf
            return
        d.take_heartbeat(msg)
        if tags is not None and tags != d.tags:
            d.tags = self._budget.share_tags(tags)
        if names:
            if names != d.metric_names:  # most of a fleet shares a few sets of names
                d.metric_names = self._budget.share_names(names)
            d.metric_values = tuple(m.values())  # type: ignore[union-attr]
        if d.state != "up":
            self._transition(d, "up", "heartbeat", now)
        d.deadline = mono + self._late_after * d.interval

    def take_forgotten(self) -> list[str]:
        """Ids of stored devices evicted, released or forgotten, for the store (`lifecycle`)."""
        with self._lock:
            return self._eviction.take_forgotten() + self._life.take_forgotten()

    def forget(self, dev_id: str, reason: str = "forgotten") -> bool:
        """Remove a device (`lifecycle`); False when the fleet tracks no such device."""
        with self._lock:
            return self._life.forget_one(dev_id, reason, self._clock(), self._dirty)

    def expect(self, expected: Expected, path: str = "") -> tuple[int, int]:
        """The expected_devices ids (`lifecycle`; `path`: a reload); one caller at a time."""
        return self._life.expect(expected, self._clock(), self._lock, path=path)

    def release(self, dev_ids: Iterable[str]) -> int:
        """Forget devices another collector judges now (a Kafka rebalance); how many were known."""
        with self._lock:
            gone = self._eviction.release(dev_ids)
            self._dirty.difference_update(gone)
        return len(gone)

    def _new_run(
        self, d: Device, msg: dict[str, Any], now: float, mono: float, transport: str
    ) -> bool:
        """A heartbeat from a new run: restart or reboot. False when it is a stale old-run one."""
        if msg["run"] == d.prev_run:  # a straggler from the run before: not a restart
            self._intake.reject("old_run", transport)
            return False
        reason = d.start_run(msg["run"], msg.get("bt"))
        if not d.confirmed:  # a second message, whatever its run
            self._life.confirm(d, now, self._mono())
        self._log.add(d, d.state, "up", reason, now=now, mono=mono)
        if d.state != "up":
            d.state = "up"
            d.state_since = now
        d.deadline = mono + self._late_after * d.interval
        self._dirty.add(d.id)
        return True

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
            self._life.scan(mono, wall, self._dirty)  # forget_after: once a minute at most
        return changed

    def _down_after(self, d: Device) -> float:
        """The device's down_after now (computed when needed, not at every heartbeat)."""
        k = liveness.down_after(self._fixed_down, d.recent_lost, d.recent_exp,
                                self._max_down_after)  # fmt: skip
        d.down_k = k
        return k

    def _judge(self, d: Device, mono: float, wall: float, down_reason: str) -> int:
        k = self._down_after(d)
        to = liveness.judge(d.state, (mono - d.seen) / d.interval, self._late_after, k)
        if to is not None:
            self._transition(d, to, down_reason if to == "down" else "late", wall)
        d.deadline = liveness.deadline(d.state, d.seen, d.interval, self._late_after, k)
        return 0 if to is None else 1

    def _transition(self, d: Device, to: str, reason: str, now: float) -> None:
        self._log.add(d, d.state, to, reason, now=now, mono=self._mono())
        d.state = to
        d.state_since = now
        self._dirty.add(d.id)

    # --- reads (the contract) ---------------------------------------------------

    def devices(self) -> list[dict[str, Any]]:
        """Every device as a JSON-ready dict, sorted by id; built in chunks, releasing the
        lock between them: each dict is consistent, and receivers never wait for long."""
        with self._lock:  # copies only: sorting, and finding the missing, come after
            ids, listed = list(self._devices), self._life.listed()
        ids.sort()
        missing = self._life.missing_of(listed, set(ids))
        return merge(self._each(ids, LOCK_CHUNK, self._snapshot), missing)

    def _each(self, ids: list[str], chunk: int, read: Callable[[Device], Any]) -> list[Any]:
        """`read` of each device still known, `chunk` devices per lock hold; None is left out."""
        out = []
        for i in range(0, len(ids), chunk):
            with self._lock:
                for k in ids[i : i + chunk]:
                    d = self._devices.get(k)
                    if d is not None and (got := read(d)) is not None:
                        out.append(got)
        return out

    def device(self, dev_id: str) -> Optional[dict[str, Any]]:
        """One device as a JSON-ready dict, or None when unknown."""
        with self._lock:
            d = self._devices.get(dev_id)
            return self._snapshot(d) if d is not None else self._life.missing_one(dev_id)

    def _snapshot(self, d: Device) -> dict[str, Any]:
        self._down_after(d)
        return self._life.dress(d.snapshot())

    def events(self, since: float = 0.0, limit: int = 1000) -> list[dict[str, Any]]:
        """Events with time > since, oldest first; the newest `limit` when more match."""
        with self._lock:
            return self._log.since(since, limit)

    def apply_limits(self, config: CollectorSection) -> None:
        """Take new judgement settings (late_after, down_after, limits) from a reload."""
        with self._lock:
            self.config = config
            self._fixed_down = None if config.down_after == "auto" else float(config.down_after)
            self._late_after = config.late_after
            self._max_devices = config.max_devices
            self._max_payload = config.max_payload
            self._max_down_after = config.max_down_after
            self._budget.apply(config)
            self._log.max_per_minute = config.max_events_per_minute
            self._eviction.evict_after = config.evict_after
            self._life.forget_after = config.forget_after

    def stats(self) -> dict[str, Any]:
        """Counters for /metrics and the dashboard header."""
        with self._lock:
            readers = list(self._kernel_drops.items())
            out = {
                **self._intake.stats(),
                **self._life.stats(),  # devices by state (the missing too), expected, forgotten
                "devices_known": len(self._devices),
                "devices_unconfirmed": len(self._eviction.unconfirmed),
                "max_devices": self._max_devices,
                "evicted": dict(self._eviction.evicted),
                "events_suppressed": self._log.suppressed,
                "events_unsaved": self._log.unsaved,
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
        Built in chunks, releasing the lock between them (see `devices`).
        """
        with self._lock:
            dirty, self._dirty = self._dirty, set()
            events = self._log.take()
        tags_json: dict[int, str] = {}

        def row(d: Device) -> Optional[tuple[Any, ...]]:
            if not d.confirmed:
                return None
            self._down_after(d)
            return row_of(d, tags_json)

        return self._each(list(dirty), chunk, row), events

    def take_heard(self) -> list[dict[str, Any]]:
        """The events added since the last call, each once, for the alerts (`EventLog.hear`)."""
        with self._lock:
            return self._log.hear()

    def requeue(self, rows: list[tuple[Any, ...]], events: list[dict[str, Any]]) -> int:
        """Give back what a failed store write took, so the next flush tries again: rows
        stay one per device; events are capped (the newest kept). Returns how many went."""
        with self._lock:
            self._dirty.update(row[0] for row in rows)
            return self._log.requeue(events)

    def restore(self, rows: list[tuple[Any, ...]], events: list[dict[str, Any]]) -> int:
        """Load stored devices and events at start; judge the silent ones at once.

        Returns how many devices were loaded. A row or event that cannot be read, or a
        device beyond max_devices (the least recently seen go), is skipped and counted
        in `rows_skipped`; nothing in the store can stop a start.
        """
        with self._lock:
            wall, mono = self._clock(), self._mono()
            skipped = self._log.restore(events)
            revived, bad = self._life.restore(rows, events, wall, mono,
                                              share=self._budget.share_sets,
                                              max_devices=self._max_devices)  # fmt: skip
            for d in revived:
                if d.state in ("up", "late"):
                    self._judge(d, mono, wall, "silent_through_restart")
            self.rows_skipped += skipped + bad
            return len(self._devices)
