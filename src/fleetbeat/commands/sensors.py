"""`fleetbeat sensors`: read every configured sensor once and show the result."""

from __future__ import annotations

import time

from fleetbeat import registry
from fleetbeat.agent.config import AgentConfig
from fleetbeat.sensors.base import Row
from fleetbeat.sensors.system import SystemConfig, SystemSensor


def sensor_report(config: AgentConfig, *, sysfs_root: str = "/sys", settle: float = 1.0) -> str:
    sections: list[tuple[str, list[Row]]] = []
    for comp in config.sensors:
        if isinstance(comp.config, SystemConfig):
            enabled = comp.config.enabled
            system = SystemSensor(comp.config if enabled else SystemConfig(), sysfs_root=sysfs_root)
            system.prime()
            time.sleep(settle)
            system.read()
            title = "system" + ("" if enabled else " (disabled in the config)")
            sections.append((title, system.report()))
        else:
            cls = registry.sensor_class(comp.type)
            sensor = cls(comp.config, clock=time.monotonic, wall=time.time, sysfs_root=sysfs_root)
            sections.append((f"{comp.type} {sensor.name}", sensor.report()))
    return format_sections(sections)


def format_sections(sections: list[tuple[str, list[Row]]]) -> str:
    lines: list[str] = []
    for title, rows in sections:
        lines.append(f"== {title}")
        if not rows:
            lines.append("  (nothing)")
        w1 = max((len(r[0]) for r in rows), default=0)
        w2 = max((len(r[1]) for r in rows), default=0)
        for name, value, note in rows:
            lines.append(f"  {name:<{w1}}  {value:>{w2}}  {note}".rstrip())
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
