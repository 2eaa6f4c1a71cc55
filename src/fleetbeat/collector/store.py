"""SQLite store: devices and events under `state_dir`, written in batches, reloaded at start.

One file, `fleetbeat.db`, in WAL mode with `synchronous=NORMAL`: a crash loses at
most the last flush interval, never the database. Only the collector's main loop
touches it (sqlite3 connections belong to one thread).
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Sequence
from typing import Any

from fleetbeat.collector.fleet import MAX_EVENTS_IN_MEMORY, ROW_COLUMNS
from fleetbeat.errors import FleetbeatError

log = logging.getLogger(__name__)

DB_NAME = "fleetbeat.db"
SCHEMA_VERSION = 1

_TYPES = {
    "state_since": "REAL", "last_seen": "REAL", "boot_time": "REAL", "interval": "REAL",
    "clock_skew": "REAL", "restarts": "INTEGER", "reboots": "INTEGER",
    "agent_drops": "INTEGER", "down_k": "REAL",
}  # fmt: skip


class StoreError(FleetbeatError):
    """The state directory or its database cannot be used."""


class Store:
    """Devices and events in SQLite.

    Args:
        state_dir: created when missing (mode 0700).
        retention: seconds events are kept.
    """

    def __init__(self, state_dir: str, *, retention: float) -> None:
        self.path = os.path.join(state_dir, DB_NAME)
        self.retention = retention
        try:
            os.makedirs(state_dir, mode=0o700, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._create()
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot use the state database {self.path}: {exc}") from exc
        cols = ", ".join(ROW_COLUMNS)
        marks = ", ".join("?" for _ in ROW_COLUMNS)
        self._upsert = f"INSERT OR REPLACE INTO devices ({cols}) VALUES ({marks})"  # noqa: S608

    def _create(self) -> None:
        cols = ", ".join(
            f"{c} {_TYPES.get(c, 'TEXT')}" + (" PRIMARY KEY" if c == "id" else "")
            for c in ROW_COLUMNS
        )
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, SCHEMA_VERSION):
            raise StoreError(f"{self.path}: schema version {version} is not {SCHEMA_VERSION}")
        self._db.executescript(
            f"""
            CREATE TABLE IF NOT EXISTS devices ({cols});
            CREATE TABLE IF NOT EXISTS events (
                time REAL NOT NULL, device TEXT NOT NULL, from_state TEXT,
                to_state TEXT NOT NULL, reason TEXT NOT NULL);
            CREATE INDEX IF NOT EXISTS events_time ON events (time);
            PRAGMA user_version = {SCHEMA_VERSION};
            """
        )

    def load(self, now: float) -> tuple[list[tuple[Any, ...]], list[dict[str, Any]]]:
        """Every stored device row, and the newest events within the retention."""
        cols = ", ".join(ROW_COLUMNS)
        rows = self._db.execute(f"SELECT {cols} FROM devices").fetchall()  # noqa: S608
        found = self._db.execute(
            "SELECT time, device, from_state, to_state, reason FROM events WHERE time > ?"
            " ORDER BY time DESC, rowid DESC LIMIT ?",
            (now - self.retention, MAX_EVENTS_IN_MEMORY),
        ).fetchall()
        events = [
            {"time": t, "device": d, "from": f, "to": to, "reason": r}
            for t, d, f, to, r in reversed(found)
        ]
        return rows, events

    def write(self, rows: Sequence[tuple[Any, ...]], events: Sequence[dict[str, Any]]) -> None:
        """One transaction for a whole batch of device rows and events."""
        if not rows and not events:
            return
        try:
            with self._db:
                self._db.execute("BEGIN")
                self._db.executemany(self._upsert, rows)
                self._db.executemany(
                    "INSERT INTO events (time, device, from_state, to_state, reason)"
                    " VALUES (?, ?, ?, ?, ?)",
                    [(e["time"], e["device"], e["from"], e["to"], e["reason"]) for e in events],
                )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write {self.path}: {exc}") from exc

    def prune(self, now: float) -> int:
        """Delete events older than the retention; return how many went."""
        with self._db:
            self._db.execute("BEGIN")
            cur = self._db.execute("DELETE FROM events WHERE time <= ?", (now - self.retention,))
        return cur.rowcount

    def close(self) -> None:
        self._db.close()
