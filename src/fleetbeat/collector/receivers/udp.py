"""UDP receiver: datagrams read in a dedicated thread doing blocking `recvfrom`.

One system call per datagram and no event-loop wake-ups, several times what an
asyncio DatagramProtocol reaches. Always on; its keys are `[collector]`'s own:

```toml
[collector]
udp_listen = "0.0.0.0:9746"      # "[::]:9746" for IPv6 (dual-stack)
udp_receive_buffer = 4194304     # bytes of SO_RCVBUF (the kernel caps it at rmem_max)
```
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from typing import Any, Optional

from fleetbeat.collector.config import CollectorSection, split_hostport
from fleetbeat.collector.receivers.base import FleetInput, ReceiverError
from fleetbeat.logutil import RateLimitedLog
from fleetbeat.netaddr import hostport

log = logging.getLogger(__name__)
_limited = RateLimitedLog(log)

RECV_SIZE = 65536  # a whole UDP datagram, whatever max_payload says: oversize is counted


def bind_udp(listen: str, receive_buffer: int = 0) -> socket.socket:
    """A blocking UDP socket bound to "host:port" or "[v6]:port" (dual-stack for "[::]")."""
    parsed = split_hostport(listen)
    if parsed is None:
        raise ReceiverError(f"bad UDP listen address {listen!r}")
    host, port = parsed
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        if receive_buffer > 0:
            # the kernel caps this at net.core.rmem_max; a bigger buffer rides out bursts
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ReceiverError(f"cannot listen on UDP {listen}: {exc.strerror or exc}") from exc
    return sock


def kernel_drops(inode: int, proc: str = "/proc") -> Optional[int]:
    """The kernel's drop count for the UDP socket with this inode, or None when not listed.

    The last column of /proc/net/udp and udp6 (the socket's `sk_drops`): datagrams
    the kernel threw away, mostly because the receive buffer was full. Read when
    someone asks (a scrape), so the recvfrom loop pays nothing.
    """
    wanted = str(inode)
    for name in ("udp", "udp6"):
        try:
            with open(os.path.join(proc, "net", name)) as f:
                next(f, None)  # the header
                for line in f:
                    fields = line.split()
                    if len(fields) >= 13 and fields[9] == wanted:
                        return int(fields[12])
        except (OSError, ValueError):
            continue
    return None


class UdpReceiver:
    """Reads datagrams in its own thread and hands each to `fleet.receive`.

    Args:
        fleet: what every datagram is handed to.
        config: the `[collector]` section (`udp_listen`, `udp_receive_buffer`).
        sock: a socket bound already (`bind_udp`), instead of binding `udp_listen`.
        proc: where /proc is, for the kernel's drop counter (tests point it elsewhere).
    """

    def __init__(self, *, fleet: FleetInput, config: CollectorSection,
                 sock: Optional[socket.socket] = None, proc: str = "/proc") -> None:  # fmt: skip
        self.fleet = fleet
        if sock is None:
            sock = bind_udp(config.udp_listen, config.udp_receive_buffer)
        self.sock = sock
        self.address: tuple[Any, ...] = sock.getsockname()
        self.name = f"udp {hostport(str(self.address[0]), self.address[1])}"
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="udp-receiver", daemon=True)
        self._inode = os.fstat(sock.fileno()).st_ino
        self._proc = proc
        self._drops = 0
        fleet.watch_kernel_drops("udp", self.kernel_drops)

    def kernel_drops(self) -> int:
        """Datagrams the kernel dropped on this socket (the last count once it is closed)."""
        n = kernel_drops(self._inode, self._proc)
        if n is not None:
            self._drops = n
        return self._drops

    @staticmethod
    def enabled(config: CollectorSection) -> bool:
        return True  # the collector always listens on udp_listen

    def stats(self) -> dict[str, int]:
        return {"kernel_drops": self.kernel_drops()}

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        recvfrom = self.sock.recvfrom
        receive = self.fleet.receive
        while True:
            try:
                data, addr = recvfrom(RECV_SIZE)
            except OSError as exc:
                if self._stopping:
                    return
                _limited.log(logging.WARNING, "recv", "UDP receive failed: %s", exc)
                continue
            if self._stopping:
                return
            try:
                receive(data, addr, "udp")
            except Exception as exc:  # a bug must not stop reception; logged, rate-limited
                _limited.log(logging.ERROR, "bug", "error handling a datagram: %r", exc)

    def close(self, *, timeout: float = 2.0) -> None:
        self._stopping = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocking recvfrom
        if self._thread.is_alive():
            self._thread.join(timeout)
        self.sock.close()
