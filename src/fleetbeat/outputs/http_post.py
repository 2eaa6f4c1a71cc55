"""HTTP output: fire-and-forget POSTs, one in flight at most, never retried.

One worker thread per output owns one keep-alive connection (`http_exchange`):
the name lookup, connect and TLS handshake happen only there. The sampling side
hands a payload over only while the worker is connected, and drops it
otherwise: while there is no connection, as the reason the last attempt failed
(`refused`, `unresolved`, `tls`, `timeout`...) or `not_connected`; as `busy`
when `max_pending` payloads (64 KiB at most) are in flight or waiting behind
the one in flight (DESIGN.md, delivery rule 1: a bounded queue that drops when
full). Why not one slot: a tick sends each sensor's reading and then the
heartbeat within microseconds, and with one slot the heartbeat would always be
`busy` whenever a sensor shares its interval (the default, 10 s). With
`max_pending = 1` the output keeps exactly one payload: busy means drop.

The worker counts what the server says: 2xx sent, `http_4xx` / `http_5xx` (and
`http_3xx`: redirects are not followed) dropped, the first status of each class
logged with the start of its body, at a limited rate; `timeout`, `reset`,
`bad_response` when the answer never came. A request is never sent twice: after
a failure the connection is made again (reconnect with backoff and jitter), the
message is gone. An idle connection that the server closes (keep-alive timeouts)
is noticed on the idle socket and made again before the next payload.

`format = "json"` sends one wire v1 message per request (`application/json`);
`influx` and the StatsD formats send the lines of one message per request
(`text/plain`). Set `Content-Type` in `headers` to say otherwise. The bearer
token comes from `token_file`, else `FLEETBEAT_HTTP_TOKEN`, else
`$CREDENTIALS_DIRECTORY/http-token`; it is read once, never logged.

```toml
[[outputs.http]]
url = "https://gw.lan/fleetbeat/ingest"  # http:// or https://, path (and query) included
format = "json"                  # "json" (wire v1, for the collector), "influx", "statsd"...
timeout = "2s"                   # connect, then each request's whole answer
max_payload = 65536              # bytes a request carries at most (256 .. 65536)
max_pending = 4                  # payloads in flight or waiting behind it (1 .. 16; 64 KiB)
# token_file = "/etc/fleetbeat/http-token"  # sent as "Authorization: Bearer <token>"
reconnect_min = "0.5s"           # first wait after a failed connect; doubles per failure ...
reconnect_max = "10s"            # ... up to this, each wait jittered down to half

[outputs.http.headers]           # sent with every request; values are never printed
X-Site = "kitchen"               # e.g. InfluxDB 2: Authorization = "Token ..."

[outputs.http.tls]               # https only, optional: without it, the system CAs
ca_file = "/etc/fleetbeat/ca.pem"  # CA bundle that signed the server's certificate
# cert_file = "/etc/fleetbeat/client.pem"  # client certificate, if the server asks for one
# key_file = "/etc/fleetbeat/client.key"   # its private key
```
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import random
import socket
import threading
import urllib.parse
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, Optional

from fleetbeat.config.frozen import dataclass
from fleetbeat.config.schema import INVALID, Problems, duration, integer, mapping, option, string
from fleetbeat.config.schema import table as subtable
from fleetbeat.config.secrets import PATH, TlsConfig, check_readable, read_secret
from fleetbeat.logutil import RateLimitedLog
from fleetbeat.outputs.base import Identity, Outgoing, Tally
from fleetbeat.outputs.http_exchange import Connection, HttpFailure, tls_context, wait_readable

log = logging.getLogger(__name__)

TOKEN_ENV = "FLEETBEAT_HTTP_TOKEN"  # noqa: S105 - a variable name
CREDENTIAL_NAME = "http-token"  # systemd LoadCredential= name
HEADER_NAME = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
RESERVED = ("host", "content-length", "transfer-encoding", "connection")  # set by the output
PENDING_BYTES = 64 * 1024  # what the in-flight request and those waiting behind it hold at most


def _url(value: Any, path: str, problems: Problems) -> Any:
    what = 'an http:// or https:// URL such as "http://collector.lan:9748/ingest"'
    if not isinstance(value, str):
        return problems.expected(path, what, value)
    try:
        parts = urllib.parse.urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return problems.expected(path, what, value)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.fragment:
        return problems.expected(path, what, value)
    if parts.username is not None or parts.password is not None:
        problems.add(path, "no credentials in the URL (they would show in logs): "
                     "use token_file or headers")  # fmt: skip
        return INVALID
    return value


@dataclass(frozen=True)
class HttpConfig:
    url: str = option("http://127.0.0.1:9748/ingest", _url)
    timeout: float = option(2.0, duration(min=0.01, max=300.0))
    headers: Mapping[str, str] = option(
        MappingProxyType({}),
        mapping(string(pattern=r"[^\r\n]*", allow_empty=True, what="a header value"),
                key_pattern=HEADER_NAME, what="a header name"),
        secret=True,
    )  # fmt: skip
    token_file: Optional[str] = option(None, string(what=PATH))
    tls: Optional[TlsConfig] = option(None, subtable(TlsConfig))
    max_payload: int = option(65536, integer(min=256, max=65536))
    max_pending: int = option(4, integer(min=1, max=16))
    reconnect_min: float = option(0.5, duration(min=0.01))
    reconnect_max: float = option(10.0, duration(min=0.01))

    def check(self, path: str, problems: Problems) -> None:
        names = {k.lower() for k in self.headers}
        for name in sorted(names & set(RESERVED)):
            problems.add(f"{path}.headers", f'"{name}" is set by the output itself')
        if self.token_file is not None and "authorization" in names:
            problems.add(f"{path}.token_file", "and headers.Authorization: set one of them")
        if self.tls is not None and not self.url.startswith("https:"):
            problems.add(f"{path}.tls", "needs an https:// url")
        if self.reconnect_min > self.reconnect_max:
            problems.add(f"{path}.reconnect_min", "must not exceed reconnect_max")

    def target(self) -> str:
        return self.url

    def check_files(self, path: str, problems: Problems) -> None:
        check_readable(self.token_file, f"{path}.token_file", problems)
        if self.tls is not None:
            self.tls.check_files(f"{path}.tls", problems)

    @classmethod
    def check_together(cls, configs: Sequence[Any], path: str, problems: Problems) -> None:
        """Any number of HTTP outputs may post anywhere."""


class HttpOutput:
    """Posts each payload at once on the worker's idle connection, or drops and counts it."""

    Config = HttpConfig

    def __init__(
        self,
        config: HttpConfig,
        *,
        identity: Identity,
        name: str = "",
        environ: Mapping[str, str] = os.environ,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.config = config
        self.name = name or f"http {config.url}"
        self.tally = Tally(self.name, log)
        self.max_payload = config.max_payload
        url = urllib.parse.urlsplit(config.url)
        https = url.scheme == "https"
        self._host = url.hostname or ""
        self._port = url.port or (443 if https else 80)
        self._context = tls_context(config.tls, name=self.name) if https else None
        token = read_secret(config.token_file, env_var=TOKEN_ENV, credential=CREDENTIAL_NAME,
                            name=self.name, environ=environ)  # fmt: skip
        self._heads = {
            True: self._head(url, identity, "application/json", token),
            False: self._head(url, identity, "text/plain; charset=utf-8", token),
        }
        self._rng = rng
        self._lock = threading.Lock()  # guards the connection state, the queue and the tally
        self._connected = False
        self._down_reason = "not_connected"
        self._queue: collections.deque[bytes] = collections.deque()
        self._in_flight = False
        self._pending_bytes = 0  # queued and in flight
        self._stop = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._news = RateLimitedLog(log, every=600.0)  # connection news: rarely repeated
        self._thread: Optional[threading.Thread] = None
        self.connects = 0  # successful connects since start
        self.failed_connects = 0

    def _head(self, url: Any, identity: Identity, ctype: str, token: Optional[str]) -> bytes:
        """The request up to the Content-Length value, for one content type."""
        target = (url.path or "/") + (f"?{url.query}" if url.query else "")
        host = url.netloc.rpartition("@")[2]
        headers = {"Host": host, "User-Agent": f"fleetbeat/{identity.version}",
                   "Content-Type": ctype}  # fmt: skip
        for key, value in self.config.headers.items():
            known = [k for k in headers if k.lower() == key.lower()]
            for k in known:
                del headers[k]
            headers[key] = value
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        lines = [f"POST {target} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items())]
        return ("\r\n".join(lines) + "\r\nContent-Length: ").encode("latin-1")

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"http {self._host}", daemon=True
            )
            self._thread.start()

    def ready(self) -> bool:
        """True while connected with nothing queued or in flight."""
        return self._connected and not self._queue and not self._in_flight

    # --- the sending path (any thread; never blocks) -----------------------------------

    def send(self, payload: bytes, msg: Optional[Outgoing] = None) -> None:
        with self._lock:
            if not self._connected:
                self.tally.drop(self._down_reason)
                return
            pending = len(self._queue) + self._in_flight
            if pending >= self.config.max_pending or (
                pending and self._pending_bytes + len(payload) > PENDING_BYTES
            ):
                self.tally.drop("busy")
                return
            self._queue.append(payload)
            self._pending_bytes += len(payload)
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # full: the worker is awake already; closed: stopping
            self._wake_w.send(b"\0")

    # --- the worker thread --------------------------------------------------------------

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                failures = self._connect_and_serve(failures)
            except Exception:  # a bug must not end the thread: log it, count it, go on
                log.exception("%s: unexpected error in the worker", self.name)
                self._down("error")
                failures += 1
            if failures and not self._stop.is_set():
                self._stop.wait(self._backoff(failures))

    def _connect_and_serve(self, failures: int) -> int:
        """One connection from connect to its end; the failures in a row after it."""
        conn = Connection(self._host, self._port, timeout=self.config.timeout,
                          context=self._context)  # fmt: skip
        try:
            conn.open()
        except HttpFailure as fail:
            self.failed_connects += 1
            self._down(fail.reason)
            self._news.log(logging.WARNING, fail.detail, "%s: cannot connect: %s (%s); "
                           "retrying in the background", self.name, fail.detail,
                           fail.reason)  # fmt: skip
            return failures + 1
        self.connects += 1
        if failures:
            log.info("%s: connected", self.name)
        try:
            used = self._serve(conn)
        finally:
            conn.close()
        if self._connected:
            self._down("not_connected")
        # One that carried no request (the server closed it at once) counts as a failed
        # connect, to back off. One whose request timed out does not: the wait was the
        # timeout, and a server that was only stalled is used again as soon as it wakes.
        return 0 if used else failures + 1

    def _backoff(self, failures: int) -> float:
        low, high = self.config.reconnect_min, self.config.reconnect_max
        ceiling = min(high, low * 2 ** min(max(failures - 1, 0), 30))
        return float(ceiling * (0.5 + 0.5 * self._rng()))  # jitter: a fleet spreads out

    def _down(self, reason: str) -> None:
        """No connection now: what waits behind the last request is dropped as `reason`."""
        with self._lock:
            if self._queue:
                self.tally.drop(reason, "the connection ended before they were sent",
                                len(self._queue))  # fmt: skip
                self._queue.clear()
            self._pending_bytes = 0
            self._connected = False
            self._down_reason = "closed" if self._stop.is_set() else reason

    def _serve(self, conn: Connection) -> bool:
        """Post what is handed over until the connection ends; True if it carried a request."""
        used = False
        with self._lock:
            if self._stop.is_set():
                return used
            self._connected = True
            self._down_reason = "not_connected"  # should it end: no failure known
        while conn.sock is not None:
            with self._lock:
                payload = self._queue.popleft() if self._queue else None
                self._in_flight = payload is not None
            if payload is None:
                if self._stop.is_set():
                    return used
                readable = wait_readable([conn.sock, self._wake_r], 1.0)
                if self._wake_r in readable:
                    with contextlib.suppress(OSError):  # one byte per send: one read drains it
                        self._wake_r.recv(4096)
                # The server closed the idle connection (a keep-alive timeout): made again
                # now, before the next payload; one handed over meanwhile waits for it.
                if conn.sock in readable and conn.idle_closed():
                    if self._queue and self._reopen(conn):
                        continue
                    return used
                continue
            used = True
            head = self._heads[payload[:1] == b"{"]
            try:
                answer = conn.post(head + str(len(payload)).encode() + b"\r\n\r\n", payload)
            except HttpFailure as fail:
                self._count(len(payload), fail.reason, fail.detail)
                self._down(fail.reason)  # and what waited behind it
                return used
            if 200 <= answer.status < 300:
                self._count(len(payload))
            else:
                text = answer.body.decode("utf-8", "replace").strip().replace("\n", " ")
                detail = f"{answer.status} {answer.phrase}" + (f": {text[:160]}" if text else "")
                self._count(len(payload), f"http_{answer.status // 100}xx", detail)
            # closed after its answer (Connection: close): made again if more is waiting
            if conn.sock is None and self._queue and not self._reopen(conn):
                return used
        return used

    def _reopen(self, conn: Connection) -> bool:
        conn.close()
        try:
            conn.open()
        except HttpFailure as fail:
            self._down(fail.reason)
            return False
        self.connects += 1
        return True

    def _count(self, size: int, reason: str = "", detail: str = "") -> None:
        """The request in flight is done: sent, or dropped as `reason`."""
        with self._lock:
            self._in_flight = False
            self._pending_bytes -= size
            if reason:
                self.tally.drop(reason, detail)
            else:
                self.tally.sent += 1

    # --- stopping -----------------------------------------------------------------------

    def close(self, *, timeout: float = 1.0) -> None:
        """Let a request in flight finish (the bye) within `timeout`, then stop the worker."""
        with self._lock:
            self._connected = False
            self._down_reason = "closed"
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():  # inside a connect or an answer: it is a daemon
                log.debug("%s: worker still busy; leaving it", self.name)
                return
        self._wake_r.close()
        self._wake_w.close()


if TYPE_CHECKING:  # mypy checks the class against the output contract
    from fleetbeat.outputs.base import OutputClass

    _: OutputClass = HttpOutput
