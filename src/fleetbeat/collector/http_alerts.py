"""The alert routes of the HTTP API (the router in `fleetbeat.collector.http` calls them).

    GET    /api/alerts          active alerts, most severe first; `suppressed` says by what
                                (a silence with its comment, maintenance, a parent, flapping)
                                or null; and each notifier's counts, pending and failures
    GET    /api/silences        silences in force, soonest to end first
    POST   /api/silences        {"device": "pi-1"} or {"tag": "site:barn"}, with "duration":
                                "2h" or "until": <epoch s>, and "comment": "..." -> 201 {"id"}
    DELETE /api/silences/{id}   200 {"id", "deleted": true}, or 404

The writes pass `fleetbeat.collector.http_write.WriteGuard` first (the token, the origin,
the content type). A silence takes effect at the next notification; the main loop keeps it
in `alerts.db` within a turn.
"""

from __future__ import annotations

import time
from http import HTTPStatus
from typing import Callable, Optional
from urllib.parse import unquote

from fleetbeat.collector.alerting import Alerting
from fleetbeat.collector.http_write import BadBody, Reply, json_body
from fleetbeat.collector.httpserver import Request
from fleetbeat.collector.suppress import parse_silence
from fleetbeat.errors import InputError

SILENCES = "/api/silences"
READS = ("/api/alerts", SILENCES)


class AlertsApi:
    """The alert routes over one running `Alerting`."""

    def __init__(self, alerting: Alerting, *, clock: Callable[[], float] = time.time) -> None:
        self.alerting = alerting
        self._clock = clock

    @staticmethod
    def methods(path: str) -> tuple[str, ...]:
        """The write methods `path` takes (empty: not one of these routes)."""
        if path == SILENCES:
            return ("POST",)
        if path.startswith(SILENCES + "/"):
            return ("DELETE",)
        return ()

    def read(self, path: str) -> Optional[Reply]:
        """The answer to a GET of `path`, or None when it is not an alert route."""
        now = self._clock()
        if path == "/api/alerts":
            body = {"time": now, "alerts": self.alerting.alerts.active(now),
                    **self.alerting.stats()}  # fmt: skip
            return HTTPStatus.OK, body, {}
        if path == SILENCES:
            found = [s.to_json() for s in self.alerting.alerts.silences.list(now)]
            return HTTPStatus.OK, {"time": now, "silences": found}, {}
        return None

    def write(self, req: Request, path: str) -> Reply:
        """A write the guard let through, to a path and method `methods` allows."""
        silences = self.alerting.alerts.silences
        if req.method == "POST":
            now = self._clock()
            try:
                match, until, comment = parse_silence(json_body(req), now)
            except (InputError, BadBody) as err:
                return HTTPStatus.BAD_REQUEST, {"error": str(err)}, {}
            s = silences.add(match, until, comment, now)
            return HTTPStatus.CREATED, s.to_json(), {"Location": f"{SILENCES}/{s.id}"}
        ident = unquote(path[len(SILENCES) + 1 :])
        if not silences.remove(ident):
            return HTTPStatus.NOT_FOUND, {"error": "no such silence", "id": ident}, {}
        return HTTPStatus.OK, {"id": ident, "deleted": True}, {}
