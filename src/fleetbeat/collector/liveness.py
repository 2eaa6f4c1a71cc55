"""Liveness: the states a device can be in, and the pure functions that judge them.

`up` -> `late` once `late_after` intervals pass without a heartbeat, -> `down`
after `down_after` intervals (a number, or per device the loss-aware value of
`loss.auto_down_after`); `offline` after a `bye` or the MQTT Last Will. `missing` is
an id of the `expected_devices` file never heard from (`collector.lifecycle`): no
device is judged into it here. Silence is measured on the monotonic clock by the
caller (`collector.fleet`), so a wall-clock step (NTP) neither calls the fleet down
nor keeps a dead device up.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Optional

from fleetbeat.collector.loss import auto_down_after

STATES = ("up", "late", "down", "offline", "missing")
REBOOT_TOLERANCE = 5.0  # s: boot_time jitter (clock steps) that is not a reboot


def judge(state: str, silent: float, late_after: float, down_after: float) -> Optional[str]:
    """The state a device `silent` intervals quiet moves to, or None when it stays."""
    if state in ("up", "late") and silent >= down_after:
        return "down"
    if state == "up" and silent >= late_after:
        return "late"
    return None


def deadline(state: str, seen: float, interval: float, late_after: float,
             down_after: float) -> float:  # fmt: skip
    """When a device heard at `seen` next needs judging; inf: not until it speaks again."""
    if state == "up":
        return seen + late_after * interval
    if state == "late":
        return seen + down_after * interval
    return math.inf


def down_after(fixed: Optional[float], lost: int, expected: int, cap: float) -> float:
    """Missed intervals that make a device down: `fixed`, or "auto" (None) from its loss."""
    return fixed if fixed is not None else auto_down_after(lost, expected, cap)


def rebooted(old_boot: Optional[float], new_boot: Optional[float]) -> bool:
    """True when a new run's boot time says the device rebooted (not only restarted)."""
    return (
        new_boot is not None and old_boot is not None
        and abs(new_boot - old_boot) > REBOOT_TOLERANCE
    )  # fmt: skip


def count_by_state(states: Iterable[str]) -> dict[str, int]:
    """How many devices are in each state, every state present (0 when none is)."""
    counts = dict.fromkeys(STATES, 0)
    for state in states:
        counts[state] = counts.get(state, 0) + 1
    return counts
