"""HTTP ingest: `POST /ingest` with wire v1 messages, on a listener of its own.

For agents that can only reach the collector over HTTP(S) (a proxy, a firewall),
and for gateways that forward a batch. Off unless `[collector] http_ingest_listen`
is set (e.g. "0.0.0.0:9748"); it is a `BoundedServer` of its own, so the
dashboard stays on loopback and a flood of ingest cannot starve the API.

The body is one message, or several separated by newlines. Each goes through
the same validation and counters as a UDP datagram (`fleet.receive`, with
`transport = "http"`), then the answer says what happened:

- 204 No Content once every message is parsed and applied. Not 202 Accepted:
  202 says "queued, processed later", and nothing here queues: the messages
  have reached the fleet by the time the answer is written.
- 400 with the reasons (`{"error": ..., "rejected": ["line 2: not_json", ...]}`)
  when some message is bad; the good ones of the batch are applied all the same.
- 413 when the body is over `http_ingest_max_body`, or when a one-message body
  is over `max_payload` (the UDP limit).
- 429 when every worker is busy and the queue is full: the sender drops, as an
  at-most-once sender does; nothing waits.
- 404 for another path, 405 for another method.

Reasons that only the fleet's state can tell (a seq jump, an old run, a full
fleet) are counted in `/metrics` as for UDP, and answered 204: the message was
well-formed, and telling the sender changes nothing it does.

```toml
[collector]
http_ingest_listen = "0.0.0.0:9748"  # off while empty (the default)
http_ingest_max_body = 1048576       # bytes of one POST: a batch of messages
```
"""

from __future__ import annotations

import json
import logging
import threading
from http import HTTPStatus
from typing import Any, Optional

from fleetbeat import wire
from fleetbeat.collector.config import CollectorSection, split_hostport
from fleetbeat.collector.fleet import Fleet
from fleetbeat.collector.httpserver import BoundedServer, Limits, Request, Response
from fleetbeat.netaddr import hostport

log = logging.getLogger(__name__)

PATH = "/ingest"
MAX_REASONS = 20  # reasons listed in one 400 answer; a big bad batch says how many more


class HttpIngest:
    """The ingest listener: `start()` binds and serves, `close()` frees the port.

    Args:
        fleet: what every message is handed to.
        config: the `[collector]` section (`http_ingest_listen`, `http_ingest_max_body`).
        limits: the server's bounds; by default the dashboard's, answering 429 when busy.
    """

    def __init__(
        self, *, fleet: Fleet, config: CollectorSection, limits: Optional[Limits] = None
    ) -> None:
        self.fleet = fleet
        self.config = config
        self.name = f"HTTP {config.http_ingest_listen} (POST {PATH})"  # the port once bound
        self.limits = limits or Limits(
            busy_status=HTTPStatus.TOO_MANY_REQUESTS, max_body_bytes=config.http_ingest_max_body
        )
        self._server: Optional[BoundedServer] = None
        self.address: tuple[str, int] = ("", 0)
        self.requests_rejected = 0  # answered 400 or 413 by the handler
        self._lock = threading.Lock()  # the workers count together

    def start(self) -> None:
        parsed = split_hostport(self.config.http_ingest_listen)
        if parsed is None:  # pragma: no cover - the config parser checked it
            raise ValueError(f"bad http_ingest_listen {self.config.http_ingest_listen!r}")
        host, port = parsed
        self._server = BoundedServer(self.handle, host=host, port=port, limits=self.limits,
                                     name="http-ingest")  # fmt: skip
        self.address = (host, self._server.port)
        self.name = f"HTTP {hostport(host, self._server.port)} (POST {PATH})"

    @staticmethod
    def enabled(config: CollectorSection) -> bool:
        return bool(config.http_ingest_listen)  # off while empty

    def close(self, *, timeout: float = 2.0) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    def stats(self) -> dict[str, int]:
        """The server's counters (see `BoundedServer.stats`) and the requests refused here."""
        counts = self._server.stats() if self._server is not None else {}
        counts["requests_rejected"] = self.requests_rejected
        return counts

    def handle(self, req: Request) -> Response:
        """Answer one request (on a worker thread of the server)."""
        if req.target.split("?", 1)[0] != PATH:
            return _error(HTTPStatus.NOT_FOUND, f"not found; POST wire v1 messages to {PATH}")
        if req.method != "POST":
            resp = _error(HTTPStatus.METHOD_NOT_ALLOWED, "POST only")
            resp.headers["Allow"] = "POST"
            return resp
        lines = [line.rstrip(b"\r") for line in req.body.split(b"\n") if line.strip()]
        if not lines:
            self._count_rejected()
            return _error(HTTPStatus.BAD_REQUEST, "empty body: one wire v1 message a line")
        max_payload = self.fleet.config.max_payload  # the reloaded value, as UDP's
        fleet = self.fleet
        rejected = []
        for n, line in enumerate(lines, 1):
            try:
                # the wire checks first, to answer with the reason; fleet.receive checks
                # again (and the signature, and the fleet's own rules) and counts
                wire.parse_fields(line, max_size=max_payload)
            except wire.WireError as err:
                fleet.reject(err.reason, "http")
                rejected.append((n, err))
                continue
            fleet.receive(line, req.client, "http")
        if not rejected:
            return Response(HTTPStatus.NO_CONTENT)
        self._count_rejected()
        if len(lines) == 1 and rejected[0][1].reason == "oversize":
            return _error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                          f"message over max_payload ({max_payload} bytes)")  # fmt: skip
        reasons = [f"line {n}: {err}" for n, err in rejected[:MAX_REASONS]]
        if len(rejected) > MAX_REASONS:
            reasons.append(f"... and {len(rejected) - MAX_REASONS} more")
        summary = f"{len(rejected)} of {len(lines)} messages rejected"
        return _error(HTTPStatus.BAD_REQUEST, summary, rejected=reasons)

    def _count_rejected(self) -> None:
        with self._lock:
            self.requests_rejected += 1


def _error(status: int, reason: str, **extra: Any) -> Response:
    body = json.dumps({"error": reason, **extra}).encode()
    return Response(status, body, {"Content-Type": "application/json"})
