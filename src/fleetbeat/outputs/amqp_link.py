"""The AMQP output's connection: a background thread and a socket written at once or not.

`AmqpLink` connects with `amqp_session.connect` in its own thread, then owns the
socket, non-blocking: it reads what the broker sends (heartbeats,
connection.blocked / unblocked, a Close), writes heartbeats, finishes a partly
written message, and reconnects with capped exponential backoff and jitter.
`AmqpLink.write` puts one whole message on the socket at once or says why not;
it is the only thing the sampling path calls.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import threading
from typing import Any, Callable, Optional

from fleetbeat.config.secrets import TlsConfig
from fleetbeat.logutil import RateLimitedLog
from fleetbeat.outputs import amqp_frames as f
from fleetbeat.outputs.amqp_session import PEER_ERRORS, Endpoint, Session, backoff, connect
from fleetbeat.outputs.base import Tally
from fleetbeat.outputs.mqtt_link import _drain, describe_os_error  # one wake-pipe drain

log = logging.getLogger(__name__)


class AmqpLink:
    """The publisher's connection and its thread; `AmqpOutput` adds routing and `send`."""

    name: str
    tally: Tally

    def __init__(self, endpoint: Endpoint, password: str, *, tls: Optional[TlsConfig],
                 heartbeat: int, timeout: float, reconnect: tuple[float, float],
                 setup: Callable[[Session], None], rng: Callable[[], float],
                 clock: Callable[[], float]) -> None:  # fmt: skip
        self.endpoint = endpoint
        self._password = password
        self._tls = tls
        self._heartbeat = heartbeat
        self._timeout = timeout
        self._reconnect = reconnect
        self._setup = setup  # declares what the link needs (the exchange) before publishing
        self._rng = rng
        self._clock = clock
        # what a TLS socket raises when it cannot write or read now (a record is retried whole)
        self._want_write: tuple[type[BaseException], ...] = ()
        self._want_read: tuple[type[BaseException], ...] = (BlockingIOError,)
        if endpoint.tls:
            import ssl

            self._want_write = (ssl.SSLWantWriteError,)
            self._want_read = (BlockingIOError, ssl.SSLWantReadError)
        self._lock = threading.Lock()  # one writer at a time; held only for non-blocking work
        self._sock: Optional[socket.socket] = None  # set while connected
        self.blocked = False  # between connection.blocked and connection.unblocked
        self.frame_max = f.MIN_FRAME_MAX
        self._tail: Optional[bytes] = None  # the unwritten end of the last frame(s)
        self._tail_msg = False  # whether that tail is a message (else a heartbeat)
        self._closing = False
        self._close_ok = threading.Event()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._news = RateLimitedLog(log, every=60.0)  # connection news: a flapping link is quiet
        self.connects = 0

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"amqp {self.endpoint.host}",
                                            daemon=True)  # fmt: skip
            self._thread.start()

    # --- writing (any thread; never blocks) --------------------------------------------

    def write(self, data: bytes) -> Optional[str]:
        """Put one whole message on the socket now; None when it did, else the drop reason."""
        with self._lock:
            sock = self._sock
            if sock is None or self._closing:
                return "not_connected"
            if self.blocked:
                return "blocked"
            if not self._flush(sock):
                return "backpressure"
            try:
                written = sock.send(data)
            except BlockingIOError:
                return "backpressure"
            except self._want_write:  # TLS: nothing is out; the record is retried whole
                self._tail, self._tail_msg = data, True
                self._wake()
                return None
            except OSError as exc:  # broken: the network thread sees it too and reconnects
                log.debug("%s: write failed: %s", self.name, exc)
                return "not_connected"
            if written < len(data):
                self._tail = data[written:]  # a copy, only when the socket is nearly full
                self._tail_msg = True
                self._wake()
            return None

    def _flush(self, sock: socket.socket) -> bool:
        """Write our unwritten tail; True when nothing is left (lock held)."""
        tail = self._tail
        if tail is None:
            return True
        try:
            written = sock.send(tail)
        except OSError:  # EAGAIN, a TLS want-write, or broken (the thread sees it too)
            return False
        self._tail = None if written == len(tail) else tail[written:]
        return self._tail is None

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # full or closed: the thread is awake or gone
            self._wake_w.send(b"\0")

    # --- the background thread -------------------------------------------------------------

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            connects = self.connects
            try:
                session = connect(self.endpoint, self._password, tls=self._tls,
                                  heartbeat=self._heartbeat, timeout=self._timeout,
                                  capabilities={"connection.blocked": True,
                                                "authentication_failure_close": True})  # fmt: skip
                self._setup(session)
            except PEER_ERRORS as exc:
                self._problem("cannot connect to %s: %s", self.endpoint.target(),
                              describe_os_error(exc))  # fmt: skip
            else:
                try:
                    self._serve(session)
                except PEER_ERRORS as exc:
                    if not self._closing:
                        self._problem("connection lost (%s)", describe_os_error(exc))
                except Exception:  # a bug must not end the thread: log it and reconnect
                    log.exception("%s: unexpected error in the network thread", self.name)
                finally:
                    self._lost(session.sock)
            if self._stop.is_set() or self._closing:
                break
            failures = 0 if self.connects > connects else failures + 1
            self._stop.wait(backoff(failures, *self._reconnect, self._rng))

    def _serve(self, session: Session) -> None:
        sock = session.sock
        sock.setblocking(False)
        beat = session.heartbeat
        now = self._clock()
        last_read = last_beat = flushed = now
        with self._lock:
            self.frame_max = session.frame_max
            self.blocked = False
            self._tail = None
            self._sock = sock
            self.connects += 1
        tls = ", TLS" if self.endpoint.tls else ""
        self._news.log(logging.INFO, "connected", "%s: connected (heartbeat %d s%s)", self.name,
                       beat, tls)  # fmt: skip
        buf = session.buf
        wake = self._wake_r
        while not self._stop.is_set():
            pending = getattr(sock, "pending", None)
            ready_now = bool(pending and pending())  # TLS bytes select() cannot see
            wait = 0 if ready_now else min(1.0, beat / 2) if beat else 1.0
            writers: list[socket.socket] = [sock] if self._tail is not None else []
            readable, _, _ = select.select([sock, wake], writers, [], wait)
            if wake in readable:
                _drain(wake)
            now = self._clock()
            if sock in readable or ready_now:
                with self._lock:
                    try:
                        data = sock.recv(65536)
                    except self._want_read:
                        data = None
                if data == b"":
                    self._problem("connection lost (closed by the broker)")
                    return
                if data:
                    last_read = now
                    buf += data
                    frames, used = f.split_frames(buf, session.frame_max)
                    del buf[:used]
                    for frame in frames:
                        if not self._handle(frame):
                            return
            with self._lock:
                if self._flush(sock):
                    flushed = now
                    if beat and now - last_beat >= beat / 2:
                        self._tail, self._tail_msg = f.HEARTBEAT_FRAME, False  # written whole
                        self._flush(sock)
                        last_beat = now
                elif self.blocked:  # the broker stops reading on purpose: not a stall
                    flushed = now
            if beat and now - last_read > 2 * beat:
                self._problem("connection lost (nothing from the broker for %d s)", 2 * beat)
                return
            if beat and now - flushed > 2 * beat:
                self._problem("connection lost (the broker took nothing for %d s)", 2 * beat)
                return

    def _handle(self, frame: f.Frame) -> bool:
        """React to one frame from the broker; False when the connection is over."""
        if frame.kind != f.METHOD:
            return True  # heartbeats; nothing else is sent to a publisher
        ids = f.method_ids(frame.payload)
        if ids == f.BLOCKED:
            self.blocked = True
            self._news.log(logging.WARNING, "blocked", "%s: the broker blocked publishing (%s)",
                           self.name, f.parse_blocked(frame.payload))  # fmt: skip
        elif ids == f.UNBLOCKED:
            self.blocked = False
            self._news.log(logging.INFO, "unblocked", "%s: the broker unblocked publishing",
                           self.name)  # fmt: skip
        elif ids == f.CLOSE_OK:
            self._close_ok.set()
            return False
        elif ids in (f.CLOSE, f.CHANNEL_CLOSE):
            code, text = f.parse_close(frame.payload)
            with self._lock:
                self._tail = None  # the broker reads nothing more of it
                self.write_raw(f.close_ok(frame.channel))
            self._problem("the broker closed the %s: %d %s",
                          "connection" if ids == f.CLOSE else "channel", code, text)  # fmt: skip
            return False
        return True

    def write_raw(self, data: bytes) -> None:
        """Best effort, lock held: a control frame after any tail (close, close-ok)."""
        sock = self._sock
        if sock is not None and self._flush(sock):
            with contextlib.suppress(OSError):
                sock.send(data)

    def _lost(self, sock: socket.socket) -> None:
        with self._lock:
            self._sock = None
            self.blocked = False
            if self._tail is not None and self._tail_msg:
                self.tally.sent -= 1
                self.tally.drop("not_connected", "connection lost while it was being written")
            self._tail = None
        sock.close()

    def _problem(self, fmt: str, *args: Any) -> None:
        text = fmt % args
        self._news.log(logging.WARNING, text, "%s: %s; retrying in the background", self.name, text)

    def stop(self, deadline: float, now: Callable[[], float]) -> None:
        """Finish the last message, Connection.Close, wait for Close-Ok, stop the thread."""
        sent_close = False
        while now() < deadline:
            with self._lock:
                sock = self._sock
                if sock is None:
                    break
                self._closing = True
                if self._flush(sock):
                    self.write_raw(f.connection_close(200, "fleetbeat agent stopping"))
                    sent_close = True
                    break
            self._stop.wait(0.01)
        self._closing = True
        if sent_close:
            self._close_ok.wait(max(0.0, deadline - now()))
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - now()))
        self._wake_r.close()
        self._wake_w.close()
