"""The collector's HTTP side: dashboard, JSON API, Prometheus `/metrics`, `/healthz`.

Stdlib only (`http.server.ThreadingHTTPServer` in a daemon thread); every
request reads the fleet through its thread-safe methods, so serving never
blocks receiving. Routes:

    GET /                      dashboard (one self-contained page, no external assets)
    GET /api/devices           ?state=down,late  ?tag=site:kitchen (repeatable, all must match)
    GET /api/devices/{id}      one device; 404 with a JSON error when unknown
    GET /api/events            ?since=<epoch s>  ?limit=N (default 1000)
    GET /api/stats             the collector's own counters
    GET /metrics               Prometheus text format 0.0.4
    GET /healthz               200 {"status": "ok"} while the collector serves

Answers of 1,400 bytes or more are gzip-compressed when the client accepts it.
"""

from __future__ import annotations

import gzip
import ipaddress
import json
import logging
import math
import socket
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Optional, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from fleetbeat.collector.config import split_hostport
from fleetbeat.collector.fleet import STATES
from fleetbeat.collector.metrics import CONTENT_TYPE, Exposition
from fleetbeat.errors import FleetbeatError
from fleetbeat.logutil import RateLimitedLog

log = logging.getLogger(__name__)

DEFAULT_LISTEN = "127.0.0.1:9747"
DASHBOARD = Path(__file__).with_name("dashboard.html")
MAX_EVENTS = 10_000
GZIP_MIN = 1400  # bytes: smaller answers fit one packet anyway


class Fleet(Protocol):
    """The read side of collector.fleet.Fleet that the HTTP server uses."""

    def devices(self) -> list[dict[str, Any]]: ...

    def device(self, device_id: str) -> Optional[dict[str, Any]]: ...

    def events(self, since: float = 0, limit: int = 1000) -> list[dict[str, Any]]: ...

    def stats(self) -> dict[str, Any]: ...


class BadRequest(Exception):
    """A query parameter is invalid; the message goes back to the client with a 400."""


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


def filter_devices(
    devices: list[dict[str, Any]], states: list[str], tags: list[str]
) -> list[dict[str, Any]]:
    """Devices in any of `states` (all when empty) that carry every `key:value` in `tags`.

    A tag filter without a colon (`site`) matches devices that have that tag key.
    """
    wanted: set[str] = set()
    for item in states:
        wanted.update(s.strip() for s in item.split(",") if s.strip())
    unknown = sorted(wanted - set(STATES))
    if unknown:
        raise BadRequest(f"unknown state {unknown[0]!r}; expected one of {', '.join(STATES)}")
    pairs: list[tuple[str, Optional[str]]] = []
    for item in tags:
        key, sep, value = item.partition(":")
        if not key:
            raise BadRequest(f"tag filter {item!r}: expected KEY:VALUE or KEY")
        pairs.append((key, value if sep else None))

    def keep(dev: dict[str, Any]) -> bool:
        if wanted and dev.get("state") not in wanted:
            return False
        dev_tags = dev.get("tags") or {}
        for key, value in pairs:
            if key not in dev_tags or (value is not None and str(dev_tags[key]) != value):
                return False
        return True

    return [d for d in devices if keep(d)]


