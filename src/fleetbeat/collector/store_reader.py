"""Read-only access to the store for the HTTP threads: one connection per thread.

sqlite3 connections belong to the thread that made them, and the collector's main
loop owns the writing one (`collector.store.Store`). In WAL mode readers never block
the writer nor it them, so each HTTP worker thread opens its own read-only connection
(`mode=ro`) the first time it reads, and keeps it. Before each read it checks that the
file is still the one it opened (device and inode): when the collector recreated a
deleted or replaced database (`Store.reopen`), the thread opens the new one. A missing
file, a locked or damaged database: every failure is a `StoreUnavailable` with a short
reason, which the HTTP side answers with a 503, never a traceback.

What it reads is bounded by the callers' windows (31 days at most) and streamed: the
fleet-wide reads go through `scan`, which hands over one device's events at a time.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from typing import Any, Optional
from urllib.parse import quote

from fleetbeat.collector.history import HOUR, WINDOWS, Event
from fleetbeat.errors import FleetbeatError

BUSY_TIMEOUT = 2.0  # s a read waits for a lock (a checkpoint) before giving up
FETCH = 2000  # rows per fetch in a scan


class StoreUnavailable(FleetbeatError):
    """The store cannot be read now (missing, locked, damaged): a 503, not a 500."""


class StoreReader:
    """Read-only queries on the store at `path`, safe to call from any thread."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._local = threading.local()

    def _db(self) -> sqlite3.Connection:
        try:
            st = os.stat(self.path)
        except OSError as exc:
            self._drop()
            raise StoreUnavailable(f"the state database is not there ({exc.strerror})") from exc
        ident = (st.st_dev, st.st_ino)
        db: Optional[sqlite3.Connection] = getattr(self._local, "db", None)
        if db is not None and self._local.ident == ident:
            return db
        self._drop()
        try:
            db = sqlite3.connect(f"file:{quote(self.path)}?mode=ro", uri=True,
                                 timeout=BUSY_TIMEOUT)  # fmt: skip
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open the state database: {exc}") from exc
        self._local.db, self._local.ident = db, ident
        return db

    def _drop(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            self._local.db = None
            db.close()

    def _all(self, sql: str, args: Any) -> list[Any]:
        try:
            return self._db().execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            self._drop()  # opened again at the next read: the file may have been replaced
            raise StoreUnavailable(f"cannot read the state database: {exc}") from exc

    def events(
        self, device: str, since: float, limit: int = 10_000
    ) -> tuple[Optional[Event], list[Event], bool]:
        """The device's last event at or before `since` (or None), the later ones (the
        newest `limit` of them, oldest first) and whether some were left out (then the
        prior is None: the oldest one read stands for what came before, as if pruned)."""
        after = self._all(_AFTER, (device, since, limit + 1))
        after.reverse()
        if len(after) > limit:
            return None, [_event(r) for r in after[1:]], True
        before = self._all(_BEFORE, (device, since))
        return (_event(before[0]) if before else None), [_event(r) for r in after], False

    def hours(
        self, device: str, since: float, until: float
    ) -> tuple[Optional[tuple[float, int, int]], list[tuple[float, int, int]]]:
        """The device's stored hour before `since` (or None) and those in [since, until]."""
        before = self._all(_HOUR_BEFORE, (device, since))
        rows = self._all(_HOURS, (device, since, until))
        return (tuple(before[0]) if before else None), [tuple(r) for r in rows]

    def no_base_before(self) -> Optional[float]:
        """The hour the hours table was added to an older database (or None): a device's
        first row before it is the base the migration wrote, not an hour of its own."""
        rows = self._all("SELECT value FROM meta WHERE key = 'hours_since'", ())
        value = rows[0][0] if rows else None
        return value // HOUR * HOUR if isinstance(value, float) else None

    def pruned_to(self) -> Optional[float]:
        """The latest time up to which the store's prune may have deleted events (None:
        it never pruned): an oldest kept event's `from` state held back to it, no further."""
        rows = self._all("SELECT value FROM meta WHERE key = 'pruned_to'", ())
        value = rows[0][0] if rows else None
        return float(value) if isinstance(value, (int, float)) else None

    def priors(self, since: float) -> dict[str, Event]:
        """For every stored device, its last event at or before `since` (one index seek each)."""
        return {row[0]: _event(row[1:]) for row in self._all(_PRIORS, (since,))}

    def spans(self, now: float) -> list[tuple[Any, ...]]:
        """Per device with closed spans in the last 30 days: (device, good 24 h, counted
        24 h, good 7 d, counted 7 d, good 30 d, counted 30 d, start of its first counted
        span): the seconds of its stored events that have ended (`ends`), each clipped to
        each window, summed by SQLite in one pass over a covering index."""
        w = {"now": now, "w24": now - WINDOWS[0][1], "w7": now - WINDOWS[1][1],
             "w30": now - WINDOWS[2][1]}  # fmt: skip
        return self._all(_SPANS, w)

    def open_events(self) -> dict[str, tuple[float, str]]:
        """Every device's open (latest) stored event: (time, to state)."""
        return {d: (t, to) for d, t, to in self._all(_OPEN, ())}

    def first_counted_from(self, since: float) -> dict[str, tuple[float, str]]:
        """For the devices whose oldest stored event is after `since` and came from a
        counted state (and is neither a `first_seen` nor a `forgotten` one, see
        `history.opens_before`): (its time, that state); the time before it, back to
        `pruned_to`, was in that state (older history pruned)."""
        return {d: (t, f) for d, t, f in self._all(_FIRST, (since,))}

    def scan(self, since: float) -> Iterator[tuple[str, list[Event]]]:
        """(device, its events after `since`, oldest first) for every device that has some,
        in one pass over the (device, time) index; one device's list in memory at a time."""
        try:
            cur = self._db().execute(_SCAN, (since,))
            dev: Optional[str] = None
            batch: list[Event] = []
            while True:
                rows = cur.fetchmany(FETCH)
                if not rows:
                    break
                for d, t, f, to, r in rows:
                    if d != dev:
                        if dev is not None:
                            yield dev, batch
                        dev, batch = d, []
                    batch.append((t, f, to, r))
            if dev is not None:
                yield dev, batch
        except sqlite3.Error as exc:
            self._drop()
            raise StoreUnavailable(f"cannot read the state database: {exc}") from exc

    def close(self) -> None:
        """Close this thread's connection (the others close with their threads)."""
        self._drop()


def _event(row: Any) -> Event:
    return (row[0], row[1], row[2], row[3])


_COLS = "time, from_state, to_state, reason"
_BEFORE = (f"SELECT {_COLS} FROM events WHERE device = ? AND time <= ?"  # noqa: S608
           " ORDER BY time DESC, rowid DESC LIMIT 1")  # fmt: skip
_AFTER = (f"SELECT {_COLS} FROM events WHERE device = ? AND time > ?"  # noqa: S608
          " ORDER BY time DESC, rowid DESC LIMIT ?")  # fmt: skip
_HOUR_BEFORE = ("SELECT hour, received, expected FROM hours WHERE device = ? AND hour < ?"
                " ORDER BY hour DESC LIMIT 1")  # fmt: skip
_HOURS = ("SELECT hour, received, expected FROM hours WHERE device = ? AND hour >= ?"
          " AND hour <= ? ORDER BY hour")  # fmt: skip
_PRIORS = (
    "SELECT e.device, e.time, e.from_state, e.to_state, e.reason FROM devices AS d"
    " JOIN events AS e ON e.rowid = (SELECT rowid FROM events WHERE device = d.id"
    " AND time <= ?1 ORDER BY time DESC, rowid DESC LIMIT 1)"
)
_SPAN = "MAX(0, MIN(ends, :now) - MAX(time, :{w}))"
_SPANS = (  # built from constants only
    "SELECT device, "  # noqa: S608
    + ", ".join(
        f"SUM(CASE WHEN to_state <> 'down' THEN {_SPAN.format(w=w)} END), SUM({_SPAN.format(w=w)})"
        for w in ("w24", "w7", "w30")
    )
    + ", MIN(MAX(time, :w30)) FROM events INDEXED BY events_spans WHERE ends > :w30"
    " AND ends > time AND time < :now AND to_state IN ('up', 'late', 'down') GROUP BY device"
)
_OPEN = (
    "SELECT e.device, e.time, e.to_state FROM devices AS d JOIN events AS e INDEXED BY"
    " events_spans ON e.device = d.id AND e.ends IS NULL"
)
_FIRST = (
    "SELECT e.device, e.time, e.from_state FROM devices AS d JOIN events AS e ON e.rowid ="
    " (SELECT rowid FROM events WHERE device = d.id ORDER BY time, rowid LIMIT 1)"
    " WHERE e.time > ? AND e.from_state IN ('up', 'late', 'down')"
    " AND e.to_state <> 'forgotten' AND e.reason <> 'first_seen'"
)
_SCAN = (
    "SELECT device, time, from_state, to_state, reason FROM events INDEXED BY events_device"
    " WHERE time > ? ORDER BY device, time, rowid"
)
