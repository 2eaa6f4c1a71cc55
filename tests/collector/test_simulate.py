"""`fleetbeat simulate` drives a real collector: devices appear, the dead go down, loss shows."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable

import pytest
from collector_helpers import CollectorProcess

from fleetbeat import simulate, wire
from fleetbeat.hmac_sha256 import HmacSha256
from helpers import wait_until


def test_every_device_is_scheduled_once_per_interval() -> None:
    """Over three intervals each device sends three heartbeats, in offset order, no burst."""
    clock = [0.0]
    sent: list[tuple[float, bytes]] = []

    def sleep(s: float) -> None:
        clock[0] += s

    fleet = simulate.Fleet(200, interval=1.0, clock=lambda: 1_700_000_000.0)
    fleet.run(lambda b: sent.append((clock[0], b)), seconds=3.0, sleep=sleep,
              monotonic=lambda: clock[0])  # fmt: skip
    assert len(sent) == 600
    times = [t for t, _ in sent]
    assert times == sorted(times)
    per_device: dict[str, list[int]] = {}
    for _, payload in sent:
        msg = wire.parse(payload)
        per_device.setdefault(msg.dev, []).append(msg.seq)
    assert len(per_device) == 200 and all(s == [0, 1, 2] for s in per_device.values())


def test_signed_devices_get_keys_the_collector_can_use(tmp_path: Path) -> None:
    """--key-dir creates one key file per device and every heartbeat verifies with it."""
    from fleetbeat import keys

    fleet = simulate.Fleet(3, interval=1.0, key_dir=str(tmp_path / "keys"))
    for d in fleet.devices:
        body, tag = wire.split_signed(fleet.heartbeat(d, 1.0))
        mac = HmacSha256(keys.read_key_file(str(tmp_path / "keys" / d.dev)))
        assert tag is not None and wire.tag_matches(body, tag, mac)


@pytest.mark.slow
def test_a_simulated_fleet_against_a_real_collector(
    start_collector: Callable[..., CollectorProcess],
) -> None:
    """20 devices over 3 sites appear; 2 dead ones go down; each lossy device's loss as the
    collector measures it matches what the simulator withheld, within 1 point, over 2,000
    heartbeats."""
    col = start_collector(extra="down_after = 3\nlate_after = 1.5")
    fleet = simulate.Fleet(20, interval=0.01, loss=0.1, dead=2, sites=("a", "b", "c"), seed=7)
    send = simulate.udp_sender(f"127.0.0.1:{col.udp_port}")
    runner = threading.Thread(target=fleet.run, args=(send,), kwargs={"seconds": 20.5})
    runner.start()
    wait_until(lambda: len(col.api("/api/devices")["devices"]) == 20, timeout=10)
    runner.join(60)
    devices = {d["id"]: d for d in col.api("/api/devices")["devices"]}
    dead = [d.dev for d in fleet.devices if d.dead_at != float("inf")]
    assert len(dead) == 2
    wait_until(lambda: all(col.api(f"/api/devices/{x}")["device"]["state"] == "down" for x in dead))
    assert {d["tags"]["site"] for d in devices.values()} == {"a", "b", "c"}
    checked = 0
    for d in fleet.devices:
        if d.dev in dead or d.seq < 2000:
            continue
        got = devices[d.dev]
        assert got["run_expected"] >= 1990
        simulated = 100.0 * d.withheld / d.seq
        assert abs(got["loss_pct"] - simulated) <= 1.0, (d.dev, got["loss_pct"], simulated)
        checked += 1
    assert checked >= 15
    assert any(devices[d.dev]["loss_pct"] > 5 for d in fleet.devices if d.dev not in dead)
