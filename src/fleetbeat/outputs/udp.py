"""UDP output: one non-blocking datagram per payload, sent at once or dropped.

Host names are resolved in a background thread (at start, then every
`resolve_every`), never on the sending path: until a name resolves, messages
are dropped as `unresolved`; if it stops resolving, the last address is kept.

```toml
[[outputs.udp]]
host = "127.0.0.1"       # collector address: IPv4, IPv6 or a host name
port = 9746              # collector UDP port
format = "json"          # "json" (wire v1, for the collector), "statsd", "dogstatsd", "influx"
max_datagram = 1432      # bytes; larger readings are split into several datagrams
resolve_every = "5m"     # how often a host name is resolved again
```
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Callable, Optional

from fleetbeat.config.frozen import dataclass
from fleetbeat.config.schema import Problems, duration, integer, option, string
from fleetbeat.logutil import RateLimitedLog
from fleetbeat.netaddr import hostport
from fleetbeat.outputs.base import Identity, Outgoing, Tally

log = logging.getLogger(__name__)

# errno -> drop reason; every other OSError is dropped as "os_error"
_REASONS = {
    errno.EAGAIN: "buffer_full",
    errno.ENOBUFS: "no_buffer_space",
    errno.ECONNREFUSED: "refused",
    errno.ENETUNREACH: "network_unreachable",
    errno.EHOSTUNREACH: "host_unreachable",
    errno.EHOSTDOWN: "host_unreachable",
    errno.ENETDOWN: "network_down",
    errno.EMSGSIZE: "too_large",
    errno.EPERM: "blocked",
    errno.EACCES: "blocked",
    errno.EADDRNOTAVAIL: "network_unreachable",
}

Resolver = Callable[..., Any]


@dataclass(frozen=True)
class UdpConfig:
    host: str = option("127.0.0.1", string(what="a host name or IP address"))
    port: int = option(9746, integer(min=1, max=65535))
    max_datagram: int = option(1432, integer(min=256, max=65507))
    resolve_every: float = option(300.0, duration(min=1.0))

    def target(self) -> str:
        return hostport(self.host, self.port)

    def check_files(self, path: str, problems: Problems) -> None:
        """UDP reads no file."""

    @classmethod
    def check_together(cls, configs: Sequence[Any], path: str, problems: Problems) -> None:
        """Any number of UDP outputs may send anywhere."""


def _literal_address(host: str, port: int) -> Optional[tuple[int, Any]]:
    """(family, sockaddr) if `host` is an IP literal, resolved without any lookup."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            info = socket.getaddrinfo(
                host, port, family, socket.SOCK_DGRAM, 0, socket.AI_NUMERICHOST
            )
        except (socket.gaierror, UnicodeError):
            continue
        return info[0][0], info[0][4]
    return None


class UdpOutput:
    """Sends each payload as one datagram, or drops and counts it."""

    Config = UdpConfig

    def __init__(
        self,
        config: UdpConfig,
        *,
        name: str = "",
        identity: Optional[Identity] = None,  # the contract's keyword; datagrams need no topic
        resolver: Resolver = socket.getaddrinfo,
        socket_factory: Callable[[int, int], socket.socket] = socket.socket,
    ) -> None:
        self.config = config
        self.name = name or f"udp {config.target()}"
        self.tally = Tally(self.name, log)
        self.max_payload = config.max_datagram
        self._resolver = resolver
        self._socket_factory = socket_factory
        self._target = _literal_address(config.host, config.port)
        self._sock: Optional[socket.socket] = None
        self._connected_to: Any = None
        self._stop = threading.Event()
        self._closed = False
        self._log = RateLimitedLog(log, every=600.0)
        self._thread: Optional[threading.Thread] = None

    def start(self) -> None:
        if self._target is None and self._thread is None:
            self._thread = threading.Thread(
                target=self._resolve_loop, name=f"resolve {self.config.host}", daemon=True
            )
            self._thread.start()

    def close(self, *, timeout: float = 1.0) -> None:
        self._closed = True  # a streaming thread may still hold this output after a reload
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def send(self, payload: bytes, msg: Optional[Outgoing] = None) -> None:
        target = self._target  # one read: the resolver thread may replace it
        sock = self._sock
        if self._closed:
            self.tally.drop("closed", "the output was closed (reload or stop)")
            return
        try:
            if sock is None or target is not self._connected_to:
                if target is None:
                    self.tally.drop("unresolved", self.config.host)
                    return
                sock = self._connect(target)
            sock.send(payload)
        except OSError as exc:  # BlockingIOError included: EAGAIN
            reason = _REASONS.get(exc.errno or 0, "os_error")
            self.tally.drop(reason, exc.strerror or str(exc))
            return
        self.tally.sent += 1

    def _connect(self, target: tuple[int, Any]) -> socket.socket:
        """A socket connected to `target`; connecting a UDP socket sends nothing."""
        family, sockaddr = target
        sock = self._sock
        if sock is None or sock.family != family:
            if sock is not None:
                sock.close()
            self._sock = None
            sock = self._socket_factory(family, socket.SOCK_DGRAM)
            sock.setblocking(False)
            self._sock = sock
        self._connected_to = None
        sock.connect(sockaddr)  # may raise ENETUNREACH: retried at the next send
        self._connected_to = target
        return sock

    def _resolve_loop(self) -> None:
        cfg = self.config
        while not self._stop.is_set():
            try:
                info = self._resolver(cfg.host, cfg.port, 0, socket.SOCK_DGRAM)
                family, _, _, _, sockaddr = info[0]
                new = (family, sockaddr)
                if new != self._target:
                    log.info("%s: %s resolves to %s", self.name, cfg.host, sockaddr[0])
                    self._target = new
                wait = cfg.resolve_every
            except (OSError, UnicodeError, IndexError) as exc:
                keep = "keeping the last address" if self._target else "dropping until it does"
                self._log.log(logging.WARNING, "resolve", "%s: cannot resolve %s (%s); %s",
                              self.name, cfg.host, exc, keep)  # fmt: skip
                # an unresolved name is retried sooner than a resolved one is refreshed
                wait = min(cfg.resolve_every, 10.0 if self._target is None else cfg.resolve_every)
            self._stop.wait(wait)


if TYPE_CHECKING:  # mypy checks the class against the output contract
    from fleetbeat.outputs.base import OutputClass

    _: OutputClass = UdpOutput
