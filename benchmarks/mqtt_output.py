"""MQTT output: agent RSS and publish-path cost, each against a baseline from the same run.

1. Steady-state RSS of a real `fleetbeat agent` with one MQTT output to a local
   mosquitto (target <= 28 MB on CPython 3.11), beside the same agent with one
   UDP output instead.
2. Cost of `MqttOutput.send` per message (publish written to the socket) as a
   ratio to `UdpOutput.send` (target <= 4), interleaved rounds, medians.

Run: .venv/bin/python benchmarks/mqtt_output.py [--seconds 8] [--messages 3000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_broker(tmp: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port(socket.SOCK_STREAM)
    conf = tmp / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    "log_type error\nuser root\n")  # fmt: skip
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    proc = subprocess.Popen([mosquitto, "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 5
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc, port
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


AGENT = """
[agent]
device_id = "bench"
heartbeat_interval = "0.5s"
jitter = 0
[sensors.system]
interval = "0.5s"
"""


def agent_rss(tmp: Path, output: str, seconds: float) -> float:
    """Median RSS (MiB) of a real agent over the second half of `seconds`."""
    cfg = tmp / "agent.toml"
    cfg.write_text(AGENT + output)
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    cmd = [sys.executable, "-m", "fleetbeat", "agent", "-c", str(cfg)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        time.sleep(seconds / 2)
        samples = []
        for _ in range(10):
            time.sleep(seconds / 20)
            samples.append(rss_kib(proc.pid))
        return statistics.median(samples) / 1024
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(5)


def send_cost(port: int, messages: int, rounds: int) -> tuple[float, float, dict[str, int]]:
    """Median microseconds per send for UDP and MQTT, measured in interleaved rounds."""
    sys.path.insert(0, str(ROOT / "src"))
    from fleetbeat.outputs.base import Identity
    from fleetbeat.outputs.mqtt_publish import MqttConfig, MqttOutput

    ident = Identity(dev="bench", run="0" * 16, boot_time=0, version="0", tags={})
    mqtt = MqttOutput(MqttConfig(host="127.0.0.1", port=port), identity=ident)
    mqtt.start()
    deadline = time.monotonic() + 5
    while not mqtt.connects:
        if time.monotonic() > deadline:
            raise RuntimeError("MQTT output did not connect")
        time.sleep(0.01)
    time.sleep(0.1)
    return compare_with_udp(mqtt, messages, rounds)


def compare_with_udp(out: Any, messages: int, rounds: int,
                     settle: float = 0.05) -> tuple[float, float, dict[str, int]]:  # fmt: skip
    """Median microseconds per send of a UDP output and of `out` (connected), in interleaved
    rounds of `messages` heartbeats, `settle` s apart so a broker reads what it was sent.
    Closes `out`. Shared with the other output benchmarks (amqp_output.py)."""
    from fleetbeat.outputs.base import Outgoing
    from fleetbeat.outputs.udp import UdpConfig, UdpOutput

    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sink.bind(("127.0.0.1", 0))
    udp = UdpOutput(UdpConfig(host="127.0.0.1", port=sink.getsockname()[1]))
    payload = (
        b'{"v":1,"k":"hb","dev":"bench","run":"0000000000000000","seq":1,"ts":1.0,'
        b'"int":10,"bt":1,"ver":"0.1.0","drop":0,"m":{"cpu":3.5,"mem":41.2,"temp":48.3}}'
    )
    msg = Outgoing("hb", ts=1.0)
    udp_us: list[float] = []
    out_us: list[float] = []

    def drain() -> None:
        sink.setblocking(False)
        try:
            while True:
                sink.recv(2048)
        except BlockingIOError:
            pass

    for _ in range(rounds):
        for output, results in ((udp, udp_us), (out, out_us)):
            t0 = time.perf_counter()
            for _ in range(messages):
                output.send(payload, msg)
            results.append((time.perf_counter() - t0) / messages * 1e6)
            drain()
            time.sleep(settle)
    drops = {"udp": udp.tally.dropped, "output": out.tally.dropped, "sent": out.tally.sent}
    out.close(timeout=1)
    udp.close()
    sink.close()
    return statistics.median(udp_us), statistics.median(out_us), drops


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=8.0, help="agent run time per RSS sample")
    ap.add_argument("--messages", type=int, default=3000, help="sends per round")
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, load {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        broker, port = start_broker(tmp)
        try:
            udp_out = (
                f'[[outputs.udp]]\nhost = "127.0.0.1"\nport = {free_port(socket.SOCK_DGRAM)}\n'
            )
            mqtt_out = f'[[outputs.mqtt]]\nhost = "127.0.0.1"\nport = {port}\n'
            rss_udp = agent_rss(tmp, udp_out, args.seconds)
            rss_mqtt = agent_rss(tmp, mqtt_out, args.seconds)
            print(f"agent RSS, one UDP output (baseline): {rss_udp:6.1f} MiB")
            print(f"agent RSS, one MQTT output:           {rss_mqtt:6.1f} MiB"
                  f"  (+{rss_mqtt - rss_udp:.1f} MiB, ratio {rss_mqtt / rss_udp:.2f}; "
                  f"target <= 28 MB)")  # fmt: skip
            udp_us, mqtt_us, drops = send_cost(port, args.messages, args.rounds)
            print(f"UdpOutput.send  (baseline): {udp_us:6.2f} us/message")
            print(f"MqttOutput.send:            {mqtt_us:6.2f} us/message  "
                  f"ratio {mqtt_us / udp_us:.2f} (target <= 4)")  # fmt: skip
            print(f"drops during the cost runs: {drops}")
        finally:
            broker.terminate()
            broker.wait(5)


if __name__ == "__main__":
    main()
