"""End to end: real agent subprocesses report to a real collector subprocess on loopback."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any, Callable

import pytest
from collector_helpers import CollectorProcess, stored_devices, stored_events

from helpers import AgentProcess, agent_toml, free_port, wait_until

INTERVAL = 0.1
SLOW = pytest.mark.slow

StartCollector = Callable[..., CollectorProcess]
StartAgent = Callable[..., AgentProcess]


def device(state_dir: Path, dev: str) -> dict[str, Any]:
    return stored_devices(state_dir).get(dev) or {}


def events_of(state_dir: Path, dev: str) -> list[dict[str, Any]]:
    return [e for e in stored_events(state_dir) if e["device"] == dev]


def agent_config(port: int, dev: str) -> str:
    # no system readings: the heartbeat stream is what liveness and loss are about
    return agent_toml(port, interval=f"{INTERVAL}s", device=dev, system="enabled = false")


def test_sigkill_goes_late_then_down_in_time(start_collector: StartCollector,
                                             start_agent: StartAgent) -> None:  # fmt: skip
    """A killed agent's device goes late, then down within interval x down_after + 1 s."""
    col = start_collector()
    agent = start_agent(agent_config(col.udp_port, "e2e-kill"))
    wait_until(lambda: device(col.state_dir, "e2e-kill").get("received", 0) >= 20, timeout=10)
    assert device(col.state_dir, "e2e-kill")["state"] == "up"
    agent.signal(signal.SIGKILL)
    agent.wait()
    wait_until(lambda: device(col.state_dir, "e2e-kill").get("state") == "down", timeout=10)
    dev = device(col.state_dir, "e2e-kill")
    evs = events_of(col.state_dir, "e2e-kill")
    assert [(e["from"], e["to"]) for e in evs] == [(None, "up"), ("up", "late"), ("late", "down")]
    late, down = evs[1], evs[2]
    k = dev["down_after_effective"]
    assert 3 <= k <= 10
    assert late["time"] - dev["last_seen"] >= 1.5 * INTERVAL
    assert down["time"] - dev["last_seen"] >= k * INTERVAL
    assert down["time"] - dev["last_seen"] <= k * INTERVAL + 1.0
    assert dev["lost"] == 0
    assert col.proc.poll() is None


def test_sigterm_goes_offline(start_collector: StartCollector, start_agent: StartAgent) -> None:
    """An agent stopped with SIGTERM says bye: its device is offline, never down."""
    col = start_collector()
    agent = start_agent(agent_config(col.udp_port, "e2e-term"))
    wait_until(lambda: device(col.state_dir, "e2e-term").get("received", 0) >= 5, timeout=10)
    agent.signal(signal.SIGTERM)
    assert agent.wait() == 0
    wait_until(lambda: device(col.state_dir, "e2e-term").get("state") == "offline")
    ev = events_of(col.state_dir, "e2e-term")[-1]
    assert (ev["from"], ev["to"], ev["reason"]) == ("up", "offline", "bye")


@SLOW
def test_restart_is_an_event_and_counting_restarts(start_collector: StartCollector,
                                                   start_agent: StartAgent) -> None:  # fmt: skip
    """A restarted agent is a restart event, not a down, and its run's count starts at zero."""
    col = start_collector()
    config = agent_config(col.udp_port, "e2e-restart")
    first = start_agent(config)
    wait_until(lambda: device(col.state_dir, "e2e-restart").get("received", 0) >= 15, timeout=10)
    first.signal(signal.SIGKILL)
    first.wait()
    before = device(col.state_dir, "e2e-restart")
    start_agent(config)
    wait_until(lambda: device(col.state_dir, "e2e-restart").get("restarts") == 1, timeout=10)
    after = device(col.state_dir, "e2e-restart")
    assert after["run"] != before["run"]
    assert after["run_expected"] < before["received"]
    assert after["run_lost"] == 0
    assert after["received"] >= before["received"] + after["run_received"] - 1
    reasons = [e["reason"] for e in events_of(col.state_dir, "e2e-restart")]
    assert "restart" in reasons
    assert "down" not in [e["to"] for e in events_of(col.state_dir, "e2e-restart")]


@SLOW
def test_collector_restart_reloads_devices(tmp_path: Path, start_collector: StartCollector,
                                           start_agent: StartAgent) -> None:  # fmt: skip
    """After a collector restart every device is back; one silent meanwhile is down."""
    col = start_collector(name="first")
    start_agent(agent_config(col.udp_port, "e2e-alive"))
    quiet = start_agent(agent_config(col.udp_port, "e2e-quiet"))
    for dev in ("e2e-alive", "e2e-quiet"):
        wait_until(lambda d=dev: device(col.state_dir, d).get("received", 0) >= 5, timeout=10)
    assert col.terminate() == 0
    quiet.signal(signal.SIGKILL)
    quiet.wait()
    time.sleep(10 * INTERVAL + 0.2)  # the collector is away longer than any down_after
    again = start_collector(udp_port=col.udp_port, state_dir=col.state_dir, name="second")
    assert "2 devices reloaded" in again.log()
    wait_until(lambda: [e for e in events_of(again.state_dir, "e2e-quiet") if e["to"] == "down"])
    down = [e for e in events_of(again.state_dir, "e2e-quiet") if e["to"] == "down"]
    assert down[-1]["reason"] == "silent_through_restart"
    alive_before = device(again.state_dir, "e2e-alive")["received"]
    wait_until(lambda: device(again.state_dir, "e2e-alive").get("received", 0) > alive_before + 5)
    alive = device(again.state_dir, "e2e-alive")
    assert alive["state"] == "up"
    assert alive["lost"] <= 1  # the collector's downtime is not counted as network loss
    if again.http_url():  # the HTTP side lists them too
        ids = {d["id"] for d in again.api("/api/devices")["devices"]}
        assert {"e2e-alive", "e2e-quiet"} <= ids


def test_ipv6_listen(start_collector: StartCollector, start_agent: StartAgent) -> None:
    """A collector listening on "[::]" receives from an agent sending to ::1."""
    col = start_collector(udp_port=free_port(host="::1"), udp_host="::")
    start_agent(agent_toml(col.udp_port, host="::1", device="e2e-v6", system="enabled = false"))
    wait_until(lambda: device(col.state_dir, "e2e-v6").get("state") == "up", timeout=10)
    assert device(col.state_dir, "e2e-v6")["addr"].startswith("[::1]:")
