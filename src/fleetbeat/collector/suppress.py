"""Suppression: silences (made at run time) and maintenance windows (in the config).

Suppressed means not notified: the alert still starts, lasts and resolves, states, events,
the dashboard and /metrics stay true, and `Alerts.active()` marks it with what suppressed it.
A down parent and flapping also suppress (see `fleetbeat.collector.alerts`).

A silence matches a device or tags (`{"device": "pi-1"}` or `{"tag": "site:barn"}`, the
`match` vocabulary of `fleetbeat.collector.alerts_config`) until an epoch second, with a
comment. `Silences` is thread-safe (the HTTP side adds and removes them); the main loop
hands `take_changes()` to the outbox, which keeps them in `alerts.db` across restarts.

A maintenance window starts on a five-field cron expression (`fleetbeat.collector.cron`:
operators already write cron for crontab, healthchecks.io and Uptime Kuma's maintenance, and
one syntax covers weekly, daily and monthly windows) and lasts `duration`, in the collector's
local time unless `timezone` names one:

```toml
[[collector.maintenance]]
name = "barn-upgrades"
match = { tag = "site:barn" }
start = "30 2 * * sun"        # minute hour day-of-month month day-of-week
duration = "2h"
timezone = "Europe/Berlin"    # default: the collector's local time
comment = "weekly apt upgrade and reboot"
```
"""

from __future__ import annotations

import datetime
import secrets
import threading
from collections.abc import Iterable, Mapping
from typing import Any, Optional

from fleetbeat.collector.alerts_config import MaintenanceSection, Match, parse_match
from fleetbeat.collector.cron import Cron
from fleetbeat.config.frozen import dataclass
from fleetbeat.config.schema import Problems, describe, parse_duration, suggest
from fleetbeat.errors import InputError

SILENCE_KEYS = ("device", "tag", "duration", "until", "comment")


@dataclass(frozen=True)
class Silence:
    id: str
    match: Match
    until: float  # epoch s
    comment: str
    created: float

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "match": self.match.to_json(),
            "until": self.until,
            "comment": self.comment,
            "created": self.created,
        }


def parse_silence(data: Any, now: float) -> tuple[Match, float, str]:
    """The match, end and comment of a silence request, as `POST /api/silences` takes it:
    `{"device": "pi-1"}` or `{"tag": "site:barn"}`, with `"duration": "2h"` or
    `"until": <epoch s>`, and an optional `"comment"`. InputError lists every problem."""
    problems = Problems("silence")
    if not isinstance(data, Mapping):
        raise InputError("silence", "expected a JSON object")
    for key in data:
        if key not in SILENCE_KEYS:
            problems.add(key, "unknown key" + suggest(key, SILENCE_KEYS))
    match = parse_match({k: data[k] for k in ("device", "tag") if k in data}, "match", problems)
    if not match:
        problems.add("match", "name a device or a tag")
    until = 0.0
    if ("duration" in data) == ("until" in data):
        problems.add("duration", "give duration or until (one of them)")
    elif "duration" in data:
        seconds = parse_duration(data["duration"])
        if seconds is None or seconds <= 0:
            problems.expected("duration", 'a duration such as "2h"', data["duration"])
        else:
            until = now + seconds
    else:
        value = data["until"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= now:
            problems.add("until", f"expected an epoch second in the future, got {describe(value)}")
        else:
            until = float(value)
    comment = data.get("comment", "")
    if not isinstance(comment, str):
        problems.expected("comment", "a string", comment)
    if problems:
        raise InputError("silence", "; ".join(p.split(": ", 1)[1] for p in problems.items))
    return match, until, comment


class Silences:
    """The current silences, thread-safe; expired ones are dropped as they are met."""

    def __init__(self, silences: Iterable[Silence] = ()) -> None:
        self._lock = threading.Lock()
        self._by_id: dict[str, Silence] = {s.id: s for s in silences}
        self._changed: dict[str, Optional[Silence]] = {}  # id -> the silence, or None: deleted

    def add(self, match: Match, until: float, comment: str, now: float) -> Silence:
        """A new silence; a match that names nothing would silence the fleet: refused."""
        if not match:
            raise ValueError("a silence needs a device or a tag to match")
        if not until > now:
            raise ValueError("a silence must end in the future")
        s = Silence(id=secrets.token_hex(8), match=match, until=until, comment=comment,
                    created=now)  # fmt: skip
        with self._lock:
            self._by_id[s.id] = s
            self._changed[s.id] = s
        return s

    def remove(self, silence_id: str) -> bool:
        with self._lock:
            if self._by_id.pop(silence_id, None) is None:
                return False
            self._changed[silence_id] = None
            return True

    def list(self, now: float) -> list[Silence]:
        """Silences still in force, soonest to end first."""
        with self._lock:
            self._expire(now)
            return sorted(self._by_id.values(), key=lambda s: (s.until, s.id))

    def find(self, device: str, tags: Mapping[str, str], now: float) -> Optional[Silence]:
        with self._lock:
            for s in self._by_id.values():
                if s.until > now and s.match.matches(device, tags):
                    return s
        return None

    def _expire(self, now: float) -> None:
        for s in [s for s in self._by_id.values() if s.until <= now]:
            del self._by_id[s.id]
            self._changed[s.id] = None

    def take_changes(self) -> dict[str, Optional[Silence]]:
        """Silences added (the record) or gone (None) since the last call, for the outbox."""
        with self._lock:
            changed, self._changed = self._changed, {}
        return changed


class Window:
    """One maintenance window; whether it is open is worked out once a minute at most."""

    def __init__(self, config: MaintenanceSection) -> None:
        self.config = config
        self._cron = Cron(config.start)
        self._tz: Optional[datetime.tzinfo] = None
        if config.timezone:
            import zoneinfo

            self._tz = zoneinfo.ZoneInfo(config.timezone)
        self._lookback = datetime.timedelta(seconds=config.duration)
        self._valid_from = self._valid_until = -1.0
        self._open_until: Optional[float] = None

    def open_until(self, now: float) -> Optional[float]:
        """The epoch second the window closes, when it is open at `now`; else None."""
        stale = not self._valid_from <= now < self._valid_until
        if stale or (self._open_until is not None and now >= self._open_until):
            at = datetime.datetime.fromtimestamp(now, self._tz)
            start = self._cron.latest_start(at, self._lookback)
            end = None if start is None else start.timestamp() + self.config.duration
            self._open_until = end if end is not None and end > now else None
            # the answer holds until the next minute boundary (a new start) or the window's end
            self._valid_from = now
            self._valid_until = (now // 60 + 1) * 60
        return self._open_until

    def covers(self, device: str, tags: Mapping[str, str], now: float) -> Optional[float]:
        if not self.config.match.matches(device, tags):
            return None
        return self.open_until(now)


class Maintenance:
    """Every configured window."""

    def __init__(self, windows: Iterable[MaintenanceSection]) -> None:
        self.windows = [Window(w) for w in windows]

    def find(self, device: str, tags: Mapping[str, str], now: float) -> Optional[dict[str, Any]]:
        for w in self.windows:
            end = w.covers(device, tags, now)
            if end is not None:
                return {"by": "maintenance", "name": w.config.name, "until": end,
                        "comment": w.config.comment}  # fmt: skip
        return None
