"""MQTT output: QoS 0 publishes, written to the socket at once or dropped, never buffered.

Topics: `{topic_prefix}/{device_id}/hb` (heartbeats and the bye),
`{topic_prefix}/{device_id}/rd/{sensor}` (readings) and
`{topic_prefix}/{device_id}/status`: retained `online` on every connect,
retained `offline` as the Last Will and on a graceful stop. Payloads are wire v1.

How it keeps the delivery rules with paho (whose QoS 0 packets wait in an
unbounded deque while the socket cannot take them, and whose `loop_start`
thread writes them later):
- the sending thread builds the QoS 0 PUBLISH and writes it to the socket
  itself, only while connected and while nothing earlier is unwritten (paho's
  `want_write()` is false and no message of ours is partly out); otherwise the
  message is dropped as `not_connected` or `backpressure`. A packet the socket
  does not take at all is dropped; of one it took in part, only the end is kept
  and finished before any other byte. Memory stays flat while a broker stalls.
- paho does the rest (CONNECT, keepalive, reading, Will, TLS, auth) through its
  external-loop API (`loop_read` / `loop_write` / `loop_misc`), driven by our own
  background thread; one lock keeps writers apart. Connecting, TLS handshakes
  and name lookups happen only there, with capped exponential backoff and
  jitter; the sampling path never waits for them. A connection that takes no
  byte for two keepalives is dropped and made again.
- QoS is 0, always: paho replays QoS 1 on reconnect, which is buffering.
- paho is imported only when an MQTT output is configured.

The password comes from `password_file`, else the `FLEETBEAT_MQTT_PASSWORD`
environment variable, else `$CREDENTIALS_DIRECTORY/mqtt-password` (systemd's
`LoadCredential=mqtt-password:/etc/fleetbeat/mqtt-password`). It is read once at
start, never logged, and never printed by `check-config`.

```toml
[[outputs.mqtt]]
host = "broker.lan"              # broker host name or IP address
port = 8883                      # default 1883, or 8883 when [tls] is set
client_id = "fleetbeat-pi-1"     # default "fleetbeat-{device_id}"
topic_prefix = "fleetbeat"       # topics: {prefix}/{device_id}/hb, .../rd/{sensor}, .../status
protocol = "3.1.1"               # "3.1.1" or "5"
keepalive = "30s"                # at least 1 s: the broker's Last Will fires after ~1.5 of it
username = "pi-1"                # optional
password_file = "/etc/fleetbeat/mqtt-password"  # optional; see above for the other sources
max_payload = 262144             # bytes; larger readings are split into several messages
reconnect_min = "1s"             # first wait before reconnecting; doubles per failure ...
reconnect_max = "10s"            # ... up to this, each wait jittered down to half
connect_timeout = "10s"          # TCP connect + TLS handshake, in the background
# message_expiry = "5m"          # MQTT 5 only: the broker drops what it could not deliver by then

[outputs.mqtt.tls]               # present (even empty): TLS, checked against the system CAs
ca_file = "/etc/fleetbeat/ca.pem"  # CA bundle that signed the broker's certificate
cert_file = "/etc/fleetbeat/client.pem"  # client certificate, for brokers that require one
key_file = "/etc/fleetbeat/client.key"   # its private key
insecure = false                 # true: skip the host name check (never in production)
```
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import select
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Callable, Optional

from fleetbeat.config.frozen import dataclass
from fleetbeat.config.schema import (
    Problems,
    duration,
    integer,
    option,
    string,
    table,
)
from fleetbeat.config.schema import boolean as boolean_
from fleetbeat.errors import ConfigError
from fleetbeat.logutil import RateLimitedLog
from fleetbeat.netaddr import hostport
from fleetbeat.outputs.base import Identity, Outgoing, Tally

if TYPE_CHECKING:  # paho is imported at run time only when an MQTT output is built
    from paho.mqtt.client import Client

log = logging.getLogger(__name__)

PASSWORD_ENV = "FLEETBEAT_MQTT_PASSWORD"  # noqa: S105 - a variable name
CREDENTIAL_NAME = "mqtt-password"  # systemd LoadCredential= name, see systemd/
TOPIC_PREFIX = r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*"
CLIENT_ID = r"[A-Za-z0-9_.:-]{1,128}"
_PATH = "a file path"


@dataclass(frozen=True)
class MqttTlsConfig:
    ca_file: Optional[str] = option(None, string(what=_PATH))
    cert_file: Optional[str] = option(None, string(what=_PATH))
    key_file: Optional[str] = option(None, string(what=_PATH))
    insecure: bool = option(False, boolean_())

    def check(self, path: str, problems: Problems) -> None:
        if self.key_file and not self.cert_file:
            problems.add(f"{path}.key_file", "needs cert_file (the certificate it belongs to)")

    def check_files(self, path: str, problems: Problems) -> None:
        for key in ("ca_file", "cert_file", "key_file"):
            _check_readable(getattr(self, key), f"{path}.{key}", problems)


@dataclass(frozen=True)
class MqttConfig:
    host: str = option("127.0.0.1", string(what="a host name or IP address"))
    port: Optional[int] = option(None, integer(min=1, max=65535))
    client_id: Optional[str] = option(
        None, string(pattern=CLIENT_ID, what="1-128 characters of A-Z a-z 0-9 _ . : -")
    )
    topic_prefix: str = option(
        "fleetbeat",
        string(pattern=TOPIC_PREFIX, what="topic levels of A-Z a-z 0-9 _ . - joined by /"),
    )
    protocol: str = option("3.1.1", string(choices=("3.1.1", "5")))
    keepalive: float = option(30.0, duration(min=1.0, max=65535.0))
    username: Optional[str] = option(None, string(what="a user name"))
    password_file: Optional[str] = option(None, string(what=_PATH))
    tls: Optional[MqttTlsConfig] = option(None, table(MqttTlsConfig))
    message_expiry: Optional[float] = option(None, duration(min=1.0, max=4294967295.0))
    max_payload: int = option(262144, integer(min=256, max=268435455))
    reconnect_min: float = option(1.0, duration(min=0.05))
    reconnect_max: float = option(10.0, duration(min=0.05))
    connect_timeout: float = option(10.0, duration(min=0.1))

    def __post_init__(self) -> None:
        if self.port is None:  # the default depends on TLS: fill it in so it shows everywhere
            object.__setattr__(self, "port", 8883 if self.tls is not None else 1883)

    def check(self, path: str, problems: Problems) -> None:
        if self.message_expiry is not None and self.protocol != "5":
            problems.add(
                f"{path}.message_expiry", 'needs protocol = "5" (MQTT 3.1.1 has no expiry)'
            )
        if self.password_file is not None and self.username is None:
            problems.add(f"{path}.password_file", "needs username (MQTT sends no password alone)")

    def target(self) -> str:
        return hostport(self.host, self.port)

    @classmethod
    def check_together(cls, configs: Sequence[Any], path: str, problems: Problems) -> None:
        """Two sessions with one broker and client id: the broker keeps dropping one."""
        brokers = [(c.host, c.port, c.client_id or "") for c in configs]
        for host, port, client_id in sorted({b for b in brokers if brokers.count(b) > 1}):
            who = f'client_id "{client_id}"' if client_id else "the default client_id"
            problems.add(path, f"two outputs connect to {host}:{port} with {who}: "
                         "the broker would keep disconnecting one for the other")  # fmt: skip

    def check_files(self, path: str, problems: Problems) -> None:
        """The files the agent reads at start exist and are readable (not for examples)."""
        _check_readable(self.password_file, f"{path}.password_file", problems)
        if self.tls is not None:
            self.tls.check_files(f"{path}.tls", problems)
        if self.reconnect_min > self.reconnect_max:
            problems.add(f"{path}.reconnect_min", "must not exceed reconnect_max")


def _check_readable(file: Optional[str], path: str, problems: Problems) -> None:
    """A file the agent must read at start: found and readable now (check-config says so)."""
    if file is None:
        return
    if not os.path.isfile(file):
        problems.add(path, f'expected a readable file, got "{file}" (no such file)')
    elif not os.access(file, os.R_OK):
        problems.add(path, f'expected a readable file, got "{file}" (permission denied)')


def read_password(config: MqttConfig, *, name: str, environ: Mapping[str, str]) -> Optional[str]:
    """The password from password_file, the environment or a systemd credential; or None."""
    path = config.password_file
    key = "password_file"
    if path is None:
        if PASSWORD_ENV in environ:
            return environ[PASSWORD_ENV]
        cred_dir = environ.get("CREDENTIALS_DIRECTORY")
        if not cred_dir or not os.path.exists(os.path.join(cred_dir, CREDENTIAL_NAME)):
            return None
        path = os.path.join(cred_dir, CREDENTIAL_NAME)
        key = "systemd credential"
    try:
        with open(path, encoding="utf-8") as f:
            password = f.read()
    except OSError as exc:
        raise ConfigError([f'{name}: {key}: cannot read "{path}": {exc.strerror or exc}']) from None
    except UnicodeDecodeError:
        raise ConfigError([f'{name}: {key}: "{path}" is not UTF-8 text']) from None
    password = password.rstrip("\r\n")  # editors add a final newline; it is not part of it
    if not password:
        if config.password_file is None:
            return None  # install.sh creates the credential empty: no password set yet
        raise ConfigError([f'{name}: {key}: "{path}" is empty'])
    return password


def _describe_os_error(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    reason = getattr(exc, "reason", None)  # ssl errors: e.g. CERTIFICATE_VERIFY_FAILED
    verify = getattr(exc, "verify_message", None)
    if verify:
        return f"TLS: {verify}"
    if reason and reason not in text:
        return f"{text} ({reason})"
    return text


def _varint(n: int) -> bytes:
    """MQTT's variable byte integer (the remaining length)."""
    if n < 0x4000:  # heartbeats and most readings: one or two bytes
        return bytes((n,)) if n < 0x80 else bytes(((n & 0x7F) | 0x80, n >> 7))
    out = bytearray()
    while True:
        n, digit = n >> 7, n & 0x7F
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _publish_head(topic: str, props: bytes) -> bytes:
    """What follows the fixed header of a QoS 0 PUBLISH on `topic`, before the payload."""
    raw = topic.encode()
    return len(raw).to_bytes(2, "big") + raw + props


