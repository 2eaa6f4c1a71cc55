"""File descriptors for the HTTP servers: the RLIMIT_NOFILE budget, and accepting.

At start the soft RLIMIT_NOFILE is raised toward the hard limit to fit every
server's connection cap plus `FD_RESERVE`; where it cannot be, the cap shrinks
(logged). `Acceptor` accepts without ever spinning on a listener it cannot serve:
when accept() fails with EMFILE/ENFILE, a spare descriptor kept for the purpose
lets the waiting client in anyway (it takes the descriptor of the oldest waiting
connection, or, with none, gets a plain close at once) and accepting pauses
(50 ms doubling to 1 s).
"""

from __future__ import annotations

import collections
import errno
import logging
import os
import resource
import selectors
import socket
import threading
import time
from typing import Callable, Optional

from fleetbeat.logutil import RateLimitedLog

log = logging.getLogger(__name__)

# Descriptors left for the rest of the collector (UDP, the store, MQTT, logs, notifiers)
# when the soft RLIMIT_NOFILE is raised for the servers' connection caps.
FD_RESERVE = 256
_ACCEPT_ERRORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)

_claim_lock = threading.Lock()
_claimed = 0  # connections promised to live servers, for the RLIMIT_NOFILE arithmetic


def claim_fds(want: int) -> int:
    """Raise the soft RLIMIT_NOFILE for `want` more connections; how many fit."""
    global _claimed
    with _claim_lock:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        need = _claimed + want + FD_RESERVE
        if soft != resource.RLIM_INFINITY and soft < need:
            new = need if hard == resource.RLIM_INFINITY else min(hard, need)
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
                log.info("raised the soft file-descriptor limit from %d to %d for HTTP", soft, new)
                soft = new
            except (OSError, ValueError) as err:
                log.warning("cannot raise the file-descriptor limit above %d: %s", soft, err)
        room = want if soft == resource.RLIM_INFINITY else soft - _claimed - FD_RESERVE
        got = max(8, min(want, room))
        if got < want:
            log.warning("file-descriptor limit %d: HTTP serves at most %d connections, not %d",
                        soft, got, want)  # fmt: skip
        _claimed += got
        return got


def open_spare() -> Optional[int]:
    """A descriptor held in reserve, given up to learn whether a client waits (`Acceptor`)."""
    try:
        return os.open(os.devnull, os.O_RDONLY)
    except OSError:
        return None


def release_fds(n: int) -> None:
    global _claimed
    with _claim_lock:
        _claimed -= n


class Acceptor:
    """Accepts a server's clients on the selector thread, and pauses instead of spinning.

    Args:
        listener, sel: the listening socket (non-blocking) and the selector it is watched in.
        take: serves one accepted connection.
        evict_oldest: closes the oldest waiting connection (why, *args for the log);
            False when there is none.
        counts, ratelog: the server's counters and its rate-limited log.
    """

    def __init__(self, listener: socket.socket, sel: selectors.BaseSelector, *,
                 take: Callable[[socket.socket, tuple[str, int]], None],
                 evict_oldest: Callable[..., bool], counts: collections.Counter[str],
                 ratelog: RateLimitedLog) -> None:  # fmt: skip
        self._listener = listener
        self._sel = sel
        self._take = take
        self._evict_oldest = evict_oldest
        self._counts = counts
        self._ratelog = ratelog
        self._paused_until = 0.0
        self._backoff = 0.0
        self._spare = open_spare()
        sel.register(listener, selectors.EVENT_READ, None)

    def accept(self) -> None:
        """Take a burst of waiting clients, then let the other sockets have their turn."""
        for _ in range(64):
            try:
                sock, addr = self._listener.accept()
            except BlockingIOError:
                return
            except OSError as err:
                if err.errno in _ACCEPT_ERRORS:
                    self._out_of_fds(err)
                    return
                continue  # ECONNABORTED and the like: that client is gone
            self._backoff = 0.0
            self._take(sock, addr)

    def tick(self, now: float) -> None:
        """Watch the listener again once a pause is over."""
        if self._paused_until and now >= self._paused_until:
            self._paused_until = 0.0
            self._spare = self._spare if self._spare is not None else open_spare()
            self._sel.register(self._listener, selectors.EVENT_READ, None)

    def close(self) -> None:
        if self._spare is not None:
            os.close(self._spare)
            self._spare = None

    def _out_of_fds(self, err: OSError) -> None:
        """accept() found no free descriptor: make room for one client, or pause accepting."""
        # The kernel takes a descriptor before it looks at the backlog, so EMFILE does not
        # even say that a client waits. The spare descriptor finds out: with it freed,
        # accept() either says nobody waits or hands over the client, who then gets the
        # descriptor of the oldest waiting connection, or a plain close if there is none.
        if self._spare is not None:
            os.close(self._spare)
            self._spare = None
            try:
                sock, addr = self._listener.accept()
            except BlockingIOError:
                self._spare = open_spare()
                return  # nobody waits
            except OSError:
                pass
            else:
                self._counts["accept_errors"] += 1
                self._ratelog.log(logging.ERROR, "accept", "HTTP accept failed: %s", err.strerror)
                if self._evict_oldest("out of file descriptors: closed the oldest waiting one"):
                    self._spare = open_spare()  # the evicted connection's descriptor
                    self._take(sock, addr)
                    return
                self._counts["refused"] += 1
                sock.close()
                self._spare = open_spare()
        else:
            self._counts["accept_errors"] += 1
            self._ratelog.log(logging.ERROR, "accept", "HTTP accept failed: %s", err.strerror)
        # Stop watching the listener for a while rather than spin on a socket that stays
        # readable; clients that arrive meanwhile wait in the kernel's backlog.
        self._backoff = min(1.0, self._backoff * 2 or 0.05)
        self._paused_until = time.monotonic() + self._backoff
        self._sel.unregister(self._listener)
