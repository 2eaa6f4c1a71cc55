"""The Alertmanager notifier against Debian's prometheus-alertmanager, a real child process."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from alert_helpers import alerts_config, device, event
from test_notifiers import notifiers

from fleetbeat.collector.alerts import Alerts
from helpers import free_port, wait_until

BINARY = "/usr/bin/prometheus-alertmanager"
CONFIG = """
route:
  receiver: "null"
  group_wait: 1s
receivers:
  - name: "null"
"""


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"Alertmanager is needed under CI: {reason}")
    pytest.skip(reason)


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback
        return json.loads(resp.read() or b"null")


@pytest.fixture(scope="session")
def alertmanager() -> Iterator[str]:
    """One Alertmanager for the session on a free loopback port; its base URL."""
    if not os.access(BINARY, os.X_OK):
        _unavailable(f"{BINARY} is missing (apt-get install prometheus-alertmanager)")
    tmp = tempfile.mkdtemp(prefix="fleetbeat-am-")
    cfg = os.path.join(tmp, "alertmanager.yml")
    with open(cfg, "w") as f:
        f.write(CONFIG)
    port = free_port(socket.SOCK_STREAM)
    log = open(os.path.join(tmp, "log"), "wb")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen([BINARY, f"--config.file={cfg}", f"--storage.path={tmp}/data",
                             f"--web.listen-address=127.0.0.1:{port}",
                             "--cluster.listen-address="],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if proc.poll() is not None:
            return True
        try:
            with urllib.request.urlopen(url + "/-/ready", timeout=1) as r:  # noqa: S310
                return r.status == 200
        except OSError:
            return False

    try:
        wait_until(ready, timeout=20, every=0.1)
    except AssertionError:
        proc.kill()
        _unavailable("Alertmanager did not become ready in 20 s")
    if proc.poll() is not None:
        log.close()
        with open(os.path.join(tmp, "log"), errors="replace") as f:
            _unavailable(f"Alertmanager exited: {f.read()[-500:]}")
    yield url
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()
    shutil.rmtree(tmp, ignore_errors=True)


def test_alerts_reach_alertmanager_then_resolve(alertmanager):
    """A down device is listed by /api/v2/alerts with its labels, and gone once resolved."""
    ((_, am),) = notifiers({"type": "alertmanager", "url": alertmanager})
    a = Alerts(alerts_config(group_wait="0s", group_interval="1s"))
    a.evaluate([device("pi-am-01", site="barn", room="loft-2")], 0.0)
    now = time.time() - 10  # the resolve, at now + 1, lies in the past for Alertmanager
    a.observe([event(now, "pi-am-01", "late", "down", "missed_heartbeats")], now)
    (firing,) = a.tick(now)
    assert am.send(firing).status == "sent"

    def listed() -> list[Any]:
        return [
            x
            for x in _get(alertmanager + "/api/v2/alerts")
            if x["labels"].get("device") == "pi-am-01"
        ]

    (found,) = wait_until(listed)
    assert found["labels"] == {"alertname": "down", "device": "pi-am-01", "kind": "down",
                               "severity": "critical", "site": "barn", "room": "loft-2"}  # fmt: skip
    assert found["status"]["state"] == "active"
    assert found["annotations"]["summary"] == "1 device down at site=barn: pi-am-01"
    a.observe([event(now + 1, "pi-am-01", "down", "up", "heartbeat")], now + 1)
    (resolved,) = a.tick(now + 2)
    assert am.send(resolved).status == "sent"
    wait_until(lambda: all(x["status"]["state"] != "active" for x in listed()))  # or absent
