"""Fixtures for serial sensors: real pseudo-terminals behind a stable symlink path."""

from __future__ import annotations

import os
import tty
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

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
