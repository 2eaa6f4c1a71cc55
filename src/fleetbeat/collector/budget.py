"""What a device's metrics and tags may cost in memory, and the sets the fleet shares."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from fleetbeat.collector.config import CollectorSection
    from fleetbeat.collector.device import Device

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


class Budget:
    """The per-device limits on metrics and tags (`max_metrics`, `max_metric_bytes`,
    `max_tags`, `max_tag_bytes`), and the fleet's shared name and tag sets."""

    def __init__(self, config: CollectorSection, shared_pool: int = SHARED_POOL) -> None:
        self.names = SharedSets(shared_pool)
        self.tags = SharedSets(shared_pool)
        self.apply(config)

    def apply(self, config: CollectorSection) -> None:
        self.max_metrics = config.max_metrics
        self.max_metric_bytes = config.max_metric_bytes
        self.max_tags = config.max_tags
        self.max_tag_bytes = config.max_tag_bytes

    def refuses(self, names: tuple[str, ...], tags: Optional[dict[str, str]],
                d: Optional[Device]) -> str:  # fmt: skip
        """Why a heartbeat's new metric names or tags are over the limits ("": they fit)."""
        if (
            names
            and (d is None or names != d.metric_names)
            and (
                len(names) > self.max_metrics
                or metrics_cost(names, self.names.fits(names, names_cost(names)))
                > self.max_metric_bytes
            )
        ):
            return "metrics_limit"
        if (
            tags
            and (d is None or tags != d.tags)
            and (
                len(tags) > self.max_tags
                or (
                    tags_cost(tags) > self.max_tag_bytes
                    and not self.tags.fits(tuple(tags.items()), tags_cost(tags))
                )
            )
        ):
            return "tags_limit"
        return ""

    def share_names(self, names: tuple[str, ...]) -> tuple[str, ...]:
        """The fleet's copy of a metric-name set (most of a fleet shares a few)."""
        return self.names.shared(names, names, names_cost(names))  # type: ignore[no-any-return]

    def share_tags(self, tags: dict[str, str]) -> dict[str, str]:
        """The fleet's copy of a tag set (most of a fleet shares a handful)."""
        return self.tags.shared(tuple(tags.items()), tags, tags_cost(tags))  # type: ignore[no-any-return]

    def share_sets(self, d: Any) -> None:
        """A restored device takes the fleet's copies of its sets, as when it first reported."""
        d.metric_names = self.share_names(d.metric_names)
        if d.tags:
            d.tags = self.share_tags(d.tags)
