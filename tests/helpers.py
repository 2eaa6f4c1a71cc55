"""Test helpers shared by every test module: free ports, a UDP receiver, agent processes."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_PORTS = random.Random()


def free_port(kind: int = socket.SOCK_DGRAM, host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now, below the kernel's ephemeral range.

    Not one the kernel picks: a test often starts a peer on the port later, while a
    client already retries it, and a client's own port comes from the ephemeral range.
    When it drew the very port it connects to, Linux connected the socket to itself
    (a TCP simultaneous open), and the peer then failed with "Address already in use"
    (seen on CI: mosquitto started for a receiver that was already retrying).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    low = max(1025, min(_ephemeral_low(), 65536) - 1)
    for _ in range(200):
        port = _PORTS.randrange(max(1024, low - 12000), low)
        with socket.socket(family, kind) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket(family, kind) as s:  # crowded: let the kernel pick
        s.bind((host, 0))
        return int(s.getsockname()[1])


class FakeClock:
    """A clock the test moves by hand (`clock.now += 5`); pass it as `clock=` or `wall=`."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Seq:
    """A seq stream like the Emitter's: 0, 1, 2... and `n` counts how often it was drawn."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self) -> int:
        self.n += 1
        return self.n - 1


def wait_until(pred: Callable[[], Any], timeout: float = 5.0, every: float = 0.02) -> Any:
    """Poll `pred` until it returns something truthy; fail the test on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(every)


class UdpReceiver:
    """A real UDP socket on loopback that keeps every datagram it receives."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind((host, port))
        self.host = host
        self.port: int = self.sock.getsockname()[1]
        self.datagrams: list[bytes] = []

    def poll(self, timeout: float = 0.0) -> list[bytes]:
        """Read what has arrived (waiting up to `timeout` for the first one)."""
        if timeout > 0:
            self.sock.settimeout(timeout)  # blocking, but never longer than timeout
        else:
            self.sock.setblocking(False)
        got = []
        try:
            while True:
                got.append(self.sock.recv(65535))
                self.sock.setblocking(False)
        except (BlockingIOError, socket.timeout):
            pass
        self.datagrams.extend(got)
        return got

    def messages(self) -> list[dict[str, Any]]:
        self.poll()
        return [json.loads(d) for d in self.datagrams]

    def wait_for(
        self, pred: Callable[[list[dict[str, Any]]], bool], timeout: float = 5.0
    ) -> list[dict[str, Any]]:
        """Wait until `pred(all messages so far)` holds; return the messages."""
        deadline = time.monotonic() + timeout
        while True:
            self.poll(0.05)
            msgs = [json.loads(d) for d in self.datagrams]
            if pred(msgs):
                return msgs
            if time.monotonic() > deadline:
                kinds = [m.get("k") for m in msgs]
                raise AssertionError(f"not received within {timeout} s; got {len(msgs)}: {kinds}")

    def close(self) -> None:
        self.sock.close()


def subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("NOTIFY_SOCKET", None)
    env.pop("WATCHDOG_USEC", None)
    env.update(extra)
    return env


def fleetbeat_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "fleetbeat", *args]


def run_cli(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run `fleetbeat ARGS` to completion in a real subprocess."""
    return subprocess.run(
        fleetbeat_cmd(*args),
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=subprocess_env(),
    )


class AgentProcess:
    """A real `fleetbeat agent` subprocess with a config written to `tmp_path`."""

    def __init__(
        self, tmp_path: Path, config: str, *args: str, env: Optional[dict[str, str]] = None
    ) -> None:
        self.config_path = tmp_path / "agent.toml"
        self.config_path.write_text(config)
        self.log_path = tmp_path / "agent.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            fleetbeat_cmd("agent", "-c", str(self.config_path), *args),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env or subprocess_env(),
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text()

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 5.0) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)
        self._log.close()


def agent_toml(port: int, *, host: str = "127.0.0.1", interval: str = "0.1s", extra: str = "",
               system: str = 'interval = "0.1s"', device: str = "test-dev") -> str:  # fmt: skip
    """A small agent config sending fast to a loopback receiver."""
    return f"""
[agent]
device_id = "{device}"
heartbeat_interval = "{interval}"
jitter = 0

[sensors.system]
{system}

[[outputs.udp]]
host = "{host}"
port = {port}
{extra}
"""
