"""Fixtures for serial sensors: real pseudo-terminals behind a stable symlink path."""

from __future__ import annotations

import os
import threading
import tty
from collections.abc import Iterator
from pathlib import Path
from typing import Callable, Optional

import pytest


class PtyPort:
    """A device on a pty: the sensor opens `path` (a symlink to the pty's slave, like
    /dev/serial/by-id/...); the test writes on the master. `unplug()` closes the master,
    so reads on the slave fail; `replug()` puts a new pty behind the same path."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.master: Optional[int] = None
        self.replug()

    def replug(self) -> None:
        assert self.master is None, "unplug first"
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo or line editing before the sensor sets its own mode
        tmp = self.path.with_name(self.path.name + ".new")
        if tmp.is_symlink():
            tmp.unlink()
        tmp.symlink_to(os.ttyname(slave))
        os.replace(tmp, self.path)  # atomic, as udev does
        os.close(slave)
        self.master = master

    def unplug(self, *, remove_link: bool = False) -> None:
        if self.master is not None:
            os.close(self.master)
            self.master = None
        if remove_link and self.path.is_symlink():
            self.path.unlink()

    def write(self, data: bytes | str) -> None:
        assert self.master is not None, "the device is unplugged"
        raw = data.encode() if isinstance(data, str) else data
        while raw:
            n = os.write(self.master, raw)
            raw = raw[n:]

    def close(self) -> None:
        self.unplug()


@pytest.fixture
def pty_port(tmp_path: Path) -> Iterator[PtyPort]:
    """A serial device on a real pty, exposed at tmp_path/ttyUSB0."""
    port = PtyPort(tmp_path / "ttyUSB0")
    yield port
    port.close()


class Feeder:
    """A device that prints `line(i)` every `every` seconds until stopped."""

    def __init__(self, port: PtyPort, line: Callable[[int], str], every: float = 0.01) -> None:
        self.port = port
        self.line = line
        self.every = every
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.port.write(self.line(self.sent))
            except (OSError, AssertionError):
                return
            self.sent += 1
            self._stop.wait(self.every)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)


@pytest.fixture
def feed() -> Iterator[Callable[..., Feeder]]:
    """Start Feeders; all are stopped at teardown."""
    feeders: list[Feeder] = []

    def start(port: PtyPort, line: Callable[[int], str], every: float = 0.01) -> Feeder:
        f = Feeder(port, line, every)
        feeders.append(f)
        return f

    yield start
    for f in feeders:
        f.stop()
