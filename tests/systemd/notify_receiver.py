"""A real sd_notify socket standing in for PID 1 (imported by the systemd tests)."""

from __future__ import annotations

import socket
import time
from typing import Callable, Optional


class NotifyReceiver:
    """A real AF_UNIX datagram socket that keeps every sd_notify message with its arrival time.

    `address` is what goes into NOTIFY_SOCKET: `@name` (abstract namespace) or a path.
    """

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.messages: list[tuple[float, dict[str, str]]] = []

    def poll(self, timeout: float = 0.0) -> None:
        """Read what has arrived, waiting up to `timeout` for the first datagram."""
        self.sock.settimeout(timeout if timeout > 0 else 0.0)  # 0.0: non-blocking
        try:
            while True:
                data = self.sock.recv(65536)
                fields = dict(line.split("=", 1) for line in data.decode().split("\n") if line)
                self.messages.append((time.monotonic(), fields))
                self.sock.setblocking(False)
        except (BlockingIOError, socket.timeout):
            pass

    def collect(self, seconds: float) -> None:
        """Keep reading for `seconds`, so that arrival times are accurate."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.poll(min(0.02, max(0.001, deadline - time.monotonic())))

    def times(self, key: str, value: Optional[str] = None) -> list[float]:
        """Arrival times of the messages carrying `key` (with `value`, if given)."""
        self.poll()
        return [t for t, f in self.messages if key in f and (value is None or f[key] == value)]

    def values(self, key: str) -> list[str]:
        self.poll()
        return [f[key] for _, f in self.messages if key in f]

    def kinds(self) -> list[str]:
        """Every message's keys in order, joined with '+' (e.g. 'READY+STATUS')."""
        self.poll()
        return ["+".join(sorted(f)) for _, f in self.messages]

    def wait_for(self, pred: Callable[[], object], timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            if time.monotonic() > deadline:
                raise AssertionError(f"not notified within {timeout} s; got {self.kinds()}")
            self.poll(0.05)

    def close(self) -> None:
        self.sock.close()
