"""Fixtures shared by the whole suite; subject-specific ones live beside their tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

import pytest
from hypothesis import settings

from helpers import AgentProcess, UdpReceiver

# The real brokers, `rabbitmq` and `kafka`: session fixtures started on first use.
pytest_plugins = ["brokers_conftest"]

# CI runs the property tests with fixed seeds so that a landing never hangs on a
# fresh random draw; local runs keep exploring new examples every time.
settings.register_profile("ci", derandomize=True, deadline=None)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture
def udp_receiver() -> Iterator[UdpReceiver]:
    """A real UDP socket on 127.0.0.1 collecting datagrams."""
    rx = UdpReceiver()
    yield rx
    rx.close()


@pytest.fixture
def start_agent(tmp_path: Path) -> Iterator[Callable[..., AgentProcess]]:
    """Start real `fleetbeat agent` subprocesses; every one is killed at teardown."""
    started: list[AgentProcess] = []

    def start(config: str, *args: str, **kw: object) -> AgentProcess:
        d = tmp_path / f"agent{len(started)}"
        d.mkdir()
        proc = AgentProcess(d, config, *args, **kw)  # type: ignore[arg-type]
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()
