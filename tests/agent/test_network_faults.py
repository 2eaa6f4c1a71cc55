"""The network fails: the agent keeps sampling on schedule and counts drops.

Each test runs a real agent in a fresh network namespace (`unshare -n`, root
only), so nothing it sends, and no DNS query it makes, can leave this machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from helpers import fleetbeat_cmd, subprocess_env

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create a network namespace"),
]


def run_in_netns(
    tmp_path, config: str, *, lo_up: bool, seconds: float
) -> list[tuple[str, str, dict]]:
    """Run `fleetbeat agent --show` in a new netns for `seconds`; return (status, output, msg)."""
    path = tmp_path / "agent.toml"
    path.write_text(config)
    agent = " ".join(fleetbeat_cmd("agent", "--show", "-c", str(path)))
    script = ("ip link set lo up; " if lo_up else "") + f"exec {agent}"
    proc = subprocess.Popen(["unshare", "-n", "sh", "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=subprocess_env())  # fmt: skip
    time.sleep(seconds)
    proc.terminate()
    out, err = proc.communicate(5)
    assert proc.returncode == 0, err
    rows = []
    for line in out.splitlines():
        _, status, _, rest = line.split(" ", 3)
        name, _, payload = rest.partition(": ")
        rows.append((status, name, json.loads(payload)))
    return rows


def test_network_down_drops_are_counted_and_heartbeats_keep_time(tmp_path):
    """With no network at all every send fails with ENETUNREACH: counted, on schedule, no crash."""
    config = """
[agent]
device_id = "offline-pi"
heartbeat_interval = "0.1s"
jitter = 0
[sensors.system]
interval = "0.1s"
[[outputs.udp]]
host = "127.0.0.1"
port = 9746
"""
    rows = run_in_netns(tmp_path, config, lo_up=False, seconds=3.0)
    hbs = [m for status, _, m in rows if m["k"] == "hb"]
    assert 15 <= len(hbs) <= 35, len(hbs)  # 3 s at 0.1 s, less start-up
    assert all(status == "DROPPED" for status, _, _ in rows)
    assert [m["seq"] for m in hbs] == list(range(len(hbs)))
    last = hbs[-1]
    assert last["drop"] >= len(hbs) - 1
    assert set(last["drop_by"]) == {"network_unreachable"}


def test_unresolvable_host_never_stalls_the_other_outputs(tmp_path):
    """An output whose name cannot be resolved drops as `unresolved`; the other keeps its cadence."""
    config = """
[agent]
device_id = "dns-less"
heartbeat_interval = "0.1s"
jitter = 0
[sensors.system]
enabled = false
[[outputs.udp]]
host = "collector.fleet.invalid"
port = 9746
[[outputs.udp]]
host = "127.0.0.1"
port = 9
"""
    rows = run_in_netns(tmp_path, config, lo_up=True, seconds=3.0)
    by_output: dict[str, list] = {}
    for status, name, msg in rows:
        by_output.setdefault(name, []).append((status, msg))
    named = by_output["udp collector.fleet.invalid:9746 (json)"]
    local = by_output["udp 127.0.0.1:9 (json)"]
    assert all(status == "DROPPED" for status, _ in named)
    assert 15 <= len(local) <= 35
    assert len(named) == len(local)
    named_hbs = [m for _, m in named if m["k"] == "hb"]
    assert named_hbs[-1]["drop_by"] == {"unresolved": len(named_hbs) - 1}
