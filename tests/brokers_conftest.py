"""Real brokers as session fixtures: `rabbitmq` and `kafka` (Tansu).

Each starts once per test session, and only when a test asks for it. Where a broker is
not installed or does not start, its tests skip with the reason, except under CI (`CI`
set), where they fail: CI must not go green by skipping them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import NoReturn, TypeVar, Union

import pytest

from brokers import BrokerUnavailable, RabbitMQ, Tansu, rabbitmq_missing, tansu_missing

AnyBroker = Union[RabbitMQ, Tansu]
B = TypeVar("B", RabbitMQ, Tansu)

# The session brokers running now (checked after each test), and how long each took to
# start (for the summary, which pytest writes after the session's teardown).
_started: list[AnyBroker] = []
_start_seconds: dict[str, float] = {}


def broker_unavailable(reason: str) -> NoReturn:
    """Skip the test for `reason`; fail it under CI, which must not go green by skipping."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}\n(under CI a missing broker fails rather than skips)", pytrace=False)
    pytest.skip(reason)


def _serve(broker: B, missing: str | None) -> Iterator[B]:
    if missing:
        broker_unavailable(missing)
    try:
        broker.start()
    except BrokerUnavailable as exc:
        broker_unavailable(f"{broker.name} did not start: {exc}")
    assert broker.start_seconds is not None
    _start_seconds[broker.name] = broker.start_seconds
    print(f"\n[brokers] {broker.name} ready in {broker.start_seconds:.2f} s ({broker.dir})")
    _started.append(broker)
    yield broker
    _started.remove(broker)
    broker.stop()


@pytest.fixture(scope="session")
def rabbitmq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitMQ]:
    """A private RabbitMQ node with the consistent-hash exchange, shared by the session."""
    yield from _serve(RabbitMQ(tmp_path_factory.mktemp("rabbitmq")), rabbitmq_missing())


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tansu]:
    """A Tansu broker (Kafka protocol, memory storage), shared by the session."""
    yield from _serve(Tansu(tmp_path_factory.mktemp("tansu")), tansu_missing())


@pytest.fixture(autouse=True)
def _session_brokers_restored() -> Iterator[None]:
    """After each test, continue a session broker it paused and restart one it stopped."""
    yield
    for broker in _started:
        broker.ensure_running()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say how long the session brokers took to start, without -s too."""
    if _start_seconds:
        times = ", ".join(f"{name} {s:.2f} s" for name, s in _start_seconds.items())
        terminalreporter.write_line(f"session brokers, start to ready: {times}")
