"""The exceptions fleetbeat raises: one root, a few children."""

from __future__ import annotations

from collections.abc import Sequence


class FleetbeatError(Exception):
    """Root of every error fleetbeat raises on purpose."""


class ConfigError(FleetbeatError):
    """A configuration is invalid; carries every problem found, not only the first."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class InputError(FleetbeatError, ValueError):
    """Bad input from outside (a datagram, a serial line); `reason` is the label it is
    counted under, never a crash."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        super().__init__(f"{reason}: {detail}" if detail else reason)
