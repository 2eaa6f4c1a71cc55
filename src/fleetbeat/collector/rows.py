"""The SQLite row codec: a device as a stored row and back, distrusting what is stored."""

from __future__ import annotations

import json
import math
from typing import Any, Optional

from fleetbeat import wire
from fleetbeat.collector.device import OLD_RUNS, Device, addr_text
from fleetbeat.collector.intake import TRANSPORTS
from fleetbeat.collector.liveness import STATES
from fleetbeat.collector.loss import SeqTracker

ROW_COLUMNS = (
    "id", "state", "state_since", "last_seen", "addr", "transport", "run", "prev_run",
    "boot_time", "interval", "version", "tags", "metrics", "clock_skew", "restarts", "reboots",
    "agent_drops", "down_k", "counters", "hb_received", "hb_expected",
)  # fmt: skip
"""The columns of a stored device row, in order (see `store`). `prev_run` holds the last
OLD_RUNS runs, newest first, space-separated, so replay protection survives a restart.
`hb_received` and `hb_expected` are the heartbeat stream's lifetime totals, written for
the store's hourly loss table (`store.Store.write`); `revive` reads them from `counters`."""
HB_RECEIVED = ROW_COLUMNS.index("hb_received")
HB_EXPECTED = ROW_COLUMNS.index("hb_expected")


def row_of(d: Device, tags_json: dict[int, str]) -> tuple[Any, ...]:
    tags = tags_json.get(id(d.tags))
    if tags is None:
        tags = tags_json[id(d.tags)] = json.dumps(d.tags)
    hb, rd = d.hb, d.rd
    counters = [
        *((hb.highest, hb.received, hb.expected, hb.duplicates, hb.reordered) if hb else ()),
        *((rd.highest, rd.received, rd.expected) if rd else ()),
    ]
    now_r, now_e = (hb.received, hb.expected) if hb is not None else (0, 0)
    return (
        d.id, d.state, d.state_since, d.last_seen, addr_text(d.addr), d.transport, d.run,
        d.old_runs, d.boot_time, d.interval, d.version, tags,
        json.dumps(dict(zip(d.metric_names, d.metric_values))), d.clock_skew, d.restarts,
        d.reboots, d.agent_drops, d.down_k,
        json.dumps([int(hb is not None), int(rd is not None), *counters, *d.prior, *d.rd_prior,
                    d.cur_lost, d.cur_exp, d.recent_lost, d.recent_exp]),
        d.prior[0] + now_r, d.prior[1] + now_e,
    )  # fmt: skip


def _finite(x: Any) -> float:
    """A stored number as a finite float; ValueError for anything else (a bool, inf, text)."""
    if type(x) is not float and type(x) is not int:
        raise ValueError(repr(x)[:40])
    value = float(x)  # OverflowError for an integer beyond a double: caught by `revive`
    if not math.isfinite(value):
        raise ValueError(repr(x)[:40])
    return value


def _count(x: Any) -> int:
    """A stored counter: a non-negative int within 64 bits."""
    if type(x) is not int or not 0 <= x <= wire.MAX_SEQ:
        raise ValueError(repr(x)[:40])
    return x


def _text(x: Any, pattern: Any = None) -> str:
    """Stored text that can be encoded and served again (and matches `pattern` if given)."""
    if type(x) is not str or len(x) > wire.MAX_TEXT * 2 or (pattern and not pattern(x)):
        raise ValueError(repr(x)[:40])
    x.encode()  # UnicodeEncodeError (a ValueError) for a lone surrogate
    return x


def lifetime_totals(counters: Any) -> Optional[tuple[int, int]]:
    """The heartbeat stream's lifetime (received, expected) from a stored `counters`
    (for a version-1 row, which has no totals of its own); None when it cannot be read."""
    try:
        c = [_count(x) for x in json.loads(counters)]
        has_hb, has_rd = c[0], c[1]
        at = 2 + 5 * has_hb + 3 * has_rd  # `prior` follows the two trackers' figures
        received, expected = c[at], c[at + 1]
        if has_hb:
            received, expected = received + c[3], expected + c[4]
    except (TypeError, ValueError, IndexError, RecursionError, MemoryError):
        return None
    return received, expected


def revive(row: tuple[Any, ...], *, wall: float, mono: float) -> Optional[Device]:
    """A device from a stored row; None when any part of the row cannot be read.

    Its silence is converted once from the wall clock (`wall` now) to the monotonic one.
    """
    try:  # the lifetime totals at the end are derived from `counters`: not read back
        (dev_id, state, state_since, last_seen, addr, transport, run, prev_run, boot_time,
         interval, version, tags, metrics, clock_skew, restarts, reboots, agent_drops, down_k,
         counters, *_totals) = row  # fmt: skip
        d = Device(_text(dev_id, wire.DEVICE_ID.fullmatch), _finite(state_since), 0.0)
        d.confirmed = True  # only confirmed devices are stored
        d.state = state if state in STATES else "down"
        d.last_seen = _finite(last_seen)
        d.addr = _text(addr)
        d.transport = transport if transport in TRANSPORTS else "udp"
        d.run = _text(run)
        runs = _text(prev_run).split()  # the previous runs, newest first
        if not all(wire.RUN_ID.fullmatch(r) for r in runs):
            raise ValueError("prev_run")
        d.old_runs = " ".join(runs[:OLD_RUNS])
        d.boot_time = None if boot_time is None else _finite(boot_time)
        d.interval = _finite(interval)
        if not wire.MIN_INTERVAL <= d.interval <= wire.MAX_INTERVAL:
            return None
        d.version = None if version is None else _text(version)
        t = json.loads(tags)
        d.tags = {_text(k): _text(v) for k, v in t.items()}
        m = json.loads(metrics)
        d.metric_names = tuple(_text(k) for k in m)
        d.metric_values = tuple(v if type(v) is int and -(2**63) <= v <= wire.MAX_SEQ
                                else _finite(v) for v in m.values())  # fmt: skip
        d.clock_skew = _finite(clock_skew)
        d.restarts = _count(restarts)
        d.reboots = _count(reboots)
        d.agent_drops = _count(agent_drops)
        k = _finite(down_k)
        d.down_k = int(k) if k.is_integer() else k
        c = [_count(x) for x in json.loads(counters)]
        has_hb, has_rd, c = c[0], c[1], c[2:]
        if has_hb:
            tr = SeqTracker(c[0])
            tr.received, tr.expected, tr.duplicates, tr.reordered = c[1:5]
            tr.resync = True  # what was sent while the collector was away is not network loss
            d.hb = tr
            c = c[5:]
        if has_rd:
            tr = SeqTracker(c[0])
            tr.received, tr.expected = c[1:3]
            tr.resync = True
            d.rd = tr
            c = c[3:]
        d.prior = (c[0], c[1], c[2], c[3])
        d.rd_prior = (c[4], c[5])
        d.cur_lost, d.cur_exp, d.recent_lost, d.recent_exp = c[6:10]
        if d.state in ("up", "late"):
            d.deadline = -math.inf  # judged at once
        # wall time converted once: how long ago, on the monotonic clock
        d.seen = mono - max(0.0, wall - d.last_seen)
        d.ev_start = mono
    except (TypeError, ValueError, IndexError, AttributeError, KeyError, OverflowError,
            RecursionError, MemoryError):  # fmt: skip
        return None
    return d
