"""The contract every receiver meets, and what receivers share.

A receiver module holds one class, named in `fleetbeat.registry.RECEIVERS` by its
TOML name: its `[collector.<name>]` table (UDP's keys are `[collector]`'s own,
`udp_listen` and `udp_receive_buffer`). The collector builds every receiver the
same way, `cls(fleet=..., config=...)` with the whole `[collector]` section, for
each class whose `enabled(config)` says it is configured; then `start()` begins its
threads and connecting (never `__init__`), and `close()` ends them. A receiver
hands every payload to `fleet.receive(data, addr, transport)`, where bad input is
counted; nothing raises into its loop. A client library is imported only when the
receiver is built, so a collector without MQTT never loads paho.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional, Protocol, runtime_checkable

from fleetbeat.errors import FleetbeatError

if TYPE_CHECKING:
    from fleetbeat.collector.config import CollectorSection


class ReceiverError(FleetbeatError):
    """A receiver cannot start (address in use, bad certificate files...)."""


class FleetInput(Protocol):
    """The fleet's ingest side, as receivers see it (`collector.fleet.Fleet` provides it)."""

    def receive(self, data: bytes, addr: Any, transport: str = "udp",
                topic_dev: Optional[str] = None) -> None:  # fmt: skip
        """Parse and apply one payload; `topic_dev` is the device a topic names, if any."""

    def reject(self, reason: str, transport: str = "udp") -> None:
        """Count a payload turned away before parsing (a topic outside the scheme)."""

    def mark_offline(self, dev_id: str, reason: str = "last_will") -> None:
        """The transport says the device is gone (the MQTT Last Will)."""

    def watch_kernel_drops(self, transport: str, read: Callable[[], int]) -> None:
        """Export a count of messages the kernel dropped before the receiver read them."""


@runtime_checkable  # for tests/test_registry.py; the collector never isinstance()s it
class Receiver(Protocol):
    """A running source of payloads for the fleet."""

    name: str  # in logs: "udp 0.0.0.0:9746", "mqtt broker.lan:1883"

    def start(self) -> None:
        """Begin receiving in the background (threads, connecting). Never blocks long."""

    def close(self, *, timeout: float = 2.0) -> None:
        """Stop receiving; give up waiting for threads after `timeout` seconds."""

    def stats(self) -> dict[str, int]:
        """The receiver's own counters and gauges (what the fleet cannot see); may be empty."""
        ...


class ReceiverClass(Protocol):
    """A receiver class as the registry names it."""

    def enabled(self, config: CollectorSection) -> bool:
        """True when `config` asks for this receiver (a static method of the class)."""
        ...

    def __call__(self, *, fleet: FleetInput, config: CollectorSection) -> Receiver: ...
