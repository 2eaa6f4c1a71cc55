"""The collector process: receivers, store, HTTP, and one main loop for periodic work.

Receivers run in their own threads and only touch the `Fleet` (under its lock).
The main thread runs `Collector.run`: every `check_interval` it judges silent
devices (late, down), every `flush_interval` it writes changes to the store,
and under systemd it sends the watchdog pings and STATUS= from there (a stuck
loop stops the pings). SIGTERM or SIGINT stops it cleanly with a last flush.
SIGHUP re-reads the config file: an invalid one is logged and ignored; a valid
one's judgement settings (late_after, down_after, max_down_after, max_devices,
max_payload, intervals, retention) apply at once, and the listen addresses,
state_dir, receive buffer and MQTT settings need a restart (logged).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from types import FrameType
from typing import Any, Callable, Optional

from fleetbeat.collector.config import CollectorConfig
from fleetbeat.collector.fleet import Fleet
from fleetbeat.collector.receivers import start_receivers
from fleetbeat.collector.store import Store, StoreError
from fleetbeat.logutil import RateLimitedLog
from fleetbeat.sdnotify import Notifier, Supervision

log = logging.getLogger(__name__)
_limited = RateLimitedLog(log)

PRUNE_EVERY = 3600.0  # s between deletions of events past the retention
# settings a running collector cannot change: sockets, files and the MQTT client
RESTART_NEEDED = ("udp_listen", "http_listen", "state_dir", "udp_receive_buffer", "mqtt",
                  "log_level")  # fmt: skip


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
        self.receivers: list[Any] = []
        self.http: Any = None
        self._stop = threading.Event()
        self._reload_requested = False

    def status_line(self) -> str:
        """One line for `systemctl status`: devices by state and the overall loss."""
        by_state = self.fleet.stats()["devices"]
        total = sum(by_state.values())
        states = ", ".join(f"{n} {s}" for s, n in by_state.items() if n)
        return f"{total} devices" + (f": {states}" if states else "")

    def start(self) -> None:
        """Reload stored state, then start receiving and serving."""
        c = self.config.collector
        self.store = Store(c.state_dir, retention=c.event_retention)
        rows, events = self.store.load(self._clock())
        loaded = self.fleet.restore(rows, events)
        log.info("state in %s: %d devices reloaded", self.store.path, loaded)
        self.flush()  # devices judged down at reload are stored as such at once
        try:
            self.receivers = start_receivers(self.fleet, c.udp_listen, c.udp_receive_buffer, c.mqtt)
            udp = self.receivers[0]
            log.info("listening for wire v1 on UDP %s", _sockname(udp.address))
            if c.mqtt is not None:
                log.info("subscribing on MQTT broker %s:%d", c.mqtt.host, c.mqtt.port)
            self.http = _start_http(self.fleet, self.config)
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
        next_prune = time.monotonic() + PRUNE_EVERY
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
                self.fleet.check()
                now = time.monotonic()
                if now >= next_flush:
                    self.flush()
                    next_flush = now + c.flush_interval
                if now >= next_prune:
                    self._prune()
                    next_prune = now + PRUNE_EVERY
        finally:
            service.stopping()
            self.close()
        log.info("collector stopped")
        return 0

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
        self.fleet.apply_limits(new.collector)
        self.config = new

    def _on_signal(self, signum: int, frame: Optional[FrameType]) -> None:
        log.info("%s: stopping", signal.Signals(signum).name)
        self._stop.set()

    def flush(self) -> None:
        """Write what changed since the last flush in one transaction."""
        if self.store is None:
            return
        rows, events = self.fleet.take_changes()
        try:
            self.store.write(rows, events)
        except StoreError as err:
            # a full disk must not stop liveness checks: keep the changes, retry next time
            self.fleet.requeue(rows, events)
            _limited.log(logging.ERROR, "store", "%s; will retry", err)

    def _prune(self) -> None:
        if self.store is not None:
            gone = self.store.prune(self._clock())
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
            self.flush()
            self.store.close()
            self.store = None


def _start_http(fleet: Fleet, config: CollectorConfig) -> Any:
    try:
        from fleetbeat.collector import http
    except ImportError as exc:
        log.warning("HTTP is unavailable (%s): no dashboard, API or /metrics", exc)
        return None
    return http.start(fleet, config)


def _sockname(addr: tuple[Any, ...]) -> str:
    host = str(addr[0])
    return f"[{host}]:{addr[1]}" if ":" in host else f"{host}:{addr[1]}"
