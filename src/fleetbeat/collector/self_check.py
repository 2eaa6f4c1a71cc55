"""The dead man's switch: a GET to a URL every `every` while the collector is healthy.

healthchecks.io, Uptime Kuma's push monitors and Better Stack's heartbeats all work this
way: when the pings stop (the collector died, hung, or judges no more), they tell the
people who run it. The ping goes from a thread of its own, one at a time, so a slow
endpoint never stalls the main loop; a tick while one is still running skips that ping.

```toml
[collector.self_check]
url = "https://hc-ping.com/your-uuid"
every = "1m"
timeout = "10s"
```
"""

from __future__ import annotations

import logging
import threading
import urllib.request
from typing import Any, Callable

from fleetbeat.collector.alerts_config import SelfCheckSection
from fleetbeat.logutil import RateLimitedLog

log = logging.getLogger(__name__)
_limited = RateLimitedLog(log)


class SelfCheck:
    """Pings `config.url` every `config.every` while `healthy()` says yes.

    Args:
        config: `[collector.self_check]`.
        healthy: true while receivers run, the store is writable and judging is on time.
    """

    def __init__(self, config: SelfCheckSection, healthy: Callable[[], bool]) -> None:
        self.config = config
        self._healthy = healthy
        self._next = -1e300
        self._busy = threading.Lock()
        self._counts = {"sent": 0, "failed": 0, "unhealthy": 0, "busy": 0}

    def tick(self, now: float) -> None:
        """Ping when one is due (call it from the main loop; `now` on any steady clock)."""
        if now < self._next:
            return
        self._next = now + self.config.every
        if not self._healthy():
            self._counts["unhealthy"] += 1
            return
        if not self._busy.acquire(blocking=False):
            self._counts["busy"] += 1
            return
        threading.Thread(target=self._ping, name="self-check", daemon=True).start()

    def _ping(self) -> None:
        try:
            # http(s) only: the config checked the scheme
            req = urllib.request.Request(self.config.url, headers={"User-Agent": "fleetbeat"})  # noqa: S310
            with urllib.request.urlopen(req, timeout=self.config.timeout) as resp:  # noqa: S310
                resp.read(4096)
            self._counts["sent"] += 1
        except Exception as exc:
            self._counts["failed"] += 1
            _limited.log(logging.WARNING, "ping", "self-check ping to %s failed: %s",
                         self.config.url, exc)  # fmt: skip
        finally:
            self._busy.release()

    def stats(self) -> dict[str, Any]:
        """Pings sent, failed, skipped while unhealthy, skipped while one was still running."""
        return dict(self._counts)
