"""The fleet's read side: the one contract the HTTP API, `/metrics` and the alerts read.

`collector.fleet.Fleet` provides it (checked in tests/collector/test_fleet.py);
`collector.http.start(fleet, config)` serves it, with a `CollectorConfig` whose
`http_listen` is the "host:port" to bind.
Every method is thread-safe and returns plain JSON-ready data (dicts, lists, str,
int, float, bool, None) that the caller may keep or mutate.
"""

from __future__ import annotations

from typing import Any, Optional, Protocol, runtime_checkable


@runtime_checkable
class FleetView(Protocol):
    """What the readers of the fleet may call; kept stable."""

    def devices(self) -> list[dict[str, Any]]:
        """Every device, sorted by id: those the fleet tracks, and the `missing` ones (ids
        of the expected_devices file never heard from, `collector.lifecycle`). Each dict has:

        id, state ("up" | "late" | "down" | "offline" | "missing"), state_since (epoch s),
        last_seen (epoch s of the last message received), addr ("host:port" or
        the MQTT topic prefix + id), transport ("udp" | "mqtt"), run (16 hex),
        boot_time (epoch s or None), interval (s), version (agent version or None),
        tags (dict str -> str), metrics (dict str -> float, from the last
        heartbeat), clock_skew (sender clock minus collector clock at receipt, s),
        restarts, reboots (counted events), agent_drops (the agent's own count
        of messages it dropped locally, from the last heartbeat),
        received, expected, lost, duplicates, reordered (heartbeat stream, all
        runs since the device was first seen: lifetime), loss_pct (lifetime, %),
        recent_loss_pct (over the last few hundred expected heartbeats, %),
        run_received, run_expected, run_lost (the current run only),
        readings_received, readings_lost (the readings stream, lifetime),
        down_after_effective (missed intervals after which the device is called
        down: the configured number, or the loss-aware "auto" value),
        confirmed (heard at least twice: stored, and its events kept), listed (the
        expected_devices file lists it).

        A missing device has the same keys with nothing known: last_seen, boot_time,
        interval, version, clock_skew and down_after_effective None, addr, transport and
        run "", metrics {}, the counters 0, confirmed False; its tags are the file's. A
        tracked device's tags are its heartbeat's, the file's filling in keys it lacks.

        Each dict is consistent; the list is read in chunks of devices, so it is not
        one atomic picture of a big fleet (a device may change between two chunks).

        The HTTP API adds `availability` ({"24h", "7d", "30d": percent or None,
        "since": epoch s or None}, computed from the store's events by
        `collector.http_history`, not kept here): this contract stays in memory only.
        """
        ...

    def device(self, device_id: str) -> Optional[dict[str, Any]]:
        """The same dict for one device (a missing one too); None when unknown."""
        ...

    def events(self, since: float = 0.0, limit: int = 1000) -> list[dict[str, Any]]:
        """Transitions and restarts with time > since, oldest first, at most `limit`.

        The newest ones when more match. Each: time (epoch s), device, from (state or
        None for a new device, "missing" for a new one that was expected), to (state,
        or "forgotten": the device was removed and has no state from then on), reason
        (a short label: "first_seen" (at the second message: a device heard once leaves
        no event), "heartbeat", "late", "missed_heartbeats", "bye", "last_will",
        "restart", "reboot", "silent_through_restart", "flapping": the device passed
        `max_events_per_minute`; its other events of that minute are only counted;
        "forgotten" (the API, `fleetbeat forget`) and "forget_after" with to
        "forgotten"). A forgotten device's earlier events are gone with it.
        """
        ...

    def stats(self) -> dict[str, Any]:
        """The collector's counters.

        received {"udp": n, "mqtt": n} (datagrams / messages that reached the
        collector, valid or not), accepted {"udp": n, "mqtt": n}, rejected {reason: n}
        (wire reasons from `wire.parse_fields`: oversize, not_json, too_deep,
        bad_text, not_object, bad_version, bad_kind, bad_device_id, bad_run,
        bad_seq, bad_field; the fleet's: max_devices, seq_jump, old_run (a
        straggler of the run before), unknown_run (a bye or reading of a run never
        seen), unknown_device (a reading from an id never heard), metrics_limit,
        tags_limit, topic_mismatch (the MQTT topic names another device); the MQTT
        receiver's: bad_topic (a topic that is not `{prefix}/{dev}/...`)),
        devices {state: n for every state, the missing ones too}, devices_known (tracked:
        the missing ones are not), devices_unconfirmed, devices_expected (ids in the
        expected_devices file), forgotten {"forgotten": n, "forget_after": n} (since
        start), max_devices, evicted {"unconfirmed": n, "silent": n}, events_suppressed
        (past max_events_per_minute), events_unsaved (dropped by `requeue` while the
        store could not write), rows_skipped (stored devices and events `restore`
        could not read), kernel_drops {"udp": n} (datagrams the kernel dropped on
        the receive socket: a full buffer), started_at (epoch s).
        """
        ...
