"""Fixtures for the systemd tests: a real sd_notify socket standing in for PID 1."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from notify_receiver import NotifyReceiver


@pytest.fixture
def notify_socket() -> Iterator[NotifyReceiver]:
    """A NOTIFY_SOCKET in the abstract namespace (`@...`), like PID 1 hands out in containers."""
    rx = NotifyReceiver(f"@fleetbeat-test-{os.getpid()}-{os.urandom(4).hex()}")
    yield rx
    rx.close()
