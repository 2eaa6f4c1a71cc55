"""SIGHUP reload: a valid config is applied in place, an invalid one is rejected and logged."""

from __future__ import annotations

import signal

import pytest
import stream_stub

from fleetbeat.agent.config import parse_agent_config
from fleetbeat.agent.runtime import Agent
from fleetbeat.config.loader import parse_toml
from fleetbeat.registry import SENSORS
from fleetbeat.sdnotify import Notifier
from helpers import UdpReceiver, agent_toml, subprocess_env


def hbs(msgs):
    return [m for m in msgs if m["k"] in ("hb", "bye")]


def assert_one_run_contiguous(msgs):
    """Every hb/bye of one run, with seq 0, 1, 2 ... (nothing reset, nothing skipped)."""
    stream = hbs(msgs)
    assert len({m["run"] for m in msgs}) == 1
    assert [m["seq"] for m in stream] == list(range(len(stream)))


def test_sighup_applies_a_new_heartbeat_interval_in_the_same_run(
    udp_receiver, start_agent, notify_socket
):
    """After SIGHUP the new interval is on the wire, run and seq carry on; RELOADING, then READY."""
    agent = start_agent(agent_toml(udp_receiver.port, interval="0.3s"),
                        env=subprocess_env(NOTIFY_SOCKET=notify_socket.address))  # fmt: skip
    udp_receiver.wait_for(lambda ms: len(hbs(ms)) >= 3)
    notify_socket.wait_for(lambda: notify_socket.times("READY"))
    agent.config_path.write_text(agent_toml(udp_receiver.port, interval="0.05s"))
    agent.signal(signal.SIGHUP)

    msgs = udp_receiver.wait_for(lambda ms: sum(m.get("int") == 0.05 for m in ms) >= 10)
    assert [m["int"] for m in hbs(msgs)] == sorted((m["int"] for m in hbs(msgs)), reverse=True)
    assert_one_run_contiguous(msgs)
    rd = [m["seq"] for m in msgs if m["k"] == "rd"]
    assert rd == list(range(len(rd)))  # the readings stream continues too
    notify_socket.wait_for(lambda: len(notify_socket.times("READY")) == 2)
    kinds = notify_socket.kinds()
    assert kinds.index("MONOTONIC_USEC+RELOADING+STATUS") < len(kinds) - 1 - kinds[::-1].index(
        "READY+STATUS"
    )
    assert "reloaded" in agent.log()

    agent.signal(signal.SIGTERM)
    assert agent.wait(3) == 0
    msgs = udp_receiver.wait_for(lambda ms: ms[-1]["k"] == "bye")
    assert_one_run_contiguous(msgs)


def test_an_invalid_config_is_rejected_and_the_old_one_keeps_running(
    udp_receiver, start_agent, notify_socket
):
    """A broken file on SIGHUP: every error logged with its key, old interval kept, exit later 0."""
    agent = start_agent(agent_toml(udp_receiver.port, interval="0.1s"),
                        env=subprocess_env(NOTIFY_SOCKET=notify_socket.address))  # fmt: skip
    udp_receiver.wait_for(lambda ms: len(hbs(ms)) >= 2)
    broken = agent_toml(udp_receiver.port, interval="fast").replace(
        "jitter = 0", "jitter = 0\nheartbeat_intreval = 1"
    )
    agent.config_path.write_text(broken)
    agent.signal(signal.SIGHUP)
    notify_socket.wait_for(
        lambda: "last reload rejected" in " ".join(notify_socket.values("STATUS"))
    )
    log = agent.log()
    assert "agent.heartbeat_interval" in log
    assert "agent.heartbeat_intreval: unknown key" in log
    assert "reload rejected (2 config errors)" in log

    before = len(hbs(udp_receiver.messages()))
    msgs = udp_receiver.wait_for(lambda ms: len(hbs(ms)) >= before + 5)
    assert {m["int"] for m in hbs(msgs)} == {0.1}
    assert agent.proc.poll() is None
    assert_one_run_contiguous(msgs)

    agent.config_path.write_text(agent_toml(udp_receiver.port, interval="0.05s"))
    agent.signal(signal.SIGHUP)  # fixed: now it applies
    udp_receiver.wait_for(lambda ms: sum(m.get("int") == 0.05 for m in ms) >= 3)
    notify_socket.wait_for(lambda: "rejected" not in notify_socket.values("STATUS")[-1])


