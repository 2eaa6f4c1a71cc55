"""Collector fixtures: real collector subprocesses and a wire v1 test sender."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest
from collector_helpers import CollectorProcess, Sender


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
