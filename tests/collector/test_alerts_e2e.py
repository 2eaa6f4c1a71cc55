"""End to end: real agents and a real collector subprocess, notifications to a local webhook."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest
from alert_helpers import Hook
from collector_helpers import CollectorProcess

from helpers import AgentProcess, run_cli, wait_until

INTERVAL = 0.2  # s between heartbeats
DOWN_AFTER = 3  # intervals: down 0.6 s after the last heartbeat
GROUP_WAIT = 1.0
REPEAT = 4.0
BARN = ("pi-barn-01", "pi-barn-02", "pi-barn-07")
SLOW = pytest.mark.slow

StartCollector = Callable[..., CollectorProcess]
StartAgent = Callable[..., AgentProcess]


def agent_config(port: int, dev: str, site: str) -> str:
    return f"""
[agent]
device_id = "{dev}"
heartbeat_interval = "{INTERVAL}s"
jitter = 0
tags = {{ site = "{site}" }}

[sensors.system]
enabled = false

[[outputs.udp]]
host = "127.0.0.1"
port = {port}
"""


def alerting(hook_url: str, *, repeat: float = REPEAT, extra: str = "") -> str:
    return f"""down_after = {DOWN_AFTER}

[collector.alerts]
group_wait = "{GROUP_WAIT}s"
group_interval = "1s"
repeat_interval = "{repeat}s"

