"""Real loss, measured in the kernel: nftables drops 20% of heartbeats between two namespaces.

The sender and the collector live in two network namespaces this test creates,
joined by a veth pair. An nftables rule in the collector's input hook drops 20%
of the incoming UDP datagrams at random (on the receiving side: a drop in the
sender's output hook would return EPERM, which the agent rightly counts as a
local drop, not as network loss). The collector's loss estimate must match the
count nftables reports, and no device may be called down.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from collector_helpers import collector_toml, stored_devices, stored_events

from helpers import agent_toml, fleetbeat_cmd, subprocess_env, wait_until

pytestmark = [
    pytest.mark.netns,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create network namespaces"),
]

PORT = 9746
AGENTS = 8
INTERVAL = 0.04  # 8 agents x 25/s = 200 heartbeats/s; each device still has 0.36 s of patience
HEARTBEATS = 2400
SENDER_IP, COLLECTOR_IP = "10.99.0.1", "10.99.0.2"


def sh(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


class Namespaces:
    def __init__(self) -> None:
        tag = secrets.token_hex(3)
        self.sender, self.collector = f"fbs-{tag}", f"fbc-{tag}"
        sh("ip", "netns", "add", self.sender)
        sh("ip", "netns", "add", self.collector)
        sh("ip", "link", "add", f"vs{tag}", "netns", self.sender, "type", "veth",
           "peer", "name", f"vc{tag}", "netns", self.collector)  # fmt: skip
        for ns, dev, ip in ((self.sender, f"vs{tag}", SENDER_IP),
                            (self.collector, f"vc{tag}", COLLECTOR_IP)):  # fmt: skip
            sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        nft = ["ip", "netns", "exec", self.collector, "nft"]
        sh(*nft, "add", "table", "inet", "fbloss")
        sh(*nft, "add", "chain", "inet", "fbloss", "input",
           "{ type filter hook input priority 0; policy accept; }")  # fmt: skip
        sh(*nft, "add", "rule", "inet", "fbloss", "input", "udp", "dport", str(PORT), "counter")
        sh(*nft, "add", "rule", "inet", "fbloss", "input", "udp", "dport", str(PORT),
           "numgen", "random", "mod", "100", "<", "20", "counter", "drop")  # fmt: skip

    def counters(self) -> tuple[int, int]:
        """(packets seen, packets dropped) by the nftables rules."""
        out = json.loads(sh("ip", "netns", "exec", self.collector, "nft", "-j", "list", "chain",
                            "inet", "fbloss", "input"))  # fmt: skip
        seen = dropped = 0
        for item in out["nftables"]:
            expr = item.get("rule", {}).get("expr", [])
            packets = next((e["counter"]["packets"] for e in expr if "counter" in e), 0)
            if any("drop" in e for e in expr):
                dropped = packets
            elif expr:
                seen = packets
        return seen, dropped

    def popen(self, ns: str, args: list[str], log: Path) -> subprocess.Popen[bytes]:
        with open(log, "w") as f:
            return subprocess.Popen(["ip", "netns", "exec", ns, *args], stdout=f,
                                    stderr=subprocess.STDOUT, env=subprocess_env())  # fmt: skip

    def delete(self) -> None:
        for ns in (self.sender, self.collector):
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)


@pytest.fixture
def namespaces() -> Iterator[Namespaces]:
    """Two fresh network namespaces joined by a veth pair, 20% input drop on the collector's."""
    ns = Namespaces()
    yield ns
    ns.delete()


def test_loss_estimate_matches_the_kernel(namespaces: Namespaces, tmp_path: Path) -> None:
    """With 20% dropped in the kernel the estimate is within 1 point of nft's count; no downs."""
    state = tmp_path / "state"
    (tmp_path / "collector.toml").write_text(
        collector_toml(state, PORT, host=COLLECTOR_IP))  # fmt: skip
    procs: list[subprocess.Popen[bytes]] = []
    try:
        col = namespaces.popen(namespaces.collector,
                               fleetbeat_cmd("collector", "-c", str(tmp_path / "collector.toml")),
                               tmp_path / "collector.log")  # fmt: skip
        procs.append(col)
        log = tmp_path / "collector.log"
        wait_until(lambda: "listening for wire v1" in log.read_text(), timeout=10)
        for i in range(AGENTS):
            cfg = tmp_path / f"agent{i}.toml"
            cfg.write_text(agent_toml(PORT, host=COLLECTOR_IP, interval=f"{INTERVAL}s",
                                      device=f"lossy-{i}", system="enabled = false"))  # fmt: skip
            procs.append(namespaces.popen(namespaces.sender,
                                          fleetbeat_cmd("agent", "-c", str(cfg)),
                                          tmp_path / f"agent{i}.log"))  # fmt: skip
        wait_until(lambda: namespaces.counters()[0] >= HEARTBEATS, timeout=60, every=0.5)
        for p in procs[1:]:
            p.send_signal(signal.SIGKILL)  # no bye: nothing sent after the count stops
            p.wait(5)
        stopped = time.time()
        time.sleep(0.05)
        seen, dropped = namespaces.counters()
        col.send_signal(signal.SIGTERM)  # stops with a last flush of its state
        assert col.wait(10) == 0, (tmp_path / "collector.log").read_text()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(5)
    devices: dict[str, Any] = stored_devices(state)
    assert len(devices) == AGENTS
    lost = sum(d["lost"] for d in devices.values())
    expected = sum(d["expected"] for d in devices.values())
    kernel_pct = 100.0 * dropped / seen
    estimate_pct = 100.0 * lost / expected
    print(f"nft: {dropped}/{seen} dropped = {kernel_pct:.2f}%; "
          f"collector: {lost}/{expected} lost = {estimate_pct:.2f}%")  # fmt: skip
    assert seen >= HEARTBEATS
    assert 15 < kernel_pct < 25
    assert abs(estimate_pct - kernel_pct) <= 1.0
    assert sum(d["received"] for d in devices.values()) == seen - dropped
    downs = [e for e in stored_events(state) if e["to"] == "down" and e["time"] < stopped]
    assert downs == []
    for d in devices.values():
        assert d["down_after_effective"] >= 7  # the measured loss bought patience
