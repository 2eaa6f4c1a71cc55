"""The device write of the HTTP API: forgetting a device (the router in
`fleetbeat.collector.http` calls it, in front of the alert routes).

    DELETE /api/devices/{id}    200 {"forgotten": id}: the device has left the fleet (every
                                reader of it, at once); the store deletes its row, events
                                and history, and writes the event that records it (to
                                "forgotten"), at the second flush at most (flush_interval)
                                if the store can write then. If it cannot until the
                                collector stops, the forget is lost: the exit log names it
                                ("Lost: ... the forgets of ...") and the device is back
                                after the restart.
                                503 {"error": ..., "id": id} while the collector is not
                                healthy (`/healthz` 503: the store cannot write, a full
                                disk): nothing is forgotten; try again once it writes.
                                404 for an id the fleet does not track: unknown, not a
                                device id (a %2F in it, over 64 characters), or missing
                                (expected, never heard: it stays missing while the
                                expected_devices file lists it)

It passes `fleetbeat.collector.http_write.WriteGuard` first, as every write does (the
API token, the origin). A forgotten device that speaks again is a new device; an
expected one is missing again at once. `fleetbeat forget ID` calls this.
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any, Callable, Optional, Protocol
from urllib.parse import unquote

from fleetbeat.collector.http_alerts import AlertsApi
from fleetbeat.collector.http_write import Reply
from fleetbeat.collector.httpserver import Request
from fleetbeat.wire import DEVICE_ID

PREFIX = "/api/devices/"
_ID_CHARS = 3 * 64  # the longest a device id can be in a path, each character %-escaped
Health = Optional[Callable[[], Optional[str]]]


class Forgets(Protocol):
    """What this route needs of the fleet (`collector.fleet.Fleet` has it)."""

    def forget(self, dev_id: str, reason: str = "forgotten") -> bool: ...

    def device(self, device_id: str) -> Optional[dict[str, Any]]: ...


class _NoAlerting:
    """Stands in for `Alerting` where the router asks it for `/metrics` figures."""

    @staticmethod
    def stats() -> None:
        return None


class DevicesApi:
    """DELETE /api/devices/{id}, then the alert routes (`inner`, None without alerting),
    under the one interface the router knows (`methods`, `read`, `write`, `alerting`)."""

    def __init__(self, fleet: Forgets, inner: Optional[AlertsApi], health: Health = None) -> None:
        self._fleet = fleet
        self._health = health  # None while the store can write, else why not
        self._inner = inner
        self.alerting: Any = inner.alerting if inner is not None else _NoAlerting()

    def methods(self, path: str) -> tuple[str, ...]:
        """The write methods `path` takes (empty: none of these routes)."""
        if device_path(path) is not None:
            return ("DELETE",)
        return self._inner.methods(path) if self._inner is not None else ()

    def read(self, path: str, query: Mapping[str, list[str]]) -> Optional[Reply]:
        return self._inner.read(path, query) if self._inner is not None else None

    def write(self, req: Request, path: str) -> Reply:
        """A write the guard let through, to a path and method `methods` allows."""
        raw = device_path(path)
        if raw is None and self._inner is not None:  # `methods` allowed it: an alert route
            return self._inner.write(req, path)
        raw = raw or ""
        dev = unquote(raw) if len(raw) <= _ID_CHARS else ""
        problem = self._health() if self._health is not None else None
        if problem is not None and DEVICE_ID.fullmatch(dev):  # a forget would not be stored
            return HTTPStatus.SERVICE_UNAVAILABLE, {
                "error": f"{problem}: nothing forgotten; try again once the store writes "
                "(GET /healthz)", "id": dev}, {}  # fmt: skip
        if DEVICE_ID.fullmatch(dev) and self._fleet.forget(dev):
            return HTTPStatus.OK, {"forgotten": dev}, {}
        shown = dev if DEVICE_ID.fullmatch(dev) else raw[:80]
        missing = dev and (self._fleet.device(dev) or {}).get("state") == "missing"
        why = ("missing: never heard from; it stays so while expected_devices lists it"
               if missing else "unknown device")  # fmt: skip
        return HTTPStatus.NOT_FOUND, {"error": why, "id": shown}, {}


def device_path(path: str) -> Optional[str]:
    """The raw (still %-escaped) id of `/api/devices/{id}`; None for any other path."""
    if not path.startswith(PREFIX):
        return None
    rest = path[len(PREFIX) :]
    return rest if rest and "/" not in rest else None


def with_devices(inner: Optional[AlertsApi], fleet: Any, health: Health = None) -> Any:
    """The router's write routes: the device write in front of `inner`, when the fleet
    can forget (a `FleetView` alone cannot: then `inner` as it is). `health`: the
    collector's (`/healthz`); while it names a problem a forget is refused (503)."""
    forget: Optional[Callable[..., bool]] = getattr(fleet, "forget", None)
    return DevicesApi(fleet, inner, health) if forget is not None else inner
