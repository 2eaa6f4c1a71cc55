"""MQTT test helpers: a mosquitto process, a recording subscriber, agent configs."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import threading
from pathlib import Path
from typing import Any, Callable, Optional

from helpers import free_port, wait_until

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


class Broker:
    """A mosquitto process on 127.0.0.1 that a test can stop, freeze and restart."""

    def __init__(self, workdir: Path, *, users: Optional[dict[str, str]] = None,
                 tls: Optional[dict[str, Path]] = None, conf: str = "") -> None:  # fmt: skip
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port(socket.SOCK_STREAM)
        self.log_path = self.dir / "mosquitto.log"
        lines = [f"listener {self.port} 127.0.0.1", "persistence false", "log_dest stderr",
                 "log_type error", "log_type warning", "log_type notice",
                 "log_type information", "user root"]  # fmt: skip
        if users:
            pwfile = self.dir / "passwd"
            pwfile.write_text("")
            for user, password in users.items():
                subprocess.run(["mosquitto_passwd", "-b", str(pwfile), user, password],
                               check=True, capture_output=True)  # fmt: skip
            pwfile.chmod(0o600)
            lines += ["allow_anonymous false", f"password_file {pwfile}"]
        else:
            lines.append("allow_anonymous true")
        if tls:
            lines += [f"cafile {tls['ca']}", f"certfile {tls['cert']}", f"keyfile {tls['key']}"]
        if conf:
            lines.append(conf)
        self.conf = self.dir / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: Optional[subprocess.Popen[bytes]] = None

    def start(self) -> Broker:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=self._log,
                                     stderr=subprocess.STDOUT)  # fmt: skip
        wait_until(self._listening, timeout=5)
        return self

    def _listening(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"mosquitto exited: {self.log_path.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
        except OSError:
            return False
        return True

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a frozen broker cannot handle SIGTERM
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            self._log.close()
        self.proc = None

    def freeze(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


class Subscriber:
    """A paho client subscribed to `topic` that records (topic, payload, retained)."""

    def __init__(self, port: int, topic: str = "#", **kw: Any) -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        if kw.get("username"):
            self.client.username_pw_set(kw["username"], kw.get("password"))
        if kw.get("ca"):
            self.client.tls_set(ca_certs=str(kw["ca"]))
        self.subscribed = threading.Event()
        self.client.on_connect = lambda c, *_: c.subscribe(topic, 0)
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        assert self.subscribed.wait(5), "subscriber did not subscribe"

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self._lock:
            self.messages.append((msg.topic, msg.payload, bool(msg.retain)))

    def snapshot(self) -> list[tuple[str, bytes, bool]]:
        with self._lock:
            return list(self.messages)

    def on(self, topic: str) -> list[bytes]:
        return [p for t, p, _ in self.snapshot() if t == topic]

    def json_on(self, topic: str) -> list[dict[str, Any]]:
        return [json.loads(p) for p in self.on(topic)]

    def wait_for(self, pred: Callable[[list[tuple[str, bytes, bool]]], Any],
                 timeout: float = 5.0) -> Any:  # fmt: skip
        return wait_until(lambda: pred(self.snapshot()), timeout=timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def mqtt_toml(port: int, *, interval: str = "0.1s", extra: str = "", tls: str = "",
              keepalive: str = "2s",
              system: str = 'interval = "0.1s"\ninclude = ["cpu", "mem"]',
              device: str = "test-dev", outputs: str = "",
              agent_extra: str = "") -> str:  # fmt: skip
    """An agent config with one MQTT output to a loopback broker."""
    return f"""
[agent]
device_id = "{device}"
heartbeat_interval = "{interval}"
jitter = 0
{agent_extra}

[sensors.system]
{system}

[[outputs.mqtt]]
host = "127.0.0.1"
port = {port}
keepalive = "{keepalive}"
reconnect_min = "0.1s"
reconnect_max = "0.5s"
{extra}
{tls}
{outputs}
"""
