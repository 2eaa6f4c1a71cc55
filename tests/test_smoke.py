"""The agent runs end to end: heartbeats reach a real UDP receiver, SIGTERM sends bye."""

from __future__ import annotations

import signal
import time

from helpers import agent_toml


def test_agent_sends_heartbeats_and_bye(udp_receiver, start_agent):
    """An agent sends contiguous heartbeats and a bye on SIGTERM, then exits 0 within 1 s."""
    agent = start_agent(agent_toml(udp_receiver.port))
    udp_receiver.wait_for(lambda ms: sum(m["k"] == "hb" for m in ms) >= 3)
    agent.signal(signal.SIGTERM)
    t0 = time.monotonic()
    assert agent.wait(2) == 0
    assert time.monotonic() - t0 < 1.0
    msgs = udp_receiver.wait_for(lambda ms: any(m["k"] == "bye" for m in ms))
    stream = [m for m in msgs if m["k"] in ("hb", "bye")]
    assert [m["seq"] for m in stream] == list(range(len(stream)))
    assert stream[-1]["k"] == "bye"