def count_states(devices: list[dict[str, Any]]) -> dict[str, int]:
    counts = dict.fromkeys(STATES, 0)
    for dev in devices:
        state = str(dev.get("state"))
        counts[state] = counts.get(state, 0) + 1
    return counts


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # close() must not wait for idle keep-alive connections
    fleet: Fleet
    exposition: Exposition
    dashboard: bytes
    errors: RateLimitedLog
    loopback_only: bool  # bound to loopback: only loopback Host names are served


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive: the dashboard polls
    server_version = "fleetbeat"
    timeout = 30  # an idle or stalled client frees its thread after this long

    def do_GET(self) -> None:
        self._dispatch(head=False)

    def do_HEAD(self) -> None:
        self._dispatch(head=True)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def _dispatch(self, *, head: bool) -> None:
        url = urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        query = parse_qs(url.query)
        try:
            host = self.headers.get("Host")  # browsers always send it; HTTP/1.0 tools may not
            if self.server.loopback_only and host is not None and not _loopback_host(host):
                # DNS rebinding: a web page whose name now points at 127.0.0.1 must not
                # read the fleet through a browser on this machine.
                status, body, headers = _json(
                    HTTPStatus.FORBIDDEN,
                    {"error": "bound to loopback: use localhost or a loopback address"},
                )
            else:
                status, body, headers = self._route(path, query)
        except BadRequest as err:
            status, body, headers = _json(HTTPStatus.BAD_REQUEST, {"error": str(err)})
        except Exception as err:
            self.server.errors.log(logging.ERROR, "http", "HTTP %s failed: %r", path, err)
            status, body, headers = _json(
                HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error; see collector log"}
            )
        if len(body) >= GZIP_MIN and "gzip" in self.headers.get("Accept-Encoding", "").lower():
            body = compress(body)
            headers = {**headers, "Content-Encoding": "gzip"}
        try:
            self.send_response(status)
            self.send_header("Vary", "Accept-Encoding")
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.end_headers()
            if not head:
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _route(self, path: str, query: dict[str, list[str]]) -> tuple[int, bytes, dict[str, str]]:
        fleet = self.server.fleet
        if path in ("/", "/index.html"):
            return HTTPStatus.OK, self.server.dashboard, _DASHBOARD_HEADERS
        if path == "/api/devices":
            devices = filter_devices(fleet.devices(), query.get("state", []), query.get("tag", []))
            devices.sort(key=lambda d: str(d.get("id")))
            return _json(
                HTTPStatus.OK,
                {
                    "time": time.time(),
                    "count": len(devices),
                    "counts": count_states(devices),
                    "devices": devices,
                },
            )
        if path.startswith("/api/devices/"):
            ident = unquote(path[len("/api/devices/") :])
            dev = fleet.device(ident)
            if dev is None:
                return _json(HTTPStatus.NOT_FOUND, {"error": "unknown device", "id": ident})
            return _json(HTTPStatus.OK, {"time": time.time(), "device": dev})
        if path == "/api/events":
            since = _number_param(query, "since", 0.0)
            limit = int(_number_param(query, "limit", 1000))
            if not 1 <= limit <= MAX_EVENTS:
                raise BadRequest(f"limit: expected 1 to {MAX_EVENTS}, got {limit}")
            events = fleet.events(since=since, limit=limit)
            return _json(HTTPStatus.OK, {"time": time.time(), "events": events})
        if path == "/api/stats":
            return _json(HTTPStatus.OK, {"time": time.time(), "stats": fleet.stats()})
        if path == "/metrics":
            body = self.server.exposition.text().encode()
            return HTTPStatus.OK, body, {"Content-Type": CONTENT_TYPE}
        if path == "/healthz":
            return _json(HTTPStatus.OK, {"status": "ok", "time": time.time()})
        return _json(HTTPStatus.NOT_FOUND, {"error": "not found", "path": path})


# The page is self-contained: inline script and style, data from this origin only.
_DASHBOARD_HEADERS = {
    "Content-Type": "text/html; charset=utf-8",
    "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; "
    "style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
}


def _loopback_host(host_header: str) -> bool:
    """True for `localhost`, `127.0.0.1:9747`, `[::1]:9747` and the like."""
    host = host_header.strip().lower()
    if host.startswith("["):
        host = host[1 : host.find("]")] if "]" in host else host
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    if host in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _json(status: int, obj: Any) -> tuple[int, bytes, dict[str, str]]:
    return status, json_bytes(obj), {"Content-Type": "application/json"}


def _number_param(query: dict[str, list[str]], name: str, default: float) -> float:
    values = query.get(name)
    if not values:
        return default
    try:
        value = float(values[-1])
    except ValueError:
        raise BadRequest(f"{name}: expected a number, got {values[-1]!r}") from None
    if not math.isfinite(value):
        raise BadRequest(f"{name}: expected a finite number, got {values[-1]!r}")
    return value


class HttpServer:
    """A running HTTP server; `close()` stops it and frees the port."""

    def __init__(self, fleet: Fleet, *, host: str = "127.0.0.1", port: int = 9747) -> None:
        cls = _Server6 if ":" in host else _Server
        try:
            server = cls((host, port), _Handler)
        except OSError as err:
            raise FleetbeatError(f"cannot serve HTTP on {host}:{port}: {err.strerror}") from err
        server.fleet = fleet
        server.exposition = Exposition(fleet)
        server.dashboard = DASHBOARD.read_bytes()
        server.errors = RateLimitedLog(log)
        server.loopback_only = _loopback_host(host)
        self._server = server
        self.host = host
        self.port: int = server.server_address[1]
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="http", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.host in ("0.0.0.0", "::"):
            host = "127.0.0.1" if self.host == "0.0.0.0" else "[::1]"
        return f"http://{host}:{self.port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def start(fleet: Fleet, config: Any) -> HttpServer:
    """Serve `fleet` on `config.http_listen` (default 127.0.0.1:9747) in a daemon thread."""
    host, port = parse_listen(getattr(config, "http_listen", DEFAULT_LISTEN))
    server = HttpServer(fleet, host=host, port=port)
    log.info("dashboard and API on %s/", server.url)
    return server
