"""What every receiver shares."""

from __future__ import annotations

from fleetbeat.errors import FleetbeatError


class ReceiverError(FleetbeatError):
    """A receiver cannot start (address in use, bad certificate files...)."""
