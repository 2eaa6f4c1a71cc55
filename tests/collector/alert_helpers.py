"""Helpers for the alert tests: config records, device dicts and events as the fleet makes
them, and a local HTTP server that answers as scripted and keeps every request."""

from __future__ import annotations

import http.server
import json
import threading
from typing import Any, Optional

from fleetbeat.collector.alerts_config import AlertsSection
from fleetbeat.config.schema import Problems, load_table


def record(cls: type[Any], table: dict[str, Any], path: str = "t") -> Any:
    """A config record from a TOML-like table; fails the test on any problem."""
    problems = Problems("test")
    rec = load_table(cls, table, path, problems)
    assert not problems, problems.items
    return rec


def alerts_config(**table: Any) -> AlertsSection:
    return record(AlertsSection, table, "collector.alerts")  # type: ignore[no-any-return]


def device(dev: str, state: str = "up", *, since: float = 0.0, loss: float = 0.0,
           metrics: Optional[dict[str, float]] = None, **tags: str) -> dict[str, Any]:  # fmt: skip
    """A device dict as `Fleet.devices()` gives it (the keys the engine reads)."""
    return {"id": dev, "state": state, "state_since": since, "tags": tags,
            "metrics": metrics or {}, "recent_loss_pct": loss}  # fmt: skip


def event(t: float, dev: str, frm: Optional[str], to: str, reason: str) -> dict[str, Any]:
    return {"time": t, "device": dev, "from": frm, "to": to, "reason": reason}


class Hook:
    """A real HTTP server on 127.0.0.1: answers each request with the next scripted status
    (the last one repeats), optionally hanging first; keeps (method, path, headers, body)."""

    def __init__(self, statuses: tuple[int, ...] = (200,), *, hang: bool = False) -> None:
        self.statuses = list(statuses)
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.release = threading.Event()
        self.hang = hang
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                size = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(size) if size else b""
                if hook.hang:
                    hook.release.wait(30)
                with lock:
                    hook.requests.append((self.command, self.path, dict(self.headers), body))
                    status = hook.statuses.pop(0) if len(hook.statuses) > 1 else hook.statuses[0]
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            do_POST = do_GET = _answer

            def log_message(self, *args: Any) -> None:
                pass

        lock = threading.Lock()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def bodies(self) -> list[Any]:
        return [json.loads(body) for _, _, _, body in self.requests]

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
