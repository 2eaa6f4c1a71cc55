"""At-least-once delivery: the outbox (SQLite) and the Dispatcher that drains it.

Alerts are the one thing the collector delivers at least once. Every notification handed
to `Dispatcher.submit` is written, per notifier, to `alerts.db` in the state directory
before any attempt, so a collector restart loses none. Each notifier sends from a thread of
its own: one that never answers delays neither the main loop nor the other notifiers. A
failed attempt is retried after 2 s, 4 s, 8 s... (at most 5 min, each with +-50% jitter) until
`give_up_after` from the first attempt, then logged as an error and dropped. A row is
deleted as soon as its success is seen, so nothing is sent twice after that (a crash between
the notifier's success and the delete can send it once more: at least once). Silences are
kept in the same file, and so are the alerts notified as firing (`Alerts.take_told`), so a
restarted collector neither tells them again nor forgets to tell when they end.

The database is the outbox's own (not the store's `fleetbeat.db`), opened in WAL mode with
`synchronous=FULL` (a few rows a minute), and used only from the thread that made it: the
main loop calls `submit`, `pump` and `save_silences`; worker threads only send.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import random
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Callable, Optional

from fleetbeat.collector.alerts_config import parse_match
from fleetbeat.collector.grouping import Notification
from fleetbeat.collector.notifiers.base import Notifier, NotifierConfig, Outcome, failed
from fleetbeat.collector.suppress import Silence, Silences
from fleetbeat.config.schema import Problems
from fleetbeat.errors import FleetbeatError
from fleetbeat.logutil import RateLimitedLog

log = logging.getLogger(__name__)
_limited = RateLimitedLog(log)

DB_NAME = "alerts.db"
SCHEMA_VERSION = 1
FIRST_RETRY = 2.0  # s; doubled at every failure
MAX_RETRY = 300.0  # s between two attempts at most
OUTCOMES = ("sent", "failed", "rejected", "gave_up")


class OutboxError(FleetbeatError):
    """The outbox database cannot be used."""


class Outbox:
    """Pending notifications and silences in `{state_dir}/alerts.db`."""

    def __init__(self, state_dir: str) -> None:
        self.path = os.path.join(state_dir, DB_NAME)
        try:
            os.makedirs(state_dir, mode=0o700, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise OutboxError(f"{self.path}: schema version {version} is not {SCHEMA_VERSION}")
            self._db.executescript(
                f"""
                CREATE TABLE IF NOT EXISTS pending (
                    id TEXT NOT NULL, notifier TEXT NOT NULL, body TEXT NOT NULL,
                    first_try REAL NOT NULL, attempts INTEGER NOT NULL, next_at REAL NOT NULL,
                    PRIMARY KEY (id, notifier));
                CREATE TABLE IF NOT EXISTS silences (id TEXT PRIMARY KEY, body TEXT NOT NULL);
                CREATE TABLE IF NOT EXISTS told (id INTEGER PRIMARY KEY, body TEXT NOT NULL);
                PRAGMA user_version = {SCHEMA_VERSION};
                """
            )
        except (OSError, sqlite3.Error) as exc:
            raise OutboxError(f"cannot use the alerts database {self.path}: {exc}") from exc

    def _run(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        try:
            with self._db:
                self._db.execute("BEGIN")
                self._db.executemany(sql, rows)
        except sqlite3.Error as exc:
            raise OutboxError(f"cannot write {self.path}: {exc}") from exc

    def put(self, notifier: str, n: Notification, first_try: float) -> None:
        self._run(
            "INSERT OR REPLACE INTO pending VALUES (?, ?, ?, ?, 0, ?)",
            [(n.id, notifier, json.dumps(n.to_json()), first_try, first_try)],
        )

    def reschedule(self, notifier: str, nid: str, attempts: int, next_at: float) -> None:
        self._run(
            "UPDATE pending SET attempts = ?, next_at = ? WHERE id = ? AND notifier = ?",
            [(attempts, next_at, nid, notifier)],
        )

    def done(self, notifier: str, nid: str) -> None:
        self._run("DELETE FROM pending WHERE id = ? AND notifier = ?", [(nid, notifier)])

    def pending(self) -> list[tuple[str, Notification, float, int, float]]:
        """(notifier, notification, first_try, attempts, next_at), oldest first."""
        out = []
        for notifier, body, first_try, attempts, next_at in self._db.execute(
            "SELECT notifier, body, first_try, attempts, next_at FROM pending ORDER BY rowid"
        ):
            try:
                n = Notification.from_json(json.loads(body))
            except (ValueError, KeyError, TypeError, AttributeError):
                log.warning("%s: skipping an unreadable pending notification", self.path)
                continue
            out.append((notifier, n, first_try, attempts, next_at))
        return out

    def silences(self) -> Silences:
        """The stored silences (expired ones drop out as they are met)."""
        found = []
        for (body,) in self._db.execute("SELECT body FROM silences"):
            try:
                d = json.loads(body)
                problems = Problems(self.path)
                match = parse_match(d["match"], "match", problems)
                if problems:
                    raise ValueError(problems.items)
                found.append(Silence(id=str(d["id"]), match=match, until=float(d["until"]),
                                     comment=str(d["comment"]),
                                     created=float(d["created"])))  # fmt: skip
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("%s: skipping an unreadable silence (%s)", self.path, exc)
        return Silences(found)

    def save_silences(self, changes: Mapping[str, Optional[Silence]]) -> None:
        """Write what `Silences.take_changes()` returned."""
        if not changes:
            return
        self._run("DELETE FROM silences WHERE id = ?", [(k,) for k in changes])
        self._run(
            "INSERT INTO silences VALUES (?, ?)",
            [(k, json.dumps(s.to_json())) for k, s in changes.items() if s is not None],
        )

    def save_alerts(self, told: Optional[Sequence[Mapping[str, Any]]]) -> None:
        """Keep what `Alerts.take_told()` returned (nothing to do for None)."""
        if told is not None:
            self._run("INSERT OR REPLACE INTO told VALUES (1, ?)", [(json.dumps(list(told)),)])

    def alerts(self) -> list[dict[str, Any]]:
        """The notified alerts kept by `save_alerts`, for `Alerts.restore`."""
        row = self._db.execute("SELECT body FROM told WHERE id = 1").fetchone()
        try:
            found = json.loads(row[0]) if row else []
            return [dict(a) for a in found if isinstance(a, dict) and "kind" in a]
        except ValueError:
            log.warning("%s: the kept alerts are unreadable; starting without them", self.path)
            return []

    def close(self) -> None:
        self._db.close()


class _Item:
    __slots__ = ("attempts", "first_try", "in_flight", "next_at", "notification", "notifier")

    def __init__(self, notifier: str, n: Notification, first_try: float, attempts: int,
                 next_at: float) -> None:  # fmt: skip
        self.notifier = notifier
        self.notification = n
        self.first_try = first_try
        self.attempts = attempts
        self.next_at = next_at
        self.in_flight = False


class _Worker:
    """One notifier's thread: takes items, sends them, hands back the outcome."""

    def __init__(self, config: NotifierConfig, notifier: Notifier,
                 results: queue.SimpleQueue[tuple[_Item, Outcome]]) -> None:  # fmt: skip
        self.config = config
        self.notifier = notifier
        self.todo: queue.SimpleQueue[Optional[_Item]] = queue.SimpleQueue()
        self._results = results
        # a daemon: a send that never returns must not keep the collector from exiting
        self.thread = threading.Thread(target=self._run, name=f"notify-{config.label}",
                                       daemon=True)  # fmt: skip
        self.thread.start()

    def _run(self) -> None:
        while True:
            item = self.todo.get()
            if item is None:
                return
            try:
                outcome = self.notifier.send(item.notification)
            except Exception as exc:
                outcome = failed(f"{type(exc).__name__}: {exc}")
            self._results.put((item, outcome))


