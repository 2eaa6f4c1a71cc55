"""What signing costs: agent RSS and heartbeat encode+send, signed against unsigned, same run.

Targets (issue 12): RSS at most 1.5 MB over the unsigned UDP-only agent, and sign +
encode + send of a heartbeat at most 1.6x the unsigned path. The collector's side
(ingest with every message verified) is measured by benchmarks/collector_ingest.py
--signed. Run: .venv/bin/python benchmarks/signing.py
"""

from __future__ import annotations

import os
import socket
import tempfile
import time

from agent_core import best_of, drain_socket, rss_mb, start_agent
from fleetbeat import keys


def agent_config(port: int, key_file: str) -> str:
    return f"""
[agent]
heartbeat_interval = "0.5s"
jitter = 0
key_file = "{key_file}"
[sensors.system]
interval = "0.5s"
[[outputs.udp]]
host = "127.0.0.1"
port = {port}
"""


def bench_rss(tmp: str, key_file: str) -> None:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    port = rx.getsockname()[1]
    plain_dir, signed_dir = os.path.join(tmp, "plain"), os.path.join(tmp, "signed")
    os.mkdir(plain_dir)
    os.mkdir(signed_dir)
    plain = start_agent(agent_config(port, ""), plain_dir)
    signed = start_agent(agent_config(port, key_file), signed_dir)
    try:
        time.sleep(6.0)  # a dozen cycles: steady state
        a, b = rss_mb(plain.pid), rss_mb(signed.pid)
        print(f"RSS  unsigned agent {a:.1f} MB, signed {b:.1f} MB: +{b - a:.2f} MB "
              "(target <= +1.5 MB)")  # fmt: skip
    finally:
        for p in (plain, signed):
            p.terminate()
            p.wait()
        rx.close()


def bench_send(key_file: str) -> None:
    from fleetbeat.agent.config import parse_agent_config
    from fleetbeat.agent.runtime import Agent
    from fleetbeat.outputs.base import Outgoing

    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    port = rx.getsockname()[1]
    emitters = []
    for key in ("", key_file):
        cfg = parse_agent_config({"agent": {"tags": {"site": "kitchen"}, "key_file": key},
                                  "outputs": {"udp": [{"port": port}]}}, "bench")  # fmt: skip
        agent = Agent(cfg)
        agent.system.prime()
        agent.system.read()
        msg = Outgoing("hb", ts=time.time(), metrics=agent.heartbeat_metrics(),
                       interval=cfg.agent.heartbeat_interval)  # fmt: skip
        emitters.append((agent.emitters[0], msg))

    n = 2000

    def run(i: int) -> float:
        emitter, msg = emitters[i]

        def loop() -> None:
            for _ in range(n):
                emitter.emit(msg)
            drain_socket(rx)

        return best_of(loop) / n

    for _ in range(3):  # interleaved rounds: the same noise for both
        plain, signed = run(0), run(1)
        print(f"SEND heartbeat encode+send unsigned {plain * 1e6:.1f} us, signed "
              f"{signed * 1e6:.1f} us: ratio {signed / plain:.2f} (target <= 1.6)")  # fmt: skip
    rx.close()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        key_file = os.path.join(tmp, "key")
        keys.write_key_file(key_file, keys.new_key())
        bench_rss(tmp, key_file)
        bench_send(key_file)


if __name__ == "__main__":
    main()
