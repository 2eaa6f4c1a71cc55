"""Who goes when `max_devices` is full and a heartbeat comes from a new id.

First the device heard once and never again that arrived first, else the device
silent longest if silent for more than `evict_after`; else nobody (the newcomer
is rejected). A device heard twice is never evicted by junk, and a device the
expected_devices file lists (`keep`) never at all: the operator said it should be
there, so a silent one stays down (and alerted) rather than turning "missing" with its
history deleted; when only listed devices could go, the newcomer is rejected
(`max_devices`). Not thread-safe by itself: `collector.fleet.Fleet` calls it under its
lock.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Container, Iterable
from typing import Optional

from fleetbeat.collector.device import Device

SILENT_RESCAN = 10.0  # s between scans for long-silent devices to evict (O(devices) each)
MAX_FORGOTTEN = 10_000  # evicted ids kept for the store to delete


class Eviction:
    """The eviction order of the fleet's `devices` (the same dict: it deletes from it)."""

    def __init__(self, devices: dict[str, Device], evict_after: float) -> None:
        self._devices = devices
        self.evict_after = evict_after
        # devices heard once, oldest first: the first to go
        self.unconfirmed: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._silent: list[str] = []  # long-silent ids found by the last scan, longest last
        self._scan_at = -math.inf
        self.evicted = {"unconfirmed": 0, "silent": 0}
        self._forgotten: collections.deque[str] = collections.deque(maxlen=MAX_FORGOTTEN)
        self.keep: Container[str] = ()  # the listed ids: never evicted (`lifecycle`)

    def admit(self, dev_id: str) -> None:
        """A new device heard once: the first to go, unless it is listed."""
        if dev_id not in self.keep:
            self.unconfirmed[dev_id] = None

    def make_room(self, mono: float) -> Optional[str]:
        """Remove one device by the policy above; its id, or None when nothing may go."""
        if self.unconfirmed:
            dev_id, _ = self.unconfirmed.popitem(last=False)
            self.evicted["unconfirmed"] += 1
            del self._devices[dev_id]
            return dev_id
        for rescan in (False, True):
            if rescan:
                if mono < self._scan_at:
                    return None
                self._scan_at = mono + SILENT_RESCAN  # one O(n) scan per 10 s at most
                keep = self.keep
                found = [(d.seen, k) for k, d in self._devices.items()
                         if mono - d.seen > self.evict_after and k not in keep]  # fmt: skip
                found.sort(reverse=True)
                self._silent = [k for _, k in found]
            while self._silent:
                dev_id = self._silent.pop()
                d = self._devices.get(dev_id)
                if d is not None and mono - d.seen > self.evict_after and dev_id not in self.keep:
                    self.evicted["silent"] += 1
                    del self._devices[dev_id]
                    self._forgotten.append(dev_id)  # stored: the store may delete it
                    return dev_id
        return None

    def release(self, dev_ids: Iterable[str]) -> list[str]:
        """Remove devices another collector judges now: no event, never down, and the
        store deletes them (`take_forgotten`). Returns the ids that were known."""
        gone = [k for k in dev_ids if self._devices.pop(k, None) is not None]
        for dev_id in gone:
            self.unconfirmed.pop(dev_id, None)
            self._forgotten.append(dev_id)
        return gone

    def take_forgotten(self) -> list[str]:
        """Ids of stored devices evicted since the last call."""
        gone = list(self._forgotten)
        self._forgotten.clear()
        return gone