def test_outputs_added_kept_and_removed_on_reload(start_agent):
    """A kept output's seq goes on; an added one starts at 0, same run; a removed one gets bye."""
    a, b, c = UdpReceiver(), UdpReceiver(), UdpReceiver()
    try:
        two = agent_toml(a.port, interval="0.05s") + f"\n[[outputs.udp]]\nport = {b.port}\n"
        agent = start_agent(two)
        b.wait_for(lambda ms: len(hbs(ms)) >= 3)
        agent.config_path.write_text(
            agent_toml(a.port, interval="0.05s") + f"\n[[outputs.udp]]\nport = {c.port}\n"
        )
        agent.signal(signal.SIGHUP)
        c.wait_for(lambda ms: len(hbs(ms)) >= 3)
        got_b = b.wait_for(lambda ms: ms[-1]["k"] == "bye")
        agent.signal(signal.SIGTERM)
        assert agent.wait(3) == 0
        got_a = a.wait_for(lambda ms: ms[-1]["k"] == "bye")
        got_c = c.wait_for(lambda ms: ms[-1]["k"] == "bye")
        run = got_a[0]["run"]
        for got in (got_a, got_b, got_c):
            assert_one_run_contiguous(got)
            assert got[0]["run"] == run
        assert len(hbs(got_a)) > len(hbs(got_c))  # a's stream spans both configs
    finally:
        for rx in (a, b, c):
            rx.close()


@pytest.fixture
def stub_sensor(monkeypatch):
    monkeypatch.setitem(SENSORS, "stub", "stream_stub:StreamStub")
    stream_stub.EVENTS.clear()
    return stream_stub.EVENTS


def config(port: int, stubs: str, interval: str = "1s"):
    text = agent_toml(port, interval=interval) + stubs
    return parse_agent_config(parse_toml(text), "test.toml")


def test_reload_stops_replaced_streaming_sensors_and_keeps_unchanged_ones(
    udp_receiver, stub_sensor
):
    """Unchanged streaming sensors keep running; changed ones stop and restart; new ones start."""
    old = '[[sensors.stub]]\nname = "keep"\n[[sensors.stub]]\nname = "change"\n'
    new = old.replace('"change"\n', '"change"\nport = "/dev/ttyACM0"\n')
    new += '[[sensors.stub]]\nname = "added"\n'
    agent = Agent(config(udp_receiver.port, old), notifier=Notifier(env={}))
    agent.start()
    keep = next(s for s in agent.sensors if s.name == "keep")
    assert stub_sensor == [("start", "keep"), ("start", "change")]
    stub_sensor.clear()

    agent.reload(config(udp_receiver.port, new, interval="0.5s"))
    assert stub_sensor == [("stop", "change"), ("start", "change"), ("start", "added")]
    assert next(s for s in agent.sensors if s.name == "keep") is keep
    assert [j.name for j in agent.scheduler.jobs] == ["read system", "heartbeat"]
    assert next(j for j in agent.scheduler.jobs if j.name == "heartbeat").interval == 0.5

    changed = next(s for s in agent.sensors if s.name == "change")
    changed.emit({"x": 1.0})  # the restarted sensor feeds the pipeline
    agent.shutdown()
    msgs = udp_receiver.wait_for(lambda ms: bool(ms) and ms[-1]["k"] == "bye")
    assert [m["src"] for m in msgs if m["k"] == "rd"] == ["change"]
    assert msgs[-1]["k"] == "bye"
