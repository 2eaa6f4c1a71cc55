"""HTTP/1.1 messages for `collector.httpserver`: limits, requests, responses, parsing.

Pure functions and records, no sockets: what a server may spend (`Limits`), a
request's head parsed strictly (`parse_head`: 400 for a bad line, 505 for other
versions), its body length checked (`body_length`: 411 for chunked, 413 past the
limit), and a response rendered (`render`).
"""

from __future__ import annotations

import json
from email.utils import formatdate
from http import HTTPStatus
from typing import Callable, Optional

from fleetbeat.config.frozen import dataclass, field


@dataclass(frozen=True)
class Limits:
    """What one server may spend; every field is a keyword with a default fit for the unit.

    - Threads and queue: `workers` run the handler; a complete request waits for one in
      a queue of `queue`, and when that is full the answer is `busy_status` (503, or
      429 for ingest) at once.
    - Connections: at most `max_connections` (see `BoundedServer`).
    - Time: headers complete within `header_timeout` of their first byte (else 408),
      a body within `body_timeout`, an idle keep-alive connection lives
      `idle_timeout`, a response is written within `write_timeout`.
    - Size: request line and headers within `max_header_bytes` (else 431), a body
      within `max_body_bytes` (else 413; `Content-Length` required, 411 for chunked);
      answers waiting for slow readers within `max_output_bytes` (past it the
      longest-stalled reader is dropped).
    """

    workers: int = field(default=4)
    queue: int = field(default=16)
    max_connections: int = field(default=1024)
    header_timeout: float = field(default=5.0)
    body_timeout: float = field(default=10.0)
    idle_timeout: float = field(default=30.0)
    write_timeout: float = field(default=30.0)
    max_header_bytes: int = field(default=16 * 1024)
    max_body_bytes: int = field(default=1 << 20)
    max_output_bytes: int = field(default=64 << 20)
    busy_status: int = field(default=HTTPStatus.SERVICE_UNAVAILABLE)


DEFAULT_LIMITS = Limits()


class Request:
    """One complete request: header names are lower-case; `body` is b"" without one."""

    __slots__ = ("body", "client", "headers", "method", "target", "version")

    def __init__(  # noqa: PLR0917 - a record: the six parts of a request, in order
        self,
        method: str,
        target: str,
        version: str,
        headers: dict[str, str],
        body: bytes,
        client: tuple[str, int],
    ) -> None:
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        self.body = body
        self.client = client

    def __repr__(self) -> str:
        return f"Request({self.method} {self.target} {self.version}, {len(self.body)} B)"


class Response:
    """What a handler returns; the server adds Content-Length, Date, Server and Connection."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, body: bytes = b"",
                 headers: Optional[dict[str, str]] = None) -> None:  # fmt: skip
        self.status = status
        self.body = body
        self.headers = headers if headers is not None else {}

    def __repr__(self) -> str:
        return f"Response({self.status}, {len(self.body)} B)"


Handler = Callable[[Request], Response]


class Reject(Exception):
    """The request cannot be served: answer `status` and close the connection."""

    def __init__(self, status: int, reason: str, counter: str) -> None:
        super().__init__(reason)
        self.status = status
        self.counter = counter


def render(status: int, headers: dict[str, str], body: bytes, *, head: bool, close: bool) -> bytes:
    """The bytes of one response; HEAD keeps Content-Length and drops the body."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    lines = [f"HTTP/1.1 {status} {phrase}", "Server: fleetbeat",
             f"Date: {formatdate(usegmt=True)}"]  # fmt: skip
    lines.extend(f"{name}: {value}" for name, value in headers.items())
    lines.append(f"Content-Length: {len(body)}")
    if close:
        lines.append("Connection: close")
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return raw if head else raw + body


def error_body(reason: str) -> tuple[dict[str, str], bytes]:
    return {"Content-Type": "application/json"}, json.dumps({"error": reason}).encode()


def parse_head(raw: bytes, client: tuple[str, int]) -> Request:
    """Request line and headers (without the blank line) -> a Request with no body yet."""
    try:
        text = raw.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
        raise Reject(400, "bad request", "bad_request") from None
    line, *header_lines = text.split("\r\n")
    parts = line.split(" ")
    if len(parts) != 3 or not parts[0].isalpha() or not parts[1]:
        raise Reject(400, "bad request line", "bad_request")
    method, target, version = parts
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise Reject(505, "HTTP/1.0 or HTTP/1.1 only", "bad_request")
    headers: dict[str, str] = {}
    for item in header_lines:
        name, sep, value = item.partition(":")
        if not sep or not name or name != name.strip() or item[0] in " \t":
            raise Reject(400, "bad header line", "bad_request")
        key = name.lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return Request(method, target, version, headers, b"", client)


def body_length(req: Request, limits: Limits) -> int:
    """The body's length from Content-Length, within `limits.max_body_bytes`."""
    if "transfer-encoding" in req.headers:
        raise Reject(411, "send Content-Length: chunked bodies are refused", "bad_request")
    raw = req.headers.get("content-length", "0")
    if not raw.isdigit() or len(raw) > 18:
        raise Reject(400, "bad Content-Length", "bad_request")
    length = int(raw)
    if length > limits.max_body_bytes:
        raise Reject(413, f"body over {limits.max_body_bytes} bytes", "body_too_large")
    return length


def wants_close(req: Request) -> bool:
    """HTTP/1.0, or `Connection: close`: answer, then close (1.1 keeps the connection)."""
    tokens = {t.strip().lower() for t in req.headers.get("connection", "").split(",")}
    return req.version == "HTTP/1.0" or "close" in tokens


def take_head(inbuf: bytearray, client: tuple[str, int], limits: Limits) -> Optional[Request]:
    """The request head at the start of `inbuf`, removed from it; None until it is complete.

    Its body is not read yet (`Request.body` is b""); past `limits.max_header_bytes`
    without a blank line the request is rejected (431).
    """
    end = inbuf.find(b"\r\n\r\n", 0, limits.max_header_bytes + 4)
    if end < 0:
        if len(inbuf) > limits.max_header_bytes:
            raise Reject(431, "request headers too large", "header_too_large")
        return None
    req = parse_head(bytes(inbuf[:end]), client)
    del inbuf[: end + 4]
    return req


def error_response(status: int, reason: str) -> Response:
    """A JSON error answer: {"error": reason}."""
    headers, body = error_body(reason)
    return Response(status, body, headers)


def answer(req: Request, resp: Response) -> tuple[bytes, bool]:
    """The bytes that answer `req` with `resp`, and whether the connection closes after them."""
    close = wants_close(req)
    return render(resp.status, resp.headers, resp.body, head=req.method == "HEAD",
                  close=close), close  # fmt: skip
