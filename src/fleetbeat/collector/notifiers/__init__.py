"""Notifiers, one module each, named in `fleetbeat.registry.NOTIFIERS`.

The contract they meet is `fleetbeat.collector.notifiers.base.Notifier`.
"""

from __future__ import annotations

from typing import Any

from fleetbeat.registry import NOTIFIERS, notifier_class

__all__ = ["NOTIFIERS", "build", "notifier_class"]  # the names as they were, from the registry


def build(config: Any) -> Any:
    """A notifier from its validated config record."""
    return notifier_class(config.type)(config)
