"""Collector fixtures: real collector subprocesses, a wire v1 test sender, mosquitto."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
from collector_helpers import Broker, CollectorProcess, Sender

from helpers import free_port


@pytest.fixture
def start_collector(tmp_path: Path) -> Iterator[Callable[..., CollectorProcess]]:
    """Start real `fleetbeat collector` subprocesses; every one is killed at teardown."""
    started: list[CollectorProcess] = []

    def start(**kw: Any) -> CollectorProcess:
        proc = CollectorProcess(tmp_path, **kw)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def make_sender() -> Iterator[Callable[..., Sender]]:
    """Wire v1 senders with hand-picked seqs; closed at teardown."""
    made: list[Sender] = []

    def make(port: int, **kw: Any) -> Sender:
        s = Sender(port, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


@pytest.fixture
def start_broker(tmp_path: Path) -> Iterator[Callable[..., Broker]]:
    """Start real mosquitto brokers (`start_broker(port=None)`); all stopped at teardown."""
    started: list[Broker] = []

    def start(port: Optional[int] = None) -> Broker:
        broker = Broker(tmp_path, port or free_port(socket.SOCK_STREAM))
        started.append(broker)
        return broker

    yield start
    for b in started:
        b.stop()
