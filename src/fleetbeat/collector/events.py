"""The fleet's event log: transitions and restarts, bounded, with a per-device flood guard.

An event's `to` is a state, or "forgotten": the device was removed (`forget`), and has
no state from then on. Not thread-safe by itself: `collector.fleet.Fleet` calls it
under its lock.
"""

from __future__ import annotations

import collections
import math
from typing import Any

from fleetbeat.collector.device import Device
from fleetbeat.collector.liveness import STATES

MAX_EVENTS_IN_MEMORY = 10_000
FORGOTTEN = "forgotten"  # an event's `to` when the device was removed: no state after it
MAX_GONE = 10_000  # forgotten ids whose forget time is kept (`EventLog.gone`)


class EventLog:
    """The newest events for readers, and the ones the store has not written yet."""

    def __init__(self, max_per_minute: int) -> None:
        self.max_per_minute = max_per_minute
        self._events: collections.deque[dict[str, Any]] = collections.deque(
            maxlen=MAX_EVENTS_IN_MEMORY
        )
        self._new: list[dict[str, Any]] = []  # not yet handed to the store
        self._unheard: list[dict[str, Any]] = []  # not yet handed to the alerts (`hear`)
        self.suppressed = 0  # past max_per_minute
        self.unsaved = 0  # dropped by `requeue` while the store could not write
        self.takes = 0  # calls of `take`: what the store was handed, in order
        # the last MAX_GONE forgotten ids: id -> (forget time, the device's clock skew then),
        # so a requeued write cannot bring back their events, nor (`device.replayed`) a
        # captured signed heartbeat the device itself
        self.gone: collections.OrderedDict[str, tuple[float, float]] = collections.OrderedDict()

    def add(self, d: Device, from_: Any, to: str, reason: str, *, now: float, mono: float) -> None:
        """Log a device's event at wall time `now`; past the per-minute cap it is only counted."""
        if not d.confirmed:  # junk heard once leaves no trace in the event log
            return
        if mono - d.ev_start >= 60.0:
            d.ev_start = mono
            d.ev_count = 0
        d.ev_count += 1
        if d.ev_count > self.max_per_minute:
            self.suppressed += 1
            if d.ev_count > self.max_per_minute + 1:
                return
            reason = "flapping"  # one event says the rest of this minute's were left out
        ev = {"time": now, "device": d.id, "from": from_, "to": to, "reason": reason}
        self._append(ev)

    def _append(self, ev: dict[str, Any]) -> None:
        self._events.append(ev)
        self._new.append(ev)
        self._unheard.append(ev)
        if len(self._unheard) > MAX_EVENTS_IN_MEMORY:  # nobody is listening: the oldest go
            del self._unheard[: len(self._unheard) - MAX_EVENTS_IN_MEMORY]

    def since(self, since: float, limit: int) -> list[dict[str, Any]]:
        """Copies of the events with time > since, oldest first; the newest `limit` of them."""
        found = [dict(e) for e in self._events if e["time"] > since]
        return found[-limit:] if limit > 0 else []

    def take(self) -> list[dict[str, Any]]:
        """The events added since the last call (for the store)."""
        new, self._new = self._new, []
        self.takes += 1
        return new

    def hear(self) -> list[dict[str, Any]]:
        """The events added since the last call, for the alerts: each event once, in the
        order added, whatever forgets and failed store writes did to the store's queue."""
        new, self._unheard = self._unheard, []
        return new

    def forget(self, devices: list[Device], reason: str, now: float) -> None:
        """Devices removed from the fleet: their events leave memory (the store deletes its
        own), and one event each records it, past any per-minute cap (none for a device
        heard once: it left no trace)."""
        gone = {d.id for d in devices}
        self._events = collections.deque((e for e in self._events if e["device"] not in gone),
                                         maxlen=MAX_EVENTS_IN_MEMORY)  # fmt: skip
        self._new = [e for e in self._new if e["device"] not in gone]
        for d in devices:
            self.remember_gone(d.id, now, d.clock_skew)
            if d.confirmed:
                ev = {"time": now, "device": d.id, "from": d.state, "to": FORGOTTEN,
                      "reason": reason}  # fmt: skip
                self._append(ev)

    def remember_gone(self, dev_id: str, when: float, skew: float) -> None:
        """Keep `dev_id`'s forget time (and clock skew) in `gone`, the newest MAX_GONE."""
        gone = self.gone
        gone[dev_id] = (when, skew)
        gone.move_to_end(dev_id)
        while len(gone) > MAX_GONE:
            gone.popitem(last=False)

    def requeue(self, events: list[dict[str, Any]]) -> int:
        """Give back what a failed write took, the newest MAX_EVENTS_IN_MEMORY kept; dropped."""
        if self.gone:  # a device forgotten while this write failed: its old events are gone
            gone, never = self.gone, (-math.inf, 0.0)
            events = [e for e in events if e["to"] == FORGOTTEN
                      or e["time"] > gone.get(e["device"], never)[0]]  # fmt: skip
        pending = events + self._new
        dropped = max(0, len(pending) - MAX_EVENTS_IN_MEMORY)
        self._new = pending[dropped:]
        self.unsaved += dropped
        return dropped

    def restore(self, events: list[dict[str, Any]]) -> int:
        """Load stored events at start; return how many could not be read (skipped)."""
        skipped = 0
        for ev in events:
            if event_ok(ev):
                self._events.append(ev)
            else:
                skipped += 1
        return skipped


_TO = (*STATES, FORGOTTEN)


def event_ok(ev: Any) -> bool:
    """True for a stored event whose every field can be served again."""
    try:
        return (
            type(ev) is dict and type(ev["time"]) is float and math.isfinite(ev["time"])
            and type(ev["device"]) is str and ev["from"] in (None, *STATES)
            and ev["to"] in _TO and type(ev["reason"]) is str
        )  # fmt: skip
    except (KeyError, TypeError):
        return False
