"""The history side of the HTTP API: `/api/devices` (pages, fields, availability) and the
routes read from the store. Times are epoch seconds; every answer is JSON.

    GET /api/devices                ?state= ?tag= (see `http`) ?fields=id,state,...
                                    ?limit=N ?offset=N: a page of the list sorted by id;
                                    "total" (and "count"): devices after the filters;
                                    each device has "availability" (below)
    GET /api/devices/{id}/history   ?since= ?until= (default: the 7 days up to now) ->
                                    segments [{from, to, state, reason}], hours
                                    [{hour, received, expected}] (or {hour, received:
                                    null, expected: null, base: true}: an hour that
                                    cannot be told, `history.hourly`), availability, truncated
                                    (true: only the newest MAX_EVENTS events were read,
                                    and the time before the oldest one read is no
                                    state, in the segments and the availability);
                                    404 unknown
    GET /api/timelines              ?since= ?until= (default 24 h, at most 7 d) ?id=a&id=b
                                    (or id=a,b; at most MAX_IDS, 200) -> {"devices": {id:
                                    [[from, to, state, reason], ...]}, "truncated": [ids]}
                                    (ids not known are left out; nothing finer than
                                    1/STRIP_PIXELS of the range: shorter neighbours are
                                    one segment in their worst state, reason "merged";
                                    "truncated": the ids with more than MAX_STRIP events
                                    in the range, whose strip starts at the oldest event
                                    read, no state before it)
    GET /api/fleet/history          ?since= ?until= (default 24 h; to the minute: since
                                    rounded down, until up) ?step=900 (60 s to 1 d,
                                    at most 2,000 buckets) -> buckets [{time, up, late,
                                    down, offline, missing}]: each device once per bucket,
                                    down if down at any moment in it, else in the state it
                                    held longest there (`history.Buckets`)
    GET /api/availability           ?by=site,room (tag keys, answered sorted; none: one
                                    group) -> groups
                                    [{tags, devices, availability}] time-weighted over
                                    their devices (no tag: the value ""), and the worst
                                    10 devices by 7-day availability

`availability` is {"24h": %, "7d": %, "30d": %, "since": epoch s}: time up or late over
time up, late or down (offline, missing and unknown time are left out), from the
stored events, over the part of each window since `since`, the start of the device's
counted time; null where nothing was counted (`collector.history`). A range is at most
31 days, `since` before `until`; a bad parameter is a 400 naming it. A store that
cannot be read is a 503.

The fleet-wide answers (the availability of every device, used by `/api/devices` and
`/metrics`; the fleet buckets; the groups) are cached for CACHE_TTL seconds, keyed by
the parsed values (the fleet history's since and until rounded to the minute, ROUND;
the groups' tag keys sorted), at most CACHED_KEYS of them, and each is computed by one
thread at a time, so a burst of requests never rescans SQLite per request: the others
asking for the same answer get its previous value meanwhile, or wait for the first
(BUSY_WAIT seconds at most, then 503); a request for another answer does not wait.
Kept in memory: per device one tally (`history.Tally`:
since, and the seconds good and counted in each window, which the groups need to
weigh their devices), seven doubles in one array (`availability.TallyTable`).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Callable, Optional
from urllib.parse import unquote

from fleetbeat.collector import history as h
from fleetbeat.collector.availability import TallyTable, fleet_tallies
from fleetbeat.collector.http_params import (
    BadRequest,
    by_keys,
    count,
    device_ids,
    field_names,
    filter_devices,
    number,
    time_range,
)
from fleetbeat.collector.liveness import count_by_state
from fleetbeat.collector.store_reader import StoreReader, StoreUnavailable
from fleetbeat.collector.view import FleetView

CACHE_TTL = 60.0  # s a fleet-wide answer is reused
BUSY_WAIT = 5.0  # s a request waits for another thread's computation before a 503
DAY = 86400.0
MIN_STEP, MAX_STEP, MAX_BUCKETS = 60.0, 86400.0, 2000
MAX_LIMIT = 1_000_000
CACHED_KEYS = 32  # distinct fleet-history or group answers remembered
ROUND = 60.0  # s: /api/fleet/history's since is rounded down to it, until up
# Events read per device: a device flapping at max_events_per_minute (10) for 31 days
# leaves 446,400; the newest this many are read (a strip has ~1,000 pixels to show them)
MAX_EVENTS = 10_000  # for one device's history ("truncated": true when there were more)
MAX_STRIP = 1_000  # per device of /api/timelines
# /api/timelines: at most 7 days, and nothing finer than a strip's pixel (the dashboard's
# strips are 200 px wide): at most MAX_IDS x ~2 x STRIP_PIXELS segments an answer
MAX_STRIP_RANGE = 7 * DAY
STRIP_PIXELS = 200

Answer = tuple[int, Any]  # HTTP status, JSON-ready body


class Busy(Exception):
    """Another thread is computing this fleet-wide answer; try again (503)."""


class Cached:
    """Values computed once per key by one thread at a time, reused for `ttl` seconds.

    Each key has its own lock: a slow computation makes only the requests for the same
    key wait (BUSY_WAIT at most, then Busy), or get its previous value meanwhile; other
    keys go on. At most CACHED_KEYS values are kept (the least recently computed go)."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self._guard = threading.Lock()  # held only to look up or store, never to compute
        self._locks: dict[Any, threading.Lock] = {}
        self._values: OrderedDict[Any, tuple[float, Any]] = OrderedDict()

    def get(self, key: Any, compute: Callable[[], Any]) -> Any:
        """The value for `key`: fresh, or the stale one while another thread recomputes."""
        with self._guard:
            found = self._values.get(key)
            if found is not None and self._clock() - found[0] < self.ttl:
                return found[1]
            lock = self._locks.setdefault(key, threading.Lock())
        waits = found is None  # nothing to answer meanwhile: wait for the other thread
        if not lock.acquire(blocking=waits, timeout=BUSY_WAIT if waits else -1):
            if found is not None:
                return found[1]  # being recomputed: the previous answer meanwhile
            raise Busy("another request is computing this answer; try again in a second")
        try:
            with self._guard:
                found = self._values.get(key)  # computed while this thread waited?
            if found is not None and self._clock() - found[0] < self.ttl:
                return found[1]
            value = compute()
            with self._guard:
                self._values[key] = (self._clock(), value)
                self._values.move_to_end(key)
                while len(self._values) > CACHED_KEYS:
                    self._values.popitem(last=False)
            return value
        finally:
            with self._guard:
                if self._locks.get(key) is lock:
                    del self._locks[key]  # the next computation of it takes a new lock
            lock.release()


