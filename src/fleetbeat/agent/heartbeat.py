"""The heartbeat: what it carries, and the system sensor it reads (the one special sensor).

Heartbeat metrics (`[agent] heartbeat_metrics`, default cpu, mem, temp) come from
the system sensor: from its last reading when it reads them anyway, else read for
the heartbeat alone. So there is always a system sensor object, even with
`[sensors.system] enabled = false` (it then sends no readings). Heartbeats are
never sampled; each output's carries that output's own drop counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

from fleetbeat import wire
from fleetbeat.config.schema import Problems, string, suggest
from fleetbeat.outputs.base import Outgoing, Tally
from fleetbeat.sensors.system import SystemConfig, SystemSensor, metric_group

DEFAULT_HEARTBEAT_METRICS = ("cpu", "mem", "temp")


def heartbeat_metric(value: Any, path: str, problems: Problems) -> Any:
    """The parser of one `heartbeat_metrics` entry: a system metric name."""
    from fleetbeat.sensors.system import FIXED_METRICS

    parsed = string(what="a system metric name")(value, path, problems)
    if isinstance(parsed, str) and metric_group(parsed) is None:
        names = [m for ms in FIXED_METRICS.values() for m in ms] + ["disk.<mount>", "net.<if>.rx"]
        problems.add(path, f'unknown system metric "{parsed}"{suggest(parsed, names)}')
        return None
    return parsed


def check_heartbeat_metrics(names: Sequence[str], system: Any, problems: Problems) -> None:
    """The system sensor's hook: every heartbeat metric is one it will read as configured."""
    if isinstance(system, SystemConfig):
        system.check_heartbeat_metrics(names, "agent.heartbeat_metrics", problems)


def system_config(sensors: Sequence[Any]) -> SystemConfig:
    """The [sensors.system] table of these components (one at most), or a disabled one."""
    found = [c.config for c in sensors if isinstance(c.config, SystemConfig)]
    return found[0] if found else SystemConfig(enabled=False)


class Heartbeat:
    """Builds each heartbeat (and the bye) from the system sensor and the outputs' tallies.

    Args:
        names: `[agent] heartbeat_metrics`.
        interval: `[agent] heartbeat_interval`, sent as `int`.
        system: the agent's system sensor, enabled or not.
    """

    def __init__(self, names: Sequence[str], interval: float, system: SystemSensor) -> None:
        self.names = tuple(names)
        self.interval = interval
        self.system = system
        cfg = system.config
        wanted = dict.fromkeys(g for g in map(metric_group, self.names) if g)
        # groups the sensor does not read for readings are read here, for the heartbeat
        self._own_groups = tuple(g for g in wanted if not cfg.enabled or g not in cfg.include)

    def metrics(self) -> dict[str, float]:
        if not self.names:
            return {}
        system = self.system
        source = system.last if system.config.enabled else {}  # already clean numbers
        if self._own_groups:
            source = {**source, **wire.clean_metrics(system.read(self._own_groups))}
        return {n: source[n] for n in self.names if n in source}

    def message(
        self,
        kind: str,
        ts: float,
        tally: Tally,
        metrics: dict[str, float],
        errors: Optional[dict[str, dict[str, int]]],
    ) -> Outgoing:
        """An `hb` (or `bye`) for one output, with that output's drop counts."""
        return Outgoing(kind, ts=ts, metrics=metrics, interval=self.interval, drop=tally.dropped,
                        drop_by=dict(tally.by_reason) if tally.by_reason else None,
                        errors=errors)  # fmt: skip
