"""Helpers for the HTTP-side tests: a real Fleet served by the real HTTP server, fed wire v1."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

from fleetbeat import wire
from fleetbeat.collector import http
from fleetbeat.collector.alerting import Alerting
from fleetbeat.collector.auth import ApiToken
from fleetbeat.collector.config import parse_collector_config
from fleetbeat.collector.fleet import Fleet
from helpers import FakeClock

RUN_A = "0123456789abcdef"
RUN_B = "fedcba9876543210"


class ServedFleet:
    """A real Fleet behind a real HTTP server on 127.0.0.1 (kernel-picked port)."""

    def __init__(self, listen: str = "127.0.0.1:0", **collector: Any) -> None:
        self.clock = FakeClock(time.time())  # real time: the API stamps answers with it
        self.config = parse_collector_config(
            {"collector": {"http_listen": listen, **collector}}, "test"
        )
        self.fleet = Fleet(self.config.collector, clock=self.clock, monotonic=self.clock)
        self.server = http.start(self.fleet, self.config)
        self.url = self.server.url

    def send(self, data: bytes, port: int = 40000) -> None:
        """Hand one payload to the fleet as the UDP receiver does."""
        self.fleet.receive(data, ("127.0.0.1", port))

    def hb(
        self,
        dev: str,
        seq: int,
        *,
        run: str = RUN_A,
        interval: float = 1.0,
        tags: Optional[Mapping[str, str]] = None,
        kind: str = "hb",
        port: int = 40000,
    ) -> None:
        """A heartbeat (or `bye`) from `dev`, as an agent would build it."""
        msg: dict[str, Any] = {
            "v": 1, "k": kind, "dev": dev, "run": run, "seq": seq, "ts": self.clock.now,
        }  # fmt: skip
        if kind == "hb":
            msg.update(int=interval, bt=1_764_000_000, ver="0.1.0", drop=0, m={"cpu": 1.5})
            if tags:
                msg["tags"] = dict(tags)
        self.send(wire.dumps(msg), port)

    def advance(self, seconds: float) -> None:
        """Let time pass and run the liveness check, as the service's tick does."""
        self.clock.now += seconds
        self.fleet.check()

    def close(self) -> None:
        self.server.close()


def get(url: str, headers: Optional[dict[str, str]] = None) -> tuple[int, dict[str, str], bytes]:
    """GET `url`; (status, headers, body) for errors too."""
    req = urllib.request.Request(url, headers=headers or {})  # noqa: S310 - http on loopback
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=10) as resp:
            return resp.status, dict(resp.headers.items()), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers.items()), err.read()


def get_json(url: str) -> tuple[int, Any]:
    status, headers, body = get(url)
    assert headers["Content-Type"] == "application/json"
    return status, json.loads(body)


class Served(ServedFleet):
    """A real Fleet with its Alerting behind a real HTTP server that takes writes."""

    def __init__(self, tmp_path: Path, notify: Optional[list[dict[str, Any]]] = None) -> None:
        super().__init__(down_after=3, state_dir=str(tmp_path))
        self.server.close()  # the plain one: this one has alerting and a token
        section = parse_collector_config(
            {"collector": {"state_dir": str(tmp_path), "notify": notify or [],
                           "alerts": {"group_wait": "0s"}}}, "t"
        ).collector  # fmt: skip
        self.alerting = Alerting(section, self.fleet, healthy=lambda: True)
        self.token = ApiToken(str(tmp_path / "api-token"))
        self.server = http.start(self.fleet, self.config, alerting=self.alerting, token=self.token)
        self.url = self.server.url
        self.secret = (tmp_path / "api-token").read_text().strip()

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secret}", "Content-Type": "application/json"}

    def close(self) -> None:
        super().close()
        self.alerting.close()
