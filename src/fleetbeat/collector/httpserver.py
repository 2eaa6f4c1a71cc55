"""A bounded HTTP/1.1 server: one selector thread for every connection, a few workers.

The dashboard/API server (`collector.http`) runs on it, and so will the HTTP
ingest listener. The stdlib `ThreadingHTTPServer` it replaces started a thread
per connection: about 253 idle connections exhausted the unit's `TasksMax=256`,
and at 1,024 descriptors a failing accept() spun at 100% CPU. Here one selector
thread accepts, reads and writes every connection without blocking; `workers`
threads (default 4) only run the handler, so idle, slow and stalled clients cost
a socket and a few hundred bytes, never a thread. At `max_connections` (1024) the
oldest connection waiting for a request (idle keep-alive or half-sent headers) is
closed so the new client is served: holders cannot lock out the operator.

What else is bounded: timeouts, sizes and the queue in `httpmsg.Limits`, which also
parses and renders the messages; descriptors in `httpfds` (RLIMIT_NOFILE and an
accept loop that never spins). Everything refused, evicted or timed out is
counted (`stats()`) and logged at a limited rate, never with a traceback per
connection.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import selectors
import socket
import threading
import time
from typing import Optional

from fleetbeat.collector.httpfds import FD_RESERVE, Acceptor, claim_fds, release_fds
from fleetbeat.collector.httpmsg import (
    DEFAULT_LIMITS,
    Handler,
    Limits,
    Reject,
    Request,
    Response,
    answer,
    body_length,
    error_body,
    error_response,
    parse_head,
    render,
    take_head,
)
from fleetbeat.collector.httpworkers import Workers
from fleetbeat.errors import FleetbeatError
from fleetbeat.logutil import RateLimitedLog

# What servers and handlers use, importable from here as before the split.
__all__ = ["DEFAULT_LIMITS", "FD_RESERVE", "BoundedServer", "Handler", "Limits", "Request",
           "Response", "parse_head", "render"]  # fmt: skip

log = logging.getLogger(__name__)

_TICK = 0.25  # s between deadline checks: the deadlines are seconds long

# connection states
_IDLE, _HEAD, _BODY, _BUSY, _WRITE = range(5)


class _Conn:
    __slots__ = ("addr", "close_after", "deadline", "events", "head", "inbuf", "need", "out",
                 "sock", "state")  # fmt: skip

    def __init__(self, sock: socket.socket, addr: tuple[str, int], deadline: float) -> None:
        self.sock = sock
        self.addr = addr
        self.state = _IDLE
        self.deadline = deadline
        self.events = 0
        self.inbuf = bytearray()
        self.out = memoryview(b"")  # a view: sending the rest of a big answer copies nothing
        self.close_after = False
        self.head: Optional[Request] = None
        self.need = 0


class BoundedServer:
    """A running server: `handler` answers each request on a worker thread.

    Args:
        handler: request -> response; an exception becomes a 500 (logged at a limited rate).
        host, port: where to listen (":" in host: IPv6); port 0 lets the kernel pick.
        limits: threads, connections, timeouts and sizes (see `Limits`).
        name: the selector thread's name, and the prefix of the workers'.
    """

    def __init__(self, handler: Handler, *, host: str = "127.0.0.1", port: int = 0,
                 limits: Optional[Limits] = None, name: str = "http") -> None:  # fmt: skip
        self.limits = limits = limits or DEFAULT_LIMITS
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((host, port))
            listener.listen(128)
        except OSError as err:
            listener.close()
            raise FleetbeatError(f"cannot serve HTTP on {host}:{port}: {err.strerror}") from err
        listener.setblocking(False)
        self._listener = listener
        self.host = host
        self.port: int = listener.getsockname()[1]
        self.max_connections = claim_fds(limits.max_connections)
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._conns: dict[int, _Conn] = {}
        # connections waiting for (the rest of) a request, oldest first: eviction order
        self._waiting: collections.OrderedDict[int, _Conn] = collections.OrderedDict()
        self._writing: collections.OrderedDict[int, _Conn] = collections.OrderedDict()
        self._out_bytes = 0
        # answers from the workers, written by the selector thread (counters stay its own)
        self._done: collections.deque[tuple[_Conn, bytes, bool, bool]] = collections.deque()
        self._stopping = False
        self._counts: collections.Counter[str] = collections.Counter()
        self._ratelog = RateLimitedLog(log)
        self._acceptor = Acceptor(listener, self._sel, take=self._take,
                                  evict_oldest=self._evict_oldest, counts=self._counts,
                                  ratelog=self._ratelog)  # fmt: skip
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._workers = Workers(handler, count=limits.workers, size=limits.queue, name=name,
                                done=self._answered, ratelog=self._ratelog)  # fmt: skip
        self._thread.start()
        self._workers.start()

    def stats(self) -> dict[str, int]:
        """Counters since start (`open` is a gauge), for `/metrics` and tests."""
        counts = dict.fromkeys(
            ("accepted", "requests", "evicted", "refused", "accept_errors", "busy",
             "timeout_header", "timeout_body", "timeout_write", "idle_closed",
             "header_too_large", "body_too_large", "bad_request", "handler_errors",
             "internal_errors"), 0,
        )  # fmt: skip
        counts.update(dict(self._counts))
        counts["open"] = len(self._conns)
        return counts

    def close(self) -> None:
        """Stop accepting, close every connection and the port; returns within a second or so."""
        if self._stopping:
            return
        self._stopping = True
        self._workers.halt()
        self._wake()
        self._thread.join(timeout=5)
        self._workers.join()
        release_fds(self.max_connections)

    # --- the selector thread ------------------------------------------------------------

    def _loop(self) -> None:
        next_tick = time.monotonic() + _TICK
        try:
            while not self._stopping:
                timeout = max(0.0, next_tick - time.monotonic())
                for key, events in self._sel.select(timeout):
                    conn = key.data
                    if conn is not None:
                        try:
                            self._ready(conn, events)
                        except Exception as err:  # a bug costs that connection, not the server
                            self._counts["internal_errors"] += 1
                            self._ratelog.log(logging.ERROR, "internal",
                                              "HTTP connection from %s failed: %r",
                                              conn.addr[0], err)  # fmt: skip
                            self._close(conn)
                    elif key.fileobj is self._listener:
                        self._acceptor.accept()
                    else:
                        self._drain_wake()
                now = time.monotonic()
                if now >= next_tick:
                    next_tick = now + _TICK
                    self._expire(now)
                    self._acceptor.tick(now)
        except Exception:  # a bug here must not take the collector down with HTTP
            log.exception("HTTP server loop failed; HTTP is down")
        finally:
            for conn in list(self._conns.values()):
                self._close(conn)
            self._sel.close()
            self._listener.close()
            self._wake_r.close()
            self._wake_w.close()
            self._acceptor.close()

    def _take(self, sock: socket.socket, addr: tuple[str, int]) -> None:
        """Serve a new connection, making room at the cap by closing the oldest waiting one."""
        self._counts["accepted"] += 1
        if len(self._conns) >= self.max_connections and not self._evict_oldest(
            "connection cap %d reached: closed the oldest waiting connection",
            self.max_connections,
        ):
            self._counts["refused"] += 1
            self._ratelog.log(logging.WARNING, "refused", "HTTP connection cap %d reached, "
                              "every connection busy: refused %s",
                              self.max_connections, addr[0])  # fmt: skip
            sock.close()
            return
        sock.setblocking(False)
        conn = _Conn(sock, addr, time.monotonic() + self.limits.idle_timeout)
        self._conns[sock.fileno()] = conn
        self._waiting[sock.fileno()] = conn
        self._watch(conn, selectors.EVENT_READ)

    def _evict_oldest(self, why: str, *args: object) -> bool:
        if not self._waiting:
            return False
        _, conn = self._waiting.popitem(last=False)
        self._counts["evicted"] += 1
        self._ratelog.log(logging.WARNING, "evict", "HTTP " + why + " (from %s)",
                          *args, conn.addr[0])  # fmt: skip
        self._close(conn)
        return True

    def _ready(self, conn: _Conn, events: int) -> None:
        if events & selectors.EVENT_WRITE:
            self._flush(conn)
            return
        try:
            data = conn.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close(conn)
            return
        conn.inbuf += data
        self._advance(conn)

    def _advance(self, conn: _Conn) -> None:
        """Move `conn` on with what it has read: headers, then body, then a worker."""
        lim = self.limits
        try:
            if conn.state in (_IDLE, _HEAD):
                if conn.state == _IDLE:
                    while conn.inbuf[:2] == b"\r\n":  # stray CRLFs between requests
                        del conn.inbuf[:2]
                    if not conn.inbuf:
                        return
                    conn.state = _HEAD
                    conn.deadline = time.monotonic() + lim.header_timeout
                req = take_head(conn.inbuf, conn.addr, lim)
                if req is None:
                    return
                conn.need = body_length(req, lim)
                conn.head = req
                conn.state = _BODY
                conn.deadline = time.monotonic() + lim.body_timeout
                if conn.need and req.headers.get("expect", "").lower() == "100-continue":
                    # if this fails, the body read times out or the peer is gone
                    with contextlib.suppress(OSError):
                        conn.sock.send(b"HTTP/1.1 100 Continue\r\n\r\n")
            if conn.state == _BODY and conn.head is not None and len(conn.inbuf) >= conn.need:
                conn.head.body = bytes(conn.inbuf[: conn.need])
                del conn.inbuf[: conn.need]
                self._dispatch(conn, conn.head)
        except Reject as rej:
            self._counts[rej.counter] += 1
            self._ratelog.log(logging.INFO, rej.counter, "HTTP %d to %s: %s",
                              rej.status, conn.addr[0], rej)  # fmt: skip
            headers, body = error_body(str(rej))
            self._send(conn, render(rej.status, headers, body, head=False, close=True), close=True)

    def _dispatch(self, conn: _Conn, req: Request) -> None:
        self._counts["requests"] += 1
        self._waiting.pop(conn.sock.fileno(), None)
        conn.state = _BUSY
        conn.head = None
        self._watch(conn, 0)  # nothing more is read until this request is answered
        if not self._workers.submit(conn, req):
            self._counts["busy"] += 1
            self._ratelog.log(logging.WARNING, "busy", "HTTP workers busy: answered %d",
                              self.limits.busy_status)  # fmt: skip
            resp = error_response(self.limits.busy_status, "busy; try again shortly")
            resp.headers["Retry-After"] = "1"
            raw, close = answer(req, resp)
            self._send(conn, raw, close=close)

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass
        while self._done:
            conn, raw, close, failed = self._done.popleft()
            self._counts["handler_errors"] += failed
            if self._conns.get(conn.sock.fileno()) is conn:
                self._send(conn, raw, close=close)

    def _send(self, conn: _Conn, raw: bytes, *, close: bool) -> None:
        conn.out = memoryview(raw)
        conn.close_after = close
        conn.state = _WRITE
        conn.deadline = time.monotonic() + self.limits.write_timeout
        self._waiting.pop(conn.sock.fileno(), None)
        self._flush(conn)

    def _flush(self, conn: _Conn) -> None:
        fd = conn.sock.fileno()
        try:
            sent = conn.sock.send(conn.out)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._close(conn)
            return
        if fd in self._writing:
            self._out_bytes -= len(conn.out)
        conn.out = conn.out[sent:]
        if conn.out:
            self._out_bytes += len(conn.out)
            self._writing[fd] = conn
            self._watch(conn, selectors.EVENT_WRITE)
            while self._out_bytes > self.limits.max_output_bytes and len(self._writing) > 1:
                _, stalled = self._writing.popitem(last=False)
                self._counts["timeout_write"] += 1
                self._ratelog.log(logging.WARNING, "output", "HTTP answers waiting for slow "
                                  "readers passed %d bytes: dropped %s",
                                  self.limits.max_output_bytes, stalled.addr[0])  # fmt: skip
                self._close(stalled)
            return
        self._writing.pop(fd, None)
        if conn.close_after or self._stopping:
            self._close(conn)
            return
        conn.state = _IDLE
        conn.deadline = time.monotonic() + self.limits.idle_timeout
        self._waiting[fd] = conn
        self._watch(conn, selectors.EVENT_READ)
        if conn.inbuf:
            self._advance(conn)  # a pipelined request arrived while this one was served

    def _expire(self, now: float) -> None:
        late = [c for c in self._conns.values() if c.state != _BUSY and c.deadline <= now]
        for conn in late:
            if conn.state == _IDLE:
                self._counts["idle_closed"] += 1
                self._close(conn)
                continue
            counter = {_HEAD: "timeout_header", _BODY: "timeout_body"}.get(
                conn.state, "timeout_write"
            )
            self._counts[counter] += 1
            self._ratelog.log(logging.INFO, counter, "HTTP %s from %s: closed",
                              counter.replace("_", " "), conn.addr[0])  # fmt: skip
            if conn.state in (_HEAD, _BODY):
                headers, body = error_body("request not complete in time")
                # best effort, once: a client that does not read gets a plain close
                with contextlib.suppress(OSError):
                    conn.sock.send(render(408, headers, body, head=False, close=True))
            self._close(conn)

    def _watch(self, conn: _Conn, events: int) -> None:
        if events == conn.events:
            return
        if not conn.events:
            self._sel.register(conn.sock, events, conn)
        elif not events:
            self._sel.unregister(conn.sock)
        else:
            self._sel.modify(conn.sock, events, conn)
        conn.events = events

    def _close(self, conn: _Conn) -> None:
        fd = conn.sock.fileno()
        if fd < 0:
            return
        self._watch(conn, 0)
        self._conns.pop(fd, None)
        self._waiting.pop(fd, None)
        if self._writing.pop(fd, None) is not None:
            self._out_bytes -= len(conn.out)
        conn.sock.close()

    def _answered(self, conn: _Conn, raw: bytes, close: bool, failed: bool) -> None:
        """A worker's answer, for the selector thread to write (counters stay its own)."""
        self._done.append((conn, raw, close, failed))
        self._wake()

    def _wake(self) -> None:
        # full: a wake-up is already pending; closed: stopping
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")
