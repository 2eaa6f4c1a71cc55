"""A device's life beyond liveness: expected before it speaks (`missing`), restored from
the store at start (`Lifecycle.restore`), and forgotten.

**Expected devices.** `expected_devices` names a file of expected ids (`expected`, which
reads it).
An expected id the fleet does not know (never heard from, or forgotten) is a device in
state `missing` to every reader (`Fleet.devices()`, `device()`, `stats()`), since the
collector started or the id was added to the file (or it was forgotten), with the
file's tags and nothing else known (last_seen, interval, boot_time, version null). It
is not in `Fleet._devices`: it takes no place among `max_devices` until it speaks (then
it needs one like any new device), junk ids cannot evict it, and it blocks no real
device. The alerts call it `missing` once it has been so for `missing_after`
(`alerts.Alerts`). When it speaks it is an ordinary new device, and its `first_seen`
event says `from: "missing"`. A device that speaks has its heartbeat's tags; the file's
tags fill in the keys its heartbeat lacks, wherever it is read (the API, `/metrics`,
the alerts' grouping), while the store keeps the heartbeat's own. An expected device
known to the fleet is simply a device (`listed: true`), never evicted
(`Eviction.keep`), never forgotten by `forget_after` (nor, once it leaves the list,
until forget_after has passed since then).

**Forgetting.** `Fleet.forget` (`DELETE /api/devices/{id}`, `fleetbeat forget`) and,
once a minute at most, `forget_after` (devices `down` or `offline` that long, by both
clocks, unless expected; `MAX_FORGET_PER_SCAN` a scan) remove a device from the fleet
and its events from memory, and log one event (`to` "forgotten", reason "forgotten" or
"forget_after"). The store deletes its row, events and history (`Store.forget`, through
`Fleet.take_forgotten`) at the first flush after one whose batch was taken after the
forget: so that delete comes after any write of the device's old row, and before the
write of the event that records it. A forgotten device that speaks again is new; but
for STRANGER_SLACK its forget time counts (`EventLog.gone`, rebuilt at start from the
stored `forgotten` events), so that a signed message no newer than the forget is a
replay (`device.replayed`), not the device back.
Not thread-safe by itself: the fleet calls `Lifecycle` under its lock.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Container, Mapping
from threading import Lock
from typing import Any, Callable, Optional

from fleetbeat.collector.device import STRANGER_SLACK, Device
from fleetbeat.collector.events import FORGOTTEN, EventLog, event_ok
from fleetbeat.collector.eviction import Eviction
from fleetbeat.collector.expected import Expected, ExpectedError
from fleetbeat.collector.liveness import count_by_state
from fleetbeat.collector.rows import revive

SCAN_EVERY = 60.0  # s between forget_after scans (O(devices) each, under the lock)
MAX_FORGET_PER_SCAN = 1000  # the rest wait for the next scan: each flush stays small
UNHEARD = ("down", "offline")  # the states forget_after applies to


def _missing_template() -> dict[str, Any]:
    """A device dict with every key a tracked device's has, nothing known yet."""
    t = Device("-", 0.0, 0.0).snapshot()
    t.update(state="missing", last_seen=None, addr="", transport="", run="", boot_time=None,
             interval=None, version=None, clock_skew=None, down_after_effective=None,
             confirmed=False, listed=True)  # fmt: skip
    return t


_MISSING = _missing_template()
Missing = tuple[str, Mapping[str, str], float]  # id, tags, missing since (epoch s)


def missing_snapshot(m: Missing) -> dict[str, Any]:
    """The JSON-ready dict of a missing device (`view.FleetView.devices`)."""
    dev_id, tags, since = m
    return {**_MISSING, "id": dev_id, "state_since": since, "tags": dict(tags), "metrics": {}}


def merge(known: list[dict[str, Any]], missing: list[Missing]) -> list[dict[str, Any]]:
    """The tracked devices' dicts (sorted by id) and the missing ones', sorted by id."""
    if not missing:
        return known
    # two sorted runs: Timsort merges them in linear time
    return sorted(known + [missing_snapshot(m) for m in missing], key=lambda d: str(d["id"]))


