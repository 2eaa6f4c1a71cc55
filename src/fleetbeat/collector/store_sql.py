"""The store's SQL statements, its advice for a damaged file and the file's identity
(`collector.store`)."""

from __future__ import annotations

import os
from typing import Optional

INSERT_EVENT = (
    "INSERT INTO events (time, device, from_state, to_state, reason, ends)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)
# by time (load, prune); by device and time (one device's history); by device and end,
# covering the fleet-wide sums of `store_reader.spans` (and finding a device's open
# event, `ends IS NULL`, to close it)
INDEXES = (
    "CREATE INDEX IF NOT EXISTS events_time ON events (time)",
    "CREATE INDEX IF NOT EXISTS events_device ON events (device, time)",
    "CREATE INDEX IF NOT EXISTS events_spans ON events (device, ends, time, to_state)",
)
# the device's open event (its latest) ends where the next one starts
CLOSE_EVENT = "UPDATE events SET ends = ? WHERE device = ? AND ends IS NULL"
# a version-1 database: each event ends where the device's next one starts
BACKFILL_ENDS = (
    "UPDATE events SET ends = n.next FROM (SELECT rowid AS r, LEAD(time) OVER"
    " (PARTITION BY device ORDER BY time, rowid) AS next FROM events) AS n"
    " WHERE events.rowid = n.r"
)


LATEST = "SELECT MAX(time) FROM events WHERE device = ?"
NTH_OLDEST = "SELECT time FROM events INDEXED BY events_time ORDER BY time LIMIT 1 OFFSET ?"
PRUNED_TO = (
    "INSERT INTO meta VALUES ('pruned_to', ?1) ON CONFLICT (key) DO UPDATE SET value ="
    " MAX(value, ?1)"
)
UPSERT_HOUR = "INSERT OR REPLACE INTO hours (device, hour, received, expected) VALUES (?, ?, ?, ?)"


def corrupt_advice(path: str, exc: BaseException) -> str:
    return (
        f"the state database {path} is damaged ({exc}). Stop the collector, move the file "
        f"aside (mv {path} {path}.damaged; also its -wal and -shm files if present) and start "
        "it again: it recreates the database and relearns every device from its next "
        "heartbeat; the device history in the old file is lost unless `sqlite3 .recover` "
        "can save it"
    )


def identity(path: str) -> Optional[tuple[int, int]]:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino
