"""Webhook notifier: POST of the notification as JSON to a URL.

```toml
[[collector.notify]]
type = "webhook"
url = "https://hooks.example.net/fleetbeat"
# token_file = "/etc/fleetbeat/webhook-token"   # sent as "Authorization: Bearer <token>"
timeout = "10s"
give_up_after = "1h"
```

A 2xx answer is success; 408, 429, 5xx, a refused connection or a timeout are retried
with backoff until `give_up_after`; other answers are not retried. A retry carries the
same `id`: a receiver that may see one twice (at least once) dedupes on it.

The payload (one group's notification; `alerts` lists what fires in the group and what
just resolved, `new` marking what this notification is about; `behind` is how many devices
name this one as their parent):

```json
{
  "version": 1,
  "id": "5f0c1d2e3a4b5c6d",
  "status": "firing",
  "reminder": false,
  "summary": "3 devices down at site=barn: pi-barn-01, pi-barn-02, pi-barn-07",
  "group": {"site": "barn"},
  "group_label": "site=barn",
  "time": 1764160030.0,
  "expires": 1764174730.0,
  "counts": {"firing": 3, "resolved": 0},
  "alerts": [
    {"kind": "down", "name": "down", "device": "pi-barn-01", "severity": "critical",
     "status": "firing", "new": true, "started": 1764160001.5, "resolved": null,
     "resolved_reason": null, "value": null, "behind": 0, "tags": {"site": "barn"}}
  ]
}
```

`status` is "firing" while any alert in it fires, else "resolved"; `reminder` is true for
a repeat of what still lasts; `expires` is when the next reminder would come: hearing
nothing by then means the collector is gone. `kind` is one of down, missing, offline,
flapping, reboot, restart, loss, rule (`name` is the rule's name, else the kind); `value`
is the metric's value (rules) or the loss % (loss). `resolved_reason` is null, or, for
an alert that resolved because its device left the fleet, why: "forgotten", "no longer
expected", "no longer tracked".
"""

from __future__ import annotations

from typing import ClassVar

from fleetbeat.collector.alerts_config import readable_file, url
from fleetbeat.collector.grouping import Notification
from fleetbeat.collector.notifiers.base import NotifierConfig, Outcome, post_json
from fleetbeat.config.frozen import dataclass
from fleetbeat.config.schema import option


@dataclass(frozen=True)
class WebhookConfig(NotifierConfig):
    REQUIRED: ClassVar[tuple[str, ...]] = ("url",)

    url: str = option("", url())
    token_file: str = option("", readable_file)


class WebhookNotifier:
    Config = WebhookConfig

    def __init__(self, config: WebhookConfig) -> None:
        self.config = config
        self._headers: dict[str, str] = {}
        if config.token_file:
            with open(config.token_file, encoding="utf-8") as f:
                self._headers["Authorization"] = "Bearer " + f.read().strip()

    def send(self, notification: Notification) -> Outcome:
        return post_json(self.config.url, notification.to_json(), timeout=self.config.timeout,
                         what=f"webhook {self.config.url}", headers=self._headers)  # fmt: skip