class Dispatcher:
    """Hands notifications to notifiers through the outbox; counts what came of them.

    Args:
        notifiers: (config, notifier) pairs, each label unique.
        outbox: where pending notifications are kept; what it holds is resumed now.
        clock: wall clock for `submit`/`pump` called without `now`.
        rng: a float in [0, 1) for the retry jitter.
    """

    def __init__(
        self,
        notifiers: Sequence[tuple[NotifierConfig, Notifier]],
        outbox: Outbox,
        *,
        clock: Callable[[], float] = time.time,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._outbox = outbox
        self._clock = clock
        self._rng = rng
        self._results: queue.SimpleQueue[tuple[_Item, Outcome]] = queue.SimpleQueue()
        self._workers = {c.label: _Worker(c, n, self._results) for c, n in notifiers}
        self._items: dict[tuple[str, str], _Item] = {}
        self._lock = threading.Lock()  # counters: read by the HTTP side
        self._counts = {label: dict.fromkeys(OUTCOMES, 0) for label in self._workers}
        self._failing_since: dict[str, float] = {}
        self._last_error: dict[str, str] = {}
        for label, n, first_try, attempts, next_at in outbox.pending():
            if label in self._workers:
                self._items[(n.id, label)] = _Item(label, n, first_try, attempts, next_at)
            else:
                log.warning("dropping a pending notification for notifier %r, no longer "
                            "configured: %s", label, n.summary)  # fmt: skip
                outbox.done(label, n.id)

    def submit(self, notification: Notification, now: Optional[float] = None) -> None:
        """Keep the notification for every notifier that wants some of its alerts."""
        now = self._clock() if now is None else now
        for label, w in self._workers.items():
            n = notification.only(w.config.wants)
            if n is None:
                continue
            self._keep(self._outbox.put, label, n, now)
            with self._lock:
                self._items[(n.id, label)] = _Item(label, n, now, 0, now)
        self.pump(now)

    def pump(self, now: Optional[float] = None) -> None:
        """Take the outcomes that came back; hand out what is due (call it from the main loop)."""
        now = self._clock() if now is None else now
        while True:
            try:
                item, outcome = self._results.get_nowait()
            except queue.Empty:
                break
            self._outcome(item, outcome, now)
        for item in list(self._items.values()):
            if not item.in_flight and item.next_at <= now:
                item.in_flight = True
                self._workers[item.notifier].todo.put(item)
        for label, since in list(self._failing_since.items()):
            window = self._workers[label].config.give_up_after
            if now - since > window:
                _limited.log(logging.ERROR, f"failing-{label}",
                             "notifier %s has failed for %.0f s, longer than its retry window "
                             "(%g s): %s", label, now - since, window,
                             self._last_error.get(label, ""))  # fmt: skip

    def _outcome(self, item: _Item, outcome: Outcome, now: float) -> None:
        label, nid = item.notifier, item.notification.id
        item.in_flight = False
        status = outcome.status
        if outcome.retry:
            item.attempts += 1
            with self._lock:
                self._last_error[label] = outcome.detail
                self._failing_since.setdefault(label, now)
            give_up = self._workers[label].config.give_up_after
            if now - item.first_try >= give_up:
                status = "gave_up"
                log.error("notifier %s: gave up on notification %s after %d attempts in %.0f s "
                          "(%s): %s", label, nid, item.attempts, now - item.first_try,
                          outcome.detail, item.notification.summary)  # fmt: skip
            else:
                delay = min(MAX_RETRY, FIRST_RETRY * 2 ** (item.attempts - 1))
                item.next_at = now + delay * (0.5 + self._rng())
                self._keep(self._outbox.reschedule, label, nid, item.attempts, item.next_at)
                _limited.log(logging.WARNING, f"retry-{label}",
                             "notifier %s: %s; retrying in %.0f s", label, outcome.detail,
                             item.next_at - now)  # fmt: skip
        else:
            with self._lock:
                self._failing_since.pop(label, None)
            if status == "rejected":
                log.error("notifier %s: %s; not retrying: %s", label, outcome.detail,
                          item.notification.summary)  # fmt: skip
        if status != "failed":
            self._keep(self._outbox.done, label, nid)
        with self._lock:
            self._counts[label][status] += 1
            if status != "failed":
                del self._items[(nid, label)]

    @staticmethod
    def _keep(write: Callable[..., None], *args: Any) -> None:
        """Write to the outbox; a full disk costs the restart guarantee, never the sending."""
        try:
            write(*args)
        except OutboxError as err:
            _limited.log(logging.ERROR, "outbox", "%s; notifications go on, in memory only", err)

    def stats(self) -> dict[str, Any]:
        """`notifications`: {notifier: {outcome: n}} (fleetbeat_notifications_total),
        `pending`: {notifier: n}, `failing_since`: {notifier: epoch s} (failing now),
        `last_error`: {notifier: what its last failed attempt said} (failing now)."""
        with self._lock:
            counts = {label: dict(c) for label, c in self._counts.items()}
            pending = dict.fromkeys(self._workers, 0)
            for _, label in self._items:
                pending[label] += 1
            failing = dict(self._failing_since)
            errors = {label: self._last_error.get(label, "") for label in failing}
        return {"notifications": counts, "pending": pending, "failing_since": failing,
                "last_error": errors}  # fmt: skip

    def close(self, timeout: float = 1.0) -> None:
        """Stop the workers (waiting `timeout` at most for a send in progress)."""
        for w in self._workers.values():
            w.todo.put(None)
        deadline = time.monotonic() + timeout
        for w in self._workers.values():
            w.thread.join(max(0.0, deadline - time.monotonic()))
