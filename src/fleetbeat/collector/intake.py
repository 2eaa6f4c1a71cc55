"""What reached the collector, per transport, and why some of it was turned away."""

from __future__ import annotations

import collections
from typing import Any

TRANSPORTS = ("udp", "mqtt", "http", "amqp", "kafka")  # always in the counters, 0 until used


class Intake:
    """Received and rejected counts; not thread-safe by itself (the fleet's lock guards it)."""

    def __init__(self) -> None:
        # a defaultdict: a new receiver's transport needs no entry here
        self.received: collections.defaultdict[str, int] = collections.defaultdict(
            int, dict.fromkeys(TRANSPORTS, 0)
        )
        # accepted = received - rejected, per transport: one counter less on the hot path
        self._rejected_from: collections.defaultdict[str, int] = collections.defaultdict(int)
        self._rejected: dict[str, int] = {}

    def reject(self, reason: str, transport: str) -> None:
        """Count one message of `transport` turned away for `reason` (already received)."""
        self._rejected[reason] = self._rejected.get(reason, 0) + 1
        self._rejected_from[transport] += 1

    def stats(self) -> dict[str, Any]:
        """received {transport: n}, accepted {transport: n}, rejected {reason: n}."""
        return {
            "received": dict(self.received),
            "accepted": {t: n - self._rejected_from[t] for t, n in self.received.items()},
            "rejected": dict(self._rejected),
        }
