"""Alertmanager notifier: POST /api/v2/alerts, so a team with Alertmanager gets its own
routing, inhibition and silences on fleetbeat's alerts too.

```toml
[[collector.notify]]
type = "alertmanager"
url = "http://127.0.0.1:9093"
```

Each alert becomes one Alertmanager alert with labels `alertname` (the rule name, else the
kind), `device`, `kind`, `severity` and the device's tags (a key that is not a valid label
name has its other characters replaced by `_`; one that clashes with those four is left
out), annotations `summary` (the notification's line) and `description`, `startsAt`, and
`endsAt`: the resolve time for a resolved alert, else the notification's `expires` (when the
next reminder is due), so an alert the collector stops talking about ends by itself.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping
from typing import Any, ClassVar

from fleetbeat.collector.alerts_config import url
from fleetbeat.collector.grouping import Notification
from fleetbeat.collector.notifiers.base import NotifierConfig, Outcome, post_json
from fleetbeat.config.frozen import dataclass
from fleetbeat.config.schema import option

_RESERVED = ("alertname", "device", "kind", "severity")
_BAD_LABEL_CHAR = re.compile(r"[^A-Za-z0-9_]")


@dataclass(frozen=True)
class AlertmanagerConfig(NotifierConfig):
    REQUIRED: ClassVar[tuple[str, ...]] = ("url",)

    url: str = option("", url())


def _time(t: float) -> str:
    dt = datetime.datetime.fromtimestamp(t, datetime.timezone.utc)
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _label(key: str) -> str:
    name = _BAD_LABEL_CHAR.sub("_", key)
    return "_" + name if name[:1].isdigit() else name


def to_alertmanager(notification: Notification) -> list[dict[str, Any]]:
    """The notification's alerts as Alertmanager's API v2 wants them."""
    out = []
    for a in notification.alerts:
        labels = {"alertname": a["name"], "device": a["device"], "kind": a["kind"],
                  "severity": a["severity"]}  # fmt: skip
        tags: Mapping[str, str] = a["tags"]
        for k, v in tags.items():
            name = _label(k)
            if name not in _RESERVED and name not in labels:
                labels[name] = v
        ends = a["resolved"] if a["resolved"] is not None else notification.expires
        out.append({
            "labels": labels,
            "annotations": {"summary": notification.summary,
                            "description": f"{a['name']} on {a['device']} ({a['status']})"},
            "startsAt": _time(a["started"]),
            "endsAt": _time(ends),
        })  # fmt: skip
    return out


class AlertmanagerNotifier:
    Config = AlertmanagerConfig

    def __init__(self, config: AlertmanagerConfig) -> None:
        self.config = config
        self._endpoint = config.url.rstrip("/") + "/api/v2/alerts"

    def send(self, notification: Notification) -> Outcome:
        what = f"alertmanager {self.config.url}"
        body = to_alertmanager(notification)
        return post_json(self._endpoint, body, timeout=self.config.timeout, what=what)
