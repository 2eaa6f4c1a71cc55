"""Tell systemd how the service is doing: the sd_notify protocol, spoken directly.

The protocol is one datagram of `KEY=value` lines sent to the AF_UNIX socket
named by `$NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace). No
library: libsystemd's python bindings are compiled and not on every device, and
the protocol is a dozen lines. Without `$NOTIFY_SOCKET` (not under systemd, or
`Type=` other than notify) every call is a no-op.

`Supervision` is what a service loop uses: `ready()` once it works, `tick()` on
every pass of the loop (it pings the watchdog at half of `$WATCHDOG_USEC` and
refreshes `STATUS=` when it changed) and the time by which the loop must call
`tick()` again, so the loop never sleeps past a ping. Pings come only from the
loop: when the loop hangs, they stop and systemd restarts the service.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import time
from collections.abc import Mapping
from typing import Callable, Optional

from fleetbeat.errors import ConfigError

log = logging.getLogger(__name__)


class Notifier:
    """Sends sd_notify messages to `$NOTIFY_SOCKET`; never raises, never blocks.

    Args:
        env: the environment to read `NOTIFY_SOCKET`, `WATCHDOG_USEC` and
            `WATCHDOG_PID` from (default: `os.environ`).
    """

    def __init__(self, env: Optional[Mapping[str, str]] = None) -> None:
        env = os.environ if env is None else env
        self.address = _address(env.get("NOTIFY_SOCKET", ""))
        self.watchdog_usec = _watchdog_usec(env)
        self._sock: Optional[socket.socket] = None
        self._failed = False

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def watchdog_interval(self) -> Optional[float]:
        """Seconds between two `WATCHDOG=1` pings (half the timeout), or None: no watchdog."""
        if self.address is None or self.watchdog_usec is None:
            return None
        return self.watchdog_usec / 2e6

    def notify(self, *fields: str) -> bool:
        """Send `fields` (e.g. "READY=1", "STATUS=...") as one message; False if not sent."""
        if self.address is None:
            return False
        data = "\n".join(f.replace("\n", " ") for f in fields).encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sock.setblocking(False)  # systemd reads fast; if not, a ping is dropped
            self._sock.sendto(data, self.address)
        except OSError as exc:
            # Logged once: a broken notify socket must not flood the log every ping.
            if not self._failed:
                self._failed = True
                reason = errno.errorcode.get(exc.errno or 0, str(exc))
                log.warning("cannot notify systemd at %s (%s)", self.address, reason)
            return False
        return True

    def ready(self, status: Optional[str] = None) -> bool:
        return self.notify("READY=1", *_status(status))

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def reloading(self, status: Optional[str] = None) -> bool:
        # MONOTONIC_USEC is what Type=notify-reload (systemd >= 253) requires; older
        # managers (Debian 12 has 252, Type=notify + ExecReload) ignore it.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}", *_status(status))

    def stopping(self, status: Optional[str] = None) -> bool:
        return self.notify("STOPPING=1", *_status(status))

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class Supervision:
    """The systemd side of a service loop: READY, watchdog pings, STATUS, RELOADING, STOPPING.

    Args:
        notifier: where messages go (`Notifier()` reads the environment).
        status: returns the one-line summary shown by `systemctl status`.
        status_every: at most one STATUS= refresh per this many seconds.
        clock: monotonic seconds.
    """

    def __init__(
        self,
        notifier: Notifier,
        status: Callable[[], str],
        *,
        status_every: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.notifier = notifier
        self._status = status
        self._status_every = status_every
        self._clock = clock
        self._ping_every = notifier.watchdog_interval
        self._next_ping = clock()
        self._next_status = clock()
        self._last_status = ""
        self.note = ""  # appended to the status line, e.g. "last reload rejected"

    def status_line(self) -> str:
        text = self._status()
        return f"{text}; {self.note}" if self.note else text

    def ready(self) -> None:
        """The service works: READY=1 with the first STATUS=, and a first ping."""
        self._last_status = self.status_line()
        self.notifier.ready(self._last_status)
        self._next_status = self._clock() + self._status_every
        self._ping()

    def reloading(self) -> None:
        self.notifier.reloading("reloading the configuration")

    def reload(self, source: str, apply: Callable[[str], None]) -> None:
        """Reload from the config file `source` with `apply(source)`, which loads, validates
        and applies it, raising ConfigError (or anything else) without changing anything.

        Around it: RELOADING=1 and READY=1, every config error logged, and a note in
        STATUS= while the running configuration is not the file's.
        """
        if source == "<defaults>":
            log.warning("reload requested, but no config file was given (-c): nothing to re-read")
            return
        self.reloading()
        try:
            apply(source)
        except ConfigError as err:
            for problem in err.problems:
                log.error("reload: %s", problem)
            n = len(err.problems)
            log.error("reload rejected (%d config error%s): still running the previous "
                      "configuration", n, "s" if n > 1 else "")  # fmt: skip
            self.note = "last reload rejected: invalid config"
        except Exception:  # something that cannot be built: nothing was changed
            log.exception("reload failed: still running the previous configuration")
            self.note = "last reload failed"
        else:
            log.info("reload: configuration applied")
            self.note = ""
        self.ready()

    def stopping(self) -> None:
        self.notifier.stopping("stopping")

    def tick(self) -> float:
        """Ping the watchdog if due, refresh STATUS= if it changed; return when to tick again."""
        if not self.notifier.enabled:
            return float("inf")
        now = self._clock()
        if self._ping_every is not None and now >= self._next_ping:
            self._ping()
        if now >= self._next_status:
            text = self.status_line()
            if text != self._last_status:
                self._last_status = text
                self.notifier.status(text)
                self._next_status = now + self._status_every
        return self._next_ping if self._ping_every is not None else float("inf")

    def _ping(self) -> None:
        if self._ping_every is None:
            return
        self.notifier.watchdog()
        self._next_ping = self._clock() + self._ping_every


def _address(value: str) -> Optional[str]:
    if not value:
        return None
    if value[0] == "@":  # abstract namespace: a leading NUL byte instead of the @
        return "\0" + value[1:]
    if value[0] == "/":
        return value
    log.warning("NOTIFY_SOCKET=%r is neither a path nor @abstract; not notifying systemd", value)
    return None


def _watchdog_usec(env: Mapping[str, str]) -> Optional[int]:
    pid = env.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):  # the watchdog is meant for another process
        return None
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec if usec > 0 else None


def _status(text: Optional[str]) -> tuple[str, ...]:
    return (f"STATUS={text}",) if text else ()
