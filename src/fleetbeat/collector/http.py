"""The collector's HTTP side: dashboard, JSON API, Prometheus `/metrics`, `/healthz`.

Stdlib only. The routes run on `collector.httpserver.BoundedServer`: one
selector thread holds every connection, 4 worker threads answer, at most 1,024
connections (the oldest idle one is closed for a newcomer), headers within 5 s,
so a local user holding connections open cannot take the dashboard, the API,
`/metrics` or `/healthz` down. Every request reads the fleet through its
thread-safe methods, so serving never blocks receiving. Routes (GET and HEAD;
other methods get 405):

    GET /                      dashboard (one self-contained page, no external assets)
    GET /api/devices           ?state=down,late  ?tag=site:kitchen (repeatable, all must match)
                               ?fields= ?limit= ?offset=; each device with its availability
    GET /api/devices/{id}      one device (with its availability); 404 JSON error when unknown
    /api/devices/{id}/history, /api/timelines, /api/fleet/history, /api/availability:
                               see `fleetbeat.collector.http_history` (read from the store)
    GET /api/events            ?since=<epoch s>  ?limit=N (default 1000)
    GET /api/stats             the collector's own counters
    GET /metrics               Prometheus text format 0.0.4
    GET /healthz               200 {"status": "ok"}, or 503 {"status": "error", "reason": ...}
                               while the `health` callable returns a reason
    /api/alerts, /api/silences  see `fleetbeat.collector.http_alerts` (when alerting runs)

Every write (POST, DELETE...) passes `fleetbeat.collector.http_write.WriteGuard` first:
the API token, the origin, the content type.

Answers of 1,400 bytes or more are gzip-compressed when the client accepts it.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import logging
import math
import re
import time
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional
from urllib.parse import parse_qs, unquote, urlsplit

from fleetbeat.collector.config import split_hostport
from fleetbeat.collector.http_alerts import AlertsApi
from fleetbeat.collector.http_devices import with_devices
from fleetbeat.collector.http_history import HistoryApi
from fleetbeat.collector.http_params import BadRequest, number
from fleetbeat.collector.http_write import BadBody, Reply, WriteGuard
from fleetbeat.collector.httpserver import (
    DEFAULT_LIMITS,
    BoundedServer,
    Limits,
    Request,
    Response,
)
from fleetbeat.collector.metrics import CONTENT_TYPE, Exposition, render_alerting
from fleetbeat.collector.store_reader import StoreReader
from fleetbeat.collector.view import FleetView
from fleetbeat.errors import FleetbeatError
from fleetbeat.logutil import RateLimitedLog
from fleetbeat.netaddr import is_loopback

if TYPE_CHECKING:
    from fleetbeat.collector.alerting import Alerting
    from fleetbeat.collector.auth import ApiToken

log = logging.getLogger(__name__)

DEFAULT_LISTEN = "127.0.0.1:9747"
DASHBOARD = Path(__file__).with_name("dashboard.html")
MAX_EVENTS = 10_000
GZIP_MIN = 1400  # bytes: smaller answers fit one packet anyway

Health = Callable[[], Optional[str]]  # None while healthy, else why not


def dashboard_page() -> bytes:
    """dashboard.html with its .css and .js files put in place of their `/* inline: NAME */`
    comments: one self-contained page (its CSP allows no other file)."""
    page = DASHBOARD.read_text(encoding="utf-8")
    for name in re.findall(r"/\* inline: ([\w.]+) \*/", page):
        text = DASHBOARD.with_name(name).read_text(encoding="utf-8")
        page = page.replace(f"/* inline: {name} */", text.replace("</", "<\\/"))
    return page.encode()


def dashboard_csp(page: bytes) -> str:
    """The page's Content-Security-Policy: its own <script> and <style> by their SHA-256,
    not 'unsafe-inline', so markup that ever got into the page could run nothing (an
    `onerror=` attribute, a second <script>)."""

    def hashes(tag: bytes) -> str:
        found = re.findall(b"<" + tag + b">(.*?)</" + tag + b">", page, re.S)
        return " ".join(
            "'sha256-" + base64.b64encode(hashlib.sha256(body).digest()).decode() + "'"
            for body in found
        )

    return (
        f"default-src 'none'; script-src {hashes(b'script')}; style-src {hashes(b'style')}; "
        "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )


def parse_listen(listen: str) -> tuple[str, int]:
    """`"127.0.0.1:9747"` or `"[::1]:9747"` -> (host, port)."""
    hostport = split_hostport(listen)
    if hostport is None:
        raise FleetbeatError(f"http_listen: expected HOST:PORT, got {listen!r}")
    return hostport


def json_bytes(obj: Any) -> bytes:
    """Strict JSON (NaN and inf become null: browsers and jq reject them)."""
    try:
        text = json.dumps(obj, separators=(",", ":"), allow_nan=False)
    except ValueError:
        text = json.dumps(_finite(obj), separators=(",", ":"), allow_nan=False)
    return text.encode()


def compress(body: bytes) -> bytes:
    """gzip at level 1: most of the gain (a fleet's JSON shrinks ~10x) for little CPU."""
    return gzip.compress(body, compresslevel=1)


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


class _App:
    """The routes: turns one Request into one Response; runs on the server's workers."""

    def __init__(
        self,
        fleet: FleetView,
        *,
        loopback_only: bool,
        health: Optional[Health],
        alerting: Optional[Alerting] = None,
        token: Optional[ApiToken] = None,
        store_path: Optional[str] = None,
    ) -> None:
        self.alerts = AlertsApi(alerting) if alerting is not None else None
        self.alerts = with_devices(self.alerts, fleet, health)  # DELETE /api/devices/{id}
        self.guard = WriteGuard(token)
        self.fleet = fleet
        self.history = HistoryApi(fleet, StoreReader(store_path) if store_path else None)
        self.exposition = Exposition(fleet, availability=self.history.tallies_or_none)
        self.dashboard = dashboard_page()
        self.dashboard_headers = {
            **_DASHBOARD_HEADERS,
            "Content-Security-Policy": dashboard_csp(self.dashboard),
        }
        self.loopback_only = loopback_only  # bound to loopback: only loopback Host names served
        self.health = health
        self.errors = RateLimitedLog(log)

    def __call__(self, req: Request) -> Response:
        url = urlsplit(req.target)
        path = url.path.rstrip("/") or "/"
        query = parse_qs(url.query)
        try:
            host = req.headers.get("host")  # browsers always send it; HTTP/1.0 tools may not
            writes = self.alerts.methods(path) if self.alerts is not None else ()
            if req.method not in ("GET", "HEAD", *writes):
                status, body, headers = _json(
                    HTTPStatus.METHOD_NOT_ALLOWED, {"error": f"{req.method} is not served here"}
                )
                headers["Allow"] = ", ".join(("GET", "HEAD", *writes))
            elif self.loopback_only and host is not None and not _loopback_host(host):
                # DNS rebinding: a web page whose name now points at 127.0.0.1 must not
                # read the fleet through a browser on this machine.
                status, body, headers = _json(
                    HTTPStatus.FORBIDDEN,
                    {"error": "bound to loopback: use localhost or a loopback address"},
                )
            elif req.method in writes and self.alerts is not None:
                refused = self.guard.refuse(req)  # every write: token, origin, content type
                status, body, headers = _reply(refused or self.alerts.write(req, path))
            else:
                status, body, headers = self._route(path, query)
        except (BadRequest, BadBody) as err:
            status, body, headers = _json(HTTPStatus.BAD_REQUEST, {"error": str(err)})
        except Exception as err:
            self.errors.log(logging.ERROR, "http", "HTTP %s failed: %r", path, err)
            status, body, headers = _json(
                HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error; see collector log"}
            )
        if len(body) >= GZIP_MIN and "gzip" in req.headers.get("accept-encoding", "").lower():
            body = compress(body)
            headers = {**headers, "Content-Encoding": "gzip"}
        return Response(status, body, {"Vary": "Accept-Encoding", **headers, **_ALWAYS})

    def _route(self, path: str, query: dict[str, list[str]]) -> tuple[int, bytes, dict[str, str]]:
        fleet = self.fleet
        if path in ("/", "/index.html"):
            return HTTPStatus.OK, self.dashboard, dict(self.dashboard_headers)
        answer = self.history.route(path, query)
        if answer is not None:
            return _json(*answer)
        if path.startswith("/api/devices/"):
            ident = unquote(path[len("/api/devices/") :])
            dev = fleet.device(ident)
            if dev is None:
                return _json(HTTPStatus.NOT_FOUND, {"error": "unknown device", "id": ident})
            dev["availability"] = self.history.device_availability(ident)
            return _json(HTTPStatus.OK, {"time": time.time(), "device": dev})
        if path == "/api/events":
            since = number(query, "since", 0.0)
            limit = int(number(query, "limit", 1000))
            if not 1 <= limit <= MAX_EVENTS:
                raise BadRequest(f"limit: expected 1 to {MAX_EVENTS}, got {limit}")
            events = fleet.events(since=since, limit=limit)
            return _json(HTTPStatus.OK, {"time": time.time(), "events": events})
        if path == "/api/stats":
            return _json(HTTPStatus.OK, {"time": time.time(), "stats": fleet.stats()})
        if path == "/metrics":
            stats = self.alerts.alerting.stats() if self.alerts is not None else None
            body = (self.exposition.text() + render_alerting(stats)).encode()
            return HTTPStatus.OK, body, {"Content-Type": CONTENT_TYPE}
        if path == "/healthz":
            return self._healthz()
        found = self.alerts.read(path, query) if self.alerts is not None else None
        if found is not None:
            return _reply(found)
        return _json(HTTPStatus.NOT_FOUND, {"error": "not found", "path": path})

    def _healthz(self) -> tuple[int, bytes, dict[str, str]]:
        try:
            reason = self.health() if self.health is not None else None
        except Exception as err:  # a failing check is itself a reason to look
            reason = f"health check failed: {err!r}"
        if reason is not None:
            return _json(
                HTTPStatus.SERVICE_UNAVAILABLE,
                {"status": "error", "reason": reason, "time": time.time()},
            )
        return _json(HTTPStatus.OK, {"status": "ok", "time": time.time()})


# On every answer: nothing cached (live data), nothing sniffed.
_ALWAYS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}

