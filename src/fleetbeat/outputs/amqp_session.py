"""An AMQP 0-9-1 connection's set-up: the URL, the blocking handshake, backoff.

`connect` does what may wait (name lookup, TCP connect, TLS handshake,
Connection.Start/Tune/Open, Channel.Open) on a blocking socket with a timeout.
Only background threads call it: the agent output's (`amqp_link`) and the
collector's consumer (`fleetbeat.collector.receivers.amqp_consume`).
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Optional
from urllib.parse import unquote, urlsplit

from fleetbeat import __version__
from fleetbeat.config.frozen import dataclass
from fleetbeat.config.schema import INVALID, Parser, Problems, duration, option, string, table
from fleetbeat.config.secrets import PATH, TlsConfig, read_secret
from fleetbeat.outputs import amqp_frames as f

if TYPE_CHECKING:  # ssl costs 3.9 MiB of RSS: imported only for amqps://
    import ssl

FRAME_MAX = 131072  # what we propose; RabbitMQ's default too


class Endpoint(NamedTuple):
    tls: bool
    host: str
    port: int
    user: str
    vhost: str

    def target(self) -> str:
        """The URL without any password: names the output in logs."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        scheme = "amqps" if self.tls else "amqp"
        return f"{scheme}://{self.user}@{host}:{self.port}/{self.vhost.replace('/', '%2F')}"


def parse_url(text: str) -> Endpoint:
    """amqp://user@host:port/vhost (amqps:// for TLS); ValueError says what is wrong.

    The vhost is the path, percent-decoded (`%2F` is "/", RabbitMQ's default); no
    path means "/". A password in the URL is refused: it belongs in password_file.
    """
    parts = urlsplit(text)
    if parts.scheme not in ("amqp", "amqps"):
        raise ValueError("expected an amqp:// or amqps:// URL")
    if parts.password is not None:
        raise ValueError("a password in the URL; put it in password_file instead")
    if not parts.hostname:
        raise ValueError("no host in the URL")
    port = parts.port or (5671 if parts.scheme == "amqps" else 5672)  # raises on a bad port
    vhost = unquote(parts.path[1:]) if parts.path not in ("", "/") else "/"
    user = unquote(parts.username) if parts.username else "guest"
    return Endpoint(parts.scheme == "amqps", parts.hostname, port, user, vhost)


def amqp_url() -> Parser:
    """An amqp:// or amqps:// URL (see `parse_url`)."""

    def parse(value: Any, path: str, problems: Problems) -> Any:
        if not isinstance(value, str):
            return problems.expected(path, 'an AMQP URL such as "amqp://user@host/%2F"', value)
        try:
            parse_url(value)
        except ValueError as exc:
            problems.add(path, f"{exc}")  # never echo the value: it may hold a password
            return INVALID
        return value

    return parse


PASSWORD_ENV = "FLEETBEAT_AMQP_PASSWORD"  # noqa: S105 - a variable name
CREDENTIAL_NAME = "amqp-password"  # systemd LoadCredential= name
NAME = r"[A-Za-z0-9_.:-]{1,127}"  # exchange and queue names RabbitMQ accepts (a subset)
PREFIX = r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+){0,7}"


@dataclass(frozen=True)
class AmqpConnection:
    """The keys the agent's `[[outputs.amqp]]` and the collector's `[collector.amqp]` share."""

    url: str = option("amqp://guest@127.0.0.1:5672/%2F", amqp_url())
    password_file: Optional[str] = option(None, string(what=PATH))
    tls: Optional[TlsConfig] = option(None, table(TlsConfig))
    exchange: str = option("fleetbeat", string(pattern=NAME, what="an exchange name"))
    topic_prefix: str = option(
        "fleetbeat", string(pattern=PREFIX, what="words of A-Z a-z 0-9 _ - joined by .")
    )
    heartbeat: float = option(30.0, duration(min=1.0, max=65535.0))
    connect_timeout: float = option(10.0, duration(min=0.1))
    reconnect_min: float = option(1.0, duration(min=0.05))
    reconnect_max: float = option(30.0, duration(min=0.05))

    def check(self, path: str, problems: Problems) -> None:
        if self.tls is not None and not self.url.startswith("amqps://"):
            problems.add(f"{path}.tls", "needs an amqps:// url")
        if self.reconnect_min > self.reconnect_max:
            problems.add(f"{path}.reconnect_min", "must not exceed reconnect_max")


