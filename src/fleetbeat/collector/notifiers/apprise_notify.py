"""Apprise notifier: ntfy, Telegram, Slack, Discord, Gotify, Pushover, Matrix, email and
100 more through the Apprise library (`pip install "fleetbeat[notify]"`).

```toml
[[collector.notify]]
type = "apprise"
urls = ["ntfy://ntfy.example.net/fleet"]
# urls_file = "/etc/fleetbeat/apprise-urls"   # one URL a line (# comments): URLs hold secrets
timeout = "10s"
```

The title is "[firing] site=barn" (the status and the group), the body the one-line
summary. With several URLs, a retry goes only to those that failed (while the collector
runs; after a restart every URL is tried again: at least once).
"""

from __future__ import annotations

import importlib.util
from collections import OrderedDict
from typing import Any

from fleetbeat.collector.alerts_config import readable_file
from fleetbeat.collector.grouping import Notification
from fleetbeat.collector.notifiers.base import SENT, NotifierConfig, Outcome, failed, rejected
from fleetbeat.config.frozen import dataclass
from fleetbeat.config.schema import Problems, array, option, string

MAX_PARTIAL = 1000  # notifications remembered as partly sent


def read_urls(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [ln.strip() for ln in f if ln.strip() and not ln.lstrip().startswith("#")]


@dataclass(frozen=True)
class AppriseConfig(NotifierConfig):
    # secret: Apprise URLs carry tokens (check-config masks them)
    urls: tuple[str, ...] = option((), array(string(what="an Apprise URL"), min_len=1), secret=True)
    urls_file: str = option("", readable_file)
    title: str = option("fleetbeat", string())

    def check(self, path: str, problems: Problems) -> None:
        if importlib.util.find_spec("apprise") is None:
            problems.add(path, 'type "apprise" needs the Apprise library: '
                               'pip install "fleetbeat[notify]"')  # fmt: skip
            return
        if bool(self.urls) == bool(self.urls_file):
            problems.add(path, "set urls or urls_file (one of them)")
            return
        import apprise

        where = f"{path}.urls_file" if self.urls_file else f"{path}.urls"
        for i, u in enumerate(self.all_urls()):
            if not apprise.Apprise().add(u):
                problems.add(where, f"entry {i + 1} is not a URL Apprise knows")

    def all_urls(self) -> list[str]:
        if self.urls_file:
            try:
                return read_urls(self.urls_file)
            except OSError:
                return []
        return list(self.urls)


class AppriseNotifier:
    Config = AppriseConfig

    def __init__(self, config: AppriseConfig) -> None:
        import apprise

        self.config = config
        self._apprise = apprise
        self._targets: list[Any] = []
        for u in config.all_urls():
            a = apprise.Apprise()
            a.add(u)
            for server in a:  # Apprise's own default is 4 s each way
                server.socket_connect_timeout = server.socket_read_timeout = config.timeout
            self._targets.append(a)
        self._done: OrderedDict[str, set[int]] = OrderedDict()  # id -> targets already told

    def send(self, notification: Notification) -> Outcome:
        if not self._targets:
            return rejected(f"apprise: no URLs in {self.config.urls_file or 'urls'}")
        nt = self._apprise.NotifyType
        if notification.status == "resolved":
            kind = nt.SUCCESS
        else:
            worst = {a["severity"] for a in notification.alerts if a["status"] == "firing"}
            kind = (
                nt.FAILURE if "critical" in worst else nt.WARNING if "warning" in worst else nt.INFO
            )
        title = f"[{notification.status}] {notification.group_label or self.config.title}"
        done = self._done.pop(notification.id, set())
        errors = 0
        for i, target in enumerate(self._targets):
            if i in done:
                continue
            try:
                ok = target.notify(body=notification.summary, title=title, notify_type=kind)
            except Exception:
                ok = False
            if ok:
                done.add(i)
            else:
                errors += 1
        if not errors:
            return SENT
        self._done[notification.id] = done
        while len(self._done) > MAX_PARTIAL:
            self._done.popitem(last=False)
        return failed(f"apprise: {errors} of {len(self._targets)} URLs failed")