class Roster(dict[str, Device]):
    """The fleet's devices by id, counting those the expected list names (`listed_known`),
    so that the count of missing ones costs nothing to read (`Lifecycle.stats`)."""

    def __init__(self) -> None:
        super().__init__()
        self.listed: Container[str] = ()
        self.listed_known = 0

    def __setitem__(self, k: str, v: Device) -> None:
        if k not in self and k in self.listed:
            self.listed_known += 1
        super().__setitem__(k, v)

    def __delitem__(self, k: str) -> None:
        super().__delitem__(k)
        if k in self.listed:
            self.listed_known -= 1

    def pop(self, k: str, *default: Any) -> Any:
        if k in self and k in self.listed:
            self.listed_known -= 1
        return super().pop(k, *default)

    def relist(self, listed: dict[str, Any]) -> None:
        """A new expected list: counted over the smaller of the two."""
        self.listed = listed
        small, big = (self, listed) if len(self) <= len(listed) else (listed, self)
        self.listed_known = sum(1 for k in small if k in big)


class Lifecycle:
    """The expected ids and the forgetting, over the fleet's devices, eviction and log.

    The expected list (`_expected`) is replaced whole by `expect` and never changed in
    place (a forget's new missing-since goes to `_reset`): readers may copy the reference
    under the fleet's lock and read it after (`listed`, `missing_of`)."""

    def __init__(self, devices: Roster, eviction: Eviction, log: EventLog) -> None:
        self._devices = devices
        self._eviction = eviction
        self._log = log
        self._expected: dict[str, tuple[Mapping[str, str], float]] = {}  # id -> tags, since
        self._reset: dict[str, float] = {}  # listed ids forgotten: missing again since then
        self._pending: list[tuple[str, int]] = []  # forgotten, stored: id, log takes then
        self._scan_at = -math.inf
        self._unlisted: dict[str, float] = {}  # tracked ids that left the list: id -> when
        self.forget_after = 0.0  # s; 0: never
        self.forgotten = {"forgotten": 0, "forget_after": 0}

    def expect(
        self, expected: Expected, now: float, lock: Lock, *, path: str = ""
    ) -> tuple[int, int]:
        """A new list of expected ids (sorted here); (how many were added, removed). Built
        outside the fleet's `lock` (only the main thread replaces the list), installed
        under it in O(devices) at most, never O(ids listed).

        With `path` (a SIGHUP re-read of that file): ExpectedError, and the old list kept,
        when the new one keeps none of a non-empty old list (an empty or all-comment file,
        a generator that failed): it would lift every listed device's protection at once.
        A listed device that leaves the list is not forgotten by `forget_after` until
        forget_after has passed since it left (`scan`)."""
        old = self._expected
        if path and old and expected.keys().isdisjoint(old):
            raise ExpectedError([f"{path}: lists none of the {len(old)} expected devices "
                                 "(empty, or all comments?): refused; to clear the list, set "
                                 'expected_devices = "" and reload'])  # fmt: skip
        new = {k: (expected[k], old[k][1] if k in old else now) for k in sorted(expected)}
        added = len(new) - sum(1 for k in old if k in new)
        removed = {k for k in old if k not in new}
        with lock:
            self._expected = new
            self._devices.relist(new)
            self._eviction.keep = new  # listed devices are never evicted
            unconfirmed, devices = self._eviction.unconfirmed, self._devices
            for k in [k for k in unconfirmed if k in new]:  # no longer the first to go
                del unconfirmed[k]
            for k in [k for k in self._unlisted if k in new]:
                del self._unlisted[k]
            for k in [k for k in self._reset if k not in new]:
                del self._reset[k]
            left = (k for k in removed if k in devices) if len(removed) < len(devices) else (
                k for k in devices if k in removed)  # fmt: skip
            for k in left:  # protected until now: forget_after counts from here
                self._unlisted[k] = now
        return added, len(removed)

    def __len__(self) -> int:
        return len(self._expected)

    def listed(self) -> dict[str, tuple[Mapping[str, str], float]]:
        """The expected list as it is now (under the fleet's lock; read it after)."""
        return self._expected

    def missing_of(self, listed: dict[str, tuple[Mapping[str, str], float]],
                   known: Container[str]) -> list[Missing]:  # fmt: skip
        """The ids of `listed` not in `known`, sorted: no lock needed (see the class)."""
        reset = self._reset
        return [(k, e[0], reset.get(k, e[1])) for k, e in listed.items() if k not in known]

    def missing_one(self, dev_id: str) -> Optional[dict[str, Any]]:
        e = self._expected.get(dev_id)
        if e is None or dev_id in self._devices:
            return None
        return missing_snapshot((dev_id, e[0], self._reset.get(dev_id, e[1])))

    def dress(self, snap: dict[str, Any]) -> dict[str, Any]:
        """A tracked device's dict: `listed` (expected), the file's tags its heartbeat lacks."""
        e = self._expected.get(snap["id"])
        snap["listed"] = e is not None
        if e is not None:
            tags = snap["tags"]
            for k, v in e[0].items():
                tags.setdefault(k, v)
        return snap

    def confirm(self, d: Device, now: float, mono: float) -> None:
        """A device heard a second time is real: it is stored and its events are kept (the
        first, `first_seen`, from "missing" for an expected id)."""
        d.confirmed = True
        self._eviction.unconfirmed.pop(d.id, None)
        was = "missing" if d.id in self._expected else None
        self._log.add(d, was, d.state, "first_seen", now=now, mono=mono)

    def forget_one(self, dev_id: str, reason: str, now: float, dirty: set[str]) -> bool:
        """`forget` the device `dev_id`; False when the fleet tracks none of that id."""
        d = self._devices.get(dev_id)
        if d is not None:
            self.forget([d], reason, now, dirty)
        return d is not None

    def forget(self, gone: list[Device], reason: str, now: float, dirty: set[str]) -> None:
        """Remove `gone` from the fleet: the event, the store's delete to come, and an
        expected one missing again from `now`."""
        for d in gone:
            del self._devices[d.id]
            self._eviction.unconfirmed.pop(d.id, None)
            dirty.discard(d.id)
            if d.id in self._expected:
                self._reset[d.id] = now
            if d.confirmed:  # stored (a device heard once never was)
                self._pending.append((d.id, self._log.takes))
        self._log.forget(gone, reason, now)
        self.forgotten[reason] += len(gone)

    def scan(self, mono: float, wall: float, dirty: set[str]) -> int:
        """Forget the devices down or offline for `forget_after`, once a minute at most."""
        if self.forget_after <= 0 or mono < self._scan_at:
            return 0
        self._scan_at = mono + SCAN_EVERY
        wall_by, mono_by = wall - self.forget_after, mono - self.forget_after
        grace = self._unlisted  # left the list less than forget_after ago: not yet
        for k in [k for k, at in grace.items() if at <= wall_by or k not in self._devices]:
            del grace[k]
        old = [d for d in self._devices.values()
               if d.state in UNHEARD and d.state_since <= wall_by and d.seen <= mono_by
               and d.id not in self._expected and d.id not in grace]  # fmt: skip
        if len(old) > MAX_FORGET_PER_SCAN:  # the longest down first
            old = heapq.nsmallest(MAX_FORGET_PER_SCAN, old, key=lambda d: d.state_since)
        if old:
            self.forget(old, "forget_after", wall, dirty)
        return len(old)

    def stats(self) -> dict[str, Any]:
        """For `Fleet.stats`: devices by state, the missing ones too; expected; forgotten."""
        states = count_by_state(d.state for d in self._devices.values())
        states["missing"] += len(self._expected) - self._devices.listed_known
        return {"devices": states, "devices_expected": len(self._expected),
                "forgotten": dict(self.forgotten)}  # fmt: skip

    def restore(self, rows: list[tuple[Any, ...]], events: list[dict[str, Any]], wall: float,
                mono: float, *, max_devices: int,
                share: Callable[[Device], None]) -> tuple[list[Device], int]:  # fmt: skip
        """Devices from the store's rows at start, each taking the fleet's shared sets:
        (those kept, how many were skipped: unreadable, twice, or past max_devices, where
        the least recently seen go); and, from the stored events, the devices forgotten
        within STRANGER_SLACK (`EventLog.gone`; their clock skew is not kept: 0)."""
        forgets = [e for e in events if event_ok(e) and e["to"] == FORGOTTEN]
        for ev in sorted(forgets, key=lambda e: float(e["time"])):
            if wall - STRANGER_SLACK <= ev["time"] <= wall:
                self._log.remember_gone(ev["device"], ev["time"], 0.0)
        revived, skipped = [], 0
        for row in rows:
            d = revive(row, wall=wall, mono=mono)
            if d is None or d.id in self._devices:
                skipped += 1
                continue
            share(d)
            self._devices[d.id] = d
            revived.append(d)
        over = len(self._devices) - max_devices
        if over > 0:
            revived.sort(key=lambda x: x.last_seen)
            for d in revived[:over]:
                del self._devices[d.id]
            skipped += over
            revived = revived[over:]
        return revived, skipped

    def take_forgotten(self) -> list[str]:
        """Forgotten ids the store may delete now: those forgotten before the last batch
        the store was handed (`EventLog.take`), so no row of theirs can follow the delete."""
        takes = self._log.takes
        ready = [k for k, at in self._pending if at < takes]
        if ready:
            self._pending = [(k, at) for k, at in self._pending if at >= takes]
        return ready
