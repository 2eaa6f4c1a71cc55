"""The collector process: receivers, store, HTTP, and one main loop for periodic work.

Receivers run in their own threads and only touch the `Fleet` (under its lock).
The main thread runs `Collector.run`: every `check_interval` it judges silent
devices (late, down), every `flush_interval` it writes changes to the store,
and under systemd it sends the watchdog pings and STATUS= from there (a stuck
loop stops the pings). SIGTERM or SIGINT stops it cleanly with a last flush.
SIGHUP re-reads the config file: an invalid one is logged and ignored; a valid
one's judgement settings (late_after, down_after, max_down_after, max_devices,
max_payload, intervals, retention, max_stored_events, missing_after, forget_after)
apply at once, and the listen addresses, state_dir, receive buffer and MQTT settings
need a restart (logged).
The `expected_devices` file is read at start (a bad line is a config error) and again
on SIGHUP, in a thread of its own so that a big file holds up no check, flush or
watchdog ping (a bad file is logged, and the list read before stays), as the signing
keys.

Alerts (`collector.alerting`) are built after the store and hear every event once, at
the flush after it was logged (`Fleet.take_heard`), whether the store's write succeeds,
fails and is retried, or a forget drops the device's unwritten events; they turn with
the loop, and a device judged late or down is flushed within 0.5 s so that they hear of
it soon. SIGHUP applies `[collector.alerts]`
and the maintenance windows; notifiers, the self-check and the token need a restart.

A store that cannot write (a full disk) never stops judging: the changes stay in
memory (at most one row per device and a bounded number of events) and every flush
tries again. The failure is logged as an error each time its reason changes, shown
in systemd's STATUS= and answered by `/healthz` with 503; a database deleted or
replaced under the running collector is recreated and written whole (only the events
newer than a restored copy's newest one of each device: none twice). While it cannot
write, `DELETE /api/devices/{id}` is refused (503): a forget only in memory would be
undone by a restart. When the last write at SIGTERM fails, the log says what was lost
(the forgets not yet deleted from the store by id) and the exit status is 74 (EX_IOERR),
so systemd marks the stop as failed.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from types import FrameType
from typing import Any, Callable, Optional

from fleetbeat.collector import expected as expected_file
from fleetbeat.collector.alerting import Alerting
from fleetbeat.collector.auth import ApiToken, Keyring
from fleetbeat.collector.config import (
    AuthSection,
    CollectorConfig,
    api_token_path,
)
from fleetbeat.collector.fleet import Fleet
from fleetbeat.collector.receivers import start_receivers
from fleetbeat.collector.receivers.base import Receiver
from fleetbeat.collector.store import Store, StoreError
from fleetbeat.collector.store_events import rewrite
from fleetbeat.errors import ConfigError
from fleetbeat.logutil import RateLimitedLog
from fleetbeat.sdnotify import Notifier, Supervision

log = logging.getLogger(__name__)
_limited = RateLimitedLog(log)

PRUNE_EVERY = 3600.0  # s between deletions of events past the retention (at most)
SOON = 0.5  # s: a device judged late or down is written, and alerted on, this soon at most
EX_IOERR = 74  # sysexits.h: the last write of the state failed
MAX_UNFORGOTTEN = 100_000  # evicted ids kept for deletion while the store fails
# settings a running collector cannot change: sockets, files and the MQTT client
RESTART_NEEDED = ("udp_listen", "http_listen", "state_dir", "udp_receive_buffer", "mqtt",
                  "log_level", "api_token_file", "notify", "self_check", "http_ingest_listen",
                  "http_ingest_max_body")  # fmt: skip


class Collector:
    """Wires the fleet, its store, its receivers and the HTTP server.

    Args:
        config: the validated configuration.
        clock: wall clock, injected by tests.
    """

    def __init__(self, config: CollectorConfig, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self._clock = clock
        self.fleet = Fleet(config.collector, clock=clock)
        self.store: Optional[Store] = None
        self.receivers: list[Receiver] = []
        self.http: Any = None
        self._stop = threading.Event()
        self._reload_requested = False
        self.store_health = StoreHealth()
        self.keyring: Optional[Keyring] = None
        self._exit_status = 0
        self._unsaved = (0, 0)  # device rows and events the last failed flush could not write
        self._unforgotten: list[str] = []  # evicted devices still to delete from the store
        self.alerting: Optional[Alerting] = None
        self._turn_gap = 0.0  # s between the last two turns of the main loop
        self.rereader = expected_file.Rereader(self.fleet)  # expected_devices on SIGHUP

    def status_line(self) -> str:
        """One line for `systemctl status`: devices by state and the overall loss."""
        by_state = self.fleet.stats()["devices"]
        total = sum(by_state.values())
        states = ", ".join(f"{n} {s}" for s, n in by_state.items() if n)
        line = f"{total} devices" + (f": {states}" if states else "")
        problem = self.health()
        return f"{line}; {problem}" if problem else line

    def health(self) -> Optional[str]:
        """None while the collector can do its whole job; else what is wrong (for /healthz)."""
        return self.store_health.problem()

    def healthy(self) -> bool:
        """For the dead man's switch: receivers running, store writing, judging on time."""
        on_time = self._turn_gap <= max(5.0, 20 * self.config.collector.check_interval)
        return bool(self.receivers) and self.health() is None and on_time

    def start(self) -> None:
        """Reload stored state, then start receiving and serving."""
        c = self.config.collector
        try:  # before anything starts: a bad line is a config error (exit status 78)
            expected = expected_file.load_expected(c)
        except expected_file.ExpectedError as err:
            raise ConfigError([f"collector.expected_devices: {p}" for p in err.problems]) from None
        self.fleet.expect(expected)
        if c.expected_devices:
            log.info("expected devices: %d in %s", len(expected), c.expected_devices)
        self.keyring = load_keyring(c.auth)
        self.fleet.use_keyring(self.keyring)  # before anything is received
        self.store = Store(c.state_dir, retention=c.event_retention,
                           max_events=c.max_stored_events, loss_history=c.loss_history,
                           clock=self._clock)  # fmt: skip
        rows, events = self.store.load(self._clock())
        loaded = self.fleet.restore(rows, events)
        log.info("state in %s: %d devices reloaded", self.store.path, loaded)
        try:
            self.alerting = Alerting(c, self.fleet, healthy=self.healthy, clock=self._clock)
            token = ApiToken(api_token_path(c))
        except BaseException:
            self.close()
            raise
        self.flush()  # devices judged down at reload are stored (and alerted) as such at once
        try:
            self.receivers = start_receivers(self.fleet, c)
            for r in self.receivers:
                log.info("listening for wire v1 on %s", r.name)
            self.http = _start_http(self.fleet, self.config, self.health, self.alerting, token,
                                    store_path=self.store.path)  # fmt: skip
        except BaseException:
            self.close()
            raise

    def request_stop(self, *_: Any) -> None:
        self._stop.set()

    def run(self, *, notifier: Optional[Notifier] = None) -> int:
        """Start, then loop until SIGTERM/SIGINT; returns an exit status."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        signal.signal(signal.SIGHUP, self._on_reload)
        service = Supervision(notifier or Notifier(), status=self.status_line)
        self.start()
        service.ready()
        next_flush = time.monotonic() + self.config.collector.flush_interval
        next_prune = time.monotonic() + self._prune_every()
        last_turn = time.monotonic()
        try:
            # The one main loop: all periodic work happens here, in this thread.
            while True:
                c = self.config.collector
                wait = min(c.check_interval, max(0.0, service.tick() - time.monotonic()))
                if self._stop.wait(wait):
                    break
                if self._reload_requested:
                    self._reload_requested = False
                    self._reload(service)
                judged = self.fleet.check()
                now = time.monotonic()
                if judged:  # the alerts hear of transitions at the flush: not 5 s later
                    next_flush = min(next_flush, now + SOON)
                if now >= next_flush:
                    self.flush()
                    next_flush = now + c.flush_interval
                if now >= next_prune:
                    self._prune()
                    next_prune = now + self._prune_every()
                self._turn_gap, last_turn = now - last_turn, now
                if self.alerting is not None:
                    self.alerting.turn()
        finally:
            service.stopping()
            self.close()
        log.info("collector stopped")
        return self._exit_status

    def _prune_every(self) -> float:
        # a tenth of the retention keeps the table within 10% of it, hourly at most
        return min(PRUNE_EVERY, self.config.collector.event_retention / 10)

    def _on_reload(self, signum: int, frame: Optional[FrameType]) -> None:
        self._reload_requested = True  # the loop reloads within check_interval

    def _reload(self, service: Supervision) -> None:
        """Re-read the config file; apply what a running collector can change."""
        service.reload(self.config.source, self._apply_file)

    def _apply_file(self, path: str) -> None:
        from fleetbeat.collector.config import load_collector_config

        new = load_collector_config(path)
        old = self.config.collector
        fixed = [k for k in RESTART_NEEDED if getattr(new.collector, k) != getattr(old, k)]
        if fixed:
            log.warning("reload: %s changed: restart the collector to apply", ", ".join(fixed))
        if new.collector.auth == old.auth and self.keyring is not None:
            self.keyring.load()  # new files in keys_dir; a broken one keeps its old key
            ring = self.keyring
        else:
            ring = load_keyring(new.collector.auth)  # raises: the old keys stay in force
        self.fleet.apply_limits(new.collector)
        self.rereader.soon(new.collector, old.expected_devices)  # in a thread of its own
        if self.store is not None:  # what prune deletes
            self.store.retention = new.collector.event_retention
            self.store.loss_history = new.collector.loss_history
            self.store.max_events = new.collector.max_stored_events
        self.fleet.use_keyring(ring)
        self.keyring = ring
        if self.alerting is not None:
            self.alerting.apply(new.collector)  # [collector.alerts], maintenance windows
        self.config = new

    def _on_signal(self, signum: int, frame: Optional[FrameType]) -> None:
        log.info("%s: stopping", signal.Signals(signum).name)
        self._stop.set()

    def flush(self) -> bool:
        """Write what changed since the last flush in one transaction; False if it failed."""
        store = self.store
        if store is None:
            return True
        gone = store.replaced()
        stored = None if gone is None else self._recreate(store, gone)
        rows, events = self.fleet.take_changes()
        if stored is not None:
            events = rewrite(self.fleet.events(limit=10**9), events, stored)
        heard = self.fleet.take_heard()  # each event once, whatever the store does with it
        if self.alerting is not None:
            self.alerting.observe(heard)
        forgotten = self._unforgotten + self.fleet.take_forgotten()
        try:
            store.forget(forgotten)
            self._unforgotten = []
            store.write(rows, events)
        except StoreError as err:
            self._unforgotten = forgotten[-MAX_UNFORGOTTEN:]  # a restart re-caps the rest
            # a full disk must not stop liveness checks: keep the changes, retry next time
            self._unsaved = (len(rows), len(events))
            dropped = self.fleet.requeue(rows, events)
            self.store_health.failed(str(err), dropped)
            return False
        self.store_health.ok()
        return True

    def _recreate(self, store: Store, how: str) -> Optional[dict[str, float]]:
        """The database file was deleted or swapped: open a new one, mark every device to
        be written again; return each device's newest event time in it (None: failed)."""
        log.error("the state database %s was %s under the running collector: recreating it "
                  "and writing every device and recent event again", store.path, how)  # fmt: skip
        try:
            store.reopen()
            stored = store.latest_events()  # a restored copy holds events up to these
        except StoreError as err:
            self.store_health.failed(str(err), 0)
            return None
        # requeue marks each id dirty (it reads row[0])
        self.fleet.requeue([(d["id"],) for d in self.fleet.devices()], [])
        return stored

    def _prune(self) -> None:
        if self.store is None:
            return
        try:
            gone = self.store.prune(self._clock())
        except StoreError as err:
            self.store_health.failed(str(err), 0)
            return
        if gone:
            log.info("deleted %d events older than the retention", gone)

    def close(self) -> None:
        """Stop receiving and serving, flush a last time, close the store."""
        for r in self.receivers:
            r.close()
        self.receivers = []
        if self.http is not None:
            close = getattr(self.http, "close", None)
            if close is not None:
                close()
            self.http = None
        if self.store is not None:
            if not self.flush():
                devices, events = self._unsaved
                log.error("the last write of the state to %s failed (%s). Lost: the changes "
                          "of %d devices and %d events since the last successful write%s",
                          self.store.path, self.store_health.problem(), devices, events,
                          _unwritten(self._unforgotten))  # fmt: skip
                self._exit_status = EX_IOERR
            self.store.close()
            self.store = None
        if self.alerting is not None:
            self.alerting.close()
            self.alerting = None


