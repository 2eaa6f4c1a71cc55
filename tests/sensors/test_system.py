"""System sensor: real psutil, a prepared sysfs tree, and psutil calls that fail."""

from __future__ import annotations

import logging
import types
from pathlib import Path

import psutil
import pytest

from fleetbeat.sensors.system import GROUPS, SystemConfig, SystemSensor
from helpers import FakeClock


def make_sysfs(root: Path, *, zones=(), throttled=None, rpi_volt=None) -> str:
    for i, (kind, milli) in enumerate(zones):
        z = root / "class" / "thermal" / f"thermal_zone{i}"
        z.mkdir(parents=True)
        (z / "type").write_text(kind + "\n")
        (z / "temp").write_text(f"{milli}\n")
    if throttled is not None:
        f = root / "devices/platform/soc/soc:firmware/get_throttled"
        f.parent.mkdir(parents=True)
        f.write_text(throttled + "\n")
    if rpi_volt is not None:
        h = root / "class" / "hwmon" / "hwmon0"
        h.mkdir(parents=True)
        (h / "name").write_text("rpi_volt\n")
        (h / "in0_lcrit_alarm").write_text(f"{rpi_volt}\n")
    return str(root)


def no_psutil_temps():
    """Real psutil, except that it finds no temperature sensor (so sysfs is used)."""
    ns = types.SimpleNamespace(
        **{n: getattr(psutil, n) for n in dir(psutil) if not n.startswith("_")}
    )
    ns.sensors_temperatures = lambda: {}
    return ns


def test_real_machine_reading_has_core_metrics():
    """On this machine cpu, load, mem, disk.root, uptime and procs are real numbers."""
    s = SystemSensor(SystemConfig())
    s.prime()
    out = s.read()
    for name in (
        "cpu",
        "load1",
        "load5",
        "load15",
        "mem",
        "mem_avail",
        "disk.root",
        "uptime",
        "procs",
    ):
        assert isinstance(out[name], (int, float)), name
    assert 0 <= out["cpu"] <= 100 and 0 < out["mem"] < 100 and out["procs"] > 1
    assert out["uptime"] > 0


def test_temperature_from_thermal_zones_prefers_the_cpu(tmp_path):
    """Without a psutil sensor, the CPU thermal zone in sysfs gives `temp` in °C."""
    root = make_sysfs(tmp_path, zones=[("acpitz", 30000), ("cpu-thermal", 48312)])
    s = SystemSensor(SystemConfig(include=("temp",)), sysfs_root=root, ps=no_psutil_temps())
    assert s.read() == {"temp": 48.3}


def test_raspberry_pi_throttling_flags(tmp_path):
    """get_throttled 0x50005: under-voltage now and seen, throttled now."""
    root = make_sysfs(tmp_path, throttled="0x50005")
    s = SystemSensor(SystemConfig(include=("throttle",)), sysfs_root=root)
    assert s.read() == {
        "throttled": 0x50005, "undervoltage": 1, "freq_capped": 0, "throttling": 1,
        "soft_temp_limit": 0, "undervoltage_seen": 1,
    }  # fmt: skip


def test_under_voltage_from_rpi_volt_hwmon(tmp_path):
    """Kernels without get_throttled expose under-voltage through the rpi_volt hwmon alarm."""
    root = make_sysfs(tmp_path, rpi_volt=1)
    s = SystemSensor(SystemConfig(include=("throttle",)), sysfs_root=root)
    assert s.read() == {"undervoltage": 1}


def test_unavailable_metric_is_logged_once_and_skipped(tmp_path, caplog):
    """A metric the machine cannot provide gives one INFO line, then is silently skipped."""
    caplog.set_level(logging.INFO, logger="fleetbeat.sensors.system")
    s = SystemSensor(SystemConfig(include=("temp", "throttle", "mem")), sysfs_root=str(tmp_path),
                     ps=no_psutil_temps())  # fmt: skip
    for _ in range(5):
        out = s.read()
        assert set(out) == {"mem", "mem_avail"}
    infos = [r for r in caplog.records if "not available" in r.getMessage()]
    assert len(infos) == 2
    assert set(s.unavailable) == {"temp", "throttle"}
    assert s.errors.by_reason == {}


def test_a_failing_psutil_call_skips_that_metric_and_counts_it():
    """If virtual_memory() raises, mem is skipped and counted; the other metrics still go out."""
    ps = no_psutil_temps()

    def broken():
        raise PermissionError(13, "Permission denied: /proc/meminfo")

    ps.virtual_memory = broken
    s = SystemSensor(SystemConfig(include=("cpu", "mem", "load", "procs")), ps=ps)
    s.prime()
    for _ in range(3):
        out = s.read()
        assert "mem" not in out and {"cpu", "load1", "procs"} <= set(out)
    assert s.errors.by_reason == {"mem": 3}


def test_network_rates_need_a_primed_sample():
    """rx/tx rates are bytes per second between two reads; error counts are cumulative."""
    counters = {"eth0": types.SimpleNamespace(bytes_recv=1000, bytes_sent=500, errin=1, errout=0)}
    ps = no_psutil_temps()
    ps.net_io_counters = lambda pernic: counters
    clock = FakeClock(50.0)
    s = SystemSensor(SystemConfig(include=("net",)), ps=ps, clock=clock)
    s.prime()
    clock.now += 2.0
    counters["eth0"] = types.SimpleNamespace(bytes_recv=5000, bytes_sent=1500, errin=2, errout=0)
    assert s.read() == {"net.eth0.rx": 2000.0, "net.eth0.tx": 500.0, "net.eth0.rx_err": 2,
                        "net.eth0.tx_err": 0}  # fmt: skip


def test_loopback_is_left_out_unless_asked_for():
    """By default every interface but `lo` is read; `interfaces` picks exactly those named."""
    s = SystemSensor(SystemConfig(include=("net",)))
    s.prime()
    assert not any(k.startswith("net.lo.") for k in s.read())
    s = SystemSensor(SystemConfig(include=("net",), interfaces=("lo",)))
    s.prime()
    assert {k.split(".")[1] for k in s.read()} == {"lo"}


def test_disk_that_is_not_mounted_is_skipped(tmp_path):
    """A configured mount point that is not mounted is skipped, not reported as its parent's."""
    s = SystemSensor(SystemConfig(include=("disk",), disks=("/", str(tmp_path))))
    out = s.read()
    assert "disk.root" in out and len(out) == 1
    assert any("not a mount point" in why for why in s.unavailable.values())


@pytest.mark.parametrize("group", GROUPS)
def test_include_selects_groups(group):
    """`include` limits the reading to the named groups."""
    s = SystemSensor(SystemConfig(include=(group,)))
    s.prime()
    out = s.read()
    prefixes = {"cpu": ("cpu",), "load": ("load",), "mem": ("mem",), "swap": ("swap",),
                "disk": ("disk.",), "net": ("net.",), "temp": ("temp",), "uptime": ("uptime",),
                "procs": ("procs",), "throttle": ("throttled", "undervoltage", "freq_capped",
                "throttling", "soft_temp_limit")}  # fmt: skip
    assert all(k.startswith(prefixes[group]) for k in out), out
