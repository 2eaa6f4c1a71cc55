"""System sensor: CPU, load, memory, swap, disks, network, temperature, uptime,
processes, and the Raspberry Pi's throttling / under-voltage flags (psutil + sysfs).

Metric names: `cpu` (%), `load1` `load5` `load15`, `mem` (used %), `mem_avail`
(bytes), `swap` (%), `disk.<mount>` (used %; `/` is `disk.root`, `/var/log` is
`disk.var_log`), `net.<if>.rx` / `.tx` (bytes/s) and `.rx_err` / `.tx_err`
(errors since boot), `temp` (CPU, °C), `uptime` (s), `procs`, and on a Pi
`throttled` (raw firmware bits), `undervoltage`, `freq_capped`, `throttling`,
`soft_temp_limit`, `undervoltage_seen` (0/1).

```toml
[sensors.system]
enabled = true                  # false: no readings (heartbeats still carry heartbeat_metrics)
interval = "10s"                # how often to read
include = ["cpu", "load", "mem", "swap", "disk", "net", "temp", "uptime", "procs", "throttle"]
disks = ["/"]                   # mount points whose used % is reported
interfaces = []                 # network interfaces; empty: every interface but loopback
```
"""

from __future__ import annotations

import glob
import logging
import os
import re
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Callable, Optional

import psutil

from fleetbeat.config.frozen import dataclass
from fleetbeat.config.schema import Problems, array, boolean, duration, option, string
from fleetbeat.errors import FleetbeatError
from fleetbeat.sensors.base import SensorErrors

log = logging.getLogger(__name__)

GROUPS = ("cpu", "load", "mem", "swap", "disk", "net", "temp", "uptime", "procs", "throttle")
THROTTLE_BITS = {
    "undervoltage": 0,
    "freq_capped": 1,
    "throttling": 2,
    "soft_temp_limit": 3,
    "undervoltage_seen": 16,
}
FIXED_METRICS = {
    "cpu": ("cpu",),
    "load": ("load1", "load5", "load15"),
    "mem": ("mem", "mem_avail"),
    "swap": ("swap",),
    "temp": ("temp",),
    "uptime": ("uptime",),
    "procs": ("procs",),
    "throttle": ("throttled", *THROTTLE_BITS),
}
_METRIC_GROUP = {m: g for g, ms in FIXED_METRICS.items() for m in ms}
# psutil's names for CPU temperature sensors, most specific first (Pi, Intel, AMD, ARM SoCs)
_TEMP_SENSORS = ("cpu_thermal", "cpu-thermal", "coretemp", "k10temp", "soc_thermal", "zenpower")
_THROTTLED_FILE = "devices/platform/soc/soc:firmware/get_throttled"


def metric_group(name: str) -> Optional[str]:
    """The include group a system metric name belongs to, or None if it is not one."""
    if name.startswith("disk."):
        return "disk"
    if name.startswith("net."):
        return "net"
    return _METRIC_GROUP.get(name)


def disk_metric(mount: str) -> str:
    name = mount.strip("/").replace("/", "_")
    return f"disk.{name or 'root'}"


@dataclass(frozen=True)
class SystemConfig:
    enabled: bool = option(True, boolean())
    interval: float = option(10.0, duration(min=0.01, max=86400.0))
    include: tuple[str, ...] = option(GROUPS, array(string(choices=GROUPS)))
    disks: tuple[str, ...] = option(("/",), array(string(pattern=r"/.*", what="a mount point")))
    interfaces: tuple[str, ...] = option((), array(string(what="an interface name")))

    @property
    def name(self) -> str:
        return "system"

    def check_heartbeat_metrics(self, names: Sequence[str], path: str, problems: Problems) -> None:
        """A heartbeat metric must be one this sensor, as configured, will read.

        Called by the agent's config with `[agent] heartbeat_metrics`: the heartbeat
        takes its metrics from the system sensor.
        """
        disks = {disk_metric(m): m for m in self.disks}
        for i, name in enumerate(names):
            item = f"{path}[{i}]"
            group = metric_group(name)
            if group == "disk" and name not in disks:
                known = ", ".join(sorted(disks)) or "none"
                problems.add(item, f'"{name}" is not a configured disk (sensors.system.disks '
                             f"gives: {known})")  # fmt: skip
            elif group == "net" and not re.fullmatch(r"net\.[^.]+\.(rx|tx|rx_err|tx_err)", name):
                problems.add(
                    item, f'expected net.<interface>.rx, .tx, .rx_err or .tx_err, got "{name}"'
                )


