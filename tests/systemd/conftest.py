"""Fixtures for the systemd tests: a real sd_notify socket standing in for PID 1."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from notify_receiver import NotifyReceiver
from systemd_helpers import fake_venv


@pytest.fixture
def notify_socket() -> Iterator[NotifyReceiver]:
    """A NOTIFY_SOCKET in the abstract namespace (`@...`), like PID 1 hands out in containers."""
    rx = NotifyReceiver(f"@fleetbeat-test-{os.getpid()}-{os.urandom(4).hex()}")
    yield rx
    rx.close()


@pytest.fixture
def install_root(tmp_path: Path) -> Path:
    """A throwaway root (like an image being built) with a stand-in venv in it."""
    root = tmp_path / "root"
    fake_venv(root)
    return root
