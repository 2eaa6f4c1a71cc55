"""Five-field cron expressions ("minute hour day-of-month month day-of-week") for recurring starts.

Why cron rather than "a weekday and a time": operators already write it for crontab,
healthchecks.io and Uptime Kuma's maintenance, and one syntax covers weekly ("30 2 * * sun"),
daily ("0 3 * * *"), monthly ("0 1 1 * *") and several-days ("0 22 * * mon-fri") windows.

Each field takes `*`, a number, a range `a-b`, a step `*/n` or `a-b/n`, and comma lists of
those; months and weekdays also take names (jan..dec, sun..sat; 0 and 7 are both Sunday).
As in Vixie cron, when both day-of-month and day-of-week are restricted, a day matching
either one matches.
"""

from __future__ import annotations

import datetime
from typing import Optional

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
# (low, high, names whose index + offset is the value)
_FIELDS = (
    ("minute", 0, 59, (), 0),
    ("hour", 0, 23, (), 0),
    ("day of month", 1, 31, (), 0),
    ("month", 1, 12, _MONTHS, 1),
    ("day of week", 0, 7, _DAYS, 0),
)


class CronError(ValueError):
    """An expression that is not five valid cron fields."""


def _value(text: str, low: int, high: int, names: tuple[str, ...], offset: int) -> int:
    low_text = text.lower()
    if low_text in names:
        return names.index(low_text) + offset
    if not text.isdigit():
        raise CronError(f"{text!r} is not a number" + (" or a name" if names else ""))
    n = int(text)
    if not low <= n <= high:
        raise CronError(f"{n} is outside {low}-{high}")
    return n


def _field(text: str, spec: tuple[str, int, int, tuple[str, ...], int]) -> frozenset[int]:
    what, low, high, names, offset = spec
    out: set[int] = set()
    for part in text.split(","):
        rng, _, step_text = part.partition("/")
        try:
            step = int(step_text) if step_text else 1
            if step < 1:
                raise CronError("a step must be 1 or more")
            if rng == "*":
                a, b = low, high
            elif "-" in rng:
                first, _, last = rng.partition("-")
                a = _value(first, low, high, names, offset)
                b = _value(last, low, high, names, offset)
                if a > b:
                    raise CronError(f"the range {rng!r} runs backwards")
            else:
                a = _value(rng, low, high, names, offset)
                b = high if step_text else a
        except (CronError, ValueError) as exc:
            raise CronError(f"{what}: {part!r}: {exc}") from None
        out.update(range(a, b + 1, step))
    return frozenset(out)


class Cron:
    """A parsed expression; `latest_start(now)` finds the most recent matching minute."""

    def __init__(self, text: str) -> None:
        parts = text.split()
        if len(parts) != len(_FIELDS):
            raise CronError(f"expected 5 fields (minute hour day month weekday), got {len(parts)}")
        fields = [_field(p, spec) for p, spec in zip(parts, _FIELDS)]
        self.text = text
        self.minutes = sorted(fields[0], reverse=True)
        self.hours = sorted(fields[1], reverse=True)
        self.days = fields[2]
        self.months = fields[3]
        self.weekdays = frozenset(7 if d == 0 else d for d in fields[4])  # 7: Sunday, as ISO
        self._any_day = parts[2] == "*"
        self._any_weekday = parts[4] == "*"

    def day_matches(self, day: datetime.date) -> bool:
        if day.month not in self.months:
            return False
        dom = day.day in self.days
        dow = day.isoweekday() in self.weekdays
        if self._any_day or self._any_weekday:
            return dom and dow
        return dom or dow

    def latest_start(
        self, now: datetime.datetime, lookback: datetime.timedelta
    ) -> Optional[datetime.datetime]:
        """The latest matching minute at or before `now`, if one lies within `lookback`."""
        earliest = now - lookback
        day = now.date()
        while True:
            if self.day_matches(day):
                for h in self.hours:
                    for m in self.minutes:
                        start = datetime.datetime(day.year, day.month, day.day, h, m,
                                                  tzinfo=now.tzinfo)  # fmt: skip
                        if start <= now:
                            return start if start >= earliest else None
            day -= datetime.timedelta(days=1)
            if (
                datetime.datetime(day.year, day.month, day.day, 23, 59, tzinfo=now.tzinfo)
                < earliest
            ):
                return None