class HistoryApi:
    """The routes above, reading `fleet` and the store through `reader` (None: no store)."""

    def __init__(
        self,
        fleet: FleetView,
        reader: Optional[StoreReader],
        *,
        clock: Callable[[], float] = time.time,
        ttl: float = CACHE_TTL,
    ) -> None:
        self.fleet = fleet
        self.reader = reader
        self._clock = clock
        self._tallies = Cached(ttl)
        self._fleet = Cached(ttl)

    def route(self, path: str, query: Mapping[str, list[str]]) -> Optional[Answer]:
        """The answer for `path`, or None when it is not one of these routes."""
        try:
            if path == "/api/devices":
                return 200, self.devices_page(query)
            if path.startswith("/api/devices/") and path.endswith("/history") and len(path) > 21:
                return self.device_history(unquote(path[len("/api/devices/") : -8]), query)
            if path == "/api/timelines":
                return 200, self.timelines(query)
            if path == "/api/fleet/history":
                return 200, self.fleet_history(query)
            if path == "/api/availability":
                return 200, self.groups(query)
        except (StoreUnavailable, Busy) as err:
            return 503, {"error": f"history unavailable: {err}"}
        return None

    # --- the fleet-wide tallies (cached) ------------------------------------------

    def tallies(self) -> Mapping[str, h.Tally]:
        """Every device's availability tally, at most CACHE_TTL old ({} without a store)."""
        if self.reader is None:
            return {}
        result: Mapping[str, h.Tally] = self._tallies.get("all", self._compute_tallies)
        return result

    def tallies_or_none(self) -> Mapping[str, h.Tally]:
        """`tallies`, or {} when the store cannot be read (availability null, not an error)."""
        try:
            return self.tallies()
        except (StoreUnavailable, Busy):
            return {}

    def _compute_tallies(self) -> TallyTable:
        now = self._clock()
        current = {d["id"]: (d["state"], d["state_since"]) for d in self.fleet.devices()}
        reader = self._reader()
        since = now - h.LONGEST
        spans = reader.spans(now)
        opened = reader.open_events()
        first = reader.first_counted_from(since)
        pruned = reader.pruned_to()
        return TallyTable(fleet_tallies(spans, opened, first, current, now, pruned_to=pruned))

    def _each_device(self, current: dict[str, tuple[str, float]], since: float, until: float,
                     now: float) -> Any:  # fmt: skip
        """(id, segments) for every device in `current`: two passes over the store."""
        reader = self._reader()
        priors = reader.priors(since)
        pruned = reader.pruned_to()
        done = set()
        for dev, events in reader.scan(since):
            cur = current.get(dev)
            if cur is not None:
                done.add(dev)
                yield dev, h.segments(events, since, until, now, prior=priors.get(dev),
                                      current=cur, pruned_to=pruned)  # fmt: skip
        for dev, cur in current.items():
            if dev not in done:
                yield dev, h.segments((), since, until, now, prior=priors.get(dev), current=cur)

    # --- routes ---------------------------------------------------------------------

    def devices_page(self, query: Mapping[str, list[str]]) -> dict[str, Any]:
        fields = field_names(query)
        limit = count(query, "limit", MAX_LIMIT)
        offset = count(query, "offset", MAX_LIMIT) or 0
        devices = filter_devices(self.fleet.devices(), query.get("state", []),
                                 query.get("tag", []))  # fmt: skip
        devices.sort(key=lambda d: str(d.get("id")))
        total = len(devices)
        counts = count_by_state(str(d.get("state")) for d in devices)
        page = devices[offset:] if limit is None else devices[offset : offset + limit]
        if fields is None or "availability" in fields:
            tallies = self.tallies_or_none()
            for d in page:
                d["availability"] = h.availability(tallies.get(d["id"], h.NO_TALLY))
        if fields is not None:
            page = [{k: d[k] for k in fields if k in d} for d in page]
        return {"time": self._clock(), "total": total, "count": total, "counts": counts,
                "devices": page}  # fmt: skip

    def device_availability(self, dev_id: str) -> dict[str, Optional[float]]:
        """One device's availability from the cache (nulls while it cannot be read)."""
        return h.availability(self.tallies_or_none().get(dev_id, h.NO_TALLY))

    def device_history(self, dev_id: str, query: Mapping[str, list[str]]) -> Answer:
        since, until = time_range(query, 7 * DAY, self._clock())
        dev = self.fleet.device(dev_id)
        if dev is None:
            return 404, {"error": "unknown device", "id": dev_id}
        reader = self._reader()
        now = self._clock()
        current = (dev["state"], dev["state_since"])
        start = min(since, now - h.LONGEST)
        prior, events, cut_short = reader.events(dev_id, start, MAX_EVENTS)
        # truncated: what came before the oldest event read is not known (no state)
        pruned = None if cut_short else reader.pruned_to()
        # the window's own prior: the last of these at or before `since`
        cut = next((i for i, e in enumerate(events) if e[0] > since), len(events))
        w_prior = events[cut - 1] if cut else prior
        segs = h.segments(events[cut:], since, until, now, prior=w_prior, current=current,
                          pruned_to=pruned)  # fmt: skip
        whole = h.segments(events, start, now, now, prior=prior, current=current,
                           pruned_to=pruned)  # fmt: skip
        first = since // 3600.0 * 3600.0
        before, rows = reader.hours(dev_id, first, until)
        hours = h.hourly(rows, before, interval=dev.get("interval"),
                         no_base_before=reader.no_base_before())  # fmt: skip
        return 200, {
            "device": dev_id, "since": since, "until": until,
            "segments": [{"from": a, "to": b, "state": s, "reason": r} for a, b, s, r in segs],
            "hours": hours,
            "availability": h.availability(h.tally(whole, now)),
            "truncated": cut_short,
        }  # fmt: skip

    def timelines(self, query: Mapping[str, list[str]]) -> dict[str, Any]:
        since, until = time_range(query, DAY, self._clock(), longest=MAX_STRIP_RANGE)
        resolution = (until - since) / STRIP_PIXELS
        ids = device_ids(query)
        reader = self._reader()
        now = self._clock()
        pruned = reader.pruned_to()
        out: dict[str, Any] = {}
        truncated = []
        for dev_id in ids:
            dev = self.fleet.device(dev_id)
            if dev is None:
                continue
            prior, events, cut_short = reader.events(dev_id, since, MAX_STRIP)
            if cut_short:
                truncated.append(dev_id)
            segs = h.segments(events, since, until, now, prior=prior,
                              current=(dev["state"], dev["state_since"]),
                              pruned_to=None if cut_short else pruned)  # fmt: skip
            out[dev_id] = [list(s) for s in h.coarsen(segs, resolution)]
        return {"since": since, "until": until, "devices": out, "truncated": truncated}

    def fleet_history(self, query: Mapping[str, list[str]]) -> dict[str, Any]:
        since, until = time_range(query, DAY, self._clock())
        # to the minute, so that any spelling of about the same range is one cached answer
        since, until = math.floor(since / ROUND) * ROUND, math.ceil(until / ROUND) * ROUND
        step = number(query, "step", 900.0)
        if not MIN_STEP <= step <= MAX_STEP:
            raise BadRequest(f"step: expected {MIN_STEP:g} to {MAX_STEP:g} seconds, got {step:g}")
        if (until - since) / step > MAX_BUCKETS:
            least = math.ceil((until - since) / MAX_BUCKETS)
            raise BadRequest(f"step: at most {MAX_BUCKETS} buckets; use a step of at least "
                             f"{least} s for this range")  # fmt: skip
        self._reader()
        key = ("fleet", since, until, step)  # the values, not the text that spelled them

        def compute() -> dict[str, Any]:
            now = self._clock()
            current = {d["id"]: (d["state"], d["state_since"]) for d in self.fleet.devices()}
            buckets = h.Buckets(since, until, step)
            for _, segs in self._each_device(current, since, until, now):
                buckets.add(segs)
            return {"since": since, "until": until, "step": step, "buckets": buckets.result()}

        result: dict[str, Any] = self._fleet.get(key, compute)
        return result

    def groups(self, query: Mapping[str, list[str]]) -> dict[str, Any]:
        by = sorted(by_keys(query))
        self._reader()

        def compute() -> dict[str, Any]:
            tallies = self.tallies()
            devices = ((d["id"], d.get("tags") or {}) for d in self.fleet.devices())
            return {"time": self._clock(), **h.groups(devices, tallies, by)}

        result: dict[str, Any] = self._fleet.get(("groups", *by), compute)
        return result

    def _reader(self) -> StoreReader:
        if self.reader is None:
            raise StoreUnavailable("the collector runs without a store")
        return self.reader
