"""What a UDP-only agent imports: nothing heavy it does not use (memory on a Pi Zero)."""

from __future__ import annotations

import subprocess
import sys

from helpers import subprocess_env

PROBE = """
import sys
from fleetbeat.agent.runtime import Agent
from fleetbeat.cli import build_parser
from fleetbeat.agent.config import load_agent_config
build_parser()  # what `fleetbeat agent` does first: no command's options may import much
agent = Agent(load_agent_config(sys.argv[1]))
agent.start()
agent.read_sensor(agent.system)
agent.send_heartbeat()
agent.shutdown()
print(" ".join(sorted(sys.modules)))
"""


def test_udp_only_agent_imports_nothing_heavy(tmp_path):
    """No ssl, asyncio, paho, pyserial, sqlite3, dataclasses/inspect, random or an HTTP client in
    a UDP-only agent, its command line parsed."""
    cfg = tmp_path / "agent.toml"
    cfg.write_text("[agent]\njitter = 0\n[[outputs.udp]]\nport = 9\n")
    out = subprocess.run([sys.executable, "-c", PROBE, str(cfg)], env=subprocess_env(),
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    loaded = set(out.split())
    assert "fleetbeat.agent.runtime" in loaded
    assert "tomllib" in loaded or "tomli" in loaded
    heavy = {"ssl", "asyncio", "paho", "serial", "sqlite3", "dataclasses", "inspect", "random",
             "hashlib", "_hashlib", "prometheus_client", "pynmea2", "urllib.request",
             "http.client"}  # fmt: skip
    assert loaded & heavy == set()
