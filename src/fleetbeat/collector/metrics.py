"""Prometheus `/metrics` for the collector: the fleet read at scrape time, not per datagram.

`FleetCollector` is a prometheus-client custom collector. Each scrape reads
`Fleet.devices()` and `Fleet.stats()` once and turns them into metric families,
so the receive path never touches a metric object and a collector nobody scrapes
pays nothing. Names follow the Prometheus conventions: `fleetbeat_` prefix, base
units (`_seconds`, ratios 0-1), `_total` on counters, a `device` label per device.

Alert examples:

    time() - fleetbeat_device_last_seen_timestamp_seconds > 60
    fleetbeat_device_state{state="down"} == 1
    fleetbeat_device_recent_heartbeat_loss_ratio > 0.05
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Callable, Optional, Protocol

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder, gzip_accepted

from fleetbeat.collector.fleet import STATES

# Each of STATES gets a series per device (one-hot) so that
# `fleetbeat_device_state{state="down"} == 1` selects down devices and a state
# change never leaves a stale series behind.


class FleetView(Protocol):
    """What the exposition reads from the fleet (collector.fleet.Fleet provides it)."""

    def devices(self) -> list[dict[str, Any]]: ...

    def stats(self) -> dict[str, Any]: ...


# (name, help, device field) for the per-device counters: the heartbeat stream's
# figures add up every run since the device was first seen (lifetime).
_DEVICE_COUNTERS = (
    ("fleetbeat_device_heartbeats_received", "Distinct heartbeats received from the device (duplicates not counted).", "received"),  # noqa: E501
    ("fleetbeat_device_heartbeats_expected", "Heartbeats the device sent, from its sequence numbers (highest - first + 1 per run).", "expected"),  # noqa: E501
    ("fleetbeat_device_heartbeats_lost", "Heartbeats the device sent that never arrived (expected - received); a late arrival lowers it.", "lost"),  # noqa: E501
    ("fleetbeat_device_heartbeats_duplicated", "Duplicate heartbeats received from the device.", "duplicates"),  # noqa: E501
    ("fleetbeat_device_heartbeats_reordered", "Heartbeats that arrived after one with a higher sequence number.", "reordered"),  # noqa: E501
    ("fleetbeat_device_readings_received", "Readings messages received from the device.", "readings_received"),  # noqa: E501
    ("fleetbeat_device_readings_lost", "Readings messages the device sent that never arrived.", "readings_lost"),  # noqa: E501
    ("fleetbeat_device_restarts", "Agent restarts (a new run id) seen by the collector.", "restarts"),  # noqa: E501
    ("fleetbeat_device_reboots", "Device reboots (a new boot time) seen by the collector.", "reboots"),  # noqa: E501
    ("fleetbeat_device_agent_dropped_messages", "Messages the agent dropped locally since it started (its own report).", "agent_drops"),  # noqa: E501
)  # fmt: skip
# (name, help, device field, scale) for the per-device gauges.
_DEVICE_GAUGES = (
    ("fleetbeat_device_last_seen_timestamp_seconds", "When the collector last received a message from the device (Unix time).", "last_seen", 1.0),  # noqa: E501
    ("fleetbeat_device_state_change_timestamp_seconds", "When the device entered its current state (Unix time).", "state_since", 1.0),  # noqa: E501
    ("fleetbeat_device_heartbeat_interval_seconds", "Heartbeat interval the device announces.", "interval", 1.0),  # noqa: E501
    ("fleetbeat_device_boot_time_seconds", "Boot time the device reports (Unix time).", "boot_time", 1.0),  # noqa: E501
    ("fleetbeat_device_clock_skew_seconds", "Device clock minus collector clock, measured at receipt.", "clock_skew", 1.0),  # noqa: E501
    ("fleetbeat_device_heartbeat_loss_ratio", "Share of the device's heartbeats lost in transit, lifetime (0-1).", "loss_pct", 0.01),  # noqa: E501
    ("fleetbeat_device_recent_heartbeat_loss_ratio", "Share of the device's recent heartbeats lost in transit (0-1).", "recent_loss_pct", 0.01),  # noqa: E501
    ("fleetbeat_device_down_after_intervals", "Missed heartbeat intervals after which the device is called down (the effective, possibly loss-adapted threshold).", "down_after_effective", 1.0),  # noqa: E501
)  # fmt: skip


def _number(value: Any) -> Optional[float]:
    if value is None or value is True or value is False:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    return None


class FleetCollector:
    """A prometheus-client collector that reads the fleet at scrape time."""

    def __init__(self, fleet: FleetView) -> None:
        self._fleet = fleet

    def describe(self) -> Iterable[Metric]:
        # Registering must not read the fleet (auto-describe would call collect()).
        return []

    def collect(self) -> Iterator[Metric]:
        devices = self._fleet.devices()
        stats = self._fleet.stats()
        yield from self._fleet_metrics(devices, stats)
        yield from self._device_metrics(devices)

    def _fleet_metrics(
        self, devices: list[dict[str, Any]], stats: dict[str, Any]
    ) -> Iterator[Metric]:
        counts = dict.fromkeys(STATES, 0)
        for dev in devices:
            state = str(dev.get("state"))
            counts[state] = counts.get(state, 0) + 1
        g = GaugeMetricFamily("fleetbeat_devices", "Known devices by state.", labels=["state"])
        for state, n in counts.items():
            g.add_metric([state], n)
        yield g

        for key, name, doc, label in _FLEET_COUNTERS:
            family = CounterMetricFamily(name, doc, labels=[label])
            for label_value, total in sorted(_mapping(stats.get(key)).items()):
                family.add_metric([label_value], total)
            yield family
        cap = _number(stats.get("max_devices"))
        if cap is not None:
            yield GaugeMetricFamily(
                "fleetbeat_max_devices",
                "Cap on known devices; newcomers past it are rejected.",
                cap,
            )

    def _device_metrics(self, devices: list[dict[str, Any]]) -> Iterator[Metric]:
        state = GaugeMetricFamily(
            "fleetbeat_device_state",
            "1 for the state the device is in, 0 for the others.",
            labels=["device", "state"],
        )
        for dev in devices:
            ident = str(dev["id"])
            current = dev.get("state")
            for s in STATES:
                state.add_metric([ident, s], 1.0 if current == s else 0.0)
            if current not in STATES:
                state.add_metric([ident, str(current)], 1.0)
        yield state

        info = InfoMetricFamily(
            "fleetbeat_device", "What the device runs and how it reports.", labels=["device"]
        )
        for dev in devices:
            info.add_metric(
                [str(dev["id"])],
                {"version": str(dev.get("version") or ""), "transport": str(dev.get("transport"))},
            )
        yield info

        for name, doc, field, scale in _DEVICE_GAUGES:
            yield _per_device(
                GaugeMetricFamily(name, doc, labels=["device"]), devices, field, scale
            )
        for name, doc, field in _DEVICE_COUNTERS:
            yield _per_device(
                CounterMetricFamily(name, doc, labels=["device"]), devices, field, 1.0
            )


def _per_device(family: Metric, devices: list[dict[str, Any]], field: str, scale: float) -> Metric:
    add: Callable[..., None] = family.add_metric  # type: ignore[attr-defined]
    for dev in devices:
        value = _number(dev.get(field))
        if value is not None:
            add([str(dev["id"])], value * scale)
    return family


_FLEET_COUNTERS = (
    ("received", "fleetbeat_received_messages", "Datagrams and MQTT messages that reached the collector, valid or not.", "transport"),  # noqa: E501
    ("accepted", "fleetbeat_accepted_messages", "Messages accepted and applied to the fleet state.", "transport"),  # noqa: E501
    ("rejected", "fleetbeat_rejected_messages", "Messages rejected, by reason (wire errors, max_devices, seq_jump, ...).", "reason"),  # noqa: E501
)  # fmt: skip


def _mapping(value: Any) -> Mapping[str, float]:
    if isinstance(value, Mapping):
        return {str(k): float(v) for k, v in value.items() if _number(v) is not None}
    return {}


class Exposition:
    """Renders `/metrics` for one fleet: fleet metrics plus the collector's own process."""

    def __init__(self, fleet: FleetView) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(FleetCollector(fleet))
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)

    def render(self, accept: str = "", accept_encoding: str = "") -> tuple[bytes, dict[str, str]]:
        """The body and headers for a scrape (OpenMetrics if asked for; gzip if accepted)."""
        encoder, content_type = choose_encoder(accept)
        body = encoder(self.registry)
        headers = {"Content-Type": content_type}
        if gzip_accepted(accept_encoding):
            body = gzip.compress(body, compresslevel=1)  # fast: scrapes are frequent
            headers["Content-Encoding"] = "gzip"
        return body, headers
