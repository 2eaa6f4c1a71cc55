"""The alert side of the collector's main loop: engine, outbox, notifiers, dead man's switch.

`Collector` builds one `Alerting` after its store, hands it the fleet's new events at every
flush (the same events the store gets) and calls `turn()` at every turn of the main loop:

    alerting = Alerting(section, fleet, healthy=...)  # alerts.db reloaded: told alerts, silences
    alerting.observe(events)          # in Collector.flush, beside store.write
    alerting.turn()                   # every turn: evaluate, tick, dispatch, pump, save, ping
    alerting.apply(new_section)       # SIGHUP: [collector.alerts] and maintenance windows
    alerting.close()                  # on stop, after the last flush

The HTTP side reads `active()` and `stats()`, and adds and removes silences through
`add_silence` and `remove_silence`; all of that is thread-safe. `active()` answers from a view
the main loop keeps (rebuilt after every change, else every second at most): at 10,000 alerts
building it takes 20-110 ms, which no HTTP request should wait for. Nothing here raises into
the loop: an outbox that cannot write is logged, and notifications go on from memory.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any, Callable, Optional, Protocol

from fleetbeat.collector.alerts import Alerts
from fleetbeat.collector.alerts_config import Match
from fleetbeat.collector.config import CollectorSection
from fleetbeat.collector.notifiers import build
from fleetbeat.collector.outbox import Dispatcher, Outbox, OutboxError
from fleetbeat.collector.self_check import SelfCheck
from fleetbeat.collector.suppress import Silence
from fleetbeat.logutil import RateLimitedLog

log = logging.getLogger(__name__)
_limited = RateLimitedLog(log)

EVALUATE_TURNS = 8  # turns of the main loop between two reads of every device (2 s by
# default: tags, rules, loss), and at least 20x as long as the last read took: at 100,000
# devices `Fleet.devices()` plus `evaluate` take ~0.6 s, so reading costs 5% of a core at most
EVALUATE_SHARE = 20


class DeviceSource(Protocol):
    """What the engine reads from the fleet (collector.fleet.Fleet provides it)."""

    def devices(self) -> list[dict[str, Any]]: ...


class Alerting:
    """Alerts, their outbox and notifiers, and the self-check, driven by the main loop.

    Args:
        section: the validated `[collector]` table.
        fleet: the devices `evaluate` reads.
        healthy: true while receivers run, the store writes and judging is on time.
        clock: wall clock (alert times are epoch seconds); monotonic: for the timers.
    """

    def __init__(
        self,
        section: CollectorSection,
        fleet: DeviceSource,
        *,
        healthy: Callable[[], bool],
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fleet = fleet
        self._check_interval = section.check_interval
        self._clock = clock
        self._mono = monotonic
        self.outbox = Outbox(section.state_dir)
        try:
            self.alerts = Alerts(section.alerts, maintenance=section.maintenance,
                                 silences=self.outbox.silences(),
                                 missing_after=section.missing_after)  # fmt: skip
            restored = self.alerts.restore(self.outbox.alerts(), clock())
            self.dispatcher = Dispatcher([(n, build(n)) for n in section.notify], self.outbox,
                                         clock=clock)  # fmt: skip
        except BaseException:
            self.outbox.close()
            raise
        self.self_check = (
            SelfCheck(section.self_check, healthy) if section.self_check is not None else None
        )
        self._next_evaluate = -1e300
        self._view: Optional[tuple[float, list[dict[str, Any]]]] = None  # None: to rebuild
        self._next_view = -1e300
        names = ", ".join(n.label for n in section.notify) or "none"
        log.info("alerts: %d told before the restart, %d silences, notifiers: %s", restored,
                 len(self.alerts.silences.list(clock())), names)  # fmt: skip

    def observe(self, events: Sequence[Mapping[str, Any]]) -> None:
        """The fleet's new events, as the store gets them (oldest first)."""
        if events:
            try:
                self.alerts.observe(events, self._clock())
            except Exception as exc:  # a bug here must not keep the events from the store
                _limited.log(logging.ERROR, "observe", "alerts: observing events failed: %r", exc)
            self._view = None

    def active(self) -> tuple[float, list[dict[str, Any]]]:
        """(when, the alerts active then): a second old at most, fresh after any change."""
        view = self._view
        if view is None:
            now = self._clock()
            view = self._view = (now, self.alerts.active(now))
        return view

    def add_silence(self, match: Match, until: float, comment: str, now: float) -> Silence:
        s = self.alerts.silences.add(match, until, comment, now)
        self._view = None
        return s

    def remove_silence(self, silence_id: str) -> bool:
        gone = self.alerts.silences.remove(silence_id)
        self._view = None
        return gone

    def turn(self) -> None:
        """One turn of the main loop: judge, group, hand out, retry, keep, ping."""
        try:
            self._turn()
        except Exception as exc:  # a bug here must not stop judging and storing
            _limited.log(logging.ERROR, "turn", "alerts: a turn failed: %r", exc)

    def _turn(self) -> None:
        now = self._clock()
        mono = self._mono()
        if mono >= self._next_evaluate:
            devices = self._fleet.devices()
            self.alerts.evaluate(devices, now)
            took = self._mono() - mono
            every = max(EVALUATE_TURNS * self._check_interval, EVALUATE_SHARE * took)
            self._next_evaluate = mono + every
        notes = self.alerts.tick(now)
        for n in notes:
            self.dispatcher.submit(n, now)
        if notes or self._view is None or mono >= self._next_view:
            self._view = None
            self.active()
            self._next_view = mono + max(1.0, EVALUATE_SHARE * (self._mono() - mono))
        self.dispatcher.pump(now)
        self._save()
        if self.self_check is not None:
            self.self_check.tick(mono)

    def _save(self) -> None:
        told = self.alerts.take_told()
        silences = self.alerts.silences.take_changes()
        try:
            self.outbox.save_alerts(told)
            self.outbox.save_silences(silences)
        except OutboxError as err:  # a full disk costs the restart guarantee, not the alerts
            _limited.log(logging.ERROR, "save", "%s; alerts and silences go on in memory", err)

    def apply(self, section: CollectorSection) -> None:
        """A reload's `[collector.alerts]` and maintenance windows, at once."""
        self.alerts.apply_config(section.alerts, section.maintenance, section.missing_after)
        self._check_interval = section.check_interval

    def stats(self) -> dict[str, Any]:
        """The dispatcher's counters and, when configured, the self-check's."""
        out = self.dispatcher.stats()
        out["self_check"] = self.self_check.stats() if self.self_check is not None else None
        return out

    def close(self) -> None:
        """Keep what was told and the silences, stop the notifiers, close alerts.db."""
        self._save()
        self.dispatcher.close()
        self.outbox.close()
