"""The contract every notifier meets, and the keys every `[[collector.notify]]` table has.

A notifier is one class with a `Config` record (a subclass of `NotifierConfig`) and one
method, `send(notification) -> Outcome`, called from the notifier's own thread by the
`Dispatcher` (`fleetbeat.collector.outbox`). `send` never raises: it answers `sent`,
`failed` (worth retrying: refused, timeout, 5xx, exit status != 0) or `rejected` (retrying
cannot help: a 4xx other than 408/429); the dispatcher retries and counts. It must return
within about its `timeout`; one that hangs delays only its own later notifications.

Keys common to every notifier:

```toml
[[collector.notify]]
type = "webhook"            # see fleetbeat.registry.NOTIFIERS
name = "ops-webhook"        # default: the type; two notifiers of one type need names
match = { tag = "site:barn" }  # only alerts of these devices (default: every device)
severity = "warning"        # only alerts this severe or more: "info" (all), "warning", "critical"
timeout = "10s"             # one attempt's limit
give_up_after = "1h"        # retries (with backoff) stop this long after the first attempt
url = "http://127.0.0.1:8080/hook"
```
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Protocol

from fleetbeat.collector.alerts_config import SEVERITIES, Match
from fleetbeat.collector.grouping import Notification
from fleetbeat.config.frozen import dataclass
from fleetbeat.config.schema import duration, option, string, table

_RANK = {s: i for i, s in enumerate(SEVERITIES)}


@dataclass(frozen=True)
class NotifierConfig:
    type: str = option("", string())
    name: str = option(
        "",
        string(
            pattern=r"[A-Za-z0-9_.-]{0,64}", what="a name of A-Z a-z 0-9 _ . -", allow_empty=True
        ),  # "": the type
    )
    match: Match = option(Match(), table(Match))
    severity: str = option("info", string(choices=SEVERITIES))
    timeout: float = option(10.0, duration())
    give_up_after: float = option(3600.0, duration())

    @property
    def label(self) -> str:
        """The notifier's name in logs and metrics."""
        return self.name or self.type

    def wants(self, alert: Mapping[str, Any]) -> bool:
        """True for an alert this notifier is to tell (its match and severity filters)."""
        return _RANK.get(alert["severity"], 0) >= _RANK[self.severity] and self.match.matches(
            alert["device"], alert["tags"]
        )


@dataclass(frozen=True)
class Outcome:
    status: str  # "sent" | "failed" (retry) | "rejected" (retrying cannot help)
    detail: str = ""

    @property
    def retry(self) -> bool:
        return self.status == "failed"


SENT = Outcome("sent")


def failed(detail: str) -> Outcome:
    return Outcome("failed", detail)


def rejected(detail: str) -> Outcome:
    return Outcome("rejected", detail)


def http_outcome(status: int, what: str) -> Outcome:
    """2xx sent; 408, 429 and 5xx worth a retry; any other answer rejected."""
    if 200 <= status < 300:
        return SENT
    if status in (408, 429) or status >= 500:
        return failed(f"{what} answered {status}")
    return rejected(f"{what} answered {status}")


class Notifier(Protocol):
    """One channel notifications go through."""

    Config: ClassVar[type[NotifierConfig]]

    def __init__(self, config: Any) -> None: ...

    def send(self, notification: Notification) -> Outcome:
        """Deliver one notification, or say why not; never raises."""
        ...


def post_json(
    url: str, body: Any, *, timeout: float, what: str, headers: Mapping[str, str] = {}
) -> Outcome:
    """POST `body` as JSON; the answer as an Outcome (never raises)."""
    import http.client
    import json
    import urllib.error
    import urllib.request

    data = json.dumps(body, separators=(",", ":")).encode()
    req = urllib.request.Request(url, data=data, method="POST")  # noqa: S310 - http(s) only, checked in config
    req.add_header("Content-Type", "application/json")
    req.add_header("User-Agent", "fleetbeat")
    for k, v in headers.items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
            resp.read(65536)
            return http_outcome(resp.status, what)
    except urllib.error.HTTPError as exc:
        exc.close()
        return http_outcome(exc.code, what)
    except (OSError, http.client.HTTPException, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        return failed(f"{what}: {reason}")
