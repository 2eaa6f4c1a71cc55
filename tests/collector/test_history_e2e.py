"""The history API on a real collector subprocess with a real store, across a restart."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any, Callable

import pytest
from collector_helpers import CollectorProcess, Sender

from helpers import wait_until

Start = Callable[..., CollectorProcess]
MakeSender = Callable[..., Sender]


def get(proc: CollectorProcess, path: str) -> tuple[int, Any]:
    """(status, JSON body) of a GET, errors included."""
    url = proc.http_url()
    assert url
    try:
        with urllib.request.urlopen(url + path, timeout=10) as resp:  # noqa: S310 - loopback
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def heartbeats(sender: Sender, seqs: range, every: float = 0.05) -> None:
    for seq in seqs:
        sender.send(seq)
        time.sleep(every)


def test_history_answers_with_segments_and_hours_from_before_a_restart(
    start_collector: Start, make_sender: MakeSender
) -> None:
    """A device's segments, hourly counts and availability are read back after the collector
    is killed and started again on the same state_dir; the timelines and fleet agree."""
    proc = start_collector(extra="late_after = 1.5\ndown_after = 3.0\n")
    sender = make_sender(proc.udp_port, dev="hist-1", interval=0.1)
    heartbeats(sender, range(0, 10))  # up
    wait_until(lambda: proc.api("/api/devices/hist-1")["device"]["state"] == "up")
    went_down = wait_until(  # silent: late, then down
        lambda: proc.api("/api/devices/hist-1")["device"]["state"] == "down", timeout=10
    )
    assert went_down
    heartbeats(sender, range(10, 20))  # seq 10..19 sent: up again, no loss

    def flushed() -> bool:
        body = get(proc, "/api/devices/hist-1/history")[1]
        return len(body["segments"]) >= 4 and sum(h["expected"] for h in body["hours"]) == 20

    assert wait_until(flushed)
    status, before = get(proc, "/api/devices/hist-1/history")
    assert status == 200
    states = [s["state"] for s in before["segments"]]
    assert states[:4] == ["up", "late", "down", "up"], before
    assert [s["reason"] for s in before["segments"][1:4]] == [
        "late", "missed_heartbeats", "heartbeat",
    ]  # fmt: skip
    hours = before["hours"]
    assert sum(h["received"] for h in hours) == 20 and sum(h["expected"] for h in hours) == 20
    proc.proc.kill()  # no last flush: what is there was written by the periodic ones
    proc.proc.wait(5)
    again = start_collector(state_dir=proc.state_dir, name="again",
                            extra='late_after = 1.5\ndown_after = 3.0\n')  # fmt: skip
    status, after = get(again, "/api/devices/hist-1/history")
    assert status == 200
    assert after["segments"][:3] == before["segments"][:3]
    assert after["segments"][3]["from"] == before["segments"][3]["from"]
    assert after["hours"][0]["hour"] == hours[0]["hour"]
    assert sum(h["received"] for h in after["hours"]) == 20
    avail = after["availability"]
    assert avail["since"] == before["segments"][0]["from"]
    assert 0 < avail["24h"] < 100 and avail["24h"] == avail["7d"] == avail["30d"]
    since = before["segments"][0]["from"] - 1
    status, lines = get(again, f"/api/timelines?id=hist-1&id=nobody&since={since}")
    assert status == 200 and list(lines["devices"]) == ["hist-1"]
    assert [s[2] for s in lines["devices"]["hist-1"][:4]] == ["up", "late", "down", "up"]
    status, fleet = get(again, f"/api/fleet/history?since={since}&step=60")
    assert status == 200
    first = fleet["buckets"][0]
    assert first["down"] == 1 and sum(first[s] for s in ("up", "late", "offline")) == 0
    status, devices = get(again, "/api/devices?fields=id,availability")
    assert devices["devices"] == [{"id": "hist-1", "availability": avail}] or (
        devices["devices"][0]["availability"]["since"] == avail["since"]
    )
    status, groups = get(again, "/api/availability?by=site")
    assert groups["groups"][0]["tags"] == {"site": "lab"} and groups["groups"][0]["devices"] == 1
    assert groups["worst"][0]["id"] == "hist-1"
    metrics = urllib.request.urlopen(again.http_url() + "/metrics", timeout=10).read().decode()  # noqa: S310
    assert 'fleetbeat_device_availability_ratio{device="hist-1",window="7d"}' in metrics


def test_history_is_503_while_the_database_is_gone_and_answers_once_recreated(
    start_collector: Start, make_sender: MakeSender
) -> None:
    """A deleted database makes the history routes answer 503 JSON (never a 500); once the
    collector has recreated it, they answer again from the new file."""
    proc = start_collector()
    sender = make_sender(proc.udp_port, dev="gone-1", interval=0.1)
    heartbeats(sender, range(0, 3))
    wait_until(lambda: get(proc, "/api/devices/gone-1/history")[0] == 200)
    for name in ("fleetbeat.db", "fleetbeat.db-wal", "fleetbeat.db-shm"):
        (proc.state_dir / name).unlink(missing_ok=True)
    status, body = get(proc, "/api/devices/gone-1/history")
    # either still missing (503) or already recreated by a flush (200): never a 500
    assert status in (200, 503), body
    if status == 503:
        assert "history unavailable" in body["error"]
    heartbeats(sender, range(3, 6))
    assert wait_until(lambda: get(proc, "/api/devices/gone-1/history")[0] == 200, timeout=10)
    assert get(proc, "/api/devices?fields=id")[0] == 200


HOSTILE = [
    ("/api/devices/dev-1/history?since=nan", "since"),
    ("/api/devices/dev-1/history?until=inf", "until"),
    ("/api/devices/dev-1/history?since=1e400", "since"),
    ("/api/devices/dev-1/history?since=abc", "since"),
    ("/api/devices/dev-1/history?since=100&until=50", "since"),
    ("/api/devices/dev-1/history?since=0&until=2678401", "since"),
    ("/api/timelines?since=-inf", "since"),
    ("/api/timelines?id=" + ",".join(f"d{i}" for i in range(501)), "id"),
    ("/api/timelines?id=bad%20id", "id"),
    ("/api/timelines?id=" + "x" * 65, "id"),
    ("/api/fleet/history?step=59", "step"),
    ("/api/fleet/history?step=86401", "step"),
    ("/api/fleet/history?step=nan", "step"),
    ("/api/fleet/history?since=0&until=2678400&step=60", "step"),
    ("/api/fleet/history?until=1e308&since=-1e308", "until"),
    ("/api/fleet/history?until=1e308", "until"),  # not "since", which was not sent
    ("/api/timelines?until=1e12", "until"),
    ("/api/timelines?since=-1", "since"),
    ("/api/timelines?id=" + ",".join(f"d{i}" for i in range(201)), "id"),
    ("/api/availability?by=site,,room", "by"),
    ("/api/availability?by=" + ",".join(f"k{i}" for i in range(9)), "by"),
    ("/api/availability?by=" + "k" * 129, "by"),
    ("/api/devices?fields=id,password", "fields"),
    ("/api/devices?fields=,", "fields"),
    ("/api/devices?limit=-1", "limit"),
    ("/api/devices?limit=1e3", "limit"),
    ("/api/devices?limit=99999999999", "limit"),
    ("/api/devices?offset=0x10", "offset"),
    ("/api/devices?offset=%201", "offset"),
]


@pytest.fixture(scope="module")
def one_collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CollectorProcess]:
    """One real collector for the hostile-parameter tests (they change nothing)."""
    proc = CollectorProcess(tmp_path_factory.mktemp("hostile"))
    yield proc
    proc.stop()


@pytest.mark.parametrize(("path", "param"), HOSTILE)
def test_hostile_parameters_are_a_400_naming_the_parameter(
    path: str, param: str, one_collector: CollectorProcess
) -> None:
    """Every bad parameter of the history routes is a 400 whose error starts with its name."""
    status, body = get(one_collector, path)
    assert status == 400, body
    assert body["error"].startswith(param + ":"), body
