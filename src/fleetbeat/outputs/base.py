"""What every encoder and output shares: the outgoing message, the Protocols, drops.

An encoder turns an `Outgoing` message into payloads (bytes); an output hands each
payload to the kernel (or to a bounded client queue) at once or drops it, and
counts the drop by reason. Nothing in between queues.

An output module holds its frozen `Config` record and its class (`OutputClass`
says what both must provide); the registry (`fleetbeat.registry`) names it. The
agent builds every output the same way, `cls(config, name=..., identity=...)`,
and picks its encoder from the keys every output table takes alike, `format`
and `prefix` (parsed by the agent, not by the output's Config). A
connection-based output starts its worker thread in `start()`, never in
`__init__` or `send()`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Callable, Optional, Protocol, runtime_checkable

from fleetbeat.config.schema import Problems
from fleetbeat.logutil import RateLimitedLog
from fleetbeat.wire import Mac


class Identity:
    """Who sends: the parts of every message that do not change while the agent runs."""

    __slots__ = ("boot_time", "dev", "mac", "run", "tags", "version")

    def __init__(
        self,
        *,
        dev: str,
        run: str,
        boot_time: float,
        version: str,
        tags: dict[str, str],
        mac: Optional[Mac] = None,
    ) -> None:
        self.dev = dev
        self.run = run
        self.boot_time = boot_time
        self.version = version
        self.tags = tags
        self.mac = mac  # the signing key's HMAC state: JSON messages are signed with it


class Outgoing:
    """One message before encoding: a heartbeat, a reading or a bye.

    `seq` is not here: encoders draw one from `next_seq` per message they send.
    The JSON encoder splits a reading too large for one datagram into several
    messages, each with its own seq; line encoders pack a message's lines into
    datagrams and draw one seq per message.
    """

    __slots__ = ("drop", "drop_by", "errors", "interval", "kind", "metrics", "rate", "src", "ts")

    def __init__(
        self,
        kind: str,
        *,
        ts: float,
        metrics: Optional[dict[str, float]] = None,
        src: Optional[str] = None,
        rate: float = 1.0,
        interval: Optional[float] = None,
        drop: int = 0,
        drop_by: Optional[dict[str, int]] = None,
        errors: Optional[dict[str, dict[str, int]]] = None,
    ) -> None:
        self.kind = kind
        self.ts = ts
        self.metrics = metrics or {}
        self.src = src
        self.rate = rate
        self.interval = interval
        self.drop = drop
        self.drop_by = drop_by
        self.errors = errors


class EncoderClass(Protocol):
    """An encoder class as the registry names it (`format = "..."`)."""

    def __call__(self, identity: Identity, *, prefix: str) -> Encoder: ...


@runtime_checkable  # for tests/test_registry.py; the agent never isinstance()s it
class Encoder(Protocol):
    """Turns a message into payloads no larger than `limit` bytes each."""

    def encode(
        self, msg: Outgoing, next_seq: Callable[[], int], limit: int
    ) -> tuple[list[bytes], int]:
        """Return the payloads and how many parts were dropped as too large."""
        ...


@runtime_checkable  # for tests/test_registry.py; the agent never isinstance()s it
class Output(Protocol):
    """Hands a payload to the kernel at once or drops it. Never raises, never keeps it."""

    name: str
    tally: Tally
    max_payload: int

    def start(self) -> None:
        """Begin background work (name resolution, connecting). Never blocks."""

    def send(self, payload: bytes, msg: Outgoing) -> None:
        """Send now or drop and count; `msg` tells topic-based outputs where it goes."""

    def close(self, *, timeout: float = 1.0) -> None:
        """Stop background work; give up after `timeout` seconds."""


@runtime_checkable  # for tests/test_registry.py; the agent never isinstance()s it
class OutputConfig(Protocol):
    """An output's frozen config record (`fleetbeat.config.frozen.dataclass`) and its hooks."""

    def target(self) -> str:
        """Where it sends ("host:port", "[v6]:port", a URL): names the output in logs, and
        keys it across a reload (same type, target and format: its seq streams go on)."""
        ...

    def check_files(self, path: str, problems: Problems) -> None:
        """Files it reads at start (passwords, certificates) exist and are readable now."""
        ...

    @classmethod
    def check_together(cls, configs: Sequence[Any], path: str, problems: Problems) -> None:
        """Problems between outputs of this type (two MQTT sessions with one client id)."""
        ...


class OutputClass(Protocol):
    """An output class as the registry names it: its Config record and its constructor."""

    @property
    def Config(self) -> type[OutputConfig]: ...

    def __call__(self, config: Any, *, name: str, identity: Identity) -> Output: ...


class Tally:
    """Counts what one output sent and dropped (by reason); logs drops at a limited rate."""

    def __init__(self, output_name: str, logger: logging.Logger) -> None:
        self.name = output_name
        self.sent = 0
        self.dropped = 0
        self.by_reason: dict[str, int] = {}
        self._log = RateLimitedLog(logger)

    def drop(self, reason: str, detail: str = "", n: int = 1) -> None:
        self.dropped += n
        self.by_reason[reason] = self.by_reason.get(reason, 0) + n
        self._log.log(
            logging.WARNING,
            reason,
            "%s: dropped %d message(s) (%s%s); %d dropped since start",
            self.name,
            n,
            reason,
            f": {detail}" if detail else "",
            self.dropped,
        )

    def snapshot(self) -> dict[str, Any]:
        return {"sent": self.sent, "dropped": self.dropped, "by_reason": dict(self.by_reason)}
