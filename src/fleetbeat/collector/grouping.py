"""Grouping and timing of alerts into notifications: Alertmanager's model, which operators know.

Alerts whose devices share the `group_by` tag values form a group (devices without those
tags form one group of their own). A new group waits `group_wait` so that a site going dark
is one notification, not thirty; after that it is looked at every `group_interval`: a
notification goes out when an alert fired that was not notified yet, or (with
`send_resolved`) one that was notified has ended; otherwise, while alerts last, a reminder
every `repeat_interval`. A suppressed alert (silence, maintenance, a down parent, flapping)
is left out of notifications and stays in its group, so it is notified when the suppression
ends and it still lasts. An alert that starts and ends between two looks is never notified.
An alert notified as firing whose device leaves (forgotten, no longer expected, no longer
tracked: `forget`) resolves with that reason (`resolved_reason`, in the summary: "1 device
forgotten: pi-a"), told with `send_resolved`; the device's next alert is a new one.

A notification is one line saying what happened ("3 devices down at site=barn: pi-barn-01,
pi-barn-02, pi-barn-07") plus the detail as JSON (the webhook payload in
`fleetbeat.collector.notifiers.webhook`).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from typing import Any, Callable, Optional

from fleetbeat.collector.alerts_config import KINDS, AlertsSection
from fleetbeat.config.frozen import dataclass, replace

MAX_NAMES = 10  # devices named in the one-line summary; the JSON lists them all

# kind -> (what a firing one did, what a resolved one did)
_VERBS = {
    "down": ("down", "back up"),
    "missing": ("missing", "back"),  # never heard (expected), or silent through a restart
    "offline": ("offline", "back online"),
    "flapping": ("flapping", "stable again"),
    "reboot": ("rebooted", "rebooted"),
    "restart": ("restarted", "restarted"),
    "loss": ("losing heartbeats", "back to normal loss"),
}
_ORDER = {k: i for i, k in enumerate(KINDS)}

AlertKey = tuple[str, str, str]  # kind, device, rule name ("" for the other kinds)


class Alert:
    """One alert: something about one device that started, lasts, and may have resolved."""

    __slots__ = (
        "device", "group", "instant", "key", "kind", "last", "name", "notified", "resolved",
        "severity", "started", "tags", "value", "why",
    )  # fmt: skip

    def __init__(
        self,
        kind: str,
        device: str,
        *,
        name: str = "",
        severity: str,
        tags: Mapping[str, str],
        started: float,
        value: Optional[float] = None,
        instant: bool = False,
    ) -> None:
        self.key: AlertKey = (kind, device, name)
        self.kind = kind
        self.device = device
        self.name = name or kind
        self.severity = severity
        self.tags = tags
        self.started = started
        self.last = started
        self.resolved: Optional[float] = None
        self.value = value
        self.instant = instant  # one-off (reboot, restart): notified once, never resolved
        self.notified = False  # a firing notification about it went out
        self.why = ""  # resolved because the device left ("forgotten", ...); "" otherwise
        self.group: tuple[str, ...] = ()

    def to_json(self, *, new: bool = False, behind: int = 0) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "device": self.device,
            "severity": self.severity,
            "status": "firing" if self.resolved is None else "resolved",
            "new": new,
            "started": self.started,
            "resolved": self.resolved,
            "resolved_reason": self.why or None,
            "value": self.value,
            "behind": behind,
            "tags": dict(self.tags),
        }


@dataclass(frozen=True)
class Notification:
    """What one group has to say now; `id` stays the same across retries (receivers dedupe)."""

    id: str
    status: str  # "firing" while any alert in it fires, else "resolved"
    reminder: bool
    group: Mapping[str, str]
    group_label: str
    summary: str
    time: float
    expires: float  # when a reminder would have come if it still lasted
    alerts: tuple[dict[str, Any], ...]

    def to_json(self) -> dict[str, Any]:
        firing = sum(1 for a in self.alerts if a["status"] == "firing")
        return {
            "version": 1,
            "id": self.id,
            "status": self.status,
            "reminder": self.reminder,
            "summary": self.summary,
            "group": dict(self.group),
            "group_label": self.group_label,
            "time": self.time,
            "expires": self.expires,
            "counts": {"firing": firing, "resolved": len(self.alerts) - firing},
            "alerts": [dict(a) for a in self.alerts],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Notification:
        return cls(
            id=str(data["id"]),
            status=str(data["status"]),
            reminder=bool(data["reminder"]),
            group={str(k): str(v) for k, v in data["group"].items()},
            group_label=str(data["group_label"]),
            summary=str(data["summary"]),
            time=float(data["time"]),
            expires=float(data["expires"]),
            alerts=tuple(dict(a) for a in data["alerts"]),
        )

    def only(self, keep: Callable[[Mapping[str, Any]], bool]) -> Optional[Notification]:
        """The same notification with only the alerts `keep` accepts; None when none is left."""
        alerts = tuple(a for a in self.alerts if keep(a))
        if len(alerts) == len(self.alerts):
            return self
        if not alerts:
            return None
        firing = any(a["status"] == "firing" for a in alerts)
        summary = summarize(alerts, self.group_label, reminder=self.reminder)
        return replace(
            self, alerts=alerts, summary=summary, status="firing" if firing else "resolved"
        )


def summarize(alerts: Iterable[Mapping[str, Any]], group_label: str, *, reminder: bool) -> str:
    """One line: what happened, to how many devices, which ones.

    The new and the resolved alerts are told; a reminder tells every firing one.
    """
    parts: dict[tuple[int, str, str, str], list[Mapping[str, Any]]] = {}
    for a in alerts:
        resolved = a["status"] == "resolved"
        if not (reminder or a["new"] or resolved):
            continue
        why = (a.get("resolved_reason") or "") if resolved else ""
        key = (int(resolved), f"{_ORDER.get(a['kind'], 99):02d}", a["name"], why)
        parts.setdefault(key, []).append(a)
    phrases = []
    for (resolved, _, name, why), items in sorted(parts.items()):
        kind = items[0]["kind"]
        n = len(items)
        devices = f"{n} device" + ("" if n == 1 else "s")
        if kind == "rule":
            head = f"{name} {'cleared ' if resolved else ''}on {devices}"
            head += f" ({why})" if why else ""
        elif why:  # it did not come back: it left (a "down" forgotten is not "back up")
            head = f"{devices} {why}" + ("" if kind in ("down", "missing") else f" ({kind})")
        else:
            head = f"{devices} {_VERBS.get(kind, (kind, kind))[resolved]}"
        named = [_name(a) for a in sorted(items, key=lambda a: a["device"])[:MAX_NAMES]]
        if n > MAX_NAMES:
            named.append(f"and {n - MAX_NAMES} more")
        phrases.append((head, ", ".join(named)))
    prefix = "Still: " if reminder else ""
    if not phrases:
        return f"{prefix}nothing new{_where(group_label)}"
    if len(phrases) == 1:
        head, names = phrases[0]
        return f"{prefix}{head}{_where(group_label)}: {names}"
    body = "; ".join(f"{head}: {names}" for head, names in phrases)
    return f"{prefix}{group_label}: {body}" if group_label else prefix + body


def _where(label: str) -> str:
    if not label:
        return ""
    return f" at {label}" if "=" in label else f" ({label})"


def _name(a: Mapping[str, Any]) -> str:
    extra = []
    if a.get("value") is not None and a["status"] == "firing":
        extra.append(f"{a['value']:g}")
    behind = a.get("behind", 0)
    if behind:
        extra.append(f"{behind} device{'' if behind == 1 else 's'} behind it")
    return f"{a['device']} ({', '.join(extra)})" if extra else str(a["device"])


class Group:
    __slots__ = ("alerts", "departed", "key", "last_firing", "last_sent", "next_at", "tags")

    def __init__(self, key: tuple[str, ...], tags: dict[str, str], next_at: float) -> None:
        self.key = key
        self.tags = tags
        self.alerts: dict[AlertKey, Alert] = {}
        self.next_at = next_at
        self.last_sent = -1e300
        self.last_firing: frozenset[AlertKey] = frozenset()
        self.departed: list[Alert] = []  # notified, resolved as their device left: told next


Suppressed = Callable[[Alert], Optional[Mapping[str, Any]]]


class Grouper:
    """Alerts by group, each group with its timer; `due(now)` returns what is to be sent."""

    def __init__(self, config: AlertsSection) -> None:
        self.config = config
        self.alerts: dict[AlertKey, Alert] = {}  # every alert in a group, firing or resolving
        self._groups: dict[tuple[str, ...], Group] = {}
        self.told_changed = False  # the set of notified, firing alerts changed (to be kept)

    def add(self, alert: Alert, now: float) -> None:
        by = self.config.group_by
        key = tuple(alert.tags.get(k, "") for k in by)
        g = self._groups.get(key)
        if g is None:
            tags = {k: v for k, v in zip(by, key) if v}
            g = self._groups[key] = Group(key, tags, now + self.config.group_wait)
        alert.group = key
        g.alerts[alert.key] = alert
        self.alerts[alert.key] = alert

    def add_told(self, alert: Alert, now: float) -> None:
        """Put back an alert notified before a restart: no new notification for it."""
        self.add(alert, now)
        alert.notified = True
        g = self._groups[alert.group]
        g.last_firing = g.last_firing | {alert.key}
        g.last_sent = now
        g.next_at = now + self.config.group_interval

    def forget(self, left: Callable[[str], Optional[str]], now: float) -> None:
        """The alerts of devices that left the fleet (`left`: why, e.g. "forgotten"; None for
        a device still there) leave their groups: one notified as firing resolves now with
        that reason, to be told at the group's next look; the others go untold."""
        for a in list(self.alerts.values()):
            why = left(a.device)
            if why is None:
                continue
            del self.alerts[a.key]
            g = self._groups[a.group]
            del g.alerts[a.key]
            g.last_firing = g.last_firing - {a.key}
            self.told_changed |= a.notified
            if a.notified and not a.instant:
                if a.resolved is None:
                    a.resolved = now
                    a.why = why
                g.departed.append(a)
            if not g.alerts and not g.departed:
                del self._groups[g.key]

    def told(self) -> list[Alert]:
        """The alerts notified as firing that still fire."""
        return [
            a for a in self.alerts.values() if a.notified and a.resolved is None and not a.instant
        ]

    def label(self, g: Group) -> str:
        if g.tags:
            return " ".join(f"{k}={v}" for k, v in g.tags.items())
        missing = [k for k, v in zip(self.config.group_by, g.key) if not v]
        return ("no " + "/".join(missing) + " tag") if missing else ""

    def next_due(self) -> float:
        """When the next group's timer runs out (inf when there is no group)."""
        return min((g.next_at for g in self._groups.values()), default=float("inf"))

    def due(
        self, now: float, suppressed: Suppressed, behind: Callable[[Alert], int]
    ) -> list[Notification]:
        """The notifications of every group whose timer ran out, and the timers rearmed."""
        out = []
        for g in [g for g in self._groups.values() if g.next_at <= now]:
            n = self._flush(g, now, suppressed, behind)
            if n is not None:
                out.append(n)
        return out

    def _flush(
        self, g: Group, now: float, suppressed: Suppressed, behind: Callable[[Alert], int]
    ) -> Optional[Notification]:
        c = self.config
        firing = [a for a in g.alerts.values() if a.resolved is None and suppressed(a) is None]
        ended = [a for a in g.alerts.values() if a.resolved is not None]
        told_ended = [a for a in [*ended, *g.departed] if a.notified] if c.send_resolved else []
        g.departed = []
        keys = frozenset(a.key for a in firing)
        fresh = keys - g.last_firing
        remind = bool(firing) and now - g.last_sent >= c.repeat_interval
        note = None
        if fresh or told_ended or remind:
            reminder = not fresh and not told_ended
            items = tuple(
                a.to_json(new=a.key in fresh, behind=behind(a))
                for a in sorted([*firing, *told_ended], key=lambda a: (a.kind, a.device))
            )
            label = self.label(g)
            note = Notification(
                id=secrets.token_hex(8),
                status="firing" if firing else "resolved",
                reminder=reminder,
                group=dict(g.tags),
                group_label=label,
                summary=summarize(items, label, reminder=reminder),
                time=now,
                expires=now + c.repeat_interval + c.group_interval,
                alerts=items,
            )
            g.last_sent = now
            self.told_changed = True
            for a in firing:
                a.notified = True
        g.last_firing = keys
        self.told_changed |= any(a.notified for a in ended)
        for a in [*ended, *(a for a in firing if a.instant)]:
            del g.alerts[a.key]
            self.alerts.pop(a.key, None)
        for a in [a for a in g.alerts.values() if a.instant and a.key not in keys]:
            del g.alerts[a.key]  # a one-off that was suppressed when it happened: gone
            self.alerts.pop(a.key, None)
        if g.alerts:
            g.next_at = now + c.group_interval
        else:
            del self._groups[g.key]
        return note