class Unavailable(FleetbeatError):
    """This machine cannot provide a metric group; said once at INFO, then skipped."""


class SystemSensor:
    """Reads system statistics through psutil and sysfs.

    Args:
        config: the `[sensors.system]` table.
        sysfs_root: where sysfs is mounted; tests point it at a prepared tree.
        ps: the psutil module; tests may pass a stand-in for calls that must fail.
        clock: monotonic seconds, for network rates.
        wall: epoch seconds, for uptime.
    """

    Config = SystemConfig
    name = "system"

    def __init__(
        self,
        config: SystemConfig,
        *,
        sysfs_root: str = "/sys",
        ps: Any = psutil,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.interval: Optional[float] = config.interval
        self.errors = SensorErrors(self.name, log)
        self.unavailable: dict[str, str] = {}  # group or metric -> why
        self.last: dict[str, float] = {}
        self._sysfs = sysfs_root
        self._ps = ps
        self._clock = clock
        self._wall = wall
        self._net_prev: dict[str, tuple[float, int, int]] = {}
        self._boot_time: Optional[float] = None
        self._readers = {
            "cpu": self._cpu, "load": self._load, "mem": self._mem, "swap": self._swap,
            "disk": self._disk, "net": self._net, "temp": self._temp, "uptime": self._uptime,
            "procs": self._procs, "throttle": self._throttle,
        }  # fmt: skip

    def prime(self) -> None:
        """Take the first CPU and network samples so that the first read has rates."""
        groups = self.config.include
        if "cpu" in groups:
            self._guard("cpu", lambda out: self._ps.cpu_percent(None), {})
        if "net" in groups:
            self._guard("net", self._net, {})

    def boot_time(self) -> float:
        if self._boot_time is None:
            self._boot_time = float(self._ps.boot_time())
        return self._boot_time

    def read(self, groups: Optional[tuple[str, ...]] = None) -> dict[str, float]:
        out: dict[str, float] = {}
        for group in groups if groups is not None else self.config.include:
            if group not in self.unavailable:
                self._guard(group, self._readers[group], out)
        if groups is None:
            self.last = out
        return out

    def _guard(
        self, group: str, reader: Callable[[dict[str, float]], Any], out: dict[str, float]
    ) -> None:
        try:
            reader(out)
        except Unavailable as exc:
            self.unavailable[group] = str(exc)
            log.info("system sensor: %s is not available on this machine (%s); skipped", group, exc)
        except Exception as exc:  # a failing metric never stops the others
            self.errors.count(group, f"{type(exc).__name__}: {exc}")

    # --- one reader per group; each adds its metrics to `out` ---------------------

    def _cpu(self, out: dict[str, float]) -> None:
        out["cpu"] = float(self._ps.cpu_percent(None))

    def _load(self, out: dict[str, float]) -> None:
        one, five, fifteen = self._ps.getloadavg()
        out["load1"], out["load5"], out["load15"] = round(one, 2), round(five, 2), round(fifteen, 2)

    def _mem(self, out: dict[str, float]) -> None:
        vm = self._ps.virtual_memory()
        out["mem"] = round(vm.percent, 1)
        out["mem_avail"] = int(vm.available)

    def _swap(self, out: dict[str, float]) -> None:
        sw = self._ps.swap_memory()
        if sw.total == 0:
            raise Unavailable("no swap configured")
        out["swap"] = round(sw.percent, 1)

    def _disk(self, out: dict[str, float]) -> None:
        for mount in self.config.disks:
            name = disk_metric(mount)
            if not os.path.ismount(mount):
                if name not in self.unavailable:
                    self.unavailable[name] = f"{mount} is not a mount point"
                    log.info("system sensor: %s is not a mount point; %s skipped", mount, name)
                continue
            self.unavailable.pop(name, None)
            try:
                out[name] = round(self._ps.disk_usage(mount).percent, 1)
            except Exception as exc:
                self.errors.count(name, f"{type(exc).__name__}: {exc}")

    def _net(self, out: dict[str, float]) -> None:
        counters = self._ps.net_io_counters(pernic=True)
        wanted = self.config.interfaces
        now = self._clock()
        for nic, c in counters.items():
            if (wanted and nic not in wanted) or (not wanted and nic == "lo"):
                continue
            prev = self._net_prev.get(nic)
            self._net_prev[nic] = (now, c.bytes_recv, c.bytes_sent)
            out[f"net.{nic}.rx_err"] = int(c.errin)
            out[f"net.{nic}.tx_err"] = int(c.errout)
            if prev is None or now <= prev[0]:
                continue
            elapsed = now - prev[0]
            rx, tx = c.bytes_recv - prev[1], c.bytes_sent - prev[2]
            if rx >= 0 and tx >= 0:  # a counter reset gives no rate this time
                out[f"net.{nic}.rx"] = round(rx / elapsed, 1)
                out[f"net.{nic}.tx"] = round(tx / elapsed, 1)
        for gone in [nic for nic in self._net_prev if nic not in counters]:
            del self._net_prev[gone]  # interfaces come and go (USB, VPN): keep only present ones
        for nic in wanted:
            if nic not in counters and f"net.{nic}" not in self.unavailable:
                self.unavailable[f"net.{nic}"] = "no such interface (yet)"
                log.info("system sensor: no network interface %s (yet)", nic)

    def _temp(self, out: dict[str, float]) -> None:
        temp = self._temp_psutil()
        if temp is None:
            temp = self._temp_sysfs()
        if temp is None:
            raise Unavailable("no CPU temperature in psutil or thermal zones")
        out["temp"] = round(temp, 1)

    def _temp_psutil(self) -> Optional[float]:
        reader = getattr(self._ps, "sensors_temperatures", None)
        if reader is None:
            return None
        found = reader() or {}
        for name in (*_TEMP_SENSORS, *found):
            entries = found.get(name)
            if entries:
                return float(entries[0].current)
        return None

    def _temp_sysfs(self) -> Optional[float]:
        zones = sorted(glob.glob(os.path.join(self._sysfs, "class/thermal/thermal_zone*")))
        best: Optional[float] = None
        for zone in zones:
            try:
                with open(os.path.join(zone, "temp")) as f:
                    value = int(f.read().strip()) / 1000.0
            except (OSError, ValueError):
                continue
            kind = _read_text(os.path.join(zone, "type")) or ""
            if any(word in kind for word in ("cpu", "soc", "x86_pkg")):
                return value
            if best is None:
                best = value
        return best

    def _uptime(self, out: dict[str, float]) -> None:
        out["uptime"] = round(self._wall() - self.boot_time(), 1)

    def _procs(self, out: dict[str, float]) -> None:
        out["procs"] = len(self._ps.pids())

    def _throttle(self, out: dict[str, float]) -> None:
        raw = _read_text(os.path.join(self._sysfs, _THROTTLED_FILE))
        if raw is not None:
            bits = int(raw, 16)
            out["throttled"] = bits
            for name, bit in THROTTLE_BITS.items():
                out[name] = (bits >> bit) & 1
            return
        for hwmon in glob.glob(os.path.join(self._sysfs, "class/hwmon/hwmon*")):
            if _read_text(os.path.join(hwmon, "name")) == "rpi_volt":
                alarm = _read_text(os.path.join(hwmon, "in0_lcrit_alarm"))
                if alarm is not None:
                    out["undervoltage"] = int(alarm)
                    return
        raise Unavailable("no Raspberry Pi firmware throttling flags")

    def report(self) -> list[tuple[str, str, str]]:
        rows = [(name, f"{value:.10g}", _unit(name)) for name, value in sorted(self.last.items())]
        rows += [
            (what, "-", f"not available: {why}") for what, why in sorted(self.unavailable.items())
        ]
        rows += [
            (reason, "-", f"error x{n}") for reason, n in sorted(self.errors.by_reason.items())
        ]
        return rows


def _unit(metric: str) -> str:
    if metric.endswith((".rx", ".tx")):
        return "bytes/s"
    if metric.endswith("_err"):
        return "errors since boot"
    if metric.startswith("disk."):
        return "% used"
    return _UNITS.get(metric, "")


_UNITS = {
    "cpu": "% busy", "mem": "% used", "mem_avail": "bytes available", "swap": "% used",
    "temp": "°C", "uptime": "s", "procs": "processes", "throttled": "firmware bits",
    "load1": "1-min load", "load5": "5-min load", "load15": "15-min load",
}  # fmt: skip


def _read_text(path: str) -> Optional[str]:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


if TYPE_CHECKING:  # mypy checks the class against the sensor contract
    from fleetbeat.sensors.base import SensorClass

    _: SensorClass = SystemSensor
