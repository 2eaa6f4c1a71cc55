"""File descriptors for the HTTP servers: the RLIMIT_NOFILE budget and a spare.

At start the soft RLIMIT_NOFILE is raised toward the hard limit to fit every
server's connection cap plus `FD_RESERVE`; where it cannot be, the cap shrinks
(logged). A spare descriptor is kept so that a server out of descriptors can still
learn whether a client waits (see `BoundedServer._out_of_fds`).
"""

from __future__ import annotations

import logging
import os
import resource
import threading
from typing import Optional

log = logging.getLogger(__name__)

# Descriptors left for the rest of the collector (UDP, the store, MQTT, logs, notifiers)
# when the soft RLIMIT_NOFILE is raised for the servers' connection caps.
FD_RESERVE = 256

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
    """A descriptor held in reserve, given up to learn whether a client waits (see _out_of_fds)."""
    try:
        return os.open(os.devnull, os.O_RDONLY)
    except OSError:
        return None


def release_fds(n: int) -> None:
    global _claimed
    with _claim_lock:
        _claimed -= n
