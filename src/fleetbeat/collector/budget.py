"""What a device's metrics and tags cost in memory, and the sets the fleet shares."""

from __future__ import annotations

import sys
from typing import Any

SHARED_POOL = 4 << 20  # bytes of metric-name sets, and again of tag sets, kept once fleet-wide
METRIC_VALUE_COST = 40  # bytes per kept metric besides its name: a float and two tuple slots

_getsizeof = sys.getsizeof


def metrics_cost(names: tuple[str, ...], shared: bool = False) -> int:
    """Bytes a device's last metrics take in memory: a float and two slots per value, plus
    the names unless the device shares them with others (one copy for the whole fleet)."""
    own = 0 if shared else sum(map(_getsizeof, names))
    return own + METRIC_VALUE_COST * len(names)


def names_cost(names: tuple[str, ...]) -> int:
    """Bytes one copy of a metric-name set takes: the tuple and its strings."""
    return _getsizeof(names) + sum(map(_getsizeof, names))


class SharedSets:
    """Metric-name or tag sets kept once for the whole fleet, within a byte budget.

    A fleet shares a handful of sets, so a device whose set is shared pays nothing for
    it. The first device with a new set puts it in the pool while the budget lasts
    (so a legitimate fleet's sets are always shared); once junk has used the budget
    up, a new set is the device's own and counts against its per-device limit.
    """

    def __init__(self, budget: int = SHARED_POOL) -> None:
        self._sets: dict[Any, Any] = {}
        self.left = budget

    def fits(self, key: Any, cost: int) -> bool:
        """True when `key`'s set is shared already, or would be by `shared`."""
        return key in self._sets or cost <= self.left

    def shared(self, key: Any, value: Any, cost: int) -> Any:
        """The fleet's copy of `value`, made the fleet's copy while the budget lasts."""
        found = self._sets.get(key)
        if found is not None:
            return found
        if cost <= self.left:
            self.left -= cost
            self._sets[key] = value
        return value


def tags_cost(tags: dict[str, str]) -> int:
    """Bytes a device's tags take in memory: the dict, its keys and its values (a tag set
    shared with other devices costs nothing more: one copy is kept)."""
    return _getsizeof(tags) + sum(map(_getsizeof, tags)) + sum(map(_getsizeof, tags.values()))
