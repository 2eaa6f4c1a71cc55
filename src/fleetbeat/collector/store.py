"""SQLite store: devices and events under `state_dir`, written in batches, reloaded at start.

One file, `fleetbeat.db`, in WAL mode with `synchronous=NORMAL`: a crash loses at
most the last flush interval, never the database. Only the collector's main loop
touches it (sqlite3 connections belong to one thread).

Every failure is a `StoreError` with a message for the operator: a corrupt file at
start (checked with `PRAGMA quick_check`), a full disk on write or prune. A row the
database will not take (it cannot happen to what `wire` validated, but a store must not
trust that) is skipped and counted, never fatal. `replaced()` tells when the file was
deleted or swapped under the running collector, so the caller can `reopen()` it and
write everything again.

Tables (schema version 2): `devices` (one row per device, `rows.ROW_COLUMNS`), `events`
(indexed by time and by device and time; a device's in time order, `store_events`;
`ends` is the time of the device's next event, set when that one is written, NULL for
its latest: the fleet-wide availability is then one SQL sum, see
`collector.availability`; at most `max_events`, the oldest deleted first, and
`meta.pruned_to` the latest time deleted up to) and `hours`, the heartbeat loss over time: per
device and hour (its start, epoch s) the device's LIFETIME heartbeats received and
expected as of the last flush in that hour, upserted by every `write` from the device
rows, in the same transaction, into the hour of the wall clock, or the newest stored
hour if that is later (a clock stepped back never rewrites an older hour). An hour's
own counts are the difference with the device's previous stored row: the heartbeats
between the last flush of that row's hour and the last flush of this one (a device's
first row counts from zero); a negative difference, or a count more than an hour can
hold at the device's interval (older rows gone, failed writes piled into one hour) is
a base, counted nowhere (`collector.history.hourly`). A version-1 database (before
history) is migrated in place when opened: its devices and events are kept, each
device gets a base row an hour before (its totals then), and `meta` holds
`hours_since`, when that happened. The HTTP threads read through
`collector.store_reader.StoreReader`, never through this connection.
"""

from __future__ import annotations

import logging
import math
import os
import sqlite3
import time
from collections.abc import Sequence
from typing import Any, Callable, Optional

from fleetbeat.collector.events import MAX_EVENTS_IN_MEMORY
from fleetbeat.collector.history import HOUR
from fleetbeat.collector.rows import HB_EXPECTED, HB_RECEIVED, ROW_COLUMNS, lifetime_totals
from fleetbeat.collector.store_events import chain
from fleetbeat.collector.store_sql import (
    BACKFILL_ENDS,
    CLOSE_EVENT,
    INDEXES,
    INSERT_EVENT,
    LATEST,
    NTH_OLDEST,
    PRUNED_TO,
    UPSERT_HOUR,
    corrupt_advice,
    identity,
)
from fleetbeat.errors import FleetbeatError

log = logging.getLogger(__name__)

DB_NAME = "fleetbeat.db"
SCHEMA_VERSION = 2  # 2: hb_received, hb_expected, the hours and meta tables
TRIM_SLACK = 1.1  # a write past max_events by this factor deletes the oldest at once

_TYPES = {
    "state_since": "REAL", "last_seen": "REAL", "boot_time": "REAL", "interval": "REAL",
    "clock_skew": "REAL", "restarts": "INTEGER", "reboots": "INTEGER",
    "agent_drops": "INTEGER", "down_k": "REAL", "hb_received": "INTEGER",
    "hb_expected": "INTEGER",
}  # fmt: skip


class StoreError(FleetbeatError):
    """The state directory or its database cannot be used."""


# Python errors a value can raise on its way into SQLite (an int past 64 bits, a lone
# surrogate in a str): one bad row, not a bad database.
_ROW_ERRORS = (OverflowError, UnicodeError, ValueError, TypeError, sqlite3.InterfaceError)