_PUBLISH = (b"\x30", b"\x31")  # QoS 0 PUBLISH, without / with the retain flag


class MqttOutput:
    """Publishes each payload at QoS 0 at once, or drops and counts it."""

    Config = MqttConfig

    def __init__(
        self,
        config: MqttConfig,
        *,
        identity: Identity,
        name: str = "",
        environ: Mapping[str, str] = os.environ,
        rng: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.config = config
        self.name = name or f"mqtt {config.target()}"
        self.tally = Tally(self.name, log)
        self.max_payload = config.max_payload
        self._rng = rng
        self._clock = clock
        self._ok = mqtt.MQTT_ERR_SUCCESS
        dev = identity.dev
        base = f"{config.topic_prefix}/{dev}"
        self.hb_topic = f"{base}/hb"
        self.status_topic = f"{base}/status"
        self._rd_base = f"{base}/rd/"
        self._where = f"{config.host}:{config.port}"

        v5 = config.protocol == "5"
        # MQTT 5 PUBLISH carries a property block (empty, or the message expiry)
        props = b""
        if v5:
            expiry = config.message_expiry
            props = b"\x00" if expiry is None else b"\x05\x02" + int(expiry).to_bytes(4, "big")
        self._props = props
        self._status_head = _publish_head(self.status_topic, b"\x00" if v5 else b"")
        self._hb_head = _publish_head(self.hb_topic, props)
        self._rd_heads: dict[Optional[str], bytes] = {}

        password = read_password(config, name=self.name, environ=environ)
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=config.client_id or f"fleetbeat-{dev}",
            clean_session=None if v5 else True,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        )
        if config.username is not None:
            client.username_pw_set(config.username, password)
        elif password is not None and config.password_file is None:
            log.info("%s: a password is available but no username is set: not using it", self.name)
        self._want_write: tuple[type[BaseException], ...] = (BlockingIOError,)
        if config.tls is not None:
            self._set_tls(client, config.tls)
        client.will_set(self.status_topic, b"offline", qos=0, retain=True)
        client.connect_timeout = config.connect_timeout
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        self._keepalive = max(1, round(config.keepalive))
        port = config.port or 1883  # always set by MqttConfig.__post_init__
        if v5:
            client.connect_async(config.host, port, self._keepalive, clean_start=True)
        else:
            client.connect_async(config.host, port, self._keepalive)
        self._client: Client = client

        # Guards every use of the client and its socket: one writer at a time, and TLS
        # sockets must not read and write at once. Held only for non-blocking work.
        self._lock = threading.RLock()
        self._connected = False  # CONNACK accepted and the socket not lost since
        self._closing = False
        self._offline_sent = False
        self._max_packet = 268435460  # MQTT's limit; an MQTT 5 broker may announce less
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

    def _set_tls(self, client: Client, tls: MqttTlsConfig) -> None:
        import ssl

        try:
            client.tls_set(
                ca_certs=tls.ca_file,
                certfile=tls.cert_file,
                keyfile=tls.key_file,
                cert_reqs=ssl.CERT_REQUIRED,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            raise ConfigError(
                [f"{self.name}: tls: cannot load the certificates: {_describe_os_error(exc)}"]
            ) from None
        client.tls_insecure_set(tls.insecure)
        # a TLS socket that cannot write says so with this; the record must be retried whole
        self._want_write = (BlockingIOError, ssl.SSLWantWriteError)

    # --- the sending path (any thread; never blocks) -----------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"mqtt {self._where}", daemon=True
            )
            self._thread.start()

    def send(self, payload: bytes, msg: Optional[Outgoing] = None) -> None:
        kind = msg.kind if msg is not None else "hb"
        if kind == "rd":
            src = msg.src if msg is not None else None
            head = self._rd_heads.get(src)
            if head is None:
                head = self._rd_heads[src] = self._rd_head(src)
        else:
            head = self._hb_head
        with self._lock:  # the network thread corrects `sent` when a message's end is lost
            try:
                if kind == "bye" and self._connected:
                    # the retained status first, so `offline` is set when the bye is seen
                    self._offline_sent = (
                        self._publish(self._status_head, b"offline", retain=True) is None
                    )
                reason = self._publish(head, payload)
            except Exception as exc:  # an output never raises into the loop
                log.debug("%s: publish failed", self.name, exc_info=True)
                reason = f"error: {type(exc).__name__}"
            if reason is None:
                self.tally.sent += 1
            else:
                self.tally.drop(reason)

    def _rd_head(self, src: Optional[str]) -> bytes:
        level = (src or "unknown").replace("+", "_").replace("#", "_").replace("\0", "_")
        return _publish_head(self._rd_base + level, self._props)

    def _publish(self, head: bytes, payload: bytes, *, retain: bool = False) -> Optional[str]:
        """Write one PUBLISH now; None when the socket took it, else the drop reason.

        Called with the lock held. The packet is built and written here rather than by
        paho's publish(), which would keep it in its deque when the socket is full:
        here a packet the socket does not take at all is dropped, and only the end
        of one the socket took in part is kept, to be finished before anything else.
        """
        if not self._connected or self._closing:
            return "not_connected"
        return self._write(head, payload, retain)

    def _write(self, head: bytes, payload: bytes, retain: bool) -> Optional[str]:
        if not self._flush():
            return "backpressure"
        sock = self._client.socket()
        if sock is None:
            return "not_connected"
        packet = b"".join((_PUBLISH[retain], _varint(len(head) + len(payload)), head, payload))
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
                self._problem("cannot connect to %s: %s", self._where, _describe_os_error(exc))
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
        cfg = self.config
        ceiling = min(cfg.reconnect_max, cfg.reconnect_min * 2 ** min(max(failures - 1, 0), 30))
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

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self._problem("broker refused the connection: %s", reason)
            return
        self.connects += 1
        self._max_packet = int(getattr(props, "MaximumPacketSize", 268435460))
        # Encoders size messages by max_payload: keep it under the broker's packet limit,
        # so a reading is split and a heartbeat sheds its extras instead of being dropped.
        overhead = 5 + 2 + len(self._rd_base) + 128 + len(self._props)  # header, topic, props
        self.max_payload = max(256, min(self.config.max_payload, self._max_packet - overhead))
        tls = ", TLS" if self.config.tls is not None else ""
        self._news.log(logging.INFO, "connected", "%s: connected (MQTT %s%s)", self.name,
                       self.config.protocol, tls)  # fmt: skip
        if not self._closing:
            self._tail = None
            self._connected = True
            self._publish(self._status_head, b"online", retain=True)

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

    # --- stopping -----------------------------------------------------------------------

    def close(self, *, timeout: float = 1.0) -> None:
        """Let `offline` and the bye reach the socket, disconnect cleanly, stop the thread.

        If the socket cannot take them within `timeout`, the connection is dropped
        without a DISCONNECT, so the broker publishes the Will (`offline`) itself.
        """
        deadline = time.monotonic() + timeout
        client = self._client
        clean = False
        with self._lock:
            was_connected = self._connected
            self._closing = True
        while was_connected:
            with self._lock:
                if client.socket() is None:
                    break
                if not self._offline_sent and self._connected:
                    # a clean DISCONNECT suppresses the Will: `offline` must be out first
                    self._offline_sent = self._write(self._status_head, b"offline", True) is None
                if self._offline_sent and self._flush():
                    self._connected = False
                    client.disconnect()  # DISCONNECT written now; paho then closes the socket
                    clean = True
                    break
            if time.monotonic() >= deadline:
                break
            time.sleep(0.01)
        if was_connected and not clean:
            log.warning(
                "%s: the broker did not take the last messages within %.1f s; closing "
                "without DISCONNECT so it publishes the Will",
                self.name,
                timeout,
            )
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
            if self._thread.is_alive():  # still inside a blocking connect: it is a daemon
                log.debug("%s: background thread still connecting; leaving it", self.name)
                return
        with self._lock:
            sock = client.socket()
            if sock is not None and not clean:
                sock.close()
        self._wake_r.close()
        self._wake_w.close()


def _drain(sock: socket.socket) -> None:
    try:
        while sock.recv(512):
            pass
    except OSError:  # BlockingIOError: nothing left
        pass


if TYPE_CHECKING:  # mypy checks the class against the output contract
    from fleetbeat.outputs.base import OutputClass

    _: OutputClass = MqttOutput
