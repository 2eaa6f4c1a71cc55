"""The alert engine: what alerts, when it starts and resolves, what is suppressed.

The main loop drives it; the HTTP side reads it. All of it is thread-safe.

    outbox = Outbox(c.state_dir)                              # alerts.db
    alerts = Alerts(c.alerts, maintenance=c.maintenance, silences=outbox.silences())
    alerts.restore(outbox.alerts(), now)                      # alerts told before a restart
    dispatcher = Dispatcher([(n, build(n)) for n in c.notify], outbox)
    # each turn of the main loop:
    alerts.evaluate(fleet.devices(), now)     # tags, parents, rules, loss: every few seconds
    alerts.observe(events, now)               # the events Fleet.take_changes() handed the store
    for n in alerts.tick(now):                # groups whose timer ran out
        dispatcher.submit(n)
    dispatcher.pump()                         # outcomes, retries
    outbox.save_alerts(alerts.take_told())    # what was told survives a restart
    outbox.save_silences(alerts.silences.take_changes())
    # the HTTP side:
    alerts.active(now)                        # GET /api/alerts
    alerts.silences.add(*parse_silence(body, now), now)   # POST /api/silences

`observe` reacts to transitions at once: `down` (missed heartbeats), `missing` (down
because it stayed silent through a collector restart), `offline`, and the one-off `reboot`
and `restart`; each resolves when the device is back up. `missing` is also an expected
device never heard from (`collector.lifecycle`), once it has been so for `missing_after`
(judged by `evaluate`; it resolves when the device speaks). A device that leaves the fleet
resolves its alerts with why (`resolved_reason`; "1 device forgotten", not "back up"):
"forgotten", "no longer expected" (a missing one off the list), "no longer tracked"
(evicted, released); if the id comes back its next alert is a new one. More than
`flapping` up/down changes, restarts and reboots within `flapping_window` raise one
`flapping` alert, which holds back the device's down/offline/reboot/restart alerts until
it has been stable for a whole window (a restart loop is one alert, not one a restart).
The fleet's own "flapping" event (a device past `max_events_per_minute`) raises it at
once. `evaluate` reads the devices' tags (for grouping and parents), reconciles state
alerts with the fleet (so a device that was down across a collector restart still
resolves), and judges the rules and `loss_above`, each held for its `for` / `loss_for`
before it fires. Times are epoch seconds passed in by the caller: the engine reads no
clock.

Suppression (left out of notifications, still active and marked in `active()`): a silence,
a maintenance window, a down or offline parent (the device named by the `parent_tag` tag),
and flapping. A parent's own notification says how many devices sit behind it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any, Optional

from fleetbeat.collector.alerts_config import SEVERITIES, AlertsSection, MaintenanceSection
from fleetbeat.collector.events import FORGOTTEN
from fleetbeat.collector.grouping import Alert, AlertKey, Grouper, Notification
from fleetbeat.collector.suppress import Maintenance, Silences

SEVERITY = {
    "down": "critical",
    "missing": "critical",
    "offline": "warning",
    "flapping": "warning",
    "reboot": "warning",
    "restart": "info",
    "loss": "warning",
}
STATE_KINDS = ("down", "missing", "offline")
FLAP_KINDS = (*STATE_KINDS, "reboot", "restart")  # what a flapping alert stands for
_UNREACHABLE = ("down", "offline")
_RANK = {s: i for i, s in enumerate(SEVERITIES)}


def _coarse(state: Optional[str]) -> Optional[str]:
    """Late is still up for flapping: only up/down/offline changes count."""
    return "up" if state == "late" else state


class Alerts:
    """Alerts from the fleet's events and devices, grouped into notifications.

    Args:
        config: `[collector.alerts]`.
        maintenance: the `[[collector.maintenance]]` windows.
        silences: the silences (the outbox reloads them); a new empty set by default.
        missing_after: s an expected device must have been missing before it alerts.
    """

    def __init__(
        self,
        config: AlertsSection,
        *,
        maintenance: Iterable[MaintenanceSection] = (),
        silences: Optional[Silences] = None,
        missing_after: float = 600.0,
    ) -> None:
        self._lock = threading.Lock()
        self.config = config
        self.missing_after = missing_after
        self.silences = silences if silences is not None else Silences()
        self._maintenance = Maintenance(maintenance)
        self._grouper = Grouper(config)
        # Per device only what must be: 100,000 devices cost ~4 MB here (benchmarks/alerts.py).
        self._tags: dict[str, Mapping[str, str]] = {}  # one shared dict per distinct tag set
        self._tag_sets: dict[tuple[tuple[str, str], ...], Mapping[str, str]] = {}
        self._unreachable: set[str] = set()  # down or offline now (parents)
        self._since: dict[str, float] = {}  # newest transition observed, until a snapshot has it
        self._children: dict[str, int] = {}  # parent id -> devices tagged with it
        self._changes: dict[str, list[float]] = {}  # recent up/down change times (flapping)
        self._breached: dict[AlertKey, float] = {}  # rule/loss breached since (not yet held)
        self._missing: set[str] = set()  # missing at the last look (`evaluate`)

    def apply_config(
        self,
        config: AlertsSection,
        maintenance: Iterable[MaintenanceSection] = (),
        missing_after: Optional[float] = None,
    ) -> None:
        """New settings from a reload; alerts and group timers carry on."""
        with self._lock:
            self.config = config
            if missing_after is not None:
                self.missing_after = missing_after
            self._grouper.config = config
            self._maintenance = Maintenance(maintenance)

    # --- input --------------------------------------------------------------------

    def observe(self, events: Iterable[Mapping[str, Any]], now: float) -> None:
        """Take the fleet's new events (transitions, restarts, reboots), oldest first."""
        with self._lock:
            gone: set[str] = set()  # forgotten, and not heard again since
            for ev in events:
                self._event(ev, now)
                (gone.add if ev["to"] == FORGOTTEN else gone.discard)(ev["device"])
            if gone:
                self._drop(gone, now)

    def _drop(self, gone: set[str], now: float) -> None:
        """Forgotten devices: alerts resolve as "forgotten" (not "back up"), history goes."""
        for dev in gone:
            self._unreachable.discard(dev)
            self._changes.pop(dev, None)
        for key in [k for k in self._breached if k[1] in gone]:
            del self._breached[key]
        self._grouper.forget(lambda dev: "forgotten" if dev in gone else None, now)

    def _event(self, ev: Mapping[str, Any], now: float) -> None:
        dev: str = ev["device"]
        to: str = ev["to"]
        frm: Optional[str] = ev["from"]
        reason: str = ev["reason"]
        t: float = ev["time"]
        if to in _UNREACHABLE:
            self._unreachable.add(dev)
        else:
            self._unreachable.discard(dev)
        self._since[dev] = t
        if reason == "first_seen" or to == FORGOTTEN:
            if frm == "missing":  # an expected device speaks at last
                self._end(dev, ("missing",), t)
            return
        restarted = reason in ("reboot", "restart")
        if restarted:
            self._start(reason, dev, t, now, instant=True)
        if reason == "flapping":  # the fleet stopped logging this device's events: too many
            self._flap(dev, t, now)
            self._start("flapping", dev, t, now)
        elif restarted or (frm is not None and _coarse(frm) != _coarse(to)):  # restart loops too
            self._flap(dev, t, now)
        if to == "down":
            self._start("missing" if reason == "silent_through_restart" else "down", dev, t, now)
            self._end(dev, ("offline",), t)
        elif to == "offline":
            self._start("offline", dev, t, now)
            self._end(dev, ("down", "missing"), t)
        else:
            self._end(dev, STATE_KINDS, t)

    def _flap(self, dev: str, t: float, now: float) -> None:
        times = self._changes.setdefault(dev, [])
        times.append(t)
        horizon = t - self.config.flapping_window
        if times[0] <= horizon:
            times[:] = [x for x in times if x > horizon]
        if len(times) > self.config.flapping:
            self._start("flapping", dev, t, now)

    def evaluate(self, devices: Iterable[Mapping[str, Any]], now: float) -> None:
        """Read every device (as `Fleet.devices()` gives them): tags, parents, rules, loss."""
        c = self.config
        rules = c.rule if c.alerts_on("rule") else ()
        loss = c.alerts_on("loss")
        with self._lock:
            known = self._tags
            tags_by: dict[str, Mapping[str, str]] = {}
            self._tags = tags_by  # filled as it goes: an alert started below takes its tags
            if len(self._tag_sets) > 10_000:
                self._tag_sets.clear()
            children: dict[str, int] = {}
            unreachable: set[str] = set()
            was_missing, missing = self._missing, set()
            for d in devices:
                dev: str = d["id"]
                tags: Mapping[str, str] = d["tags"]
                tags = tags_by[dev] = self._tag_sets.setdefault(tuple(tags.items()), tags)
                parent = tags.get(c.parent_tag)
                if parent:
                    children[parent] = children.get(parent, 0) + 1
                state: str = d["state"]
                if state == "missing":
                    missing.add(dev)
                news = self._since.get(dev)
                if news is None or d["state_since"] >= news:  # not older than our news
                    self._since.pop(dev, None)
                    if state in _UNREACHABLE:
                        unreachable.add(dev)
                    self._reconcile(dev, state, d["state_since"], now)
                elif dev in self._unreachable:
                    unreachable.add(dev)
                if state not in _UNREACHABLE:  # a silent device's last metrics are stale
                    metrics: Mapping[str, float] = d["metrics"]
                    for r in rules:
                        if r.match.matches(dev, tags):
                            v = metrics.get(r.metric)
                            hit = v is not None and r.breached(v)
                            self._hold(("rule", dev, r.name), hit, hold=r.hold,
                                       severity=r.severity, value=v, now=now)  # fmt: skip
                    if loss:
                        pct: float = d["recent_loss_pct"]
                        self._hold(("loss", dev, ""), pct > c.loss_above, hold=c.loss_for,
                                   severity=SEVERITY["loss"], value=pct, now=now)  # fmt: skip
            self._children = children
            self._unreachable = unreachable
            for dev in [k for k in self._since if k not in tags_by]:  # forgotten devices
                del self._since[dev]
            self._missing = missing
            gone = {k for k in known if k not in tags_by}  # known at the last look, gone now
            self._grouper.forget(lambda dev: None if dev not in gone else "no longer expected"
                                 if dev in was_missing else "no longer tracked", now)  # fmt: skip

    def _reconcile(self, dev: str, state: str, since: float, now: float) -> None:
        """State alerts agree with the fleet, whatever events were missed (a restart)."""
        alerts = self._grouper.alerts
        if state == "down":
            if not any(self._firing(alerts.get((k, dev, ""))) for k in ("down", "missing")):
                self._start("down", dev, since, now)
        elif state == "offline":
            if not self._firing(alerts.get(("offline", dev, ""))):
                self._start("offline", dev, since, now)
        elif state == "missing":  # expected, never heard: alerts once missing_after is over
            self._end(dev, ("down", "offline"), since, why="forgotten")  # known, now missing
            if now - since >= self.missing_after and not self._firing(
                alerts.get(("missing", dev, ""))
            ):
                self._start("missing", dev, since, now)
        else:
            self._end(dev, STATE_KINDS, since)

    @staticmethod
    def _firing(a: Optional[Alert]) -> bool:
        return a is not None and a.resolved is None

    def _hold(
        self,
        key: AlertKey,
        hit: bool,
        *,
        hold: float,
        severity: str,
        value: Optional[float],
        now: float,
    ) -> None:
        kind, dev, name = key
        if hit:
            since = self._breached.setdefault(key, now)
            if now - since >= hold:
                self._start(kind, dev, since, now, name=name, severity=severity, value=value)
        else:
            self._breached.pop(key, None)
            a = self._grouper.alerts.get(key)
            if a is not None and a.resolved is None:
                a.resolved = now

    def _start(
        self,
        kind: str,
        dev: str,
        t: float,
        now: float,
        *,
        name: str = "",
        severity: str = "",
        value: Optional[float] = None,
        instant: bool = False,
    ) -> None:
        if not self.config.alerts_on(kind):
            return
        key = (kind, dev, name)
        a = self._grouper.alerts.get(key)
        if a is not None and not instant:
            a.resolved = None  # back before its end was told: it simply goes on
            a.last = now
            a.value = value
            return
        a = Alert(kind, dev, name=name, severity=severity or SEVERITY[kind],
                  tags=self._tags.get(dev, {}), started=t, value=value,
                  instant=instant)  # fmt: skip
        self._grouper.add(a, now)

    def _end(self, dev: str, kinds: Iterable[str], t: float, why: str = "") -> None:
        alerts = self._grouper.alerts
        for k in kinds:
            a = alerts.get((k, dev, ""))
            if a is not None and a.resolved is None:
                a.resolved = t
                a.why = why

    # --- across restarts -----------------------------------------------------------

    def take_told(self) -> Optional[list[dict[str, Any]]]:
        """The notified alerts still firing, when they changed since the last call; else None.

        The main loop hands them to `Outbox.save_alerts`, so that after a restart such an
        alert is neither notified again nor left without its resolved notification.
        """
        with self._lock:
            if not self._grouper.told_changed:
                return None
            self._grouper.told_changed = False
            return [a.to_json() for a in self._grouper.told()]

    def restore(self, told: Iterable[Mapping[str, Any]], now: float) -> int:
        """Put back what `take_told` gave before a restart; returns how many came back."""
        n = 0
        with self._lock:
            for d in told:
                kind = d["kind"]
                a = Alert(kind, d["device"], name=d["name"] if kind == "rule" else "",
                          severity=d["severity"], tags=d["tags"], started=d["started"],
                          value=d["value"])  # fmt: skip
                if a.key not in self._grouper.alerts:
                    self._grouper.add_told(a, now)
                    n += 1
        return n

    # --- output -------------------------------------------------------------------

    def tick(self, now: float) -> list[Notification]:
        """The notifications of the groups whose timer ran out (call it every second or so)."""
        with self._lock:
            self._settle_flapping(now)
            return self._grouper.due(now, lambda a: self._suppression(a, now), self._behind)

    def next_due(self) -> float:
        """When `tick` will next have something to do (epoch s; inf when nothing is pending)."""
        with self._lock:
            return self._grouper.next_due()

    def _settle_flapping(self, now: float) -> None:
        window = self.config.flapping_window
        for dev in [d for d, ts in self._changes.items() if ts[-1] <= now - window]:
            del self._changes[dev]  # stable for a whole window
            a = self._grouper.alerts.get(("flapping", dev, ""))
            if a is not None and a.resolved is None:
                a.resolved = now

    def _behind(self, a: Alert) -> int:
        return self._children.get(a.device, 0) if a.kind in STATE_KINDS else 0

    def _suppression(self, a: Alert, now: float) -> Optional[dict[str, Any]]:
        """What keeps this alert from being notified now, or None."""
        s = self.silences.find(a.device, a.tags, now)
        if s is not None:
            return {"by": "silence", "id": s.id, "until": s.until, "comment": s.comment}
        m = self._maintenance.find(a.device, a.tags, now)
        if m is not None:
            return m
        parent = a.tags.get(self.config.parent_tag)
        if parent and parent != a.device and parent in self._unreachable:
            return {"by": "parent", "parent": parent}
        if a.kind in FLAP_KINDS and self._firing(
            self._grouper.alerts.get(("flapping", a.device, ""))
        ):
            return {"by": "flapping"}
        return None

    def active(self, now: float) -> list[dict[str, Any]]:
        """Alerts firing now, most severe and oldest first; `suppressed` says by what, or null."""
        with self._lock:
            out = []
            for a in self._grouper.alerts.values():
                if a.resolved is not None:
                    continue
                d = a.to_json(behind=self._behind(a))
                d["notified"] = a.notified
                d["suppressed"] = self._suppression(a, now)
                out.append(d)
        out.sort(key=lambda d: (-_RANK[d["severity"]], d["started"], d["device"], d["name"]))
        return out