def _unwritten(ids: list[str], shown: int = 20) -> str:
    """For the exit log: the forgets (and evictions) the store never deleted."""
    if not ids:
        return ""
    more = f" and {len(ids) - shown} more" if len(ids) > shown else ""
    return (f", and the forgets of {len(ids)} devices (forgotten or evicted: they are back "
            f"after a restart): {', '.join(ids[:shown])}{more}")  # fmt: skip


def load_keyring(auth: AuthSection) -> Keyring:
    """The signing keys `[collector.auth]` names, read now (at start and on SIGHUP)."""
    ring = Keyring(keys_dir=auth.keys_dir, fleet_key_file=auth.fleet_key_file,
                   require_signed=auth.require_signed)  # fmt: skip
    ring.load()
    return ring


class StoreHealth:
    """Whether the store can write, logged each time that changes (never rate-limited away)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._reason: Optional[str] = None
        self._since = 0.0
        self._dropped = 0

    def problem(self) -> Optional[str]:
        if self._reason is None:
            return None
        return f"store cannot write: {self._reason}"

    def failed(self, reason: str, dropped: int) -> None:
        self._dropped += dropped
        if reason != self._reason:
            if self._reason is None:
                self._since = self._clock()
            log.error("store: %s; keeping the changes in memory (one row per device) and "
                      "trying again at every flush", reason)  # fmt: skip
            self._reason = reason
        else:
            _limited.log(logging.ERROR, "store", "store: still failing: %s", reason)
        if dropped:
            _limited.log(logging.ERROR, "store-dropped", "store: %d events dropped so far: "
                         "more were pending than memory keeps", self._dropped)  # fmt: skip

    def ok(self) -> None:
        if self._reason is not None:
            log.warning("store: writing again after %.0f s of failures (%s)",
                        self._clock() - self._since, self._reason)  # fmt: skip
            self._reason = None


def _start_http(fleet: Fleet, config: CollectorConfig, health: Callable[[], Optional[str]],
                alerting: Optional[Alerting], token: ApiToken, *,
                store_path: str) -> Any:  # fmt: skip
    try:
        from fleetbeat.collector import http
    except ImportError as exc:
        log.warning("HTTP is unavailable (%s): no dashboard, API or /metrics", exc)
        return None
    return http.start(fleet, config, health=health, alerting=alerting, token=token,
                      store_path=store_path)  # fmt: skip