def read_password(file: Optional[str], user: str, *, name: str,
                  environ: Mapping[str, str]) -> str:  # fmt: skip
    """The password (file, environment, systemd credential); RabbitMQ's guest has "guest"."""
    secret = read_secret(file, env_var=PASSWORD_ENV, credential=CREDENTIAL_NAME, name=name,
                         environ=environ)  # fmt: skip
    if secret is None:
        return "guest" if user == "guest" else ""
    return secret


# What a lost connection, a broker's Close or a peer that does not speak AMQP raises:
# reconnect (with backoff) on any of them, never let one end a thread.
PEER_ERRORS = (OSError, ValueError, struct.error, IndexError)


class AmqpClosed(ConnectionError):
    """The broker closed the connection or a channel, or sent something we cannot read."""


class Session:
    """A handshaken connection with channel 1 open; blocking calls for set-up only."""

    def __init__(self, sock: socket.socket, frame_max: int, heartbeat: int) -> None:
        self.sock = sock
        self.frame_max = frame_max
        self.heartbeat = heartbeat  # seconds; 0: none
        self.buf = bytearray()
        self.frames: list[f.Frame] = []

    def read_frame(self) -> f.Frame:
        while not self.frames:
            data = self.sock.recv(65536)
            if not data:
                raise AmqpClosed("the broker closed the connection")
            self.buf += data
            self.frames, used = f.split_frames(self.buf, self.frame_max)
            del self.buf[:used]
        return self.frames.pop(0)

    def call(self, request: bytes, expect: tuple[int, int]) -> bytes:
        """Send a method and return the payload of the `expect` reply (a Close raises)."""
        if request:
            self.sock.sendall(request)
        while True:
            frame = self.read_frame()
            if frame.kind != f.METHOD:
                continue  # heartbeats
            ids = f.method_ids(frame.payload)
            if ids == expect:
                return frame.payload
            if ids in (f.CLOSE, f.CHANNEL_CLOSE):
                code, text = f.parse_close(frame.payload)
                with contextlib.suppress(OSError):
                    self.sock.sendall(f.close_ok(frame.channel))
                raise AmqpClosed(f"{code} {text}")


def connect(endpoint: Endpoint, password: str, *, tls: Optional[TlsConfig], heartbeat: int,
            timeout: float, capabilities: dict[str, bool]) -> Session:  # fmt: skip
    """Connect, handshake and open channel 1; blocking (background threads only)."""
    sock = socket.create_connection((endpoint.host, endpoint.port), timeout=timeout)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if endpoint.tls:
            sock = tls_context(tls).wrap_socket(sock, server_hostname=endpoint.host)
        sock.sendall(f.PROTOCOL_HEADER)
        session = Session(sock, f.MIN_FRAME_MAX, 0)
        start = session.call(b"", f.START)
        if "PLAIN" not in f.parse_start(start)[2]:
            raise AmqpClosed("the broker does not offer SASL PLAIN")
        props = {"product": "fleetbeat", "version": __version__, "capabilities": capabilities}
        tune = session.call(f.start_ok(props, endpoint.user, password), f.TUNE)
        _, server_max, server_hb = f.parse_tune(tune)
        frame_max = min(server_max or FRAME_MAX, FRAME_MAX)
        # the lower non-zero interval (what RabbitMQ's own clients do); 0 only if both say 0
        beat = min(v for v in (heartbeat, server_hb, 65535) if v) if heartbeat or server_hb else 0
        sock.sendall(f.tune_ok(1, frame_max, beat))
        session.frame_max, session.heartbeat = frame_max, beat
        session.call(f.connection_open(endpoint.vhost), f.OPEN_OK)
        session.call(f.channel_open(1), f.CHANNEL_OPEN_OK)
    except BaseException:
        sock.close()
        raise
    return session


def tls_context(tls: Optional[TlsConfig]) -> ssl.SSLContext:
    """A client context checked against `ca_file` (else the system CAs), with a client cert."""
    import ssl

    cfg = tls or TlsConfig()
    ctx = ssl.create_default_context(cafile=cfg.ca_file)
    if cfg.cert_file:
        ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
    if cfg.insecure:
        ctx.check_hostname = False
    return ctx


def uniform() -> float:
    """A draw in [0, 1) for the jitter, without importing `random` (memory on a Pi Zero)."""
    return int.from_bytes(os.urandom(7), "big") / 2**56


def backoff(failures: int, low: float, high: float, rng: Callable[[], float]) -> float:
    """Capped exponential backoff, jittered down to half: a fleet spreads out."""
    ceiling = min(high, low * 2 ** min(max(failures - 1, 0), 30))
    return float(ceiling * (0.5 + 0.5 * rng()))
