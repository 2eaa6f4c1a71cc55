"""Helpers for collector tests: a real collector subprocess and a wire v1 test sender."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any, Optional

from fleetbeat import wire
from helpers import fleetbeat_cmd, free_port, subprocess_env, wait_until


def collector_toml(state_dir: Path, udp_port: int, *, http_port: int = 0, extra: str = "",
                   host: str = "127.0.0.1") -> str:  # fmt: skip
    """A collector config on loopback with fast checks and flushes."""
    udp = f"[{host}]:{udp_port}" if ":" in host else f"{host}:{udp_port}"
    return f"""
[collector]
udp_listen = "{udp}"
http_listen = "127.0.0.1:{http_port}"
state_dir = "{state_dir}"
check_interval = "0.02s"
flush_interval = "0.2s"
{extra}
"""


class CollectorProcess:
    """A real `fleetbeat collector` subprocess; `udp_port` is where it listens."""

    def __init__(self, tmp_path: Path, *, udp_port: Optional[int] = None, extra: str = "",
                 state_dir: Optional[Path] = None, name: str = "collector",
                 udp_host: str = "127.0.0.1") -> None:  # fmt: skip
        self.udp_port = udp_port or free_port()
        self.state_dir = state_dir or tmp_path / "state"
        self.config_path = tmp_path / f"{name}.toml"
        self.config_path.write_text(
            collector_toml(self.state_dir, self.udp_port, extra=extra, host=udp_host)
        )
        self.log_path = tmp_path / f"{name}.log"
        self._log = open(self.log_path, "a")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            fleetbeat_cmd("collector", "-c", str(self.config_path)),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=subprocess_env(),
        )
        # started: receiving and serving HTTP (logged in that order), or dead
        wait_until(lambda: "dashboard and API on" in self.log() or self.proc.poll() is not None)
        assert self.proc.poll() is None, self.log()

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text()

    def http_url(self) -> Optional[str]:
        for line in self.log().splitlines():
            if "http://" in line:
                return line[line.index("http://") :].split()[0].rstrip("/")
        return None

    def terminate(self, timeout: float = 10.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self._log.close()

    def api(self, path: str) -> Any:
        url = self.http_url()
        assert url, "no HTTP server in the collector log"
        with urllib.request.urlopen(url + path, timeout=5) as resp:  # noqa: S310 - loopback
            return json.loads(resp.read())


class Broker:
    """A real mosquitto broker on a loopback port of its own."""

    def __init__(self, tmp_path: Path, port: int) -> None:
        self.port = port
        conf = tmp_path / f"mosquitto-{port}.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        self.log = tmp_path / f"mosquitto-{port}.log"
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=log,
                                         stderr=subprocess.STDOUT)  # fmt: skip
        wait_until(self._listening, timeout=10)

    def _listening(self) -> bool:
        assert self.proc.poll() is None, self.log.read_text()
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
        except OSError:
            return False
        return True

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)


class Sender:
    """Sends hand-made wire v1 messages over UDP, with whatever seq a test wants."""

    def __init__(self, port: int, *, dev: str = "sender-1", run: str = "0123456789abcdef",
                 interval: float = 0.1, host: str = "127.0.0.1") -> None:  # fmt: skip
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.dest = (host, port)
        self.dev = dev
        self.run = run
        self.interval = interval

    def message(self, seq: int, kind: str = "hb", **fields: Any) -> dict[str, Any]:
        msg: dict[str, Any] = {"v": 1, "k": kind, "dev": self.dev, "run": self.run,
                               "seq": seq, "ts": time.time()}  # fmt: skip
        if kind == "hb":
            msg.update({"int": self.interval, "bt": 1764150000, "ver": "test", "drop": 0,
                        "tags": {"site": "lab"}, "m": {"cpu": 1.5}})  # fmt: skip
        if kind == "rd":
            msg.update({"src": "test", "m": {"x": 1.0}})
        msg.update(fields)
        return msg

    def send(self, seq: int, kind: str = "hb", **fields: Any) -> None:
        self.sock.sendto(wire.dumps(self.message(seq, kind, **fields)), self.dest)

    def send_raw(self, data: bytes) -> None:
        self.sock.sendto(data, self.dest)

    def close(self) -> None:
        self.sock.close()


def stored_devices(state_dir: Path) -> dict[str, dict[str, Any]]:
    """The devices a collector has written to its store, as contract dicts (not re-judged)."""
    from fleetbeat.collector.config import CollectorSection
    from fleetbeat.collector.fleet import Fleet
    from fleetbeat.collector.store import Store

    if not (state_dir / "fleetbeat.db").exists():
        return {}
    store = Store(str(state_dir), retention=10 * 86400.0)
    try:
        rows, _ = store.load(time.time())
    finally:
        store.close()
    fleet = Fleet(CollectorSection(), clock=lambda: 0.0)  # time 0: nobody judged silent
    fleet.restore(rows, [])
    return {d["id"]: d for d in fleet.devices()}


def stored_events(state_dir: Path) -> list[dict[str, Any]]:
    """The events a collector has written to its store, oldest first."""
    from fleetbeat.collector.store import Store

    if not (state_dir / "fleetbeat.db").exists():
        return []
    store = Store(str(state_dir), retention=10 * 86400.0)
    try:
        return store.load(time.time())[1]
    finally:
        store.close()