[[collector.notify]]
type = "webhook"
url = "{hook_url}"
timeout = "2s"
{extra}
"""


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook()
    yield h
    h.close()


def heard(col: CollectorProcess, devs: tuple[str, ...], beats: int = 5) -> bool:
    """Every device is up and has sent `beats` heartbeats (so the alerts read its tags)."""
    found = {d["id"]: d for d in col.api("/api/devices")["devices"]}
    return all(d in found and found[d]["state"] == "up" and found[d]["received"] >= beats
               for d in devs)  # fmt: skip


def posts(hook: Hook) -> list[dict[str, Any]]:
    return [b for b in hook.bodies() if isinstance(b, dict) and "alerts" in b]


def names(note: dict[str, Any], status: str = "firing") -> set[str]:
    return {a["device"] for a in note["alerts"] if a["status"] == status}


@SLOW
def test_a_site_going_dark_is_one_post_then_a_resolution_and_a_reminder(
    start_collector: StartCollector, start_agent: StartAgent, hook: Hook
) -> None:
    """Three barn agents killed at once: one POST naming all three within down time +
    group_wait + 2 s; one restarted: its resolution; the other two: a reminder."""
    col = start_collector(extra=alerting(hook.url))
    agents = {d: start_agent(agent_config(col.udp_port, d, "barn")) for d in BARN}
    start_agent(agent_config(col.udp_port, "pi-shed-01", "shed"))
    wait_until(lambda: heard(col, (*BARN, "pi-shed-01")), timeout=15)
    for a in agents.values():
        a.signal(signal.SIGKILL)
    killed = time.time()
    for a in agents.values():
        a.wait()
    wait_until(lambda: posts(hook), timeout=10)
    arrived = time.time()
    first = posts(hook)[0]
    assert arrived - killed <= INTERVAL * DOWN_AFTER + GROUP_WAIT + 2, arrived - killed
    assert names(first) == set(BARN) and first["group"] == {"site": "barn"}
    assert first["summary"] == "3 devices down at site=barn: " + ", ".join(BARN)

    start_agent(agent_config(col.udp_port, "pi-barn-02", "barn"))  # a new run: back up
    wait_until(lambda: any(names(p, "resolved") for p in posts(hook)), timeout=10)
    notes = posts(hook)
    back = next(p for p in notes if names(p, "resolved"))
    assert names(back, "resolved") == {"pi-barn-02"}
    assert back["summary"].startswith("1 device back up at site=barn: pi-barn-02")
    extra = [p for p in notes if not p["reminder"] and p["id"] not in (first["id"], back["id"])]
    assert extra == [], [(p["summary"], p["counts"]) for p in notes]  # one POST for the outage

    wait_until(lambda: any(p["reminder"] for p in posts(hook)), timeout=REPEAT + 5)
    reminder = next(p for p in posts(hook) if p["reminder"])
    assert names(reminder) == {"pi-barn-01", "pi-barn-07"}
    assert reminder["summary"].startswith("Still: ")
    assert reminder["time"] - first["time"] >= REPEAT
    assert "pi-shed-01" not in {a["device"] for p in posts(hook) for a in p["alerts"]}


@SLOW
def test_a_silence_from_the_cli_stops_the_notification_not_the_state_change(
    start_collector: StartCollector, start_agent: StartAgent, hook: Hook
) -> None:
    """`fleetbeat silence add --device pi-barn-01`: both barn agents die; the POST names only
    the other one, while the silenced device is down and its alert marked silenced."""
    col = start_collector(extra=alerting(hook.url))
    url = col.http_url()
    assert url
    token_file = str(col.state_dir / "api-token")
    done = run_cli("silence", "add", "--device", "pi-barn-01", "--duration", "1h",
                   "--comment", "rewiring", "--url", url, "--token-file", token_file)  # fmt: skip
    assert done.returncode == 0, done.stderr
    listed = run_cli("silence", "list", "--url", url)
    assert done.stdout.strip() in listed.stdout and "rewiring" in listed.stdout
    agents = [start_agent(agent_config(col.udp_port, d, "barn")) for d in BARN[:2]]
    wait_until(lambda: heard(col, BARN[:2]), timeout=15)
    for a in agents:
        a.signal(signal.SIGKILL)
    wait_until(lambda: posts(hook), timeout=10)
    assert names(posts(hook)[0]) == {"pi-barn-02"}
    states = {d["id"]: d["state"] for d in col.api("/api/devices")["devices"]}
    assert states == {"pi-barn-01": "down", "pi-barn-02": "down"}
    marked = {a["device"]: a["suppressed"] for a in col.api("/api/alerts")["alerts"]}
    assert marked["pi-barn-01"]["by"] == "silence"
    assert marked["pi-barn-01"]["comment"] == "rewiring"
    assert marked["pi-barn-02"] is None
    shown = run_cli("alerts", "--url", url)
    assert shown.returncode == 2 and "silence: rewiring" in shown.stdout, shown.stdout


@SLOW
def test_a_webhook_failing_three_times_gets_the_notification_once(
    start_collector: StartCollector, start_agent: StartAgent
) -> None:
    """A webhook answering 500, 500, 500, then 200 is sent the same notification 4 times
    and the collector counts one success, nothing left pending."""
    hook = Hook((500, 500, 500, 200))
    try:
        col = start_collector(extra=alerting(hook.url, repeat=3600))
        agent = start_agent(agent_config(col.udp_port, "pi-barn-01", "barn"))
        wait_until(lambda: heard(col, ("pi-barn-01",)), timeout=15)
        agent.signal(signal.SIGKILL)

        def delivered() -> bool:
            counts = col.api("/api/alerts")["notifications"]["webhook"]
            return counts["sent"] == 1 and col.api("/api/alerts")["pending"]["webhook"] == 0

        wait_until(delivered, timeout=40, every=0.2)  # retries after ~2, 4 and 8 s
        assert len({p["id"] for p in posts(hook)}) == 1
        assert len(hook.requests) == 4
        assert col.api("/api/alerts")["notifications"]["webhook"]["failed"] == 3
    finally:
        hook.close()


@SLOW
def test_a_notification_pending_at_a_restart_is_delivered_after_it(
    start_collector: StartCollector, start_agent: StartAgent, tmp_path: Path
) -> None:
    """The collector killed while its webhook fails: the restarted one delivers the same id."""
    hook = Hook((500,))
    try:
        extra = alerting(hook.url, repeat=3600)
        col = start_collector(extra=extra)
        agent = start_agent(agent_config(col.udp_port, "pi-barn-01", "barn"))
        wait_until(lambda: heard(col, ("pi-barn-01",)), timeout=15)
        agent.signal(signal.SIGKILL)
        wait_until(lambda: hook.requests, timeout=10)
        failed_id = posts(hook)[0]["id"]
        col.proc.send_signal(signal.SIGKILL)  # no goodbye: the outbox is all there is
        col.proc.wait(5)
        hook.statuses = [200]
        again = start_collector(extra=extra, udp_port=col.udp_port, name="again")
        wait_until(lambda: again.api("/api/alerts")["notifications"]["webhook"]["sent"] == 1,
                   timeout=20, every=0.2)  # fmt: skip
        assert {p["id"] for p in posts(hook)} == {failed_id}
        assert len(posts(hook)) >= 2
        kinds = {a["kind"] for a in again.api("/api/alerts")["alerts"]}
        assert kinds == {"down"}  # still firing, told before the restart, not told again
    finally:
        hook.close()


@SLOW
def test_the_dead_mans_switch_pings_while_healthy_and_reload_says_what_needs_a_restart(
    start_collector: StartCollector, hook: Hook
) -> None:
    """[collector.self_check] pings its URL; SIGHUP with a new notifier logs that it needs a
    restart, and a new group_wait applies without one."""
    ping = Hook()
    try:
        base = alerting(hook.url)
        col = start_collector(extra=base + f'\n[collector.self_check]\nurl = "{ping.url}/ping"'
                              '\nevery = "1s"\n')  # fmt: skip
        wait_until(lambda: len(ping.requests) >= 2, timeout=10)
        assert {(m, p) for m, p, _, _ in ping.requests} == {("GET", "/ping")}
        text = col.config_path.read_text().replace(f'url = "{hook.url}"',
                                                   f'url = "{hook.url}/other"')  # fmt: skip
        col.config_path.write_text(text.replace('group_wait = "1s"', 'group_wait = "2s"'))
        col.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "notify changed: restart" in col.log(), timeout=10)
        checks = col.api("/api/alerts")["self_check"]
        assert checks["sent"] >= 2 and checks["failed"] == 0
    finally:
        ping.close()