# The page is self-contained: inline script and style, data from this origin only.
_DASHBOARD_HEADERS = {
    "Content-Type": "text/html; charset=utf-8",
    "Referrer-Policy": "no-referrer",
}  # and the Content-Security-Policy of `dashboard_csp`


def _loopback_host(host_header: str) -> bool:
    """True for `localhost`, `127.0.0.1:9747`, `[::1]:9747` and the like (port or not)."""
    host = host_header.strip()
    parsed = split_hostport(host)
    return is_loopback(parsed[0] if parsed is not None else host)


def _json(status: int, obj: Any) -> tuple[int, bytes, dict[str, str]]:
    return status, json_bytes(obj), {"Content-Type": "application/json"}


def _reply(reply: Reply) -> tuple[int, bytes, dict[str, str]]:
    status, body, headers = _json(reply[0], reply[1])
    return status, body, {**headers, **reply[2]}


class HttpServer:
    """The dashboard and API, running on a BoundedServer; `close()` stops it and frees the port.

    Args:
        fleet: what the routes read.
        host, port: where to listen (port 0: the kernel picks).
        health: `() -> None` while healthy, else a short reason; `/healthz` answers 503 with it.
        limits: the server's threads, connection cap, timeouts and sizes.
        store_path: the store's database, read (read-only) by the history routes.
    """

    def __init__(
        self,
        fleet: FleetView,
        *,
        host: str = "127.0.0.1",
        port: int = 9747,
        health: Optional[Health] = None,
        limits: Limits = DEFAULT_LIMITS,
        alerting: Optional[Alerting] = None,
        token: Optional[ApiToken] = None,
        store_path: Optional[str] = None,
    ) -> None:
        app = _App(fleet, loopback_only=_loopback_host(host), health=health, alerting=alerting,
                   token=token, store_path=store_path)  # fmt: skip
        self._server = BoundedServer(app, host=host, port=port, limits=limits, name="http")
        self.host = host
        self.port: int = self._server.port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.host in ("0.0.0.0", "::"):
            host = "127.0.0.1" if self.host == "0.0.0.0" else "[::1]"
        return f"http://{host}:{self.port}"

    def stats(self) -> dict[str, int]:
        """The server's connection counters (see BoundedServer.stats)."""
        return self._server.stats()

    def close(self) -> None:
        self._server.close()


def start(
    fleet: FleetView,
    config: Any,
    *,
    health: Optional[Health] = None,
    alerting: Optional[Alerting] = None,
    token: Optional[ApiToken] = None,
    store_path: Optional[str] = None,
) -> HttpServer:
    """Serve `fleet` on `config.http_listen` (default 127.0.0.1:9747); writes need `token`;
    the history routes read the store at `store_path` (None: they answer 503)."""
    host, port = parse_listen(getattr(config, "http_listen", DEFAULT_LISTEN))
    server = HttpServer(fleet, host=host, port=port, health=health, alerting=alerting,
                        token=token, store_path=store_path)  # fmt: skip
    log.info("dashboard and API on %s/", server.url)
    return server
