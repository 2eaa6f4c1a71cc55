"""`fleetbeat keygen`: a new signing key, and where to put it on each side."""

from __future__ import annotations

import os
from typing import Optional

from fleetbeat import keys, wire
from fleetbeat.errors import FleetbeatError


def keygen(device: Optional[str], out: Optional[str], *, force: bool = False) -> str:
    """Write a new key (0600) and return the instructions to print."""
    if device is not None and not wire.DEVICE_ID.fullmatch(device):
        raise FleetbeatError(f"--device {device!r}: a device id is 1-64 of A-Z a-z 0-9 . _ -")
    path = out or (device if device is not None else "fleet.key")
    keys.write_key_file(path, keys.new_key(), overwrite=force)
    shown = os.path.abspath(path)
    agent = (
        f"  on the device{f' {device}' if device else 's'}: copy it to /etc/fleetbeat/key "
        '(mode 0600) and set [agent] key_file = "/etc/fleetbeat/key",\n'
        "    or, under systemd, LoadCredential=fleetbeat-key:/etc/fleetbeat/key in the unit"
    )
    if device is not None:
        collector = (
            f"  on the collector: copy it into [collector.auth] keys_dir under the name "
            f"{device!r} (for example /etc/fleetbeat/keys/{device}): only {device} can sign "
            "with it"
        )
    else:
        collector = (
            "  on the collector: set [collector.auth] fleet_key_file to it: every device "
            "holding it can sign as any device (per-device keys: keygen --device ID)"
        )
    return (
        f"wrote a new 256-bit signing key to {shown} (mode 0600; keep it secret)\n"
        f"{agent}\n{collector}\n"
        "  then reload both (SIGHUP): messages are signed and checked from then on"
    )
