"""One device's record in the fleet: slots for memory, a JSON-ready snapshot for readers."""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from typing import Any, Optional

from fleetbeat.collector.liveness import rebooted
from fleetbeat.collector.loss import MIN_DOWN_AFTER, RecentLoss, SeqTracker
from fleetbeat.netaddr import hostport

RUN_CHARS = 16  # a run id: 16 hex digits (wire.RUN_ID)
OLD_RUNS = 8  # runs remembered per device: a signed message from one of them is a replay


STRANGER_SLACK = 3600.0  # s a signed message from a device not known may be behind our clock


def replayed(d: Optional[Device], msg: dict[str, Any], now: float,
             forgotten: Mapping[str, tuple[float, float]]) -> bool:  # fmt: skip
    """For a verified (signed) message: could it be a captured one sent again?

    A signature proves who wrote a message, not when. So, for a signed device: a seq of
    its current run that is not newer than the newest accepted (a late arrival is
    refused too: rare on these links, and a replay looks just like one); a run among
    its last OLD_RUNS; a "new" run whose clock is not past the device's last heartbeat
    (a real restart comes later; a device needs a clock that moves forward, from NTP or
    an RTC); and, for a device not known (new, or evicted), a message more than an hour
    behind the collector's clock, or, for one forgotten within STRANGER_SLACK
    (`forgotten`: id -> (forget time, its clock skew then), `events.EventLog.gone`),
    a message whose clock is not past that forget (a captured heartbeat of a retired
    device cannot bring it back). `run in old_runs` matches a whole 16-hex token only.
    """
    run, ts = msg["run"], msg["ts"]
    if d is None:
        gone = forgotten.get(msg["dev"])
        if gone is not None and now - gone[0] <= STRANGER_SLACK and ts <= gone[0] + gone[1]:
            return True
        return bool(ts < now - STRANGER_SLACK)
    if run == d.run:
        tracker = d.rd if msg["k"] == "rd" else d.hb
        return tracker is not None and msg["seq"] <= tracker.highest
    return run in d.old_runs or bool(ts <= d.last_seen + d.clock_skew)


class Device(RecentLoss):
    """One device's state. Slots, not dicts: 100,000 of these must fit in 100 MB."""

    __slots__ = (
        "addr", "agent_drops", "boot_time", "clock_skew", "confirmed", "deadline", "down_k",
        "ev_count", "ev_start", "hb", "id", "interval", "last_seen", "metric_names",
        "metric_values", "old_runs", "prior", "rd", "rd_prior", "reboots", "restarts", "run",
        "seen", "state", "state_since", "tags", "transport", "version",
    )  # fmt: skip

    def __init__(self, dev_id: str, now: float, mono: float) -> None:
        super().__init__()
        self.id = dev_id
        self.state = "up"
        self.state_since = now
        self.last_seen = now  # wall clock: shown, stored
        self.seen = mono  # monotonic clock: what deadlines are judged on
        self.confirmed = False  # a second message arrived (see the eviction policy)
        self.addr: Any = ""  # the socket address tuple as received (formatted when read)
        self.transport = "udp"
        self.run = ""
        self.old_runs = ""  # the last OLD_RUNS runs before this one, newest first, space-separated
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
        self.down_k: float = MIN_DOWN_AFTER  # an int when "auto": small ints are shared
        self.deadline = math.inf  # monotonic time the liveness check has something to do
        self.ev_start = mono  # the events-per-minute window (monotonic) and its count
        self.ev_count = 0

    def heard(self, now: float, mono: float, addr: Any, transport: str) -> None:
        """A message of this device was accepted: when (both clocks), from where, over what."""
        self.last_seen = now
        self.seen = mono
        if self.addr != addr:
            self.addr = addr
        if self.transport is not transport:
            self.transport = transport

    def take_heartbeat(self, msg: dict[str, Any]) -> None:
        """The fields a new heartbeat reports about the agent (tags and metrics aside)."""
        get = msg.get
        self.interval = msg["int"]
        bt = get("bt")
        if bt is not None:
            self.boot_time = bt
        ver = get("ver")
        if ver is not None and ver != self.version:
            self.version = sys.intern(ver) if len(ver) < 40 else ver
        drop = get("drop")
        if drop is not None:
            self.agent_drops = drop

    @property
    def prev_run(self) -> str:
        """The run before this one ("" if none): the first of `old_runs`."""
        return self.old_runs[:RUN_CHARS]

    def start_run(self, run: str, boot_time: Optional[float]) -> str:
        """A new run: "reboot" or "restart" (counted); the finished run joins the lifetime."""
        # one short string, not a tuple of runs: ~150 bytes a device that ever restarted
        runs = [r for r in (self.run, *self.old_runs.split()) if r]
        self.old_runs = " ".join(runs[:OLD_RUNS])
        if self.hb is not None:
            p, f = self.prior, self.hb.figures()
            self.prior = (p[0] + f[0], p[1] + f[1], p[2] + f[2], p[3] + f[3])
        if self.rd is not None:
            self.rd_prior = (self.rd_prior[0] + self.rd.received,
                             self.rd_prior[1] + self.rd.expected)  # fmt: skip
        self.hb = None
        self.rd = None
        self.run = run
        if rebooted(self.boot_time, boot_time):
            self.reboots += 1
            return "reboot"
        self.restarts += 1
        return "restart"

    def count_seq(self, kind: str, seq: int, tracker: Optional[SeqTracker]) -> int:
        """Count `seq` on its stream (`tracker`: readings or heartbeats, None for its first).

        Returns the gap `SeqTracker.add` gives (-1: a duplicate); heartbeats also feed
        the recent-loss window.
        """
        if tracker is None:
            if kind == "rd":
                self.rd = SeqTracker(seq)
            else:
                self.hb = SeqTracker(seq)
            gap = 1
        else:
            gap = tracker.add(seq)
        if kind != "rd" and gap >= 0:
            self.count_loss(gap)
        return gap

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
            "addr": addr_text(self.addr),
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
            "confirmed": self.confirmed,
        }


_NO_TAGS: dict[str, str] = {}


def addr_text(addr: Any) -> str:
    """ "host:port" from a socket address ("[v6]:port" for IPv6); text as it is."""
    if isinstance(addr, tuple) and len(addr) >= 2:
        return hostport(str(addr[0]), addr[1])
    return str(addr)


_ZERO4 = (0, 0, 0, 0)
_ZERO2 = (0, 0)


def _pct(part: int, whole: int) -> float:
    return round(100.0 * part / whole, 3) if whole > 0 else 0.0
