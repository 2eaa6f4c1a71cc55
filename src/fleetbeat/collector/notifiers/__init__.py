"""Notifiers by TOML `type`: one explicit line each, imported only when configured.

The contract they meet is `fleetbeat.collector.notifiers.base.Notifier`.
"""

from __future__ import annotations

import importlib
from typing import Any

NOTIFIERS = {
    "webhook": "fleetbeat.collector.notifiers.webhook:WebhookNotifier",
    "command": "fleetbeat.collector.notifiers.command:CommandNotifier",
    "apprise": "fleetbeat.collector.notifiers.apprise_notify:AppriseNotifier",
    "alertmanager": "fleetbeat.collector.notifiers.alertmanager:AlertmanagerNotifier",
}


def notifier_class(kind: str) -> Any:
    """The class registered for `kind` (imported now); KeyError for an unknown kind."""
    module, _, name = NOTIFIERS[kind].partition(":")
    return getattr(importlib.import_module(module), name)


def build(config: Any) -> Any:
    """A notifier from its validated config record."""
    return notifier_class(config.type)(config)
