"""The unit files: valid for systemd-analyze verify, and exposure 2.0 or lower."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from systemd_helpers import add_systemd_tree, run_install

from helpers import ROOT

UNITS = ROOT / "systemd"
ANALYZE = shutil.which("systemd-analyze")
pytestmark = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


def directives(unit: str) -> dict[str, list[str]]:
    """Key -> values of a unit file (keys may repeat, as DeviceAllow= does)."""
    found: dict[str, list[str]] = {}
    for line in (UNITS / unit).read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(ANALYZE), *args], capture_output=True, text=True, check=False,
                          timeout=60)  # fmt: skip


@pytest.mark.parametrize("name", ["agent", "collector"])
def test_installed_unit_passes_systemd_analyze_verify(install_root, name):
    """`systemd-analyze verify --root` on the tree install.sh builds: no error, no warning.

    What is verified: the unit parses with no unknown or invalid directive (those only
    warn, so stderr must be empty), its dependencies exist, and ExecStart=/ExecReload=
    point at executables in the root. ExecStart's /opt/fleetbeat/venv/bin/fleetbeat is
    the test's stand-in for a venv (a script running this checkout), not a pip-built one.
    """
    assert run_install(name, "--root", str(install_root), "--no-venv").returncode == 0
    add_systemd_tree(install_root)
    unit = f"fleetbeat-{name}.service"
    result = analyze("verify", f"--root={install_root}", unit)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""

    (install_root / "opt/fleetbeat/venv/bin/fleetbeat").unlink()  # the check is real
    result = analyze("verify", f"--root={install_root}", unit)
    assert result.returncode != 0
    assert "/opt/fleetbeat/venv/bin/fleetbeat is not executable" in result.stderr


@pytest.mark.parametrize("name", ["agent", "collector"])
def test_unit_exposure_is_at_most_2(name):
    """`systemd-analyze security --offline=true` rates each unit 2.0 or better."""
    result = analyze(
        "security", "--offline=true", "--no-pager", str(UNITS / f"fleetbeat-{name}.service")
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    score = float(match.group(1))
    print(f"fleetbeat-{name}.service exposure: {score}")
    assert score <= 2.0


def test_agent_unit_runs_hardened_with_serial_access():
    """The agent unit: notify + watchdog, no restart loop on a config error, serial ports only."""
    d = directives("fleetbeat-agent.service")
    assert d["ExecStart"] == [
        "/opt/fleetbeat/venv/bin/fleetbeat agent -c /etc/fleetbeat/agent.toml"
    ]
    assert d["Type"] == ["notify"]
    assert d["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert d["RestartPreventExitStatus"] == ["78"]
    assert d["Restart"] == ["always"]
    assert d["WatchdogSec"] and d["MemoryMax"] and d["RestartSec"]
    assert d["DynamicUser"] == ["yes"]
    assert d["SupplementaryGroups"] == ["dialout"]
    assert d["DevicePolicy"] == ["closed"]
    assert sorted(d["DeviceAllow"]) == [
        f"char-{t} rw" for t in ("ttyACM", "ttyAMA", "ttyS", "ttyUSB")
    ]
    assert d["CapabilityBoundingSet"] == [""]
    assert d["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
    assert d["LoadCredential"] == [
        f"{c}:/etc/fleetbeat/{c}" for c in ("mqtt-password", "amqp-password", "kafka-password")
    ] + ["fleetbeat-key:/etc/fleetbeat/key"]
    assert d["ConfigurationDirectory"] == ["fleetbeat"]


def test_collector_unit_keeps_state_and_binds_its_ports_without_privilege():
    """The collector unit: its state directory, no devices, no capabilities (ports > 1024)."""
    d = directives("fleetbeat-collector.service")
    assert d["ExecStart"] == [
        "/opt/fleetbeat/venv/bin/fleetbeat collector -c /etc/fleetbeat/collector.toml"
    ]
    assert d["Type"] == ["notify"]
    assert d["StateDirectory"] == ["fleetbeat"]
    assert d["PrivateDevices"] == ["yes"]
    assert d["CapabilityBoundingSet"] == [""]
    assert d["RestartPreventExitStatus"] == ["78"]
    assert d["LoadCredential"] == [
        f"{c}:/etc/fleetbeat/{c}" for c in ("mqtt-password", "amqp-password", "kafka-password")
    ]
