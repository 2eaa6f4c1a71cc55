"""One MQTT connection for the MQTT output, driven by our own background thread.

`MqttOutput` (in `mqtt_publish`) builds the paho client, the topics and the
sending path on top of this class; here is the connection underneath it: the
background thread that connects (with capped exponential backoff and jitter),
reads, keeps alive and finishes partly written packets, and `_write`, which puts
one whole packet on the socket at once or says why not. Connecting, TLS
handshakes and name lookups happen only in that thread. One lock keeps writers
apart; paho's callbacks run with it held.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import threading
from typing import TYPE_CHECKING, Any, Callable, Optional

from fleetbeat.logutil import RateLimitedLog
from fleetbeat.outputs.base import Tally
from fleetbeat.outputs.mqtt_packets import MAX_PACKET, publish

if TYPE_CHECKING:
    from paho.mqtt.client import Client

log = logging.getLogger(__name__)


class MqttLink:
    """The connection state and its thread; `MqttOutput` adds topics and `send`."""

    name: str
    tally: Tally

    def __init__(
        self,
        client: Client,
        *,
        where: str,
        keepalive: int,
        reconnect: tuple[float, float],
        ok: int,
        rng: Callable[[], float],
        clock: Callable[[], float],
    ) -> None:
        self._client = client
        self._where = where
        self._keepalive = keepalive
        self._reconnect = reconnect  # (first wait, longest wait) between connect attempts
        self._ok = ok  # paho's MQTT_ERR_SUCCESS
        self._rng = rng
        self._clock = clock
        # a socket that cannot take a write says so with these (TLS adds SSLWantWriteError)
        self._want_write: tuple[type[BaseException], ...] = (BlockingIOError,)
        # Guards every use of the client and its socket: one writer at a time, and TLS
        # sockets must not read and write at once. Held only for non-blocking work.
        self._lock = threading.RLock()
        self._connected = False  # CONNACK accepted and the socket not lost since
        self._closing = False
        self._max_packet = MAX_PACKET
        self._tail: Optional[bytes] = None  # the unwritten end of the last message
        self._stalled_since: Optional[float] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        # connection news, at most once a minute per text: a flapping link cannot flood the log
        self._news = RateLimitedLog(log, every=60.0)
        self.connects = 0  # successful connects since start

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"mqtt {self._where}", daemon=True
            )
            self._thread.start()

    # --- writing (any thread, with the lock held; never blocks) -------------------------

    def _write(self, head: bytes, payload: bytes, retain: bool) -> Optional[str]:
        if not self._flush():
            return "backpressure"
        sock = self._client.socket()
        if sock is None:
            return "not_connected"
        packet = publish(head, payload, retain=retain)
        if len(packet) > self._max_packet:  # the broker would disconnect us for it
            return "too_large"
        try:
            written = sock.send(packet)
        except BlockingIOError:
            return "backpressure"
        except self._want_write:  # TLS: the record may be partly out; retried as a whole
            self._tail = packet
            self._wake()
            return None
        except OSError as exc:  # the connection broke: the network thread will see it too
            log.debug("%s: write failed: %s", self.name, exc)
            return "not_connected"
        if written < len(packet):
            self._tail = packet[written:]  # a copy, only when the socket is nearly full
            self._wake()
        return None

    def _flush(self) -> bool:
        """Write what is pending (our tail, then paho's packets); True when nothing is left."""
        tail = self._tail
        if tail is not None:
            sock = self._client.socket()
            if sock is None:
                return False
            try:
                written = sock.send(tail)
            except self._want_write:
                return False
            except OSError:  # broken: the network thread will see it and reconnect
                return False
            if written < len(tail):
                self._tail = tail[written:]
                return False
            self._tail = None
        client = self._client
        if client.want_write():
            client.loop_write()
            return not client.want_write()
        return True

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # full or closed: the thread is awake or gone
            self._wake_w.send(b"\0")

    # --- the background thread: connect, read, keepalive, finish partial writes -------

    def _run(self) -> None:
        failures = 0
        client = self._client
        while not self._stop.is_set():
            with self._lock:
                self._connected = False
                self._stalled_since = None
                self._lost_tail()
            connects = self.connects
            try:
                client.reconnect()  # blocking TCP connect + TLS handshake: only here
            except (OSError, ValueError) as exc:
                self._problem("cannot connect to %s: %s", self._where, describe_os_error(exc))
            else:
                try:
                    self._serve(client)
                except Exception:  # a bug must not end the thread: log it and reconnect
                    log.exception("%s: unexpected error in the network thread", self.name)
            if self._stop.is_set():
                break
            failures = 0 if self.connects > connects else failures + 1
            self._stop.wait(self._backoff(failures))

    def _backoff(self, failures: int) -> float:
        low, high = self._reconnect
        ceiling = min(high, low * 2 ** min(max(failures - 1, 0), 30))
        return float(ceiling * (0.5 + 0.5 * self._rng()))  # jitter: a fleet spreads out

    def _serve(self, client: Client) -> None:
        """Run paho's network events until the connection is lost or we stop."""
        wake = self._wake_r
        while not self._stop.is_set():
            sock = client.socket()
            if sock is None:
                return
            pending = getattr(sock, "pending", None)
            ready_now = bool(pending and pending())  # TLS bytes select() cannot see
            unwritten = self._tail is not None or client.want_write()
            try:
                readable, _, _ = select.select(
                    [sock, wake], [sock] if unwritten else [], [], 0 if ready_now else 1.0
                )
            except (OSError, ValueError):  # the socket was closed by a write in another thread
                return
            if wake in readable:
                _drain(wake)
            with self._lock:
                if client.socket() is not sock:
                    return
                rc = self._ok
                if sock in readable or ready_now:
                    rc = client.loop_read()
                if rc != self._ok:
                    return
                if self._flush():
                    self._stalled_since = None
                    # keepalive pings and timeouts; paho writes its PINGREQ directly, so
                    # only when our tail is out (it must not cut into a packet)
                    rc = client.loop_misc()
                elif self._stalled(sock):
                    return
            if rc != self._ok:
                return

    def _stalled(self, sock: Any) -> bool:
        """True when the broker has not taken our bytes for two keepalives: give up on it."""
        now = self._clock()
        if self._stalled_since is None:
            self._stalled_since = now
            return False
        if now - self._stalled_since < 2 * self._keepalive:
            return False
        self._problem("connection lost (the broker took nothing for %.0f s)", 2 * self._keepalive)
        self._stalled_since = None
        self._connected = False
        self._lost_tail()
        sock.close()  # paho's reconnect() starts afresh
        return True

    def _lost_tail(self) -> None:
        """Count a message whose end never reached the socket before the connection ended."""
        if self._tail is not None:
            self._tail = None
            self.tally.sent -= 1
            self.tally.drop("not_connected", "connection lost while it was being written")

    def _problem(self, fmt: str, *args: Any) -> None:
        text = fmt % args
        self._news.log(logging.WARNING, text, "%s: %s; retrying in the background", self.name, text)

    # --- paho callbacks (called with self._lock held) ---------------------------------

    def _connack(self, reason: Any, props: Any) -> bool:
        """A CONNACK: False (said, at a limited rate) when the broker refused; else the
        connect is counted and the broker's packet limit taken (MQTT 5; else the protocol's)."""
        if reason.is_failure:
            self._problem("broker refused the connection: %s", reason)
            return False
        self.connects += 1
        self._max_packet = int(getattr(props, "MaximumPacketSize", MAX_PACKET))
        return True

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        was = self._connected
        self._connected = False
        self._lost_tail()
        if self._closing:
            return
        if was:
            by = "by the broker " if getattr(flags, "is_disconnect_packet_from_server", 0) else ""
            self._problem("connection lost %s(%s)", by, reason)


def describe_os_error(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    reason = getattr(exc, "reason", None)  # ssl errors: e.g. CERTIFICATE_VERIFY_FAILED
    verify = getattr(exc, "verify_message", None)
    if verify:
        return f"TLS: {verify}"
    if reason and reason not in text:
        return f"{text} ({reason})"
    return text


def _drain(sock: socket.socket) -> None:
    try:
        while sock.recv(512):
            pass
    except OSError:  # BlockingIOError: nothing left
        pass