class Store:
    """Devices and events in SQLite.

    Args:
        state_dir: created when missing (mode 0700).
        retention: seconds events are kept.
        max_events: events kept at most, the oldest deleted first (the disk's bound).
        loss_history: seconds hourly heartbeat rows are kept (one hour more, as the base
            of the oldest hour's difference; a device's newest row is always kept).
        clock: wall clock (epoch s): which hour a write's loss rows belong to.
    """

    def __init__(
        self,
        state_dir: str,
        *,
        retention: float,
        max_events: int = 1_000_000,
        loss_history: float = 7 * 86400.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = os.path.join(state_dir, DB_NAME)
        self.retention = retention
        self.max_events = max_events
        self.loss_history = loss_history
        self._clock = clock
        self.skipped_rows = 0  # rows the database would not take, since start
        cols = ", ".join(ROW_COLUMNS)
        marks = ", ".join("?" for _ in ROW_COLUMNS)
        self._upsert = f"INSERT OR REPLACE INTO devices ({cols}) VALUES ({marks})"  # noqa: S608
        try:
            os.makedirs(state_dir, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot use the state database {self.path}: {exc}") from exc
        self._open()

    def _open(self) -> None:
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the state database {self.path}: {exc}") from exc
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            checked = self._db.execute("PRAGMA quick_check").fetchone()[0]
            if checked != "ok":
                raise sqlite3.DatabaseError(f"quick_check: {checked}")
            self._create()
            self._count = int(self._db.execute("SELECT count(*) FROM events").fetchone()[0])
            newest = self._db.execute("SELECT MAX(hour) FROM hours").fetchone()[0]
            self._hour_floor = float(newest) if isinstance(newest, (int, float)) else -math.inf
            self._identity = identity(self.path)
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise StoreError(corrupt_advice(self.path, exc)) from exc
        except (OSError, sqlite3.Error) as exc:
            self._db.close()
            raise StoreError(f"cannot use the state database {self.path}: {exc}") from exc

    def _create(self) -> None:
        cols = ", ".join(
            f"{c} {_TYPES.get(c, 'TEXT')}" + (" PRIMARY KEY" if c == "id" else "")
            for c in ROW_COLUMNS
        )
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, 1, SCHEMA_VERSION):
            raise StoreError(f"{self.path}: schema version {version} is not {SCHEMA_VERSION}")
        self._db.executescript(
            f"""
            BEGIN;
            CREATE TABLE IF NOT EXISTS devices ({cols});
            CREATE TABLE IF NOT EXISTS events (
                time REAL NOT NULL, device TEXT NOT NULL, from_state TEXT,
                to_state TEXT NOT NULL, reason TEXT NOT NULL, ends REAL);
            CREATE TABLE IF NOT EXISTS hours (
                device TEXT NOT NULL, hour REAL NOT NULL, received INTEGER NOT NULL,
                expected INTEGER NOT NULL, PRIMARY KEY (device, hour)) WITHOUT ROWID;
            CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value);
            """
        )
        try:
            have = {row[1] for row in self._db.execute("PRAGMA table_info(devices)")}
            for col in ROW_COLUMNS:  # version 1 had neither lifetime total
                if col not in have:
                    self._db.execute(f"ALTER TABLE devices ADD COLUMN {col} {_TYPES[col]}")
            if "ends" not in {row[1] for row in self._db.execute("PRAGMA table_info(events)")}:
                self._db.execute("ALTER TABLE events ADD COLUMN ends REAL")
                self._db.execute(BACKFILL_ENDS)
            for sql in INDEXES:
                self._db.execute(sql)
            if version == 1:
                self._base_hours()
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:  # SQLite ends it itself on some errors (a full disk)
                self._db.execute("ROLLBACK")
            raise

    def _base_hours(self) -> None:
        """Migrating a version-1 database: each device's lifetime totals now, as a base row
        an hour before this one, so its next hour counts only that hour (its totals come
        from `counters`); `meta.hours_since` tells readers such a first row is a base."""
        now = self._clock()
        base = self.hour_of(now) - HOUR
        rows = []
        for dev_id, counters in self._db.execute("SELECT id, counters FROM devices"):
            totals = lifetime_totals(counters)
            if totals is not None and isinstance(dev_id, str):
                rows.append((dev_id, base, *totals))
        self._db.executemany(UPSERT_HOUR, rows)
        self._db.execute("INSERT OR REPLACE INTO meta VALUES ('hours_since', ?)", (now,))
        self._db.execute(PRUNED_TO, (now - self.retention,))  # older versions pruned it

    def load(self, now: float) -> tuple[list[tuple[Any, ...]], list[dict[str, Any]]]:
        """Every stored device row, and the newest events within the retention."""
        cols = ", ".join(ROW_COLUMNS)
        try:
            rows = self._db.execute(f"SELECT {cols} FROM devices").fetchall()  # noqa: S608
            found = self._db.execute(
                "SELECT time, device, from_state, to_state, reason FROM events WHERE time > ?"
                " ORDER BY time DESC, rowid DESC LIMIT ?",
                (now - self.retention, MAX_EVENTS_IN_MEMORY),
            ).fetchall()
        except sqlite3.DatabaseError as exc:
            raise StoreError(corrupt_advice(self.path, exc)) from exc
        events = [
            {"time": t, "device": d, "from": f, "to": to, "reason": r}
            for t, d, f, to, r in reversed(found)
            if isinstance(t, float) and isinstance(d, str) and isinstance(to, str)
        ]
        return rows, events

    def write(self, rows: Sequence[tuple[Any, ...]], events: Sequence[dict[str, Any]]) -> int:
        """One transaction for a whole batch of device rows, their hours and events.

        Each device row also upserts the device's row of the current hour in `hours`
        (its lifetime heartbeat totals). Returns how many rows or events were skipped
        because the database would not take them (logged); raises StoreError when
        nothing could be written.
        """
        if not rows and not events:
            return 0
        try:
            latest = {d: self._latest(d) for d in {e["device"] for e in events}}
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read {self.path}: {exc}") from exc
        event_rows, closes = chain(events, latest)
        # never an hour before the newest stored one: a wall clock stepped back would
        # rewrite an older hour with newer totals (and make the next difference negative)
        hour = max(self.hour_of(self._clock()), self._hour_floor)
        hour_rows = [
            (r[0], hour, r[HB_RECEIVED], r[HB_EXPECTED])
            for r in rows
            if len(r) > HB_EXPECTED and r[HB_RECEIVED] is not None
        ]
        try:
            self._transaction(rows, closes, event_rows, hour_rows)
            self._hour_floor = hour if hour_rows else self._hour_floor
            self._count += len(event_rows)
            self._trim()
            return 0
        except (*_ROW_ERRORS, sqlite3.IntegrityError):
            pass  # one bad value spoils executemany: find it, keep the rest
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write {self.path}: {exc}") from exc
        # Binding errors are raised before a statement runs, and a constraint failure
        # undoes only its own statement: one transaction, row by row, keeps the rest.
        skipped = 0
        try:
            with self._db:
                self._db.execute("BEGIN")
                for sql, batch, name_at in (
                    (self._upsert, rows, 0),
                    (CLOSE_EVENT, closes, 1),
                    (INSERT_EVENT, event_rows, 1),
                    (UPSERT_HOUR, hour_rows, 0),
                ):
                    for row in batch:
                        try:
                            self._db.execute(sql, row)
                        except (*_ROW_ERRORS, sqlite3.IntegrityError) as exc:
                            skipped += 1
                            log.error("store: skipped a row for %.80r that SQLite refuses: %r",
                                      row[name_at], exc)  # fmt: skip
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write {self.path}: {exc}") from exc
        self._hour_floor = hour if hour_rows else self._hour_floor
        self._count += len(event_rows)  # an upper bound: some may have been skipped
        self._trim()
        self.skipped_rows += skipped
        return skipped

    def _latest(self, device: Any) -> float:
        """The time of the device's newest stored event (-inf: none)."""
        try:
            found = self._db.execute(LATEST, (device,)).fetchone()[0]
        except _ROW_ERRORS:  # a device id SQLite will not take: its row is skipped later
            return -math.inf
        return float(found) if type(found) in (int, float) else -math.inf

    def latest_events(self) -> dict[str, float]:
        """Every device's newest stored event time (what a restored file already holds)."""
        try:
            rows = self._db.execute("SELECT device, MAX(time) FROM events GROUP BY device")
            return {d: float(t) for d, t in rows if type(t) in (int, float)}
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read {self.path}: {exc}") from exc

    @staticmethod
    def hour_of(t: float) -> float:
        """The start of the hour `t` is in (epoch s); 0.0 for a time that is not finite."""
        return math.floor(t / HOUR) * HOUR if math.isfinite(t) else 0.0

    def _transaction(
        self,
        rows: Sequence[tuple[Any, ...]],
        closes: Sequence[tuple[Any, ...]],
        events: Sequence[tuple[Any, ...]],
        hours: Sequence[tuple[Any, ...]],
    ) -> None:
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(self._upsert, rows)
            self._db.executemany(CLOSE_EVENT, closes)  # before the new open ones exist
            self._db.executemany(INSERT_EVENT, events)
            self._db.executemany(UPSERT_HOUR, hours)

    def forget(self, device_ids: Sequence[str]) -> None:
        """Delete devices (evicted or forgotten) with their events and hourly rows."""
        if not device_ids:
            return
        ids = [(d,) for d in device_ids]
        try:
            with self._db:
                self._db.execute("BEGIN")
                self._db.executemany("DELETE FROM devices WHERE id = ?", ids)
                gone = self._db.executemany("DELETE FROM events WHERE device = ?", ids)
                self._db.executemany("DELETE FROM hours WHERE device = ?", ids)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot delete devices from {self.path}: {exc}") from exc
        self._count -= max(0, gone.rowcount)

    def prune(self, now: float) -> int:
        """Delete events older than the retention, the oldest past max_events, and hourly
        rows older than loss_history
        (one hour more, the base of the oldest difference; each device's newest row stays
        as the base of its next one); return how many events went. `meta.pruned_to`
        keeps the latest time up to which events may have been deleted: after it, every
        event is still there (so an oldest kept event's `from` state held back to it)."""
        try:
            with self._db:
                self._db.execute("BEGIN")
                cur = self._db.execute(
                    "DELETE FROM events WHERE time <= ?", (now - self.retention,)
                )
                gone = cur.rowcount
                self._db.execute(PRUNED_TO, (now - self.retention,))
                left = int(self._db.execute("SELECT count(*) FROM events").fetchone()[0])
                over = self._oldest_out(self.max_events, left)  # recounted: writes skip rows
                self._db.execute(
                    "DELETE FROM hours WHERE hour < ? AND hour < (SELECT MAX(h.hour) FROM"
                    " hours AS h WHERE h.device = hours.device)",
                    (self.hour_of(now - self.loss_history) - HOUR,),
                )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot prune old events in {self.path}: {exc}") from exc
        self._count = left - over
        return gone + over

    def _oldest_out(self, keep: int, count: int) -> int:
        """Within a transaction: delete the oldest of `count` events past `keep`, moving
        `meta.pruned_to` up to the newest one deleted; how many went."""
        excess = count - keep
        if excess <= 0:
            return 0
        last = self._db.execute(NTH_OLDEST, (excess - 1,)).fetchone()
        if last is None:
            return 0
        cur = self._db.execute("DELETE FROM events WHERE time <= ?", (last[0],))
        self._db.execute(PRUNED_TO, (last[0],))
        return int(cur.rowcount)

    def _trim(self) -> None:
        """After a write: past max_events by more than a tenth, delete the oldest down to
        max_events at once (a flood of events must not wait for the hourly prune). A
        failure is logged; the write itself was done."""
        if self._count <= self.max_events * TRIM_SLACK:
            return
        try:
            with self._db:
                self._db.execute("BEGIN")
                gone = self._oldest_out(self.max_events, self._count)
        except sqlite3.Error as exc:
            log.error("store: cannot delete the oldest events past max_stored_events: %s", exc)
            return
        self._count = max(0, self._count - gone)
        log.warning("store: more than max_stored_events (%d): deleted the oldest %d events",
                    self.max_events, gone)  # fmt: skip

    def replaced(self) -> Optional[str]:
        """ "deleted" or "replaced" when the file at `path` is no longer the one open."""
        now = identity(self.path)
        if now is None:
            return "deleted"
        return None if now == self._identity else "replaced"

    def reopen(self) -> None:
        """Close the connection and open (create) the file at `path` again."""
        self._db.close()
        self._open()

    def close(self) -> None:
        self._db.close()
